// Loads onnxruntime-web on demand (dynamic import, never at module load) and picks the backend:
// WebGPU when an adapter exists (JSEP build, which also runs the WASM EP for fallback), else the smaller WASM-only build.
import type { InferenceSession } from 'onnxruntime-common';
import type * as OrtWebModule from 'onnxruntime-web';
import type { BackendPreference, Backend } from '../protocol.js';

/** The onnxruntime-web module (the same API whichever build was imported). */
export type OrtWeb = typeof OrtWebModule;

/** A loaded onnxruntime-web and the backend it runs. `backend` may later fall back from webgpu to wasm. */
export interface OrtHandle {
  readonly ort: OrtWeb;
  backend: Backend;
  /** WASM threads configured. */
  readonly threads: number;
  /** Why WebGPU was not used although asked for (auto or webgpu), when that happened. */
  fallbackReason: string | undefined;
  /** Execution provider name to use instead of `backend` (tests run the runtime on onnxruntime-node's 'cpu'). */
  readonly executionProvider?: string;
}

/** Outcome of looking for a WebGPU adapter. */
interface WebGpuProbe {
  readonly available: boolean;
  /** A software adapter (SwiftShader, `isFallbackAdapter`): works, but WASM is usually faster. */
  readonly software: boolean;
  readonly reason?: string;
}

/** Looks for a WebGPU adapter from inside the worker. Never throws. */
async function probeWebGpu(): Promise<WebGpuProbe> {
  const gpu = (globalThis.navigator as (Navigator & { gpu?: GPU }) | undefined)?.gpu;
  if (!gpu)
    return {
      available: false,
      software: false,
      reason: 'navigator.gpu is missing (no WebGPU in this browser or context)',
    };
  try {
    const adapter = await gpu.requestAdapter();
    if (!adapter)
      return {
        available: false,
        software: false,
        reason: 'navigator.gpu.requestAdapter() returned null (no usable GPU)',
      };
    const info = adapter.info as (GPUAdapterInfo & { isFallbackAdapter?: boolean }) | undefined;
    const legacy = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
    const text = `${info?.vendor ?? ''} ${info?.architecture ?? ''} ${info?.description ?? ''}`;
    const software = info?.isFallbackAdapter === true || legacy === true || /swiftshader|llvmpipe|software/i.test(text);
    return { available: true, software };
  } catch (e) {
    return {
      available: false,
      software: false,
      reason: `navigator.gpu.requestAdapter() failed: ${(e as Error).message}`,
    };
  }
}

/**
 * onnxruntime-web's glue and .wasm in `ort/` beside the worker (dist/ort/). Written as literal
 * `new URL('./ort/…', import.meta.url)` so that a bundler building the worker (Vite, webpack 5) emits these files
 * with it; the library build strips the `@vite-ignore` marks (vite.config.ts), which only keep its own lib build
 * from inlining them.
 */
function bundledOrtFiles(backend: Backend): { mjs: URL; wasm: URL } {
  return backend === 'webgpu'
    ? {
        mjs: new URL(/* @vite-ignore */ './ort/ort-wasm-simd-threaded.jsep.mjs', import.meta.url),
        wasm: new URL(/* @vite-ignore */ './ort/ort-wasm-simd-threaded.jsep.wasm', import.meta.url),
      }
    : {
        mjs: new URL(/* @vite-ignore */ './ort/ort-wasm-simd-threaded.mjs', import.meta.url),
        wasm: new URL(/* @vite-ignore */ './ort/ort-wasm-simd-threaded.wasm', import.meta.url),
      };
}

/** Default WASM thread count: min(4, cores) when cross-origin isolated (SharedArrayBuffer), else 1. */
export function defaultThreads(): number {
  const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  return isolated ? Math.max(1, Math.min(4, cores)) : 1;
}

interface LoadOrtOptions {
  readonly backend: BackendPreference;
  readonly threads: number | undefined;
  /** URL prefix of ort's .mjs/.wasm files; undefined: the copies beside the worker ({@link bundledOrtFiles}). */
  readonly wasmPaths?: string | undefined;
}

/**
 * Chooses the backend and imports the matching onnxruntime-web build:
 * - `'wasm'` → `onnxruntime-web/wasm` (ort-wasm-simd-threaded.{mjs,wasm}).
 * - `'webgpu'` → WebGPU on any adapter, including a software one; WASM when there is none.
 * - `'auto'` → WebGPU on a hardware adapter only; WASM otherwise.
 * WebGPU uses the default `onnxruntime-web` build (JSEP: ort-wasm-simd-threaded.jsep.{mjs,wasm}),
 * which also runs the WASM EP, so a later WebGPU failure can fall back without another download.
 */
export async function loadOrt(options: LoadOrtOptions): Promise<OrtHandle> {
  let backend: Backend = 'wasm';
  let fallbackReason: string | undefined;
  if (options.backend !== 'wasm') {
    const probe = await probeWebGpu();
    if (!probe.available) fallbackReason = probe.reason;
    else if (options.backend === 'auto' && probe.software)
      fallbackReason = 'only a software WebGPU adapter is available; WASM is faster';
    else backend = 'webgpu';
  }
  // Dynamic imports: a static import would put ORT into the worker chunk, and threaded WASM sessions then
  // hung in production builds; the extern-wasm builds load their threaded .mjs glue from `wasmPaths`.
  const ort: OrtWeb = backend === 'webgpu' ? await import('onnxruntime-web') : await import('onnxruntime-web/wasm');
  const threads = options.threads ?? defaultThreads();
  ort.env.wasm.wasmPaths = options.wasmPaths ?? bundledOrtFiles(backend);
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false; // already in a worker
  ort.env.logLevel = 'error';
  return { ort, backend, threads, fallbackReason };
}

/** Session options for one segment on the handle's current backend. */
export function sessionOptions(handle: OrtHandle, gpuOutputs: readonly string[]): InferenceSession.SessionOptions {
  const options: InferenceSession.SessionOptions = {
    executionProviders: [handle.executionProvider ?? handle.backend],
    graphOptimizationLevel: 'all',
  };
  if (handle.backend === 'webgpu' && gpuOutputs.length > 0) {
    // Keep the next-stage activation on the GPU; exit probabilities and final logits come back to the CPU.
    options.preferredOutputLocation = Object.fromEntries(gpuOutputs.map((n) => [n, 'gpu-buffer' as const]));
  }
  return options;
}

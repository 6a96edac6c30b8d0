// Loads onnxruntime-web on demand (dynamic import, never at module load) and picks the backend:
// WebGPU when an adapter exists (JSEP build, which also runs the WASM EP for fallback), else the smaller WASM-only build.
import type { InferenceSession } from 'onnxruntime-common';
import type * as OrtWebModule from 'onnxruntime-web';
import type { BundleManifest } from '../bundle/manifest.js';
import { isOutOfMemory, SelfxitError } from '../errors.js';
import type { BackendPreference, Backend } from '../protocol.js';

/** The onnxruntime-web module (the same API whichever build was imported). */
export type OrtWeb = typeof OrtWebModule;

/** A loaded onnxruntime-web and the backend it runs. `backend` may later fall back from webgpu to wasm. */
export interface OrtHandle {
  readonly ort: OrtWeb;
  backend: Backend;
  /** WASM threads onnxruntime runs: 1 when not cross-origin isolated, whatever was asked for. */
  readonly threads: number;
  /** URLs of the onnxruntime files this build fetches (its .mjs glue and .wasm), for error messages. */
  readonly runtimeFiles?: readonly string[];
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

const isIsolated = (): boolean => (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;

/** Default WASM thread count: min(4, cores) when cross-origin isolated (SharedArrayBuffer), else 1. */
export function defaultThreads(): number {
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  return isIsolated() ? Math.max(1, Math.min(4, cores)) : 1;
}

/**
 * The WASM threads onnxruntime will run: `requested` (default {@link defaultThreads}) when cross-origin isolated;
 * 1 otherwise, as onnxruntime-web falls back to one thread without SharedArrayBuffer whatever numThreads says.
 */
export function effectiveThreads(requested: number | undefined): number {
  return isIsolated() ? (requested ?? defaultThreads()) : 1;
}

/** The onnxruntime files a build fetches: from a `wasmPaths` prefix, or the bundled files' URLs. */
function runtimeFilesOf(backend: Backend, wasmPaths: string | { mjs: URL; wasm: URL }): string[] {
  if (typeof wasmPaths !== 'string') return [wasmPaths.mjs.href, wasmPaths.wasm.href];
  const stem = backend === 'webgpu' ? 'ort-wasm-simd-threaded.jsep' : 'ort-wasm-simd-threaded';
  return [`${wasmPaths}${stem}.mjs`, `${wasmPaths}${stem}.wasm`];
}

/** onnxruntime's messages when its .mjs glue or .wasm could not be fetched, compiled or started. */
const RUNTIME_FILES_RE =
  /no available backend found|initializeWebAssembly|initWasm|dynamically imported module|failed to fetch|importing a module script failed|CompileError|LinkError|magic word|wasm streaming compile|fetching of the wasm failed/i;

/** The first URL in an error's message (browsers name the module an import could not fetch there). */
export function urlIn(message: string): string | undefined {
  return /\b(?:https?|blob|file):\/\/[^\s'"`),]+/.exec(message)?.[0];
}

/**
 * A browser's words for a Content-Security-Policy that refused WebAssembly or a script (Chromium, Firefox, Safari): the
 * policy or its source expressions by name, not a bare "Refused to load/execute", which Chromium also says of a script
 * served with a MIME type that is not JavaScript.
 */
const CSP_RE =
  /Content[- ]Security[- ]Policy|wasm-unsafe-eval|'unsafe-eval'|call to WebAssembly\.\w+\(\) blocked by CSP/i;

/** Whether an error's message says a Content-Security-Policy refused it. */
export const isCspError = (message: string): boolean => CSP_RE.test(message);

export function runtimeFilesError(what: string, e: unknown, files: readonly string[]): SelfxitError {
  const message = (e as Error | undefined)?.message ?? String(e);
  const url = urlIn(message);
  if (isCspError(message))
    return new SelfxitError(
      'RUNTIME_FILES_UNAVAILABLE',
      `${what}: a Content-Security-Policy refused onnxruntime's WebAssembly (${message}). The policy the worker's ` +
        "script is served with (a worker's policy comes from its own script's response, not from the page's) must " +
        "allow script-src 'wasm-unsafe-eval', and connect-src the onnxruntime files: see docs/DEPLOY.md's " +
        'Content-Security-Policy section.',
      { url: url ?? files[files.length - 1], files: [...files], csp: true },
      { cause: e },
    );
  return new SelfxitError(
    'RUNTIME_FILES_UNAVAILABLE',
    `${what}: onnxruntime's files could not be loaded from ${url ?? files.join(' / ')} (${message}). ` +
      'Serve them with the package (dist/ort/) or set the wasmPaths option to where they are.',
    { url: url ?? files[files.length - 1], files: [...files] },
    { cause: e },
  );
}

/**
 * RUNTIME_FILES_UNAVAILABLE for an onnxruntime failure that was its own .mjs/.wasm's (fetched, compiled or started from
 * the handle's runtime files), also one a caller already wrapped in a SelfxitError (its cause); else undefined.
 */
export function runtimeFilesFailure(what: string, e: unknown, handle: OrtHandle): SelfxitError | undefined {
  const inner = e instanceof SelfxitError && e.code !== 'RUNTIME_FILES_UNAVAILABLE' ? e.cause : e;
  if (inner instanceof SelfxitError || !handle.runtimeFiles) return undefined;
  const message = (inner as Error | undefined)?.message ?? String(inner);
  return RUNTIME_FILES_RE.test(message) ? runtimeFilesError(what, inner, handle.runtimeFiles) : undefined;
}

/**
 * The error for a segment session onnxruntime could not create: RUNTIME_FILES_UNAVAILABLE when its own .mjs/.wasm
 * failed (naming the URL), OUT_OF_MEMORY when memory ran out, else INVALID_BUNDLE (the segment itself is bad).
 */
export function sessionCreateError(e: unknown, handle: OrtHandle, segment: number, file: string): SelfxitError {
  if (e instanceof SelfxitError) return e;
  const message = (e as Error | undefined)?.message ?? String(e);
  const where = `segment ${segment} (${file}) cannot be loaded by onnxruntime-web (${handle.backend})`;
  if (isOutOfMemory(e))
    return new SelfxitError('OUT_OF_MEMORY', `${where}: out of memory (${message})`, { segment, file }, { cause: e });
  if (handle.runtimeFiles && RUNTIME_FILES_RE.test(message)) return runtimeFilesError(where, e, handle.runtimeFiles);
  return new SelfxitError('INVALID_BUNDLE', `${where}: ${message}`, { segment, file }, { cause: e });
}

/**
 * The error for onnxruntime-web's JS build that could not be imported (dist/ort/ort(.wasm).min.mjs beside the worker,
 * which `wasmPaths` does not move): fetches the URL the browser names, so that the message says what the server
 * answered (a missing file, or a module served with a non-JavaScript MIME type, which browsers refuse to run).
 * Without a URL in the message (Safari), the generic {@link runtimeFilesError}.
 */
export async function ortImportError(e: unknown, files: readonly string[]): Promise<SelfxitError> {
  const message = (e as Error | undefined)?.message ?? String(e);
  const url = urlIn(message);
  if (!url) return runtimeFilesError('onnxruntime-web could not be imported', e, files);
  let answer: { status?: number; contentType?: string; fetchError?: string };
  try {
    const r = await fetch(url, { cache: 'no-store' });
    answer = { status: r.status, contentType: r.headers.get('content-type') ?? '' };
    await r.body?.cancel().catch(() => undefined);
  } catch (f) {
    answer = { fetchError: (f as Error | undefined)?.message ?? String(f) };
  }
  const { status, contentType, fetchError } = answer;
  const js = contentType !== undefined && /^(?:text|application)\/(?:x-)?(?:java|ecma)script\b/i.test(contentType);
  const why =
    fetchError !== undefined
      ? `fetching it failed too (${fetchError})`
      : status !== undefined && (status < 200 || status > 299)
        ? `the server answers HTTP ${status}: serve the package's dist/ort/ folder beside selfxit.worker.js`
        : !js
          ? `the server answers HTTP ${status} with content-type ${JSON.stringify(contentType)}: browsers run a ` +
            'module only when it is served as text/javascript (configure the server to serve .mjs so)'
          : `the server answers HTTP ${status} with content-type ${JSON.stringify(contentType)}`;
  return new SelfxitError(
    'RUNTIME_FILES_UNAVAILABLE',
    `onnxruntime-web could not be imported from ${url} (${message}): ${why}`,
    { url, ...(status !== undefined ? { status, contentType } : {}), files: [url, ...files] },
    { cause: e },
  );
}

interface LoadOrtOptions {
  readonly backend: BackendPreference;
  readonly threads: number | undefined;
  /** URL prefix of ort's .mjs/.wasm files; undefined: the copies beside the worker ({@link bundledOrtFiles}). */
  readonly wasmPaths?: string | undefined;
}

/**
 * Why a model with quantized ops runs on WASM whatever backend was asked for: onnxruntime-web's WebGPU backend
 * computes them wrongly, without an error (int8 ResNet-56 bundles: wrong labels in Chromium). `ops`: those found.
 */
export function quantizedFallbackReason(ops: readonly string[] = []): string {
  const which = ops.length > 0 ? ops.join(', ') : 'backbone.quantized in the manifest';
  return (
    `the model has quantized ops (${which}), which onnxruntime-web's WebGPU backend computes wrongly ` +
    '(onnxruntime#32578), so it runs on WASM'
  );
}

/**
 * Chooses the backend and imports the matching onnxruntime-web build:
 * - `'wasm'` → `onnxruntime-web/wasm` (ort-wasm-simd-threaded.{mjs,wasm}).
 * - `'webgpu'` → WebGPU on any adapter, including a software one; WASM when there is none.
 * - `'auto'` → WebGPU on a hardware adapter only; WASM otherwise.
 * - `wasmOnly` given (the model is known to be quantized: {@link quantizedFallbackReason}): WASM whatever `backend`
 *   says, with `wasmOnly` as the fallback reason (no adapter is looked for).
 * WebGPU uses the default `onnxruntime-web` build (JSEP: ort-wasm-simd-threaded.jsep.{mjs,wasm}),
 * which also runs the WASM EP, so a later WebGPU failure can fall back without another download.
 */
export async function loadOrt(options: LoadOrtOptions, wasmOnly?: string): Promise<OrtHandle> {
  let backend: Backend = 'wasm';
  let fallbackReason: string | undefined;
  if (options.backend !== 'wasm' && wasmOnly !== undefined) fallbackReason = wasmOnly;
  else if (options.backend !== 'wasm') {
    const probe = await probeWebGpu();
    if (!probe.available) fallbackReason = probe.reason;
    else if (options.backend === 'auto' && probe.software)
      fallbackReason = 'only a software WebGPU adapter is available; WASM is faster';
    else backend = 'webgpu';
  }
  // Dynamic imports: a static import would put ORT into the worker chunk, and threaded WASM sessions then
  // hung in production builds; the extern-wasm builds load their threaded .mjs glue from `wasmPaths`.
  const files = options.wasmPaths ?? bundledOrtFiles(backend);
  const runtimeFiles = runtimeFilesOf(backend, files);
  let ort: OrtWeb;
  try {
    ort = backend === 'webgpu' ? await import('onnxruntime-web') : await import('onnxruntime-web/wasm');
  } catch (e) {
    throw await ortImportError(e, runtimeFiles);
  }
  const threads = effectiveThreads(options.threads);
  ort.env.wasm.wasmPaths = files;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false; // already in a worker
  ort.env.logLevel = 'error';
  return { ort, backend, threads, fallbackReason, runtimeFiles };
}

/**
 * Checks that segment `s`'s class outputs (its fused exit head's probabilities; the backbone output on the last
 * segment) have as many classes as the manifest has labels, where the session's metadata gives the class dimension.
 * Returns the session; releases it before throwing.
 * @throws SelfxitError INVALID_BUNDLE naming both counts: the labels would name the wrong classes.
 */
export async function checkClassOutputs(
  session: InferenceSession,
  manifest: BundleManifest,
  s: number,
): Promise<InferenceSession> {
  const seg = manifest.segments[s]!;
  const last = s === manifest.segments.length - 1;
  const names = [...(seg.exitOutput ? [seg.exitOutput] : []), ...(last ? [seg.output] : [])];
  const metadata = (session as Partial<Pick<InferenceSession, 'outputMetadata'>>).outputMetadata ?? [];
  for (const name of names) {
    const meta = metadata.find((m) => m.name === name);
    const classes = meta?.isTensor ? meta.shape[meta.shape.length - 1] : undefined;
    if (typeof classes === 'number' && classes > 0 && classes !== manifest.labels.length) {
      await session.release().catch(() => undefined);
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `the manifest lists ${manifest.labels.length} labels, but segment ${s} (${seg.file}) output "${name}" has ` +
          `${classes} classes: the labels do not belong to this model`,
        { segment: s, file: seg.file, output: name, labels: manifest.labels.length, classes },
      );
    }
  }
  return session;
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

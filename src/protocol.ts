// Page ↔ worker wire types: plain, structured-cloneable data imported by both src/page and src/runtime.
import type { BundleManifest } from './bundle/manifest.js';
import type { DevicePlan } from './policy/device-plan.js';
import type { SelfxitErrorPayload } from './errors.js';

/** Backend the caller asks for. `'auto'` = WebGPU on a hardware adapter, else WASM. */
export type BackendPreference = 'auto' | 'webgpu' | 'wasm';

/** Backend actually in use. */
export type Backend = 'webgpu' | 'wasm';

/**
 * Loading progress, a discriminated union on `status` (as in transformers.js). For one file the
 * order is `initiate` → (`download` → `progress`*) → `done`; `ready` follows when a segment's session
 * is created and warmed up. `loaded` only grows; `total` is 0 when the server sent no length and the
 * manifest gave none.
 */
export type ProgressInfo =
  | { readonly status: 'initiate'; readonly file: string; readonly segment?: number }
  | { readonly status: 'download'; readonly file: string; readonly segment?: number }
  | {
      readonly status: 'progress';
      readonly file: string;
      readonly segment?: number;
      readonly loaded: number;
      readonly total: number;
      /** 0..100, or NaN when `total` is unknown. */
      readonly progress: number;
    }
  | { readonly status: 'done'; readonly file: string; readonly segment?: number; readonly fromCache: boolean }
  | { readonly status: 'ready'; readonly file: string; readonly segment: number; readonly backend: Backend };

/** Everything the worker needs to open a bundle (options already resolved on the page). */
export interface InitRequest {
  /** Absolute URL of manifest.json; segment files resolve against it. */
  readonly manifestUrl: string;
  readonly backend: BackendPreference;
  /** WASM threads; undefined = worker default (min(4, hardwareConcurrency) when cross-origin isolated, else 1). */
  readonly threads: number | undefined;
  readonly cache: boolean | 'reload';
  /** A cached manifest older than this is fetched again. */
  readonly manifestMaxAgeMs: number;
  /** Absolute URL prefix (ending in '/') of onnxruntime-web's .mjs/.wasm files. */
  readonly wasmPaths: string;
  /** Look up a cached device plan for this manifest hash, backend and thread count (load option `plan: 'cached'`). */
  readonly usePlan: boolean;
}

/** Worker-side state, sent back with every reply so that `info()` on the page is synchronous. */
export interface RuntimeState {
  readonly backend: Backend;
  /** WASM threads in use (1 on WebGPU runs' CPU fallback too). */
  readonly threads: number;
  readonly crossOriginIsolated: boolean;
  /** Whether the WebGPU → WASM fallback happened, and why. */
  readonly fallbackReason?: string;
  /** Per segment: session created. */
  readonly sessions: readonly boolean[];
  /** Per segment: bytes held in the local cache. */
  readonly cachedSegments: readonly boolean[];
  /** Whether the manifest came from the local cache (no network request). */
  readonly manifestFromCache: boolean;
  /** False when caching is off or storage failed (then everything is fetched). */
  readonly cacheEnabled: boolean;
}

export interface InitReply {
  readonly manifest: BundleManifest;
  /** sha256 (hex) of the manifest text. */
  readonly manifestHash: string;
  readonly state: RuntimeState;
  /** The cached device plan for this manifest hash, backend and thread count, when `usePlan` and one exists. */
  readonly plan?: DevicePlan;
}

/** What `plan()` asks the worker for. */
export interface PlanRequest {
  /** Agreement target in (0, 1] the plan's thresholds are chosen for. */
  readonly target: number;
}

/** One input as it crosses to the worker (the page turns elements into bitmaps first). */
export type WireInput =
  | { readonly kind: 'tensor'; readonly data: Float32Array }
  | { readonly kind: 'bitmap'; readonly bitmap: ImageBitmap }
  | { readonly kind: 'pixels'; readonly width: number; readonly height: number; readonly data: Uint8ClampedArray }
  | { readonly kind: 'blob'; readonly blob: Blob };

export interface ClassifyRequest {
  readonly inputs: readonly WireInput[];
  /** Per-exit thresholds to use (the page's current target). */
  readonly thresholds: readonly number[];
  readonly probabilities: boolean;
}

/** One sample's decision as the worker reports it; the page adds names and labels. */
export interface WireResult {
  readonly index: number;
  readonly confidence: number;
  /** Exit index, -1 = whole backbone. */
  readonly exit: number;
  /** Wall ms of each segment this sample ran (its batch's run). */
  readonly stages: readonly number[];
  readonly totalMs: number;
  readonly probabilities?: Float32Array;
}

/** A worker reply: results never throw across the boundary (comlink would drop `code`/`details`). */
export type Wire<T> =
  | { readonly ok: true; readonly value: T; readonly state?: RuntimeState }
  | { readonly ok: false; readonly error: SelfxitErrorPayload; readonly state?: RuntimeState };

/** The API the worker exposes through comlink. */
export interface WorkerApi {
  init(request: InitRequest, onProgress?: (p: ProgressInfo) => void): Promise<Wire<InitReply>>;
  classify(request: ClassifyRequest): Promise<Wire<WireResult[]>>;
  /** Measures every stage on the current backend, plans exits by those times, caches and returns the plan. */
  plan(request: PlanRequest, onProgress?: (p: ProgressInfo) => void): Promise<Wire<DevicePlan>>;
  dispose(): Promise<Wire<null>>;
}

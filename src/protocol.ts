// Page ↔ worker protocol, imported by both src/page and src/runtime: the wire types (plain, structured-cloneable data),
// the comlink transfer handler that carries a thrown SelfxitError across with its code, message and details, and the
// messages of the classify port (classify() calls bypass comlink: one plain message each way, see ClassifyCall).
import { transferHandlers, type TransferHandler } from 'comlink';
import type { BundleManifest } from './bundle/manifest.js';
import type { DevicePlan } from './policy/device-plan.js';
import type { LearnOptions } from './learn/learn-options.js';

export type { LearnOptions };
import type { LearnerStatus } from './learn/learner-status.js';
import { SelfxitError, fromErrorPayload, toErrorPayload, type SelfxitErrorPayload } from './errors.js';

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
  | { readonly status: 'ready'; readonly file: string; readonly segment: number; readonly backend: Backend }
  | {
      readonly status: 'learn';
      /** Always 'learn'. */
      readonly file: 'learn';
      /** The fit's step ('features' … 'bundle' as prepare's progress; 'done' when its exits are in use). */
      readonly stage: 'features' | 'heads' | 'thresholds' | 'bundle' | 'done';
      readonly done: number;
      readonly total: number;
      /** Number of the fit (1 for the first). */
      readonly fit: number;
    };

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
  /**
   * sha256 of a manifest a file no longer matched (the bundle was replaced on the server): a cached manifest with this
   * hash is never used, whether or not marking it outdated in the cache landed (a re-open after `bundleChanged`).
   */
  readonly avoidManifestHash?: string;
  /** Absolute URL prefix (ending in '/') of onnxruntime-web's .mjs/.wasm files; undefined: `ort/` beside the worker. */
  readonly wasmPaths: string | undefined;
  /** Look up a cached device plan for this manifest hash, backend, thread count and engine (load option `plan`). */
  readonly usePlan: boolean;
  /** Engine for batch-1 calls (load option `engine`); undefined = 'auto'. */
  readonly engine?: EngineChoice;
  /** Live exit pruning (load option `pruneExits`, policy/exit-pruning.ts); undefined = on. */
  readonly pruneExits?: boolean;
  /** Learn on the device (load option `learn`); `manifestUrl` is then the URL of a plain .onnx model, or of a bundle's
   * manifest with `learn.fromBundle`. */
  readonly learn?: LearnRequest;
}

/** What on-device learning needs besides the model URL (load option `learn` and the model's preprocessing). */
export interface LearnRequest {
  readonly options: LearnOptions;
  /** Input normalisation and geometry of the plain model (defaults as prepare: from the model, mean 0, std 1). */
  readonly input?: {
    readonly mean?: readonly number[];
    readonly std?: readonly number[];
    readonly layout?: 'NCHW' | 'NHWC';
  };
  readonly labels?: readonly string[];
  /** The class-score output of a plain model with several outputs. */
  readonly output?: string;
  /** Keep the learned state in IndexedDB (per model hash). */
  readonly persist: boolean;
  /** Test hook: every audited input counts as a disagreement (forces the audit to fail). */
  readonly corruptAudit?: boolean;
  /** `manifestUrl` is a bundle's manifest: learning starts from its exits (its backbone file is the model). */
  readonly fromBundle?: boolean;
}

/** What the worker reports of on-device learning, with every reply (`clf.learning()`). */
export interface LearningState extends LearnerStatus {
  /** sha256 of the model bytes (the key of the persisted state). */
  readonly modelHash: string;
  /** Whether the learned state is kept in IndexedDB, and why not. */
  readonly persists: boolean;
  readonly persistReason?: string;
  /** Whether this load restored a persisted state (its exits serve without re-learning). */
  readonly restored: boolean;
  /** Where the last fit ran: a second worker (serving never waits for it) or this one (where workers cannot start
   * workers); and the longest single onnxruntime step of opening its exits, in ms (a classify() may wait for one). */
  readonly fitRanIn?: 'worker' | 'thread';
  readonly openStepMs?: number;
  /** True while a fit's exits are being opened (one onnxruntime session at a time: a call may wait for one). */
  readonly openingExits: boolean;
  /** ms of assembling the learned bundle in this worker (split, heads fused, hashed). */
  readonly assembleMs?: number;
  /** Why the last fit failed, if it did (learning goes on; the next fit tries again). */
  readonly lastError?: string;
  /** Bumped when the exits or thresholds in force change; the manifest of the exits in force comes with a change. */
  readonly version: number;
  readonly manifest?: BundleManifest;
  readonly manifestHash?: string;
}

/** Engine the caller asks for: one compiled model per call, stage by stage, or `'auto'` (compiled where it compiles). */
export type EngineChoice = 'compiled' | 'stages' | 'auto';

/** Worker-side state, sent back with every reply so that `info()` on the page is synchronous. */
export interface RuntimeState {
  readonly backend: Backend;
  /** WASM threads in use (1 on WebGPU runs' CPU fallback too). */
  readonly threads: number;
  readonly crossOriginIsolated: boolean;
  /** Whether the WebGPU → WASM fallback happened, and why. */
  readonly fallbackReason?: string;
  /** Engine of batch-1 calls ('compiled' or 'stages'). */
  readonly engine?: 'compiled' | 'stages';
  /** Why the compiled engine was asked for (or 'auto') but the stage engine runs. */
  readonly engineFallbackReason?: string;
  /** Engine of batches ('compiled': the batch model on WASM; 'stages' on WebGPU, with `engine: 'stages'`, or failed). */
  readonly batchEngine?: 'compiled' | 'stages';
  /** Why the batch model was asked for but batches run stage by stage (not said for WebGPU or `engine: 'stages'`). */
  readonly batchEngineFallbackReason?: string;
  /** Per segment: session created. */
  readonly sessions: readonly boolean[];
  /** Per segment: bytes held in the local cache. */
  readonly cachedSegments: readonly boolean[];
  /** Whether the manifest came from the local cache (no network request). */
  readonly manifestFromCache: boolean;
  /** Whether that cached manifest was older than `manifestMaxAgeMs`, used because fetching it failed. */
  readonly manifestStale?: boolean;
  /** False when caching is off or storage failed (then everything is fetched). */
  readonly cacheEnabled: boolean;
  /** With live exit pruning on: the exits pruned now (sent as off), ascending. */
  readonly prunedExits?: readonly number[];
  /** On-device learning (load option `learn`). */
  readonly learning?: LearningState;
  /**
   * Order of the states the worker reported (each reply's is newer than the last): the page keeps the newest, whichever
   * channel (comlink or the classify port) brought it first.
   */
  readonly seq?: number;
}

export interface InitReply {
  readonly manifest: BundleManifest;
  /** sha256 (hex) of the manifest text. */
  readonly manifestHash: string;
  readonly state: RuntimeState;
  /** The cached device plan for this manifest hash, backend, thread count and engine, when `usePlan` and one exists. */
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
  /** Time the parts of the call ({@link CallProfile}); off: no marks are taken. */
  readonly profile?: boolean;
}

/**
 * Where one classify call's time went in the worker (ClassifyOptions `profile`), ms unless said otherwise. `recvAt` and
 * `replyAt` are absolute (`performance.timeOrigin + performance.now()`, comparable across page and worker), so the
 * page can add the two message hops. Meant for calls made one at a time (the queue's jobs are counted whichever call
 * made them).
 */
export interface CallProfile {
  /** When the worker's classify() began (the request arrived), absolute ms. */
  readonly recvAt: number;
  /** When the reply was handed to the message channel, absolute ms. */
  readonly replyAt: number;
  /** Turning the inputs into the model's float32 input (pixels → tensor). */
  readonly preprocessMs: number;
  /** onnxruntime calls in the queue (session.run, with its copies into and out of the WASM heap, and tensor setup). */
  readonly runMs: number;
  /** How many queue jobs (session runs, GPU downloads) the call made. */
  readonly runs: number;
  /** Waiting in the queue and the promise hops before each job started. */
  readonly queueMs: number;
  /** Reading the exit outputs out of the run's results (the compiled engine; the stage engine: in `decisionMs`). */
  readonly readbackMs: number;
  /** Exit decisions and cascade bookkeeping between runs (argmax, thresholds, result rows). */
  readonly decisionMs: number;
  /** Building the wire results and the runtime state for the reply. */
  readonly replyMs: number;
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
  /** With ClassifyRequest `profile`: the call's parts (the same object for every input of the call). */
  readonly profile?: CallProfile;
}

/** What classify() replies: one decision per input, in input order, and the worker's state after the call. */
export interface ClassifyReply {
  readonly results: readonly WireResult[];
  readonly state: RuntimeState;
}

/**
 * A classify() call on the classify port (a MessageChannel the page hands the worker with {@link WorkerApi.connect}):
 * one plain message each way, without comlink's per-call proxy, id string and wrappers. The request's input buffers
 * are transferred, as are the reply's probability buffers.
 */
export interface ClassifyCall {
  readonly id: number;
  readonly request: ClassifyRequest;
}

/**
 * The classify port's answer to call `id`: the results, with the worker's state when it changed since the last reply
 * (of any call: the page keeps the one it has), or the error with the state the failed call left. `spare`: the
 * request's input buffers, moved back once the call was done with them (the page copies later inputs into them
 * instead of allocating; absent from workers that keep their inputs, e.g. while learning).
 */
export type ClassifyAnswer =
  | {
      readonly id: number;
      readonly results: readonly WireResult[];
      readonly state?: RuntimeState;
      readonly spare?: readonly ArrayBuffer[];
    }
  | { readonly id: number; readonly error: SelfxitErrorPayload; readonly state: RuntimeState | undefined };

/** What plan() replies: the plan made (and cached), and the worker's state after the call. */
export interface PlanReply {
  readonly plan: DevicePlan;
  readonly state: RuntimeState;
}

/** A ping's answer. */
export interface PingReply {
  /**
   * How many progress reports the worker has made (bytes of a file arriving, a file or segment ready; learning's aside):
   * a count that grew since the last answer means the worker is moving on, which restarts the page's inactivity
   * clocks (`callTimeoutMs`, load()'s `timeoutMs`) also where no `onProgress` listens.
   */
  readonly activity: number;
}

/**
 * The API the worker exposes through comlink. A call that fails rejects with a SelfxitError (any other thrown value
 * becomes INTERNAL); {@link installErrorTransfer} makes it arrive on the page as one, `code` and `details` included.
 */
export interface WorkerApi {
  /** Opens the bundle (once per worker). */
  init(request: InitRequest, onProgress?: (p: ProgressInfo) => void): Promise<InitReply>;
  classify(request: ClassifyRequest): Promise<ClassifyReply>;
  /**
   * Serves classify() on `port` from now on ({@link ClassifyCall}; the page's calls go there, the method above stays
   * for direct callers) and, given one, on the shared-memory `lane` (src/shared-lane.ts): resolves true when it serves
   * the lane (this worker has Atomics.waitAsync), false when the page must send every call on the port.
   */
  connect(port: MessagePort, lane?: SharedArrayBuffer): Promise<boolean>;
  /** Measures every stage on the current backend, plans exits by those times, caches and returns the plan. */
  plan(request: PlanRequest, onProgress?: (p: ProgressInfo) => void): Promise<PlanReply>;
  /** Answers at once from the worker's message loop: the page's heartbeat (with the worker's progress count). */
  ping(): Promise<PingReply>;
  /**
   * Takes the Web Lock `name` and holds it until the worker ends (resolves true once held; false without Web Locks):
   * the page's request for the same lock is granted when the worker dies, even while it is busy.
   */
  holdLock(name: string): Promise<boolean>;
  /** Forgets what on-device learning learned (samples, exits, audit, the persisted state); the full model serves again. */
  resetLearning?(): Promise<RuntimeState>;
  /** The worker's state now (undefined before init() succeeded): the page reads it after a call failed. */
  state(): Promise<RuntimeState | undefined>;
  dispose(): Promise<void>;
}

/** The value comlink's 'throw' handler is given: what was thrown, beside comlink's private "thrown" marker. */
interface Thrown {
  readonly value: unknown;
}

let errorTransferInstalled = false;

/**
 * Makes comlink carry thrown values as {@link SelfxitErrorPayload}s, so that a SelfxitError thrown on one side rejects
 * the call on the other as a SelfxitError with the same `code`, `message` and `details` (any other thrown value as
 * INTERNAL). It replaces comlink's own 'throw' handler (which keeps only message, name and stack), reusing its test
 * for a thrown value. Handlers are looked up by name on the receiving side, so both sides install it before their
 * first message: the worker before expose(), the page before wrap(). Idempotent.
 */
export function installErrorTransfer(): void {
  if (errorTransferInstalled) return;
  const builtIn = transferHandlers.get('throw');
  if (!builtIn) throw new SelfxitError('INTERNAL', "comlink has no 'throw' transfer handler");
  const handler: TransferHandler<Thrown, SelfxitErrorPayload> = {
    canHandle: (value): value is Thrown => builtIn.canHandle(value),
    serialize: ({ value }) => [toErrorPayload(value), []],
    deserialize: (payload) => {
      throw fromErrorPayload(payload);
    },
  };
  transferHandlers.set('throw', handler);
  errorTransferInstalled = true;
}

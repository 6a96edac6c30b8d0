// Public types of the page entry (`selfxit`, dist/selfxit.js), types only: the classifier's API, load() options,
// results and info, declared here; the bundle, plan, progress and error types it refers to, re-exported from their homes.
import type { InputSpec } from './bundle/manifest.js';
import type { DevicePlan, StageTimings } from './policy/device-plan.js';
import type {
  Backend,
  BackendPreference,
  CallProfile,
  EngineChoice,
  LearningState,
  LearnOptions,
  ProgressInfo,
} from './protocol.js';

// Every bundle schema type (BundleManifest and the types it is made of).
export type * from './bundle/manifest.js';
export type { DevicePlan, StageTimings } from './policy/device-plan.js';
export type { Backend, BackendPreference, CallProfile, EngineChoice, LearnOptions, ProgressInfo } from './protocol.js';
export type { AuditEstimate } from './learn/audit.js';
export type { SelfxitErrorCode } from './errors.js';

/** Options of {@link load}. Every field is optional; defaults are listed per field (fixed ones: `LOAD_DEFAULTS`). */
export interface LoadOptions {
  /**
   * Backend preference. Default `'auto'`: WebGPU on a hardware adapter, else WASM. `'webgpu'` also
   * accepts a software adapter; when no adapter exists or a WebGPU session fails, it falls back to WASM.
   * `clf.backend` tells which one runs.
   */
  readonly backend?: BackendPreference;
  /** WASM threads. Default `min(4, navigator.hardwareConcurrency)` when the page is cross-origin isolated, else 1. */
  readonly threads?: number;
  /**
   * Local cache in IndexedDB (manifest by URL, segments by sha256). Default `true`: a second visit
   * makes no request for the manifest or cached segments. `'reload'` fetches the manifest again (and
   * evicts segments a new version no longer uses); `false` reads and writes nothing.
   */
  readonly cache?: boolean | 'reload';
  /** A cached manifest older than this (ms) is fetched again. Default 24 h. `Infinity` = until `cache: 'reload'`. */
  readonly manifestMaxAgeMs?: number;
  /** Loading progress (manifest, then each segment when first needed). Default: none. */
  readonly onProgress?: (progress: ProgressInfo) => void;
  /** URL of the worker module. Default: `selfxit.worker.js` beside selfxit.js (dist/). */
  readonly workerUrl?: string | URL;
  /**
   * URL prefix of onnxruntime-web's `ort-wasm-simd-threaded*.{mjs,wasm}` files. Default: `ort/` beside the worker
   * (dist/ort/, or wherever a bundler emitted them).
   */
  readonly wasmPaths?: string | URL;
  /**
   * Device plan (exits and thresholds chosen by times measured on this device, see `clf.plan()`). Default
   * `'cached'`: when the cache holds a plan for this bundle version (manifest hash), the backend in use, the thread
   * count and the engine (compiled or stages: the one its times were measured on), it is applied at load
   * (`info().plan`). `'off'`: no cached plan is looked up; the manifest's thresholds apply until `clf.plan()` is
   * called. With `cache: false` there is never a cached plan.
   */
  readonly plan?: 'cached' | 'off';
  /**
   * Inactivity deadline of load() in ms: when the worker makes no progress for this long (no bytes of a file arriving,
   * no file or segment ready: seen through `onProgress` events and the heartbeat's answers), load() rejects with
   * TIMEOUT and its worker ends. A slow download that keeps moving (at least 64 KiB per `timeoutMs`) never times out; a
   * trickle slower than that, or a file longer than the manifest says (INTEGRITY_ERROR), does. Without `onProgress`
   * progress is seen only through the heartbeat (with `heartbeatMs: 0` too, none is seen: `timeoutMs` then limits the
   * whole load). For a fixed limit
   * on the whole load, pass `signal: AbortSignal.timeout(ms)`. Default 120 s; 0 = none.
   */
  readonly timeoutMs?: number;
  /** Aborts load(): it rejects with ABORTED and its worker ends. */
  readonly signal?: AbortSignal;
  /**
   * Ping period (ms) of the worker heartbeat. While no call is in flight, a worker that leaves a ping unanswered for
   * 12 periods, at least 10 s (60 s at the default), is taken as dead: pending and later calls reject with WORKER_DIED. During a call,
   * ORT may block the worker thread, so `callTimeoutMs` applies instead (a worker that ends is still seen at once where
   * Web Locks exist). Each answer also says whether the worker made progress (a download under way), which restarts
   * the inactivity clocks of `timeoutMs` and `callTimeoutMs`. Default 5 s; 0 = off; otherwise at least 100 ms
   * (INVALID_ARGUMENT); however short the period, an idle worker gets 10 s (background work a call left).
   */
  readonly heartbeatMs?: number;
  /**
   * Inactivity deadline (ms) of each classify(), classifyBatch() and plan() call: its clock starts when it is sent and
   * restarts whenever the worker answers a call sent before it (the worker runs calls one at a time) or makes progress
   * (bytes of a lazily loaded segment arriving, a file or segment ready: `onProgress` events and the heartbeat's
   * answers). When it passes `callTimeoutMs`, the call rejects with TIMEOUT and the worker is stopped (later calls:
   * WORKER_DIED; load() again). A download that keeps moving (at least 64 KiB per `callTimeoutMs`) never times out a
   * call; a worker that neither answers nor moves on does. Default 5 min; 0 = none; otherwise at least 100 ms (INVALID_ARGUMENT).
   */
  readonly callTimeoutMs?: number;
  /**
   * Engine of single-input calls. Default `'auto'` (today the same as `'compiled'`): the segments loaded so far run as
   * ONE onnxruntime model with the exit decisions inside (thresholds are an input, so setTarget()/plan() need no
   * rebuild), recompiled when more segments have loaded; when the bundle cannot be compiled, the stage engine runs and
   * `info().engineFallbackReason` says why. `'stages'`: one session per segment, decisions in JS. Batches
   * (classifyBatch of more than one input) on WASM run on a batch model made the same way, which keeps the rows that go
   * on at each exit (`Compress`) in one onnxruntime run (`info().batchEngine`); on WebGPU, and with `'stages'`, stage
   * by stage (rows that exit leave the batch). Results are the same either way; with a compiled model `timings.stages`
   * spreads one run's time over the segments it covered.
   */
  readonly engine?: EngineChoice;
  /**
   * classify() and classifyBatch() calls through shared memory. Default `true`: where the page is cross-origin isolated
   * (COOP/COEP, as WASM threads need anyway) and the browser has `Atomics.waitAsync` (Chrome 91+, Safari 16.4+, Firefox
   * 145+), a call's inputs and results cross in a SharedArrayBuffer and both sides wake with Atomics.notify, saving the
   * two postMessage hops (~0.25–0.4 ms per call in Chromium: `node bench/transport.mjs`). One call at a time goes this
   * way; concurrent calls, bitmaps and blobs, and replies that carry more than results go by message as before. Results
   * are the same either way. `false`: always by message. `info().transport` says which is in use.
   */
  readonly sharedMemory?: boolean;
  /**
   * Live exit pruning. Default `true`: the worker counts, per exit, the recent inputs that reached it and left there;
   * when the deepest exit in use clearly does not pay on this traffic (the upper confidence bound of its share of
   * leaving inputs below the share where its head's MACs plus the per-exit overhead equal what leaving saves), it is
   * sent as off (the compiled engine then skips its head), then the next deepest, and so on. One call in 32 runs the
   * requested thresholds to keep measuring them; a pruned exit comes back when it clearly pays again. Only exits from
   * the back are pruned, so an input either gets the calibrated cascade's answer or the full model's: agreement
   * cannot fall. New thresholds (setTarget(), a plan) start over. `info().prunedExits` lists the exits pruned now.
   * `false`: every exit in use always runs. Learning classifiers never prune (the learner chooses its exits).
   */
  readonly pruneExits?: boolean;
  /**
   * On-device learning (docs/API.md#on-device-learning). With a plain `.onnx` URL the worker cuts the model, serves it
   * whole while it collects pooled features, fits exits with prepare's method when enough inputs arrived, audits them
   * live and keeps what it learned in IndexedDB per model hash. `true` = the defaults. With a bundle URL learning starts
   * from the bundle's exits (its backbone.onnx is the model).
   */
  readonly learn?: boolean | LearnLoadOptions;
}

/** The `learn` option of {@link load}: the learner's options and, for a plain model, its preprocessing and labels. */
export interface LearnLoadOptions extends LearnOptions {
  /** Input normalisation of the plain model: `(pixel / 255 - mean[c]) / std[c]`. Default mean 0, std 1. */
  readonly input?: {
    readonly mean?: readonly number[];
    readonly std?: readonly number[];
    readonly layout?: 'NCHW' | 'NHWC';
  };
  /** Class names. Default "0".."k-1". */
  readonly labels?: readonly string[];
  /** The output holding the class scores, for a plain model with several outputs (prepare's `output`). */
  readonly output?: string;
  /** Keep what was learned in IndexedDB (per model hash) and restore it at the next load. Default `true` (not with `cache: false`). */
  readonly persist?: boolean;
  /** Test hook: every audited input counts as a disagreement, so the audit fails and tightens the thresholds. */
  readonly corruptAudit?: boolean;
}

/** What {@link Classifier.learning} reports: samples, fits, exits, the live audit, persistence. */
export type LearningInfo = Omit<LearningState, 'manifest' | 'manifestHash' | 'version'> & {
  /**
   * What load() warned about (console.warn, once): e.g. a plain model learnt with its input normalisation left at the
   * default mean 0 / std 1, which is right only if the model was trained so.
   */
  readonly warnings?: readonly string[];
};

/**
 * Inputs {@link Classifier.classify} accepts. A Float32Array is taken as already preprocessed
 * (length C*H*W, in the manifest's layout); everything else is resized and normalised as the manifest says.
 */
export type ClassifierInput =
  ImageBitmap | ImageData | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas | Blob | Float32Array;

/** Options of {@link Classifier.classify} and {@link Classifier.classifyBatch}. */
export interface ClassifyOptions {
  /** Also return the class probabilities. Default false. */
  readonly probabilities?: boolean;
  /** Aborts the call: it rejects with ABORTED (the worker's result is dropped; the classifier stays usable). */
  readonly signal?: AbortSignal;
  /**
   * Time the call's parts in the worker (`timings.profile`: preprocessing, onnxruntime runs, queue, readback, decisions,
   * reply, and when the request arrived and the reply left). For benchmarks and debugging; default false (no marks).
   */
  readonly profile?: boolean;
}

/** One classification. */
export interface ClassifyResult {
  /** Class name (manifest labels). */
  readonly label: string;
  /** Class index. */
  readonly index: number;
  /** Max probability at the decision point. */
  readonly confidence: number;
  /** Where the sample left: an early exit, or `{ index: -1, name: 'backbone' }` for the full model. */
  readonly exit: { readonly index: number; readonly name: string; readonly macsFraction: number };
  /** Milliseconds: whole call (worker side, preprocessing and lazy loading included) and each segment run. */
  readonly timings: {
    readonly totalMs: number;
    readonly stages: readonly number[];
    /**
     * With the `profile` option: where the call's time went (the same object for every input of the call, or of its
     * part when a large classifyBatch() is sent in parts).
     */
    readonly profile?: CallProfile;
  };
  /** Class probabilities at the decision point, when asked for. */
  readonly probabilities?: Float32Array;
}

/** The thresholds {@link Classifier.setTarget} chose for a target, and what the calibration curve expects of them. */
export interface TargetChoice {
  readonly target: number;
  readonly thresholds: readonly number[];
  /** Expected agreement with the full model (out-of-fold validation). */
  readonly agreement: number;
  /** Expected MACs as a fraction of the backbone. */
  readonly macsFraction: number;
  /** False when no curve point reaches the target: the most faithful point was taken instead. */
  readonly reached: boolean;
}

/** Options of {@link Classifier.plan}. */
export interface DevicePlanOptions {
  /** Agreement target in (0, 1] to choose the thresholds for. Default: the current target (`info().target`). */
  readonly target?: number;
  /** Progress of loading what the measurement needs (every segment, validation.bin). Default: none (the load()
   * `onProgress` still gets the segment events, as for classify). */
  readonly onProgress?: (progress: ProgressInfo) => void;
}

/**
 * The device plan in use, as {@link ClassifierInfo.plan} reports it: the plan's target, exits, thresholds, expected
 * fractions and measurement time (fields as in {@link DevicePlan}) and its stage times ({@link StageTimings}: `exitMs`
 * when the plan has it, i.e. made on the compiled engine).
 */
export type PlanSummary = Pick<
  DevicePlan,
  'target' | 'enabled' | 'thresholds' | 'expectedMsFraction' | 'expectedMacsFraction' | 'measuredAt'
> &
  StageTimings;

/** What {@link Classifier.info} reports: a synchronous snapshot. */
export interface ClassifierInfo {
  readonly backend: Backend;
  readonly threads: number;
  readonly crossOriginIsolated: boolean;
  /** Why WebGPU is not in use although asked for, if that happened. */
  readonly fallbackReason?: string;
  /** Engine of single-input calls (see {@link LoadOptions.engine}). */
  readonly engine: 'compiled' | 'stages';
  /** Why the compiled engine was asked for (or `'auto'`) but the stage engine runs. */
  readonly engineFallbackReason?: string;
  /**
   * Engine of batches (calls of more than one input): `'compiled'` (one onnxruntime model that keeps the rows going on
   * at each exit, on WASM) or `'stages'` (on WebGPU, with `engine: 'stages'`, or when the batch model failed:
   * `batchEngineFallbackReason` says why).
   */
  readonly batchEngine: 'compiled' | 'stages';
  readonly batchEngineFallbackReason?: string;
  readonly manifestUrl: string;
  readonly manifestHash: string;
  readonly labels: readonly string[];
  readonly input: InputSpec;
  /** Current exits and thresholds. */
  readonly exits: readonly {
    readonly index: number;
    readonly name: string;
    readonly threshold: number;
    readonly macsFraction: number;
    readonly expectedShare: number;
  }[];
  /** Agreement target of the current thresholds (the calibration target until setTarget()). */
  readonly target: number;
  readonly expectedAgreement: number;
  readonly expectedMacsFraction: number;
  readonly segments: readonly {
    readonly file: string;
    readonly bytes: number;
    readonly loaded: boolean;
    readonly cached: boolean;
  }[];
  readonly cache: {
    readonly enabled: boolean;
    readonly manifestFromCache: boolean;
    /** The cached manifest was older than `manifestMaxAgeMs`: used because fetching it failed (offline, 5xx). */
    readonly stale: boolean;
  };
  /** The device plan in use (from `clf.plan()` or the cache at load), if any. */
  readonly plan?: PlanSummary;
  /**
   * Exits live exit pruning sends as off now (see {@link LoadOptions.pruneExits}), ascending; empty when none (or off).
   * Results still name the exit each input really took.
   */
  readonly prunedExits: readonly number[];
  /**
   * How classify() calls reach the worker: `'shared-memory'` (see {@link LoadOptions.sharedMemory}) or `'message'`
   * (postMessage both ways).
   */
  readonly transport: 'shared-memory' | 'message';
}

/**
 * An early-exit classifier running in a worker. Get one with {@link load}. Every method rejects with a
 * `SelfxitError` (see `SelfxitErrorCode`).
 *
 * @example
 * const clf = await load('/models/fashion-resnet/');
 * const { label, exit } = await clf.classify(imgElement);
 * await clf.dispose();
 */
export interface Classifier {
  /** The backend actually running ('webgpu' or 'wasm'; it can change from webgpu to wasm after a GPU failure). */
  readonly backend: Backend;
  /** Labels in class-index order. */
  readonly labels: readonly string[];
  /** Classifies one input. Rejects with INVALID_INPUT for an unsupported or wrongly sized input (the classifier stays usable). */
  classify(input: ClassifierInput, options?: ClassifyOptions): Promise<ClassifyResult>;
  /**
   * Classifies many inputs in one cascade run: rows that exit leave the batch before the next segment.
   * Returns one result per input, in order.
   */
  classifyBatch(inputs: readonly ClassifierInput[], options?: ClassifyOptions): Promise<ClassifyResult[]>;
  /** A snapshot of the backend, exits, current thresholds and what is loaded or cached. */
  info(): ClassifierInfo;
  /**
   * Re-chooses the exit thresholds for agreement target `target` in (0, 1] from the bundle's calibration
   * curve: the cheapest point whose expected agreement is >= target. Applies to later classify() calls.
   * With a device plan in use, from the plan's curve instead (same rule; the exits the plan leaves out stay off).
   * Throws INVALID_TARGET when `target` is out of range.
   */
  setTarget(target: number): TargetChoice;
  /**
   * Makes this device's plan and applies it: the worker loads every segment, times each stage (segment plus fused
   * head) at batch 1 on the backend in use, fetches the bundle's `validation.bin` (cached by sha256), and chooses
   * exits and thresholds again by those times for `options.target` (default: the current target). The plan is
   * cached per manifest hash, backend, thread count and engine (unless `cache: false`), so a later load() with
   * `plan: 'cached'` (the default) applies it without measuring. Later classify() calls use its thresholds; an exit it
   * leaves out never fires and its output is not read; setTarget() then picks from the plan's curve. A setTarget()
   * made while the plan is measured is newer: its target stays, with thresholds from the plan's curve (as setTarget()
   * after the plan would choose them: where the curve does not reach it, its most faithful point, and
   * `info().expectedAgreement` is then below `info().target`).
   * @throws SelfxitError INVALID_TARGET; INVALID_BUNDLE for a bundle without a validation file (prepared by an older
   * selfxit: run `selfxit prepare` again); INTEGRITY_ERROR, FETCH_FAILED; DISPOSED.
   */
  plan(options?: DevicePlanOptions): Promise<DevicePlan>;
  /** Releases the sessions and ends the worker. Later calls reject with DISPOSED; calls in flight too. */
  dispose(): Promise<void>;
  /**
   * On-device learning now (a synchronous snapshot as of the latest reply): samples seen and stored, fits, exits on,
   * the thresholds in force, the audited agreement with its bounds, MACs fraction, persistence.
   * @throws SelfxitError LEARNING_UNAVAILABLE when loaded without `learn`.
   */
  learning(): LearningInfo;
  /** Forgets what was learned (samples, exits, audit, the stored state): the full model serves again. */
  resetLearning(): Promise<void>;
}

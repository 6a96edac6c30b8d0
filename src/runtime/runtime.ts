// The worker-side classifier, request handling: opens a bundle (bundle-source.ts) and its session pool (session-pool.ts),
// classifies batches with the shared cascade (runCascade over the engine's stage runner), and makes device plans (stage
// times measured here on the engine in use + the bundle's validation file → planExits, cached). Batch-1 calls run the
// compiled engine (compiled-engine.ts) unless `engine: 'stages'` or it cannot compile; batches on WASM the batch engine
// (batch-engine.ts) on the same terms, else stage by stage.
// Live exit pruning (policy/exit-pruning.ts, on unless `pruneExits: false`) turns off the deepest exits that do not pay
// on the traffic served: every call runs with its thresholds and reports its exits back; exits are priced by the device
// plan's times when one is in force, else by MACs with a per-exit overhead over the live call time; the pruned state is
// remembered in the cache per bundle and backend.
// Over 400 lines: one class, as open(), classify(), plan() and state() share the runtime's parts (pool, engines, pruner).
import type { BundleManifest } from '../bundle/manifest.js';
import { checkTarget } from '../policy/bounds.js';
import type { PruneRun } from '../policy/exit-pruning.js';
import { planExits, type DevicePlan, type StageTimings } from '../policy/device-plan.js';
import { runCascade, type CascadeResult } from '../engine/cascade.js';
import { OrtStageRunner } from '../engine/stage-runner.js';
import { SelfxitError } from '../errors.js';
import type { ClassifyRequest, InitRequest, PlanRequest, ProgressInfo, RuntimeState, WireResult } from '../protocol.js';
import { BundleSource, loadManifest, type Progress } from './bundle-source.js';
import { IdbBundleCache, noCache, planKey, type BundleCache } from './cache.js';
import { LivePruning } from './live-pruning.js';
import { BatchEngine } from './batch-engine.js';
import { CompiledEngine } from './compiled-engine.js';
import { measureCompiled, measureStages } from './measure.js';
import { CallProfiler } from './profile.js';
import { loadOrt, quantizedFallbackReason, type OrtHandle } from './ort-backend.js';
import { inputDims, inputSize, preprocessBatch } from './preprocess.js';
import { sameItems } from './same-items.js';
import { SessionPool } from './session-pool.js';

/** A result as classify() builds it: its `totalMs` (and `profile`) are set once the call ends. */
type Result = { -readonly [K in keyof WireResult]: WireResult[K] };

/** Whether `t` holds one number (not NaN) per exit. */
function fitsExits(t: readonly number[], exits: number): boolean {
  if (t.length !== exits) return false;
  for (let e = 0; e < exits; e++) if (e in t && (typeof t[e] !== 'number' || Number.isNaN(t[e]))) return false;
  return true;
}

/** Samples per cascade run inside one classify request (bigger requests are cut into chunks of this size). */
const MAX_BATCH = 64;

/** Injected dependencies, for tests: the cache and the ORT loader. */
export interface RuntimeDeps {
  readonly cache?: BundleCache;
  /** `wasmOnly`: why the model must run on WASM (quantized: {@link quantizedFallbackReason}), when known up front. */
  readonly loadOrt?: (request: InitRequest, wasmOnly?: string) => Promise<OrtHandle>;
  readonly now?: () => number;
  /**
   * Set by a runtime that runs this one inside its own queued jobs and shares its onnxruntime (the learning runtime):
   * onnxruntime steps must then happen only inside the caller's jobs, so the compiled engine makes a replacement
   * model in the call that needs it instead of in the background.
   */
  readonly nested?: boolean;
  /** Live exit pruning's per-exit overhead in ms when no device plan prices the exits (default: EXIT_OVERHEAD_MS). */
  readonly exitOverheadMs?: number;
}

/** One open bundle in the worker. Create with {@link BundleRuntime.open}. */
export class BundleRuntime {
  private readonly source: BundleSource;
  private readonly pool: SessionPool;
  private readonly runner: OrtStageRunner;
  /** The batch-1 compiled engine; undefined with `engine: 'stages'`. */
  private readonly compiled: CompiledEngine | undefined;
  /** The batch engine (calls of more than one input, on WASM); undefined with `engine: 'stages'` and when nested. */
  private readonly batch: BatchEngine | undefined;
  /** Progress listener of the plan() call in flight, besides the one given at open(). */
  private planProgress: Progress | undefined;
  /** plan() calls run one after another (concurrent measurements would disturb each other's timings). */
  private planning: Promise<unknown> = Promise.resolve();
  /** The cached device plan's lookup ({@link cachedPlan}), made once. */
  private cachedPlanRead: { readonly key: string; readonly plan: Promise<DevicePlan | undefined> } | undefined;
  /** Live exit pruning; undefined with `pruneExits: false` or a bundle without exits. */
  private readonly pruner: LivePruning | undefined;
  /**
   * A batch-1 input buffer no call uses any more ({@link classify} preprocesses into it: no allocation per call; its
   * runs read it only while the call is under way, onnxruntime copying it into its own memory).
   */
  private spareInput: Float32Array | undefined;
  /** The last snapshot {@link state} made, returned again while it holds. */
  private lastState: RuntimeState | undefined;

  private constructor(
    readonly manifest: BundleManifest,
    readonly manifestHash: string,
    private readonly manifestFromCache: boolean,
    private readonly manifestStale: boolean,
    private readonly ort: OrtHandle,
    private readonly cache: BundleCache,
    private readonly openProgress: Progress,
    manifestUrl: string,
    cachedKeys: ReadonlySet<string>,
    compile: boolean,
    nested: boolean,
    prune: boolean,
    exitOverheadMs: number | undefined,
  ) {
    const progress = (p: ProgressInfo): void => this.progress(p);
    this.source = new BundleSource(manifest, manifestUrl, cache, progress, cachedKeys, manifestHash);
    // a quantized segment found in a bundle without `backbone.quantized`: its next open goes to WASM at once
    const quantized = (ops: readonly string[]): void => void cache.putQuantized?.(manifestHash, ops).catch(() => {});
    this.pool = new SessionPool(manifest, ort, this.source, progress, compile, quantized);
    this.runner = new OrtStageRunner({ Tensor: ort.ort.Tensor, manifest, sessions: this.pool, queue: this.pool.queue });
    this.compiled = compile
      ? new CompiledEngine(manifest, this.pool, this.runner, cache, manifestHash, { background: !nested })
      : undefined;
    // Not nested (a learning runtime, remade at every fit): its batch model would be made inside a call each time.
    this.batch =
      compile && !nested ? new BatchEngine(manifest, this.pool, this.runner, cache, manifestHash) : undefined;
    this.pruner =
      prune && manifest.exits.length > 0
        ? new LivePruning(manifest, manifestHash, cache, ort, {
            headsGated: () => this.compiled !== undefined && this.compiled.failure === undefined,
            overheadMs: exitOverheadMs,
            generation: () => this.pool.backendGeneration,
          })
        : undefined;
  }

  /**
   * Opens the bundle at `req.manifestUrl`: manifest (cache first unless `cache: 'reload'` or older than
   * `manifestMaxAgeMs`), onnxruntime with the chosen backend, then segment 0 (fetched or cached, verified, warmed up).
   * Deeper segments load when a sample first reaches them. Unless `engine: 'stages'`, the loaded segments are then
   * compiled into one model (a failure leaves the stage engine in use, with `engineFallbackReason`).
   */
  static async open(req: InitRequest, progress: Progress = () => {}, deps: RuntimeDeps = {}): Promise<BundleRuntime> {
    const cache = deps.cache ?? (req.cache === false ? noCache : new IdbBundleCache());
    const now = (deps.now ?? Date.now)();
    const loaded = await loadManifest(req.manifestUrl, req, cache, now, progress);
    // a quantized model (manifest `backbone.quantized`; without it, quantized ops an earlier open found in a segment)
    // runs on WASM: onnxruntime-web's WebGPU gets its ops wrong
    const flagged = loaded.manifest.backbone.quantized;
    const found = flagged === undefined ? await cache.getQuantized?.(loaded.hash) : undefined;
    const wasmOnly =
      flagged === true ? quantizedFallbackReason() : found?.length ? quantizedFallbackReason(found) : undefined;
    const ort = await (deps.loadOrt ?? loadOrt)(req, wasmOnly);
    const keys = await cache.segmentKeys();
    const rt = new BundleRuntime(
      loaded.manifest,
      loaded.hash,
      loaded.fromCache,
      loaded.stale,
      ort,
      cache,
      progress,
      req.manifestUrl,
      keys,
      (req.engine ?? 'auto') !== 'stages',
      deps.nested === true,
      req.pruneExits !== false,
      deps.exitOverheadMs,
    );
    try {
      await rt.pool.session(0);
      await loaded.commit(); // a manifest is cached only once a load with it succeeded
      // the state remembered for the thresholds the first call is expected to send (the cached plan's, else the
      // manifest's) is put in force at once; one of other thresholds waits for a call that sends them
      const plan = req.usePlan === true && rt.pruner ? await rt.cachedPlan() : undefined;
      const steady = await rt.pruner?.recall(plan?.thresholds ?? rt.manifest.exits.map((e) => e.threshold));
      if (steady) rt.compiled?.prefer(steady);
      await rt.compiled?.ready();
    } catch (e) {
      await rt.dispose();
      throw e;
    }
    return rt;
  }

  /** Reports progress to the listener given at open() and to that of the plan() call in flight. */
  private progress(p: ProgressInfo): void {
    this.openProgress(p);
    this.planProgress?.(p);
  }

  private throwIfDisposed(): void {
    if (this.pool.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
  }

  /**
   * Snapshot for the page's `info()`: the same object while nothing in it changed (classify() replies compare it with
   * the state the page holds on every call, so it is not built again each time).
   */
  state(): RuntimeState {
    const last = this.lastState;
    const pruned = this.pruner?.pruned;
    if (last && this.stateHolds(last, pruned)) return last;
    const failure = this.compiled?.failure;
    const batchFailure = this.batch?.failure;
    return (this.lastState = {
      backend: this.ort.backend,
      threads: this.ort.threads,
      crossOriginIsolated: (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true,
      ...(this.ort.fallbackReason ? { fallbackReason: this.ort.fallbackReason } : {}),
      engine: this.engine(),
      ...(failure !== undefined ? { engineFallbackReason: failure } : {}),
      batchEngine: this.batchEngine(),
      ...(batchFailure !== undefined ? { batchEngineFallbackReason: batchFailure } : {}),
      sessions: [...this.pool.created],
      cachedSegments: [...this.source.cachedSegments],
      manifestFromCache: this.manifestFromCache,
      manifestStale: this.manifestStale,
      cacheEnabled: this.cache.enabled,
      ...(pruned ? { prunedExits: pruned } : {}),
    });
  }

  /** Whether {@link state} would build a state equal to `s` now (`pruned`: the pruner's exits pruned now). */
  private stateHolds(s: RuntimeState, pruned: readonly number[] | undefined): boolean {
    const failure = this.compiled?.failure;
    return (
      s.backend === this.ort.backend &&
      s.threads === this.ort.threads &&
      s.fallbackReason === (this.ort.fallbackReason || undefined) &&
      s.engineFallbackReason === failure &&
      s.batchEngineFallbackReason === this.batch?.failure &&
      s.batchEngine === this.batchEngine() &&
      s.cacheEnabled === this.cache.enabled &&
      sameItems(s.sessions, this.pool.created) &&
      sameItems(s.cachedSegments, this.source.cachedSegments) &&
      (pruned === undefined || sameItems(s.prunedExits!, pruned))
    );
  }

  /** Classifies every input of the request with the given thresholds. */
  async classify(req: ClassifyRequest): Promise<WireResult[]> {
    this.throwIfDisposed();
    const t0 = performance.now();
    const profiler = req.profile === true ? new CallProfiler() : undefined;
    const { manifest } = this;
    if (!fitsExits(req.thresholds, manifest.exits.length)) {
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `expected ${manifest.exits.length} thresholds, got ${JSON.stringify(req.thresholds)}`,
      );
    }
    if (!Array.isArray(req.inputs) || req.inputs.length === 0) return [];
    const size = inputSize(manifest.input);
    // one input: into the buffer the last call left (taken, so that a call running meanwhile makes its own)
    const spare = req.inputs.length === 1 ? this.spareInput : undefined;
    this.spareInput = undefined;
    const all = await preprocessBatch(req.inputs, manifest.input, spare);
    profiler?.lap('preprocessMs');
    profiler?.attach(this.pool.queue);
    let results: Result[] = [];
    // with pruning: the requested thresholds with the pruned exits off (a probe: as requested), exits counted after
    if (this.pruner?.switched) await this.pruner.recall(req.thresholds); // the new backend's memory, not the old one's
    const pruning = this.pruner?.next(req.thresholds);
    try {
      for (let start = 0; start < req.inputs.length; start += MAX_BATCH) {
        const rows = Math.min(MAX_BATCH, req.inputs.length - start);
        const data = rows === req.inputs.length ? all : all.subarray(start * size, (start + rows) * size);
        const chunk = await this.runChunk(data, rows, req, pruning, profiler);
        if (start === 0) results = chunk;
        else for (const r of chunk) results.push(r);
      }
    } finally {
      profiler?.detach();
      // the call is done with its input: the next one may write there (not into a tensor the request handed in)
      // (a request's own tensor: the buffer it took, unused, goes back)
      if (all.length === size) this.spareInput = all !== (req.inputs[0] as { data?: unknown }).data ? all : spare;
    }
    if (pruning) this.pruner!.observe(pruning, results);
    const totalMs = performance.now() - t0;
    const profile = profiler?.done();
    for (const r of results) {
      r.totalMs = totalMs;
      if (profile) r.profile = profile;
    }
    return results;
  }

  /**
   * One cascade run of up to MAX_BATCH rows (one row: on the compiled engine when it is in use) with the request's
   * thresholds, or those `pruning` gives; when a WebGPU run fails, once more on WASM. Each result's `totalMs` is
   * the caller's to set.
   */
  private runChunk(
    data: Float32Array,
    rows: number,
    req: ClassifyRequest,
    pruning: PruneRun | undefined,
    profiler?: CallProfiler,
  ): Promise<Result[]> {
    const { manifest } = this;
    const thresholds = pruning?.thresholds ?? req.thresholds;
    const result = (r: CascadeResult, stages: readonly number[]): Result => {
      const out: Result = { index: r.index, confidence: r.confidence, exit: r.exit, stages, totalMs: 0 };
      if (req.probabilities) out.probabilities = r.probs;
      return out;
    };
    const run = async (): Promise<Result[]> => {
      const engine = req.inputs.length === 1 ? this.compiled : undefined; // a batch: the batch engine, or stages
      const compiled = engine && (engine.readyNow() ?? (await engine.ready()));
      if (compiled) {
        const r = await engine!.run(
          compiled,
          data,
          thresholds,
          profiler,
          pruning && { steady: pruning.steady, requested: req.thresholds },
        );
        return [result(r, r.stages)];
      }
      const batch = engine ? undefined : this.batch;
      const batchModel = batch?.model();
      if (batch && batchModel) {
        const out = await batch.run(batchModel, data, rows, thresholds);
        if (out) {
          batch.refresh();
          return out.map((r) => result(r, r.stages));
        }
      }
      const stageMs: number[] = [];
      const input = new this.ort.ort.Tensor('float32', data, inputDims(manifest.input, rows));
      const out = await runCascade(manifest, this.runner, input, rows, {
        thresholds,
        onStage: (s, _rows, ms) => (stageMs[s] = ms),
      });
      batch?.refresh();
      return out.map((r) => {
        const lastSegment = r.exit < 0 ? manifest.segments.length - 1 : manifest.exits[r.exit]!.segment;
        return result(r, stageMs.slice(0, lastSegment + 1));
      });
    };
    // A segment's load may switch the pool to WASM during the call (a quantized segment): the earlier segments' output
    // may then be a WebGPU buffer the WASM session cannot read, so the call runs again on WASM (redoIfSwitched),
    // whether or not onnxruntime threw.
    return this.pool.withFallback(run, {
      reason: 'a WebGPU run failed',
      during: 'classifying',
      rows,
      redoIfSwitched: true,
    });
  }

  /** The engine of batches now: the batch model's unless it is off (WebGPU, failed, disposed) or absent. */
  private batchEngine(): 'compiled' | 'stages' {
    return this.batch?.on ? 'compiled' : 'stages';
  }

  /** The engine of batch-1 calls now: the compiled one unless it is off or failed (then stage by stage). */
  private engine(): 'compiled' | 'stages' {
    return this.compiled && this.compiled.failure === undefined ? 'compiled' : 'stages';
  }

  /**
   * The cached device plan for this manifest hash and the backend, thread count and engine in use, if one exists and
   * fits the manifest (a malformed or mismatched entry is ignored).
   */
  cachedPlan(): Promise<DevicePlan | undefined> {
    // read once per open, backend and engine: open() (for pruning's first thresholds) and the worker API (to apply it)
    // both ask
    const key = `${this.ort.backend}:${this.engine()}`;
    if (this.cachedPlanRead?.key !== key) this.cachedPlanRead = { key, plan: this.readCachedPlan() };
    return this.cachedPlanRead.plan;
  }

  private async readCachedPlan(): Promise<DevicePlan | undefined> {
    const { manifest, manifestHash } = this;
    const { backend, threads } = this.ort;
    const p = await this.cache.getPlan(planKey(manifestHash, backend, threads, this.engine()));
    const fits =
      p !== undefined &&
      p.manifestHash === manifestHash &&
      p.backend === backend &&
      p.threads === threads &&
      p.thresholds.length === manifest.exits.length &&
      p.timings.stageMs.length === manifest.segments.length &&
      p.timings.decisionMs.length === manifest.segments.length &&
      (p.timings.exitMs === undefined || p.timings.exitMs.length === manifest.segments.length);
    if (!fits) return undefined;
    this.pruner?.usePlan(p);
    return p.engine === undefined ? { ...p, engine: this.engine() } : p; // (keyed by engine: measured on this one)
  }

  /**
   * Times every stage on the backend and engine in use: with the compiled engine on, every segment is loaded (through
   * the lazy loading path), the whole cascade compiled with gated heads, and {@link measureCompiled} times where its
   * one run leaves and what each exit in use costs (an exit whose cost it cannot measure: see its `unmeasuredExits`);
   * otherwise {@link measureStages} (all sessions created first). When a WebGPU run fails, falls back to WASM and
   * measures again there; so too when another call switched the backend during the measurement. DISPOSED when the
   * classifier is disposed meanwhile.
   */
  private async measureTimings(): Promise<StageTimings> {
    this.throwIfDisposed();
    const measure = async (): Promise<StageTimings> => {
      const engine = this.compiled;
      if (engine && engine.failure === undefined) {
        for (let s = 0; s < this.manifest.segments.length; s++) await this.runner.session(s);
        const timings = await engine.withGated(async (c) =>
          c && c.count === this.manifest.segments.length
            ? measureCompiled(this.manifest, (thresholds) => engine.timeRun(c, thresholds))
            : undefined,
        );
        if (timings) return timings;
      }
      return measureStages(this.runner);
    };
    return this.pool.withFallback(measure, {
      reason: 'a WebGPU run failed while measuring',
      during: 'measuring',
      redoIfSwitched: true,
    });
  }

  /**
   * Makes this device's plan for agreement target `req.target`: the validation file (cached by sha256), stage times
   * measured here ({@link measureTimings}), then {@link planExits}; the plan is cached under
   * `plan:<manifestHash>:<backend>:<threads>:<engine>` and returned. Calls run one at a time.
   * @throws SelfxitError INVALID_TARGET, INVALID_BUNDLE (no or malformed validation file), INTEGRITY_ERROR, FETCH_FAILED.
   */
  plan(req: PlanRequest, onProgress?: Progress): Promise<DevicePlan> {
    const run = async (): Promise<DevicePlan> => {
      this.throwIfDisposed();
      const target = req?.target;
      if (typeof target !== 'number') checkTarget(Number.NaN);
      checkTarget(target);
      this.planProgress = onProgress;
      try {
        const validation = await this.source.validation();
        const timings = await this.measureTimings();
        const { backend, threads } = this.ort;
        const engine = this.engine(); // the engine the times were measured on
        const plan: DevicePlan = {
          ...planExits(this.manifest, validation, timings, {
            target,
            manifestHash: this.manifestHash,
            backend,
            threads,
          }),
          engine,
        };
        this.pruner?.usePlan(plan);
        await this.cache.putPlan(planKey(this.manifestHash, backend, threads, engine), plan);
        this.cachedPlanRead = undefined; // the cache holds a newer plan now
        return plan;
      } finally {
        this.planProgress = undefined;
      }
    };
    const result = this.planning.then(run, run);
    this.planning = result.catch(() => undefined);
    return result;
  }

  /** Releases every session. Later calls fail with DISPOSED. */
  async dispose(): Promise<void> {
    await this.compiled?.dispose();
    await this.batch?.dispose();
    await this.pool.dispose();
  }
}

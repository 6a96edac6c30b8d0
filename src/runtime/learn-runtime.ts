// The worker side of on-device learning (`load(modelUrl | bundleUrl, { learn })`): fetches and analyses a plain ONNX
// model (a bundle's backbone.onnx), serves with the full model run with the candidate cuts as extra outputs (storing
// pooled features) until a fit chose exits (or through the bundle's own exits), then through those exits (a learned
// bundle assembled in memory, opened by the ordinary BundleRuntime on the engine the load asked for: compiled by
// default), completing a random share of served inputs with the full model after the reply (the live audit), and
// watching the inputs for drift (learn/drift.ts). Fits run in a second worker (learn-worker.ts); the state persists
// per model hash (learn-store.ts).
// Over 400 lines: one class whose steps (serve, audit, fit, open exits, persist) share one queue and its state.
import type { BundleManifest } from '../bundle/manifest.js';
import type { DevicePlan } from '../policy/device-plan.js';
import { SelfxitError, isSelfxitError } from '../errors.js';
import { encodeModel, quantizedOps } from '../graph/index.js';
import { analyseForLearning, Learner, planCostTable, type FitRunner, type LearnedExits } from '../learn/learner.js';
import { fitLearned } from '../learn/fit.js';
import { inputStats } from '../learn/drift.js';
import { inputKeys } from '../learn/input-key.js';
import { NEVER_EXIT } from '../bundle/manifest.js';
import type { OrtModule } from '../ort/types.js';
import type { ClassifyRequest, InitRequest, LearningState, RuntimeState, WireResult } from '../protocol.js';
import type { Progress } from './bundle-source.js';
import { IdbLearnStore, legacyLearnSchema, noLearnStore, type LearnStore } from './learn-store.js';
import { planKey } from './cache.js';
import { bundleModel, learnCache, learnedBundle, learnedUrl, MemoryBundleCache, plainModel } from './learn-bundle.js';
import {
  loadOrt,
  quantizedFallbackReason,
  runtimeFilesFailure,
  sessionOptions,
  type OrtHandle,
} from './ort-backend.js';
import { inputDims, inputSize, preprocessInto } from './preprocess.js';
import { SerialQueue } from './queue.js';
import { BundleRuntime, type RuntimeDeps } from './runtime.js';
import { CallProfiler } from './profile.js';

/** Rows per run of the full model. */
const MAX_BATCH = 64;
/**
 * New samples (inputs offered to the reservoir: each served by the full model, each audited one) between two saves of
 * the state: what a reload can lose. Counted in samples, not served inputs, since the state changes with them (what
 * else changes it, a fit, a tightening, a drift alarm, saves at once).
 */
const SAVE_EVERY = 500;
/**
 * Audited inputs completed by the full model per queued job (one job between calls): a call arriving meanwhile waits
 * for one job at most. 16 rows of the CIFAR ResNet-56 (125 M MACs each): 51 ms a run in onnxruntime-node on one thread
 * on the 2-core dev machine (5.3 ms for 1 row, 213 ms for 64); onnxruntime-web's WASM is slower.
 */
export const AUDIT_CHUNK = 16;
/**
 * Audited inputs waiting for the full model, at most: while calls outrun the completions (a long burst of traffic), the
 * inputs drawn beyond it are served but not completed (neither audited nor sampled; the draws stay uniform). Fewer for
 * large inputs: at most {@link MAX_PENDING_AUDIT_BYTES} of them (224×224×3 float32 inputs: 55), never below AUDIT_CHUNK.
 */
export const MAX_PENDING_AUDITS = 256;
/** Bytes of audited inputs waiting for the full model, at most (see {@link MAX_PENDING_AUDITS}). */
export const MAX_PENDING_AUDIT_BYTES = 32 * 1024 * 1024;

/** How many audited inputs of `size` floats may wait for the full model. */
export const pendingAuditCap = (size: number): number =>
  Math.max(AUDIT_CHUNK, Math.min(MAX_PENDING_AUDITS, Math.floor(MAX_PENDING_AUDIT_BYTES / (4 * size))));
/** The persisted state's key: model hash and class-score output. */
export const learnStateKey = (modelHash: string, output: string): string => `${modelHash}/${output}`;

/** How long load() waits at most for the second worker (the fits') to start. */
const LEARNER_READY_MS = 10_000;

/** The second worker running the fits (learn-worker.ts): `ready` settles once it answers (false: it failed). */
export interface FitWorker {
  run: FitRunner;
  close(): void;
  readonly ready?: Promise<boolean>;
  /** True once the worker failed: its runner then fits in this thread. */
  readonly broken?: boolean;
}

export interface LearnDeps extends RuntimeDeps {
  readonly learnStore?: LearnStore;
  /** Starts a second worker for the fits (learn-worker.ts); without it (or when it gives none) fits run here. */
  readonly startLearner?: () => FitWorker | undefined;
}

/** A learned bundle opened for serving. */
interface Serving {
  readonly rt: BundleRuntime;
  readonly manifest: BundleManifest;
  readonly hash: string;
  readonly learned: LearnedExits;
}

type Session = Awaited<ReturnType<OrtHandle['ort']['InferenceSession']['create']>>;

/** One plain model learning its exits in the worker. Create with {@link LearnRuntime.open}. */
export class LearnRuntime {
  private readonly queue = new SerialQueue();
  private serving: BundleRuntime | undefined;
  /** The learned exits `serving` was assembled from (the learner may already hold newer ones, not yet opened). */
  private servingFor: LearnedExits | undefined;
  private manifestValue: BundleManifest;
  private manifestHashValue: string;
  private version = 1;
  private sentVersion = 0;
  /** Inputs served through the exits, drawn for the audit: their label, and the learner's version they were served at. */
  private pendingAudits: { data: Float32Array; served: number; version: number }[] = [];
  /** Whether a job completing pending audits is queued or running. */
  private auditsQueued = false;
  private fitting: Promise<void> | undefined;
  /** Cancels the fit running (its result dropped, never adopted; its worker ended when it is busy with it). */
  private cancelFit: ((restartWorker: boolean) => void) | undefined;
  private savedAt = 0;
  /** The save loop in progress (resolved when none), and whether it should write the state once more. */
  private saving: Promise<void> = Promise.resolve();
  private saveWanted = false;
  private lastError: string | undefined;
  private disposed = false;
  /** The second worker running the fits, started by open() (undefined: fits run in this thread). */
  private fitWorker: FitWorker | undefined;
  private fitWorkerTried = false;
  /** Where the last fit ran, and the longest onnxruntime step of opening its exits (ms). */
  private fitWhere: 'worker' | 'thread' | undefined;
  private openStepMs = 0;
  /** True while learned exits are being opened (their sessions created). */
  private opening = false;
  private assembleMs = 0;

  private constructor(
    private readonly req: InitRequest,
    private readonly ort: OrtHandle,
    private readonly learner: Learner,
    private readonly modelBytes: Uint8Array,
    readonly modelHash: string,
    private readonly store: LearnStore,
    /** Whether this load restored a persisted state (false again after a reset). */
    private restored: boolean,
    private readonly progress: Progress,
    private readonly deps: LearnDeps,
    private features: Session,
    private readonly exitless: { manifest: BundleManifest; hash: string },
    /** The bundle learning started from (`load(bundleUrl, { learn })`), opened as is to serve its own exits. */
    private readonly bundleRequest: InitRequest | undefined,
  ) {
    this.manifestValue = exitless.manifest;
    this.manifestHashValue = exitless.hash;
  }

  /** The key of the persisted state: the model's hash and the class-score output learned from (a model with several
   * outputs learns one state per output: their teachers differ). */
  get stateKey(): string {
    return learnStateKey(this.modelHash, this.learner.model.io.output);
  }

  get manifest(): BundleManifest {
    return this.manifestValue;
  }

  get manifestHash(): string {
    return this.manifestHashValue;
  }

  /**
   * Fetches the model at `req.manifestUrl` (a bundle's backbone.onnx; the cached copy offline: learn-bundle.ts),
   * analyses it for learning, restores a persisted state for its hash (a malformed or foreign one is discarded), starts
   * the fits' worker and opens the learned exits when they are on.
   * @throws SelfxitError FETCH_FAILED, INVALID_MODEL, UNSUPPORTED_MODEL, SHAPE_UNKNOWN, INVALID_ARGUMENT,
   * INTEGRITY_ERROR, LEARNING_UNAVAILABLE, RUNTIME_FILES_UNAVAILABLE (onnxruntime's own files).
   */
  static async open(req: InitRequest, progress: Progress = () => {}, deps: LearnDeps = {}): Promise<LearnRuntime> {
    const learn = req.learn;
    if (!learn) throw new SelfxitError('INTERNAL', 'LearnRuntime.open() without learn options');
    const cache = learnCache(req, deps);
    const bundle = learn.fromBundle ? await bundleModel(req, progress, cache) : undefined;
    const { bytes, sha256: hash } = bundle ?? (await plainModel(req.manifestUrl, cache, progress));
    // a quantized model runs on WASM (onnxruntime-web's WebGPU gets its ops wrong): its learned bundles too, on `ort`
    const ops = req.backend === 'wasm' ? [] : quantizedOps(bytes);
    const ort = await (deps.loadOrt ?? loadOrt)(req, ops.length > 0 ? quantizedFallbackReason(ops) : undefined);
    const m = bundle?.manifest;
    // its shape probe is onnxruntime's first session: its own files missing or refused fail there (not SHAPE_UNKNOWN)
    const ortFiles = (e: unknown): never => {
      throw runtimeFilesFailure('the model cannot be analysed for learning', e, ort) ?? e;
    };
    const lm = await analyseForLearning(bytes, ort.ort as unknown as OrtModule, {
      ...(m
        ? { input: { mean: m.input.mean, std: m.input.std, layout: m.input.layout }, output: m.backbone.output }
        : {}),
      ...(learn.input && !m ? { input: learn.input } : {}),
      ...(learn.output && !m ? { output: learn.output } : {}),
      ...(m ? { labels: m.labels } : learn.labels ? { labels: learn.labels } : {}),
      learn: learn.options,
    }).catch(ortFiles);
    const learner = new Learner(lm, learn.options, bundle);
    // a device plan made for the bundle on this backend and thread count: its measured stage times, not MACs, are
    // what the fits' exit selection minimises (measured on the engine the learned exits serve with, else the other)
    const engines = req.engine === 'stages' ? (['stages', 'compiled'] as const) : (['compiled', 'stages'] as const);
    let plan: DevicePlan | undefined;
    for (const engine of bundle && req.usePlan !== false ? engines : [])
      plan ??= await cache.getPlan(planKey(bundle!.hash, ort.backend, ort.threads, engine));
    if (bundle && plan) learner.costTable = planCostTable(bundle.manifest, plan.timings);
    const store = deps.learnStore ?? (learn.persist && req.cache !== false ? new IdbLearnStore() : noLearnStore);
    const stateKey = learnStateKey(hash, lm.io.output);
    // a state of the schema before channels-last cuts were pooled as such still serves a model with none (saved at
    // the current schema next time)
    const saved = await store.load(stateKey, lm.io.input, legacyLearnSchema(lm.analysis.cuts));
    const restored = saved !== undefined && learner.restore(saved);
    if (saved !== undefined && !restored) await store.clear(stateKey);
    const features = await ort.ort.InferenceSession.create(
      encodeModel(learner.featureModel()),
      sessionOptions(ort, []),
    );
    const first = await learnedBundle(learner, bytes, undefined);
    const bundleRequest: InitRequest | undefined = bundle ? { ...req, learn: undefined } : undefined;
    const rt = new LearnRuntime(
      req,
      ort,
      learner,
      bytes,
      hash,
      store,
      restored,
      progress,
      deps,
      features,
      { manifest: first.manifest, hash: first.hash },
      bundleRequest,
    );
    try {
      // the fits' worker starts with the classifier, beside the opening of its exits: its start-up (fetching and
      // evaluating the worker script) then never competes with serving when a fit begins
      await Promise.all([rt.serveLearned(), rt.fitWorkerReady()]);
    } catch (e) {
      await rt.dispose();
      throw e;
    }
    return rt;
  }

  /** Starts the fits' worker (once; not for a model that cannot learn) and waits for it to answer, at most
   * {@link LEARNER_READY_MS}. */
  private async fitWorkerReady(): Promise<void> {
    if (this.learner.model.cannotLearn) return;
    const ready = this.startFitWorker()?.ready;
    if (!ready) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([ready, new Promise((r) => (timer = setTimeout(r, LEARNER_READY_MS)))]);
    clearTimeout(timer);
  }

  private startFitWorker(): FitWorker | undefined {
    if (!this.fitWorkerTried) {
      this.fitWorkerTried = true;
      this.fitWorker = this.deps.startLearner?.();
    }
    return this.fitWorker;
  }

  /** Serves through the learner's exits when they are on (opened first, step by step), else the full model. Must not
   * be called from inside a queued job. */
  private async serveLearned(): Promise<void> {
    const wanted = (): LearnedExits | undefined =>
      this.learner.exitsOn && !this.disposed ? this.learner.learned : undefined;
    const learned = wanted();
    // already served (a fit that was not adopted leaves the learner's exits as they were): nothing to open again
    if (learned === this.servingFor) return;
    const next = learned ? await this.openServing(learned) : undefined;
    // exits that are no longer the learner's once opened (a reset meanwhile): dropped, never served
    await this.queue.run(() =>
      this.disposed || (next && wanted() !== learned) ? next?.rt.dispose() : this.swap(next),
    );
  }

  /**
   * Opens the learned exits — a bundle assembled in memory, or the bundle learning started from — on the engine the
   * load asked for (the compiled cascade by default) and loads every segment, one onnxruntime step per queued job (so
   * that a classify() waits for one session creation, or the one compilation of the cascade, at most). Must not be
   * called from inside a queued job.
   */
  private async openServing(learned: LearnedExits): Promise<Serving> {
    const a0 = performance.now();
    let request: InitRequest;
    // nested: the serving runtime's onnxruntime steps happen only inside this runtime's queued jobs (one onnxruntime
    // call at a time across both: queue.ts)
    let deps: RuntimeDeps = { ...this.deps, loadOrt: async () => this.ort, nested: true };
    let hash: string | undefined;
    if (learned.bundle && this.bundleRequest) request = this.bundleRequest;
    else {
      const b = await learnedBundle(this.learner, this.modelBytes, learned);
      const cache = new MemoryBundleCache();
      const url = learnedUrl(this.modelHash, b.hash);
      cache.hold(url, b.text, b.hash, b.manifest, b.files);
      request = { ...this.req, manifestUrl: url, cache: true, manifestMaxAgeMs: Infinity, usePlan: false };
      deps = { ...deps, cache };
      hash = b.hash;
    }
    // no live exit pruning: the learner selects and audits its own exits (an exit pruned there would skew its audit)
    request = { ...request, pruneExits: false };
    this.openStepMs = 0;
    this.assembleMs = performance.now() - a0;
    // A macrotask before each step: calls that arrived meanwhile are queued first, so each waits for one step at most.
    const step = async <T>(job: () => Promise<T>): Promise<T> => {
      await new Promise((r) => setTimeout(r, 0));
      return this.queue.run(async () => {
        const t0 = performance.now();
        try {
          return await job();
        } finally {
          this.openStepMs = Math.max(this.openStepMs, performance.now() - t0);
        }
      });
    };
    const rt = await step(() => BundleRuntime.open(request, () => {}, deps));
    const manifest = rt.manifest;
    // Segment s loads when an input first reaches it: blank inputs that leave at exit s (the last: at none). Two rows,
    // so that the stage engine runs them (one step per segment); then one row, which compiles the whole cascade once:
    // every threshold at 1, not NEVER_EXIT: the ungated model, which the learner's thresholds run unless they disable
    // an exit (a curve point or a tightening may: then the first call that does makes the gated model, in its turn).
    const blank = { kind: 'tensor' as const, data: new Float32Array(inputSize(manifest.input)) };
    const exits = manifest.exits.length;
    for (let s = 1; s <= exits; s++) {
      const thresholds = manifest.exits.map((_, j) => (j === s ? 0 : NEVER_EXIT));
      await step(() => rt.classify({ inputs: [blank, blank], thresholds, probabilities: false }));
    }
    const atOne = manifest.exits.map(() => 1);
    await step(() => rt.classify({ inputs: [blank], thresholds: atOne, probabilities: false }));
    return { rt, manifest, hash: hash ?? rt.manifestHash, learned };
  }

  /** Serves through `next` (undefined: the full model); the manifest follows. Runs inside a queued job. */
  private async swap(next: Serving | undefined): Promise<void> {
    const old = this.serving;
    this.serving = next?.rt;
    this.servingFor = next?.learned;
    const m = next ?? this.exitless;
    this.setManifest(m.manifest, m.hash);
    if (old && old !== this.serving) await old.dispose();
  }

  private setManifest(manifest: BundleManifest, hash: string): void {
    this.manifestValue = manifest;
    this.manifestHashValue = hash;
    this.version++;
  }

  private throwIfDisposed(): void {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
  }

  /** Classifies the request's inputs (the learner's thresholds, not the request's); `profile` times its parts. */
  classify(req: ClassifyRequest): Promise<WireResult[]> {
    return this.queue.run(async () => {
      this.throwIfDisposed();
      const t0 = performance.now();
      const profiler = req.profile === true ? new CallProfiler() : undefined;
      const data = await this.preprocess(req);
      const rows = req.inputs.length;
      await this.watchDrift(data, rows);
      profiler?.lap('preprocessMs');
      const results =
        this.serving && this.learner.exitsOn && this.servingFor === this.learner.learned
          ? await this.throughExits(data, rows, req.probabilities, profiler)
          : await this.fullModel(data, rows, req.probabilities, profiler);
      const totalMs = performance.now() - t0;
      const profile = profiler?.done();
      return results.map((r) => ({ ...r, totalMs, ...(profile ? { profile } : {}) }));
    });
  }

  /**
   * Each input's statistics to the drift detector, before it is served. On an alarm the learner has tightened the
   * thresholds and audits more until the drift is confirmed or dismissed (or the exits went off: the full model
   * serves from this input on). Runs inside a queued job.
   */
  private async watchDrift(data: Float32Array, rows: number): Promise<void> {
    const spec = this.manifest.input;
    const size = inputSize(spec);
    let alarm = false;
    for (let r = 0; r < rows; r++) if (this.learner.observeInput(inputStats(data, r * size, spec))) alarm = true;
    if (!alarm) return;
    this.version++;
    if (!this.learner.exitsOn) await this.swap(undefined);
    this.save();
  }

  private async preprocess(req: ClassifyRequest): Promise<Float32Array> {
    const spec = this.manifest.input;
    const size = inputSize(spec);
    if (!Array.isArray(req.inputs)) throw new SelfxitError('INVALID_INPUT', 'inputs must be an array');
    const all = new Float32Array(req.inputs.length * size);
    for (let i = 0; i < req.inputs.length; i++) {
      try {
        await preprocessInto(req.inputs[i]!, spec, all, i * size);
      } catch (e) {
        if (isSelfxitError(e) && req.inputs.length > 1)
          throw new SelfxitError(e.code, `input ${i}: ${e.message}`, { ...e.details, inputIndex: i });
        throw e;
      }
    }
    return all;
  }

  /** Runs the full model with the cuts as extra outputs on `rows` inputs; `store` keeps them in the reservoir (an exact
   * repeat of a stored input, by its key, is not stored again). */
  private async runFeatures(
    data: Float32Array,
    rows: number,
    store: boolean,
  ): Promise<{ probs: Float32Array; index: Int32Array; ms: number }> {
    const spec = this.manifest.input;
    const k = this.learner.model.io.classes;
    const probs = new Float32Array(rows * k);
    const index = new Int32Array(rows);
    const size = inputSize(spec);
    const t0 = performance.now();
    // 6-7 µs a 32×32×3 input, 0.22-0.26 ms a 224×224×3 one (input-key.ts): small beside the full-model run each
    // costs; none for a model that cannot learn (nothing is stored)
    const keys = store && !this.learner.model.cannotLearn ? inputKeys(data, rows, size) : undefined;
    for (let at = 0; at < rows; at += MAX_BATCH) {
      const n = Math.min(MAX_BATCH, rows - at);
      const x = new this.ort.ort.Tensor('float32', data.slice(at * size, (at + n) * size), inputDims(spec, n));
      const out = await this.features.run({ [spec.name]: x });
      const r = this.learner.fromRun(out, n, store, keys?.subarray(at, at + n));
      probs.set(r.probs, at * k);
      index.set(r.index, at);
    }
    return { probs, index, ms: performance.now() - t0 };
  }

  /** Serving before exits (or with exits off): the full model answers, and every input is a learning sample. */
  private async fullModel(
    data: Float32Array,
    rows: number,
    probabilities: boolean,
    profiler?: CallProfiler,
  ): Promise<WireResult[]> {
    const { probs, index, ms } = await this.runFeatures(data, rows, true);
    profiler?.absorb({ runMs: ms, runs: Math.ceil(rows / MAX_BATCH) });
    const k = this.learner.model.io.classes;
    this.afterSamples();
    return Array.from({ length: rows }, (_, r) => {
      const p = probs.slice(r * k, (r + 1) * k);
      return {
        index: index[r]!,
        confidence: p[index[r]!]!,
        exit: -1,
        stages: [ms],
        totalMs: 0,
        ...(probabilities ? { probabilities: p } : {}),
      };
    });
  }

  /** Serving through the learned exits; a random share of the inputs is kept for the audit after the reply. */
  private async throughExits(
    data: Float32Array,
    rows: number,
    probabilities: boolean,
    profiler?: CallProfiler,
  ): Promise<WireResult[]> {
    const size = inputSize(this.manifest.input);
    const wires = Array.from({ length: rows }, (_, r) => ({
      kind: 'tensor' as const,
      data: data.slice(r * size, (r + 1) * size),
    }));
    const thresholds = this.learner.thresholds;
    // the exits' version these inputs are served under (a fit may be adopted while they run: their audits are then
    // stale, see auditedAt)
    const version = this.learner.version;
    const served = await this.serving!.classify({ inputs: wires, thresholds, probabilities, profile: !!profiler });
    // its profile is a part of this call's
    if (served[0]?.profile) profiler?.absorb(served[0].profile);
    const results = served.map(({ profile: _, ...r }) => r);
    // Every served input is drawn alike, whether it left early or not: the audit then estimates the cascade's
    // agreement (what the target is about), and the samples it adds to the reservoir are not biased towards easy
    // (early-exited) or hard inputs. Until the reservoir is full, more are drawn (learnShare) so that learning goes on.
    const cap = pendingAuditCap(size);
    results.forEach((r, i) => {
      if (this.pendingAudits.length < cap && this.learner.drawCompletion())
        this.pendingAudits.push({ data: data.slice(i * size, (i + 1) * size), served: r.index, version });
    });
    this.queueAudits();
    return results;
  }

  /** Queues a job completing pending audits (after a macrotask: calls that arrived meanwhile go first), unless one is. */
  private queueAudits(): void {
    if (this.auditsQueued || this.pendingAudits.length === 0 || this.disposed) return;
    this.auditsQueued = true;
    setTimeout(() => void this.queue.run(() => this.runAudits()), 0);
  }

  /**
   * Completes up to {@link AUDIT_CHUNK} audited inputs with the full model (they also become learning samples), then
   * queues the rest. Each is judged against the exits and thresholds it was served by: one served before a change
   * (a tightening among the earlier ones) is a sample only (Learner.auditedAt). A failure is reported as `lastError`.
   */
  private async runAudits(): Promise<void> {
    const batch = this.pendingAudits.splice(0, AUDIT_CHUNK);
    try {
      if (batch.length === 0 || this.disposed) return;
      const size = inputSize(this.manifest.input);
      const data = new Float32Array(batch.length * size);
      batch.forEach((b, i) => data.set(b.data, i * size));
      const { index } = await this.runFeatures(data, batch.length, true);
      const k = this.learner.model.io.classes;
      const verifying = this.learner.verifyingLeft > 0;
      let tightened = false;
      batch.forEach((b, i) => {
        const served = this.req.learn?.corruptAudit ? (index[i]! + 1) % k : b.served;
        if (this.learner.auditedAt(b.version, served, index[i]!)) tightened = true;
      });
      if (tightened) {
        this.version++;
        if (!this.learner.exitsOn) await this.swap(undefined);
        this.save();
      } else if (verifying && this.learner.verifyingLeft === 0) this.save(); // a drift alarm dismissed
      this.afterSamples();
    } catch (e) {
      this.lastError = `the audit failed: ${e instanceof Error ? e.message : String(e)}`;
    } finally {
      this.auditsQueued = false; // (true while this job runs: settled() waits for it)
      this.queueAudits();
    }
  }

  /** After new samples: a fit when the learner wants one, a save now and then (not while a fit runs: its end saves). */
  private afterSamples(): void {
    if (this.learner.wantsFit()) this.startFit();
    else if (!this.fitting && this.learner.reservoir.seen - this.savedAt >= SAVE_EVERY) this.save();
  }

  /**
   * Starts a fit in the background (its slices yield to serving); its exits are put in use when it ends. It can be
   * cancelled ({@link cancelFit}: resetLearning(), dispose()): its result is then dropped, and the fits' worker running
   * it is ended (a fit in this thread runs on to its end, its result unused).
   */
  private startFit(): void {
    if (this.fitting || this.disposed) return;
    const fit = this.learner.fitsStarted + 1; // the number learner.fit() gives it as it starts
    let stale = false;
    let inWorker = false;
    let cancel: (e: Error) => void = () => {};
    const cancelled = new Promise<never>((_, reject) => (cancel = reject));
    cancelled.catch(() => undefined);
    const report = (stage: 'features' | 'heads' | 'thresholds' | 'bundle' | 'done', done: number, total: number) => {
      if (!stale) this.progress({ status: 'learn', file: 'learn', stage, done, total, fit });
    };
    const worker = this.startFitWorker();
    const run: FitRunner = (job, onProgress) => {
      if (stale) return cancelled;
      inWorker = worker !== undefined && worker.broken !== true; // a broken worker's runner fits in this thread
      this.fitWhere = inWorker ? 'worker' : 'thread';
      const ran = worker ? worker.run(job, onProgress) : fitLearned(job, onProgress);
      return Promise.race([ran, cancelled]).finally(() => (inWorker = false));
    };
    const running: Promise<void> = this.learner
      .fit((p) => report(p.stage, p.done, p.total), run)
      .then(async ({ adopted }) => {
        // not adopted (a drift alarm or a drift came meanwhile): nothing new to serve, no 'done'
        if (stale || !adopted) return false;
        this.opening = true;
        try {
          await this.serveLearned();
        } finally {
          this.opening = false;
        }
        return true;
      })
      .then((inUse) => {
        if (stale || !inUse) return;
        this.lastError = undefined;
        this.save();
        // 'done' means the new exits are in use and stored; the fit itself ends now (a save, which may take long on a
        // slow disk, never holds up the next fit)
        void this.saving.then(() => report('done', 1, 1));
      })
      .catch((e: unknown) => {
        if (!stale) this.lastError = e instanceof Error ? e.message : String(e);
      })
      .finally(() => {
        if (this.fitting !== running) return;
        this.fitting = undefined;
        this.cancelFit = undefined;
      });
    this.fitting = running;
    this.cancelFit = (restartWorker) => {
      stale = true;
      this.fitting = undefined;
      this.cancelFit = undefined;
      cancel(new Error('the fit was cancelled'));
      if (!inWorker || !this.fitWorker) return;
      // the fits' worker is busy with the cancelled fit: ended, and a fresh one started for the next fit
      this.fitWorker.close();
      this.fitWorker = undefined;
      this.fitWorkerTried = false;
      if (restartWorker) this.startFitWorker();
    };
  }

  /**
   * Saves the learner's state: one write at a time, of the state as it is when the write starts (its reservoir copied
   * in slices), so that a burst of changes (audits tightening one after the other) costs one more write, not one each
   * (a failed write turns persistence off).
   */
  private save(): void {
    this.savedAt = this.learner.reservoir.seen;
    if (this.saveWanted) return;
    this.saveWanted = true;
    this.saving = this.saving.then(async () => {
      this.saveWanted = false;
      if (!this.store.enabled) return;
      try {
        // copied in slices and written in blocks (learn-store.ts): serving goes on between them
        const state = await this.learner.sliceState(() => new Promise((r) => setTimeout(r, 0)));
        await this.store.save(this.stateKey, state, this.learner.model.io.input);
      } catch (e) {
        // (a RangeError copying a large reservoir): persistence off, as after a failed write; the save loop goes on
        this.store.disable(
          `the state could not be saved: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`,
        );
      }
    });
  }

  /** Resolves once the pending audits, then the fit running (if any) and the pending saves are done (tests). */
  async settled(): Promise<void> {
    while ((this.pendingAudits.length > 0 || this.auditsQueued) && !this.disposed)
      await new Promise((r) => setTimeout(r, 1));
    await this.fitting;
    await this.saving;
  }

  /**
   * Forgets everything learned, here and in storage; the full model (or the bundle's own exits) serves again. A fit
   * running is cancelled, not waited for (on a full reservoir it takes minutes): its result is never adopted. The store
   * is cleared after the save under way (so that its write cannot bring the state before the reset back at the next
   * load()), outside the queue: calls never wait for storage. Resolves once the store is cleared.
   */
  async resetLearning(): Promise<void> {
    this.throwIfDisposed();
    const { cleared } = await this.queue.run(async () => {
      this.throwIfDisposed();
      this.cancelFit?.(true);
      this.learner.reset();
      this.pendingAudits = [];
      this.savedAt = 0;
      this.restored = false;
      this.fitWhere = undefined;
      this.lastError = undefined;
      // in the save loop, after the save under way (not awaited here: a hung IndexedDB must not hold the queue)
      const clear = this.saving.then(() => this.store.clear(this.stateKey));
      this.saving = clear;
      this.saveWanted = false; // a save queued before the clear writes the reset state; the next one comes after it
      await this.swap(undefined);
      return { cleared: clear }; // (not the promise itself: the job would wait for it)
    });
    await this.serveLearned();
    await cleared;
  }

  learningState(): LearningState {
    const include = this.version !== this.sentVersion;
    this.sentVersion = this.version;
    return {
      ...this.learner.status(),
      modelHash: this.modelHash,
      persists: this.store.enabled,
      ...(this.store.reason ? { persistReason: this.store.reason } : {}),
      restored: this.restored,
      version: this.version,
      openingExits: this.opening,
      ...(this.fitWhere
        ? { fitRanIn: this.fitWhere, openStepMs: Math.round(this.openStepMs), assembleMs: Math.round(this.assembleMs) }
        : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(include ? { manifest: this.manifest, manifestHash: this.manifestHash } : {}),
    };
  }

  /** Snapshot for the page's `info()` and `learning()`: the serving runtime's, else the full model's. */
  state(): RuntimeState {
    const common = { manifestFromCache: false, cacheEnabled: this.store.enabled, learning: this.learningState() };
    const base = this.serving?.state();
    if (base) return { ...base, ...common };
    return {
      backend: this.ort.backend,
      threads: this.ort.threads,
      crossOriginIsolated: (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true,
      ...(this.ort.fallbackReason ? { fallbackReason: this.ort.fallbackReason } : {}),
      engine: 'stages',
      sessions: [true],
      cachedSegments: [false],
      ...common,
    };
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    this.cancelFit?.(false);
    this.fitWorker?.close();
    // a save under way completes (learned exits are not lost to a dispose right after a fit) when the worker lives that
    // long: the page's dispose() ends it after 2 s, and a save cut short leaves the previous save's state (whole)
    await this.saving;
    await this.serving?.dispose();
    this.serving = undefined;
    await this.features.release();
  }
}

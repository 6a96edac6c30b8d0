// The page-side classifier: load() opens a bundle in a worker (deadline, AbortSignal); classify()/classifyBatch() send
// inputs there and turn its decisions into labelled results (re-opening a bundle replaced on the server); setTarget()
// re-chooses thresholds; plan() makes and applies a device plan (exits by measured time); dispose() ends the worker.
// The public API it implements is declared in src/types.ts. Over 400 lines: one class whose state (manifest, thresholds,
// plan, learning, re-open) its methods share; batches are cut into parts in batch.ts, load options in options.ts.
import type { BundleManifest } from '../bundle/manifest.js';
import { checkTarget } from '../policy/bounds.js';
import type { DevicePlan } from '../policy/device-plan.js';
import { SelfxitError, isSelfxitError } from '../errors.js';
import type { Backend, ClassifyRequest, RuntimeState, WireInput, WireResult } from '../protocol.js';
import type {
  Classifier,
  ClassifierInfo,
  ClassifierInput,
  ClassifyOptions,
  ClassifyResult,
  DevicePlanOptions,
  LearningInfo,
  LoadOptions,
  TargetChoice,
} from '../types.js';
import { sendInParts, type PartTiming } from './batch.js';
import { abortError, abortable, watchInactivity } from './deadline.js';
import { dropTransfers, toWireInput, type WireConversion } from './inputs.js';
import { checkSignal, resolveLoadOptions, type ResolvedLoad } from './options.js';
import { chooseThresholds } from './target.js';
import type { ClassifierTransport, OpenedBundle } from './transport.js';
import { WorkerClient } from './worker-client.js';

/** MACs fraction of a sample that runs the whole backbone and passes every exit head (computed once per manifest). */
const backboneFractions = new WeakMap<BundleManifest, number>();
function backboneFraction(m: BundleManifest): number {
  let f = backboneFractions.get(m);
  if (f === undefined) {
    const total = m.segments.reduce((a, s) => a + s.macs + s.headMacs, 0);
    f = m.backbone.macs > 0 ? total / m.backbone.macs : 1;
    backboneFractions.set(m, f);
  }
  return f;
}

/** classify()'s options when none are given (one object for every such call). */
const NO_OPTIONS: ClassifyOptions = Object.freeze({});

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** A batch of several parts: each result's `totalMs` is the batch's (page/batch.ts). */
const resultTiming: PartTiming<ClassifyResult> = {
  totalMs: (r) => r.timings.totalMs,
  withTotal: (r, totalMs) => ({ ...r, timings: { ...r.timings, totalMs } }),
};

/** A transport with its bundle open; what {@link load} (and a re-open) gives a classifier. */
interface Opened {
  readonly client: ClassifierTransport;
  readonly opened: OpenedBundle;
}

/** Whether a call failed because the bundle was replaced on the server since it was opened (bundle-source.ts). */
const bundleChanged = (e: unknown): boolean =>
  isSelfxitError(e, 'INTEGRITY_ERROR') && e.details?.bundleChanged === true;

/** Runs of one call at most while the bundle keeps being replaced or re-opened meanwhile (ClassifierImpl's recover). */
const MAX_RUNS = 3;

/** What a part of a batch rejects with when a re-open replaced the runtime the batch started on (it runs again). */
const reopenedError = (): SelfxitError =>
  new SelfxitError('DISPOSED', 'the bundle was re-opened in a new version during the batch', { reopened: true });

/** An agreement target argument: a number in (0, 1]. Throws INVALID_TARGET naming the value and its type. */
function checkTargetArg(target: unknown): asserts target is number {
  if (typeof target !== 'number')
    throw new SelfxitError(
      'INVALID_TARGET',
      `agreement target must be a number in (0, 1], got ${JSON.stringify(target) ?? String(target)} (${typeof target})`,
      { target: String(target) },
    );
  checkTarget(target);
}

/**
 * The {@link Classifier} over a transport to the runtime that opened its bundle: {@link load} gives it the worker link;
 * tests give it a fake.
 */
export class ClassifierImpl implements Classifier {
  private disposed = false;
  /** What dispose() resolves with: one for every call of it. */
  private disposing: Promise<void> | undefined;
  /** Aborted by dispose(): ends a re-open in progress (its new worker) and the calls waiting for it. */
  private readonly ending = new AbortController();
  private choice: Omit<TargetChoice, 'reached'> & { reached?: boolean };
  /** The device plan in use: its backend is the one running (see {@link ClassifierImpl.activePlan}). */
  private devicePlan: DevicePlan | undefined;
  private manifest: BundleManifest;
  private manifestHash: string;
  private readonly manifestUrl: string;
  /** load()'s warnings about its options, reported by learning(). */
  private readonly warnings: readonly string[];
  /** The re-open in progress after the bundle was replaced on the server. */
  private reopening: Promise<void> | undefined;
  /** On-device learning: the version of the learned exits this classifier's manifest and thresholds follow. */
  private learnVersion: number | undefined;
  /** Counts setTarget() calls: a plan() that arrives after a newer setTarget() keeps that target. */
  private targetsSet = 0;

  /**
   * `reopen` opens the bundle again in a new runtime: when a call finds that the bundle was replaced on the server
   * (INTEGRITY_ERROR with `details.bundleChanged`), the classifier switches to the new version and runs the call again,
   * once. Without it, such a call rejects. dispose() aborts the signal it is given; `avoidManifestHash` is the outdated
   * manifest's hash the error named (the new runtime must not open that manifest from its cache again).
   */
  constructor(
    private client: ClassifierTransport,
    opened: OpenedBundle,
    private readonly reopen?: (signal: AbortSignal, avoidManifestHash?: string) => Promise<Opened>,
    /** Bytes of converted inputs per part of a batch (page/batch.ts's PART_BYTES; tests set less). */
    private readonly partBytes?: number,
  ) {
    this.manifest = opened.manifest;
    this.manifestHash = opened.manifestHash;
    this.manifestUrl = opened.manifestUrl;
    this.warnings = opened.warnings ?? [];
    this.choice = this.shippedChoice();
    if (opened.plan) this.applyPlan(opened.plan);
    this.syncLearning();
  }

  /**
   * While learning, the worker owns the exits and thresholds: follows the manifest of the exits in force (sent when
   * they change; the transport keeps the latest on every later state: worker-client.ts) and the thresholds in force
   * (which the audit may have tightened).
   */
  private syncLearning(): void {
    const l = this.client.state?.learning;
    if (!l) return;
    if (l.manifest && l.manifestHash) {
      this.manifest = l.manifest;
      this.manifestHash = l.manifestHash;
    }
    this.learnVersion = l.version;
    this.choice = {
      target: l.target,
      thresholds:
        this.manifest.exits.length === l.thresholds.length
          ? [...l.thresholds]
          : this.manifest.exits.map((e) => e.threshold),
      agreement: l.expectedAgreement,
      macsFraction: l.macsFraction,
    };
  }

  private learningState(): NonNullable<RuntimeState['learning']> {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    const l = this.client.state?.learning;
    if (!l) throw new SelfxitError('LEARNING_UNAVAILABLE', 'this classifier was loaded without { learn }');
    return l;
  }

  learning(): LearningInfo {
    const { manifest: _m, manifestHash: _h, version: _v, ...info } = this.learningState();
    return this.warnings.length > 0 ? { ...info, warnings: [...this.warnings] } : info;
  }

  async resetLearning(): Promise<void> {
    this.learningState();
    await this.client.resetLearning!();
    this.syncLearning();
  }

  /**
   * Runs `job`; when it failed because the bundle was replaced on the server, re-opens it (one re-open shared by the
   * calls that failed) and runs `job` once more on the new version. A call that failed on a runtime already replaced
   * runs again too. dispose() rejects the calls waiting for the re-open with DISPOSED at once.
   */
  private recovering<T>(job: () => Promise<T>): Promise<T> {
    const client = this.client;
    // no async frame of its own: a call that succeeds (nearly all) costs one promise reaction here
    return job().catch((e: unknown) => this.recover(e, client, job, 1));
  }

  /**
   * {@link recovering}'s failed `job` (run on `client`, its `runs`th run): re-opens and runs it again, or rejects with
   * `e`. A run that fails again (the bundle replaced once more, or re-opened by another call during the run) runs again
   * too, each time after a new version was opened, at most {@link MAX_RUNS} runs in all: then a run cut short by a
   * re-open rejects as the bundle replaced (INTEGRITY_ERROR `bundleChanged`), never DISPOSED (the classifier is alive).
   */
  private async recover<T>(e: unknown, client: ClassifierTransport, job: () => Promise<T>, runs: number): Promise<T> {
    if (this.disposed || !this.reopen || (client === this.client && !bundleChanged(e))) throw e;
    if (runs >= MAX_RUNS) {
      if (!isSelfxitError(e, 'DISPOSED')) throw e;
      throw new SelfxitError(
        'INTEGRITY_ERROR',
        `the bundle was replaced on the server again and again during this call (${runs} runs): try again later`,
        { bundleChanged: true, reopened: true, runs },
      );
    }
    if (client === this.client) {
      const avoid = (e as SelfxitError).details?.manifestHash;
      this.reopening ??= this.switchVersion(typeof avoid === 'string' ? avoid : undefined).finally(
        () => (this.reopening = undefined),
      );
    }
    try {
      await abortable(this.reopening ?? Promise.resolve(), this.ending.signal, 'the re-open');
    } catch (why) {
      if (!this.disposed) throw why;
    }
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    const next = this.client;
    return job().catch((again: unknown) => this.recover(again, next, job, runs + 1));
  }

  /**
   * Opens the bundle's new version in a new runtime (avoiding the cached manifest with hash `avoid`, the outdated one)
   * and ends the old one; the thresholds follow the current target.
   */
  private async switchVersion(avoid: string | undefined): Promise<void> {
    const { client, opened } = await this.reopen!(this.ending.signal, avoid);
    if (this.disposed) {
      client.fail(new SelfxitError('DISPOSED', 'the classifier was disposed'));
      return;
    }
    const old = this.client;
    this.client = client;
    this.manifest = opened.manifest;
    this.manifestHash = opened.manifestHash;
    const target = this.choice.target;
    this.devicePlan = undefined;
    this.choice = this.shippedChoice();
    if (opened.plan) this.applyPlan(opened.plan);
    else if (target !== this.manifest.calibration.target) {
      try {
        this.choice = chooseThresholds(this.manifest, target);
      } catch {
        // a target the new version cannot reach keeps its calibration target
      }
    }
    void old
      .dispose()
      .catch(() => {})
      .finally(() => old.fail(new SelfxitError('DISPOSED', 'the bundle was re-opened in a new version')));
  }

  /** The manifest's thresholds and what calibration expects of them. */
  private shippedChoice(): Omit<TargetChoice, 'reached'> {
    const c = this.manifest.calibration;
    return {
      target: c.target,
      thresholds: this.manifest.exits.map((e) => e.threshold),
      agreement: c.validationAgreement,
      macsFraction: c.expectedMacsFraction,
    };
  }

  private applyPlan(plan: DevicePlan): void {
    this.devicePlan = plan;
    this.choice = {
      target: plan.target,
      thresholds: [...plan.thresholds],
      agreement: plan.expectedAgreement,
      macsFraction: plan.expectedMacsFraction,
    };
  }

  /**
   * The device plan, while it fits the backend and engine running. After a WebGPU → WASM fallback, or a compiled →
   * stages one, a plan measured on the other is dropped here: the thresholds go back to the bundle's for the current
   * target (the manifest's own at the calibration target), from the next call on.
   */
  private activePlan(): DevicePlan | undefined {
    const plan = this.devicePlan;
    const state = this.client.state;
    const engineChanged = plan?.engine !== undefined && state?.engine !== undefined && plan.engine !== state.engine;
    if (plan && state && (plan.backend !== state.backend || engineChanged)) {
      this.devicePlan = undefined;
      const target = this.choice.target;
      this.choice =
        target === this.manifest.calibration.target ? this.shippedChoice() : chooseThresholds(this.manifest, target);
    }
    return this.devicePlan;
  }

  private get state(): RuntimeState {
    const s = this.client.state;
    if (!s) throw new SelfxitError('INTERNAL', 'no worker state');
    return s;
  }

  get backend(): Backend {
    return this.state.backend;
  }

  get labels(): readonly string[] {
    return this.manifest.labels;
  }

  /**
   * One input: converted and sent at once (no parts, no promise of its own where the input converts synchronously:
   * arrays, ImageData, ImageBitmaps, Blobs), its result built once from the reply.
   */
  classify(input: ClassifierInput, options: ClassifyOptions = NO_OPTIONS): Promise<ClassifyResult> {
    try {
      const signal = this.callSignal(options);
      const probabilities = options.probabilities === true;
      const profile = options.profile === true;
      const job = (): Promise<ClassifyResult> => this.runOne(input, probabilities, profile, signal);
      return abortable(this.recovering(job), signal, 'classify()');
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async classifyBatch(
    inputs: readonly ClassifierInput[],
    options: ClassifyOptions = NO_OPTIONS,
  ): Promise<ClassifyResult[]> {
    if (!Array.isArray(inputs)) throw new SelfxitError('INVALID_INPUT', 'classifyBatch() takes an array of inputs');
    const signal = this.callSignal(options);
    if (inputs.length === 0) return [];
    const job = (): Promise<ClassifyResult[]> =>
      this.runOnce(inputs, options.probabilities === true, options.profile === true, signal);
    return abortable(this.recovering(job), signal, 'classify()');
  }

  /** A call's checks before anything is converted: DISPOSED, INVALID_ARGUMENT (options, signal), ABORTED. */
  private callSignal(options: ClassifyOptions): AbortSignal | undefined {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    if (typeof options !== 'object' || options === null)
      throw new SelfxitError('INVALID_ARGUMENT', `classify options must be an object, got ${String(options)}`);
    const signal = checkSignal(options.signal);
    if (signal?.aborted) throw abortError(signal, 'classify()');
    return signal;
  }

  /** Throws DISPOSED or ABORTED: checked once an input is converted, before it is sent. */
  private checkRunning(signal: AbortSignal | undefined): void {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    if (signal?.aborted) throw abortError(signal, 'classify()');
  }

  /** classify()'s one input: as a batch of one (page/batch.ts), without its parts. */
  private runOne(
    input: unknown,
    probabilities: boolean,
    profile: boolean,
    signal: AbortSignal | undefined,
  ): Promise<ClassifyResult> {
    try {
      const converted = toWireInput(input, this.client.spares);
      if (converted instanceof Promise) return converted.then((c) => this.sendOne(c, probabilities, profile, signal));
      return this.sendOne(converted, probabilities, profile, signal);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private sendOne(
    { wire, transfer }: WireConversion,
    probabilities: boolean,
    profile: boolean,
    signal: AbortSignal | undefined,
  ): Promise<ClassifyResult> {
    try {
      this.checkRunning(signal);
    } catch (e) {
      dropTransfers(transfer); // the bitmap made for it will not be sent
      return Promise.reject(e);
    }
    this.activePlan();
    const inputs = [wire];
    const thresholds = this.choice.thresholds; // copied by the message itself (structured clone)
    const request: ClassifyRequest = profile
      ? { inputs, thresholds, probabilities, profile }
      : { inputs, thresholds, probabilities };
    const client = this.client;
    const manifest = this.manifest;
    return client.classify(request, transfer).then(
      (served) => {
        // answered by a runtime a re-open replaced meanwhile: the result is that version's (its thresholds, its labels)
        if (this.client !== client) return this.toResult(served[0]!, manifest);
        this.syncLearning(); // the learned exits in force may have changed: the result names theirs
        return this.toResult(served[0]!, this.manifest);
      },
      (e: unknown) => {
        this.syncLearning(); // the state the failure left
        throw e;
      },
    );
  }

  /**
   * Sends the inputs to the worker (in parts, for large images: page/batch.ts), with the thresholds in force now. Every
   * part goes to the runtime the batch started on: when a re-open replaced it meanwhile (another call found the bundle
   * replaced), the next part rejects (DISPOSED, `details.reopened`) and {@link recovering} runs the whole batch again on
   * the new version, so one batch never mixes two versions' thresholds and labels.
   */
  private async runOnce(
    inputs: readonly unknown[],
    probabilities: boolean,
    profile: boolean,
    signal: AbortSignal | undefined,
  ): Promise<ClassifyResult[]> {
    const client = this.client;
    let manifest = this.manifest;
    let thresholds: readonly number[] | undefined;
    const check = (): void => {
      this.checkRunning(signal);
      if (this.client !== client) throw reopenedError(); // before a part is sent (its bitmaps then closed)
      if (thresholds) return;
      this.activePlan();
      thresholds = this.choice.thresholds;
    };
    const send = async (wires: WireInput[], transfers: Transferable[]): Promise<ClassifyResult[]> => {
      // The thresholds are copied by the message itself (structured clone).
      const request: ClassifyRequest = profile
        ? { inputs: wires, thresholds: thresholds!, probabilities, profile }
        : { inputs: wires, thresholds: thresholds!, probabilities };
      const served = await client.classify(request, transfers);
      if (this.client === client) {
        // each part's reply: the learned exits in force may have changed since the last part (its results name theirs)
        this.syncLearning();
        manifest = this.manifest;
      }
      return served.map((r) => this.toResult(r, manifest));
    };
    try {
      return await sendInParts(inputs, send, check, this.partBytes, resultTiming, client.spares);
    } finally {
      this.syncLearning(); // also after a failed call (the state its failure left)
    }
  }

  /** The labelled result of a worker's decision under manifest `m` (built once: no spreads; keys in this order). */
  private toResult(r: WireResult, m: BundleManifest): ClassifyResult {
    const exit = r.exit >= 0 ? m.exits[r.exit]! : undefined;
    const timings: Mutable<ClassifyResult['timings']> = { totalMs: r.totalMs, stages: r.stages };
    if (r.profile) timings.profile = r.profile;
    const result: Mutable<ClassifyResult> = {
      label: m.labels[r.index] ?? String(r.index),
      index: r.index,
      confidence: r.confidence,
      exit: exit
        ? { index: r.exit, name: exit.name, macsFraction: exit.macsFraction }
        : { index: -1, name: 'backbone', macsFraction: backboneFraction(m) },
      timings,
    };
    if (r.probabilities) result.probabilities = r.probabilities;
    return result;
  }

  info(): ClassifierInfo {
    const m = this.manifest;
    const s = this.state;
    const plan = this.activePlan();
    return {
      backend: s.backend,
      threads: s.threads,
      crossOriginIsolated: s.crossOriginIsolated,
      ...(s.fallbackReason ? { fallbackReason: s.fallbackReason } : {}),
      engine: s.engine ?? 'stages',
      ...(s.engineFallbackReason ? { engineFallbackReason: s.engineFallbackReason } : {}),
      batchEngine: s.batchEngine ?? 'stages',
      ...(s.batchEngineFallbackReason ? { batchEngineFallbackReason: s.batchEngineFallbackReason } : {}),
      manifestUrl: this.manifestUrl,
      manifestHash: this.manifestHash,
      labels: m.labels,
      input: m.input,
      exits: m.exits.map((e, i) => ({
        index: i,
        name: e.name,
        threshold: this.choice.thresholds[i]!,
        macsFraction: e.macsFraction,
        expectedShare: e.expectedShare,
      })),
      target: this.choice.target,
      expectedAgreement: this.choice.agreement,
      expectedMacsFraction: this.choice.macsFraction,
      segments: m.segments.map((seg, i) => ({
        file: seg.file,
        bytes: seg.bytes,
        loaded: s.sessions[i] === true,
        cached: s.cachedSegments[i] === true,
      })),
      cache: { enabled: s.cacheEnabled, manifestFromCache: s.manifestFromCache, stale: s.manifestStale === true },
      ...(plan
        ? {
            plan: {
              target: plan.target,
              enabled: plan.enabled,
              thresholds: plan.thresholds,
              expectedMsFraction: plan.expectedMsFraction,
              expectedMacsFraction: plan.expectedMacsFraction,
              measuredAt: plan.measuredAt,
              stageMs: plan.timings.stageMs,
              decisionMs: plan.timings.decisionMs,
              ...(plan.timings.exitMs ? { exitMs: plan.timings.exitMs } : {}),
            },
          }
        : {}),
      prunedExits: s.prunedExits ?? [],
      transport: this.client.sharedMemory === true ? 'shared-memory' : 'message',
    };
  }

  setTarget(target: number): TargetChoice {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    if (this.learnVersion !== undefined)
      throw new SelfxitError('LEARNING_UNAVAILABLE', 'setTarget() is not available while learning: set learn.target');
    checkTargetArg(target);
    const choice = chooseThresholds(this.manifest, target, this.activePlan());
    this.choice = choice;
    this.targetsSet++;
    return choice;
  }

  async plan(options: DevicePlanOptions = {}): Promise<DevicePlan> {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    if (this.learnVersion !== undefined)
      throw new SelfxitError(
        'LEARNING_UNAVAILABLE',
        'plan() is not available while learning: the learner chooses the exits',
      );
    if (typeof options !== 'object' || options === null)
      throw new SelfxitError('INVALID_ARGUMENT', `plan options must be an object, got ${String(options)}`);
    const target = options.target ?? this.choice.target;
    checkTargetArg(target);
    const onProgress = options.onProgress;
    if (onProgress !== undefined && typeof onProgress !== 'function')
      throw new SelfxitError('INVALID_ARGUMENT', 'onProgress must be a function');
    const asked = this.targetsSet;
    const plan = await this.recovering(() => this.client.plan({ target }, onProgress));
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    // a setTarget() made while the plan was measured is newer than the plan's target: it is kept, with thresholds from
    // the plan's curve (as a setTarget() made after the plan)
    const newer = this.targetsSet !== asked ? this.choice.target : undefined;
    this.applyPlan(plan);
    const active = this.activePlan(); // a backend change since the measurement drops it again
    if (newer !== undefined) this.choice = chooseThresholds(this.manifest, newer, active);
    return plan;
  }

  /** Ends the worker (a re-open in progress too); every call of it gets the same promise. */
  dispose(): Promise<void> {
    if (!this.disposing) {
      this.disposed = true;
      this.ending.abort();
      this.disposing = this.end();
    }
    return this.disposing;
  }

  /** Lets the worker release its sessions (2 s at most), then stops it. */
  private async end(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([this.client.dispose(), new Promise((r) => (timer = setTimeout(r, 2000)))]);
    } catch {
      // the worker is going away anyway
    } finally {
      clearTimeout(timer);
    }
    this.client.fail(new SelfxitError('DISPOSED', 'the classifier was disposed'));
  }
}

/**
 * Opens an early-exit bundle and returns a ready classifier (segment 0 loaded, deeper segments on first need).
 *
 * @param bundleUrl URL of the bundle folder or of its manifest.json, relative to the page.
 * @param options See {@link LoadOptions}: backend `'auto'`, threads `min(4, cores)` when isolated else 1, cache `true`.
 * @throws SelfxitError FETCH_FAILED (details.status), INVALID_BUNDLE, INTEGRITY_ERROR, BACKEND_UNAVAILABLE, WORKER_DIED,
 * INVALID_ARGUMENT, TIMEOUT (no progress for `timeoutMs`), ABORTED (`signal`).
 *
 * @example
 * import { load } from 'selfxit';
 * const clf = await load('/models/fashion-resnet/', { onProgress: (p) => console.log(p.status, p.file) });
 * const r = await clf.classify(document.querySelector('img')!);
 * console.log(r.label, r.confidence, r.exit.name);
 */
export async function load(bundleUrl: string | URL, options: LoadOptions = {}): Promise<Classifier> {
  const resolved = resolveLoadOptions(bundleUrl, options);
  const { client, opened } = await openBundle(resolved, resolved.signal);
  for (const w of resolved.warnings) console.warn(`selfxit: ${w}`);
  return new ClassifierImpl(client, opened, (signal, avoid) => openBundle(resolved, signal, avoid));
}

/**
 * Starts a worker and opens the bundle in it, until it makes no progress for `timeoutMs` (TIMEOUT) or `signal` aborts
 * (ABORTED); a load that failed, timed out or was aborted ends its worker. `avoidManifestHash`: a re-open's outdated
 * manifest.
 */
async function openBundle(
  resolved: ResolvedLoad,
  signal: AbortSignal | undefined,
  avoidManifestHash?: string,
): Promise<Opened> {
  if (signal?.aborted) throw abortError(signal, 'load()');
  // A learning runtime's every reply carries its learning state (the port's kind of answer): no lane for it.
  const sharedMemory = resolved.sharedMemory && resolved.init.learn === undefined;
  const client = WorkerClient.start(resolved.workerUrl, resolved.liveness, sharedMemory);
  // on inactivity: progress of the worker (a download under way) restarts the clock
  const deadline = watchInactivity('load()', resolved.timeoutMs, signal, (e) => client.fail(e));
  client.onActivity = deadline.touch;
  try {
    const init = avoidManifestHash === undefined ? resolved.init : { ...resolved.init, avoidManifestHash };
    const { manifest, manifestHash, plan } = await client.init(init, resolved.onProgress);
    const { manifestUrl } = resolved.init;
    return { client, opened: { manifest, manifestHash, manifestUrl, plan, warnings: resolved.warnings } };
  } catch (e) {
    client.fail(new SelfxitError('DISPOSED', 'load() failed'));
    throw e;
  } finally {
    client.onActivity = undefined;
    deadline.stop();
  }
}

// The page-side classifier: load() opens a bundle in a worker; classify()/classifyBatch() send inputs there and
// turn its decisions into labelled results; setTarget() re-chooses thresholds; plan() makes and applies a device
// plan (exits by measured time); dispose() ends the worker.
import type { BundleManifest, InputSpec } from '../bundle/manifest.js';
import { checkTarget } from '../policy/bounds.js';
import type { DevicePlan } from '../policy/device-plan.js';
import { SelfxitError } from '../errors.js';
import type { Backend, ProgressInfo, RuntimeState, WireInput, WireResult } from '../protocol.js';
import { toWireInput, type ClassifierInput } from './inputs.js';
import { resolveLoadOptions, type LoadOptions } from './options.js';
import { chooseThresholds, type TargetChoice } from './target.js';
import { WorkerClient } from './worker-client.js';
import { proxy, transfer } from 'comlink';

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
  readonly timings: { readonly totalMs: number; readonly stages: readonly number[] };
  /** Class probabilities at the decision point, when asked for. */
  readonly probabilities?: Float32Array;
}

/** Options of classify() and classifyBatch(). */
export interface ClassifyOptions {
  /** Also return the class probabilities. Default false. */
  readonly probabilities?: boolean;
}

/** Options of {@link Classifier.plan}. */
export interface DevicePlanOptions {
  /** Agreement target in (0, 1] to choose the thresholds for. Default: the current target (`info().target`). */
  readonly target?: number;
  /** Progress of loading what the measurement needs (every segment, validation.bin). Default: none (the load()
   * `onProgress` still gets the segment events, as for classify). */
  readonly onProgress?: (progress: ProgressInfo) => void;
}

/** The device plan in use, as {@link ClassifierInfo.plan} reports it. */
export interface PlanSummary {
  /** Agreement target the plan was made for. */
  readonly target: number;
  /** Per bundle exit: used by the plan (an unused exit never fires and its output is never read). */
  readonly enabled: readonly boolean[];
  /** Per bundle exit, as the plan chose them for `target` (unused: NEVER_EXIT). */
  readonly thresholds: readonly number[];
  /** Expected ms per sample at these thresholds / ms of running every segment, on the measured times. */
  readonly expectedMsFraction: number;
  /** Expected MACs per sample at these thresholds / backbone MACs. */
  readonly expectedMacsFraction: number;
  /** ISO time of the measurement. */
  readonly measuredAt: string;
  /** Per segment, median ms of one run at batch 1 (segment + fused head, exit output not read). */
  readonly stageMs: readonly number[];
  /** Per segment, what reading and deciding on the exit output added (0 without an exit). */
  readonly decisionMs: readonly number[];
}

/** What info() reports. */
export interface ClassifierInfo {
  readonly backend: Backend;
  readonly threads: number;
  readonly crossOriginIsolated: boolean;
  /** Why WebGPU is not in use although asked for, if that happened. */
  readonly fallbackReason?: string;
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
  readonly cache: { readonly enabled: boolean; readonly manifestFromCache: boolean };
  /** The device plan in use (from `clf.plan()` or the cache at load), if any. */
  readonly plan?: PlanSummary;
}

/** MACs fraction of a sample that runs the whole backbone and passes every exit head. */
function backboneFraction(m: BundleManifest): number {
  const total = m.segments.reduce((a, s) => a + s.macs + s.headMacs, 0);
  return m.backbone.macs > 0 ? total / m.backbone.macs : 1;
}

/**
 * An early-exit classifier running in a worker. Get one with {@link load}.
 *
 * @example
 * const clf = await load('/models/fashion-resnet/');
 * const { label, exit } = await clf.classify(imgElement);
 * await clf.dispose();
 */
export class Classifier {
  private disposed = false;
  private choice: Omit<TargetChoice, 'reached'> & { reached?: boolean };
  /** The device plan in use: its backend is the one running (see {@link Classifier.activePlan}). */
  private devicePlan: DevicePlan | undefined;

  private constructor(
    private readonly client: WorkerClient,
    private readonly manifest: BundleManifest,
    private readonly manifestHash: string,
    private readonly manifestUrl: string,
    plan: DevicePlan | undefined,
  ) {
    this.choice = this.shippedChoice();
    if (plan) this.applyPlan(plan);
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
   * The device plan, while it fits the backend running. After a WebGPU → WASM fallback a plan made for WebGPU is
   * dropped here: the thresholds go back to the bundle's for the current target (the manifest's own at the
   * calibration target), from the next call on.
   */
  private activePlan(): DevicePlan | undefined {
    const plan = this.devicePlan;
    if (plan && this.client.state && plan.backend !== this.client.state.backend) {
      this.devicePlan = undefined;
      const target = this.choice.target;
      this.choice =
        target === this.manifest.calibration.target ? this.shippedChoice() : chooseThresholds(this.manifest, target);
    }
    return this.devicePlan;
  }

  /** See {@link load}. */
  static async create(bundleUrl: string | URL, options: LoadOptions = {}): Promise<Classifier> {
    const resolved = resolveLoadOptions(bundleUrl, options);
    const client = WorkerClient.start(resolved.workerUrl);
    const onProgress = resolved.onProgress;
    try {
      const reply = await client.call((api) =>
        api.init(resolved.init, onProgress ? proxy((p: ProgressInfo) => onProgress(p)) : undefined),
      );
      return new Classifier(client, reply.manifest, reply.manifestHash, resolved.init.manifestUrl, reply.plan);
    } catch (e) {
      client.fail(new SelfxitError('DISPOSED', 'load() failed'));
      throw e;
    }
  }

  private get state(): RuntimeState {
    const s = this.client.state;
    if (!s) throw new SelfxitError('INTERNAL', 'no worker state');
    return s;
  }

  /** The backend actually running ('webgpu' or 'wasm'; it can change from webgpu to wasm after a GPU failure). */
  get backend(): Backend {
    return this.state.backend;
  }

  /** Labels in class-index order. */
  get labels(): readonly string[] {
    return this.manifest.labels;
  }

  /** Classifies one input. Rejects with INVALID_INPUT for an unsupported or wrongly sized input (the classifier stays usable). */
  async classify(input: ClassifierInput, options: ClassifyOptions = {}): Promise<ClassifyResult> {
    const [r] = await this.run([input], options);
    return r!;
  }

  /**
   * Classifies many inputs in one cascade run: rows that exit leave the batch before the next segment.
   * Returns one result per input, in order.
   */
  async classifyBatch(inputs: readonly ClassifierInput[], options: ClassifyOptions = {}): Promise<ClassifyResult[]> {
    if (!Array.isArray(inputs)) throw new SelfxitError('INVALID_INPUT', 'classifyBatch() takes an array of inputs');
    return this.run(inputs, options);
  }

  private async run(inputs: readonly unknown[], options: ClassifyOptions): Promise<ClassifyResult[]> {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    if (inputs.length === 0) return [];
    const wires: WireInput[] = [];
    const transfers: Transferable[] = [];
    for (let i = 0; i < inputs.length; i++) {
      try {
        const { wire, transfer: t } = await toWireInput(inputs[i]);
        wires.push(wire);
        transfers.push(...t);
      } catch (e) {
        for (const w of transfers) (w as ImageBitmap).close?.();
        if (e instanceof SelfxitError && inputs.length > 1)
          throw new SelfxitError(e.code, `input ${i}: ${e.message}`, { ...e.details, inputIndex: i });
        throw e;
      }
    }
    this.activePlan();
    const request = {
      inputs: wires,
      thresholds: [...this.choice.thresholds],
      probabilities: options.probabilities === true,
    };
    const results = await this.client.call((api) =>
      api.classify(transfers.length > 0 ? transfer(request, transfers) : request),
    );
    return results.map((r) => this.toResult(r));
  }

  private toResult(r: WireResult): ClassifyResult {
    const m = this.manifest;
    const exit = r.exit >= 0 ? m.exits[r.exit]! : undefined;
    return {
      label: m.labels[r.index] ?? String(r.index),
      index: r.index,
      confidence: r.confidence,
      exit: exit
        ? { index: r.exit, name: exit.name, macsFraction: exit.macsFraction }
        : { index: -1, name: 'backbone', macsFraction: backboneFraction(m) },
      timings: { totalMs: r.totalMs, stages: r.stages },
      ...(r.probabilities ? { probabilities: r.probabilities } : {}),
    };
  }

  /** A snapshot of the backend, exits, current thresholds and what is loaded or cached. */
  info(): ClassifierInfo {
    const m = this.manifest;
    const s = this.state;
    const plan = this.activePlan();
    return {
      backend: s.backend,
      threads: s.threads,
      crossOriginIsolated: s.crossOriginIsolated,
      ...(s.fallbackReason ? { fallbackReason: s.fallbackReason } : {}),
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
      cache: { enabled: s.cacheEnabled, manifestFromCache: s.manifestFromCache },
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
            },
          }
        : {}),
    };
  }

  /**
   * Re-chooses the exit thresholds for agreement target `target` in (0, 1] from the bundle's calibration
   * curve: the cheapest point whose expected agreement is >= target. Applies to later classify() calls.
   * With a device plan in use, from the plan's curve instead (same rule; the exits the plan leaves out stay off).
   * Throws INVALID_TARGET when `target` is out of range.
   */
  setTarget(target: number): TargetChoice {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    const choice = chooseThresholds(this.manifest, target, this.activePlan());
    this.choice = choice;
    return choice;
  }

  /**
   * Makes this device's plan and applies it: the worker loads every segment, times each stage (segment plus fused
   * head) at batch 1 on the backend in use, fetches the bundle's `validation.bin` (cached by sha256), and chooses
   * exits and thresholds again by those times for `options.target` (default: the current target). The plan is
   * cached per manifest hash, backend and thread count (unless `cache: false`), so a later load() with
   * `plan: 'cached'` (the default) applies it without measuring. Later classify() calls use its thresholds; an exit it
   * leaves out never fires and its output is not read; setTarget() then picks from the plan's curve.
   * @throws SelfxitError INVALID_TARGET; INVALID_BUNDLE for a bundle without a validation file (prepared by an older
   * selfxit: run `selfxit prepare` again); INTEGRITY_ERROR, FETCH_FAILED; DISPOSED.
   */
  async plan(options: DevicePlanOptions = {}): Promise<DevicePlan> {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    const target = options.target ?? this.choice.target;
    if (typeof target !== 'number') checkTarget(Number.NaN);
    checkTarget(target);
    const onProgress = options.onProgress;
    if (onProgress !== undefined && typeof onProgress !== 'function')
      throw new SelfxitError('INVALID_ARGUMENT', 'onProgress must be a function');
    const plan = await this.client.call((api) =>
      api.plan({ target }, onProgress ? proxy((p: ProgressInfo) => onProgress(p)) : undefined),
    );
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    this.applyPlan(plan);
    this.activePlan(); // a backend change since the measurement drops it again
    return plan;
  }

  /** Releases the sessions and ends the worker. Later calls reject with DISPOSED; calls in flight too. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    try {
      await Promise.race([this.client.call((api) => api.dispose()), new Promise((r) => setTimeout(r, 2000))]);
    } catch {
      // the worker is going away anyway
    }
    this.client.fail(new SelfxitError('DISPOSED', 'the classifier was disposed'));
  }
}

/**
 * Opens an early-exit bundle and returns a ready classifier (segment 0 loaded, deeper segments on first need).
 *
 * @param bundleUrl URL of the bundle folder or of its manifest.json, relative to the page.
 * @param options See {@link LoadOptions}: backend `'auto'`, threads `min(4, cores)` when isolated else 1, cache `true`.
 * @throws SelfxitError FETCH_FAILED (details.status), INVALID_BUNDLE, INTEGRITY_ERROR, BACKEND_UNAVAILABLE, WORKER_DIED, INVALID_ARGUMENT.
 *
 * @example
 * import { load } from 'selfxit';
 * const clf = await load('/models/fashion-resnet/', { onProgress: (p) => console.log(p.status, p.file) });
 * const r = await clf.classify(document.querySelector('img')!);
 * console.log(r.label, r.confidence, r.exit.name);
 */
export function load(bundleUrl: string | URL, options: LoadOptions = {}): Promise<Classifier> {
  return Classifier.create(bundleUrl, options);
}

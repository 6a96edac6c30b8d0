// The on-device learner, pure: the reservoir of served inputs, the live audit, the drift detector, when to fit (fit.ts:
// prepare's own SelfXit fit on the reservoir), what happens when the audit fails (thresholds tightened along the fit's
// curve, or exits off, and a re-fit scheduled) or the traffic drifts (exits off, the reservoir and the reference start
// again on the new traffic, re-fit from it); its state for persistence. The worker (runtime/learn-runtime.ts) runs it.
// Over 400 lines: one state machine (samples, exits in force, audit, drift verification, fits) whose transitions share
// its fields; the parts without state live beside it (fit.ts, audit.ts, drift.ts, reservoir.ts).
import type { CurvePoint } from '../bundle/manifest.js';
import type { BundleExit } from '../bundle/write-bundle.js';
import { cutLayout } from '../calibrate/features.js';
import { withExtraOutputs, type OnnxModel } from '../graph/index.js';
import { dequantizeInto } from '../graph/quant.js';
import { SelfxitError } from '../errors.js';
import { softmaxRow } from '../engine/cascade.js';
import { NEVER_EXIT } from '../policy/thresholds.js';
import type { PrepareProgress } from '../calibrate/progress.js';
import {
  backbonePoint,
  curvePointFor,
  exitCount,
  fitLearned,
  type FitRunner,
  type LearnedExits,
  type LearnModel,
} from './fit.js';
import type { BundleManifest } from '../bundle/manifest.js';
import type { CostTable } from '../policy/cost-table.js';
import { LiveAudit } from './audit.js';
import { DriftDetector, STATS_PER_CHANNEL } from './drift.js';
import { FeatureReservoir, reservoirCuts } from './reservoir.js';
import { resolveLearnOptions, type LearnOptions, type ResolvedLearnOptions } from './learn-options.js';
import type { LearnerStatus } from './learner-status.js';

export {
  analyseForLearning,
  assembleLearned,
  exitCount,
  fitLearned,
  noExitSummary,
  planCostTable,
  type FitJob,
  type FitRunner,
  type LearnedExits,
  type LearnModel,
} from './fit.js';

export type { LearnerStatus } from './learner-status.js';

/** The state a learner persists (runtime/learn-store.ts), as plain structured-cloneable data. */
export interface LearnerState {
  /** The learner's target when saved; absent in states saved before it existed (read as another target: the exits
   * then serve at the cheapest point of their curve that meets the learner's target, and a re-fit is wanted). */
  readonly target?: number;
  readonly fits: number;
  /** Absent in states saved before they existed (read as `fits`, 0, and the reservoir's count). */
  readonly fitsStarted?: number;
  readonly fitsDropped?: number;
  readonly samplesSeen?: number;
  readonly samplesRepeated?: number;
  /** Failed fits, those in a row, and the `samplesSeen` the next fit waits for (backoff); absent in states saved
   * before they existed (read as 0: no backoff). */
  readonly fitsFailed?: number;
  readonly fitFailuresInRow?: number;
  readonly fitRetryAt?: number;
  readonly tightenings: number;
  readonly fitted?: LearnedExits;
  readonly point?: CurvePoint;
  readonly exitsOn: boolean;
  readonly refitWanted: boolean;
  readonly audit: ReturnType<LiveAudit['state']>;
  readonly reservoir: ReturnType<FeatureReservoir['state']>;
  readonly drift?: ReturnType<DriftDetector['state']>;
  /** Audits left to verify a drift alarm (the raised audit share; no fit meanwhile), and confirmed drifts so far: a
   * reload in the middle of a verification goes on with it rather than trusting the suspected exits. */
  readonly verifying: number;
  readonly driftRestarts: number;
  /** Absent in states saved before it existed (read as false). */
  readonly relearning?: boolean;
}

/** Audits that verify a drift alarm, and the least share of inputs completed meanwhile. */
export const VERIFY_AUDITS = 60;
export const VERIFY_SHARE = 0.5;

/** How a fit ended: its exits, and whether they were adopted (put in force). */
export interface FitOutcome {
  readonly learned: LearnedExits;
  readonly adopted: boolean;
}

/**
 * Learns exits for one model from the inputs it serves. `observe()` stores served inputs; `wantsFit()` says when
 * enough new ones arrived; `fit()` runs prepare's fit on the reservoir (yielding to the event loop between heads);
 * `audited()` feeds the live audit, which tightens the thresholds (or switches exits off) when it fails.
 */
export class Learner {
  readonly options: ResolvedLearnOptions;
  readonly reservoir: FeatureReservoir;
  readonly audit: LiveAudit;
  /** The drift detector (undefined with `learn.drift: false`). */
  readonly drift: DriftDetector | undefined;
  private fitted: LearnedExits | undefined;
  /** Bumped on a drift alarm, a drift restart or dismissal, and a reset: a fit started before is not adopted (it fit
   * the old traffic, and while an alarm is verified its thresholds would undo the alarm's tightening). */
  private generation = 0;
  /** Audits left to verify a drift alarm (0: none pending); confirmed drifts so far. */
  private verifying = 0;
  private driftRestarts = 0;
  /**
   * After a dismissed alarm: the exits still hold on the new traffic, but the reservoir holds the old one, so savings
   * would come back only as slowly as new samples trickle in at learnShare. The reservoir starts again (the exits in
   * force stay) and samples are drawn at VERIFY_SHARE until a fit on the new traffic is adopted.
   */
  private relearning = false;
  /** The curve point in force (its thresholds), undefined while exits are off. */
  private point: CurvePoint | undefined;
  private fits = 0;
  /** Fits started (their number), and those that ran to their end without being adopted. */
  private started = 0;
  private dropped = 0;
  /** Bumped by reset(): a fit started before it is not counted after it. */
  private resets = 0;
  /** Fits that threw (the fits' worker out of memory, …), those in a row since the last that ran to its end, and the
   * samples seen ({@link samplesSeen}: distinct inputs, exact repeats not counted, so a still screen cannot bring a
   * retry on an unchanged reservoir) before the next may start: a failure backs off `refitAfter × 2^(failures-1)`
   * samples (at most 64×), so a failure that repeats (an allocation the device cannot make) never copies the
   * reservoir and restarts a fit at every call. Saved with the state (a reload goes on waiting). */
  private failed = 0;
  private failuresInRow = 0;
  private retryAt = 0;
  /** Samples seen before the reservoir last started again (a drift restart; `samplesSeen` counts on). */
  private seenBefore = 0;
  /** Exact repeats offered before the reservoir last started again (`samplesRepeated` counts on). */
  private repeatsBefore = 0;
  private tightenings = 0;
  private refitWanted = false;
  private running: Promise<FitOutcome> | undefined;
  private lastFitSeconds: number | undefined;
  /** Bumped whenever the exits or thresholds in force change. */
  version = 0;
  /** Measured costs the fits select exits by (fit.ts planCostTable: a device plan's stage times), else MACs. */
  costTable: CostTable | undefined;

  /** The exits of the bundle learning started from, the thresholds it serves them at (undefined: exits off), and
   * whether a re-fit is wanted at once (the bundle was calibrated for another target). Undefined: a plain model. */
  private readonly origin:
    { readonly learned: LearnedExits; readonly point: CurvePoint | undefined; readonly refit: boolean } | undefined;

  /**
   * `bundle`: learning starts from this bundle's exits (served at its thresholds, audited, replaced by the first fit
   * on enough live samples; `resetLearning()` goes back to them). A bundle calibrated for another target than the
   * learner's, or in paper mode (whose fixed threshold certifies nothing), serves at the cheapest point of its curve
   * that meets the learner's target (exits off if none), and a re-fit is wanted at once.
   */
  constructor(
    readonly model: LearnModel,
    options: LearnOptions = {},
    bundle?: { readonly manifest: BundleManifest; readonly hash: string },
  ) {
    this.options = resolveLearnOptions(options);
    const o = this.options;
    this.reservoir = new FeatureReservoir(reservoirCuts(model.requests), model.io.classes, {
      maxSamples: o.maxSamples,
      maxBytes: o.maxBytes,
      seed: o.seed,
    });
    // a cap that holds fewer samples than the first fit waits for would collect for ever and never fit
    if (!model.cannotLearn && this.reservoir.capacity < o.minSamples) {
      const per = this.reservoir.maxBytes / this.reservoir.capacity;
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `learn.maxBytes ${o.maxBytes} holds ${this.reservoir.capacity} samples of this model (${per} bytes each), fewer than learn.minSamples ${o.minSamples}: raise maxBytes to at least ${per * o.minSamples} or lower minSamples`,
        { maxBytes: o.maxBytes, capacity: this.reservoir.capacity, minSamples: o.minSamples, bytesPerSample: per },
      );
    }
    this.audit = new LiveAudit({ share: o.auditShare, minAudits: o.minAudits, recent: o.auditWindow, seed: o.seed });
    this.drift = o.drift ? new DriftDetector(STATS_PER_CHANNEL * model.io.input.channels, { seed: o.seed }) : undefined;
    if (bundle && bundle.manifest.exits.length > 0) {
      const c = bundle.manifest.calibration;
      const learned = {
        exits: [],
        summary: c,
        bundle: { manifestHash: bundle.hash, exits: bundle.manifest.exits.length },
      };
      // only a SelfXit calibration certifies its thresholds at its target; paper mode records the target but ships
      // a fixed threshold (0.9 by default), so its exits serve only at a point of its curve the bound certifies
      const same = c.target === o.target && c.mode !== 'paper';
      this.origin = {
        learned,
        point: same
          ? {
              knob: 0,
              thresholds: bundle.manifest.exits.map((e) => e.threshold),
              agreement: c.validationAgreement,
              macsFraction: c.expectedMacsFraction,
              exitShares: [],
            }
          : curvePointFor(learned, o.target),
        refit: !same,
      };
      this.fitted = this.origin.learned;
      this.point = this.origin.point;
      this.refitWanted = this.origin.refit;
    }
  }

  /**
   * One served input's drift statistics (drift.ts inputStats), before it is served. On an alarm the inputs changed,
   * which may or may not hurt the exits (a burst of one class changes them too): with exits on, the thresholds are
   * tightened at once (when the fit's curve has a stricter point) and the next {@link VERIFY_AUDITS} audits are drawn at {@link VERIFY_SHARE} at least, their
   * window alone deciding. An audit failure among them confirms the drift ({@link restartOnDrift}); none dismisses it,
   * and then the samples start again from the new traffic while the exits serve on ({@link relearnOnDrift}).
   * With a fit whose exits are already off, the alarm itself restarts learning.
   * Either way the drift reference starts again from the new inputs. Returns whether this input raised the alarm.
   */
  observeInput(stats: ArrayLike<number>): boolean {
    if (!this.drift || this.model.cannotLearn || !this.drift.observe(stats)) return false;
    this.drift.restart();
    if (!this.exitsOn) {
      // exits already off (the audit switched them off): nothing left to verify, learning starts again on the new
      // traffic; before any fit the samples are kept
      if (this.fitted) this.restartOnDrift();
      return true;
    }
    // tightened when the curve has a stricter point; else the exits stay as they are while the audits verify
    if (this.stricterPoint()) this.tighten();
    else this.audit.resetWindow();
    this.verifying = VERIFY_AUDITS;
    // a fit running on the traffic before the alarm is not adopted: it would put its own (looser) point in force and
    // reset the verification's window; whichever way the verification ends, a re-fit on the new traffic follows
    this.generation++;
    this.version++;
    return true;
  }

  /**
   * A confirmed drift: exits off (the full model serves, so every input is a sample again), the reservoir starts again
   * from the new traffic (a fit running on the old one is not adopted); the next fit (after `minSamples`) certifies
   * exits on it.
   */
  private restartOnDrift(): void {
    this.verifying = 0;
    this.relearning = false;
    this.clearReservoir();
    this.point = undefined;
    this.refitWanted = true;
    this.generation++;
    this.driftRestarts++;
    this.audit.resetWindow();
    this.audit.resetOverpromise();
    this.version++;
  }

  /** A dismissed alarm: the exits in force stay; the samples start again from the new traffic (see `relearning`). */
  private relearnOnDrift(): void {
    this.clearReservoir();
    this.refitWanted = true;
    this.generation++;
    this.relearning = true;
    this.version++;
  }

  /** Empties the reservoir (a drift): its samples are counted on in `samplesSeen`. */
  private clearReservoir(): void {
    this.seenBefore += this.reservoir.seen;
    this.repeatsBefore += this.reservoir.repeats;
    this.reservoir.clear();
  }

  /** Inputs offered to the reservoir since learning began or was reset, exact repeats included. */
  get offered(): number {
    return this.seenBefore + this.repeatsBefore + this.reservoir.offered;
  }

  /** Samples seen since learning began or was reset (see {@link LearnerStatus.samplesSeen}). */
  get samplesSeen(): number {
    return this.seenBefore + this.reservoir.seen;
  }

  /** Fits started so far: the number of the fit running, or of the last one (the next is numbered one more). */
  get fitsStarted(): number {
    return this.started;
  }

  /** The exits of the last fit (also while switched off), if any. */
  get learned(): LearnedExits | undefined {
    return this.fitted;
  }

  /** Whether served inputs should leave early. */
  get exitsOn(): boolean {
    return this.point !== undefined && exitCount(this.fitted) > 0;
  }

  /**
   * Whether this input served through the exits is completed by the full model after the reply (audited, and a new
   * sample): a draw at `learnShare` until as many distinct inputs as the reservoir holds were offered (exact repeats
   * do not count, so a still screen cannot use up the learning phase), damped by the recent repeat rate
   * (`learnShare × (1 − rate)`, never below `auditShare`: a stream of one input is completed at about `auditShare`,
   * varied traffic after it at `learnShare` again within a few dozen samples); at `auditShare` after.
   */
  drawCompletion(): boolean {
    const o = this.options;
    const r = this.reservoir;
    const share = r.seen < r.capacity ? Math.max(o.auditShare, o.learnShare * (1 - r.repeatRate)) : o.auditShare;
    return this.audit.draw(this.verifying > 0 || this.relearning ? Math.max(VERIFY_SHARE, share) : share);
  }

  /** Thresholds in force, one per learned exit (NEVER_EXIT each while exits are off). */
  get thresholds(): number[] {
    const n = exitCount(this.fitted);
    return this.point ? [...this.point.thresholds] : new Array<number>(n).fill(NEVER_EXIT);
  }

  /** The model the worker runs to serve and learn at once: the full model with the candidate cuts as extra outputs. */
  featureModel(): OnnxModel {
    return withExtraOutputs(
      this.model.model,
      this.model.requests.map((r) => r.cut.tensor),
    );
  }

  /** Scratch of the dequantized maps of int8 cuts, reused across runs of one size. */
  private deq: Float32Array[] = [];

  /** The candidate cuts' maps of a feature-model run as float32: an int8 model's cut (QOperator, or the quantized side
   * of a QDQ pair) dequantized as prepare's features are, into reused scratch. */
  private floatMaps(outputs: Readonly<Record<string, { readonly data: unknown }>>): Float32Array[] {
    return this.model.requests.map((r, i) => {
      const m = outputs[r.cut.tensor]?.data;
      if (m instanceof Float32Array) return m;
      const d = r.cut.dequant;
      if (d && ((d.dtype === 'uint8' && m instanceof Uint8Array) || (d.dtype === 'int8' && m instanceof Int8Array))) {
        let f = this.deq[i];
        if (f?.length !== m.length) f = this.deq[i] = new Float32Array(m.length);
        dequantizeInto(m, d, f);
        return f;
      }
      throw new SelfxitError(
        'UNSUPPORTED_MODEL',
        `cut "${r.cut.tensor}" is neither float32 nor a dequantizable int8 map`,
      );
    });
  }

  /**
   * Reads one run of {@link featureModel} over `rows` inputs (outputs by name): stores the rows in the reservoir
   * when `store` (`keys`: each input's key, input-key.ts inputKeys; an exact repeat of a stored input is not stored
   * again), and returns the full model's probabilities `[rows, classes]` and argmax per row.
   */
  fromRun(
    outputs: Readonly<Record<string, { readonly data: unknown }>>,
    rows: number,
    store: boolean,
    keys?: ArrayLike<number>,
  ): { probs: Float32Array; index: Int32Array } {
    const { io } = this.model;
    const k = io.classes;
    const out = outputs[io.output]?.data;
    if (!(out instanceof Float32Array) || out.length !== rows * k)
      throw new SelfxitError('UNSUPPORTED_MODEL', `model output "${io.output}" is not float32 [N, ${k}]`);
    if (store && !this.model.cannotLearn)
      this.reservoir.addFromMaps(this.floatMaps(outputs), out, rows, io.outputKind, keys);
    const probs = new Float32Array(rows * k);
    const index = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      const p = io.outputKind === 'logits' ? softmaxRow(out, r * k, k) : out.subarray(r * k, (r + 1) * k);
      probs.set(p, r * k);
      let best = 0;
      for (let j = 1; j < k; j++) if (p[j]! > p[best]!) best = j;
      index[r] = best;
    }
    return { probs, index };
  }

  /**
   * Whether a fit should start now: none running, enough samples, and the first fit, enough fresh ones, or the audit
   * asked. While a bundle's exits serve, the first fit waits for as many samples as the bundle was calibrated on (at
   * most the reservoir's capacity), unless the audit or a drift asked for it.
   */
  wantsFit(): boolean {
    // no fit while a drift alarm is being verified: the reservoir may be about to start again
    if (this.running || this.model.cannotLearn || this.verifying > 0) return false;
    if (this.samplesSeen < this.retryAt) return false; // backing off after a failed fit
    const r = this.reservoir;
    if (r.size < this.options.minSamples) return false;
    if (this.fitted?.bundle && !this.refitWanted)
      return r.size >= Math.min(r.capacity, Math.max(this.options.minSamples, this.fitted.summary.samples));
    return this.fits === 0 || this.refitWanted || r.fresh >= this.options.refitAfter;
  }

  /**
   * Runs a fit (one at a time: a second call joins the one running) on a snapshot of the reservoir: `runner` runs the
   * {@link FitJob} (default {@link fitLearned} here; the worker hands it to a second worker so serving never waits).
   * A fit is numbered as it starts ({@link fitsStarted}); it is not adopted when a drift alarm, a drift or a reset came
   * while it ran (`adopted` false; counted in `fitsDropped`).
   */
  fit(onProgress?: (p: PrepareProgress) => void, runner: FitRunner = fitLearned): Promise<FitOutcome> {
    this.running ??= this.runFit(onProgress, runner).finally(() => (this.running = undefined));
    return this.running;
  }

  private async runFit(onProgress: ((p: PrepareProgress) => void) | undefined, runner: FitRunner): Promise<FitOutcome> {
    const { io, analysis, requests } = this.model;
    this.started++;
    // rows added from now on are fresh for the next fit; a fit that fails gives its own back (and the re-fit asked for)
    const fresh = this.reservoir.fresh;
    const wanted = this.refitWanted;
    this.reservoir.markFitted();
    this.refitWanted = false;
    const { generation, resets } = this;
    const t0 = performance.now();
    let learned: LearnedExits;
    try {
      // copied in slices: a full reservoir is tens of MB, and serving goes on between the slices
      const features = await this.reservoir.snapshot(() => new Promise((r) => setTimeout(r, 0)));
      const options = { ...this.options, target: this.fitTarget() };
      const costTable = this.costTable;
      learned = await runner(
        { analysis, io, requests, options, features, ...(costTable ? { costTable } : {}) },
        onProgress,
      );
    } catch (e) {
      // (a fit cancelled by a reset is no failure: the reset has started everything again)
      if (resets === this.resets) this.fitFailed(generation === this.generation ? { fresh, wanted } : undefined);
      throw e;
    }
    this.failuresInRow = this.retryAt = 0;
    if (resets === this.resets) this.lastFitSeconds = (performance.now() - t0) / 1000;
    // fit on traffic that has since drifted away (or before an alarm or a reset): not adopted (a re-fit on the new
    // traffic is wanted, or follows the alarm's verification)
    if (generation !== this.generation) {
      if (resets === this.resets) this.dropped++;
      return { learned, adopted: false };
    }
    this.adopt(learned);
    this.fits++;
    return { learned, adopted: true };
  }

  /** A fit threw: backs off (see {@link failed}); `undo` (the reservoir not started again meanwhile) gives the fit's
   * fresh rows and the re-fit it took back. */
  private fitFailed(undo: { readonly fresh: number; readonly wanted: boolean } | undefined): void {
    this.failed++;
    this.failuresInRow++;
    this.retryAt = this.samplesSeen + this.options.refitAfter * 2 ** Math.min(this.failuresInRow - 1, 6);
    if (!undo) return;
    this.reservoir.fresh += undo.fresh;
    this.refitWanted ||= undo.wanted;
  }

  /**
   * The target the next fit aims at: the learner's, made stricter by the audit's overpromise ratio (disagreements seen
   * / promised on live inputs; at most 4×): thresholds fit on few samples promise more than they give, and the audit
   * measures by how much on unseen traffic. 1 - (1 - target) / max(1, ratio).
   */
  fitTarget(): number {
    const ratio = Math.min(4, Math.max(1, this.audit.estimate().overpromise));
    return 1 - (1 - this.options.target) / ratio;
  }

  /** Puts fitted exits in force at their fitted thresholds. */
  private adopt(learned: LearnedExits): void {
    this.fitted = learned;
    this.relearning = false;
    this.point =
      learned.exits.length > 0
        ? {
            knob: 0,
            thresholds: learned.exits.map((e) => e.threshold),
            agreement: learned.summary.validationAgreement,
            macsFraction: learned.summary.expectedMacsFraction,
            exitShares: [],
          }
        : undefined;
    this.audit.resetWindow();
    this.version++;
  }

  /**
   * {@link audited} for an input served when the learner's {@link version} was `servedAt`: one served by exits or
   * thresholds no longer in force (a tightening, a fit, a drift alarm since) is not judged against those in force
   * (it is a learning sample only: the runtime stored its features); returns false for it.
   */
  auditedAt(servedAt: number, served: number, full: number): boolean {
    return servedAt === this.version && this.audited(served, full);
  }

  /**
   * One audited input: the label served through the exits and the full model's. When the audit shows the agreement
   * below the target, tightens the thresholds at once and asks for a re-fit; returns whether it did.
   */
  audited(served: number, full: number): boolean {
    this.audit.record(served === full, this.exitsOn && this.point ? 1 - this.point.agreement : undefined);
    const verifying = this.verifying > 0;
    if (verifying) this.verifying--;
    if (!this.exitsOn || !this.audit.failing(this.options.target)) {
      // the last verifying audit passed: the alarm is dismissed, and learning follows the new traffic
      if (verifying && this.verifying === 0 && this.exitsOn) this.relearnOnDrift();
      return false;
    }
    if (verifying) this.restartOnDrift();
    else this.tighten();
    return true;
  }

  /**
   * The cheapest point of the fit's curve with at most half the expected disagreement of the one in force; when
   * there is none (or it is the backbone-only point), exits off. A re-fit is asked for either way.
   */
  tighten(): void {
    if (!this.point || !this.fitted) return;
    this.point = this.stricterPoint();
    this.tightenings++;
    this.refitWanted = true;
    this.audit.resetWindow();
    this.version++;
  }

  /** The curve point {@link tighten} moves to (undefined: exits off). */
  private stricterPoint(): CurvePoint | undefined {
    const current = this.point;
    if (!current || !this.fitted) return undefined;
    const allowed = (1 - current.agreement) / 2;
    const n = exitCount(this.fitted);
    return this.fitted.summary.curve
      .filter((p) => p.thresholds.length === n && !backbonePoint(p) && 1 - p.agreement <= allowed + 1e-12)
      .sort((a, b) => a.macsFraction - b.macsFraction)[0];
  }

  status(): LearnerStatus {
    const r = this.reservoir;
    const p = this.point;
    return {
      samplesSeen: this.samplesSeen,
      samplesStored: r.size,
      samplesRepeated: this.repeatsBefore + r.repeats,
      reservoirBytes: r.bytes,
      reservoirMaxBytes: r.maxBytes,
      reservoirCapacity: r.capacity,
      fits: this.fits,
      fitsDropped: this.dropped,
      fitsFailed: this.failed,
      ...(this.samplesSeen < this.retryAt ? { fitRetryAfter: this.retryAt - this.samplesSeen } : {}),
      fitting: this.running !== undefined,
      exitsOn: this.exitsOn,
      exits: exitCount(this.fitted),
      ...(this.fitted?.bundle ? { fromBundle: true } : {}),
      thresholds: this.thresholds,
      expectedAgreement: p ? p.agreement : 1,
      macsFraction: p ? p.macsFraction : 1,
      audit: this.audit.estimate(),
      tightenings: this.tightenings,
      ...(this.drift
        ? {
            drift: {
              ...this.drift.status(),
              verifying: this.verifying,
              restarts: this.driftRestarts,
              relearning: this.relearning,
            },
          }
        : {}),
      target: this.options.target,
      fitTarget: this.fitTarget(),
      fitCosts: this.costTable ? 'ms' : 'macs',
      ...(this.model.cannotLearn ? { cannotLearn: this.model.cannotLearn } : {}),
      ...(this.model.headSizing ? { headSizing: this.model.headSizing } : {}),
      ...(this.lastFitSeconds !== undefined ? { lastFitSeconds: this.lastFitSeconds } : {}),
    };
  }

  state(): LearnerState {
    return this.stateWith(this.reservoir.state());
  }

  /** {@link state} with the reservoir copied in slices (`pause()` awaited between them; a save of a full reservoir
   * never holds the thread for the whole copy); the rest is read at the copy's end. */
  async sliceState(pause: () => Promise<void>): Promise<LearnerState> {
    return this.stateWith(await this.reservoir.sliceState(pause));
  }

  private stateWith(reservoir: LearnerState['reservoir']): LearnerState {
    return {
      target: this.options.target,
      fits: this.fits,
      fitsStarted: this.started,
      fitsDropped: this.dropped,
      samplesSeen: this.seenBefore + reservoir.seen,
      samplesRepeated: this.repeatsBefore + reservoir.repeats,
      fitsFailed: this.failed,
      fitFailuresInRow: this.failuresInRow,
      fitRetryAt: this.retryAt,
      tightenings: this.tightenings,
      ...(this.fitted ? { fitted: this.fitted } : {}),
      ...(this.point ? { point: this.point } : {}),
      exitsOn: this.exitsOn,
      refitWanted: this.refitWanted,
      audit: this.audit.state(),
      reservoir,
      ...(this.drift ? { drift: this.drift.state() } : {}),
      verifying: this.verifying,
      driftRestarts: this.driftRestarts,
      relearning: this.relearning,
    };
  }

  /**
   * Whether a learned exit's cut is a candidate, or another cut of a candidate's place (same MACs and shape: e.g. the
   * float side of a QDQ pair, where learning cut before it moved to the quantized side; such exits still serve, and the
   * next fit moves them).
   */
  private onCandidatePlace(tensor: unknown): boolean {
    const { requests, analysis } = this.model;
    if (requests.some((q) => q.cut.tensor === tensor)) return true;
    const c = analysis.cuts.find((x) => x.tensor === tensor);
    return (
      c !== undefined &&
      requests.some(
        (q) =>
          q.cut.macs === c.macs &&
          q.cut.shape.length === c.shape.length &&
          q.cut.shape.every((d, i) => d === c.shape[i]),
      )
    );
  }

  /** Whether a learned exit's head reads its cut in the layout the cut has now (a head saved as NCHW on an NHWC cut
   * would pool the wrong axes). */
  private layoutHolds(e: BundleExit): boolean {
    const c = this.model.analysis.cuts.find((x) => x.tensor === e.cut);
    return c !== undefined && (e.head?.layout ?? 'NCHW') === cutLayout(c);
  }

  /** Audits left to verify a drift alarm (0: none pending). */
  get verifyingLeft(): number {
    return this.verifying;
  }

  /**
   * Restores a persisted state; false (and the learner left fresh) when it does not fit this learner. A state saved
   * at another target (or without one) serves its exits at the cheapest point of their curve that meets the learner's
   * {@link fitTarget} (exits off if none; an alarm under verification tightens it again) and wants a re-fit.
   */
  restore(s: LearnerState): boolean {
    const fitted = s.fitted;
    // a bundle's exits only with that very bundle (same manifest hash); learned exits only on this model's cuts
    const exitsOk =
      fitted === undefined ||
      (Array.isArray(fitted.exits) &&
        (fitted.bundle === undefined
          ? fitted.exits.every((e) => this.onCandidatePlace(e.cut) && this.layoutHolds(e))
          : fitted.exits.length === 0 &&
            fitted.bundle.manifestHash === this.origin?.learned.bundle?.manifestHash &&
            fitted.bundle.exits === this.origin.learned.bundle.exits) &&
        Array.isArray(fitted.summary?.curve));
    const pointOk =
      s.point === undefined ||
      (fitted !== undefined &&
        Array.isArray(s.point.thresholds) &&
        s.point.thresholds.length === exitCount(fitted) &&
        s.point.thresholds.every((t) => typeof t === 'number'));
    const driftOk =
      Number.isInteger(s.verifying) &&
      s.verifying >= 0 &&
      s.verifying <= VERIFY_AUDITS &&
      (s.verifying === 0 || s.point !== undefined) &&
      Number.isInteger(s.driftRestarts) &&
      s.driftRestarts >= 0;
    if (!exitsOk || !pointOk || !driftOk || !Number.isInteger(s.fits) || !this.audit.restore(s.audit))
      return this.reset();
    if (!this.reservoir.restore(s.reservoir)) return this.reset();
    if (this.drift && s.drift !== undefined && !this.drift.restore(s.drift)) return this.reset();
    this.fitted = fitted;
    this.point = s.point;
    this.fits = s.fits;
    this.tightenings = Number.isInteger(s.tightenings) ? s.tightenings : 0;
    this.refitWanted = s.refitWanted === true;
    this.verifying = s.verifying;
    this.driftRestarts = s.driftRestarts;
    this.relearning = s.relearning === true;
    const count = (v: number | undefined, least: number): number => (Number.isInteger(v) && v! >= least ? v! : least);
    this.started = count(s.fitsStarted, s.fits);
    this.dropped = count(s.fitsDropped, 0);
    this.seenBefore = count(s.samplesSeen, this.reservoir.seen) - this.reservoir.seen;
    this.repeatsBefore = count(s.samplesRepeated, this.reservoir.repeats) - this.reservoir.repeats;
    this.failed = count(s.fitsFailed, 0);
    this.failuresInRow = count(s.fitFailuresInRow, 0);
    this.retryAt = count(s.fitRetryAt, 0);
    if (s.target !== this.options.target && this.fitted) this.retarget();
    this.version++;
    return true;
  }

  /** The exits in force moved to the learner's target (a restored state saved at another): see {@link restore}. */
  private retarget(): void {
    this.refitWanted = true;
    if (!this.point || !this.fitted) return; // exits off stay off until the re-fit
    this.point = curvePointFor(this.fitted, this.fitTarget());
    this.audit.resetWindow();
    if (this.verifying === 0) return;
    // a drift alarm under verification: its tightening applied again, or (exits off) learning restarts, as
    // observeInput does with exits off
    if (!this.point) this.restartOnDrift();
    else this.point = this.stricterPoint() ?? this.point;
  }

  /** Forgets everything learned: samples, exits (back to the bundle's, if learning started from one), audit. Returns
   * false (for restore()). */
  reset(): false {
    this.reservoir.clear();
    this.seenBefore = this.repeatsBefore = 0;
    this.audit.restore({ audited: 0, agreed: 0, totalAudited: 0, totalAgreed: 0 });
    this.drift?.reset();
    this.verifying = this.driftRestarts = 0;
    this.relearning = false;
    this.fitted = this.origin?.learned;
    this.point = this.origin?.point;
    this.fits = this.tightenings = this.started = this.dropped = 0;
    this.failed = this.failuresInRow = this.retryAt = 0;
    this.lastFitSeconds = undefined;
    this.refitWanted = this.origin?.refit ?? false;
    // a fit running now is not adopted, nor counted
    this.generation++;
    this.resets++;
    this.version++;
    return false;
  }
}

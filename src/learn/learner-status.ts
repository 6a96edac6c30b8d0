// What a learner reports of itself (Learner.status(), the page's learning()): plain data only, in a module of its own so
// that the public type declarations (protocol.ts → types.ts) do not reach the learner's graph and onnxruntime imports.
import type { AuditEstimate } from './audit.js';
import type { DriftStatus } from './drift.js';

/** What the learner reports (`clf.learning()` adds the runtime's part). */
export interface LearnerStatus {
  /** Inputs offered to the reservoir (every input served by the full model, every audited one) since learning began
   * or was reset: a drift restart empties the reservoir (`samplesStored`), not this count. */
  readonly samplesSeen: number;
  readonly samplesStored: number;
  /** Inputs offered that repeated a stored sample exactly (the same preprocessed tensor): not stored again, nor
   * counted in `samplesSeen` (a copy in another fold would make the fit's out-of-fold agreement read high). */
  readonly samplesRepeated: number;
  /** Bytes the reservoir holds now (allocated as samples arrive) and may grow to; its capacity in samples. */
  readonly reservoirBytes: number;
  readonly reservoirMaxBytes: number;
  readonly reservoirCapacity: number;
  /** Fits whose exits were adopted, fits that ran to their end but were not (the traffic drifted or an alarm rose
   * meanwhile: their samples were of the old traffic), and whether one is running. */
  readonly fits: number;
  readonly fitsDropped: number;
  /** Fits that failed (threw: e.g. the fits' worker ran out of memory; the runtime's `lastError` says why). After a
   * failure the next fit waits for `fitRetryAfter` more samples seen (distinct inputs offered to the reservoir, exact
   * repeats not counted; `refitAfter`, doubling with each failure in a row, at most 64×; saved with the state); the
   * samples and a re-fit asked for are kept. */
  readonly fitsFailed: number;
  readonly fitRetryAfter?: number;
  readonly fitting: boolean;
  /** Exits in use (a fit chose at least one, and the audit has not switched them off). */
  readonly exitsOn: boolean;
  readonly exits: number;
  /** Thresholds in force (NEVER_EXIT for an exit switched off). */
  readonly thresholds: readonly number[];
  /** Expected agreement and MACs fraction of the thresholds in force (from the fit's curve; 1 and 1 without exits). */
  readonly expectedAgreement: number;
  readonly macsFraction: number;
  readonly audit: AuditEstimate;
  /** Times the audit tightened the thresholds or switched the exits off. */
  readonly tightenings: number;
  /**
   * The unsupervised drift signal (input statistics against a reference), the audits left to verify an alarm, and
   * the confirmed drifts (learning restarted on the new traffic); undefined with `learn.drift: false`.
   */
  readonly drift?: DriftStatus & {
    readonly verifying: number;
    readonly restarts: number;
    /** True after a dismissed alarm until a fit on the new traffic is adopted (samples drawn at VERIFY_SHARE). */
    readonly relearning: boolean;
  };
  readonly target: number;
  /** The target the next fit aims at (stricter than `target` while the audit shows the fits overpromise). */
  readonly fitTarget: number;
  readonly cannotLearn?: string;
  /** How the heads are sized for a model of many classes (as prepare sizes them: pool-mlp heads within 1.25 % of the
   * backbone's parameters each), when they are. */
  readonly headSizing?: string;
  /** Seconds of the last fit. */
  readonly lastFitSeconds?: number;
  /** What the fits' exit selection minimises: a device plan's measured stage times ('ms', {@link Learner.costTable})
   * or MACs. */
  readonly fitCosts: 'ms' | 'macs';
  /** True while the exits in force are those of the bundle learning started from (no fit replaced them yet). */
  readonly fromBundle?: boolean;
}

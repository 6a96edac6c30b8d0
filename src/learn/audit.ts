// The live audit: a random share of the served inputs (early exits or not) is completed by the full model after the
// reply and the served answer compared with the full model's, so the running agreement is the cascade's. Keeps the
// agreement since the exits last changed and over the last `recent` audits (recency: a switch of the traffic is not
// drowned by earlier audits), with one-sided confidence bounds (policy/bounds.ts); says when either is below target.
import { agreementLowerBound, type MarginOptions } from '../policy/bounds.js';
import { createRng, type Rng } from '../calibrate/rng.js';

/** The audit's counts, as plain data (persistence, `learning()`). */
export interface AuditState {
  /** Audited inputs since the exits last changed (a fit, a tightening), and how many of them agreed. */
  readonly audited: number;
  readonly agreed: number;
  /** Over the whole life of the learner. */
  readonly totalAudited: number;
  readonly totalAgreed: number;
  /** The last audits since the exits last changed (at most `recent`), oldest first: 1 agreed, 0 not. */
  readonly recent?: Uint8Array;
  /** Disagreements the fits promised on the audited inputs, and those seen (both decayed: {@link OVERPROMISE_MEMORY}). */
  readonly promised?: number;
  readonly observed?: number;
}

/** Audits after which an old audit counts half in the overpromise ratio (the fits get better as samples grow). */
export const OVERPROMISE_MEMORY = 1000;
/** Pseudo-count of promised (and seen) disagreements: the ratio stays near 1 until the audits say otherwise. */
const OVERPROMISE_PRIOR = 2;

/** What `learning()` reports of the audit. */
export interface AuditEstimate extends AuditState {
  /** agreed / audited (1 before any audit). */
  readonly agreement: number;
  /** One-sided lower confidence bound of the agreement (1 before any audit). */
  readonly lowerBound: number;
  /** One-sided upper confidence bound of the agreement (exact, Clopper-Pearson, so that a few audits raise no false
   * alarm): below the target, the evidence says the target is missed. */
  readonly upperBound: number;
  /** The last audits (at most `recent`): how many, how many agreed, the upper bound over them. */
  readonly recentAudited: number;
  readonly recentAgreed: number;
  readonly recentUpperBound: number;
  /**
   * Disagreements seen / disagreements the exits in force promised, over recent audits (with a prior of 2 against 2):
   * above 1, the fits overpromise (thresholds fit on few samples do), and the next fit aims higher.
   */
  readonly overpromise: number;
}

export interface AuditOptions extends MarginOptions {
  /** Share of early-exited inputs completed by the full model, in [0, 1]. */
  readonly share: number;
  /** Audits before the audit may declare a failure. Default 20. */
  readonly minAudits?: number;
  /** Most recent audits of the windowed test. Default 300. */
  readonly recent?: number;
  /** One-sided confidence of the windowed test (tested after every audit, so stricter). Default 0.99. */
  readonly windowConfidence?: number;
  readonly seed?: number;
}

/**
 * Running agreement of the served cascade with the full model on audited inputs. The trigger is the upper bound:
 * a lower bound sits below a 0.99 target until about 300 audits agree in a row, so it cannot start a tightening;
 * the upper bound falls below the target only when the disagreements seen are too many for it. Two tests: all audits
 * since the exits last changed (confidence `confidence`, default 0.95), and the last `recent` of them (confidence
 * `windowConfidence`, default 0.99 since it slides), so that a recent fall is seen even after many good audits.
 */
export class LiveAudit {
  private rng: Rng;
  private s: { audited: number; agreed: number; totalAudited: number; totalAgreed: number } = {
    audited: 0,
    agreed: 0,
    totalAudited: 0,
    totalAgreed: 0,
  };

  /** The last audits' outcomes (a ring), since the exits last changed. */
  private readonly ring: Uint8Array;
  private ringAt = 0;
  private ringSize = 0;
  private ringAgreed = 0;
  private promised = 0;
  private observed = 0;

  constructor(readonly options: AuditOptions) {
    this.rng = createRng((options.seed ?? 0) ^ 0x5a17);
    this.ring = new Uint8Array(Math.max(1, options.recent ?? 300));
  }

  /** Whether this served input is audited: a draw with probability `share` (default: the audit's own share). */
  draw(share = this.options.share): boolean {
    return share > 0 && this.rng.next() < share;
  }

  /**
   * One audited input: whether the served label was the full model's, and the disagreement rate the exits in force
   * promised (1 - their expected agreement), for the overpromise ratio.
   */
  record(agree: boolean, promised?: number): void {
    if (promised !== undefined && promised >= 0 && promised <= 1) {
      const keep = Math.pow(0.5, 1 / OVERPROMISE_MEMORY);
      this.promised = this.promised * keep + promised;
      this.observed = this.observed * keep + (agree ? 0 : 1);
    }
    const w = this.ring.length;
    if (this.ringSize === w) this.ringAgreed -= this.ring[this.ringAt]!;
    this.ring[this.ringAt] = agree ? 1 : 0;
    this.ringAgreed += agree ? 1 : 0;
    this.ringAt = (this.ringAt + 1) % w;
    this.ringSize = Math.min(w, this.ringSize + 1);
    this.s.audited++;
    this.s.totalAudited++;
    if (agree) {
      this.s.agreed++;
      this.s.totalAgreed++;
    }
  }

  estimate(): AuditEstimate {
    const { audited, agreed } = this.s;
    // (no audit: nothing bounds the agreement from above; the disagreement's lower bound is 1 at n = 0, not 0)
    const upper = (agree: number, n: number, confidence?: number): number =>
      n === 0
        ? 1
        : 1 -
          agreementLowerBound(n - agree, n, {
            ...this.options,
            ...(confidence !== undefined ? { confidence } : {}),
            bound: 'clopper-pearson',
          });
    return {
      ...this.s,
      agreement: audited > 0 ? agreed / audited : 1,
      lowerBound: agreementLowerBound(agreed, audited, this.options),
      upperBound: upper(agreed, audited),
      recentAudited: this.ringSize,
      recentAgreed: this.ringAgreed,
      recentUpperBound: upper(this.ringAgreed, this.ringSize, this.options.windowConfidence ?? 0.99),
      overpromise: (this.observed + OVERPROMISE_PRIOR) / (this.promised + OVERPROMISE_PRIOR),
    };
  }

  /**
   * True when enough audits show the agreement below `target`: the upper confidence bound of all audits since the
   * exits last changed, or of the last `recent` of them, is below it.
   */
  failing(target: number): boolean {
    const e = this.estimate();
    const min = this.options.minAudits ?? 20;
    return (e.audited >= min && e.upperBound < target) || (e.recentAudited >= min && e.recentUpperBound < target);
  }

  /** The exits changed: start a new window (the lifetime totals stay). */
  resetWindow(): void {
    this.s.audited = this.s.agreed = 0;
    this.ringAt = this.ringSize = this.ringAgreed = 0;
  }

  /** Forgets the overpromise evidence (after a drift: those disagreements were the traffic's, not the fits'). */
  resetOverpromise(): void {
    this.promised = this.observed = 0;
  }

  /** The last audits, oldest first. */
  private recent(): Uint8Array {
    const w = this.ring.length;
    return Uint8Array.from({ length: this.ringSize }, (_, i) => this.ring[(this.ringAt - this.ringSize + i + w) % w]!);
  }

  state(): AuditState {
    return { ...this.s, recent: this.recent(), promised: this.promised, observed: this.observed };
  }

  restore(s: AuditState): boolean {
    const vals = [s.audited, s.agreed, s.totalAudited, s.totalAgreed];
    if (!vals.every((v) => Number.isInteger(v) && v >= 0) || s.agreed > s.audited || s.totalAgreed > s.totalAudited)
      return false;
    const recent = s.recent ?? new Uint8Array(0);
    if (!(recent instanceof Uint8Array) || recent.length > s.audited || recent.some((v) => v > 1)) return false;
    const [promised, observed] = [s.promised ?? 0, s.observed ?? 0];
    if (!(Number.isFinite(promised) && promised >= 0 && Number.isFinite(observed) && observed >= 0)) return false;
    [this.promised, this.observed] = [promised, observed];
    this.s = { audited: s.audited, agreed: s.agreed, totalAudited: s.totalAudited, totalAgreed: s.totalAgreed };
    this.ringAt = this.ringSize = this.ringAgreed = 0;
    for (const v of recent.subarray(Math.max(0, recent.length - this.ring.length))) {
      this.ring[this.ringAt] = v;
      this.ringAgreed += v;
      this.ringAt = (this.ringAt + 1) % this.ring.length;
      this.ringSize++;
    }
    this.rng = createRng(s.totalAudited ^ 0x5a17);
    return true;
  }
}

// The live audit: a random share of the served inputs (early exits or not) is completed by the full model after the
// reply and the served answer compared with the full model's, so the running agreement is the cascade's. Keeps the running agreement since the exits last changed, with
// one-sided confidence bounds (policy/bounds.ts), and says when the evidence puts the agreement below the target.
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
}

/** What `learning()` reports of the audit. */
export interface AuditEstimate extends AuditState {
  /** agreed / audited (1 before any audit). */
  readonly agreement: number;
  /** One-sided lower confidence bound of the agreement (1 before any audit). */
  readonly lowerBound: number;
  /** One-sided upper confidence bound of the agreement (exact, Clopper-Pearson, so that a few audits raise no false
   * alarm): below the target, the evidence says the target is missed. */
  readonly upperBound: number;
}

export interface AuditOptions extends MarginOptions {
  /** Share of early-exited inputs completed by the full model, in [0, 1]. */
  readonly share: number;
  /** Audits before the audit may declare a failure. Default 20. */
  readonly minAudits?: number;
  readonly seed?: number;
}

/**
 * Running agreement of the served cascade with the full model on audited inputs. The trigger is the upper bound:
 * a lower bound sits below a 0.99 target until about 300 audits agree in a row, so it cannot start a tightening;
 * the upper bound falls below the target only when the disagreements seen are too many for it.
 */
export class LiveAudit {
  private rng: Rng;
  private s: { audited: number; agreed: number; totalAudited: number; totalAgreed: number } = {
    audited: 0,
    agreed: 0,
    totalAudited: 0,
    totalAgreed: 0,
  };

  constructor(readonly options: AuditOptions) {
    this.rng = createRng((options.seed ?? 0) ^ 0x5a17);
  }

  /** Whether this served input is audited: a draw with probability `share` (default: the audit's own share). */
  draw(share = this.options.share): boolean {
    return share > 0 && this.rng.next() < share;
  }

  /** One audited input: whether the served label was the full model's. */
  record(agree: boolean): void {
    this.s.audited++;
    this.s.totalAudited++;
    if (agree) {
      this.s.agreed++;
      this.s.totalAgreed++;
    }
  }

  estimate(): AuditEstimate {
    const { audited, agreed } = this.s;
    return {
      ...this.s,
      agreement: audited > 0 ? agreed / audited : 1,
      lowerBound: agreementLowerBound(agreed, audited, this.options),
      upperBound: 1 - agreementLowerBound(audited - agreed, audited, { ...this.options, bound: 'clopper-pearson' }),
    };
  }

  /** True when enough audits show the agreement below `target` (upper confidence bound < target). */
  failing(target: number): boolean {
    const e = this.estimate();
    return e.audited >= (this.options.minAudits ?? 20) && e.upperBound < target;
  }

  /** The exits changed: start a new window (the lifetime totals stay). */
  resetWindow(): void {
    this.s.audited = this.s.agreed = 0;
  }

  state(): AuditState {
    return { ...this.s };
  }

  restore(s: AuditState): boolean {
    const vals = [s.audited, s.agreed, s.totalAudited, s.totalAgreed];
    if (!vals.every((v) => Number.isInteger(v) && v >= 0) || s.agreed > s.audited || s.totalAgreed > s.totalAudited)
      return false;
    this.s = { audited: s.audited, agreed: s.agreed, totalAudited: s.totalAudited, totalAgreed: s.totalAgreed };
    this.rng = createRng(s.totalAudited ^ 0x5a17);
    return true;
  }
}

// Statistics of the agreement promise: one-sided lower confidence bounds of a proportion (Wilson, Clopper-Pearson),
// and the largest number of disagreements a validation set may show while still certifying a target.
import { SelfxitError } from '../errors.js';

/**
 * How the agreement target is checked on validation outputs. The target is a promise about unseen data, so
 * a threshold is accepted only when the one-sided lower confidence bound of the cascade's agreement
 * (validation agreements out of n) is >= target. A cascade where no sample exits agrees exactly and needs no bound.
 */
export interface MarginOptions {
  /** One-sided confidence of the lower bound. Default 0.95; 0 disables the margin (plain agreement >= target). */
  readonly confidence?: number;
  /** 'wilson' (default; Wilson score bound) or 'clopper-pearson' (exact binomial, more conservative). */
  readonly bound?: 'wilson' | 'clopper-pearson';
}

/** Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new SelfxitError('INVALID_ARGUMENT', `normal quantile needs 0 < p < 1, got ${p}`);
  const a = [
    -39.69683028665376, 220.9460984245205, -275.928510446969, 138.357751867269, -30.66479806614716, 2.506628277459239,
  ];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (
      (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) /
      ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1)
    );
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) /
    (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1)
  );
}

function logGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9).
  const g = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  x -= 1;
  let s = g[0]!;
  for (let i = 1; i < 9; i++) s += g[i]! / (x + i);
  const t = x + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(s);
}

/** Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes' betacf). */
function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  const cf = (xx: number, aa: number, bb: number): number => {
    const tiny = 1e-300;
    let c = 1;
    let d = 1 - ((aa + bb) * xx) / (aa + 1);
    if (Math.abs(d) < tiny) d = tiny;
    d = 1 / d;
    let h = d;
    for (let m = 1; m <= 10000; m++) {
      const m2 = 2 * m;
      let num = (m * (bb - m) * xx) / ((aa + m2 - 1) * (aa + m2));
      d = 1 + num * d;
      if (Math.abs(d) < tiny) d = tiny;
      c = 1 + num / c;
      if (Math.abs(c) < tiny) c = tiny;
      d = 1 / d;
      h *= d * c;
      num = (-(aa + m) * (aa + bb + m) * xx) / ((aa + m2) * (aa + m2 + 1));
      d = 1 + num * d;
      if (Math.abs(d) < tiny) d = tiny;
      c = 1 + num / c;
      if (Math.abs(c) < tiny) c = tiny;
      d = 1 / d;
      const del = d * c;
      h *= del;
      if (Math.abs(del - 1) < 1e-13) break;
    }
    return h;
  };
  return x < (a + 1) / (a + b + 2) ? (front * cf(x, a, b)) / a : 1 - (front * cf(1 - x, b, a)) / b;
}

/**
 * One-sided lower confidence bound of a proportion: `agreeCount` successes out of `n`.
 * Wilson: `(p̂ + z²/2n − z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)` with z the `confidence` normal quantile.
 * Clopper-Pearson: the `1 − confidence` quantile of Beta(a, n − a + 1). Defaults: confidence 0.95, Wilson.
 */
export function agreementLowerBound(agreeCount: number, n: number, options: MarginOptions = {}): number {
  const conf = options.confidence ?? 0.95;
  if (!(n > 0)) return 1;
  const a = Math.min(n, Math.max(0, agreeCount));
  if (!(conf > 0)) return a / n;
  if (!(conf < 1)) throw new SelfxitError('INVALID_ARGUMENT', `confidence must be < 1, got ${conf}`);
  if ((options.bound ?? 'wilson') === 'wilson') {
    const z = normalQuantile(conf);
    const ph = a / n;
    const z2 = z * z;
    return Math.max(0, (ph + z2 / (2 * n) - z * Math.sqrt((ph * (1 - ph)) / n + z2 / (4 * n * n))) / (1 + z2 / n));
  }
  if (a === 0) return 0;
  const alpha = 1 - conf;
  // P(X >= a | p) = I_p(a, n − a + 1) grows with p; find p where it equals alpha.
  let lo = 0;
  let hi = a / n;
  for (let it = 0; it < 100; it++) {
    const mid = (lo + hi) / 2;
    if (incompleteBeta(mid, a, n - a + 1) < alpha) lo = mid;
    else hi = mid;
    if (hi - lo < 1e-12) break;
  }
  return lo;
}

/** Largest number of disagreements out of n whose agreement bound still meets the target (−1 when even 0 does not). */
export function maxDisagreements(n: number, target: number, options: MarginOptions = {}): number {
  checkTarget(target);
  const ok = (dis: number): boolean => agreementLowerBound(n - dis, n, options) >= target;
  if (n <= 0 || !ok(0)) return -1;
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ok(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export function checkTarget(target: number): void {
  if (!(target > 0 && target <= 1))
    throw new SelfxitError('INVALID_TARGET', `agreement target must be in (0, 1], got ${target}`, { target });
}

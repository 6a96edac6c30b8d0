// Small statistics helpers shared by the demo and the bench page.

/** Arithmetic mean (NaN for an empty list). */
export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((s, x) => s + x, 0) / xs.length;
}

/** Percentile `p` in [0, 100] with linear interpolation between order statistics (NaN for an empty list). */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = ((s.length - 1) * p) / 100;
  const lo = Math.floor(pos);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

/** Mean, p50 and p95 of a list. */
export function summary(xs: readonly number[]): { mean: number; p50: number; p95: number } {
  return { mean: mean(xs), p50: percentile(xs, 50), p95: percentile(xs, 95) };
}

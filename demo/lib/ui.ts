// Shared presentation helpers: exit colours and matching the classifier's thresholds to a calibration-curve point.
import type { CurvePoint } from '../../src/bundle/manifest.js';

const PALETTE = ['#4f46e5', '#0ea5e9', '#14b8a6', '#84cc16', '#eab308', '#f97316', '#a855f7', '#ec4899'];

/** Colour of exit `k` (cycles through a palette). */
export function exitColor(k: number): string {
  return PALETTE[k % PALETTE.length]!;
}

/** Colour of "ran the whole model". */
export const FULL_COLOR = '#e4572e';

/**
 * The curve point whose thresholds equal `thresholds` (the classifier's current ones), or undefined when
 * none does (e.g. every exit switched off because no point meets the target).
 */
export function chooseCurvePoint(
  curve: readonly CurvePoint[],
  thresholds: readonly number[] | undefined,
): CurvePoint | undefined {
  if (!thresholds) return undefined;
  return curve.find(
    (p) =>
      p.thresholds.length === thresholds.length && p.thresholds.every((t, k) => Math.abs(t - thresholds[k]!) < 1e-9),
  );
}

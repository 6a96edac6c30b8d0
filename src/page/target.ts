// Re-choosing exit thresholds for another agreement target from the bundle's calibration curve (pure).
import type { BundleManifest, CurvePoint } from '../bundle/manifest.js';
import { SelfxitError } from '../errors.js';

/** The thresholds chosen for a target, and what the calibration curve expects of them. */
export interface TargetChoice {
  readonly target: number;
  readonly thresholds: readonly number[];
  /** Expected agreement with the full model (out-of-fold validation). */
  readonly agreement: number;
  /** Expected MACs as a fraction of the backbone. */
  readonly macsFraction: number;
  /** False when no curve point reaches the target: the most faithful point was taken instead. */
  readonly reached: boolean;
}

/**
 * Picks the cheapest curve point (lowest `macsFraction`) whose agreement is >= `target`; ties go to the
 * higher agreement. When none reaches it, the point with the highest agreement (`reached: false`).
 * Throws INVALID_TARGET for a target outside (0, 1] and INVALID_BUNDLE for an empty or mismatched curve.
 */
export function chooseThresholds(manifest: BundleManifest, target: number): TargetChoice {
  if (!(typeof target === 'number' && target > 0 && target <= 1)) {
    throw new SelfxitError('INVALID_TARGET', `target agreement must be in (0, 1], got ${String(target)}`, { target });
  }
  const curve = manifest.calibration.curve.filter((p) => p.thresholds.length === manifest.exits.length);
  if (curve.length === 0) throw new SelfxitError('INVALID_BUNDLE', 'the bundle has no calibration curve to choose thresholds from');
  let best: CurvePoint | undefined;
  for (const p of curve) {
    if (p.agreement < target) continue;
    if (!best || p.macsFraction < best.macsFraction || (p.macsFraction === best.macsFraction && p.agreement > best.agreement)) best = p;
  }
  const reached = best !== undefined;
  if (!best) best = curve.reduce((a, b) => (b.agreement > a.agreement || (b.agreement === a.agreement && b.macsFraction < a.macsFraction) ? b : a));
  return { target, thresholds: [...best.thresholds], agreement: best.agreement, macsFraction: best.macsFraction, reached };
}

// Re-choosing the exits' thresholds for an agreement target from a bundle's calibration curve, without the samples:
// the one rule shared by the page (setTarget), `selfxit eval --target` and the demo.
import type { CurvePoint } from '../bundle/manifest.js';
import { SelfxitError } from '../errors.js';
import { agreementLowerBound, checkTarget, type MarginOptions } from './bounds.js';

export interface CurvePickOptions extends MarginOptions {
  /** Validation samples behind the curve (the manifest's `calibration.samples`): the target is then checked on the
   * lower confidence bound of each point's agreement, as calibration did. Without it, on the agreement itself. */
  readonly samples?: number;
  /** Only points with this many thresholds (the bundle's exit count) are considered. */
  readonly exits?: number;
}

export interface CurvePick {
  readonly point: CurvePoint;
  /** False when no point meets the target: `point` is then the most agreeing one. */
  readonly reached: boolean;
}

/**
 * The cheapest curve point (lowest `macsFraction`; ties: the higher knob) whose agreement meets `target` (through the
 * confidence bound when `samples` is given; the backbone-only point always does). With `samples` set to the
 * calibration's sample count, the calibration target gives back the shipped thresholds.
 * @throws SelfxitError INVALID_TARGET for a target outside (0, 1]; INVALID_BUNDLE when no point is usable.
 */
export function pickCurvePoint(
  curve: readonly CurvePoint[],
  target: number,
  options: CurvePickOptions = {},
): CurvePick {
  if (typeof target !== 'number') checkTarget(Number.NaN);
  checkTarget(target);
  const usable = options.exits === undefined ? curve : curve.filter((p) => p.thresholds.length === options.exits);
  if (usable.length === 0)
    throw new SelfxitError('INVALID_BUNDLE', 'the bundle has no calibration curve to choose thresholds from');
  const n = options.samples;
  const meets = (p: CurvePoint): boolean => {
    if (p.exitShares.length > 0 && p.exitShares[p.exitShares.length - 1] === 1) return true;
    return n !== undefined && n > 0
      ? agreementLowerBound(Math.round(p.agreement * n), n, options) >= target
      : p.agreement >= target;
  };
  let best: CurvePoint | undefined;
  for (const p of usable) {
    if (!meets(p)) continue;
    if (
      !best ||
      p.macsFraction < best.macsFraction - 1e-12 ||
      (Math.abs(p.macsFraction - best.macsFraction) <= 1e-12 && p.knob > best.knob)
    )
      best = p;
  }
  if (best) return { point: best, reached: true };
  const most = usable.reduce((a, b) =>
    b.agreement > a.agreement || (b.agreement === a.agreement && b.macsFraction < a.macsFraction) ? b : a,
  );
  return { point: most, reached: false };
}

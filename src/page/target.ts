// Re-choosing exit thresholds for another agreement target from the bundle's calibration curve, or from a device
// plan's curve when one applies (pure).
import { curveSamples, type BundleManifest } from '../bundle/manifest.js';
import type { DevicePlan } from '../policy/device-plan.js';
import { pickCurvePoint } from '../policy/curve.js';
import type { TargetChoice } from '../types.js';

/**
 * Thresholds for `target` from the bundle's calibration curve ({@link pickCurvePoint}: the cheapest point whose
 * agreement meets the target with the same confidence margin calibration used, so the calibration target gives back
 * the shipped thresholds). When none reaches it, the most faithful point (`reached: false`).
 * With `plan` (a device plan in use), from `plan.curve` instead, with the same margin (`manifest.calibration.samples`, a paper bundle's held-out fold: curveSamples);
 * its points give every bundle exit a threshold, the exits the plan leaves out never firing.
 * Throws INVALID_TARGET for a target outside (0, 1] and INVALID_BUNDLE for an empty or mismatched curve.
 */
export function chooseThresholds(manifest: BundleManifest, target: number, plan?: DevicePlan): TargetChoice {
  const curve = plan ? plan.curve : manifest.calibration.curve;
  const { point, reached } = pickCurvePoint(curve, target, {
    samples: curveSamples(manifest.calibration),
    exits: manifest.exits.length,
  });
  return {
    target,
    thresholds: [...point.thresholds],
    agreement: point.agreement,
    macsFraction: point.macsFraction,
    reached,
  };
}

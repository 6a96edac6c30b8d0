// Public ESM entry (and the script-tag build's global `selfxit`): load() a bundle, classify in a worker. Nothing runs at import.
export { load, Classifier } from './page/classifier.js';
export type {
  ClassifyResult,
  ClassifyOptions,
  ClassifierInfo,
  DevicePlanOptions,
  PlanSummary,
} from './page/classifier.js';
export type { LoadOptions } from './page/options.js';
export { LOAD_DEFAULTS } from './page/options.js';
export type { ClassifierInput } from './page/inputs.js';
export type { TargetChoice } from './page/target.js';
export type { Backend, BackendPreference, ProgressInfo } from './protocol.js';
export { SelfxitError, isSelfxitError } from './errors.js';
export type { SelfxitErrorCode } from './errors.js';
export type { BundleManifest, InputSpec, ExitSpec, SegmentSpec, CurvePoint } from './bundle/manifest.js';
export type { DevicePlan, StageTimings } from './policy/device-plan.js';

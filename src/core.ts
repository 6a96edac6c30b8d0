// Pure core entry (`selfxit/core`, dist/core.js): graph toolkit, bundle schema, calibration (prepare), cascade engine and
// errors; runs in Node and browsers (onnxruntime injected).
export * from './graph/index.js';
export * from './bundle/manifest.js';
export * from './graph/head-spec.js';
export * from './engine/cascade.js';
/**
 * Calibration: {@link prepare} turns an ONNX classifier and unlabeled uint8 NHWC images into a bundle in memory
 * (manifest + segment files). It is pure — onnxruntime is injected as `options.ort` (onnxruntime-node in Node,
 * onnxruntime-web in a browser worker) and nothing touches disk — so the CLI and an in-browser worker run the same code.
 * {@link minimumSamples} is the fewest samples a target agreement needs (prepare throws `TOO_FEW_SAMPLES` below it).
 */
export { prepare, minimumSamples } from './calibrate/prepare.js';
export type {
  PrepareOptions,
  PrepareResult,
  PrepareReport,
  CandidateReport,
  CandidateHeadReport,
} from './calibrate/prepare.js';
export type { CostTable } from './policy/cost-table.js';
export type { PrepareProgress, PrepareStage, ProgressCallback } from './calibrate/progress.js';
/** A device plan's measured stage times as the JSON that `selfxit prepare --cost-table` reads. */
export { costTableFromPlan } from './policy/device-plan.js';
export type { DevicePlan, StageTimings } from './policy/device-plan.js';
export type { SampleBatch, SampleInput } from './calibrate/samples.js';
export * from './errors.js';
export type { OrtModule, OrtSession, OrtTensor, OrtSessionOptions } from './ort/types.js';

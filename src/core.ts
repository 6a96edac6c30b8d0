// Pure core entry (`selfxit/core`, dist/core.js): graph toolkit, bundle schema, calibration (prepare), cascade engine and
// errors; runs in Node and browsers (onnxruntime injected). Every value export is named here; the public types are
// listed in core-types.ts.

// ONNX graph toolkit: read/write models, find cut points, split into segments, count MACs, build and fuse exit heads.
export {
  decodeModel,
  encodeModel,
  graphInputs,
  graphOutputs,
  onnxMessages,
  findCuts,
  splitModel,
  withExtraOutputs,
  BATCH_DIM,
  analyzeModel,
  segmentMacs,
  buildHeadModel,
  fuseHead,
  validateHeadSpec,
  sha256Hex,
} from './graph/index.js';
export { headInputSize, headCost } from './graph/head-spec.js';

// Bundle schema: the manifest's constants and its validator.
export { MANIFEST_VERSION, MANIFEST_FORMAT, MANIFEST_FILE, NEVER_EXIT, validateManifest } from './bundle/manifest.js';

/**
 * Calibration: {@link prepare} turns an ONNX classifier and unlabeled uint8 NHWC images into a bundle in memory
 * (manifest + segment files). It is pure — onnxruntime is injected as `options.ort` (onnxruntime-node in Node,
 * onnxruntime-web in a browser worker) and nothing touches disk — so the CLI and an in-browser worker run the same code.
 * {@link minimumSamples} is the fewest samples a target agreement needs (prepare throws `TOO_FEW_SAMPLES` below it).
 */
export { prepare, minimumSamples } from './calibrate/prepare.js';
/**
 * Head training as tasks (prepare's `trainerPool` option): {@link inProcessTrainer} is the default trainer (one
 * task at a time, in this thread); {@link runStackTask} is what any trainer runs for a task (e.g. in a worker of a
 * caller's own pool, which keeps the HeadTrainerPool contract; the Node CLI's own worker-thread pool,
 * src/cli/trainer-pool.ts, is not exported).
 */
export { inProcessTrainer, runStackTask } from './calibrate/train-task.js';
/** A device plan's measured stage times as the JSON that `selfxit prepare --cost-table` reads. */
export { costTableFromPlan } from './policy/device-plan.js';

// Cascade engine: the exit cascade over a caller's StageRunner (the same decisions as the browser runtime).
export { runCascade } from './engine/cascade.js';

// Errors.
export { SelfxitError, isSelfxitError } from './errors.js';

export type * from './core-types.js';

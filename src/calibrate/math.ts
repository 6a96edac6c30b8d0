// Public API of the pure calibration math (head training, cross-fitting, cascade simulation, thresholds, exit selection).
export { createRng, shuffleInPlace, permutation, kFoldAssign, foldIndices, type Rng } from './rng.js';
export {
  poolNCHW,
  poolNCHWInto,
  maxPoolNCHW,
  maxPoolNCHWInto,
  headFeaturesInto,
  headFeatureDim,
  checkPoolGrids,
  chooseGrid,
} from './pool.js';
export {
  trainHead,
  predictHead,
  toHeadSpec,
  foldStandardization,
  DEFAULT_EPOCHS,
  DEFAULT_LEARNING_RATE,
  DEFAULT_HIDDEN,
  type TrainHeadOptions,
  type TrainedHead,
  type TrainHeadResult,
  type TrainReport,
  type HeadGeometry,
} from './train-head.js';
export { crossFit, type CrossFitOptions, type CrossFitResult, type FitInfo } from './crossfit.js';
export {
  argmaxRows,
  exitScores,
  exitStatsOf,
  pathCosts,
  simulateCascade,
  type ExitScores,
  type CascadeCosts,
  type CascadeOutcome,
} from '../policy/cascade-sim.js';
export {
  NEVER_EXIT,
  agreementLowerBound,
  maxDisagreements,
  chooseThresholds,
  thresholdCurve,
  type MarginOptions,
  type ThresholdOptions,
  type ThresholdChoice,
} from '../policy/thresholds.js';
export { pickCurvePoint, type CurvePick, type CurvePickOptions } from '../policy/curve.js';
export { selectExits, paperCascade, type SelectExitsOptions, type SelectionResult } from '../policy/select-exits.js';
export { meanKL, argmaxAgreement } from './linalg.js';

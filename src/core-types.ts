// Public types of the pure core entry (`selfxit/core`, dist/core.js), types only, each documented where it is declared:
// ONNX graph toolkit, exit heads, bundle schema, calibration (prepare), device plans, cascade engine, errors, onnxruntime.

// ONNX graph toolkit
export type { OnnxModel, TensorInfo } from './graph/model.js';
export type { DType, onnx } from './graph/proto.js';
export type { TensorTypes } from './graph/split.js';
export type { AnalyzeOptions, CutPoint, ModelAnalysis } from './graph/analyze.js';
export type { BuildHeadOptions, FuseHeadOptions } from './graph/head-builder.js';
export type { HeadKind, DenseLayer, HeadGeometry, HeadSpec } from './graph/head-spec.js';
export type { MapLayout } from './graph/map-layout.js';

// Bundle schema (docs/BUNDLE.md)
export type * from './bundle/manifest.js';
export type { SampleBatch, SampleInput } from './calibrate/samples.js';

// Calibration
export type {
  PrepareOptions,
  PrepareResult,
  PrepareReport,
  CandidateReport,
  CandidateHeadReport,
} from './calibrate/prepare.js';
export type { PrepareProgress, PrepareStage, ProgressCallback } from './calibrate/progress.js';
export type { HeadTrainerPool, StackTask, StackTaskResult, TrainingData } from './calibrate/train-task.js';
export type { AugmentKind } from './calibrate/augment.js';
export type { ThresholdRule } from './policy/exit-rule.js';
export type { CostTable } from './policy/cost-table.js';
export type { DevicePlan, StageTimings } from './policy/device-plan.js';

// Cascade engine
export type { StageRunner, StageOutput, CascadeResult, CascadeOptions } from './engine/cascade.js';

// Errors and the injected onnxruntime
export type { SelfxitErrorCode } from './errors.js';
export type { OrtModule, OrtSession, OrtTensor, OrtSessionOptions } from './ort/types.js';

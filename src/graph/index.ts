// Public entry of the ONNX graph toolkit (pure TypeScript; runs in Node and browsers; onnxruntime is injected).
export {
  decodeModel,
  encodeModel,
  graphInputs,
  graphOutputs,
  withInputShape,
  withOutputs,
  type OnnxModel,
  type TensorInfo,
} from './model.js';
export { pb as onnxMessages, type DType, type onnx } from './proto.js';
export { cutDisplayNames, exitName, findCuts } from './cuts.js';
export { splitModel, withExtraOutputs, BATCH_DIM, type TensorTypes } from './split.js';
export { analyzeModel, segmentMacs, type AnalyzeOptions, type CutPoint, type ModelAnalysis } from './analyze.js';
export { nodeMacs } from './cost.js';
export { inferMapLayouts, type MapLayout } from './layout.js';
export {
  buildHeadModel,
  fuseHead,
  validateHeadSpec,
  type BuildHeadOptions,
  type FuseHeadOptions,
} from './head-builder.js';
export { sha256Hex } from './hash.js';
export { isQuantizedOp, quantizedOps } from './quant-ops.js';
export {
  fixedBatchOf,
  hasFixedBatch,
  resolveBatch,
  rewriteBatchDynamic,
  type BatchMode,
  type BatchResolution,
} from './batch.js';
export type { ValueKind } from './graph-index.js';
export {
  compileCascade,
  cascadeThresholds,
  CASCADE_IO,
  EXIT_INDEX_CONTINUE,
  EXIT_INDEX_FULL,
  type CascadeEnd,
  type CascadePart,
  type CompileCascadeOptions,
} from './compile-cascade.js';
export { compileChain, type ChainPart } from './compile-chain.js';

// Types of the exit heads with a learned convolution before pooling (conv-head.ts): shape, trained weights, training
// options and report; the feature widths and multiply-adds of a shape, and its checks.
import { SelfxitError } from '../../src/errors.js';
import type { DenseLayer, PoolGrids } from '../../src/graph/head-spec.js';
import { headFeatureDim } from '../../src/calibrate/pool.js';

/** Geometry of a conv head: input map `[C, H, W]`, a 3×3 conv to `outChannels`, pooling, dense layers. */
export interface ConvHeadShape {
  readonly inChannels: number;
  readonly inHeight: number;
  readonly inWidth: number;
  /** Conv output channels (a multiple of 8). */
  readonly outChannels: number;
  /** Conv stride (kernel 3×3, zero padding 1). */
  readonly stride: number;
  /** Side of the max-pooling grid after the conv (0: none). Must divide the conv output. */
  readonly maxGrid: number;
  /** Side of the average-pooling grid after the conv (default 1: global average). Must divide the conv output. */
  readonly avgGrid?: number;
  /** Hidden width of the dense part (0: linear). */
  readonly hidden: number;
  readonly classes: number;
  /**
   * The dense part also reads the raw map's pooled features (as a pool head does: average `grid`, then `maxGrid`),
   * placed before the conv features. Absent: conv features only.
   */
  readonly pooled?: PoolGrids;
}

/** A trained conv head: conv weights `[out, C, 3, 3]` (ONNX order) reading the raw map, then dense layers. */
export interface ConvHead {
  readonly shape: ConvHeadShape;
  readonly convWeight: Float32Array;
  readonly convBias: Float32Array;
  /** Dense layers on `[avg (out) | max (out·g·g, NCHW order)]`, ReLU between them. */
  readonly layers: readonly DenseLayer[];
}

export interface ConvHeadOptions {
  /** Maximum epochs (cosine-decayed rate over them). Default 8. */
  readonly epochs?: number;
  /** Images per step. Default 64. */
  readonly batchSize?: number;
  /** Default 0.003. */
  readonly learningRate?: number;
  /** Decoupled weight decay on weights. Default 1e-4. */
  readonly weightDecay?: number;
  /** Seed of init and shuffling. Default 0. */
  readonly seed?: number;
  /** Stop when the held-out KL improves by less than this fraction `patience` epochs in a row. Default 0.001. */
  readonly tolerance?: number;
  /** Default 2. */
  readonly patience?: number;
  /** 'js' forces the plain-JS kernels (tests). */
  readonly kernels?: 'auto' | 'js';
  /** Called after each epoch. */
  readonly onEpoch?: (e: { epoch: number; trainKL: number; heldOutKL: number; ms: number }) => void;
}

export interface ConvHeadReport {
  readonly lossHistory: readonly number[];
  readonly heldOutHistory: readonly number[];
  readonly bestEpoch: number;
  readonly ms: number;
  readonly backend: 'wasm-simd' | 'js';
}

export const round = (v: number, to: number): number => Math.ceil(v / to) * to;
export const bad = (msg: string, details?: Record<string, unknown>): never => {
  throw new SelfxitError('INVALID_ARGUMENT', msg, details);
};

/** Conv output size `[Ho, Wo]`. */
export function convOutSize(s: Pick<ConvHeadShape, 'inHeight' | 'inWidth' | 'stride'>): [number, number] {
  return [Math.floor((s.inHeight - 1) / s.stride) + 1, Math.floor((s.inWidth - 1) / s.stride) + 1];
}

/** Conv features: `out` averages plus `out·g·g` maxima. */
export const convFeatureDim = (s: Pick<ConvHeadShape, 'outChannels' | 'maxGrid' | 'avgGrid'>): number =>
  s.outChannels * ((s.avgGrid ?? 1) ** 2 + s.maxGrid * s.maxGrid);

/** Raw-map pooled features the dense part reads besides the conv features (0 without `pooled`). */
export const pooledFeatureDim = (s: ConvHeadShape): number =>
  s.pooled ? headFeatureDim(s.inChannels, s.pooled.grid, s.pooled.maxGrid) : 0;

/** Multiply-adds of one image through the head (conv, pooling reads, dense layers). */
export function convHeadMacs(s: ConvHeadShape): number {
  const [ho, wo] = convOutSize(s);
  const p = ho * wo;
  const d = convFeatureDim(s) + pooledFeatureDim(s);
  const raw = s.inChannels * s.inHeight * s.inWidth;
  const pool = p * s.outChannels * (s.maxGrid > 0 ? 2 : 1) + (s.pooled ? raw * (s.pooled.maxGrid ? 2 : 1) : 0);
  const dense = s.hidden > 0 ? d * s.hidden + s.hidden * s.classes : d * s.classes;
  return p * s.inChannels * 9 * s.outChannels + pool + dense;
}

export function checkShape(s: ConvHeadShape): void {
  const ints = [s.inChannels, s.inHeight, s.inWidth, s.outChannels, s.stride, s.classes];
  if (!ints.every((v) => Number.isInteger(v) && v >= 1) || s.classes < 2) bad('conv head: bad shape', { ...s });
  if (s.outChannels % 8 !== 0) bad(`conv head: outChannels must be a multiple of 8, got ${s.outChannels}`);
  if (!(Number.isInteger(s.hidden) && s.hidden >= 0 && Number.isInteger(s.maxGrid) && s.maxGrid >= 0))
    bad('conv head: hidden and maxGrid must be integers >= 0');
  const [ho, wo] = convOutSize(s);
  if (s.maxGrid > 0 && (ho % s.maxGrid !== 0 || wo % s.maxGrid !== 0))
    bad(`conv head: max grid ${s.maxGrid} does not divide the conv output ${ho}x${wo}`);
  const a = s.avgGrid ?? 1;
  if (!(Number.isInteger(a) && a >= 1 && ho % a === 0 && wo % a === 0))
    bad(`conv head: average grid ${a} does not divide the conv output ${ho}x${wo}`);
}

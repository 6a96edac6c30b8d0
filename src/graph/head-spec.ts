// Exit-head weights as plain data: written by head training (calibrate), turned into ONNX by graph/head-builder.
// The ONNX toolkit owns this description of a head graph; the bundle manifest refers to it (HeadKind).
import type { Dequantization } from './dequantization.js';
import type { MapLayout } from './map-layout.js';

/** Exit-head architecture: pooled features → linear, → one hidden layer, or the paper's head on the whole map. */
export type HeadKind = 'pool-linear' | 'pool-mlp' | 'paper';

/** One dense layer, `y = W x + b` with W row-major `[out, in]`. */
export interface DenseLayer {
  readonly in: number;
  readonly out: number;
  /** Row-major `[out, in]` (ONNX Gemm with transB = 1). */
  readonly weight: Float32Array;
  readonly bias: Float32Array;
}

/** How a cut's map is pooled into features: an average grid and, optionally, a max grid after it. */
export interface PoolGrids {
  /** Average-pooling grid. */
  readonly grid: readonly [number, number];
  /**
   * Max-pooling grid (each dividing H and W; `[H, W]` means the raw map) whose features are concatenated after the
   * average-pooled ones. Absent: no max branch.
   */
  readonly maxGrid?: readonly [number, number];
}

/** Where a head reads and how it pools: everything of a {@link HeadSpec} but its trained weights. */
export interface HeadGeometry extends PoolGrids {
  readonly kind: HeadKind;
  readonly inChannels: number;
  readonly inHeight: number;
  readonly inWidth: number;
  /**
   * The cut is a quantized (uint8/int8) tensor: the head starts with a DequantizeLinear with this scalar scale and
   * zero point, and everything after it is float32. Absent: the cut is float32.
   */
  readonly dequant?: Dequantization;
  /**
   * The cut's layout. `'NHWC'`: it is channels-last `[N, H, W, C]` (`inChannels`, `inHeight`, `inWidth` still name C,
   * H and W), and the head starts with a Transpose (perm `[0, 3, 1, 2]`, after the DequantizeLinear when any), so that
   * everything after it, features included, is the NCHW head's. Absent or `'NCHW'`: `[N, C, H, W]`.
   */
  readonly layout?: MapLayout;
}

/**
 * An exit head on the cut's NCHW map `[N, C, H, W]` (an NHWC cut's transposed to it first: {@link HeadGeometry.layout}). Features: average-pool to a `grid` (`[gh, gw]`, each
 * dividing H and W; `[H, W]` means no pooling, as in the paper's head) and flatten in NCHW order (feature
 * index `c * gh * gw + i * gw + j`); when `maxGrid` (`[mh, mw]`) is set, the max-pooled map over that grid
 * follows, flattened the same way (feature index `C * gh * gw + c * mh * mw + i * mw + j`). Then the dense
 * layers with ReLU between them, multiply the logits by `logitScale`, softmax. Output `[N, classes]` probabilities.
 */
export interface HeadSpec extends HeadGeometry {
  /** 1 layer (linear) or 2 layers (hidden ReLU). */
  readonly layers: readonly DenseLayer[];
  /** Logits are multiplied by this before the softmax (the paper divides by 0.5, i.e. 2). Default 1. */
  readonly logitScale: number;
  readonly classes: number;
}

/** Number of features a head sees after pooling and flattening: `C·gh·gw`, plus `C·mh·mw` with a max branch. */
export function headInputSize(spec: Pick<HeadSpec, 'inChannels' | 'grid' | 'maxGrid'>): number {
  const avg = spec.inChannels * spec.grid[0] * spec.grid[1];
  return spec.maxGrid ? avg + spec.inChannels * spec.maxGrid[0] * spec.maxGrid[1] : avg;
}

/**
 * Parameter count and MACs per sample of a head: the dense layers' `in·out`, plus one op per input element
 * (`C·H·W`) for each pooling branch that pools (average, and max when `maxGrid` is set; a grid of `[H, W]` is free).
 */
export function headCost(spec: HeadSpec): { params: number; macs: number } {
  let params = 0;
  let macs = 0;
  for (const l of spec.layers) {
    params += l.in * l.out + l.out;
    macs += l.in * l.out;
  }
  const mapSize = spec.inChannels * spec.inHeight * spec.inWidth;
  const pools = (g: readonly [number, number]): boolean => g[0] !== spec.inHeight || g[1] !== spec.inWidth;
  if (pools(spec.grid)) macs += mapSize;
  if (spec.maxGrid && pools(spec.maxGrid)) macs += mapSize;
  return { params, macs };
}

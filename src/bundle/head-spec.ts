// Exit-head weights as plain data: written by head training (calibrate), turned into ONNX by graph/head-builder.
import type { HeadKind } from './manifest.js';

/** One dense layer, `y = W x + b` with W row-major `[out, in]`. */
export interface DenseLayer {
  readonly in: number;
  readonly out: number;
  /** Row-major `[out, in]` (ONNX Gemm with transB = 1). */
  readonly weight: Float32Array;
  readonly bias: Float32Array;
}

/**
 * An exit head: average-pool the cut's NCHW map `[N, C, H, W]` to a `grid` (`[gh, gw]`, each dividing H and W;
 * `[H, W]` means no pooling, as in the paper's head), flatten in NCHW order (feature index
 * `c * gh * gw + i * gw + j`), then the dense layers with ReLU between them, multiply the logits by
 * `logitScale`, softmax. Output `[N, classes]` probabilities.
 */
export interface HeadSpec {
  readonly kind: HeadKind;
  readonly inChannels: number;
  readonly inHeight: number;
  readonly inWidth: number;
  readonly grid: readonly [number, number];
  /** 1 layer (linear) or 2 layers (hidden ReLU). */
  readonly layers: readonly DenseLayer[];
  /** Logits are multiplied by this before the softmax (the paper divides by 0.5, i.e. 2). Default 1. */
  readonly logitScale: number;
  readonly classes: number;
}

/** Number of features a head sees after pooling and flattening. */
export function headInputSize(spec: Pick<HeadSpec, 'inChannels' | 'grid'>): number {
  return spec.inChannels * spec.grid[0] * spec.grid[1];
}

/** Parameter count and MACs per sample of a head (pooling counted as one add per input element). */
export function headCost(spec: HeadSpec): { params: number; macs: number } {
  let params = 0;
  let macs = 0;
  for (const l of spec.layers) {
    params += l.in * l.out + l.out;
    macs += l.in * l.out;
  }
  const pooled = spec.grid[0] === spec.inHeight && spec.grid[1] === spec.inWidth;
  if (!pooled) macs += spec.inChannels * spec.inHeight * spec.inWidth;
  return { params, macs };
}

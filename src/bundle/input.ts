// Model input conversion beside the input spec: RGBA pixels → uint8 HWC (RGB or luma), and uint8 NHWC images →
// the model's float32 input (`(p / 255 - mean[c]) / std[c]`, NCHW or NHWC). Used by the worker's preprocessing,
// prepare/eval (CLI) and the demo, so every path feeds the model the same numbers.
import type { InputSpec } from './manifest.js';

/** `count` images, uint8, NHWC (`[count, height, width, channels]`), row-major. */
export interface SampleBatch {
  readonly data: Uint8Array;
  readonly count: number;
}

/** Grayscale value of an RGB pixel: `round(0.299 R + 0.587 G + 0.114 B)` (ITU-R BT.601 luma). */
export function luma(r: number, g: number, b: number): number {
  return Math.round(0.299 * r + 0.587 * g + 0.114 * b);
}

/**
 * Writes `pixels` RGBA pixels as uint8 HWC with `channels` 3 (RGB, alpha dropped) or 1 ({@link luma}) into `out`
 * from `offset`.
 */
export function rgbaToChannels(
  rgba: ArrayLike<number>,
  pixels: number,
  channels: number,
  out: Uint8Array,
  offset = 0,
): Uint8Array {
  for (let p = 0; p < pixels; p++) {
    const r = rgba[p * 4]!;
    const g = rgba[p * 4 + 1]!;
    const b = rgba[p * 4 + 2]!;
    if (channels === 3) {
      out[offset + p * 3] = r;
      out[offset + p * 3 + 1] = g;
      out[offset + p * 3 + 2] = b;
    } else {
      out[offset + p] = luma(r, g, b);
    }
  }
  return out;
}

/**
 * Converts images `[start, start + rows)` of a uint8 NHWC block to the model's float32 input
 * (`(p / 255 - mean[c]) / std[c]`), in `spec.layout`. Writes into `out` when given (reused buffer).
 */
export function toModelInput(
  batch: SampleBatch,
  start: number,
  rows: number,
  spec: InputSpec,
  out?: Float32Array,
): Float32Array {
  const { height: h, width: w, channels: c } = spec;
  const hw = h * w;
  const per = hw * c;
  const dst = out && out.length >= rows * per ? out.subarray(0, rows * per) : new Float32Array(rows * per);
  const scale = new Float32Array(c);
  const shift = new Float32Array(c);
  for (let ch = 0; ch < c; ch++) {
    scale[ch] = 1 / (255 * spec.std[ch]!);
    shift[ch] = spec.mean[ch]! / spec.std[ch]!;
  }
  const src = batch.data;
  for (let r = 0; r < rows; r++) {
    const sOff = (start + r) * per;
    const dOff = r * per;
    if (spec.layout === 'NHWC') {
      for (let i = 0; i < per; i++) {
        const ch = i % c;
        dst[dOff + i] = src[sOff + i]! * scale[ch]! - shift[ch]!;
      }
    } else {
      for (let ch = 0; ch < c; ch++) {
        const sc = scale[ch]!;
        const sh = shift[ch]!;
        const plane = dOff + ch * hw;
        for (let p = 0; p < hw; p++) dst[plane + p] = src[sOff + p * c + ch]! * sc - sh;
      }
    }
  }
  return dst;
}

/** Input tensor dims for `rows` images. */
export function inputDims(spec: InputSpec, rows: number): number[] {
  return spec.layout === 'NHWC'
    ? [rows, spec.height, spec.width, spec.channels]
    : [rows, spec.channels, spec.height, spec.width];
}

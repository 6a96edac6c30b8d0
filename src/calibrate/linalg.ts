// Dense-layer forward pass on row-major Float32Array matrices (cache-blocked loops, no allocation; prediction) and
// softmax/KL helpers. Training products run in wasm-kernels.ts.
import { argmaxAt } from '../policy/cascade-sim.js';

/** Columns per block so that one block of an `[outDim, block]` weight slice stays in cache (~256 KB). */
function blockSize(inDim: number, outDim: number): number {
  return Math.min(inDim, Math.max(64, Math.floor(65536 / Math.max(1, outDim))));
}

/**
 * `out[r, o] = bias[o] + Σ_i x[r, i] · w[o, i]` for `rows` rows. `x` is `[rows, inDim]`, `w` is `[outDim, inDim]`
 * (the ONNX Gemm transB layout), `out` is `[rows, outDim]`, all row-major. 2×2 register blocking
 * (two rows × two outputs per pass) and column blocks sized for cache.
 */
export function denseForward(
  x: Float32Array,
  rows: number,
  inDim: number,
  w: Float32Array,
  bias: Float32Array,
  outDim: number,
  out: Float32Array,
): void {
  for (let r = 0; r < rows; r++) {
    const ob = r * outDim;
    for (let o = 0; o < outDim; o++) out[ob + o] = bias[o]!;
  }
  const bs = blockSize(inDim, outDim);
  for (let i0 = 0; i0 < inDim; i0 += bs) {
    const i1 = Math.min(inDim, i0 + bs);
    let r = 0;
    for (; r + 1 < rows; r += 2) {
      const xa = r * inDim;
      const xc = xa + inDim;
      const oa = r * outDim;
      const oc = oa + outDim;
      let o = 0;
      for (; o + 1 < outDim; o += 2) {
        const wa = o * inDim;
        const wc = wa + inDim;
        let s00 = 0;
        let s01 = 0;
        let s10 = 0;
        let s11 = 0;
        for (let i = i0; i < i1; i++) {
          const a = x[xa + i]!;
          const c = x[xc + i]!;
          const u = w[wa + i]!;
          const v = w[wc + i]!;
          s00 += a * u;
          s01 += a * v;
          s10 += c * u;
          s11 += c * v;
        }
        out[oa + o]! += s00;
        out[oa + o + 1]! += s01;
        out[oc + o]! += s10;
        out[oc + o + 1]! += s11;
      }
      if (o < outDim) {
        const wa = o * inDim;
        let s0 = 0;
        let s1 = 0;
        for (let i = i0; i < i1; i++) {
          const u = w[wa + i]!;
          s0 += x[xa + i]! * u;
          s1 += x[xc + i]! * u;
        }
        out[oa + o]! += s0;
        out[oc + o]! += s1;
      }
    }
    if (r < rows) {
      const xa = r * inDim;
      const oa = r * outDim;
      for (let o = 0; o < outDim; o++) {
        const wa = o * inDim;
        let s = 0;
        for (let i = i0; i < i1; i++) s += x[xa + i]! * w[wa + i]!;
        out[oa + o]! += s;
      }
    }
  }
}

/** In-place softmax of each row of `[rows, k]` after multiplying by `scale`. */
export function softmaxRowsInPlace(z: Float32Array, rows: number, k: number, scale = 1): void {
  for (let r = 0; r < rows; r++) {
    const b = r * k;
    let max = -Infinity;
    for (let j = 0; j < k; j++) {
      const v = z[b + j]! * scale;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let j = 0; j < k; j++) {
      const e = Math.exp(z[b + j]! * scale - max);
      z[b + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < k; j++) z[b + j]! *= inv;
  }
}

/** Σ_j p log(p / q) of one row (0 log 0 = 0; q floored at 1e-12). */
export function klRow(p: Float32Array, pOff: number, q: Float32Array, qOff: number, k: number): number {
  let s = 0;
  for (let j = 0; j < k; j++) {
    const pj = p[pOff + j]!;
    if (pj > 0) s += pj * Math.log(pj / Math.max(q[qOff + j]!, 1e-12));
  }
  return s;
}

/** Mean KL(p ‖ q) over `n` rows of `[n, k]`. */
export function meanKL(p: Float32Array, q: Float32Array, n: number, k: number): number {
  let s = 0;
  for (let r = 0; r < n; r++) s += klRow(p, r * k, q, r * k, k);
  return n > 0 ? s / n : 0;
}

/** Fraction of rows where the argmax of `a` equals that of `b` (both `[n, k]`). */
export function argmaxAgreement(a: Float32Array, b: Float32Array, n: number, k: number): number {
  let same = 0;
  for (let r = 0; r < n; r++) if (argmaxAt(a, r, k) === argmaxAt(b, r, k)) same++;
  return n > 0 ? same / n : 1;
}

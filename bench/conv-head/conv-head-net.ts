// The conv head's network on a SIMD kernel workspace (wasm-kernels.ts): im2col of a batch of frozen maps, conv GEMM,
// ReLU, pooling, dense layers, and the backward pass into every parameter. Training and prediction: conv-head.ts.
import type { DenseLayer } from '../../src/graph/head-spec.js';
import { headFeaturesInto } from '../../src/calibrate/pool.js';
import { foldStandardization } from '../../src/calibrate/train-head.js';
import { createRng } from '../../src/calibrate/rng.js';
import { createKernelMemory, type KernelMemory } from '../../src/calibrate/wasm-kernels.js';
import {
  convFeatureDim,
  convOutSize,
  pooledFeatureDim,
  round,
  type ConvHead,
  type ConvHeadShape,
} from './conv-head-shape.js';

/**
 * The network on a kernel workspace: parameters (weights then biases, each block contiguous for AdamW), the
 * forward pass of a batch of maps and its backward pass. Standardisation: each input channel is divided by its RMS
 * (no shift, so zero padding stays exact); it is folded into the conv weights on export.
 */
export class ConvNet {
  readonly km: KernelMemory;
  readonly Ho: number;
  readonly Wo: number;
  readonly P: number;
  readonly K: number;
  readonly Kp: number;
  /** Pooled raw features, conv features, and the padded width of the dense input. */
  readonly E: number;
  readonly Dc: number;
  readonly D: number;
  readonly hp: number;
  readonly ks: number;
  readonly Bp: number;
  // offsets
  readonly wc: number;
  readonly w1: number;
  readonly w2: number;
  readonly nW: number;
  readonly bc: number;
  readonly b1: number;
  readonly b2: number;
  readonly nB: number;
  readonly gW: number;
  readonly gB: number;
  readonly mW: number;
  readonly vW: number;
  readonly mB: number;
  readonly vB: number;
  private readonly col: number;
  private readonly y: number;
  private readonly feat: number;
  private readonly act: number;
  readonly z: number;
  readonly gz: number;
  private readonly gAct: number;
  private readonly gFeat: number;
  private readonly gy: number;
  private readonly wt: number;
  private readonly argmax: Int32Array;
  /** Average-grid cell of each conv output position, and positions per cell. */
  private readonly cellOf: Int32Array;
  private readonly cellSize: number;
  private readonly A2: number;
  private readonly map: Float32Array;
  private readonly pooledBuf: Float32Array;

  constructor(
    readonly s: ConvHeadShape,
    readonly batch: number,
    readonly invScale: Float32Array,
    /** Standardisation of the pooled raw features (identity when the weights already fold it). */
    readonly pooledNorm: { readonly mean: Float32Array; readonly invStd: Float32Array },
    kernels: 'auto' | 'js',
  ) {
    const [ho, wo] = convOutSize(s);
    this.Ho = ho;
    this.Wo = wo;
    this.P = ho * wo;
    this.K = s.inChannels * 9;
    this.Kp = round(this.K, 4);
    this.E = pooledFeatureDim(s);
    this.Dc = convFeatureDim(s);
    this.D = round(this.E + this.Dc, 8);
    this.pooledBuf = new Float32Array(Math.max(this.E, 1));
    this.hp = s.hidden > 0 ? round(s.hidden, 8) : 0;
    this.ks = round(s.classes, 8);
    this.Bp = round(batch, 4);
    const C = s.outChannels;
    const n1 = this.hp > 0 ? this.hp : this.ks;
    let top = 0;
    const take = (floats: number): number => {
      const at = top;
      top += round(Math.max(floats, 1), 4);
      return at;
    };
    this.wc = take(this.Kp * C);
    this.w1 = take(this.D * n1);
    this.w2 = take(this.hp * this.ks);
    this.nW = take(0) - this.wc;
    this.bc = take(C);
    this.b1 = take(n1);
    this.b2 = take(this.ks);
    this.nB = take(0) - this.bc;
    this.gW = take(this.nW);
    this.gB = take(this.nB);
    this.mW = take(this.nW);
    this.vW = take(this.nW);
    this.mB = take(this.nB);
    this.vB = take(this.nB);
    this.col = take(this.Bp * this.P * this.Kp);
    this.y = take(this.Bp * this.P * C);
    this.feat = take(this.Bp * this.D);
    this.act = take(this.Bp * Math.max(this.hp, 1));
    this.z = take(this.Bp * this.ks);
    this.gz = take(this.Bp * this.ks);
    this.gAct = take(this.Bp * Math.max(this.hp, 1));
    this.gFeat = take(this.Bp * this.D);
    this.gy = take(this.Bp * this.P * C);
    this.wt = take(Math.max(n1 * this.D, this.ks * this.hp));
    this.argmax = new Int32Array(this.Bp * C * s.maxGrid * s.maxGrid);
    const a = s.avgGrid ?? 1;
    this.A2 = a * a;
    this.cellSize = this.P / this.A2;
    this.cellOf = Int32Array.from({ length: this.P }, (_, p) => {
      const oy = Math.floor(p / wo);
      const ox = p % wo;
      return Math.floor((oy * a) / ho) * a + Math.floor((ox * a) / wo);
    });
    this.map = new Float32Array(s.inChannels * s.inHeight * s.inWidth);
    this.km = createKernelMemory(kernels);
    this.km.reserve(top);
    this.km.f32.fill(0, 0, top);
  }

  /** He init of every weight (biases 0). */
  init(seed: number): void {
    const f = this.km.f32;
    const rng = createRng(seed);
    const { s, K, hp, ks } = this;
    const C = s.outChannels;
    for (let i = 0; i < K; i++) for (let o = 0; o < C; o++) f[this.wc + i * C + o] = rng.normal() * Math.sqrt(2 / K);
    const n1 = hp > 0 ? hp : ks;
    const out1 = hp > 0 ? s.hidden : s.classes;
    const std1 = Math.sqrt((hp > 0 ? 2 : 1) / (this.E + this.Dc));
    for (let i = 0; i < this.E + this.Dc; i++)
      for (let o = 0; o < out1; o++) f[this.w1 + i * n1 + o] = rng.normal() * std1;
    if (hp > 0)
      for (let u = 0; u < s.hidden; u++)
        for (let o = 0; o < s.classes; o++) f[this.w2 + u * ks + o] = rng.normal() * Math.sqrt(1 / s.hidden);
  }

  /** im2col of rows `rows[s0, s0+bs)` of `x` into col (padding images' rows zero). */
  gather(read: (row: number, out: Float32Array, at: number) => void, rows: Int32Array, s0: number, bs: number): void {
    const f = this.km.f32;
    const { s, P, Kp, Ho, Wo, map, invScale } = this;
    const { inChannels: C, inHeight: H, inWidth: W, stride } = s;
    const HW = H * W;
    const { E, D, pooledBuf } = this;
    const pg = s.pooled;
    f.fill(0, this.feat, this.feat + this.Bp * D);
    for (let b = 0; b < bs; b++) {
      read(rows[s0 + b]!, map, 0);
      if (pg) {
        headFeaturesInto(map, 1, C, H, W, pg.grid, pg.maxGrid, pooledBuf, 0);
        const { mean, invStd } = this.pooledNorm;
        for (let i = 0; i < E; i++) f[this.feat + b * D + i] = (pooledBuf[i]! - mean[i]!) * invStd[i]!;
      }
      for (let c = 0; c < C; c++) {
        const sc = invScale[c]!;
        for (let i = c * HW, e = i + HW; i < e; i++) map[i]! *= sc;
      }
      let at = this.col + b * P * Kp;
      for (let oy = 0; oy < Ho; oy++) {
        for (let ox = 0; ox < Wo; ox++, at += Kp) {
          let j = at;
          for (let c = 0; c < C; c++) {
            const mc = c * HW;
            for (let ky = 0; ky < 3; ky++) {
              const iy = oy * stride + ky - 1;
              const inY = iy >= 0 && iy < H;
              for (let kx = 0; kx < 3; kx++, j++) {
                const ix = ox * stride + kx - 1;
                f[j] = inY && ix >= 0 && ix < W ? map[mc + iy * W + ix]! : 0;
              }
            }
          }
        }
      }
    }
    f.fill(0, this.col + bs * P * Kp, this.col + this.Bp * P * Kp);
  }

  /** Logits of the gathered batch into z (`[Bp, ks]`). */
  forward(): void {
    const { km, s, P, Kp, D, hp, ks, Bp } = this;
    const C = s.outChannels;
    const g = s.maxGrid;
    let f = km.f32;
    const rowsY = Bp * P;
    for (let r = 0; r < rowsY; r++) f.copyWithin(this.y + r * C, this.bc, this.bc + C);
    km.gemm(rowsY, C, Kp, this.col, Kp, this.wc, C, this.y, C);
    f = km.f32;
    // ReLU, then global average and g×g max per image and channel (argmax kept for the backward pass).
    const qh = g > 0 ? this.Ho / g : 1;
    const qw = g > 0 ? this.Wo / g : 1;
    for (let b = 0; b < Bp; b++) {
      const yb = this.y + b * P * C;
      const fb = this.feat + b * D + this.E;
      for (let i = yb, e = yb + P * C; i < e; i++) if (!(f[i]! > 0)) f[i] = 0;
      const { A2, cellOf, cellSize } = this;
      // feat rows were zeroed by gather: accumulate the cell sums
      for (let p = 0; p < P; p++) {
        const at = fb + cellOf[p]!;
        for (let o = 0; o < C; o++) f[at + o * A2]! += f[yb + p * C + o]! / cellSize;
      }
      for (let o = 0; o < C && g > 0; o++) {
        for (let qy = 0; qy < g; qy++) {
          for (let qx = 0; qx < g; qx++) {
            let best = -1;
            let bestP = qy * qh * this.Wo + qx * qw;
            for (let yy = qy * qh; yy < (qy + 1) * qh; yy++) {
              for (let xx = qx * qw; xx < (qx + 1) * qw; xx++) {
                const p = yy * this.Wo + xx;
                const v = f[yb + p * C + o]!;
                if (v > best) {
                  best = v;
                  bestP = p;
                }
              }
            }
            const q = (o * g + qy) * g + qx;
            f[fb + C * A2 + q] = best;
            this.argmax[b * C * g * g + q] = bestP;
          }
        }
      }
    }
    if (hp > 0) {
      for (let r = 0; r < Bp; r++) f.copyWithin(this.act + r * hp, this.b1, this.b1 + hp);
      km.gemm(Bp, hp, D, this.feat, D, this.w1, hp, this.act, hp);
      f = km.f32;
      for (let i = this.act, e = this.act + Bp * hp; i < e; i++) if (!(f[i]! > 0)) f[i] = 0;
      for (let r = 0; r < Bp; r++) f.copyWithin(this.z + r * ks, this.b2, this.b2 + ks);
      km.gemm(Bp, ks, hp, this.act, hp, this.w2, ks, this.z, ks);
    } else {
      for (let r = 0; r < Bp; r++) f.copyWithin(this.z + r * ks, this.b1, this.b1 + ks);
      km.gemm(Bp, ks, D, this.feat, D, this.w1, ks, this.z, ks);
    }
  }

  /** Gradients of all parameters into gW / gB, from dL/dz in gz (zero on padding rows and columns). */
  backward(): void {
    const { km, s, P, Kp, D, hp, ks, Bp } = this;
    const C = s.outChannels;
    const g = s.maxGrid;
    let f = km.f32;
    f.fill(0, this.gW, this.gW + this.nW);
    f.fill(0, this.gB, this.gB + this.nB);
    const gW1 = this.gW + (this.w1 - this.wc);
    const gW2 = this.gW + (this.w2 - this.wc);
    const gBc = this.gB;
    const gB1 = this.gB + (this.b1 - this.bc);
    const gB2 = this.gB + (this.b2 - this.bc);
    f.fill(0, this.gFeat, this.gFeat + Bp * D);
    const wt = this.wt;
    if (hp > 0) {
      for (let r = 0; r < Bp; r++) for (let j = 0; j < ks; j++) f[gB2 + j]! += f[this.gz + r * ks + j]!;
      km.gemmTN(hp, ks, Bp, this.act, hp, this.gz, ks, gW2, ks);
      f = km.f32;
      for (let u = 0; u < hp; u++) for (let o = 0; o < ks; o++) f[wt + o * hp + u] = f[this.w2 + u * ks + o]!;
      f.fill(0, this.gAct, this.gAct + Bp * hp);
      km.gemm(Bp, hp, ks, this.gz, ks, wt, hp, this.gAct, hp);
      f = km.f32;
      for (let i = 0; i < Bp * hp; i++) {
        if (!(f[this.act + i]! > 0)) f[this.gAct + i] = 0;
        else f[gB1 + (i % hp)]! += f[this.gAct + i]!;
      }
      km.gemmTN(D, hp, Bp, this.feat, D, this.gAct, hp, gW1, hp);
      f = km.f32;
      for (let i = 0; i < D; i++) for (let u = 0; u < hp; u++) f[wt + u * D + i] = f[this.w1 + i * hp + u]!;
      km.gemm(Bp, D, hp, this.gAct, hp, wt, D, this.gFeat, D);
    } else {
      for (let r = 0; r < Bp; r++) for (let j = 0; j < ks; j++) f[gB1 + j]! += f[this.gz + r * ks + j]!;
      km.gemmTN(D, ks, Bp, this.feat, D, this.gz, ks, gW1, ks);
      f = km.f32;
      for (let i = 0; i < D; i++) for (let o = 0; o < ks; o++) f[wt + o * D + i] = f[this.w1 + i * ks + o]!;
      km.gemm(Bp, D, ks, this.gz, ks, wt, D, this.gFeat, D);
    }
    f = km.f32;
    // Through the pooling and the ReLU into dL/dy.
    for (let b = 0; b < Bp; b++) {
      const yb = this.y + b * P * C;
      const gyb = this.gy + b * P * C;
      const fb = this.gFeat + b * D + this.E;
      const { A2, cellOf, cellSize } = this;
      for (let p = 0; p < P; p++) {
        const at = fb + cellOf[p]!;
        for (let o = 0; o < C; o++) f[gyb + p * C + o] = f[at + o * A2]! / cellSize;
      }
      for (let q = 0; q < C * g * g; q++) {
        const o = Math.floor(q / (g * g));
        f[gyb + this.argmax[b * C * g * g + q]! * C + o]! += f[fb + C * A2 + q]!;
      }
      for (let i = 0; i < P * C; i++) {
        if (!(f[yb + i]! > 0)) f[gyb + i] = 0;
        else f[gBc + (i % C)]! += f[gyb + i]!;
      }
    }
    km.gemmTN(Kp, C, Bp * P, this.col, Kp, this.gy, C, this.gW, C);
  }

  /** The head as plain data: the conv folded with the input scaling, `[out, C, 3, 3]`. */
  export(): ConvHead {
    const f = this.km.f32;
    const { s, hp, ks } = this;
    const C = s.outChannels;
    const convWeight = new Float32Array(C * s.inChannels * 9);
    for (let o = 0; o < C; o++)
      for (let i = 0; i < this.K; i++)
        convWeight[o * this.K + i] = f[this.wc + i * C + o]! * this.invScale[Math.floor(i / 9)]!;
    const convBias = f.slice(this.bc, this.bc + C);
    const dense = (w: number, b: number, din: number, dout: number, ld: number): DenseLayer => {
      const weight = new Float32Array(dout * din);
      for (let o = 0; o < dout; o++) for (let i = 0; i < din; i++) weight[o * din + i] = f[w + i * ld + o]!;
      return { in: din, out: dout, weight, bias: f.slice(b, b + dout) };
    };
    const din = this.E + this.Dc;
    const first = dense(this.w1, this.b1, din, hp > 0 ? s.hidden : s.classes, hp > 0 ? hp : ks);
    const mean = new Float32Array(din);
    const invStd = new Float32Array(din).fill(1);
    mean.set(this.pooledNorm.mean.subarray(0, this.E));
    invStd.set(this.pooledNorm.invStd.subarray(0, this.E));
    const layers = [foldStandardization(first, mean, invStd)];
    if (hp > 0) layers.push(dense(this.w2, this.b2, s.hidden, s.classes, ks));
    return { shape: s, convWeight, convBias, layers };
  }

  /** Loads a head's weights (raw-map conv weights are divided by the input scaling again). */
  load(h: ConvHead): void {
    const f = this.km.f32;
    const { s, hp, ks } = this;
    const C = s.outChannels;
    for (let o = 0; o < C; o++)
      for (let i = 0; i < this.K; i++)
        f[this.wc + i * C + o] = h.convWeight[o * this.K + i]! / this.invScale[Math.floor(i / 9)]!;
    f.set(h.convBias, this.bc);
    const put = (L: DenseLayer, w: number, b: number, ld: number): void => {
      for (let o = 0; o < L.out; o++) for (let i = 0; i < L.in; i++) f[w + i * ld + o] = L.weight[o * L.in + i]!;
      f.set(L.bias, b);
    };
    put(h.layers[0]!, this.w1, this.b1, hp > 0 ? hp : ks);
    if (hp > 0) put(h.layers[1]!, this.w2, this.b2, ks);
  }
}

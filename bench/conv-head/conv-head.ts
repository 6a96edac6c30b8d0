// Exit heads with a learned convolution before pooling (Zero Time Waste / SDN style): 3×3 conv (padding 1, stride s),
// ReLU, average (global or a×a grid) + max over a g×g grid, optionally beside the raw map's pooled features (as a pool
// head reads them), then linear or one hidden layer → classes; trained by distillation
// (KL to the backbone's softmax) with AdamW on full cut maps. The map is frozen, so the only input-side work is
// im2col of each mini-batch; every product is a SIMD GEMM of wasm-kernels.ts. Same code in Node and in a worker.
// Study code for now (bench/conv-head-study.ts): prepare does not use it and no bundle format carries it.
import { headFeaturesInto } from '../../src/calibrate/pool.js';
import { createRng, shuffleInPlace } from '../../src/calibrate/rng.js';
import { rowReader, type FeatureRows } from '../../src/calibrate/feature-store.js';
import { ConvNet } from './conv-head-net.js';
import {
  bad,
  checkShape,
  pooledFeatureDim,
  type ConvHead,
  type ConvHeadOptions,
  type ConvHeadReport,
  type ConvHeadShape,
} from './conv-head-shape.js';

export * from './conv-head-shape.js';

/** Per-channel 1/RMS of the maps over (up to 512 of) `rows`; 1 for a channel that is all zero. */
function channelScale(x: FeatureRows, s: ConvHeadShape, rows: Int32Array): Float32Array {
  const { inChannels: C, inHeight: H, inWidth: W } = s;
  const d = C * H * W;
  const read = rowReader(x, d, new Float32Array(d), new Float32Array(d).fill(1));
  const buf = new Float32Array(d);
  const ss = new Float64Array(C);
  const step = Math.max(1, Math.floor(rows.length / 512));
  let m = 0;
  for (let r = 0; r < rows.length; r += step, m++) {
    read(rows[r]!, buf, 0);
    for (let c = 0; c < C; c++) for (let i = c * H * W; i < (c + 1) * H * W; i++) ss[c]! += buf[i]! * buf[i]!;
  }
  return Float32Array.from(ss, (v) => {
    const rms = Math.sqrt(v / (m * H * W));
    return rms > 1e-12 ? 1 / rms : 1;
  });
}

/** No standardisation of the pooled raw features (weights that fold it in). */
function identityNorm(s: ConvHeadShape): { mean: Float32Array; invStd: Float32Array } {
  const e = Math.max(1, pooledFeatureDim(s));
  return { mean: new Float32Array(e), invStd: new Float32Array(e).fill(1) };
}

/** Mean and 1/std of the pooled raw features over (up to 2,048 of) `rows`; identity without `pooled`. */
function pooledMoments(
  x: FeatureRows,
  s: ConvHeadShape,
  rows: Int32Array,
): { mean: Float32Array; invStd: Float32Array } {
  const pg = s.pooled;
  const e = pooledFeatureDim(s);
  if (!pg || e === 0) return identityNorm(s);
  const { inChannels: C, inHeight: H, inWidth: W } = s;
  const d = C * H * W;
  const read = rowReader(x, d, new Float32Array(d), new Float32Array(d).fill(1));
  const buf = new Float32Array(d);
  const feat = new Float32Array(e);
  const sum = new Float64Array(e);
  const sq = new Float64Array(e);
  const step = Math.max(1, Math.floor(rows.length / 2048));
  let m = 0;
  for (let r = 0; r < rows.length; r += step, m++) {
    read(rows[r]!, buf, 0);
    headFeaturesInto(buf, 1, C, H, W, pg.grid, pg.maxGrid, feat, 0);
    for (let i = 0; i < e; i++) {
      sum[i]! += feat[i]!;
      sq[i]! += feat[i]! * feat[i]!;
    }
  }
  const mean = Float32Array.from(sum, (v) => v / m);
  const invStd = Float32Array.from(sq, (v, i) => {
    const sd = Math.sqrt(Math.max(0, v / m - mean[i]! ** 2));
    return sd > 1e-6 ? 1 / sd : 1;
  });
  return { mean, invStd };
}

/** Softmax of logits row `r` (first k of `ks` columns) into q; returns KL(p_row ‖ q). */
function softmaxKL(f: Float32Array, z: number, k: number, p: Float32Array, pOff: number, q: Float64Array): number {
  let max = -Infinity;
  for (let j = 0; j < k; j++) max = Math.max(max, f[z + j]!);
  let sum = 0;
  for (let j = 0; j < k; j++) sum += q[j] = Math.exp(f[z + j]! - max);
  let kl = 0;
  for (let j = 0; j < k; j++) {
    q[j]! /= sum;
    const pj = p[pOff + j]!;
    if (pj > 0) kl += pj * (Math.log(pj) - Math.log(Math.max(q[j]!, 1e-30)));
  }
  return kl;
}

function checkData(x: FeatureRows, p: Float32Array, s: ConvHeadShape, rows: Int32Array): void {
  const d = s.inChannels * s.inHeight * s.inWidth;
  const n = x instanceof Float32Array ? x.length / d : x.n;
  if (!(x instanceof Float32Array) && x.d !== d) bad(`maps have ${x.d} values per row, the head reads ${d}`);
  for (const r of rows) if (!(r >= 0 && r < n && (r + 1) * s.classes <= p.length)) bad(`row ${r} outside the data`);
}

/**
 * Trains a conv head on full maps `x` (rows of `C·H·W` values, NCHW; float32 or packed) to imitate the teacher
 * `p [·, classes]`: rows `train` are fitted, rows `heldOut` (may be empty) drive early stopping, and the best
 * epoch's weights are kept. AdamW, cosine-decayed rate, seeded He init and shuffling.
 */
export function trainConvHead(
  x: FeatureRows,
  p: Float32Array,
  shape: ConvHeadShape,
  train: Int32Array,
  heldOut: Int32Array,
  options: ConvHeadOptions = {},
): { head: ConvHead; report: ConvHeadReport } {
  checkShape(shape);
  checkData(x, p, shape, train);
  checkData(x, p, shape, heldOut);
  if (train.length < 1) bad('conv head training needs at least one row');
  const t0 = Date.now();
  const epochs = options.epochs ?? 8;
  const batch = Math.min(options.batchSize ?? 64, train.length);
  const lr0 = options.learningRate ?? 0.003;
  const wd = options.weightDecay ?? 1e-4;
  const tol = options.tolerance ?? 0.001;
  const patience = options.patience ?? 2;
  const seed = options.seed ?? 0;
  if (!(Number.isInteger(epochs) && epochs >= 1 && lr0 > 0 && wd >= 0 && tol >= 0))
    bad('conv head: epochs must be a positive integer, learningRate > 0, weightDecay and tolerance >= 0');
  const k = shape.classes;
  const d = shape.inChannels * shape.inHeight * shape.inWidth;
  const net = new ConvNet(
    shape,
    batch,
    channelScale(x, shape, train),
    pooledMoments(x, shape, train),
    options.kernels ?? 'auto',
  );
  net.init(seed);
  const read = rowReader(x, d, new Float32Array(d), new Float32Array(d).fill(1));
  const q = new Float64Array(k);
  const perm = train.slice();
  const rng = createRng(seed + 1);
  const stepsPerEpoch = Math.ceil(train.length / batch);
  const total = epochs * stepsPerEpoch;
  let step = 0;
  const lossHistory: number[] = [];
  const heldOutHistory: number[] = [];
  let best: { loss: number; epoch: number; head: ConvHead | null } = { loss: Infinity, epoch: 0, head: null };
  let stale = 0;
  for (let ep = 0; ep < epochs; ep++) {
    shuffleInPlace(perm, rng);
    let lossSum = 0;
    for (let s0 = 0; s0 < perm.length; s0 += batch) {
      const bs = Math.min(batch, perm.length - s0);
      net.gather(read, perm, s0, bs);
      net.forward();
      const f = net.km.f32;
      f.fill(0, net.gz, net.gz + net.Bp * net.ks);
      for (let b = 0; b < bs; b++) {
        const row = perm[s0 + b]!;
        lossSum += softmaxKL(f, net.z + b * net.ks, k, p, row * k, q);
        for (let j = 0; j < k; j++) f[net.gz + b * net.ks + j] = (q[j]! - p[row * k + j]!) / bs;
      }
      net.backward();
      step++;
      const lr = lr0 * 0.5 * (1 + Math.cos((Math.PI * (step - 1)) / total));
      const hyper = { lr, b1: 0.9, b2: 0.999, c1: 1 / (1 - 0.9 ** step), c2: 1 / (1 - 0.999 ** step), eps: 1e-8 };
      net.km.adamw(net.wc, net.gW, net.mW, net.vW, net.nW, { ...hyper, decay: lr * wd });
      net.km.adamw(net.bc, net.gB, net.mB, net.vB, net.nB, { ...hyper, decay: 0 });
    }
    lossHistory.push(lossSum / perm.length);
    const held = heldOut.length > 0 ? meanKLOn(net, read, p, heldOut, q) : lossHistory[ep]!;
    if (heldOut.length > 0) heldOutHistory.push(held);
    options.onEpoch?.({ epoch: ep + 1, trainKL: lossHistory[ep]!, heldOutKL: held, ms: Date.now() - t0 });
    const enough = !(held > best.loss * (1 - tol)) || !Number.isFinite(best.loss);
    if (held < best.loss) best = { loss: held, epoch: ep + 1, head: heldOut.length > 0 ? net.export() : null };
    stale = enough ? 0 : stale + 1;
    if (heldOut.length > 0 && tol > 0 && stale >= patience) break;
  }
  const head = best.head ?? net.export();
  const report: ConvHeadReport = {
    lossHistory,
    heldOutHistory,
    bestEpoch: best.head ? best.epoch : lossHistory.length,
    ms: Date.now() - t0,
    backend: net.km.backend,
  };
  return { head, report };
}

function meanKLOn(
  net: ConvNet,
  read: (row: number, out: Float32Array, at: number) => void,
  p: Float32Array,
  rows: Int32Array,
  q: Float64Array,
): number {
  let sum = 0;
  const k = net.s.classes;
  for (let s0 = 0; s0 < rows.length; s0 += net.batch) {
    const bs = Math.min(net.batch, rows.length - s0);
    net.gather(read, rows, s0, bs);
    net.forward();
    const f = net.km.f32;
    for (let b = 0; b < bs; b++) sum += softmaxKL(f, net.z + b * net.ks, k, p, rows[s0 + b]! * k, q);
  }
  return sum / rows.length;
}

/** Head probabilities `[rows.length, classes]` for rows `rows` of maps `x` (null: rows 0..count-1). */
export function predictConvHead(
  head: ConvHead,
  x: FeatureRows,
  rows: Int32Array | null,
  count: number,
  options: { readonly batchSize?: number; readonly kernels?: 'auto' | 'js' } = {},
): Float32Array {
  const s = head.shape;
  checkShape(s);
  const idx = rows ?? Int32Array.from({ length: count }, (_, i) => i);
  const k = s.classes;
  const d = s.inChannels * s.inHeight * s.inWidth;
  const batch = Math.max(1, Math.min(options.batchSize ?? 64, idx.length));
  const net = new ConvNet(s, batch, new Float32Array(s.inChannels).fill(1), identityNorm(s), options.kernels ?? 'auto');
  net.load(head);
  const read = rowReader(x, d, new Float32Array(d), new Float32Array(d).fill(1));
  const out = new Float32Array(idx.length * k);
  const zeros = new Float32Array(k);
  const q = new Float64Array(k);
  for (let s0 = 0; s0 < idx.length; s0 += net.batch) {
    const bs = Math.min(net.batch, idx.length - s0);
    net.gather(read, idx, s0, bs);
    net.forward();
    const f = net.km.f32;
    for (let b = 0; b < bs; b++) {
      softmaxKL(f, net.z + b * net.ks, k, zeros, 0, q);
      for (let j = 0; j < k; j++) out[(s0 + b) * k + j] = q[j]!;
    }
  }
  return out;
}

/** For tests: the network's loss and gradients on one batch, exposed through plain arrays. */
export function convHeadLossAndGrad(
  head: ConvHead,
  maps: Float32Array,
  p: Float32Array,
  n: number,
): { loss: number; convWeightGrad: Float32Array; convBiasGrad: Float32Array } {
  const s = head.shape;
  checkShape(s);
  const k = s.classes;
  const net = new ConvNet(s, n, new Float32Array(s.inChannels).fill(1), identityNorm(s), 'js');
  net.load(head);
  const d = s.inChannels * s.inHeight * s.inWidth;
  const read = rowReader(maps, d, new Float32Array(d), new Float32Array(d).fill(1));
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  net.gather(read, idx, 0, n);
  net.forward();
  const f = net.km.f32;
  const q = new Float64Array(k);
  let loss = 0;
  f.fill(0, net.gz, net.gz + net.Bp * net.ks);
  for (let b = 0; b < n; b++) {
    loss += softmaxKL(f, net.z + b * net.ks, k, p, b * k, q);
    for (let j = 0; j < k; j++) f[net.gz + b * net.ks + j] = (q[j]! - p[b * k + j]!) / n;
  }
  net.backward();
  const g = net.km.f32;
  const C = s.outChannels;
  const convWeightGrad = new Float32Array(C * net.K);
  for (let o = 0; o < C; o++) for (let i = 0; i < net.K; i++) convWeightGrad[o * net.K + i] = g[net.gW + i * C + o]!;
  return { loss: loss / n, convWeightGrad, convBiasGrad: g.slice(net.gB, net.gB + C) };
}

// Exit-head training by distillation: minimise KL(teacher ‖ head) with Adam on standardised features,
// then fold the standardisation into the first layer so the head reads raw pooled features.
import { SelfxitError } from '../errors.js';
import { headInputSize, type DenseLayer, type HeadSpec } from '../graph/head-spec.js';
import type { HeadKind } from '../bundle/manifest.js';
import { createRng, shuffleInPlace, type Rng } from './rng.js';
import { denseBackwardInput, denseBackwardParams, denseForward, klRow, softmaxRowsInPlace } from './linalg.js';

/** Options of {@link trainHead}. */
export interface TrainHeadOptions {
  /** Head architecture. Default 'pool-linear'. */
  readonly kind?: HeadKind;
  /** Hidden width: pool-mlp default 64, paper default 512 (ignored by pool-linear). */
  readonly hidden?: number;
  /** Maximum epochs. Default: DEFAULT_EPOCHS[kind] (4), raised so that training takes at least DEFAULT_MIN_STEPS[kind] Adam steps on small sets, at most 50. */
  readonly epochs?: number;
  /** Mini-batch size. Default 128. */
  readonly batchSize?: number;
  /** Adam learning rate (cosine-decayed to 0 over `epochs`). Default see DEFAULT_LR. */
  readonly learningRate?: number;
  /** Decoupled weight decay on weights (not biases). Default 1e-4. */
  readonly weightDecay?: number;
  /** Distillation temperature T: both sides are softened by T and the gradient scaled by T². Default 1. */
  readonly temperature?: number;
  /** Logits are multiplied by this before the softmax. Default 1 (paper head: 2, i.e. divided by 0.5). */
  readonly logitScale?: number;
  /** Seed for init and shuffling. Default 0. */
  readonly seed?: number;
  /** Stop early when the epoch's mean training KL improves by less than this (relative). Default 0 (never). */
  readonly tolerance?: number;
}

/** A trained head: dense layers (ReLU between them) reading raw features, and the logit scale. */
export interface TrainedHead {
  readonly layers: readonly DenseLayer[];
  readonly logitScale: number;
}

/** Training log of one fit. */
export interface TrainReport {
  readonly epochs: number;
  /** Mean KL(teacher ‖ head) per epoch on the training samples (at T = 1 when T = 1), measured during the epoch. */
  readonly lossHistory: readonly number[];
  readonly ms: number;
}

export interface TrainHeadResult extends TrainedHead {
  readonly report: TrainReport;
}

/** Default epochs per head kind (see the report for how they were chosen). */
export const DEFAULT_EPOCHS: Readonly<Record<HeadKind, number>> = { 'pool-linear': 4, 'pool-mlp': 4, paper: 4 };
/**
 * Default minimum number of Adam steps per head kind (small sample sets get more epochs). The paper head's first
 * layer reads the whole flattened map (millions of weights), so its budget is smaller: 100 steps.
 */
export const DEFAULT_MIN_STEPS: Readonly<Record<HeadKind, number>> = {
  'pool-linear': 250,
  'pool-mlp': 250,
  paper: 100,
};
/** Default Adam learning rate per head kind. */
export const DEFAULT_LEARNING_RATE: Readonly<Record<HeadKind, number>> = {
  'pool-linear': 0.01,
  'pool-mlp': 0.01,
  paper: 0.001,
};
/** Default hidden width per head kind (0: no hidden layer). */
export const DEFAULT_HIDDEN: Readonly<Record<HeadKind, number>> = { 'pool-linear': 0, 'pool-mlp': 64, paper: 512 };

function bad(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_ARGUMENT', msg, details);
}

function checkDims(x: Float32Array, p: Float32Array, n: number, d: number, k: number): void {
  if (!(Number.isInteger(n) && n >= 1 && Number.isInteger(d) && d >= 1 && Number.isInteger(k) && k >= 2)) {
    bad(`head training needs n >= 1, d >= 1, k >= 2 (got n=${n}, d=${d}, k=${k})`, { n, d, k });
  }
  if (x.length < n * d) bad(`features hold ${x.length} values, expected n*d = ${n * d}`, { n, d });
  if (p.length < n * k) bad(`teacher probabilities hold ${p.length} values, expected n*k = ${n * k}`, { n, k });
}

interface Param {
  readonly w: Float32Array;
  readonly g: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  readonly decay: boolean;
}

function param(size: number, decay: boolean): Param {
  return {
    w: new Float32Array(size),
    g: new Float32Array(size),
    m: new Float32Array(size),
    v: new Float32Array(size),
    decay,
  };
}

function initNormal(w: Float32Array, std: number, rng: Rng): void {
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() * std;
}

/** Softened copy `softmax(log p / T)` of teacher rows. */
function soften(p: Float32Array, n: number, k: number, t: number): Float32Array {
  const out = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    const b = r * k;
    let max = -Infinity;
    for (let j = 0; j < k; j++) {
      const v = Math.log(Math.max(p[b + j]!, 1e-30)) / t;
      out[b + j] = v;
      if (v > max) max = v;
    }
    let s = 0;
    for (let j = 0; j < k; j++) {
      const e = Math.exp(out[b + j]! - max);
      out[b + j] = e;
      s += e;
    }
    for (let j = 0; j < k; j++) out[b + j]! /= s;
  }
  return out;
}

/**
 * Trains a head on the samples `rows` (indices into `x`/`p`; null = all `n`). Internal entry shared by
 * {@link trainHead} and cross-fitting, so folds never copy the feature matrix.
 */
export function trainHeadOnRows(
  x: Float32Array,
  p: Float32Array,
  n: number,
  d: number,
  k: number,
  rows: Int32Array | null,
  options: TrainHeadOptions = {},
): TrainHeadResult {
  checkDims(x, p, n, d, k);
  const t0 = Date.now();
  const kind: HeadKind = options.kind ?? 'pool-linear';
  if (kind !== 'pool-linear' && kind !== 'pool-mlp' && kind !== 'paper') bad(`unknown head kind ${String(kind)}`);
  const hidden = kind === 'pool-linear' ? 0 : (options.hidden ?? DEFAULT_HIDDEN[kind]);
  const batch = options.batchSize ?? 128;
  const lr0 = options.learningRate ?? DEFAULT_LEARNING_RATE[kind];
  const wd = options.weightDecay ?? 1e-4;
  const temp = options.temperature ?? 1;
  const scale = options.logitScale ?? (kind === 'paper' ? 2 : 1);
  const tol = options.tolerance ?? 0;
  if (!(Number.isInteger(hidden) && hidden >= 0 && (kind === 'pool-linear' || hidden >= 1)))
    bad(`hidden width must be a positive integer, got ${hidden}`);
  if (!(Number.isInteger(batch) && batch >= 1)) bad(`batchSize must be a positive integer, got ${batch}`);
  if (!(lr0 > 0 && wd >= 0 && temp > 0 && scale > 0 && tol >= 0))
    bad('learningRate, temperature, logitScale must be > 0; weightDecay, tolerance >= 0', {
      lr0,
      wd,
      temp,
      scale,
      tol,
    });

  const order = rows ? Int32Array.from(rows) : Int32Array.from({ length: n }, (_, i) => i);
  const m = order.length;
  if (m < 1) bad('head training needs at least one sample');
  const epochs =
    options.epochs ??
    Math.min(50, Math.max(DEFAULT_EPOCHS[kind], Math.ceil(DEFAULT_MIN_STEPS[kind] / Math.ceil(m / batch))));
  if (!(Number.isInteger(epochs) && epochs >= 1)) bad(`epochs must be a positive integer, got ${epochs}`);
  for (let r = 0; r < m; r++) if (!(order[r]! >= 0 && order[r]! < n)) bad(`row index ${order[r]} outside [0, ${n})`);

  // Per-feature standardisation on the training rows (two passes, float64).
  const mu = new Float64Array(d);
  const inv = new Float64Array(d);
  for (let r = 0; r < m; r++) {
    const b = order[r]! * d;
    for (let i = 0; i < d; i++) mu[i]! += x[b + i]!;
  }
  for (let i = 0; i < d; i++) mu[i]! /= m;
  for (let r = 0; r < m; r++) {
    const b = order[r]! * d;
    for (let i = 0; i < d; i++) {
      const c = x[b + i]! - mu[i]!;
      inv[i]! += c * c;
    }
  }
  for (let i = 0; i < d; i++) {
    const sd = Math.sqrt(inv[i]! / m);
    inv[i] = sd > 1e-6 * (Math.abs(mu[i]!) + 1e-6) && sd > 1e-12 ? 1 / sd : 1;
  }
  const muF = Float32Array.from(mu);
  const invF = Float32Array.from(inv);

  const rng = createRng(options.seed ?? 0);
  const dims = hidden > 0 ? [d, hidden, k] : [d, k];
  const layers: { W: Param; B: Param; in: number; out: number }[] = [];
  for (let l = 0; l + 1 < dims.length; l++) {
    const fin = dims[l]!;
    const fout = dims[l + 1]!;
    const W = param(fin * fout, true);
    const B = param(fout, false);
    const last = l + 2 === dims.length;
    initNormal(W.w, Math.sqrt((last ? 1 : 2) / fin), rng);
    layers.push({ W, B, in: fin, out: fout });
  }
  const params: Param[] = layers.flatMap((L) => [L.W, L.B]);

  // Standardised training rows and their (softened) teacher rows, packed once so batches are plain copies.
  const xs = new Float32Array(m * d);
  const teacher = new Float32Array(m * k);
  for (let r = 0; r < m; r++) {
    const src = order[r]! * d;
    const dst = r * d;
    for (let i = 0; i < d; i++) xs[dst + i] = (x[src + i]! - muF[i]!) * invF[i]!;
    teacher.set(p.subarray(order[r]! * k, order[r]! * k + k), r * k);
  }
  if (temp !== 1) teacher.set(soften(teacher, m, k, temp));
  const perm = Int32Array.from({ length: m }, (_, i) => i);
  const xb = new Float32Array(batch * d);
  const act = hidden > 0 ? new Float32Array(batch * hidden) : new Float32Array(0);
  const gAct = hidden > 0 ? new Float32Array(batch * hidden) : new Float32Array(0);
  const z = new Float32Array(batch * k);
  const gz = new Float32Array(batch * k);
  const stepsPerEpoch = Math.ceil(m / batch);
  const totalSteps = epochs * stepsPerEpoch;
  const b1 = 0.9;
  const b2 = 0.999;
  let step = 0;
  const lossHistory: number[] = [];
  const sOverT = scale / temp;

  for (let ep = 0; ep < epochs; ep++) {
    shuffleInPlace(perm, rng);
    let lossSum = 0;
    for (let s0 = 0; s0 < m; s0 += batch) {
      const bs = Math.min(batch, m - s0);
      for (let r = 0; r < bs; r++) {
        const src = perm[s0 + r]! * d;
        xb.set(xs.subarray(src, src + d), r * d);
      }
      // Forward.
      const L0 = layers[0]!;
      if (hidden > 0) {
        const L1 = layers[1]!;
        denseForward(xb, bs, d, L0.W.w, L0.B.w, hidden, act);
        for (let i = 0; i < bs * hidden; i++) if (act[i]! < 0) act[i] = 0;
        denseForward(act, bs, hidden, L1.W.w, L1.B.w, k, z);
      } else {
        denseForward(xb, bs, d, L0.W.w, L0.B.w, k, z);
      }
      softmaxRowsInPlace(z, bs, k, sOverT);
      // Loss and dL/dz = scale·T·(q_T − p_T) / bs (the T² gradient scaling of distillation).
      const gscale = (scale * temp) / bs;
      for (let r = 0; r < bs; r++) {
        const tb = perm[s0 + r]! * k;
        lossSum += klRow(teacher, tb, z, r * k, k);
        for (let j = 0; j < k; j++) gz[r * k + j] = (z[r * k + j]! - teacher[tb + j]!) * gscale;
      }
      for (const P of params) P.g.fill(0);
      if (hidden > 0) {
        const L1 = layers[1]!;
        denseBackwardParams(gz, act, bs, hidden, k, L1.W.g, L1.B.g);
        denseBackwardInput(gz, L1.W.w, bs, hidden, k, gAct);
        for (let i = 0; i < bs * hidden; i++) if (act[i]! <= 0) gAct[i] = 0;
        denseBackwardParams(gAct, xb, bs, d, hidden, L0.W.g, L0.B.g);
      } else {
        denseBackwardParams(gz, xb, bs, d, k, L0.W.g, L0.B.g);
      }
      // AdamW with cosine learning-rate decay.
      step++;
      const lr = lr0 * 0.5 * (1 + Math.cos((Math.PI * (step - 1)) / totalSteps));
      const c1 = 1 / (1 - Math.pow(b1, step));
      const c2 = 1 / (1 - Math.pow(b2, step));
      for (const P of params) {
        const { w, g, m: mm, v } = P;
        const decay = P.decay ? lr * wd : 0;
        for (let i = 0; i < w.length; i++) {
          const gi = g[i]!;
          const mi = b1 * mm[i]! + (1 - b1) * gi;
          const vi = b2 * v[i]! + (1 - b2) * gi * gi;
          mm[i] = mi;
          v[i] = vi;
          w[i] = w[i]! - (lr * (mi * c1)) / (Math.sqrt(vi * c2) + 1e-8) - decay * w[i]!;
        }
      }
    }
    const loss = lossSum / m;
    lossHistory.push(loss);
    if (tol > 0 && lossHistory.length >= 2) {
      const prev = lossHistory[lossHistory.length - 2]!;
      if (prev - loss < tol * Math.abs(prev)) break;
    }
  }

  layers[0] = { ...layers[0]!, ...foldedParams(layers[0]!, muF, invF) };
  const out: DenseLayer[] = layers.map((L) => ({ in: L.in, out: L.out, weight: L.W.w, bias: L.B.w }));
  return { layers: out, logitScale: scale, report: { epochs: lossHistory.length, lossHistory, ms: Date.now() - t0 } };
}

function foldedParams(
  L: { W: Param; B: Param; in: number; out: number },
  mean: Float32Array,
  invStd: Float32Array,
): { W: Param; B: Param } {
  const f = foldStandardization({ in: L.in, out: L.out, weight: L.W.w, bias: L.B.w }, mean, invStd);
  return { W: { ...L.W, w: f.weight }, B: { ...L.B, w: f.bias } };
}

/**
 * Folds a feature standardisation `(x − mean) · invStd` into a dense layer: returns the layer `W' = W·diag(invStd)`,
 * `b' = b − W'·mean`, which gives the same outputs on raw features.
 */
export function foldStandardization(layer: DenseLayer, mean: Float32Array, invStd: Float32Array): DenseLayer {
  const d = layer.in;
  if (mean.length !== d || invStd.length !== d)
    bad(`standardisation has ${mean.length}/${invStd.length} entries, layer reads ${d}`);
  const weight = new Float32Array(layer.weight.length);
  const bias = new Float32Array(layer.out);
  for (let o = 0; o < layer.out; o++) {
    let shift = 0;
    const base = o * d;
    for (let i = 0; i < d; i++) {
      const wf = layer.weight[base + i]! * invStd[i]!;
      weight[base + i] = wf;
      shift += wf * mean[i]!;
    }
    bias[o] = layer.bias[o]! - shift;
  }
  return { in: layer.in, out: layer.out, weight, bias };
}

/**
 * Trains an exit head to imitate the backbone: minimises mean KL(teacher ‖ head) over `n` samples of raw pooled
 * features `x [n, d]` against backbone probabilities `p [n, k]` with AdamW (mini-batches, cosine-decayed rate,
 * He init, seeded shuffling). Features are standardised on these samples and the standardisation is folded
 * into the first layer, so the returned head reads raw features.
 */
export function trainHead(
  x: Float32Array,
  p: Float32Array,
  n: number,
  d: number,
  k: number,
  options: TrainHeadOptions = {},
): TrainHeadResult {
  return trainHeadOnRows(x, p, n, d, k, null, options);
}

function checkHead(head: TrainedHead): { d: number; k: number } {
  const ls = head.layers;
  if (ls.length < 1) bad('head has no layers');
  for (let l = 0; l < ls.length; l++) {
    const L = ls[l]!;
    if (L.weight.length !== L.in * L.out || L.bias.length !== L.out) bad(`head layer ${l} has inconsistent sizes`);
    if (l > 0 && ls[l - 1]!.out !== L.in) bad(`head layer ${l} input ${L.in} != previous output ${ls[l - 1]!.out}`);
  }
  return { d: ls[0]!.in, k: ls[ls.length - 1]!.out };
}

/**
 * Writes head probabilities for samples `rows` of raw features `x` (null = the first `count` rows) into `out`:
 * at the sample's own row when `scatter` is true (out is `[n, k]`), else packed in order (`[count, k]`).
 */
export function predictHeadRows(
  head: TrainedHead,
  x: Float32Array,
  rows: Int32Array | null,
  count: number,
  out: Float32Array,
  scatter: boolean,
): void {
  const { d, k } = checkHead(head);
  const chunk = 256;
  const ls = head.layers;
  const widest = Math.max(...ls.map((L) => L.out));
  let bufA = new Float32Array(chunk * widest);
  let bufB = new Float32Array(chunk * widest);
  const xb = rows ? new Float32Array(chunk * d) : null;
  for (let s0 = 0; s0 < count; s0 += chunk) {
    const bs = Math.min(chunk, count - s0);
    let input: Float32Array;
    if (xb && rows) {
      for (let r = 0; r < bs; r++) xb.set(x.subarray(rows[s0 + r]! * d, rows[s0 + r]! * d + d), r * d);
      input = xb;
    } else {
      input = x.subarray(s0 * d, (s0 + bs) * d);
    }
    for (let l = 0; l < ls.length; l++) {
      const L = ls[l]!;
      denseForward(input, bs, L.in, L.weight, L.bias, L.out, bufA);
      if (l + 1 < ls.length) {
        for (let i = 0; i < bs * L.out; i++) if (bufA[i]! < 0) bufA[i] = 0;
      }
      input = bufA;
      const t = bufA;
      bufA = bufB;
      bufB = t;
    }
    softmaxRowsInPlace(input, bs, k, head.logitScale);
    for (let r = 0; r < bs; r++) {
      const dst = (scatter && rows ? rows[s0 + r]! : s0 + r) * k;
      for (let j = 0; j < k; j++) out[dst + j] = input[r * k + j]!;
    }
  }
}

/** Head probabilities `[n, k]` for raw features `x [n, d]` (ReLU between layers, logits × logitScale, softmax). */
export function predictHead(head: TrainedHead, x: Float32Array, n: number): Float32Array {
  const { d, k } = checkHead(head);
  if (x.length < n * d) bad(`features hold ${x.length} values, expected ${n}x${d}`);
  const out = new Float32Array(n * k);
  predictHeadRows(head, x, null, n, out, false);
  return out;
}

/** Geometry that turns a trained head into a {@link HeadSpec}. */
export interface HeadGeometry {
  readonly kind: HeadKind;
  readonly inChannels: number;
  readonly inHeight: number;
  readonly inWidth: number;
  /** Average-pooling grid. */
  readonly grid: readonly [number, number];
  /** Max-pooling grid of the features that follow the average-pooled ones (CutFeatures `maxGrid`). Absent: none. */
  readonly maxGrid?: readonly [number, number];
}

/**
 * Wraps a trained head into the HeadSpec the graph toolkit turns into ONNX; checks the feature count matches the
 * grids (`C·gh·gw`, plus `C·mh·mw` with `maxGrid`) and that they divide the map.
 */
export function toHeadSpec(head: TrainedHead, geometry: HeadGeometry): HeadSpec {
  const { d, k } = checkHead(head);
  const { inChannels: c, inHeight: h, inWidth: w, maxGrid } = geometry;
  const [gh, gw] = geometry.grid;
  const want = headInputSize({ inChannels: c, grid: geometry.grid, maxGrid });
  if (want !== d) {
    const pools = `${c}x${gh}x${gw} average pooling${maxGrid ? ` + ${c}x${maxGrid[0]}x${maxGrid[1]} max pooling` : ''}`;
    bad(`head reads ${d} features but ${pools} gives ${want}`);
  }
  if (h % gh !== 0 || w % gw !== 0) bad(`grid ${gh}x${gw} does not divide ${h}x${w}`);
  if (maxGrid && (h % maxGrid[0] !== 0 || w % maxGrid[1] !== 0))
    bad(`maxGrid ${maxGrid[0]}x${maxGrid[1]} does not divide ${h}x${w}`);
  return {
    kind: geometry.kind,
    inChannels: c,
    inHeight: h,
    inWidth: w,
    grid: [gh, gw],
    ...(maxGrid ? { maxGrid: [maxGrid[0], maxGrid[1]] as const } : {}),
    layers: head.layers,
    logitScale: head.logitScale,
    classes: k,
  };
}

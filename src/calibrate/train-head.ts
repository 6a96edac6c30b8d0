// Exit-head training by distillation: minimise KL(teacher ‖ head) with AdamW on standardised features (the
// SIMD head stack of head-stack.ts), then fold the standardisation into the first layer so the head reads raw
// pooled features. Also prediction and the HeadSpec wrapper.
import { SelfxitError } from '../errors.js';
import { headInputSize, type DenseLayer, type HeadGeometry, type HeadSpec } from '../graph/head-spec.js';
import type { HeadKind } from '../bundle/manifest.js';
import { denseForward, softmaxRowsInPlace } from './linalg.js';
import { trainStack, type StackResult, type StackSettings } from './head-stack.js';
import { featureRowCount, type FeatureRows } from './feature-store.js';

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
  /** Stop early when the mean training KL improves by less than this (relative) two epochs in a row (heads without a held-out fold). Default 0 (never). */
  readonly tolerance?: number;
  /**
   * Cross-fitting: a fold's head stops when the mean KL on its held-out fold improves by less than this fraction
   * over two epochs in a row, and keeps its best epoch's weights. 0: off. Default {@link DEFAULT_EARLY_STOPPING}.
   */
  readonly earlyStopping?: number;
  /** 'js' forces the plain-JS kernels (default 'auto': WebAssembly SIMD where available). */
  readonly kernels?: 'auto' | 'js';
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
  /** Mean KL on the held-out fold per epoch, measured during the epoch (empty without one). */
  readonly heldOutHistory?: readonly number[];
  /** Epoch (1-based) whose weights were kept (early stopping keeps the best). */
  readonly bestEpoch?: number;
  /** Milliseconds (for a cross-fit: the whole stack's time, shared by its folds). */
  readonly ms: number;
  /** Kernels used. */
  readonly backend?: 'wasm-simd' | 'js';
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
/** Default early-stopping tolerance on the held-out fold (relative improvement per epoch). */
export const DEFAULT_EARLY_STOPPING = 0.001;
/** Default hidden width per head kind (0: no hidden layer). */
export const DEFAULT_HIDDEN: Readonly<Record<HeadKind, number>> = { 'pool-linear': 0, 'pool-mlp': 64, paper: 512 };

function bad(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_ARGUMENT', msg, details);
}

function checkDims(x: FeatureRows, p: Float32Array, n: number, d: number, k: number): void {
  if (!(Number.isInteger(n) && n >= 1 && Number.isInteger(d) && d >= 1 && Number.isInteger(k) && k >= 2)) {
    bad(`head training needs n >= 1, d >= 1, k >= 2 (got n=${n}, d=${d}, k=${k})`, { n, d, k });
  }
  if (!(x instanceof Float32Array) && x.d !== d) bad(`packed features have ${x.d} columns, expected d = ${d}`);
  if (featureRowCount(x, d) < n)
    bad(`features hold ${featureRowCount(x, d)} rows of ${d}, expected n = ${n}`, { n, d });
  if (p.length < n * k) bad(`teacher probabilities hold ${p.length} values, expected n*k = ${n * k}`, { n, k });
}

/** Resolved settings of one head kind (the defaults above, validated). */
export function resolveTrainSettings(
  options: TrainHeadOptions,
): Omit<StackSettings, 'shuffleSeed' | 'epochs'> & { kind: HeadKind; epochs: (stepsPerEpoch: number) => number } {
  const kind: HeadKind = options.kind ?? 'pool-linear';
  if (kind !== 'pool-linear' && kind !== 'pool-mlp' && kind !== 'paper') bad(`unknown head kind ${String(kind)}`);
  const hidden = kind === 'pool-linear' ? 0 : (options.hidden ?? DEFAULT_HIDDEN[kind]);
  const batch = options.batchSize ?? 128;
  const lr0 = options.learningRate ?? DEFAULT_LEARNING_RATE[kind];
  const wd = options.weightDecay ?? 1e-4;
  const temp = options.temperature ?? 1;
  const scale = options.logitScale ?? (kind === 'paper' ? 2 : 1);
  const tol = options.tolerance ?? 0;
  const es = options.earlyStopping ?? DEFAULT_EARLY_STOPPING;
  if (!(Number.isInteger(hidden) && hidden >= 0 && (kind === 'pool-linear' || hidden >= 1)))
    bad(`hidden width must be a positive integer, got ${hidden}`);
  if (!(Number.isInteger(batch) && batch >= 1)) bad(`batchSize must be a positive integer, got ${batch}`);
  if (!(lr0 > 0 && wd >= 0 && temp > 0 && scale > 0 && tol >= 0 && es >= 0))
    bad('learningRate, temperature, logitScale must be > 0; weightDecay, tolerance, earlyStopping >= 0', {
      lr0,
      wd,
      temp,
      scale,
      tol,
      es,
    });
  const fixed = options.epochs;
  if (fixed !== undefined && !(Number.isInteger(fixed) && fixed >= 1))
    bad(`epochs must be a positive integer, got ${fixed}`);
  return {
    kind,
    hidden,
    batchSize: batch,
    epochs: (stepsPerEpoch) =>
      fixed ?? Math.min(50, Math.max(DEFAULT_EPOCHS[kind], Math.ceil(DEFAULT_MIN_STEPS[kind] / stepsPerEpoch))),
    learningRate: lr0,
    weightDecay: wd,
    temperature: temp,
    logitScale: scale,
    heldOutTolerance: es,
    trainTolerance: tol,
    ...(options.kernels ? { kernels: options.kernels } : {}),
  };
}

/** A stack head's result as a trained head on raw features (standardisation folded into the first layer). */
export function toTrainHeadResult(r: StackResult, h: number, scale: number, ms: number): TrainHeadResult {
  const head = r.heads[h]!;
  const layers = head.layers.slice();
  layers[0] = foldStandardization(layers[0]!, r.mean, r.invStd);
  const report: TrainReport = {
    epochs: head.lossHistory.length,
    lossHistory: head.lossHistory,
    heldOutHistory: head.heldOutHistory,
    bestEpoch: head.bestEpoch,
    ms,
    backend: r.backend,
  };
  return { layers, logitScale: scale, report };
}

/**
 * Trains a head on the samples `rows` (indices into `x`/`p`; null = all `n`). Internal entry shared by
 * {@link trainHead} and cross-fitting, so folds never copy the feature matrix.
 */
export function trainHeadOnRows(
  x: FeatureRows,
  p: Float32Array,
  n: number,
  d: number,
  k: number,
  rows: Int32Array | null,
  options: TrainHeadOptions = {},
): TrainHeadResult {
  checkDims(x, p, n, d, k);
  const t0 = Date.now();
  const settings = resolveTrainSettings(options);
  const group = new Int32Array(n).fill(rows ? -1 : 0);
  if (rows) {
    if (rows.length < 1) bad('head training needs at least one sample');
    for (const r of rows) {
      if (!(r >= 0 && r < n)) bad(`row index ${r} outside [0, ${n})`);
      group[r] = 0;
    }
  }
  const seed = options.seed ?? 0;
  const r = trainStack(x, p, n, d, k, group, [{ holdOut: -1, seed }], { ...settings, shuffleSeed: seed });
  return toTrainHeadResult(r, 0, settings.logitScale, Date.now() - t0);
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
  x: FeatureRows,
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
    ...(geometry.dequant ? { dequant: geometry.dequant } : {}),
    ...(geometry.layout === 'NHWC' ? { layout: 'NHWC' as const } : {}),
    layers: head.layers,
    logitScale: head.logitScale,
    classes: k,
  };
}

// Trains several exit heads of one kind at once on the same feature rows (the k folds of a cross-fit, or one head):
// their weights sit side by side in one matrix, so each mini-batch is gathered and standardised once and every
// product is one SIMD matrix product (wasm-kernels.ts) for all heads. Each head trains on its rows only (the other
// rows get a zero gradient) and is scored on its held-out group for free, which drives early stopping.
// Over 400 lines on purpose: one training loop whose steps share the workspace offsets as closures.
import { SelfxitError } from '../errors.js';
import type { DenseLayer } from '../graph/head-spec.js';
import { createRng, shuffleInPlace, type Rng } from './rng.js';
import { createKernelMemory, type KernelMemory } from './wasm-kernels.js';
import { rowReader, standardisation, type FeatureRows } from './feature-store.js';

/** One head of a stack: it trains on rows whose group is >= 0 and != holdOut, and is scored on group == holdOut. */
export interface StackHead {
  /** Group held out from this head (-1: none, the head trains on every used row). */
  readonly holdOut: number;
  /** Seed of this head's initial weights. */
  readonly seed: number;
}

/** Hyper-parameters of a stack (defaults are resolved by the caller, train-head.ts). */
export interface StackSettings {
  /** Hidden width (0: a linear head). */
  readonly hidden: number;
  /** Samples per step per head (the shared batch is scaled so each head sees about this many). */
  readonly batchSize: number;
  /** Epochs, or a function of the steps per epoch. */
  readonly epochs: number | ((stepsPerEpoch: number) => number);
  readonly learningRate: number;
  readonly weightDecay: number;
  readonly temperature: number;
  readonly logitScale: number;
  /** Seed of the shared row shuffle. */
  readonly shuffleSeed: number;
  /**
   * Early stopping on the held-out group: a head stops when its held-out KL improves by less than this fraction
   * over an epoch, keeping its best epoch's weights. 0: off. Heads without held-out rows use the training KL
   * with `trainTolerance`.
   */
  readonly heldOutTolerance: number;
  /** Same on the training KL, for heads without held-out rows (0: never). */
  readonly trainTolerance: number;
  /** Epochs in a row without enough improvement before a head stops. Default 2. */
  readonly patience?: number;
  /** 'js' forces the plain-JS kernels (tests). */
  readonly kernels?: 'auto' | 'js';
}

/** What one head of the stack learnt, on standardised features (the caller folds the standardisation in). */
export interface StackHeadResult {
  /** Dense layers reading standardised features. */
  readonly layers: DenseLayer[];
  /** Mean training KL per epoch (measured during the epoch). */
  readonly lossHistory: number[];
  /** Mean held-out KL per epoch (empty without held-out rows). */
  readonly heldOutHistory: number[];
  /** Epoch (1-based) whose weights were kept. */
  readonly bestEpoch: number;
}

export interface StackResult {
  readonly heads: StackHeadResult[];
  /** Per-feature mean and 1/std of the used rows (the standardisation the layers read). */
  readonly mean: Float32Array;
  readonly invStd: Float32Array;
  readonly epochs: number;
  readonly backend: 'wasm-simd' | 'js';
}

const round = (v: number, to: number): number => Math.ceil(v / to) * to;

/** Softened copy `softmax(log p / T)` of one teacher row into `out`. */
function softenRow(p: Float32Array, pOff: number, k: number, t: number, out: Float32Array, oOff: number): void {
  let max = -Infinity;
  for (let j = 0; j < k; j++) {
    const v = Math.log(Math.max(p[pOff + j]!, 1e-30)) / t;
    out[oOff + j] = v;
    if (v > max) max = v;
  }
  let s = 0;
  for (let j = 0; j < k; j++) {
    const e = Math.exp(out[oOff + j]! - max);
    out[oOff + j] = e;
    s += e;
  }
  for (let j = 0; j < k; j++) out[oOff + j]! /= s;
}

/** Float offsets of every buffer in the kernel memory (16-byte aligned). */
class Layout {
  private top = 0;
  take(floats: number): number {
    const at = this.top;
    this.top += round(Math.max(floats, 1), 4);
    return at;
  }
  get size(): number {
    return this.top;
  }
}

/**
 * Trains `heads` (one kind, one hidden width) together on the rows of `x [n, d]` whose `group` is >= 0, imitating
 * the teacher `p [n, k]` (KL, AdamW, cosine-decayed rate, He init). With `oof`, also writes into `oof [oofRows, k]`
 * each held-out row's probabilities from the head that held it out, after training, for the rows below `oofRows`
 * (default n; the samples, whose augmented copies follow them, when only theirs are read); with `oofLogitWeight` w,
 * adds w × its scaled logits (logits × logitScale) instead (a head ensemble's mean logits, over several stacks); with
 * `oofLogitWeight` 'raw', writes its raw float32 logits (an ensemble member trained apart: the caller then adds
 * w × logitScale × them, the same sum as w in place; {@link addMemberLogits}).
 */
export function trainStack(
  x: FeatureRows,
  p: Float32Array,
  n: number,
  d: number,
  k: number,
  group: Int32Array,
  heads: readonly StackHead[],
  s: StackSettings,
  oof?: Float32Array,
  oofRows = n,
  oofLogitWeight?: number | 'raw',
): StackResult {
  const H = heads.length;
  if (H < 1) throw new SelfxitError('INVALID_ARGUMENT', 'a head stack needs at least one head');
  const used = Int32Array.from(
    (function* () {
      for (let r = 0; r < n; r++) if (group[r]! >= 0) yield r;
    })(),
  );
  const nu = used.length;
  if (nu < 1) throw new SelfxitError('INVALID_ARGUMENT', 'head training needs at least one sample');
  const trainCount = heads.map((h) => {
    let c = 0;
    for (const r of used) if (group[r] !== h.holdOut) c++;
    return c;
  });
  if (trainCount.some((c) => c === 0))
    throw new SelfxitError('TOO_FEW_SAMPLES', 'a head of the stack has no samples to train on');
  const meanTrain = trainCount.reduce((a, b) => a + b, 0) / H;
  const batch = Math.max(1, Math.min(nu, Math.round((s.batchSize * nu) / meanTrain)));
  const stepsPerEpoch = Math.ceil(nu / batch);
  const epochs = typeof s.epochs === 'number' ? s.epochs : s.epochs(stepsPerEpoch);
  if (!(Number.isInteger(epochs) && epochs >= 1))
    throw new SelfxitError('INVALID_ARGUMENT', `epochs must be a positive integer, got ${epochs}`);
  const { mean, invStd } = standardisation(x, used, d);
  const readRow = rowReader(x, d, mean, invStd);

  // ---- geometry: linear heads share one [Dp, H·k] matrix; MLP heads one [Dp, H·hp] first layer + H second layers
  const mlp = s.hidden > 0;
  const hp = mlp ? round(s.hidden, 8) : 0;
  const ks = mlp ? round(k, 8) : k; // column stride of one head's logits
  const NZ = mlp ? H * ks : round(H * k, 8);
  const N1 = mlp ? H * hp : NZ; // width of the first layer's output
  const Dp = round(d, 4);
  const BP = round(batch, 4);
  const L = new Layout();
  const xb = L.take(BP * Dp);
  const w1 = L.take(Dp * N1);
  const w2 = mlp ? L.take(H * hp * ks) : 0;
  const wEnd = L.take(0);
  const b1 = L.take(N1);
  const b2 = mlp ? L.take(H * ks) : 0;
  const bEnd = L.take(0);
  const nW = wEnd - w1;
  const nB = bEnd - b1;
  const gW = L.take(nW);
  const gB = L.take(nB);
  const mW = L.take(nW);
  const vW = L.take(nW);
  const mB = L.take(nB);
  const vB = L.take(nB);
  const act = mlp ? L.take(BP * N1) : 0;
  const gAct = mlp ? L.take(BP * N1) : 0;
  const w2t = mlp ? L.take(H * ks * hp) : 0;
  const z = L.take(BP * NZ);
  const gz = L.take(BP * NZ);
  const km: KernelMemory = createKernelMemory(s.kernels ?? 'auto');
  km.reserve(L.size);
  const F = (): Float32Array => km.f32;
  F().fill(0, 0, L.size);

  const zOff = (h: number): number => h * (mlp ? ks : k);
  const hOff = (h: number): number => h * hp;

  // ---- He init, per head, in the [out, in] order of the DenseLayer (one seeded stream per head)
  const rngs: Rng[] = heads.map((h) => createRng(h.seed));
  {
    const f = F();
    for (let h = 0; h < H; h++) {
      const rng = rngs[h]!;
      const out0 = mlp ? s.hidden : k;
      const c0 = mlp ? hOff(h) : zOff(h);
      const std0 = Math.sqrt((mlp ? 2 : 1) / d);
      for (let o = 0; o < out0; o++) for (let i = 0; i < d; i++) f[w1 + i * N1 + c0 + o] = rng.normal() * std0;
      if (mlp) {
        const std1 = Math.sqrt(1 / s.hidden);
        const base = w2 + h * hp * ks;
        for (let o = 0; o < k; o++) for (let u = 0; u < s.hidden; u++) f[base + u * ks + o] = rng.normal() * std1;
      }
    }
  }
  const shuffleRng = H === 1 ? rngs[0]! : createRng(s.shuffleSeed);

  /** The layers of head h as they stand (standardised features). */
  const extract = (h: number): DenseLayer[] => {
    const f = F();
    const out0 = mlp ? s.hidden : k;
    const c0 = mlp ? hOff(h) : zOff(h);
    const W0 = new Float32Array(out0 * d);
    const B0 = new Float32Array(out0);
    for (let o = 0; o < out0; o++) {
      for (let i = 0; i < d; i++) W0[o * d + i] = f[w1 + i * N1 + c0 + o]!;
      B0[o] = f[b1 + c0 + o]!;
    }
    const layers: DenseLayer[] = [{ in: d, out: out0, weight: W0, bias: B0 }];
    if (mlp) {
      const W1 = new Float32Array(k * s.hidden);
      const B1 = new Float32Array(k);
      const base = w2 + h * hp * ks;
      for (let o = 0; o < k; o++) {
        for (let u = 0; u < s.hidden; u++) W1[o * s.hidden + u] = f[base + u * ks + o]!;
        B1[o] = f[b2 + h * ks + o]!;
      }
      layers.push({ in: s.hidden, out: k, weight: W1, bias: B1 });
    }
    return layers;
  };
  /** Writes head h's layers back into the stack (restoring its best epoch). */
  const restore = (h: number, layers: DenseLayer[]): void => {
    const f = F();
    const [L0, L1] = layers;
    const c0 = mlp ? hOff(h) : zOff(h);
    for (let o = 0; o < L0!.out; o++) {
      for (let i = 0; i < d; i++) f[w1 + i * N1 + c0 + o] = L0!.weight[o * d + i]!;
      f[b1 + c0 + o] = L0!.bias[o]!;
    }
    if (L1) {
      const base = w2 + h * hp * ks;
      for (let o = 0; o < k; o++) {
        for (let u = 0; u < s.hidden; u++) f[base + u * ks + o] = L1.weight[o * s.hidden + u]!;
        f[b2 + h * ks + o] = L1.bias[o]!;
      }
    }
  };

  // ---- teacher rows, softened once when T != 1
  const teacher = s.temperature === 1 ? p : new Float32Array(n * k);
  if (s.temperature !== 1) for (const r of used) softenRow(p, r * k, k, s.temperature, teacher, r * k);

  /** Gathers rows `perm[s0, s0+bs)` standardised into xb (row-major), zero rows up to a multiple of 4. */
  const gather = (perm: Int32Array, s0: number, bs: number): void => {
    const f = F();
    for (let r = 0; r < bs; r++) readRow(perm[s0 + r]!, f, xb + r * Dp);
    f.fill(0, xb + bs * Dp, xb + round(bs, 4) * Dp);
  };
  /** Logits of the gathered batch into z (and hidden activations, after ReLU, into act). */
  const forward = (bs: number): void => {
    const f = F();
    const Mp = round(bs, 4);
    const outA = mlp ? act : z;
    for (let r = 0; r < Mp; r++) f.copyWithin(outA + r * N1, b1, b1 + N1);
    km.gemm(Mp, N1, d, xb, Dp, w1, N1, outA, N1);
    if (!mlp) return;
    const g = F();
    for (let i = act, e = act + Mp * N1; i < e; i++) if (!(g[i]! > 0)) g[i] = 0;
    for (let r = 0; r < Mp; r++) g.copyWithin(z + r * NZ, b2, b2 + NZ);
    for (let h = 0; h < H; h++) km.gemm(Mp, ks, hp, act + hOff(h), N1, w2 + h * hp * ks, ks, z + zOff(h), NZ);
  };

  const sOverT = s.logitScale / s.temperature;
  const q = new Float64Array(k);
  /** Softmax of head h's logits of batch row r at scale `sc` into q; returns log Σ exp(z·sc − max) + max. */
  const softmaxInto = (f: Float32Array, r: number, h: number, sc: number): number => {
    const zb = z + r * NZ + zOff(h);
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, f[zb + j]! * sc);
    let sum = 0;
    for (let j = 0; j < k; j++) {
      const e = Math.exp(f[zb + j]! * sc - max);
      q[j] = e;
      sum += e;
    }
    for (let j = 0; j < k; j++) q[j]! /= sum;
    return Math.log(sum) + max;
  };
  // KL(p ‖ q) = Σ p log p − Σ p (z·sc − lse): the teacher's part once per row.
  const negEntropy = new Float64Array(n);
  for (const r of used) {
    let e = 0;
    for (let j = 0; j < k; j++) {
      const pj = teacher[r * k + j]!;
      if (pj > 0) e += pj * Math.log(pj);
    }
    negEntropy[r] = e;
  }
  const klOf = (f: Float32Array, row: number, r: number, h: number, lse: number): number => {
    const zb = z + r * NZ + zOff(h);
    const tb = row * k;
    let cross = 0;
    for (let j = 0; j < k; j++) cross += teacher[tb + j]! * (f[zb + j]! * sOverT - lse);
    return negEntropy[row]! - cross;
  };

  const perm = used.slice();
  const totalSteps = epochs * stepsPerEpoch;
  const b1c = 0.9;
  const b2c = 0.999;
  let step = 0;
  const lossHistory: number[][] = heads.map(() => []);
  const heldHistory: number[][] = heads.map(() => []);
  const stopped = new Uint8Array(H);
  const patience = s.patience ?? 2;
  const stale = new Int32Array(H);
  const best: { loss: number; epoch: number; layers: DenseLayer[] | null }[] = heads.map(() => ({
    loss: Infinity,
    epoch: 0,
    layers: null,
  }));
  const hasHeld = heads.map((h) => used.some((r) => group[r] === h.holdOut));
  const cnt = new Int32Array(H);
  const holdOut = Int32Array.from(heads, (h) => h.holdOut);
  const gscale = new Float64Array(H);
  const lossSum = new Float64Array(H);
  const heldSum = new Float64Array(H);
  let ranEpochs = 0;

  for (let ep = 0; ep < epochs && stopped.some((v) => v === 0); ep++) {
    ranEpochs++;
    shuffleInPlace(perm, shuffleRng);
    lossSum.fill(0);
    heldSum.fill(0);
    for (let s0 = 0; s0 < nu; s0 += batch) {
      const bs = Math.min(batch, nu - s0);
      gather(perm, s0, bs);
      forward(bs);
      const f = F();
      // Loss and dL/dz = scale·T·(q_T − p_T) / (head's rows in the batch); zero for held-out and padding rows.
      cnt.fill(0);
      for (let r = 0; r < bs; r++) {
        const g = group[perm[s0 + r]!]!;
        for (let h = 0; h < H; h++) if (g !== holdOut[h]) cnt[h]!++;
      }
      for (let h = 0; h < H; h++) gscale[h] = cnt[h]! > 0 ? (s.logitScale * s.temperature) / cnt[h]! : 0;
      f.fill(0, gz, gz + round(bs, 4) * NZ);
      for (let r = 0; r < bs; r++) {
        const row = perm[s0 + r]!;
        const g = group[row]!;
        const tb = row * k;
        for (let h = 0; h < H; h++) {
          const held = g === holdOut[h];
          if (held && stopped[h]) continue;
          const kl = klOf(f, row, r, h, softmaxInto(f, r, h, sOverT));
          if (held) {
            heldSum[h]! += kl;
            continue;
          }
          lossSum[h]! += kl;
          const gb = gz + r * NZ + zOff(h);
          const sc = gscale[h]!;
          for (let j = 0; j < k; j++) f[gb + j] = (q[j]! - teacher[tb + j]!) * sc;
        }
      }
      backward(bs);
      step++;
      const lr = s.learningRate * 0.5 * (1 + Math.cos((Math.PI * (step - 1)) / totalSteps));
      const c1 = 1 / (1 - Math.pow(b1c, step));
      const c2 = 1 / (1 - Math.pow(b2c, step));
      const hyper = { lr, b1: b1c, b2: b2c, c1, c2, eps: 1e-8 };
      km.adamw(w1, gW, mW, vW, nW, { ...hyper, decay: lr * s.weightDecay });
      km.adamw(b1, gB, mB, vB, nB, { ...hyper, decay: 0 });
    }
    // ---- per-head bookkeeping and early stopping
    for (let h = 0; h < H; h++) {
      if (stopped[h]) continue;
      const tl = lossSum[h]! / trainCount[h]!;
      lossHistory[h]!.push(tl);
      const held = hasHeld[h]!;
      const score = held ? heldSum[h]! / (nu - trainCount[h]!) : tl;
      if (held) heldHistory[h]!.push(score);
      const tol = held ? s.heldOutTolerance : s.trainTolerance;
      const b = best[h]!;
      const improved = score < b.loss;
      const enough = !(score > b.loss * (1 - tol)) || !Number.isFinite(b.loss);
      if (improved && tol > 0) Object.assign(b, { loss: score, epoch: ep + 1, layers: extract(h) });
      else if (improved) Object.assign(b, { loss: score, epoch: ep + 1 });
      stale[h] = enough ? 0 : stale[h]! + 1;
      if (tol > 0 && stale[h]! >= patience) stopped[h] = 1;
    }
  }
  for (let h = 0; h < H; h++) if (stopped[h] && best[h]!.layers) restore(h, best[h]!.layers!);

  if (oof) predictHeldOut();
  return {
    heads: heads.map((_, h) => ({
      layers: extract(h),
      lossHistory: lossHistory[h]!,
      heldOutHistory: heldHistory[h]!,
      bestEpoch: stopped[h] ? best[h]!.epoch : lossHistory[h]!.length,
    })),
    mean,
    invStd,
    epochs: ranEpochs,
    backend: km.backend,
  };

  /** Gradients of every parameter for the batch (gz holds dL/dz). */
  function backward(bs: number): void {
    const f = F();
    const Mp = round(bs, 4);
    f.fill(0, gW, gW + nW);
    f.fill(0, gB, gB + nB);
    if (!mlp) {
      km.gemmTN(Dp, NZ, bs, xb, Dp, gz, NZ, gW, NZ);
      for (let r = 0; r < bs; r++) for (let j = 0; j < NZ; j++) f[gB + j]! += f[gz + r * NZ + j]!;
      return;
    }
    const gW2 = gW + (w2 - w1);
    const gB2 = gB + (b2 - b1);
    for (let r = 0; r < bs; r++) for (let j = 0; j < NZ; j++) f[gB2 + j]! += f[gz + r * NZ + j]!;
    f.fill(0, gAct, gAct + Mp * N1);
    for (let h = 0; h < H; h++) {
      const w2h = w2 + h * hp * ks;
      km.gemmTN(hp, ks, bs, act + hOff(h), N1, gz + zOff(h), NZ, gW2 + h * hp * ks, ks);
      const t = w2t + h * ks * hp;
      for (let u = 0; u < hp; u++) for (let o = 0; o < ks; o++) f[t + o * hp + u] = f[w2h + u * ks + o]!;
      km.gemm(Mp, hp, ks, gz + zOff(h), NZ, t, hp, gAct + hOff(h), N1);
    }
    for (let r = 0; r < bs; r++) {
      const a0 = act + r * N1;
      const g0 = gAct + r * N1;
      for (let u = 0; u < N1; u++) {
        if (!(f[a0 + u]! > 0)) f[g0 + u] = 0;
        else f[gB + u]! += f[g0 + u]!;
      }
    }
    km.gemmTN(Dp, N1, bs, xb, Dp, gAct, N1, gW, N1);
  }

  /** Writes each held-out row's probabilities (logits × logitScale, softmax) from the head that held it out (or adds
   * its weighted scaled logits: `oofLogitWeight`). */
  function predictHeldOut(): void {
    const headOf = new Map<number, number>();
    heads.forEach((h, i) => {
      if (h.holdOut >= 0 && !headOf.has(h.holdOut)) headOf.set(h.holdOut, i);
    });
    const rows = used.filter((r) => r < oofRows && headOf.has(group[r]!));
    for (let s0 = 0; s0 < rows.length; s0 += batch) {
      const bs = Math.min(batch, rows.length - s0);
      gather(rows, s0, bs);
      forward(bs);
      const f = F();
      for (let r = 0; r < bs; r++) {
        const row = rows[s0 + r]!;
        const h = headOf.get(group[row]!)!;
        if (oofLogitWeight === 'raw') {
          const zb = z + r * NZ + zOff(h);
          for (let j = 0; j < k; j++) oof![row * k + j] = f[zb + j]!;
          continue;
        }
        if (oofLogitWeight !== undefined) {
          const zb = z + r * NZ + zOff(h);
          const w = oofLogitWeight * s.logitScale;
          for (let j = 0; j < k; j++) oof![row * k + j]! += w * f[zb + j]!;
          continue;
        }
        softmaxInto(f, r, h, s.logitScale);
        for (let j = 0; j < k; j++) oof![row * k + j] = q[j]!;
      }
    }
  }
}

/**
 * Adds an ensemble member's raw held-out logits (`trainStack` with `oofLogitWeight` 'raw'; zero where it wrote none, which adds +0 to rows no member writes)
 * into `oof` with weight `w` × `logitScale`: the same float operations, in the same order over members, as the member
 * stacks adding into one `oof` in place (so members trained apart give the same bits).
 */
export function addMemberLogits(oof: Float32Array, raw: Float32Array, w: number, logitScale: number): void {
  const ws = w * logitScale;
  for (let i = 0; i < oof.length; i++) oof[i]! += ws * raw[i]!;
}

// Issue 13/15 study: exit decisions that use the earlier exits' outputs (already computed, ~zero runtime cost), on a
// CIFAR-10 ResNet (../shared), with prepare's own heads (defaults: flip copies, cross-fitted candidates, cost-calibrated
// rule) on 10,000 `calib` images, every number measured on the 5,000 `test` images. Variants (SPECS below):
//   base: today's rule (the exit's own max-softmax through its logistic map);
//   ens / ens-hard / ens-nobias: Zero Time Waste's geometric ensemble — exit j answers q_j ∝ exp(Σ_{i<=j} w_ji·log p_i
//         + b_j) (w >= 0, per-class bias b; fit by cross-entropy to the backbone's softmax / to its argmax / without b),
//         cross-fitted: each fold's calib outputs come from weights fit on the other folds' out-of-fold outputs;
//   agree: the logistic map gets one more input, whether the previous selected exit's argmax equals this one's (two
//         max-softmax thresholds per exit); agree-soft: the input is logit(p_prev[argmax p_j]) instead;
//   class: a per-class intercept in the logistic map (one max-softmax threshold per exit and answered class);
//   margin / entropy: the exit's own score is p1 − p2 (top-1 minus top-2 probability) / 1 − H/ln K (negative entropy)
//         instead of the max-softmax, through the same logistic map; maxmargin: the map reads logit(max) and
//         logit(p1 − p2) (two inputs, fit out of fold like agree-soft's); and combinations.
// `--ms D` trains multi-scale heads instead (each candidate cut's head also reads the pooled features of the D candidate
// cuts before it, rows concatenated; bench/exit-levers.ts), with prepare's training, selection and thresholds, and the
// pooling of every cut a head reads added to its cost. `--pool`: calib + pool images (50,000) instead of calib.
// Thresholds are chosen on calib as prepare does (chooseThresholds, same margin, the knob turned into raw thresholds
// midway between calib samples); `--reselect` re-runs exit selection (selectExits' search) with each variant's scores,
// `--mix mixup|cutmix --copies K` (bench/mix-copies.ts): K mixed copies of every calib image appended as training rows
// (targets: the backbone's softmax on each; partners from the image's own fold, so the copies stay in its fold), after
// the flips; `--chain i,j,…` adds every variant on the given exits. "test frontier": the cheapest of dense
// knobs whose agreement on test itself meets the target (hindsight; the scores' quality without threshold noise).
//
//   npx tsx bench/ensemble-study.ts [resnet56|resnet20] [--limit N] [--pool] [--ms D] [--reselect] [--chain i,j,…]
//        [--mix mixup|cutmix [--copies K]] [--capacity fixed|auto] [--power a] [--json out.json]
// `--power a`: every pooled feature x of calib and test becomes sign(x)·|x|^a before the heads train (power
// normalisation of pooled features; a = 0.5 is the signed square root).
//
// ENS_VARIANTS / ENS_RESELECT (comma lists) pick the variants. Features are cached in bench/.cache/ens-<model>.*.
// Over 400 lines: one study script (features, fits, the two score models, selection, table) sharing its module state;
// the score kinds and multi-scale features are in bench/exit-levers.ts.
import fs from 'node:fs';
import path from 'node:path';
import { augmentSamples } from '../src/calibrate/augment.js';
import { candidateCuts } from '../src/calibrate/candidate-cuts.js';
import { bestConfigs, headCosts, selectExitsFor, trainCandidates } from '../src/calibrate/candidate-heads.js';
import { cutGeometry, type FeatureSet } from '../src/calibrate/features.js';
import { configFeatures } from '../src/calibrate/head-capacity.js';
import { headFeatureDim } from '../src/calibrate/pool.js';
import type { FitContext } from '../src/calibrate/prepare-context.js';
import { poolingRequests } from '../src/calibrate/prepare-features.js';
import { resolveModelIO, resolvePrepareOptions } from '../src/calibrate/prepare-options.js';
import { StepTimer } from '../src/calibrate/progress.js';
import { kFoldAssign } from '../src/calibrate/rng.js';
import { shuffleAndLimit } from '../src/calibrate/samples.js';
import { headData, trainFinalHeads } from '../src/calibrate/selfxit-mode.js';
import { predictHeadRows } from '../src/calibrate/train-head.js';
import { analyzeModel, decodeModel } from '../src/core.js';
import {
  argmaxRows,
  exitScores,
  simulateCascade,
  type CascadeCosts,
  type ExitScores,
} from '../src/policy/cascade-sim.js';
import { rawThresholdOnSamples, selectExitsWithRule, type ScoreMap } from '../src/policy/exit-rule.js';
import { chooseThresholds, maxDisagreements } from '../src/policy/thresholds.js';
import { boolFlag, intFlag, stringFlag } from './args.js';
import { cascadeTop1, confidence, multiScale, rescored, type ScoreKind } from './exit-levers.js';
import { cachedFeatures, writeFeatures } from './feature-cache.js';
import { mixedCopies, readConcat, MIX_KINDS, type MixKind } from './mix-copies.js';
import { studyFeatures, shared, cacheDir, ort, SHAPE } from './study-env.js';

const TARGETS = [0.99, 0.985] as const;
/** How a variant scores an exit: its answer (own head, or the ensemble fit to the backbone's softmax or to its argmax)
 * and the logistic map's extra input (none; previous answer agrees, 0/1; logit of the previous answer's probability of
 * this answer's class). */
interface VariantSpec {
  readonly ens: 'none' | 'soft' | 'hard' | 'soft-nobias';
  readonly agree: 'none' | 'binary' | 'soft' | 'class' | 'margin';
  /** The exit's own confidence score (default max-softmax): see {@link ScoreKind}. */
  readonly score?: ScoreKind;
}
const SPECS = {
  base: { ens: 'none', agree: 'none' },
  ens: { ens: 'soft', agree: 'none' },
  'ens-hard': { ens: 'hard', agree: 'none' },
  'ens-nobias': { ens: 'soft-nobias', agree: 'none' },
  agree: { ens: 'none', agree: 'binary' },
  'agree-soft': { ens: 'none', agree: 'soft' },
  'ens+agree': { ens: 'soft', agree: 'binary' },
  'ens-hard+agree-soft': { ens: 'hard', agree: 'soft' },
  class: { ens: 'none', agree: 'class' },
  margin: { ens: 'none', agree: 'none', score: 'margin' },
  entropy: { ens: 'none', agree: 'none', score: 'entropy' },
  maxmargin: { ens: 'none', agree: 'margin' },
} as const satisfies Record<string, VariantSpec>;
type Variant = keyof typeof SPECS;
const VARIANTS = (process.env.ENS_VARIANTS?.split(',') ?? Object.keys(SPECS)) as Variant[];
/** Variants whose exits are also re-selected with `--reselect` (ensemble fits make the search slow). */
const RESELECT = (process.env.ENS_RESELECT?.split(',') ?? [
  'base',
  'ens',
  'ens-nobias',
  'agree',
  'agree-soft',
]) as Variant[];

const args = process.argv.slice(2);
/** `--pool`: the images are calib + pool (50,000, in prepare's order for `--samples calib --samples pool`). */
const usePool = boolFlag(args, '--pool');
const limit = intFlag(args, '--limit', usePool ? 50_000 : 10_000);
const reselect = boolFlag(args, '--reselect');
const jsonOut = stringFlag(args, '--json');
/** `--chain i,j,…`: also every variant on these exits (candidate indices) at each target. */
const extraChain = stringFlag(args, '--chain')?.split(',').map(Number);
/** `--ms D`: multi-scale heads, each candidate's head also reads the pooled features of the D candidates before it. */
const msDepth = intFlag(args, '--ms', 0);
/** `--mix KIND --copies K`: K mixed copies per calib image as extra training rows. */
const mix = stringFlag(args, '--mix') as MixKind | undefined;
if (mix && !MIX_KINDS.includes(mix)) throw new Error(`--mix: one of ${MIX_KINDS.join(', ')}`);
const mixCopies = mix ? intFlag(args, '--copies', 2) : 0;
/** `--capacity fixed|auto`: prepare's head capacity (default auto, which widens heads from 30,000 training rows). */
const capacity = stringFlag(args, '--capacity') as 'auto' | 'fixed' | undefined;
const modelKey = args[0] ?? 'resnet56';
const modelFile = path.join(shared, `models/cifar10-${modelKey}.onnx`);
if (!fs.existsSync(modelFile)) {
  console.log(`ensemble-study: ${modelFile} is absent (needs ../shared): nothing to do`);
  process.exit(0);
}
const u8 = (file: string): Uint8Array => new Uint8Array(fs.readFileSync(file));
const t00 = performance.now();
const secs = (): string => `${((performance.now() - t00) / 1000).toFixed(0)} s`;

// ---------- prepare's features (cached) ----------
const model = decodeModel(u8(modelFile));
const analysis = await analyzeModel(model, { ort });
const io = resolveModelIO(model, analysis, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
const K = io.classes;
const o0 = resolvePrepareOptions(capacity ? { capacity } : {});
const cuts = candidateCuts(analysis.cuts, o0.maxCandidates);
const requests = poolingRequests(cuts, o0);
const calibRaw = usePool
  ? new Uint8Array(
      Buffer.concat(['calib', 'pool'].map((s) => fs.readFileSync(path.join(shared, `data/cifar10/${s}-u8.bin`)))),
    )
  : u8(path.join(shared, 'data/cifar10/calib-u8.bin'));
const calib = shuffleAndLimit({ data: calibRaw, count: calibRaw.length / 3072 }, SHAPE, o0.seed, limit).batch;
const n = calib.count;
const testRaw = u8(path.join(shared, 'data/cifar10/test-u8.bin'));
const test = { data: testRaw, count: testRaw.length / 3072 };

/** Seconds spent extracting the mixed copies' features (0 when cached). */
let mixSeconds = 0;
async function features(set: 'calib' | 'test'): Promise<FeatureSet> {
  const base = path.join(cacheDir, `ens-${modelKey}.${set}${set === 'calib' ? `${usePool ? '+pool' : ''}.n${n}` : ''}`);
  const geometry = requests.map((r) => {
    const g = cutGeometry(r.cut);
    return { cut: r.cut, ...g, grid: r.grid, ...(r.maxGrid ? { maxGrid: r.maxGrid } : {}) };
  });
  const samples = set === 'test' ? test : augmentSamples(calib, SHAPE, o0.augment, o0.seed);
  const run = (s: typeof samples) => () => studyFeatures(io, { model, requests, samples: s });
  const label = `${set}: ${samples.count} rows`;
  // mixed copies, one cache per copy (copy a is the same whatever K, so K = 4 reuses K = 2's); all blocks are then read
  // from the caches straight into one array per cut (no second copy: 50,000 images × 3 rows fit in memory)
  const bases = [base];
  if (set === 'calib' && mix) {
    const copies = mixedCopies(calib, SHAPE, mix, mixCopies, kFoldAssign(n, o0.folds, o0.seed), o0.seed);
    if (!fs.existsSync(`${base}.teacher`)) await writeFeatures(base, label, run(samples));
    for (let a = 0; a < mixCopies; a++) {
      const at = `${base}.${mix}.c${a}`;
      const t0 = performance.now();
      const one = { data: copies.data.subarray(a * n * 3072, (a + 1) * n * 3072), count: n };
      if (!fs.existsSync(`${at}.teacher`)) await writeFeatures(at, `${mix} copy ${a}: ${n} rows`, run(one));
      mixSeconds += (performance.now() - t0) / 1000;
      bases.push(at);
    }
  }
  const { teacher, x } =
    bases.length > 1
      ? {
          teacher: readConcat(bases.map((b) => `${b}.teacher`)),
          x: requests.map((_, i) => readConcat(bases.map((b) => `${b}.${i}`))),
        }
      : await cachedFeatures(base, requests.length, label, run(samples));
  return {
    n: teacher.length / K,
    k: K,
    teacher,
    cuts: geometry.map((g, i) => ({
      ...g,
      dim: headFeatureDim(g.channels, g.grid, g.maxGrid),
      x: x[i]!,
    })),
  };
}
const ms =
  msDepth > 0
    ? { calib: multiScale(await features('calib'), msDepth), test: multiScale(await features('test'), msDepth) }
    : undefined;
const calibF = ms?.calib.set ?? (await features('calib'));
const testF = ms?.test.set ?? (await features('test'));
/** `--power a`: every pooled feature x becomes sign(x)·|x|^a before training (power normalisation; scratch study). */
const power = Number(stringFlag(args, '--power') ?? 1);
if (power !== 1)
  for (const set of [calibF, testF])
    for (const c of set.cuts) {
      const x = c.x as Float32Array;
      for (let i = 0; i < x.length; i++) {
        const v = x[i]!;
        x[i] = v >= 0 ? Math.pow(v, power) : -Math.pow(-v, power);
      }
    }
const nTest = testF.n;
const testTeacher = argmaxRows(testF.teacher, nTest, K);
const testLabels = u8(path.join(shared, 'data/cifar10/test-labels.u8')).subarray(0, nTest);
const backboneTop1 = testTeacher.reduce((a, c, r) => a + (c === testLabels[r] ? 1 : 0), 0) / nTest;
console.error(`features ready (${secs()})`);

// ---------- prepare's candidate heads, selection, final heads ----------
const fitContext = (target: number): FitContext => ({
  o: { ...o0, target },
  analysis,
  io,
  timer: new StepTimer(),
  warnings: [],
  progress: () => undefined,
  options: {},
  samples: { count: n },
});
const c0 = fitContext(TARGETS[0]);
const data = headData(c0, cuts, calibF, o0.augment.length + mixCopies);
const tCand = performance.now();
const { trained } = await trainCandidates(c0, data, true);
const candidateSeconds = (performance.now() - tCand) / 1000;
const configOf = bestConfigs(trained);
console.error(`candidate heads trained (${secs()})`);
const { costs: denseCosts, overheadUnit } = headCosts(c0, data, (i) => configOf[i]!, undefined);
// multi-scale heads: their geometry is a stand-in (dense MACs only), the pooling of every cut they read is added here
const macsCosts: CascadeCosts = ms
  ? { ...denseCosts, headCost: Array.from(denseCosts.headCost, (h, i) => h + ms.calib.poolMacs[i]!) }
  : denseCosts;
const overhead = o0.overheadFraction * overheadUnit;
const oofProbs = cuts.map((_, i) => trained[i]!.get(configOf[i]!.label)!.probs!);
const oofScores = cuts.map((_, i) => trained[i]!.get(configOf[i]!.label)!.scores);
const foldOf = data.foldOf.subarray(0, n);
const teacherP = calibF.teacher.subarray(0, n * K);
const teacherHard = new Float32Array(n * K);
data.teacherPred.forEach((c, r) => (teacherHard[r * K + c] = 1));
const baseSel = TARGETS.map((target) =>
  ms
    ? selectExitsWithRule(oofScores, macsCosts, {
        target,
        overhead,
        curvePoints: o0.curvePoints,
        rule: o0.thresholdRule,
      })
    : selectExitsFor(fitContext(target), data, trained, (i) => configOf[i]!),
);
const finalFor =
  reselect || extraChain
    ? cuts.map((_, i) => i)
    : [...new Set(baseSel.flatMap((s) => s.selected))].sort((a, b) => a - b);
const tFinal = performance.now();
const finals = await trainFinalHeads(c0, data, finalFor, configOf);
const finalSeconds = (performance.now() - tFinal) / 1000;
const testProbs: (Float32Array | undefined)[] = cuts.map(() => undefined);
for (const fh of finals) {
  const x = configFeatures(testF.cuts[fh.i]!, configOf[fh.i]!).x as Float32Array;
  const out = new Float32Array(nTest * K);
  predictHeadRows(fh.head, x, null, nTest, out, false);
  testProbs[fh.i] = out;
}
console.error(`final heads on ${finalFor.length} cuts (${secs()})`);

// ---------- the geometric ensemble (Zero Time Waste) ----------
const FLOOR = 1e-8;
const logOf = (p: Float32Array): Float32Array => p.map((v) => Math.log(Math.max(v, FLOOR)));
const oofLog = oofProbs.map(logOf);
const testLog = testProbs.map((p) => (p ? logOf(p) : undefined));

interface EnsembleFit {
  readonly w: Float64Array;
  readonly b: Float64Array;
}

/** Row `r`'s ensemble logits Σ w_i·L_i + b into `z`; returns their max. */
function ensembleLogits(
  L: readonly Float32Array[],
  w: Float64Array,
  b: Float64Array,
  r: number,
  z: Float64Array,
): number {
  let mx = -Infinity;
  for (let c = 0; c < K; c++) {
    let v = b[c]!;
    for (let i = 0; i < L.length; i++) v += w[i]! * L[i]![r * K + c]!;
    z[c] = v;
    if (v > mx) mx = v;
  }
  return mx;
}

/** Ensemble probabilities of rows `rows` (all rows when null) of logs `L` under `fit`, into a new `[count, K]`. */
function ensembleApply(
  L: readonly Float32Array[],
  fit: EnsembleFit,
  rows: Int32Array | null,
  count: number,
): Float32Array {
  const out = new Float32Array(count * K);
  const z = new Float64Array(K);
  for (let r = 0; r < count; r++) {
    const mx = ensembleLogits(L, fit.w, fit.b, rows ? rows[r]! : r, z);
    let s = 0;
    for (let c = 0; c < K; c++) s += z[c] = Math.exp(z[c]! - mx);
    for (let c = 0; c < K; c++) out[r * K + c] = z[c]! / s;
  }
  return out;
}

/** Solves `H x = g` (symmetric positive definite, P small) by Gaussian elimination with partial pivoting. */
function solve(H: Float64Array, g: Float64Array, P: number): Float64Array {
  const A = Float64Array.from(H);
  const x = Float64Array.from(g);
  for (let col = 0; col < P; col++) {
    let piv = col;
    for (let r = col + 1; r < P; r++) if (Math.abs(A[r * P + col]!) > Math.abs(A[piv * P + col]!)) piv = r;
    if (piv !== col) {
      for (let c = 0; c < P; c++) [A[col * P + c], A[piv * P + c]] = [A[piv * P + c]!, A[col * P + c]!];
      [x[col], x[piv]] = [x[piv]!, x[col]!];
    }
    const d = A[col * P + col]!;
    for (let r = col + 1; r < P; r++) {
      const f = A[r * P + col]! / d;
      if (f === 0) continue;
      for (let c = col; c < P; c++) A[r * P + c]! -= f * A[col * P + c]!;
      x[r]! -= f * x[col]!;
    }
  }
  for (let r = P - 1; r >= 0; r--) {
    let s = x[r]!;
    for (let c = r + 1; c < P; c++) s -= A[r * P + c]! * x[c]!;
    x[r] = s / A[r * P + r]!;
  }
  return x;
}

/**
 * Fits w (>= 0, one per exit in `L`) and a per-class bias b minimising the mean cross-entropy of softmax(Σ w_i L_i + b)
 * to the teacher probabilities, over `rows`: projected Newton with backtracking, from "the last exit alone".
 */
function ensembleFit(L: readonly Float32Array[], teacher: Float32Array, rows: Int32Array, bias: boolean): EnsembleFit {
  const m = L.length;
  const P = bias ? m + K : m;
  const ridge = 1e-4;
  const w = new Float64Array(m);
  w[m - 1] = 1;
  const b = new Float64Array(K);
  const z = new Float64Array(K);
  const q = new Float64Array(K);
  const u = new Float64Array(P * K);
  const lossAt = (ww: Float64Array, bb: Float64Array): number => {
    let loss = 0;
    for (const r of rows) {
      const mx = ensembleLogits(L, ww, bb, r, z);
      let s = 0;
      for (let c = 0; c < K; c++) s += Math.exp(z[c]! - mx);
      const lse = mx + Math.log(s);
      for (let c = 0; c < K; c++) loss -= teacher[r * K + c]! * (z[c]! - lse);
    }
    let reg = 0;
    for (let i = 0; i < m; i++) reg += ww[i]! * ww[i]!;
    for (let c = 0; c < K; c++) reg += bb[c]! * bb[c]!;
    return loss / rows.length + 0.5 * ridge * reg;
  };
  let loss = lossAt(w, b);
  for (let it = 0; it < 40; it++) {
    const g = new Float64Array(P);
    const H = new Float64Array(P * P);
    for (const r of rows) {
      const mx = ensembleLogits(L, w, b, r, z);
      let s = 0;
      for (let c = 0; c < K; c++) s += q[c] = Math.exp(z[c]! - mx);
      for (let c = 0; c < K; c++) q[c] = q[c]! / s;
      // θ = (w, b), dz_c/dw_i = L_ic, dz_c/db_c' = δ: the Hessian (diag q − q qᵀ) in those coordinates, by block.
      for (let i = 0; i < m; i++) {
        const Li = L[i]!;
        let qv = 0;
        for (let c = 0; c < K; c++) qv += q[c]! * Li[r * K + c]!;
        let gi = 0;
        for (let c = 0; c < K; c++) {
          const l = Li[r * K + c]!;
          u[i * K + c] = q[c]! * (l - qv);
          gi += (q[c]! - teacher[r * K + c]!) * l;
        }
        g[i]! += gi;
        for (let i2 = 0; i2 <= i; i2++) {
          const L2 = L[i2]!;
          let h = 0;
          for (let c = 0; c < K; c++) h += L2[r * K + c]! * u[i * K + c]!;
          H[i2 * P + i]! += h;
        }
        if (bias) for (let c = 0; c < K; c++) H[i * P + m + c]! += u[i * K + c]!;
      }
      if (bias)
        for (let c = 0; c < K; c++) {
          g[m + c]! += q[c]! - teacher[r * K + c]!;
          for (let c2 = c; c2 < K; c2++) H[(m + c) * P + m + c2]! += (c === c2 ? q[c]! : 0) - q[c]! * q[c2]!;
        }
    }
    const N = rows.length;
    for (let p = 0; p < P; p++) {
      g[p] = g[p]! / N + ridge * (p < m ? w[p]! : b[p - m]!);
      for (let p2 = p; p2 < P; p2++) {
        H[p * P + p2] = H[p * P + p2]! / N + (p === p2 ? ridge : 0);
        H[p2 * P + p] = H[p * P + p2]!;
      }
    }
    const d = solve(H, g, P);
    let step = 1;
    let improved = false;
    for (let ls = 0; ls < 20; ls++) {
      const w2 = w.map((v, i) => Math.max(0, v - step * d[i]!));
      const b2 = bias ? b.map((v, c) => v - step * d[m + c]!) : b;
      const l2 = lossAt(w2, b2);
      if (l2 < loss - 1e-12) {
        w.set(w2);
        b.set(b2);
        improved = loss - l2 > 1e-9;
        loss = l2;
        break;
      }
      step /= 2;
    }
    if (!improved) break;
  }
  return { w, b };
}

/** Cross-fitted ensemble outputs at the last exit of `chain` on calib (each fold from weights fit on the others), and
 * the outputs of the weights fit on all calib rows on test. Memoised by chain. */
const ensMemo = new Map<string, { oof: Float32Array; test: Float32Array | undefined; weights: number[] }>();
function ensembleOf(
  chain: readonly number[],
  kind: 'soft' | 'hard' | 'soft-nobias',
): { oof: Float32Array; test: Float32Array | undefined; weights: number[] } {
  const key = `${kind}${chain.join(',')}`;
  const target = kind === 'hard' ? teacherHard : teacherP;
  const bias = kind !== 'soft-nobias';
  const hit = ensMemo.get(key);
  if (hit) return hit;
  const L = chain.map((i) => oofLog[i]!);
  const oof = new Float32Array(n * K);
  const folds = Math.max(...foldOf) + 1;
  for (let f = 0; f < folds; f++) {
    const train = Int32Array.from(
      (function* () {
        for (let r = 0; r < n; r++) if (foldOf[r] !== f) yield r;
      })(),
    );
    const held = Int32Array.from(
      (function* () {
        for (let r = 0; r < n; r++) if (foldOf[r] === f) yield r;
      })(),
    );
    const fit = ensembleFit(L, target, train, bias);
    const p = ensembleApply(L, fit, held, held.length);
    held.forEach((r, j) => oof.set(p.subarray(j * K, (j + 1) * K), r * K));
  }
  const all = Int32Array.from({ length: n }, (_, r) => r);
  const fit = ensembleFit(L, target, all, bias);
  const tl = chain.map((i) => testLog[i]);
  const testOut = tl.every((x) => x) ? ensembleApply(tl as Float32Array[], fit, null, nTest) : undefined;
  const res = { oof, test: testOut, weights: [...fit.w].map((v) => Math.round(v * 1000) / 1000) };
  ensMemo.set(key, res);
  return res;
}

// ---------- the agreement-aware logistic map ----------
const EPS = 1e-6;
const logit = (s: number): number => {
  const c = Math.min(1 - EPS, Math.max(EPS, s));
  return Math.log(c / (1 - c));
};
const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** P(agree | s, a) = σ(α·logit(s) + β + γ·a) by damped Newton with a small ridge (γ = 0 without the extra input `group`);
 * α kept > 0. */
function fitMap(e: ExitScores, group: Float32Array | undefined, groups = 0): ScoreModel {
  // groups > 0: the group (answer's class) enters one-hot (groups − 1 intercept shifts), else as one real input
  const P = groups > 0 ? 1 + groups : group ? 3 : 2;
  const th = new Float64Array(P);
  th[0] = 1;
  const zs = Float64Array.from(e.score.subarray(0, e.n), logit);
  const ridge = 1e-3;
  const x = new Float64Array(P);
  const row = (i: number): Float64Array => {
    x[0] = zs[i]!;
    x[1] = 1;
    if (groups > 0) for (let g = 1; g < groups; g++) x[1 + g] = group![i] === g ? 1 : 0;
    else if (group) x[2] = group[i]!;
    return x;
  };
  const nll = (t: Float64Array): number => {
    let l = 0;
    for (let i = 0; i < e.n; i++) {
      const xi = row(i);
      let v = 0;
      for (let p = 0; p < P; p++) v += t[p]! * xi[p]!;
      // −log σ(v) for agree, −log(1 − σ(v)) otherwise, stably.
      const sv = e.agree[i] ? -v : v;
      l += sv > 0 ? sv + Math.log1p(Math.exp(-sv)) : Math.log1p(Math.exp(sv));
    }
    for (let p = 0; p < P; p++) l += 0.5 * ridge * t[p]! * t[p]!;
    return l;
  };
  let cur = nll(th);
  for (let it = 0; it < 100; it++) {
    const g = new Float64Array(P);
    const H = new Float64Array(P * P);
    for (let p = 0; p < P; p++) {
      g[p] = ridge * th[p]!;
      H[p * P + p] = ridge;
    }
    for (let i = 0; i < e.n; i++) {
      const xi = row(i);
      let v = 0;
      for (let p = 0; p < P; p++) v += th[p]! * xi[p]!;
      const pr = sigmoid(v);
      const r = pr - e.agree[i]!;
      const wgt = pr * (1 - pr);
      for (let p = 0; p < P; p++) {
        g[p]! += r * xi[p]!;
        for (let p2 = 0; p2 < P; p2++) H[p * P + p2]! += wgt * xi[p]! * xi[p2]!;
      }
    }
    const d = solve(H, g, P);
    let step = 1;
    let moved = 0;
    for (let ls = 0; ls < 30; ls++) {
      const t2 = th.map((v, p) => v - step * d[p]!);
      const l2 = nll(t2);
      if (l2 <= cur) {
        moved = cur - l2;
        th.set(t2);
        cur = l2;
        break;
      }
      step /= 2;
    }
    if (!(moved > 1e-10)) break;
  }
  if (!th.every(Number.isFinite)) return { slope: 1, intercept: 0, shift: 0 };
  if (groups > 0)
    return { slope: Math.max(1e-3, th[0]!), intercept: th[1]!, shift: 0, classShift: [0, ...th.subarray(2)] };
  return { slope: Math.max(1e-3, th[0]!), intercept: th[1]!, shift: group ? th[2]! : 0 };
}

/** A fitted map: P(agree | s, a) = σ(slope·logit(s) + intercept + shift·a), or with `classShift` + classShift[a]. */
interface ScoreModel {
  readonly slope: number;
  readonly intercept: number;
  readonly shift: number;
  readonly classShift?: readonly number[];
}
/** The map's extra term for group value `a`. */
const extraTerm = (m: ScoreModel, a: number): number => (m.classShift ? m.classShift[a]! : m.shift * a);

// ---------- one variant on one chain of exits ----------
/** Per position of a chain: the exit's scores (own head or ensemble) on calib (out of fold) and test, and the
 * agreement flag with the previous position's answer (undefined at the first position or without `agree`). */
interface Position {
  readonly calib: ExitScores;
  readonly test: ExitScores | undefined;
  /** Probabilities behind `calib` / `test` (the next position's soft agreement input reads them). */
  readonly calibProbs: Float32Array;
  readonly testProbs: Float32Array | undefined;
  /** The map's extra input: 0/1 (binary: two thresholds per exit) or a real value (soft: the rule score is compared). */
  readonly calibGroup?: Float32Array;
  readonly testGroup?: Float32Array;
  readonly binary?: boolean;
  /** Groups of a grouped input (binary: 2, class: the classes): one max-softmax threshold per group. */
  readonly groups?: number;
  readonly weights?: number[];
}

function positions(chain: readonly number[], variant: Variant): Position[] {
  const spec: VariantSpec = SPECS[variant];
  const calibTeacher = data.teacherPred;
  const out: Position[] = [];
  chain.forEach((i, j) => {
    let cp: Float32Array;
    let tp: Float32Array | undefined;
    let weights: number[] | undefined;
    if (spec.ens !== 'none') {
      const e = ensembleOf(chain.slice(0, j + 1), spec.ens);
      [cp, tp, weights] = [e.oof, e.test, e.weights];
    } else [cp, tp] = [oofProbs[i]!, testProbs[i]];
    const kind = spec.score ?? 'max';
    const calibS = rescored(spec.ens === 'none' ? oofScores[i]! : exitScores(cp, n, K, calibTeacher), cp, K, kind);
    const testS = tp ? rescored(exitScores(tp, nTest, K, testTeacher), tp, K, kind) : undefined;
    const prev = out[j - 1];
    /** The extra input of each row: previous answer == this one (binary), or logit of prev[this answer] (soft). */
    const input = (a: ExitScores, prevProbs: Float32Array, prevScores: ExitScores): Float32Array =>
      Float32Array.from(a.pred, (c, r) =>
        spec.agree === 'binary' ? (c === prevScores.pred[r] ? 1 : 0) : logit(prevProbs[r * K + c]!),
      );
    /** maxmargin: logit(p1 − p2) of the exit's own answer, a second real input of the map. */
    const marginInput = (p: Float32Array, rows: number): Float32Array => confidence(p, rows, K, 'margin').map(logit);
    const extra =
      spec.agree === 'margin'
        ? {
            calibGroup: marginInput(cp, n),
            ...(tp ? { testGroup: marginInput(tp, nTest) } : {}),
          }
        : spec.agree === 'class'
          ? {
              groups: K,
              calibGroup: Float32Array.from(calibS.pred),
              ...(testS ? { testGroup: Float32Array.from(testS.pred) } : {}),
            }
          : (spec.agree === 'binary' || spec.agree === 'soft') && prev
            ? {
                binary: spec.agree === 'binary',
                ...(spec.agree === 'binary' ? { groups: 2 } : {}),
                calibGroup: input(calibS, prev.calibProbs, prev.calib),
                ...(testS && prev.test && prev.testProbs ? { testGroup: input(testS, prev.testProbs, prev.test) } : {}),
              }
            : {};
    out.push({
      calib: calibS,
      test: testS,
      calibProbs: cp,
      testProbs: tp,
      ...extra,
      ...(weights ? { weights } : {}),
    });
  });
  return out;
}

const chainCosts = (chain: readonly number[], withOverhead: boolean): CascadeCosts => ({
  backboneCostAt: chain.map((i) => macsCosts.backboneCostAt[i]!),
  headCost: chain.map((i) => macsCosts.headCost[i]!),
  fullCost: macsCosts.fullCost,
  overhead: withOverhead ? overhead : 0,
});

/** Rule score of a position's samples: 1 − (1 − P(agree | s, a)) / remaining. */
function mapped(e: ExitScores, group: Float32Array | undefined, m: ScoreModel, remaining: number): ExitScores {
  return {
    ...e,
    score: Float32Array.from(e.score.subarray(0, e.n), (s, r) => {
      const p = sigmoid(m.slope * logit(s) + m.intercept + (group ? extraTerm(m, group[r]!) : 0));
      return 1 - (1 - p) / remaining;
    }),
  };
}

/** Rows of `e` whose group is `g`. */
function subset(e: ExitScores, group: Float32Array, g: number): ExitScores {
  const idx: number[] = [];
  for (let r = 0; r < e.n; r++) if (group[r] === g) idx.push(r);
  return {
    n: idx.length,
    score: Float32Array.from(idx, (r) => e.score[r]!),
    pred: Int32Array.from(idx, (r) => e.pred[r]!),
    agree: Uint8Array.from(idx, (r) => e.agree[r]!),
  };
}

/** Exit decisions as scores 1/0 (leaves / goes on), to simulate with thresholds 0.5: the raw score against the
 * threshold of the row's group (binary input) or, with a real-valued input, the rule score against the knob. */
function decided(
  e: ExitScores,
  p: Pick<Position, 'groups'>,
  group: Float32Array | undefined,
  th: readonly number[],
  rule: { map: ScoreModel; remaining: number; knob: number },
): ExitScores {
  if (group && !p.groups) {
    const m = mapped(e, group, rule.map, rule.remaining);
    return { ...e, score: Float32Array.from(m.score, (v) => (v >= rule.knob ? 1 : 0)) };
  }
  return {
    ...e,
    score: Float32Array.from(e.score.subarray(0, e.n), (s, r) => (s >= th[group ? group[r]! : 0]! ? 1 : 0)),
  };
}

interface Outcome {
  readonly exits: number[];
  readonly knob: number;
  readonly cost: number;
  readonly calibAgreement: number;
  readonly calibMacs: number;
  readonly testAgreement?: number;
  readonly testMacs?: number;
  readonly testShares?: number[];
  /** The cascade's top-1 on test minus the backbone's (fraction). */
  readonly testTop1Delta?: number;
  /** Cheapest MACs among dense knobs whose TEST agreement meets the target (hindsight). */
  readonly testFrontier?: number;
  readonly thresholds: number[][];
  readonly maps: ScoreModel[];
  readonly weights?: number[][];
}

/** Knob, thresholds and outcome of `variant` on `chain` at `target`, as prepare chooses them on calib. */
function evaluate(chain: readonly number[], variant: Variant, target: number, withTest: boolean): Outcome {
  const pos = positions(chain, variant);
  const costs = chainCosts(chain, true);
  const remaining = chain.map((i) =>
    Math.min(1, Math.max(1e-4, (macsCosts.fullCost - macsCosts.backboneCostAt[i]!) / macsCosts.fullCost)),
  );
  const maps = pos.map((p) => fitMap(p.calib, p.calibGroup, p.groups !== undefined && !p.binary ? p.groups : 0));
  const mappedScores = pos.map((p, j) => mapped(p.calib, p.calibGroup, maps[j]!, remaining[j]!));
  const all = chain.map((_, j) => j);
  const choice = chooseThresholds(mappedScores, all, costs, { target });
  const thresholdsAt = (knob: number): number[][] =>
    pos.map((p, j) => {
      const m = maps[j]!;
      const grouped = p.calibGroup && p.groups ? p.calibGroup : undefined;
      const groups = grouped ? Array.from({ length: p.groups! }, (_, g) => g) : [0];
      return groups.map((g) => {
        const raw = grouped ? subset(p.calib, grouped, g) : p.calib;
        const mp = grouped ? subset(mappedScores[j]!, grouped, g) : mappedScores[j]!;
        const map: ScoreMap = { slope: m.slope, intercept: m.intercept + extraTerm(m, g), remaining: remaining[j]! };
        // a class no calib sample answers at this exit never leaves there
        return raw.n === 0 ? Infinity : rawThresholdOnSamples(raw, mp, map, knob);
      });
    });
  const half = chain.map(() => 0.5);
  /** Each position's decisions at `knob` on calib or test (1: leaves). */
  const decisionsAt = (knob: number, th: number[][], set: 'calib' | 'test'): ExitScores[] =>
    pos.map((p, j) =>
      decided(set === 'calib' ? p.calib : p.test!, p, set === 'calib' ? p.calibGroup : p.testGroup, th[j]!, {
        map: maps[j]!,
        remaining: remaining[j]!,
        knob,
      }),
    );
  /** The cascade at `knob` on calib or test. */
  const outcomeAt = (knob: number, th: number[][], set: 'calib' | 'test') =>
    simulateCascade(decisionsAt(knob, th, set), all, half, chainCosts(chain, false));
  const thresholds = thresholdsAt(choice.knob);
  const onCalib = outcomeAt(choice.knob, thresholds, 'calib');
  const base = {
    exits: [...chain],
    knob: choice.knob,
    cost: choice.macsFraction,
    calibAgreement: onCalib.agreement,
    calibMacs: onCalib.macsFraction,
    thresholds,
    maps,
    ...(pos[0]?.weights ? { weights: pos.map((p) => p.weights!) } : {}),
  };
  if (!withTest || !pos.every((p) => p.test)) return base;
  const onTest = outcomeAt(choice.knob, thresholds, 'test');
  // The frontier on test: the cheapest of FRONTIER_POINTS knobs (quantiles of the calib rule scores) whose agreement
  // on test itself meets the target — the scores' quality whatever the threshold sample (chosen with hindsight).
  const pooled = Float32Array.from(mappedScores.flatMap((m) => [...m.score])).sort();
  let frontier = 1;
  for (let q = 0; q < FRONTIER_POINTS; q++) {
    const knob = pooled[Math.round((q / (FRONTIER_POINTS - 1)) * (pooled.length - 1))]!;
    const o = outcomeAt(knob, thresholdsAt(knob), 'test');
    if (o.agreement >= target && o.macsFraction < frontier) frontier = o.macsFraction;
  }
  return {
    ...base,
    testAgreement: onTest.agreement,
    testMacs: onTest.macsFraction,
    testShares: onTest.exitShares,
    testTop1Delta: cascadeTop1(decisionsAt(choice.knob, thresholds, 'test'), testTeacher, testLabels) - backboneTop1,
    testFrontier: frontier,
  };
}

/** Knobs the test frontier tries. */
const FRONTIER_POINTS = 300;

function select(variant: Variant, target: number): number[] {
  const memo = new Map<string, number>();
  const E = cuts.length;
  const dMax = maxDisagreements(n, target);
  const costOf = (set: number[]): number => {
    const key = set.join(',');
    let v = memo.get(key);
    if (v === undefined) {
      v = set.length === 0 || dMax < 0 ? 1 + 0 : evaluate(set, variant, target, false).cost;
      memo.set(key, v);
    }
    return v;
  };
  const better = (a: number[], b: number[]): boolean => {
    const ca = costOf(a);
    const cb = costOf(b);
    return ca < cb - 1e-9 || (ca <= cb + 1e-9 && a.length < b.length);
  };
  const withAdd = (set: number[], e: number): number[] => [...set, e].sort((x, y) => x - y);
  let cur: number[] = [];
  for (;;) {
    let best: number[] | undefined;
    for (let e = 0; e < E; e++)
      if (!cur.includes(e)) {
        const cand = withAdd(cur, e);
        if (!best || better(cand, best)) best = cand;
      }
    if (best && better(best, cur)) cur = best;
    else break;
  }
  for (let iter = 0; iter < 10 * E + 10; iter++) {
    let best: number[] | undefined;
    const consider = (set: number[]): void => {
      if (!best || better(set, best)) best = set;
    };
    for (const e of cur) consider(cur.filter((x) => x !== e));
    for (let e = 0; e < E; e++) {
      if (cur.includes(e)) continue;
      consider(withAdd(cur, e));
      for (const r of cur)
        consider(
          withAdd(
            cur.filter((x) => x !== r),
            e,
          ),
        );
    }
    if (best && better(best, cur)) cur = best;
    else break;
  }
  console.error(`  ${variant} @ ${target}: ${memo.size} subsets (${secs()})`);
  return cur;
}

// ---------- the table ----------
interface Row extends Outcome {
  readonly variant: Variant;
  readonly target: number;
  readonly selection: 'prepare' | 'reselected' | 'given';
}
const rows: Row[] = [];
TARGETS.forEach((target, t) => {
  const chain = baseSel[t]!.selected;
  for (const variant of VARIANTS)
    rows.push({ variant, target, selection: 'prepare', ...evaluate(chain, variant, target, true) });
  if (extraChain)
    for (const variant of VARIANTS)
      rows.push({ variant, target, selection: 'given', ...evaluate(extraChain, variant, target, true) });
  if (reselect)
    for (const variant of VARIANTS.filter((v) => RESELECT.includes(v))) {
      const s = select(variant, target);
      rows.push({ variant, target, selection: 'reselected', ...evaluate(s, variant, target, true) });
    }
});
const pct = (x: number | undefined): string => (x === undefined ? '–' : `${(100 * x).toFixed(2)} %`);
console.log(
  `\n${modelKey}, ${n} calib images (flip copies${mix ? ` + ${mixCopies} ${mix} copies` : ''}), measured on ${nTest} test images; prepare's exits: ${baseSel.map((s, t) => `${TARGETS[t]}: ${s.selected.join(',')}`).join('; ')}\n`,
);
console.log(
  `heads${ms ? ` (multi-scale, depth ${msDepth})` : ''}: candidates ${candidateSeconds.toFixed(0)} s, final ${finalSeconds.toFixed(0)} s; head MACs (% of the backbone) at prepare's exits: ${[...new Set(baseSel.flatMap((s) => s.selected))].map((i) => `${i}: ${((100 * macsCosts.headCost[i]!) / macsCosts.fullCost).toFixed(3)}`).join(', ')}\n`,
);
console.log(
  '| target | exits | variant | test MACs | test agreement | top-1 (points) | test frontier | calib MACs (agreement) | ensemble weights |',
);
console.log('|---:|---|---|---:|---:|---:|---:|---:|---|');
for (const r of rows)
  console.log(
    `| ${r.target} | ${r.selection}: ${r.exits.join(',')} | ${r.variant} | ${r.testMacs?.toFixed(3) ?? '–'} | ${pct(r.testAgreement)} | ${r.testTop1Delta === undefined ? '–' : (100 * r.testTop1Delta).toFixed(2)} | ${r.testFrontier?.toFixed(3) ?? '–'} | ${r.calibMacs.toFixed(3)} (${pct(r.calibAgreement)}) | ${r.weights ? r.weights.map((w) => `[${w.join(' ')}]`).join(' ') : ''} |`,
  );
console.error(
  `done (${secs()}; ${data.rows} training rows, mixed copies' features ${mixSeconds.toFixed(0)} s, max RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB)`,
);
if (jsonOut)
  fs.writeFileSync(
    jsonOut,
    JSON.stringify(
      {
        model: modelKey,
        calibImages: n,
        mix: mix ? { kind: mix, copies: mixCopies, featureSeconds: Math.round(mixSeconds) } : null,
        capacity: o0.capacity,
        trainingRows: data.rows,
        maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
        testImages: nTest,
        date: new Date().toISOString(),
        candidates: cuts.map((c) => c.tensor),
        configs: configOf.map((c) => c.label),
        heads: {
          multiScaleDepth: msDepth,
          candidateSeconds,
          finalSeconds,
          /** Per candidate: head MACs (pooling of every cut read included) and the backbone's. */
          headMacs: macsCosts.headCost,
          fullMacs: macsCosts.fullCost,
          ...(ms
            ? {
                sources: ms.calib.sources,
                dims: ms.calib.dims,
                poolMacs: ms.calib.poolMacs,
              }
            : {}),
        },
        backboneTop1,
        prepareSelection: baseSel.map((s, t) => ({
          target: TARGETS[t],
          exits: s.selected,
          macsFraction: s.macsFraction,
        })),
        seconds: Math.round((performance.now() - t00) / 1000),
        rows,
      },
      null,
      1,
    ),
  );

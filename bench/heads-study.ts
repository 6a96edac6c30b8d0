// `npm run bench:heads`: the study behind prepare's defaults on a CIFAR-10 ResNet (../shared): head variants
// (capacity, pooling grid, max pooling, augmented distillation pairs, epochs, a fixed k-means 1x1 convolution) x threshold rules, heads fit on `calib` only (5-fold
// out-of-fold outputs choose exits and thresholds), every number measured on `test`. Prints a Markdown table and
// writes it into BENCHMARKS.md between `<!-- bench:heads:<model>:start -->` and `<!-- bench:heads:<model>:end -->`
// (BENCH_NO_MD=1: not), with a JSON copy in bench/results/heads-<model>-<date>.json.
//
//   npx tsx bench/heads-study.ts [resnet56|resnet20] [variant,variant,…]
//   npx tsx bench/heads-study.ts --render <results.json> [<results.json> …]   (one block from several runs)
//
// Features are extracted once per model and kept in bench/.cache/ (about 1 GB for ResNet-56). BENCH_HEADS_LIMIT=N
// uses N calib images (seeded shuffle, as prepare's --limit) for quick runs; BENCH_HEADS_CHAIN=i,j,… sets the `+casc` exits. The `+casc` variant measures Zero Time
// Waste's cascading input (previous exit's log-probabilities appended to a head's features) on the exits selected
// without it (issue 13). Over 400 lines: one study script whose parts (features, fits, rows) share its module state.
import fs from 'node:fs';
import path from 'node:path';
import { augmentSamples, type AugmentKind } from '../src/calibrate/augment.js';
import {
  argmaxRows,
  exitScores,
  simulateCascade,
  type CascadeCosts,
  type ExitScores,
} from '../src/policy/cascade-sim.js';
import {
  mapExitScores,
  rawThresholdFor,
  selectExitsWithRule,
  type RuleSelection,
  type ThresholdRule,
} from '../src/policy/exit-rule.js';
import { cutGeometry } from '../src/calibrate/features.js';
import { candidateCuts } from '../src/calibrate/candidate-cuts.js';
import { resolveModelIO } from '../src/calibrate/prepare.js';
import { kFoldAssign } from '../src/calibrate/rng.js';
import { shuffleAndLimit } from '../src/calibrate/samples.js';
import {
  predictHeadRows,
  trainHeadOnRows,
  type TrainedHead,
  type TrainHeadOptions,
} from '../src/calibrate/train-head.js';
import { averageLogitHeads } from '../src/calibrate/ensemble.js';
import { createRng } from '../src/calibrate/rng.js';
import { analyzeModel, decodeModel } from '../src/core.js';
import { writeBlock } from '../scripts/md-block.mjs';
import { encodedFeatures, encoderWidth, fitEncoders, type Encoder } from './conv-features.js';
import { replayTop1 } from './cascade-replay.js';
import { renderHeadsBlock, type StudyRecord, type StudyRow } from './heads-render.js';
import { studyFeatures, root, shared, cacheDir, ort, K, SHAPE, SESSION } from './study-env.js';

const resultsDir = path.join(root, 'bench/results');
const started = new Date();

interface Variant {
  readonly kind: 'pool-linear' | 'pool-mlp';
  readonly hidden?: number;
  /** Max-pooling grid side (0 none). */
  readonly max: number;
  readonly augment: readonly AugmentKind[];
  /** Average-pooling grid side at every cut; default: 4 at cuts of <= 16 channels, else 2 (prepare's chooseGrid(…, 256)). */
  readonly grid?: number;
  /** Training epochs (default: trainHead's). */
  readonly epochs?: number;
  /** Add the features of a fixed k-means 1x1 convolution + ReLU + global avg/max pooling (bench/conv-features.ts). */
  readonly conv?: boolean;
  /**
   * Zero Time Waste's "cascading" input: after the usual rows, the exits the cost-calibrated rule selects at 0.99 are
   * refit with the previous selected exit's log-probabilities appended to their features (fold by fold: a fold's head
   * reads the same fold's previous head), and both head sets are measured with selection among those exits only.
   */
  readonly cascade?: boolean;
  /**
   * Head ensemble at every cut (issue 13): M heads per fold and M final heads, seeds 1000·m apart (member 0 is the
   * single head's seed); the out-of-fold and test outputs are the members' mean logits ('logit': one wider MLP,
   * `averageLogitHeads`) or mean probabilities ('prob'). Head cost: M members.
   */
  readonly ensemble?: { readonly members: number; readonly average: 'logit' | 'prob'; readonly bootstrap?: boolean };
}

/** The variants measured; `prepare`'s default is pool-linear on every cut plus pool-mlp on a shortlist, max 2, flip. */
const VARIANTS: Readonly<Record<string, Variant>> = {
  linear: { kind: 'pool-linear', max: 0, augment: [] },
  'linear+flip': { kind: 'pool-linear', max: 0, augment: ['flip'] },
  'linear+flip+shift': { kind: 'pool-linear', max: 0, augment: ['flip', 'shift'] },
  'linear+max': { kind: 'pool-linear', max: 2, augment: [] },
  'linear+max+flip': { kind: 'pool-linear', max: 2, augment: ['flip'] },
  'mlp64+flip': { kind: 'pool-mlp', max: 0, augment: ['flip'] },
  'mlp128+flip': { kind: 'pool-mlp', hidden: 128, max: 0, augment: ['flip'] },
  'linear+max+flip+grid4': { kind: 'pool-linear', max: 2, augment: ['flip'], grid: 4 },
  'mlp64+max+flip+grid4': { kind: 'pool-mlp', max: 2, augment: ['flip'], grid: 4 },
  'mlp64+max+flip': { kind: 'pool-mlp', max: 2, augment: ['flip'] },
  'mlp128+max+flip': { kind: 'pool-mlp', hidden: 128, max: 2, augment: ['flip'] },
  'linear+max+flip+shift': { kind: 'pool-linear', max: 2, augment: ['flip', 'shift'] },
  'mlp64+max+flip+shift': { kind: 'pool-mlp', max: 2, augment: ['flip', 'shift'] },
  'mlp64+max+flip+shift+grid4': { kind: 'pool-mlp', max: 2, augment: ['flip', 'shift'], grid: 4 },
  'linear+max+flip+e12': { kind: 'pool-linear', max: 2, augment: ['flip'], epochs: 12 },
  'mlp64+max+flip+e12': { kind: 'pool-mlp', max: 2, augment: ['flip'], epochs: 12 },
  'linear+max+flip+conv': { kind: 'pool-linear', max: 2, augment: ['flip'], conv: true },
  'mlp64+max+flip+conv': { kind: 'pool-mlp', max: 2, augment: ['flip'], conv: true },
  'mlp64+max+flip+casc': { kind: 'pool-mlp', max: 2, augment: ['flip'], cascade: true },
  'mlp192+max+flip': { kind: 'pool-mlp', hidden: 192, max: 2, augment: ['flip'] },
  'mlp64+max+flip+ens3': { kind: 'pool-mlp', max: 2, augment: ['flip'], ensemble: { members: 3, average: 'logit' } },
  'mlp64+max+flip+ens3p': { kind: 'pool-mlp', max: 2, augment: ['flip'], ensemble: { members: 3, average: 'prob' } },
  'mlp64+max+flip+ens3b': {
    kind: 'pool-mlp',
    max: 2,
    augment: ['flip'],
    ensemble: { members: 3, average: 'logit', bootstrap: true },
  },
  'mlp64+max+flip+ens5': { kind: 'pool-mlp', max: 2, augment: ['flip'], ensemble: { members: 5, average: 'logit' } },
  'linear+max+flip+ens3': {
    kind: 'pool-linear',
    max: 2,
    augment: ['flip'],
    ensemble: { members: 3, average: 'logit' },
  },
};
const RULES: readonly ThresholdRule[] = ['global', 'cost-calibrated'];
const TARGETS = [0.985, 0.99];

if (process.argv[2] === '--render') {
  // npx tsx bench/heads-study.ts --render <results.json> [<results.json> …]: one block from earlier runs.
  const files = process.argv.slice(3);
  const records = files.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as StudyRecord);
  const md = renderHeadsBlock(
    records,
    files.map((f) => path.relative(root, path.resolve(f))),
  );
  await writeBlock(path.join(root, 'BENCHMARKS.md'), `bench:heads:${records[0]!.model}`, md);
  console.log(md);
  process.exit(0);
}
const modelKey = process.argv[2] ?? 'resnet56';
const wanted = process.argv[3] ? process.argv[3].split(',') : Object.keys(VARIANTS);
for (const w of wanted)
  if (!VARIANTS[w]) throw new Error(`unknown variant "${w}" (${Object.keys(VARIANTS).join(', ')})`);
const modelFile = path.join(shared, `models/cifar10-${modelKey}.onnx`);
if (!fs.existsSync(modelFile)) {
  console.log(`heads-study: ${modelFile} is absent (needs ../shared): nothing to do`);
  process.exit(0);
}

const f32 = (file: string): Float32Array => {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};
const u8 = (file: string): Uint8Array => new Uint8Array(fs.readFileSync(file));

const model = decodeModel(u8(modelFile));
const analysis = await analyzeModel(model, { ort });
const io = resolveModelIO(model, analysis, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
const cuts = candidateCuts(analysis.cuts, 16);
/** Average-pooling grid of each cut for a variant's `grid` (undefined: prepare's default rule). */
const gridsOf = (grid: number | undefined): [number, number][] =>
  cuts.map((c): [number, number] => (grid ? [grid, grid] : cutGeometry(c).channels <= 16 ? [4, 4] : [2, 2]));
const calibRaw = u8(path.join(shared, 'data/cifar10/calib-u8.bin'));
const calibLimit = Number(process.env.BENCH_HEADS_LIMIT ?? Infinity);
const calib = shuffleAndLimit({ data: calibRaw, count: calibRaw.length / 3072 }, SHAPE, 0, calibLimit).batch; // as prepare does (seed 0)
const testData = u8(path.join(shared, 'data/cifar10/test-u8.bin'));
const test = { data: testData, count: testData.length / 3072 };
const labels = Int32Array.from(u8(path.join(shared, 'data/cifar10/test-labels.u8')));
if (!Number.isInteger(test.count) || labels.length !== test.count)
  throw new Error(`test-u8.bin holds ${test.count} images of 32x32x3, test-labels.u8 ${labels.length} labels`);
const n = calib.count;

/** The images of a sample set: calib, test, or the one augmented copy of calib. */
function samplesOf(set: 'calib' | 'test' | AugmentKind): { data: Uint8Array; count: number } {
  if (set === 'test') return test;
  if (set === 'calib') return calib;
  const a = augmentSamples(calib, SHAPE, [set], 0);
  return { data: a.data.subarray(n * 3072), count: n };
}

/** Features (avg grid + 2x2 max) of every candidate cut and the teacher, for one sample set and grid; cached on disk. */
async function features(
  set: 'calib' | 'test' | AugmentKind,
  grid?: number,
): Promise<{ teacher: Float32Array; x: Float32Array[]; dims: number[] }> {
  const grids = gridsOf(grid);
  const limited = set !== 'test' && Number.isFinite(calibLimit) ? `.n${calibLimit}` : '';
  const base = path.join(cacheDir, `${modelKey}.${set}${limited}${grid ? `.g${grid}` : ''}`);
  const dims = cuts.map((c, i) => cutGeometry(c).channels * (grids[i]![0] * grids[i]![1] + 4));
  if (!fs.existsSync(`${base}.teacher`)) {
    fs.mkdirSync(cacheDir, { recursive: true });
    const samples = samplesOf(set);
    const t0 = performance.now();
    const f = await studyFeatures(io, {
      model,
      requests: cuts.map((cut, i) => ({ cut, grid: grids[i]!, maxGrid: [2, 2] as const })),
      samples,
    });
    console.error(`features ${set}: ${samples.count} images, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    fs.writeFileSync(`${base}.teacher`, f.teacher);
    f.cuts.forEach((c, i) => fs.writeFileSync(`${base}.${i}`, c.x));
  }
  return { teacher: f32(`${base}.teacher`), x: cuts.map((_, i) => f32(`${base}.${i}`)), dims };
}

let encoders: Encoder[] | undefined;
/** Conv-encoded features (`[n, 2K]` per cut) of one sample set; cached on disk. */
async function convFeatures(set: 'calib' | 'test' | AugmentKind): Promise<Float32Array[]> {
  const limited = set !== 'test' && Number.isFinite(calibLimit) ? `.n${calibLimit}` : '';
  const base = path.join(cacheDir, `${modelKey}.${set}${limited}.conv`);
  if (!fs.existsSync(`${base}.${cuts.length - 1}`)) {
    const ctx = { model, cuts, input: io.input, ort, sessionOptions: SESSION };
    const t0 = performance.now();
    encoders ??= await fitEncoders(ctx, calib);
    const samples = samplesOf(set);
    const f = await encodedFeatures(ctx, encoders, samples);
    f.forEach((x, i) => fs.writeFileSync(`${base}.${i}`, x));
    console.error(`conv features ${set}: ${samples.count} images, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
  return cuts.map((_, i) => f32(`${base}.${i}`));
}

/** Rows of `a` ([rows, da]) followed by rows of `b` ([rows, db]). */
function concatColumns(
  a: { x: Float32Array; d: number },
  b: Float32Array,
  rows: number,
): { x: Float32Array; d: number } {
  const db = b.length / rows;
  const d = a.d + db;
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    out.set(a.x.subarray(r * a.d, (r + 1) * a.d), r * d);
    out.set(b.subarray(r * db, (r + 1) * db), r * d + a.d);
  }
  return { x: out, d };
}

/** Columns of a cut's cached [avg | max] features that a variant reads. */
function columns(
  x: Float32Array,
  rows: number,
  i: number,
  withMax: boolean,
  grid: number | undefined,
): { x: Float32Array; d: number } {
  const c = cutGeometry(cuts[i]!).channels;
  const g = gridsOf(grid)[i]!;
  const dAvg = c * g[0] * g[1];
  const dAll = dAvg + c * 4;
  if (withMax) return { x, d: dAll };
  const out = new Float32Array(rows * dAvg);
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * dAll, r * dAll + dAvg), r * dAvg);
  return { x: out, d: dAvg };
}

/** One cut's heads: 5 fold heads (out-of-fold probabilities `probs` [n, K]) and a final head (test probabilities `pt`). */
interface CutFit {
  readonly probs: Float32Array;
  readonly pt: Float32Array;
  readonly folds: TrainedHead[];
  readonly final: TrainedHead;
  /** The cut's own features: all calib rows and copies, and test. */
  readonly base: { x: Float32Array; d: number };
  readonly baseTest: { x: Float32Array; d: number };
  /** The cascading input each head read (previous cut's log-probabilities): per fold, final, test. */
  readonly prev?: { folds: Float32Array[]; final: Float32Array; test: Float32Array };
}

/** What one head of `fit` reads: its features, with the cascading input appended when it has one. */
function inputsOf(
  fit: Pick<CutFit, 'base' | 'baseTest' | 'prev'>,
  which: number | 'final' | 'test',
): { x: Float32Array; d: number } {
  const rows = which === 'test' ? test.count : fit.base.x.length / fit.base.d;
  const base = which === 'test' ? fit.baseTest : fit.base;
  if (!fit.prev) return base;
  const extra = which === 'test' ? fit.prev.test : which === 'final' ? fit.prev.final : fit.prev.folds[which]!;
  return concatColumns(base, extra, rows);
}

/** A head's log-probabilities (floored) on all rows of `x`: the cascading input. */
function logProbsOf(head: TrainedHead, x: { x: Float32Array; d: number }): Float32Array {
  const rows = x.x.length / x.d;
  const out = new Float32Array(rows * K);
  predictHeadRows(head, x.x, null, rows, out, false);
  return out.map((q) => Math.log(Math.max(q, 1e-7)));
}

/**
 * Cross-fits (5 folds, augmented copies share their sample's fold) and fits a final head on `base` ([copies·n, d])
 * against teacher probabilities `P`. With `prev` (the previous exit's fit), each head also reads the log-probabilities
 * of that exit's head of the same fold (final head for the final head and test): Zero Time Waste's cascading input.
 */
function fitCut(
  base: { x: Float32Array; d: number },
  P: Float32Array,
  copies: number,
  baseTest: { x: Float32Array; d: number },
  opts: TrainHeadOptions,
  prevFit?: CutFit,
  ens?: Variant['ensemble'],
): CutFit {
  const rowsAll = copies * n;
  const prev = prevFit
    ? {
        folds: prevFit.folds.map((h, f) => logProbsOf(h, inputsOf(prevFit, f))),
        final: logProbsOf(prevFit.final, inputsOf(prevFit, 'final')),
        test: logProbsOf(prevFit.final, inputsOf(prevFit, 'test')),
      }
    : undefined;
  const fit0 = { base, baseTest, ...(prev ? { prev } : {}) };
  const probs = new Float32Array(n * K);
  const folds: TrainedHead[] = [];
  const M = ens?.members ?? 1;
  /**
   * Members trained on `rows` (null: all) with seeds `seed + 1000·m`; bootstrap: each member trains on the images of a
   * draw with replacement (with all their copies; a head's rows have no multiplicity, so an image drawn twice counts
   * once: about 63 % of the images, i.e. subsample bagging).
   */
  const members = (x: { x: Float32Array; d: number }, rows: number[] | null, seed: number): TrainedHead[] =>
    Array.from({ length: M }, (_, m) => {
      let r: Int32Array | null = rows ? Int32Array.from(rows) : null;
      if (ens?.bootstrap) {
        const imgs = rows ? [...new Set(rows.map((q) => q % n))] : Array.from({ length: n }, (_, q) => q);
        const rng = createRng(seed + 1000 * m + 7);
        const out: number[] = [];
        for (let q = 0; q < imgs.length; q++) {
          const s = imgs[rng.int(imgs.length)]!;
          for (let a = 0; a < copies; a++) out.push(a * n + s);
        }
        r = Int32Array.from(out);
      }
      return trainHeadOnRows(x.x, P, rowsAll, x.d, K, r, { ...opts, seed: seed + 1000 * m });
    });
  /** Probabilities of the ensemble `hs` on `rows` of `x` (null: the first `count`), as predictHeadRows writes them. */
  const predict = (
    hs: TrainedHead[],
    x: Float32Array,
    rows: Int32Array | null,
    count: number,
    out: Float32Array,
    scatter: boolean,
  ): TrainedHead => {
    if (ens?.average !== 'prob') {
      const head = averageLogitHeads(hs);
      predictHeadRows(head, x, rows, count, out, scatter);
      return head;
    }
    const tmp = new Float32Array(out.length);
    const acc = new Float32Array(out.length);
    for (const h of hs) {
      predictHeadRows(h, x, rows, count, tmp, scatter);
      for (let i = 0; i < acc.length; i++) acc[i]! += tmp[i]! / hs.length;
    }
    if (!scatter || !rows) out.set(acc.subarray(0, count * K));
    else for (const r of rows) out.set(acc.subarray(r * K, r * K + K), r * K);
    return hs[0]!;
  };
  for (let f = 0; f < 5; f++) {
    const train: number[] = [];
    const held: number[] = [];
    for (let s = 0; s < n; s++) {
      if (fold[s] === f) held.push(s);
      else for (let a = 0; a < copies; a++) train.push(a * n + s);
    }
    const xf = inputsOf(fit0, f);
    const hs = members(xf, train, 1 + f);
    folds.push(predict(hs, xf.x, Int32Array.from(held), held.length, probs, true));
  }
  const xa = inputsOf(fit0, 'final');
  const finals = members(xa, null, 0);
  const xt = inputsOf(fit0, 'test');
  const pt = new Float32Array(test.count * K);
  const final = predict(finals, xt.x, null, test.count, pt, false);
  return { ...fit0, probs, pt, folds, final };
}

/**
 * The hindsight frontier on test of a selection: over 400 knobs (quantiles of the selected exits' rule scores on
 * test), each turned into max-softmax thresholds through the selection's own score maps, the cheapest whose agreement
 * on test meets `target` (no margin; 1 when none does).
 */
function frontierOnTest(
  onTest: readonly ExitScores[],
  sel: RuleSelection,
  costs: CascadeCosts,
  target: number,
  rule: ThresholdRule,
): number {
  const mapped = sel.selected.map((j, s) => (rule === 'global' ? onTest[j]! : mapExitScores(onTest[j]!, sel.maps[s]!)));
  const all = mapped.flatMap((e) => Array.from(e.score.subarray(0, e.n))).sort((a, b) => a - b);
  let best = 1;
  for (let q = 0; q <= 400; q++) {
    const knob = all[Math.min(all.length - 1, Math.floor((q / 400) * all.length))]!;
    const th = sel.selected.map((_, s) => (rule === 'global' ? knob : rawThresholdFor(sel.maps[s]!, knob)));
    const o = simulateCascade(onTest, sel.selected, th, { ...costs, overhead: 0 });
    if (o.agreement >= target) best = Math.min(best, o.macsFraction);
  }
  return best;
}

/** Rows of the study for candidates `oof`/`onTest` (exit indices reported through `index`): every rule × target. */
function measureRows(
  name: string,
  oof: readonly ExitScores[],
  onTest: readonly ExitScores[],
  costs: CascadeCosts,
  seconds: number,
  index: readonly number[] = oof.map((_, i) => i),
): StudyRow[] {
  const out: StudyRow[] = [];
  for (const rule of RULES) {
    for (const target of TARGETS) {
      const sel = selectExitsWithRule(oof, costs, { target, rule, overhead: 0.01 * analysis.macs });
      const t = simulateCascade(onTest, sel.selected, sel.thresholds, { ...costs, overhead: 0 });
      const top1 = replayTop1(onTest, sel.selected, sel.thresholds, testPred, labels);
      const testFrontierMacs = frontierOnTest(onTest, sel, costs, target, rule);
      out.push({
        heads: name,
        rule,
        target,
        exits: sel.selected.map((j) => index[j]!),
        validationAgreement: sel.agreement,
        testAgreement: t.agreement,
        top1VsBackbonePoints: 100 * (top1.cascade - top1.backbone),
        testMacsFraction: t.macsFraction,
        testFrontierMacs,
        headTrainingSeconds: seconds,
      });
    }
  }
  return out;
}

const calibDefault = await features('calib');
const testDefault = await features('test');
const teacherPred = argmaxRows(calibDefault.teacher, n, K);
const testPred = argmaxRows(testDefault.teacher, test.count, K);
const fold = kFoldAssign(n, 5, 0);

const rows: StudyRow[] = [];
for (const name of wanted) {
  const v = VARIANTS[name]!;
  const calibF = v.grid ? await features('calib', v.grid) : calibDefault;
  const testF = v.grid ? await features('test', v.grid) : testDefault;
  const aug = await Promise.all(v.augment.map((a) => features(a, v.grid)));
  const convSets = v.conv
    ? await Promise.all((['calib', ...v.augment, 'test'] as const).map((set) => convFeatures(set)))
    : undefined;
  const copies = 1 + aug.length;
  const t0 = performance.now();
  const oof: ExitScores[] = [];
  const onTest: ExitScores[] = [];
  const headMacs: number[] = [];
  const fits: CutFit[] = [];
  for (let i = 0; i < cuts.length; i++) {
    const parts = [calibF, ...aug].map((f, a) => {
      const cols = columns(f.x[i]!, n, i, v.max > 0, v.grid);
      return convSets ? concatColumns(cols, convSets[a]![i]!, n) : cols;
    });
    const d = parts[0]!.d;
    const X = new Float32Array(copies * n * d);
    parts.forEach((p, a) => X.set(p.x, a * n * d));
    const P = new Float32Array(copies * n * K);
    [calibF, ...aug].forEach((f, a) => P.set(f.teacher, a * n * K));
    const opts: TrainHeadOptions = {
      kind: v.kind,
      ...(v.hidden ? { hidden: v.hidden } : {}),
      ...(v.epochs ? { epochs: v.epochs } : {}),
    };
    const xtRaw = columns(testF.x[i]!, test.count, i, v.max > 0, v.grid);
    const xt = convSets ? concatColumns(xtRaw, convSets[convSets.length - 1]![i]!, test.count) : xtRaw;
    const fit = fitCut({ x: X, d }, P, copies, xt, opts, undefined, v.ensemble);
    const { probs, pt } = fit;
    if (v.cascade) fits[i] = fit;
    oof.push(exitScores(probs, n, K, teacherPred));
    onTest.push(exitScores(pt, test.count, K, testPred));
    const M = v.ensemble?.members ?? 1;
    // An ensemble's head: M hidden layers side by side (logits or probabilities averaged; M linear heads average
    // into one linear head when logits are averaged, M products when probabilities are).
    const hidden = v.kind === 'pool-mlp' ? (v.hidden ?? 64) * M : 0;
    const linearCopies = v.kind === 'pool-linear' && v.ensemble?.average === 'prob' ? M : 1;
    const c = cutGeometry(cuts[i]!);
    const convMacs = v.conv ? c.height * c.width * encoderWidth(c.channels) * (c.channels + 2) : 0; // 1x1 conv + 2 pools
    headMacs.push(
      (hidden ? d * hidden + hidden * K : d * K * linearCopies) +
        c.channels * c.height * c.width * (v.max > 0 ? 2 : 1) +
        convMacs,
    );
  }
  const trainS = (performance.now() - t0) / 1000;
  const costs: CascadeCosts = { backboneCostAt: cuts.map((c) => c.macs), headCost: headMacs, fullCost: analysis.macs };
  const mean = (e: ExitScores[]): string =>
    e.map((s) => (s.agree.reduce((a, b) => a + b, 0) / s.n).toFixed(2)).join(' ');
  const measured = measureRows(name, oof, onTest, costs, trainS);
  rows.push(...measured);
  // Each variant's rows as soon as they are known (a long run stopped early keeps what it measured).
  for (const r of measured) console.error(`row ${JSON.stringify(r)}`);
  console.error(`${name}: out-of-fold agreement per cut ${mean(oof)} (${trainS.toFixed(0)} s)`);
  if (v.cascade) {
    const t1 = performance.now();
    const chain = process.env.BENCH_HEADS_CHAIN
      ? process.env.BENCH_HEADS_CHAIN.split(',').map(Number)
      : selectExitsWithRule(oof, costs, { target: 0.99, rule: 'cost-calibrated', overhead: 0.01 * analysis.macs })
          .selected;
    const opts = { kind: v.kind, ...(v.hidden ? { hidden: v.hidden } : {}) } as const;
    const P = new Float32Array(copies * n * K);
    [calibF, ...aug].forEach((f, a) => P.set(f.teacher, a * n * K));
    const chained: { oof: ExitScores; test: ExitScores }[] = [];
    let prev: CutFit | undefined;
    for (const i of chain) {
      const base = fits[i]!;
      const fit = prev ? fitCut(base.base, P, copies, base.baseTest, opts, prev) : base;
      chained.push({
        oof: exitScores(fit.probs, n, K, teacherPred),
        test: exitScores(fit.pt, test.count, K, testPred),
      });
      prev = fit;
    }
    const chainS = (performance.now() - t1) / 1000;
    const sub = (a: ArrayLike<number>): number[] => chain.map((i) => a[i]!);
    const subCosts: CascadeCosts = {
      backboneCostAt: sub(costs.backboneCostAt),
      headCost: chain.map((i, j) => costs.headCost[i]! + (j > 0 ? K * (v.hidden ?? 64) : 0)), // + the appended inputs
      fullCost: costs.fullCost,
    };
    const label = (what: string): string => `${name} (exits ${chain.join(',')}: ${what})`;
    rows.push(
      ...measureRows(
        label('no cascade'),
        chain.map((i) => oof[i]!),
        chain.map((i) => onTest[i]!),
        subCosts,
        trainS,
        chain,
      ),
      ...measureRows(
        label('cascade'),
        chained.map((c) => c.oof),
        chained.map((c) => c.test),
        subCosts,
        chainS,
        chain,
      ),
    );
    console.error(`${name}: cascade over exits ${chain.join(',')} refit in ${chainS.toFixed(0)} s`);
  }
}
const stamp = started.toISOString().slice(0, 19).replace(/[:T]/g, '-');
const jsonFile = path.join(resultsDir, `heads-${modelKey}-${stamp}.json`);
const command = `npm run bench:heads ${process.argv.slice(2).join(' ')}`.trim();
const candidates = cuts.map((c, i) => ({ index: i, tensor: c.tensor, macsFraction: c.fraction }));
const record: StudyRecord & Record<string, unknown> = {
  date: started.toISOString(),
  command,
  model: modelKey,
  seconds: (Date.now() - started.getTime()) / 1000,
  calibSamples: n,
  testSamples: test.count,
  candidates,
  targets: TARGETS,
  rules: RULES,
  variants: wanted.map((w) => ({ name: w, ...VARIANTS[w]! })),
  rows,
};
const md = renderHeadsBlock([record], [path.relative(root, jsonFile)]);
console.log(md);
fs.mkdirSync(resultsDir, { recursive: true });
fs.writeFileSync(jsonFile, `${JSON.stringify(record, null, 2)}\n`);
console.error(`heads-study: wrote ${path.relative(root, jsonFile)}`);
if (process.env.BENCH_NO_MD !== '1') {
  await writeBlock(path.join(root, 'BENCHMARKS.md'), `bench:heads:${modelKey}`, md);
  console.error(`heads-study: updated BENCHMARKS.md (block bench:heads:${modelKey})`);
}

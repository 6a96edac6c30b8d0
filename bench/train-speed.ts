// Head-training speed and quality, old trainer vs new, side by side on the same real features (ResNet-56 or -20 on
// CIFAR-10 `calib` + its flipped copy, prepare's default pooling): seconds per cross-fit, out-of-fold agreement and
// KL per cut, and the MACs fraction / agreement on `test` of the cascade each trainer's heads give (cost-calibrated
// rule, targets 0.99 and 0.985). Features are cached in bench/.cache/ (shared with bench/heads-study.ts).
//
//   npx tsx bench/train-speed.ts [resnet56|resnet20] [--old <path to the old src/calibrate/crossfit.ts>]
//        [--only old|new] [--profile] [--limit N] [--store f16|u8]
//
// `--old` defaults to ../base/src/calibrate/crossfit.ts (an untouched checkout of the previous trainer) when present.
// `--profile` prints where the old trainer's time goes (per kind, per fold, per epoch). `--store` gives the new
// trainer its features packed (feature-store.ts) instead of float32.
import fs from 'node:fs';
import path from 'node:path';
import { augmentSamples } from '../src/calibrate/augment.js';
import { argmaxRows, exitScores, simulateCascade, type ExitScores } from '../src/policy/cascade-sim.js';
import { selectExitsWithRule } from '../src/policy/exit-rule.js';
import { cutGeometry } from '../src/calibrate/features.js';
import { candidateCuts } from '../src/calibrate/candidate-cuts.js';
import { resolveModelIO } from '../src/calibrate/prepare.js';
import { kFoldAssign } from '../src/calibrate/rng.js';
import { shuffleAndLimit } from '../src/calibrate/samples.js';
import { crossFit as crossFitNew, type CrossFitOptions } from '../src/calibrate/crossfit.js';
import { predictHeadRows, trainHead as trainHeadNew, type TrainedHead } from '../src/calibrate/train-head.js';
import { argmaxAgreement, meanKL } from '../src/calibrate/linalg.js';
import { packFeatures, type FeatureRows } from '../src/calibrate/feature-store.js';
import { analyzeModel, decodeModel } from '../src/graph/index.js';
import { replayTop1 } from './cascade-replay.js';
import { cachedFeatures } from './feature-cache.js';
import { studyFeatures, root, shared, cacheDir, ort, K, SHAPE } from './study-env.js';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const modelKey = args[0] && !args[0].startsWith('--') ? args[0] : 'resnet56';
const oldPath = path.resolve(flag('--old') ?? path.resolve(root, '../base/src/calibrate/crossfit.ts'));
const only = flag('--only');
const profile = args.includes('--profile');
const limit = Number(flag('--limit') ?? Infinity);
const store = flag('--store') as 'f16' | 'u8' | undefined;
const modelFile = path.join(shared, `models/cifar10-${modelKey}.onnx`);
if (!fs.existsSync(modelFile)) {
  console.log(`train-speed: ${modelFile} is absent (needs ../shared): nothing to do`);
  process.exit(0);
}

const u8 = (file: string): Uint8Array => new Uint8Array(fs.readFileSync(file));

const model = decodeModel(u8(modelFile));
const analysis = await analyzeModel(model, { ort });
const io = resolveModelIO(model, analysis, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
const cuts = candidateCuts(analysis.cuts, 16);
const grids = cuts.map((c): [number, number] => (cutGeometry(c).channels <= 16 ? [4, 4] : [2, 2]));
const calibRaw = u8(path.join(shared, 'data/cifar10/calib-u8.bin'));
const calib = shuffleAndLimit({ data: calibRaw, count: calibRaw.length / 3072 }, SHAPE, 0).batch;
const testData = u8(path.join(shared, 'data/cifar10/test-u8.bin'));
const test = { data: testData, count: testData.length / 3072 };
const labels = u8(path.join(shared, 'data/cifar10/test-labels.u8'));
const nAll = calib.count;

/** Features (avg grid + 2x2 max) of every candidate cut and the teacher, for one sample set; cached on disk. */
async function features(set: 'calib' | 'test' | 'flip'): Promise<{ teacher: Float32Array; x: Float32Array[] }> {
  const base = path.join(cacheDir, `${modelKey}.${set}`);
  const samples =
    set === 'test'
      ? test
      : set === 'calib'
        ? calib
        : { data: augmentSamples(calib, SHAPE, ['flip'], 0).data.subarray(nAll * 3072), count: nAll };
  return cachedFeatures(base, cuts.length, `${set}: ${samples.count} images`, () =>
    studyFeatures(io, {
      model,
      requests: cuts.map((cut, i) => ({ cut, grid: grids[i]!, maxGrid: [2, 2] as const })),
      samples,
    }),
  );
}

const calibF = await features('calib');
const flipF = await features('flip');
const testF = await features('test');
if (args.includes('--extract-only')) process.exit(0);

// ---- training sets as prepare builds them: rows [0, n) the samples, [n, 2n) their flips (same fold) ----
const n = Math.min(nAll, limit);
const rows = 2 * n;
const dims = cuts.map((c, i) => cutGeometry(c).channels * (grids[i]![0] * grids[i]![1] + 4));
const sampleFold = kFoldAssign(n, 5, 0);
const foldOf = new Int32Array(rows);
foldOf.set(sampleFold, 0);
foldOf.set(sampleFold, n);
const teacher = new Float32Array(rows * K);
teacher.set(calibF.teacher.subarray(0, n * K), 0);
teacher.set(flipF.teacher.subarray(0, n * K), n * K);
const teacherPred = argmaxRows(teacher, n, K);
const testPred = argmaxRows(testF.teacher, test.count, K);
const xOf = (i: number): Float32Array => {
  const d = dims[i]!;
  const x = new Float32Array(rows * d);
  x.set(calibF.x[i]!.subarray(0, n * d), 0);
  x.set(flipF.x[i]!.subarray(0, n * d), n * d);
  return x;
};

type CrossFitFn = typeof crossFitNew;
type TrainFn = typeof trainHeadNew;
interface Trainer {
  readonly name: string;
  readonly crossFit: CrossFitFn;
  readonly trainHead: TrainFn;
}
const trainers: Trainer[] = [];
if (only !== 'new') {
  if (!fs.existsSync(oldPath)) throw new Error(`old trainer ${oldPath} is absent (pass --old or --only new)`);
  const oldCf = (await import(oldPath)) as { crossFit: CrossFitFn };
  const oldTh = (await import(path.join(path.dirname(oldPath), 'train-head.ts'))) as { trainHead: TrainFn };
  trainers.push({ name: 'old', crossFit: oldCf.crossFit, trainHead: oldTh.trainHead });
}
if (only !== 'old') trainers.push({ name: 'new', crossFit: crossFitNew, trainHead: trainHeadNew });

/** Kinds measured: pool-linear on every cut, pool-mlp (64) on six cuts spread over the depth (prepare's shortlist size). */
const mlpCuts = [3, 5, 7, 9, 11, 13].filter((i) => i < cuts.length);
const plan: { kind: 'pool-linear' | 'pool-mlp'; cuts: number[] }[] = [
  { kind: 'pool-linear', cuts: cuts.map((_, i) => i) },
  { kind: 'pool-mlp', cuts: mlpCuts },
];

if (profile) {
  // Where the old trainer's time goes: one cut of each kind, per fold and per epoch.
  const tr = trainers.find((t) => t.name === 'old') ?? trainers[0]!;
  for (const { kind, cuts: cs } of plan) {
    const i = cs[cs.length - 1]!;
    const x = xOf(i);
    const t0 = performance.now();
    const per: string[] = [];
    tr.crossFit(x, teacher, rows, dims[i]!, K, {
      kind,
      foldOf,
      seed: 0,
      fitFinal: true,
      onFit: (f) => per.push(`fold ${f.fold}: ${f.result.report.epochs} epochs, ${f.result.report.ms} ms`),
    });
    const s = (performance.now() - t0) / 1000;
    console.log(`profile ${tr.name} ${kind} cut ${i} (d=${dims[i]}, ${rows} rows): ${s.toFixed(1)} s`);
    for (const p of per) console.log(`  ${p}`);
  }
}

interface KindResult {
  seconds: number;
  fits: number;
  oof: ExitScores[];
  onTest: ExitScores[];
  agree: number[];
  kl: number[];
}
const results = new Map<string, KindResult>();
// Trainers alternate cut by cut, so load from other jobs on the machine falls on both alike.
for (const { kind, cuts: cs } of plan) {
  for (const tr of trainers)
    results.set(`${tr.name}:${kind}`, { seconds: 0, fits: 0, oof: [], onTest: [], agree: [], kl: [] });
  for (const i of cs) {
    const d = dims[i]!;
    const x = xOf(i);
    for (const tr of trainers) {
      const r = results.get(`${tr.name}:${kind}`)!;
      const opts: CrossFitOptions = { kind, foldOf, seed: 0, fitFinal: false };
      const xs: FeatureRows = store && tr.name === 'new' ? packFeatures(x, rows, d, store) : x;
      const t0 = performance.now();
      const cf = tr.crossFit(xs, teacher, rows, d, K, opts);
      const head: TrainedHead = tr.trainHead(xs, teacher, rows, d, K, { kind, seed: 0 });
      r.seconds += (performance.now() - t0) / 1000;
      r.fits += 6;
      const oofN = cf.oof.subarray(0, n * K);
      r.agree.push(argmaxAgreement(teacher, oofN, n, K));
      r.kl.push(meanKL(teacher, oofN, n, K));
      r.oof.push(exitScores(oofN, n, K, teacherPred));
      const pt = new Float32Array(test.count * K);
      predictHeadRows(head, testF.x[i]!, null, test.count, pt, false);
      r.onTest.push(exitScores(pt, test.count, K, testPred));
    }
  }
  for (const tr of trainers) {
    const r = results.get(`${tr.name}:${kind}`)!;
    console.error(`${tr.name} ${kind}: ${r.seconds.toFixed(1)} s for ${r.fits} fits`);
  }
}

// ---- report ----
const fmt = (v: number, p = 3): string => v.toFixed(p);
console.log(`\n## train-speed ${modelKey}: ${n} samples + flips (${rows} rows), 5 folds + final head per cut\n`);
console.log('| trainer | kind | cuts | s per cut (5 folds + final) | s total | mean oof agreement | mean oof KL |');
console.log('|---|---|---:|---:|---:|---:|---:|');
for (const { kind, cuts: cs } of plan) {
  for (const tr of trainers) {
    const r = results.get(`${tr.name}:${kind}`)!;
    const mean = (a: number[]): number => a.reduce((s, v) => s + v, 0) / a.length;
    console.log(
      `| ${tr.name} | ${kind} | ${cs.length} | ${fmt(r.seconds / cs.length, 2)} | ${fmt(r.seconds, 1)} | ${fmt(100 * mean(r.agree), 2)} % | ${fmt(mean(r.kl), 4)} |`,
    );
  }
}
console.log('\nper-cut oof agreement (%), old / new:');
for (const { kind, cuts: cs } of plan) {
  const line = cs.map(
    (i, j) =>
      trainers.map((tr) => fmt(100 * results.get(`${tr.name}:${kind}`)!.agree[j]!, 2)).join('/') + ` (cut ${i})`,
  );
  console.log(`  ${kind}: ${line.join('  ')}`);
}

// Cascade on test: pool-linear on every cut, pool-mlp replacing it where it was trained and has the higher oof agreement.
const costsOf = (useMlp: boolean[]) => ({
  backboneCostAt: cuts.map((c) => c.macs),
  headCost: cuts.map((c, i) => {
    const g = cutGeometry(c);
    return (useMlp[i] ? dims[i]! * 64 + 64 * K : dims[i]! * K) + 2 * g.channels * g.height * g.width;
  }),
  fullCost: analysis.macs,
});
console.log(
  '\n| trainer | target | exits | oof agreement | test agreement | test MACs fraction | top-1 vs backbone (pts) |',
);
console.log('|---|---:|---|---:|---:|---:|---:|');
for (const tr of trainers) {
  const lin = results.get(`${tr.name}:pool-linear`)!;
  const mlp = results.get(`${tr.name}:pool-mlp`)!;
  const useMlp = cuts.map((_, i) => {
    const j = mlpCuts.indexOf(i);
    return j >= 0 && mlp.agree[j]! > lin.agree[i]!;
  });
  const oof = cuts.map((_, i) => (useMlp[i] ? mlp.oof[mlpCuts.indexOf(i)]! : lin.oof[i]!));
  const onTest = cuts.map((_, i) => (useMlp[i] ? mlp.onTest[mlpCuts.indexOf(i)]! : lin.onTest[i]!));
  const costs = costsOf(useMlp);
  for (const target of [0.99, 0.985]) {
    const sel = selectExitsWithRule(oof, costs, { target, rule: 'cost-calibrated', overhead: 0.01 * analysis.macs });
    const t = simulateCascade(onTest, sel.selected, sel.thresholds, { ...costs, overhead: 0 });
    const top1 = replayTop1(onTest, sel.selected, sel.thresholds, testPred, labels);
    console.log(
      `| ${tr.name} | ${target} | ${sel.selected.join(',')} | ${fmt(100 * sel.agreement, 2)} % | ${fmt(100 * t.agreement, 2)} % | ${fmt(t.macsFraction)} | ${fmt(100 * (top1.cascade - top1.backbone), 2)} |`,
    );
  }
}

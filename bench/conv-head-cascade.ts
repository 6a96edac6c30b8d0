// What a learned conv head at one exit buys the cascade (issue 13): ResNet-56 on CIFAR-10, the exits of prepare's
// 50,000-image bundle (layer1.4, layer2.4, layer3.2, layer3.5, layer3.7), pool-mlp 64 heads on each (prepare's pooling,
// train-head.ts defaults, all rows) against the same set with the `--conv` cut's head replaced by a conv head
// (bench/conv-head/conv-head.ts, the recipe of bench/conv-head-study.ts). Heads never see `test`; exits and thresholds
// (cost-calibrated rule, prepare's margin) are chosen on one half of `test` and measured on the other, both ways;
// the "hindsight" column chooses and measures on all of `test`.
//
//   npx tsx bench/conv-head-cascade.ts [--pool] [--limit N] [--conv layer3.2] [--channels full|half] [--json out.json]
import fs from 'node:fs';
import path from 'node:path';
import { augmentSamples } from '../src/calibrate/augment.js';
import { cutGeometry, type FeatureRequest } from '../src/calibrate/features.js';
import { resolveModelIO } from '../src/calibrate/prepare.js';
import { poolingRequests } from '../src/calibrate/prepare-features.js';
import { headFeatureDim } from '../src/calibrate/pool.js';
import { shuffleAndLimit } from '../src/calibrate/samples.js';
import { predictHead, trainHead } from '../src/calibrate/train-head.js';
import { halfToFloatTable, type FeatureRows, type PackedFeatures } from '../src/calibrate/feature-store.js';
import { convHeadMacs, predictConvHead, trainConvHead, type ConvHeadShape } from './conv-head/conv-head.js';
import { createRng, permutation } from '../src/calibrate/rng.js';
import { argmaxRows, exitScores, simulateCascade, type ExitScores } from '../src/policy/cascade-sim.js';
import { selectExitsWithRule } from '../src/policy/exit-rule.js';
import { analyzeModel, decodeModel, type CutPoint } from '../src/graph/index.js';
import { boolFlag, stringFlag } from './args.js';
import { studyFeatures, shared, ort, K, SHAPE } from './study-env.js';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => stringFlag(args, name);
const usePool = boolFlag(args, '--pool');
const limit = Number(flag('--limit') ?? Infinity);
const convName = flag('--conv') ?? 'layer3.2';
const channels = flag('--channels') ?? 'full';
const jsonOut = flag('--json');
const exitNames = ['layer1.4', 'layer2.4', 'layer3.2', 'layer3.5', 'layer3.7'];
const modelFile = path.join(shared, 'models/cifar10-resnet56.onnx');
if (!fs.existsSync(modelFile)) {
  console.log(`conv-head-cascade: ${modelFile} is absent (needs ../shared): nothing to do`);
  process.exit(0);
}
const t0 = performance.now();
const model = decodeModel(new Uint8Array(fs.readFileSync(modelFile)));
const analysis = await analyzeModel(model, { ort });
const io = resolveModelIO(model, analysis, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
const cuts: CutPoint[] = exitNames.map((name) => {
  const cut = analysis.cuts.find((c) => c.tensor === `/${name.split('.')[0]}/${name}/Relu_1_output_0`);
  if (!cut) throw new Error(`no cut ${name}`);
  return cut;
});
const ci = exitNames.indexOf(convName);
if (ci < 0) throw new Error(`--conv must be one of ${exitNames.join(', ')}`);
const convCut = cuts[ci]!;
const cg = cutGeometry(convCut);
const pooling = poolingRequests(cuts, { maxFeatures: 256, maxPoolGrid: 2 });
// One backbone pass per set: prepare's pooling at every exit, plus the full map of the conv cut (last request).
const requests: FeatureRequest[] = [...pooling, { cut: convCut, grid: [cg.height, cg.width] }];

const read = (f: string): Buffer => fs.readFileSync(path.join(shared, 'data/cifar10', f));
const raw = usePool ? Buffer.concat([read('calib-u8.bin'), read('pool-u8.bin')]) : read('calib-u8.bin');
const all = { data: new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), count: raw.byteLength / 3072 };
const train = shuffleAndLimit(all, SHAPE, 0, limit).batch;
const n = train.count;
const rows = 2 * n;
const testRaw = read('test-u8.bin');
const test = {
  data: new Uint8Array(testRaw.buffer, testRaw.byteOffset, testRaw.byteLength),
  count: testRaw.byteLength / 3072,
};
const extract = (samples: { data: Uint8Array; count: number }) =>
  studyFeatures(io, {
    model,
    requests,
    samples,
    storage: 'f16',
  });
const trainSet = await extract(augmentSamples(train, SHAPE, ['flip'], 0));
const testSet = await extract(test);
const extractS = (performance.now() - t0) / 1000;
console.error(`features: ${extractS.toFixed(0)} s`);

const testPred = argmaxRows(testSet.teacher, test.count, K);
const dims = pooling.map((r) => headFeatureDim(cutGeometry(r.cut).channels, r.grid, r.maxGrid));
const poolHeadMacs = cuts.map((c, i) => {
  const g = cutGeometry(c);
  return 2 * g.channels * g.height * g.width + dims[i]! * 64 + 64 * K;
});
/** Test probabilities of the pool-mlp head of every exit. */
const poolProbs = cuts.map((_, i) => {
  const t1 = performance.now();
  const h = trainHead(trainSet.cuts[i]!.x, trainSet.teacher, rows, dims[i]!, K, { kind: 'pool-mlp', seed: 0 });
  const tx = testSet.cuts[i]!.x as PackedFeatures;
  const x = new Float32Array(tx.data.length);
  const t = halfToFloatTable();
  for (let j = 0; j < x.length; j++) x[j] = t[tx.data[j]!]!;
  console.error(`pool-mlp ${exitNames[i]}: ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  return predictHead(h, x, test.count);
});
// The conv head, as in the study: 10 % of the images (both copies) held out, best epoch kept.
const heldImages = new Uint8Array(n);
for (const i of permutation(n, createRng(17)).subarray(0, Math.round(0.1 * n))) heldImages[i] = 1;
const every = Int32Array.from({ length: rows }, (_, r) => r);
const shape: ConvHeadShape = {
  inChannels: cg.channels,
  inHeight: cg.height,
  inWidth: cg.width,
  outChannels: channels === 'half' ? cg.channels / 2 : cg.channels,
  stride: 2,
  maxGrid: 2,
  hidden: 64,
  classes: K,
};
const t2 = performance.now();
const maps: FeatureRows = trainSet.cuts[cuts.length]!.x;
const conv = trainConvHead(
  maps,
  trainSet.teacher,
  shape,
  every.filter((r) => !heldImages[r % n]),
  every.filter((r) => heldImages[r % n] === 1),
  { epochs: 6, tolerance: 0, learningRate: 0.003, seed: 0 },
);
const convS = (performance.now() - t2) / 1000;
console.error(`conv ${convName}: ${convS.toFixed(0)} s`);
const convProbs = predictConvHead(conv.head, testSet.cuts[cuts.length]!.x, null, test.count);

// ---- the cascade on halves of test
const half = permutation(test.count, createRng(3));
const halves = [half.subarray(0, test.count / 2), half.subarray(test.count / 2)];
function scoresOn(probs: Float32Array[], idx: Int32Array): ExitScores[] {
  return probs.map((p) => {
    const sub = new Float32Array(idx.length * K);
    const pred = new Int32Array(idx.length);
    idx.forEach((s, j) => {
      sub.set(p.subarray(s * K, (s + 1) * K), j * K);
      pred[j] = testPred[s]!;
    });
    return exitScores(sub, idx.length, K, pred);
  });
}
const fullIdx = Int32Array.from({ length: test.count }, (_, i) => i);
const sets = {
  'pool-mlp at every exit': { probs: poolProbs, headCost: poolHeadMacs },
  [`conv (${shape.outChannels} ch) at ${convName}`]: {
    probs: poolProbs.map((p, i) => (i === ci ? convProbs : p)),
    headCost: poolHeadMacs.map((m, i) => (i === ci ? convHeadMacs(shape) : m)),
  },
};
const out: Record<string, unknown>[] = [];
console.log(`\n## conv head in the cascade, ResNet-56, ${n} images${usePool ? ' (calib + pool)' : ''} + flips\n`);
console.log(
  '| heads | target | A→B MACs (agreement) | B→A MACs (agreement) | mean MACs | hindsight on all test | exits (A→B / B→A) |',
);
console.log('|---|---:|---:|---:|---:|---:|---|');
for (const [label, set] of Object.entries(sets)) {
  const costs = { backboneCostAt: cuts.map((c) => c.macs), headCost: set.headCost, fullCost: analysis.macs };
  for (const target of [0.99, 0.985]) {
    const run = (fit: Int32Array, measure: Int32Array) => {
      const sel = selectExitsWithRule(scoresOn(set.probs, fit), costs, {
        target,
        rule: 'cost-calibrated',
        overhead: 0.01 * analysis.macs,
      });
      const r = simulateCascade(scoresOn(set.probs, measure), sel.selected, sel.thresholds, { ...costs, overhead: 0 });
      return { macs: r.macsFraction, agreement: r.agreement, exits: sel.selected.map((i) => exitNames[i]).join(',') };
    };
    const ab = run(halves[0]!, halves[1]!);
    const ba = run(halves[1]!, halves[0]!);
    const hs = run(fullIdx, fullIdx);
    const f = (r: { macs: number; agreement: number }): string =>
      `${r.macs.toFixed(3)} (${(100 * r.agreement).toFixed(2)} %)`;
    console.log(
      `| ${label} | ${target} | ${f(ab)} | ${f(ba)} | ${((ab.macs + ba.macs) / 2).toFixed(3)} | ${f(hs)} | ${ab.exits} / ${ba.exits} |`,
    );
    out.push({ label, target, ab, ba, hindsight: hs });
  }
}
const totalS = (performance.now() - t0) / 1000;
console.log(
  `\nwall ${totalS.toFixed(0)} s (features ${extractS.toFixed(0)} s, conv head ${convS.toFixed(0)} s), rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MB`,
);
if (jsonOut)
  fs.writeFileSync(
    jsonOut,
    JSON.stringify({ n, pool: usePool, convName, shape, extractS, convS, totalS, out }, null, 1),
  );

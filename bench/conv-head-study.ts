// Learned convolutional exit heads vs prepare's pooled heads (issue 13): on ResNet-56 / CIFAR-10, for chosen cuts,
// trains on the same images (+ flips) prepare's pool-linear and pool-mlp heads (train-head.ts, prepare's pooling and
// defaults) and conv heads (bench/conv-head/conv-head.ts: 3x3 conv stride 2, ReLU, global avg + 2x2 max, optionally beside the pooled
// features, MLP), and
// scores each on the 5,000 `test` images: agreement with the backbone, coverage at precision 99 % / 98.5 %
// (thresholds chosen on test for all heads alike: a score-quality comparison), training time, head MACs.
//
//   npx tsx bench/conv-head-study.ts [--limit N] [--pool] [--cuts layer1.4,layer2.4,layer3.2] [--only layer2.4]
//        [--variants half,full,half+pool,layer2.4:full] [--hidden 64] [--epochs 8] [--lr 0.003] [--batch 64]
//        [--tol 0.001] [--avg-grid 1] [--all-rows] [--no-pool] [--no-cache] [--extract-only] [--json out.json]
//
// The run of BENCHMARKS.md: `--variants full,half+pool --epochs 6 --tol 0` (10,000 images), the same with `--pool
// --no-cache` (50,000). --only: train on these of --cuts (the cache is keyed by --cuts); --no-pool: conv heads only.
// --all-rows: conv heads train on every row for all epochs (default: 10 % of the images held out, best epoch kept).
// --no-cache: keep the maps in memory only (a cut's maps over 2 GiB cannot be cached: layer1 at 50,000 images).
// --limit N: the first N images of `calib` in prepare's shuffled order (default all 10,000); --pool: calib + pool
// (50,000). Full cut maps are extracted once (float16) and cached in bench/.cache/ (about 57 KB per image and copy).
import fs from 'node:fs';
import path from 'node:path';
import { augmentSamples } from '../src/calibrate/augment.js';
import { cutGeometry } from '../src/calibrate/features.js';
import { resolveModelIO } from '../src/calibrate/prepare.js';
import { poolingRequests } from '../src/calibrate/prepare-features.js';
import { headFeatureDim, headFeaturesInto } from '../src/calibrate/pool.js';
import { shuffleAndLimit } from '../src/calibrate/samples.js';
import { predictHead, trainHead, trainHeadOnRows } from '../src/calibrate/train-head.js';
import { argmaxAgreement, meanKL } from '../src/calibrate/linalg.js';
import { halfToFloatTable, type PackedFeatures } from '../src/calibrate/feature-store.js';
import {
  convHeadMacs,
  predictConvHead,
  trainConvHead,
  type ConvHead,
  type ConvHeadShape,
} from './conv-head/conv-head.js';
import { createRng, permutation } from '../src/calibrate/rng.js';
import { analyzeModel, decodeModel, type CutPoint } from '../src/graph/index.js';
import { boolFlag, stringFlag } from './args.js';
import { cachedFeatures } from './feature-cache.js';
import { studyFeatures, shared, cacheDir, ort, K, SHAPE } from './study-env.js';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => stringFlag(args, name);
const usePool = boolFlag(args, '--pool');
const limit = Number(flag('--limit') ?? Infinity);
const cutNames = (flag('--cuts') ?? 'layer1.4,layer2.4,layer3.2').split(',');
/**
 * Conv heads: `half` / `full` output channels (C/2, C), `+pool`: the dense part also reads prepare's pooled features;
 * `layer2.4:full` restricts a variant to one cut.
 */
const variants = (flag('--variants') ?? 'half,full,half+pool').split(',').filter((v) => v !== '');
/** Skip the pool heads (when only conv recipes are compared). */
const noPool = boolFlag(args, '--no-pool');
/** Extract the maps without the on-disk cache (needed when a cut's maps pass 2 GiB). */
const noCache = boolFlag(args, '--no-cache');
const hidden = Number(flag('--hidden') ?? 64);
const epochs = Number(flag('--epochs') ?? 8);
const lr = Number(flag('--lr') ?? 0.003);
const batchSize = Number(flag('--batch') ?? 64);
/** Average grid after the conv (side; 1 = global), early-stopping tolerance (0: run every epoch, keep the best). */
const avgGrid = Number(flag('--avg-grid') ?? 1);
const tolerance = Number(flag('--tol') ?? 0.001);
const jsonOut = flag('--json');
/** Train heads on these cuts only (default all of --cuts; the maps' cache is keyed by --cuts). */
const only = flag('--only')?.split(',');
const modelFile = path.join(shared, 'models/cifar10-resnet56.onnx');
if (!fs.existsSync(modelFile)) {
  console.log(`conv-head-study: ${modelFile} is absent (needs ../shared): nothing to do`);
  process.exit(0);
}
const u8 = (file: string): Uint8Array => new Uint8Array(fs.readFileSync(file));

const model = decodeModel(u8(modelFile));
const analysis = await analyzeModel(model, { ort });
const io = resolveModelIO(model, analysis, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
const cuts: CutPoint[] = cutNames.map((name) => {
  const [stage] = name.split('.');
  const tensor = `/${stage}/${name}/Relu_1_output_0`;
  const cut = analysis.cuts.find((c) => c.tensor === tensor);
  if (!cut) throw new Error(`no cut ${tensor}`);
  return cut;
});

// ---- images: prepare's order (shuffled, seed 0), then the first N; flips as prepare makes them
const raw = usePool
  ? Buffer.concat([
      fs.readFileSync(path.join(shared, 'data/cifar10/calib-u8.bin')),
      fs.readFileSync(path.join(shared, 'data/cifar10/pool-u8.bin')),
    ])
  : fs.readFileSync(path.join(shared, 'data/cifar10/calib-u8.bin'));
const all = { data: new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), count: raw.byteLength / 3072 };
const train = shuffleAndLimit(all, SHAPE, 0, limit).batch;
const n = train.count;
const testData = u8(path.join(shared, 'data/cifar10/test-u8.bin'));
const test = { data: testData, count: testData.length / 3072 };
const tag = `${usePool ? 'cp' : 'c'}${n}`;

interface MapSet {
  teacher: Float32Array;
  maps: PackedFeatures[];
}
/** Full f16 maps of every cut and the teacher for one image set, cached (the f16 bytes stored as a float32 file). */
async function mapSet(name: string, samples: { data: Uint8Array; count: number }): Promise<MapSet> {
  const base = path.join(cacheDir, `conv-r56.${name}.${cutNames.join('+')}`);
  const extract = async (): Promise<{ teacher: Float32Array; cuts: { x: Float32Array }[] }> => {
    const set = await studyFeatures(io, {
      model,
      requests: cuts.map((cut) => {
        const g = cutGeometry(cut);
        return { cut, grid: [g.height, g.width] as const };
      }),
      samples,
      storage: 'f16',
    });
    return {
      teacher: set.teacher,
      cuts: set.cuts.map((c) => {
        const d = (c.x as PackedFeatures).data;
        return { x: new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4) };
      }),
    };
  };
  // Node writes and reads files of at most 2 GiB at once: larger sets (50,000 images at layer1) stay in memory only.
  const f = noCache
    ? await extract().then((e) => ({ teacher: e.teacher, x: e.cuts.map((c) => c.x) }))
    : await cachedFeatures(base, cuts.length, `${name}: ${samples.count} images`, extract);
  return {
    teacher: f.teacher,
    maps: cuts.map((cut, i) => {
      const g = cutGeometry(cut);
      const d = g.channels * g.height * g.width;
      const x = f.x[i]!;
      const data = new Uint16Array(x.buffer, x.byteOffset, x.byteLength / 2);
      return { format: 'f16', n: data.length / d, d, data };
    }),
  };
}

const t0 = performance.now();
// Rows [0, n) the images, [n, 2n) their flips: prepare's layout, extracted in one pass (no copy to join them).
const trainSet = await mapSet(`trainflip-${tag}`, augmentSamples(train, SHAPE, ['flip'], 0));
const testSet = await mapSet('test', test);
const extractS = (performance.now() - t0) / 1000;
console.error(`maps ready: ${extractS.toFixed(0)} s`);
if (boolFlag(args, '--extract-only')) process.exit(0);

const rows = 2 * n;
const teacher = trainSet.teacher;
const testPred = Int32Array.from({ length: test.count }, (_, s) => {
  let b = 0;
  for (let j = 1; j < K; j++) if (testSet.teacher[s * K + j]! > testSet.teacher[s * K + b]!) b = j;
  return b;
});

/** Pooled features as prepare computes them (avg grid within 256 features + 2x2 max), from the f16 maps. */
function pooled(m: PackedFeatures, cut: CutPoint): { x: Float32Array; d: number } {
  const g = cutGeometry(cut);
  const [req] = poolingRequests([cut], { maxFeatures: 256, maxPoolGrid: 2 });
  const d = headFeatureDim(g.channels, req!.grid, req!.maxGrid);
  const x = new Float32Array(m.n * d);
  const t = halfToFloatTable();
  const chunk = 256;
  const buf = new Float32Array(chunk * m.d);
  for (let s = 0; s < m.n; s += chunk) {
    const r = Math.min(chunk, m.n - s);
    for (let i = 0; i < r * m.d; i++) buf[i] = t[m.data[s * m.d + i]!]!;
    headFeaturesInto(buf, r, g.channels, g.height, g.width, req!.grid, req!.maxGrid, x, s);
  }
  return { x, d };
}

/**
 * Coverage at precision `target`: sort by max-prob (descending); the largest prefix, cut between distinct scores,
 * whose agreement with the backbone is >= target, as a share of all samples.
 */
function coverageAt(q: Float32Array, count: number, target: number, sample?: Int32Array): number {
  const score = new Float32Array(count);
  const agree = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const s = sample ? sample[i]! : i;
    let b = 0;
    for (let j = 1; j < K; j++) if (q[s * K + j]! > q[s * K + b]!) b = j;
    score[i] = q[s * K + b]!;
    agree[i] = b === testPred[s] ? 1 : 0;
  }
  const order = Array.from({ length: count }, (_, i) => i).sort((a, b) => score[b]! - score[a]!);
  let ok = 0;
  let best = 0;
  for (let i = 0; i < count; i++) {
    ok += agree[order[i]!]!;
    const boundary = i + 1 === count || score[order[i + 1]!]! < score[order[i]!]!;
    if (boundary && ok >= target * (i + 1)) best = i + 1;
  }
  return best / count;
}

/** Bootstrap resamples of the test images (the same for every head), for the coverage's standard deviation. */
const bootRng = createRng(5);
const boots = Array.from({ length: 200 }, () => Int32Array.from({ length: test.count }, () => bootRng.int(test.count)));
function coverageSd(q: Float32Array, target: number): number {
  const v = boots.map((b) => coverageAt(q, test.count, target, b));
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1));
}

// Early stopping for the conv heads: 10 % of the images (both copies) held out of their training.
const heldImages = new Uint8Array(n);
for (const i of permutation(n, createRng(17)).subarray(0, Math.round(0.1 * n))) heldImages[i] = 1;
// --all-rows: none held out (every row trained, the last epoch kept), as prepare's final pool heads are trained.
const allRows = boolFlag(args, '--all-rows');
const convTrain = Int32Array.from({ length: rows }, (_, r) => r).filter((r) => allRows || !heldImages[r % n]);
const convHeld = Int32Array.from({ length: rows }, (_, r) => r).filter((r) => !allRows && heldImages[r % n] === 1);

interface Row {
  cut: string;
  head: string;
  agreement: number;
  kl: number;
  cov99: number;
  cov985: number;
  cov99Sd: number;
  cov985Sd: number;
  trainS: number;
  macs: number;
  epochs?: string;
}
const results: Row[] = [];
const score = (cut: string, head: string, q: Float32Array, trainS: number, macs: number, ep?: string): void => {
  const row: Row = {
    cut,
    head,
    agreement: argmaxAgreement(testSet.teacher, q, test.count, K),
    kl: meanKL(testSet.teacher, q, test.count, K),
    cov99: coverageAt(q, test.count, 0.99),
    cov985: coverageAt(q, test.count, 0.985),
    cov99Sd: coverageSd(q, 0.99),
    cov985Sd: coverageSd(q, 0.985),
    trainS,
    macs: macs / analysis.macs,
    ...(ep ? { epochs: ep } : {}),
  };
  results.push(row);
  console.error(
    `${cut} ${head}: agreement ${(100 * row.agreement).toFixed(2)} %, KL ${row.kl.toFixed(3)}, coverage@99 ${(100 * row.cov99).toFixed(1)} %, @98.5 ${(100 * row.cov985).toFixed(1)} %, ${trainS.toFixed(1)} s`,
  );
};

for (let ci = 0; ci < cuts.length; ci++) {
  const cut = cuts[ci]!;
  const name = cutNames[ci]!;
  if (only && !only.includes(name)) continue;
  const g = cutGeometry(cut);
  const maps = trainSet.maps[ci]!;
  // prepare's heads: pool-linear and pool-mlp (64), its final-head recipe on all rows (no held-out fold)
  if (!noPool) {
    const { x, d } = pooled(maps, cut);
    const xt = pooled(testSet.maps[ci]!, cut).x;
    const poolMacs = g.channels * g.height * g.width * 2;
    for (const kind of ['pool-linear', 'pool-mlp'] as const) {
      const t1 = performance.now();
      const h = trainHead(x, teacher, rows, d, K, { kind, seed: 0 });
      const s = (performance.now() - t1) / 1000;
      const macs = poolMacs + (kind === 'pool-mlp' ? d * 64 + 64 * K : d * K);
      score(
        name,
        `${kind}${kind === 'pool-mlp' ? ' 64' : ''} (d ${d})`,
        predictHead(h, xt, test.count),
        s,
        macs,
        `${h.report.epochs}`,
      );
    }
    // control: the same pool-mlp on the conv heads' training rows only (90 %)
    if (!allRows) {
      const h = trainHeadOnRows(x, teacher, rows, d, K, convTrain, { kind: 'pool-mlp', seed: 0 });
      const macs = poolMacs + d * 64 + 64 * K;
      score(name, `pool-mlp 64, conv heads' 90 % rows`, predictHead(h, xt, test.count), h.report.ms / 1000, macs, '4');
    }
  }
  for (const spec of variants) {
    const [at, v] = spec.includes(':') ? spec.split(':') : [name, spec];
    if (at !== name || !v) continue;
    const shape: ConvHeadShape = {
      inChannels: g.channels,
      inHeight: g.height,
      inWidth: g.width,
      outChannels: v.startsWith('half') ? Math.max(8, g.channels / 2) : g.channels,
      stride: 2,
      maxGrid: 2,
      avgGrid,
      hidden,
      classes: K,
      ...(v.endsWith('+pool') ? { pooled: poolingRequests([cut], { maxFeatures: 256, maxPoolGrid: 2 })[0]! } : {}),
    };
    const t1 = performance.now();
    const { head, report } = trainConvHead(maps, teacher, shape, convTrain, convHeld, {
      epochs,
      learningRate: lr,
      batchSize,
      tolerance,
      seed: 0,
      onEpoch: (e) =>
        console.error(
          `  ${name} conv ${v} epoch ${e.epoch}: train KL ${e.trainKL.toFixed(4)}, held-out ${e.heldOutKL.toFixed(4)}, ${(e.ms / 1000).toFixed(0)} s`,
        ),
    });
    const s = (performance.now() - t1) / 1000;
    const q = predictConvHead(head as ConvHead, testSet.maps[ci]!, null, test.count);
    score(
      name,
      `conv3x3/2 ${shape.outChannels}ch${avgGrid > 1 ? `, avg ${avgGrid}x${avgGrid}` : ''}${shape.pooled ? ' + pooled' : ''} + mlp ${hidden}`,
      q,
      s,
      convHeadMacs(shape),
      `${report.lossHistory.length} (best ${report.bestEpoch})`,
    );
  }
}

const totalS = (performance.now() - t0) / 1000;
const mem = process.memoryUsage();
console.log(
  `\n## conv-head study, ResNet-56: ${n} images${usePool ? ' (calib + pool)' : ' (calib)'} + flips, measured on ${test.count} test images\n`,
);
console.log(
  '| cut | head | test agreement | test KL | coverage at 99 % | coverage at 98.5 % | training | epochs | head MACs (share of backbone) |',
);
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of results)
  console.log(
    `| ${r.cut} | ${r.head} | ${(100 * r.agreement).toFixed(2)} % | ${r.kl.toFixed(3)} | ${(100 * r.cov99).toFixed(1)} ± ${(100 * r.cov99Sd).toFixed(1)} % | ${(100 * r.cov985).toFixed(1)} ± ${(100 * r.cov985Sd).toFixed(1)} % | ${r.trainS.toFixed(1)} s | ${r.epochs ?? ''} | ${(100 * r.macs).toFixed(2)} % |`,
  );
console.log(
  `\nwall ${totalS.toFixed(0)} s (maps ${extractS.toFixed(0)} s), rss ${(mem.rss / 2 ** 20).toFixed(0)} MB; conv heads: ${convTrain.length} training rows, ${convHeld.length} held out; pool heads: all ${rows} rows`,
);
if (jsonOut)
  fs.writeFileSync(jsonOut, JSON.stringify({ n, pool: usePool, epochs, hidden, extractS, totalS, results }, null, 1));

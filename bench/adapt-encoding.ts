// Issue 15's reservoir encoding check: the same learning fit (learn/fit.ts fitLearned, learning's default options) on
// the same pool images, their pooled features stored as float16 (the reservoir's old rows) or as uint8 with a
// per-row-per-cut affine map (learn/reservoir.ts now), each bundle then measured on the test images (`selfxit eval`'s
// core): the quality cost of the halved bytes per sample. Pooled features cached under bench/.cache.
//
//   npx tsx bench/adapt-encoding.ts [--limit 20000] [--test 5000] [--only f16|u8row] [--ensemble 1] [--seed 0]
//     [--json out.json]
//
// `--ensemble M`: the fits' learn.ensemble (pool-mlp heads as M-seed ensembles, learn/learn-options.ts), default 1;
// `--seed S`: the fits' learn.seed (folds, head initialisation; not the draw of the pool images), default 0.
// Each record also has the 1-minute load average before and after its fit (os.loadavg: the fit's wall time is only
// comparable at a like load) and the fit's CPU seconds (process.cpuUsage, user + system: less sensitive to load).
//
// The pool images: the first `--limit` of a seeded shuffle (seed 0) of ../shared/data/cifar10/pool-u8.bin, as
// `prepare --limit` draws them (BENCHMARKS.md "On-device learning", the sample-count table).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortNode from 'onnxruntime-node';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { softmaxRow } from '../src/engine/cascade.js';
import { encodeModel, withExtraOutputs } from '../src/graph/index.js';
import { evaluateBundle } from '../src/calibrate/evaluate.js';
import { packFeatures, rowReader, type FeatureRows } from '../src/calibrate/feature-store.js';
import type { FeatureSet } from '../src/calibrate/features.js';
import { headFeaturesInto } from '../src/calibrate/pool.js';
import { shuffleAndLimit } from '../src/calibrate/samples.js';
import { readLabelFile } from '../src/cli/images.js';
import { loadSamples } from '../src/cli/sample-sources.js';
import { analyseForLearning, assembleLearned, fitLearned, type LearnModel } from '../src/learn/fit.js';
import { resolveLearnOptions } from '../src/learn/learn-options.js';
import { FeatureReservoir, bytesPerRow, reservoirCuts } from '../src/learn/reservoir.js';
import type { OrtModule } from '../src/ort/types.js';
import { cachedFeatures } from './feature-cache.js';
import { intFlag, stringFlag } from './args.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shared = path.resolve(here, '../../shared');
const MODEL = path.join(shared, 'models/cifar10-resnet56.onnx');
const DATA = path.join(shared, 'data/cifar10');
const SHAPE = { height: 32, width: 32, channels: 3 };
const INPUT = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const SESSION = { intraOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } } };

const ort = ortNode as unknown as OrtModule;

/** Pooled float32 features (per cut, `n × dim`) and softmax probabilities of the first `limit` shuffled pool images. */
async function poolFeatures(lm: LearnModel, limit: number): Promise<{ teacher: Float32Array; x: Float32Array[] }> {
  const cuts = reservoirCuts(lm.requests);
  const base = path.join(here, '.cache', `adapt-encoding-r56-pool-s0-${limit}-c${cuts.length}`);
  return cachedFeatures(base, cuts.length, `${limit} pool images`, async () => {
    const pool = shuffleAndLimit(await loadSamples(path.join(DATA, 'pool-u8.bin'), SHAPE), SHAPE, 0, limit).batch;
    const n = pool.count;
    const k = lm.io.classes;
    const session = await ort.InferenceSession.create(
      encodeModel(
        withExtraOutputs(
          lm.model,
          lm.requests.map((r) => r.cut.tensor),
        ),
      ),
      SESSION,
    );
    const teacher = new Float32Array(n * k);
    const xs = cuts.map((c) => new Float32Array(n * c.dim));
    const batch = 100;
    const buf = new Float32Array(batch * SHAPE.height * SHAPE.width * SHAPE.channels);
    const spec = lm.io.input;
    for (let at = 0; at < n; at += batch) {
      const rows = Math.min(batch, n - at);
      const t = new ort.Tensor('float32', toModelInput(pool, at, rows, spec, buf).slice(), inputDims(spec, rows));
      const out = await session.run({ [spec.name]: t });
      const logits = out[lm.io.output]!.data as Float32Array;
      for (let r = 0; r < rows; r++) teacher.set(softmaxRow(logits, r * k, k), (at + r) * k);
      cuts.forEach((c, i) => {
        const map = out[c.cut.tensor]!.data as Float32Array;
        headFeaturesInto(map, rows, c.channels, c.height, c.width, c.grid, c.maxGrid, xs[i]!, at);
      });
      if (at % 2000 === 0) process.stderr.write(`features ${at}/${n}\n`);
    }
    await session.release();
    return { teacher, cuts: xs.map((x) => ({ x })) };
  });
}

/** One cut's rms round-trip error over each feature's spread (rms err / std): its mean and 95th percentile. */
function relativeError(x32: Float32Array, packed: FeatureSet<FeatureRows>['cuts'][number], n: number): number[] {
  const d = packed.dim;
  const back = new Float32Array(n * d);
  const read = rowReader(packed.x, d, new Float32Array(d), new Float32Array(d).fill(1));
  for (let r = 0; r < n; r++) read(r, back, r * d);
  const rel: number[] = [];
  for (let i = 0; i < d; i++) {
    let mu = 0;
    for (let r = 0; r < n; r++) mu += x32[r * d + i]!;
    mu /= n;
    let v = 0;
    let e = 0;
    for (let r = 0; r < n; r++) {
      v += (x32[r * d + i]! - mu) ** 2;
      e += (back[r * d + i]! - x32[r * d + i]!) ** 2;
    }
    if (v > 0) rel.push(Math.sqrt(e / v));
  }
  rel.sort((p, q) => p - q);
  const mean = rel.reduce((p, q) => p + q, 0) / Math.max(1, rel.length);
  return [mean, rel[Math.floor(0.95 * rel.length)] ?? 0].map((v) => +v.toFixed(4));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const only = stringFlag(argv, '--only');
  const encodings = (['f16', 'u8row'] as const).filter((e) => only === undefined || e === only);
  const args = {
    limit: intFlag(argv, '--limit', 20000),
    test: intFlag(argv, '--test', 5000),
    json: stringFlag(argv, '--json'),
    ensemble: intFlag(argv, '--ensemble', 1),
    seed: Number(stringFlag(argv, '--seed') ?? 0),
  };
  const modelBytes = new Uint8Array(fs.readFileSync(MODEL));
  const learn = resolveLearnOptions({ ensemble: args.ensemble, seed: args.seed });
  const lm = await analyseForLearning(modelBytes, ort, { input: INPUT, learn });
  const cuts = reservoirCuts(lm.requests);
  const f = await poolFeatures(lm, args.limit);
  const n = f.teacher.length / lm.io.classes;
  const testAll = await loadSamples(path.join(DATA, 'test-u8.bin'), SHAPE);
  const labelsAll = await readLabelFile(path.join(DATA, 'test-labels.u8'), testAll.count, lm.labels);
  const m = Math.min(args.test, testAll.count);
  const per = SHAPE.height * SHAPE.width * SHAPE.channels;
  const test = { ...testAll, count: m, data: testAll.data.subarray(0, m * per) };
  const labels = labelsAll.subarray(0, m);

  const res = new FeatureReservoir(cuts, lm.io.classes, { maxSamples: n, maxBytes: Number.MAX_SAFE_INTEGER });
  res.addPooled(f.x, f.teacher, n);
  const sets: Record<'f16' | 'u8row', FeatureSet<FeatureRows>> = {
    f16: {
      n,
      k: lm.io.classes,
      teacher: f.teacher,
      cuts: cuts.map((c, i) => ({ ...c, x: packFeatures(f.x[i]!, n, c.dim, 'f16') })),
    },
    u8row: await res.snapshot(async () => undefined),
  };
  const bytes = { f16: cuts.reduce((a, c) => a + 2 * c.dim, 0) + 4 * lm.io.classes, u8row: bytesPerRow(cuts, 10) };
  const out: Record<string, unknown> = {
    samples: n,
    test: m,
    ensemble: learn.ensemble,
    seed: learn.seed,
    cuts: cuts.length,
    dims: cuts.map((c) => c.dim),
  };
  for (const enc of encodings) {
    const features = sets[enc];
    const err = features.cuts.map((c, i) => relativeError(f.x[i]!, c, Math.min(n, 5000)));
    const loadBefore = +os.loadavg()[0]!.toFixed(2);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const learned = await fitLearned({
      analysis: lm.analysis,
      io: lm.io,
      requests: lm.requests,
      options: learn,
      features,
    });
    const fitS = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const loadAfter = +os.loadavg()[0]!.toFixed(2);
    const { manifest, files } = await assembleLearned(lm, modelBytes, learned, learn, true, 'bench adapt-encoding');
    const ev = await evaluateBundle({
      bundle: { manifest, files },
      samples: test,
      labels,
      ort,
      sessionOptions: SESSION,
    });
    const r = {
      bytesPerSample: bytes[enc],
      relativeRmsError: err,
      fitSeconds: +fitS.toFixed(1),
      fitCpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(1),
      load1: [loadBefore, loadAfter],
      hidden: learned.exits.map((e) => (e.head.layers.length === 2 ? e.head.layers[0]!.out : 0)),
      exits: learned.exits.map((e) => e.cut),
      expected: { agreement: learned.summary.validationAgreement, macs: learned.summary.expectedMacsFraction },
      testMacs: +ev.macsFraction.toFixed(4),
      testAgreement: +ev.agreement.toFixed(4),
      testAccuracy: ev.accuracy,
    };
    out[enc] = r;
    console.error(enc, JSON.stringify(r));
  }
  const json = JSON.stringify(out, null, 2);
  console.log(json);
  if (args.json) fs.writeFileSync(args.json, `${json}\n`);
}

await main();

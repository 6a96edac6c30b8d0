// Batch-1 latency in Node (onnxruntime-node, 1 thread) of three engines on prepared bundles, interleaved per image:
// the full backbone, the stage engine (one session per segment + runCascade's JS decisions) and the compiled cascade
// (src/graph/compile-cascade.ts: one session, exits as nested `If`). Prints medians, means and ratios to the backbone,
// at the bundle's thresholds and with no exit firing (the worst case), and counts decisions that differ (0 expected).
//
//   npx tsx bench/compiled-vs-stages.ts [bundleDir …] [--images N] [--rounds R]
//
// Default bundles: /work/baseline/before/r20 (ResNet-20) and /work/baseline/before/fashion (the shipped model); images:
// ../shared/data/cifar10/test-u8.bin for 32x32x3 inputs, public/models/fashion-resnet/test-u8.bin for 28x28x1.
import fs from 'node:fs';
import path from 'node:path';
import * as ortNode from 'onnxruntime-node';
import { intFlag } from './args.js';
import { testImages } from './test-images.js';
import { compileBundleCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { bundleStageRunner } from '../src/calibrate/evaluate.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { argmaxRow, runCascade } from '../src/engine/cascade.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import type { OrtModule, OrtSession, OrtTensor } from '../src/ort/types.js';

const ort = ortNode as unknown as OrtModule;
const SESSION = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential' as const,
  extra: { session: { intra_op: { allow_spinning: '0' } } },
};

const args = process.argv.slice(2);
const IMAGES = intFlag(args, '--images', 300);
const ROUNDS = intFlag(args, '--rounds', 3);
const dirs = args.length ? args : ['/work/baseline/before/r20', '/work/baseline/before/fashion'];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

type Engine = 'full' | 'stages' | 'compiled';
const ENGINES: readonly Engine[] = ['full', 'stages', 'compiled'];

async function benchBundle(dir: string): Promise<void> {
  if (!fs.existsSync(path.join(dir, 'manifest.json'))) {
    console.log(`${dir}: no manifest.json, skipped`);
    return;
  }
  const bundle = await readBundleDir(dir);
  const m = bundle.manifest;
  const images = testImages(m.input, IMAGES);
  if (!images || !m.backbone.file) {
    console.log(`${dir}: no test images for its input size or no backbone copy, skipped`);
    return;
  }
  const k = m.labels.length;
  const full: OrtSession = await ort.InferenceSession.create(bundle.files.get(m.backbone.file)!, SESSION);
  const { runner, sessions } = bundleStageRunner(ort, bundle, SESSION);
  const t0 = performance.now();
  const compiledModel = compileBundleCascade(m, segmentModels(bundle, 0, m.segments.length));
  const compileMs = performance.now() - t0;
  const compiled: OrtSession = await ort.InferenceSession.create(encodeModel(compiledModel), SESSION);
  const inputs = Array.from(
    { length: images.count },
    (_, i) => new ort.Tensor('float32', toModelInput(images, i, 1, m.input), inputDims(m.input, 1)),
  );
  console.log(
    `\n${dir}: ${m.segments.length} segments, ${m.exits.length} exits, ${images.count} images x ${ROUNDS} rounds, ` +
      `compiled in ${compileMs.toFixed(1)} ms`,
  );
  const settings: [string, number[]][] = [
    ['bundle thresholds', m.exits.map((e) => e.threshold)],
    ['no exit fires', m.exits.map(() => NEVER_EXIT)],
  ];
  for (const [label, thresholds] of settings) {
    const thrTensor = new ort.Tensor('float32', cascadeThresholds(thresholds, m.exits.length), [m.exits.length]);
    const run: Record<Engine, (x: OrtTensor) => Promise<{ index: number; exit: number }>> = {
      async full(x) {
        const out = await full.run({ [full.inputNames[0]!]: x });
        return { index: argmaxRow(out[full.outputNames[0]!]!.data as Float32Array, 0, k).index, exit: -1 };
      },
      async stages(x) {
        const [r] = await runCascade(m, runner, x, 1, { thresholds });
        return { index: r!.index, exit: r!.exit };
      },
      async compiled(x) {
        const out = await compiled.run({ [m.input.name]: x, [CASCADE_IO.thresholds]: thrTensor });
        const probs = out[CASCADE_IO.probabilities]!.data as Float32Array;
        return {
          index: argmaxRow(probs, 0, probs.length).index,
          exit: Number((out[CASCADE_IO.exitIndex]!.data as BigInt64Array)[0]),
        };
      },
    };
    for (const e of ENGINES) for (const x of inputs.slice(0, 10)) await run[e](x); // warm-up
    const times: Record<Engine, number[]> = { full: [], stages: [], compiled: [] };
    let mismatches = 0;
    const exitCounts = new Map<number, number>();
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < inputs.length; i++) {
        const order = ENGINES.map((_, j) => ENGINES[(i + r + j) % ENGINES.length]!); // rotate who goes first
        const got: Partial<Record<Engine, { index: number; exit: number }>> = {};
        for (const e of order) {
          const s = performance.now();
          got[e] = await run[e](inputs[i]!);
          times[e].push(performance.now() - s);
        }
        if (got.stages!.exit !== got.compiled!.exit || got.stages!.index !== got.compiled!.index) mismatches++;
        if (r === 0) exitCounts.set(got.compiled!.exit, (exitCounts.get(got.compiled!.exit) ?? 0) + 1);
      }
    }
    const fm = median(times.full);
    const fa = mean(times.full);
    console.log(
      `  ${label}: exits ${[...exitCounts]
        .sort((a, b) => a[0] - b[0])
        .map(([e, n]) => `${e}:${n}`)
        .join(' ')}; ` + `stage/compiled decisions differ on ${mismatches}`,
    );
    console.log('  | engine | median ms | mean ms | median / full | mean / full |');
    console.log('  |---|---:|---:|---:|---:|');
    for (const e of ENGINES) {
      const md = median(times[e]);
      const mn = mean(times[e]);
      console.log(
        `  | ${e} | ${md.toFixed(3)} | ${mn.toFixed(3)} | ${(md / fm).toFixed(3)} | ${(mn / fa).toFixed(3)} |`,
      );
    }
  }
  await full.release();
  await compiled.release();
  await sessions.releaseAll();
}

for (const dir of dirs) await benchBundle(dir);

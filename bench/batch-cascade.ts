// Batch latency in Node of three engines on prepared bundles, on onnxruntime-web's WASM backend (the browser's runtime;
// 1 thread unless --threads), batches interleaved: the full backbone, the stage engine (one session per segment,
// runCascade's JS decisions and row selection) and the compiled batch cascade (src/graph/compile-batch-cascade.ts: one
// session, `Compress` at each exit). Prints ms per batch and ratios to the backbone at the bundle's thresholds and with
// no exit firing (the worst case), and counts rows whose decision (label, exit) differs from the stage engine's, and
// the largest confidence difference (0 and < 1e-5 expected).
//
//   npx tsx bench/batch-cascade.ts [bundleDir …] [--batch 32] [--images 640] [--rounds 3] [--threads 1]
//
// Default bundles: main's bench bundles (bench/.bundles/{fashion,resnet20-pool,resnet56-pool}, made by `npm run bench`);
// images: ../shared/data/cifar10/test-u8.bin for 32x32x3, public/models/fashion-resnet/test-u8.bin for 28x28x1.
import fs from 'node:fs';
import path from 'node:path';
import * as ortWeb from 'onnxruntime-web';
import { intFlag } from './args.js';
import { testImages } from './test-images.js';
import { compileBundleBatchCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { bundleStageRunner } from '../src/calibrate/evaluate.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { argmaxRow, runCascade, type CascadeResult } from '../src/engine/cascade.js';
import { BATCH_CASCADE_IO } from '../src/graph/compile-batch-cascade.js';
import { cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import type { OrtModule, OrtSession, OrtTensor } from '../src/ort/types.js';

const ort = ortWeb as unknown as OrtModule;
const args = process.argv.slice(2);
const BATCH = intFlag(args, '--batch', 32);
const IMAGES = intFlag(args, '--images', 640);
const ROUNDS = intFlag(args, '--rounds', 3);
ortWeb.env.wasm.numThreads = intFlag(args, '--threads', 1);
const SESSION = { executionProviders: ['wasm'] };
const dirs = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const bundles = dirs.length ? dirs : ['fashion', 'resnet20-pool', 'resnet56-pool'].map((b) => `bench/.bundles/${b}`);

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
type Engine = 'full' | 'stages' | 'compiled';
const ENGINES: readonly Engine[] = ['full', 'stages', 'compiled'];
interface Row {
  index: number;
  exit: number;
  confidence: number;
}

async function benchBundle(dir: string): Promise<void> {
  if (!fs.existsSync(path.join(dir, 'manifest.json'))) return void console.log(`${dir}: no manifest.json, skipped`);
  const bundle = await readBundleDir(dir);
  const m = bundle.manifest;
  const images = testImages(m.input, IMAGES);
  if (!images || !m.backbone.file) return void console.log(`${dir}: no test images or no backbone copy, skipped`);
  const k = m.labels.length;
  const full: OrtSession = await ort.InferenceSession.create(bundle.files.get(m.backbone.file)!, SESSION);
  const { runner, sessions } = bundleStageRunner(ort, bundle, SESSION);
  const t0 = performance.now();
  const model = compileBundleBatchCascade(m, segmentModels(bundle, 0, m.segments.length));
  const compileMs = performance.now() - t0;
  const compiled: OrtSession = await ort.InferenceSession.create(encodeModel(model), SESSION);
  const batches: OrtTensor[] = [];
  for (let s = 0; s + BATCH <= images.count; s += BATCH)
    batches.push(new ort.Tensor('float32', toModelInput(images, s, BATCH, m.input), inputDims(m.input, BATCH)));
  console.log(
    `\n${dir}: ${m.exits.length} exits, ${batches.length} batches of ${BATCH} x ${ROUNDS} rounds, ` +
      `${ortWeb.env.wasm.numThreads} thread(s), compiled in ${compileMs.toFixed(1)} ms`,
  );
  for (const [label, thresholds] of [
    ['bundle thresholds', m.exits.map((e) => e.threshold)],
    ['no exit fires', m.exits.map(() => NEVER_EXIT)],
  ] as [string, number[]][]) {
    const thr = new ort.Tensor('float32', cascadeThresholds(thresholds, m.exits.length), [m.exits.length]);
    const run: Record<Engine, (x: OrtTensor) => Promise<Row[]>> = {
      async full(x) {
        const out = (await full.run({ [full.inputNames[0]!]: x }))[full.outputNames[0]!]!.data as Float32Array;
        return Array.from({ length: BATCH }, (_, r) => ({ ...argmaxRow(out, r * k, k), exit: -1, confidence: 0 }));
      },
      async stages(x) {
        const out: CascadeResult[] = await runCascade(m, runner, x, BATCH, { thresholds });
        return out.map((r) => ({ index: r.index, exit: r.exit, confidence: r.confidence }));
      },
      async compiled(x) {
        const out = await compiled.run({ [m.input.name]: x, [BATCH_CASCADE_IO.thresholds]: thr });
        const probs = out[BATCH_CASCADE_IO.probabilities]!.data as Float32Array;
        const exits = out[BATCH_CASCADE_IO.exitIndex]!.data as BigInt64Array;
        const rows = out[BATCH_CASCADE_IO.rowIndex]!.data as BigInt64Array;
        const res: Row[] = new Array<Row>(BATCH);
        rows.forEach((row, j) => {
          const { index, value } = argmaxRow(probs, j * k, k);
          res[Number(row)] = { index, exit: Number(exits[j]), confidence: value };
        });
        return res;
      },
    };
    for (const e of ENGINES) for (const x of batches.slice(0, 5)) await run[e](x); // warm-up
    const times: Record<Engine, number[]> = { full: [], stages: [], compiled: [] };
    let differ = 0;
    let maxDiff = 0;
    const exitCounts = new Map<number, number>();
    for (let r = 0; r < ROUNDS; r++)
      for (let b = 0; b < batches.length; b++) {
        const got: Partial<Record<Engine, Row[]>> = {};
        for (let j = 0; j < ENGINES.length; j++) {
          const e = ENGINES[(b + r + j) % ENGINES.length]!; // rotate who goes first
          const s = performance.now();
          got[e] = await run[e](batches[b]!);
          times[e].push(performance.now() - s);
        }
        got.stages!.forEach((st, i) => {
          const c = got.compiled![i];
          if (!c || c.exit !== st.exit || c.index !== st.index) differ++;
          else maxDiff = Math.max(maxDiff, Math.abs(c.confidence - st.confidence));
          if (r === 0) exitCounts.set(st.exit, (exitCounts.get(st.exit) ?? 0) + 1);
        });
      }
    const fa = mean(times.full);
    const exitsText = [...exitCounts]
      .sort((a, b) => a[0] - b[0])
      .map(([e, n]) => `${e}:${n}`)
      .join(' ');
    console.log(
      `  ${label}: exits ${exitsText}; rows deciding otherwise ${differ}, max confidence diff ${maxDiff.toExponential(1)}`,
    );
    console.log('  | engine | ms per batch | ratio to full |');
    console.log('  |---|---:|---:|');
    for (const e of ENGINES)
      console.log(`  | ${e} | ${mean(times[e]).toFixed(2)} | ${(mean(times[e]) / fa).toFixed(3)} |`);
  }
  await full.release();
  await compiled.release();
  await sessions.releaseAll();
}

for (const dir of bundles) await benchBundle(dir);

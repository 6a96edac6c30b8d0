// The batch model (src/graph/compile-batch-cascade.ts) beside the full model in Chromium on bare onnxruntime-web (WASM,
// as the runtime uses it; no selfxit runtime), batches interleaved in one page, at the bundle's thresholds: is the
// batch model's distance from the MACs in the browser onnxruntime's, and do session options change it? Variants: the
// full model and the batch model with the runtime's options (graphOptimizationLevel 'all'), and the batch model with
// the memory pattern off and with the CPU arena off (its Compress outputs have data-dependent shapes). Mean ms per
// batch and the ratio to the full model.
//
// --with-segments: the bundle's segment sessions (and one run of each) in the same page first, as the runtime's worker
// holds them beside its batch model. --worker: the measurement runs in a module worker, as the runtime does.
//
//   npx tsx bench/batch-cascade-browser.ts [bundleDir] [--batch 32] [--images 640] [--rounds 2] [--threads 1]
//     [--with-segments] [--worker] [--port P]
//
// Default bundle: bench/.bundles/resnet20-pool (made by `npm run bench`); images: ../shared/data/cifar10/test-u8.bin
// for 32x32x3 inputs, public/models/fashion-resnet/test-u8.bin for 28x28x1.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright';
import { boolFlag, intFlag } from './args.js';
import { testImages } from './test-images.js';
import { compileBundleBatchCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { BATCH_CASCADE_IO } from '../src/graph/compile-batch-cascade.js';
import { cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import { serveStatic } from '../scripts/static-server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const BATCH = intFlag(args, '--batch', 32);
const IMAGES = intFlag(args, '--images', 640);
const ROUNDS = intFlag(args, '--rounds', 2);
const THREADS = intFlag(args, '--threads', 1);
const PORT = intFlag(args, '--port', 0);
const WITH_SEGMENTS = boolFlag(args, '--with-segments');
const WORKER = boolFlag(args, '--worker');
const dir = args[0] && !args[0].startsWith('--') ? args[0] : path.join(root, 'bench/.bundles/resnet20-pool');

const bundle = await readBundleDir(dir);
const m = bundle.manifest;
const images = testImages(m.input, IMAGES);
if (!images) {
  console.log(`no test images for ${dir}'s input size: nothing to measure`);
  process.exit(0);
}
const count = images.count - (images.count % BATCH);
const x = toModelInput(images, 0, count, m.input);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'batch-cascade-browser-'));
fs.writeFileSync(path.join(tmp, 'full.onnx'), bundle.files.get(m.backbone.file!)!);
fs.writeFileSync(
  path.join(tmp, 'batch.onnx'),
  encodeModel(compileBundleBatchCascade(m, segmentModels(bundle, 0, m.segments.length))),
);
fs.writeFileSync(path.join(tmp, 'x.bin'), x);
const segments = WITH_SEGMENTS ? m.segments.map((g) => ({ file: g.file, output: g.output })) : [];
for (const { file: f } of segments) fs.writeFileSync(path.join(tmp, f), bundle.files.get(f)!);
fs.writeFileSync(path.join(tmp, 'index.html'), '<!doctype html><title>batch cascade</title>');
const thr = Array.from(
  cascadeThresholds(
    m.exits.map((e) => e.threshold),
    m.exits.length,
  ),
);
const variants: [string, string, Record<string, unknown>][] = [
  ['full', 'full.onnx', {}],
  ['batch model', 'batch.onnx', {}],
  ['batch model, enableMemPattern false', 'batch.onnx', { enableMemPattern: false }],
  ['batch model, enableCpuMemArena false', 'batch.onnx', { enableCpuMemArena: false }],
];

interface MeasureArgs {
  readonly variants: [string, string, Record<string, unknown>][];
  readonly inputName: string;
  readonly dims: number[];
  readonly thr: number[];
  readonly rounds: number;
  readonly threads: number;
  readonly thrName: string;
  readonly segments: { file: string; output: string }[];
}

/** The measurement, run in the page (or with --worker in a module worker it starts): ms per run of each variant. */
const measure = async ({
  variants,
  inputName,
  dims,
  thr,
  rounds,
  threads,
  thrName,
  segments,
}: MeasureArgs): Promise<number[][]> => {
  type T = { data: unknown };
  type S = { run(f: Record<string, unknown>): Promise<Record<string, T>>; inputNames: string[] };
  const ort = (await import('/ort/ort.wasm.min.mjs' as string)) as {
    env: { wasm: { numThreads: number; wasmPaths: string } };
    Tensor: new (t: string, d: Float32Array, dims: number[]) => unknown;
    InferenceSession: { create(u: string, o: object): Promise<S> };
  };
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = '/ort/';
  const buf = new Float32Array(await (await fetch('/x.bin')).arrayBuffer());
  const size = dims.reduce((a, b) => a * b, 1);
  const xs = Array.from({ length: buf.length / size }, (_, k) => buf.subarray(k * size, (k + 1) * size));
  const t = new ort.Tensor('float32', Float32Array.from(thr), [thr.length]);
  // the segment sessions first, each run once on its input (as the runtime's stage path has run them)
  let act: unknown = new ort.Tensor('float32', xs[0]!, dims);
  const kept: S[] = [];
  for (const { file, output } of segments) {
    const s = await ort.InferenceSession.create(`/${file}`, { graphOptimizationLevel: 'all' });
    kept.push(s);
    act = (await s.run({ [s.inputNames[0]!]: act }))[output];
  }
  const sessions: S[] = [];
  for (const [, file, options] of variants)
    sessions.push(await ort.InferenceSession.create(`/${file}`, { graphOptimizationLevel: 'all', ...options }));
  const feeds = (k: number, x: Float32Array): Record<string, unknown> => {
    const tx = new ort.Tensor('float32', x, dims);
    return k === 0 ? { [sessions[0]!.inputNames[0]!]: tx } : { [inputName]: tx, [thrName]: t };
  };
  for (const s of sessions.keys()) for (let w = 0; w < 40; w++) await sessions[s]!.run(feeds(s, xs[w % xs.length]!));
  const times = variants.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++)
    for (let i = 0; i < xs.length; i++)
      for (let j = 0; j < variants.length; j++) {
        const k = (i + r + j) % variants.length;
        const t0 = performance.now();
        const out = await sessions[k]!.run(feeds(k, xs[i]!));
        for (const o of Object.values(out)) void o.data;
        times[k]!.push(performance.now() - t0);
      }
  return times;
};

const server = await serveStatic({
  mounts: { '/': tmp, '/ort/': path.join(root, 'node_modules/onnxruntime-web/dist') },
  port: PORT,
});
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const page = await browser.newPage();
  await page.addInitScript('globalThis.__name = (f) => f'); // tsx's keepNames helper, used by the evaluated function
  await page.goto(`${server.url}/index.html`);
  const measureArgs: MeasureArgs = {
    variants,
    inputName: m.input.name,
    dims: [...inputDims(m.input, BATCH)],
    thr,
    rounds: ROUNDS,
    threads: THREADS,
    thrName: BATCH_CASCADE_IO.thresholds,
    segments,
  };
  let res: number[][];
  if (WORKER) {
    // the same function in a module worker (as the runtime runs onnxruntime), tsx's keepNames helper defined there too
    const source = `globalThis.__name = (f) => f;\nconst measure = ${measure.toString()};\nself.onmessage = async (e) => self.postMessage(await measure(e.data));\n`;
    fs.writeFileSync(path.join(tmp, 'measure-worker.mjs'), source);
    res = await page.evaluate(
      (a) =>
        new Promise<number[][]>((resolve, reject) => {
          const w = new Worker('/measure-worker.mjs', { type: 'module' });
          w.onmessage = (e: MessageEvent<number[][]>) => resolve(e.data);
          w.onerror = (e) => reject(new Error(e.message));
          w.postMessage(a);
        }),
      measureArgs,
    );
  } else res = await page.evaluate(measure, measureArgs);
  const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
  const f = mean(res[0]!);
  console.log(
    `${dir}: ${m.exits.length} exits, ${count / BATCH} batches of ${BATCH} x ${ROUNDS} rounds, Chromium WASM ` +
      `${THREADS} thread(s), the bundle's thresholds${WITH_SEGMENTS ? ', segment sessions held too' : ''}${WORKER ? ', in a worker' : ''}`,
  );
  console.log('| variant | mean ms per batch | / full |');
  console.log('|---|---:|---:|');
  variants.forEach(([n], k) =>
    console.log(`| ${n} | ${mean(res[k]!).toFixed(2)} | ${(mean(res[k]!) / f).toFixed(3)} |`),
  );
} finally {
  await browser.close();
  await server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}

// The SDK's worker API in Node, two builds side by side with the full model (onnxruntime-web WASM, 1 thread, batch 1,
// one process, interleaved call by call, the order rotating): A = the source of another checkout (--base DIR, e.g. a
// `git worktree` of an older commit), B = this checkout, full = the bundle's backbone run as the bench's baseline
// worker runs it (a new input tensor, session.run, softmax and argmax). Each call is timed by this process's CPU time
// (robust to other jobs on the machine) and wall time; A and B's calls are profiled (their onnxruntime runs' time,
// `profile.runMs`), full's session.run is timed alone. Inputs cross as RGBA pixels (as an ImageData does), so the
// worker's preprocessing counts. Default manifest: manifest-noexit.json (every threshold 1, the bench's worst case;
// `npm run bench` writes it) after --warmup calls (default 1500), so that live pruning has switched every exit off;
// the test file's first 1,000 images in turn, as the bench takes them.
//
//   npx tsx bench/worker-ab.ts [bundleDir] --base DIR [--calls N] [--warmup W] [--manifest NAME] [--port P]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortWeb from 'onnxruntime-web/wasm';
import { intFlag, stringFlag } from './args.js';
import type { RuntimeState, WorkerApi } from '../src/protocol.js';
import type { OrtHandle, OrtWeb } from '../src/runtime/ort-backend.js';
import { noCache } from '../src/runtime/cache.js';
import { argmaxRow, softmaxRow } from '../src/engine/cascade.js';
import { toModelInput } from '../src/bundle/input.js';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { serveStatic } from '../scripts/static-server.mjs';

/**
 * A turn of the event loop between calls, as a worker gets between messages: the compiled engine makes its next model
 * in the background on timers (compiled-engine.ts build()), which calls awaited back to back would never let run.
 */
const macrotask = (): Promise<void> => new Promise((r) => setImmediate(r));
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const CALLS = intFlag(args, '--calls', 2000);
const WARMUP = intFlag(args, '--warmup', 1500);
const PORT = Number(stringFlag(args, '--port') ?? 0);
const manifestName = stringFlag(args, '--manifest') ?? 'manifest-noexit.json';
const base = stringFlag(args, '--base');
if (!base) throw new Error('--base DIR (a checkout of the code to compare with) is required');
const dir = path.resolve(args[0] ?? path.join(root, 'bench/.bundles/fashion'));
ortWeb.env.wasm.numThreads = 1;

type CreateApi = (deps: { loadOrt: () => Promise<OrtHandle>; cache: typeof noCache }) => WorkerApi;
const loadOrt = async (): Promise<OrtHandle> => ({
  ort: ortWeb as unknown as OrtWeb,
  backend: 'wasm',
  threads: 1,
  fallbackReason: undefined,
});
const apiOf = async (src: string): Promise<WorkerApi> => {
  const mod = (await import(path.join(src, 'src/runtime/api.ts'))) as { createWorkerApi: CreateApi };
  return mod.createWorkerApi({ loadOrt, cache: noCache });
};

const server = await serveStatic({ mounts: { '/': dir }, port: PORT, isolation: false });
const manifest = JSON.parse(fs.readFileSync(path.join(dir, manifestName), 'utf8')) as BundleManifest;
const { height, width, channels } = manifest.input;
const imageFile =
  channels === 1
    ? path.join(root, 'public/models/fashion-resnet/test-u8.bin')
    : path.resolve(root, '../shared/data/cifar10/test-u8.bin');
const all = new Uint8Array(fs.readFileSync(imageFile));
const per = height * width * channels;
const total = all.length / per;
// the test file's first images in order, as `npm run bench` takes them (its worst case prunes every exit on these)
const images = Array.from({ length: Math.min(1000, total) }, (_, i) => all.subarray(i * per, (i + 1) * per));
/** An image as RGBA pixels (grey replicated), as an ImageData would cross. */
const rgba = (img: Uint8Array): Uint8ClampedArray => {
  const out = new Uint8ClampedArray(width * height * 4);
  for (let p = 0; p < width * height; p++)
    for (let c = 0; c < 3; c++) out[p * 4 + c] = img[p * channels + (channels === 1 ? 0 : c)]!;
  for (let p = 0; p < width * height; p++) out[p * 4 + 3] = 255;
  return out;
};
const pixels = images.map(rgba);

try {
  const req = {
    manifestUrl: `${server.url}${manifestName}`,
    backend: 'wasm' as const,
    threads: 1,
    cache: false,
    manifestMaxAgeMs: Infinity,
    wasmPaths: undefined,
    usePlan: false,
  };
  const a = await apiOf(path.resolve(base));
  const b = await apiOf(root);
  await a.init(req);
  await b.init(req);
  const full = await ortWeb.InferenceSession.create(
    new Uint8Array(fs.readFileSync(path.join(dir, manifest.backbone.file!))),
    {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
    },
  );
  const thresholds = manifest.exits.map((e) => e.threshold);
  const k = manifest.labels.length;
  type Side = (i: number) => Promise<{ label: number; run: number }>;
  const states = new Map<WorkerApi, RuntimeState>();
  const sdk =
    (api: WorkerApi): Side =>
    async (i) => {
      const r = await api.classify({
        inputs: [{ kind: 'pixels', width, height, data: pixels[i]!.slice() }],
        thresholds,
        probabilities: false,
        profile: true,
      });
      states.set(api, r.state);
      const res = r.results[0]!;
      return { label: res.index, run: res.profile!.runMs };
    };
  const sides: [string, Side][] = [
    ['A (--base)', sdk(a)],
    ['B (this checkout)', sdk(b)],
    [
      'full model',
      async (i) => {
        const x = new ortWeb.Tensor('float32', toModelInput({ data: images[i]!, count: 1 }, 0, 1, manifest.input), [
          1,
          channels,
          height,
          width,
        ]);
        const t0 = performance.now();
        const out = await full.run({ [full.inputNames[0]!]: x });
        const run = performance.now() - t0;
        const v = out[full.outputNames[0]!]!.data as Float32Array;
        const probs = manifest.backbone.outputKind === 'logits' ? softmaxRow(v, 0, k) : v;
        return { label: argmaxRow(probs, 0, k).index, run };
      },
    ],
  ];
  for (let w = 0; w < WARMUP; w++)
    for (const [, call] of sides) {
      await macrotask();
      await call(w % images.length);
    }
  const cpu = sides.map(() => [] as number[]);
  const wall = sides.map(() => [] as number[]);
  const run = sides.map(() => [] as number[]);
  let agree = 0;
  for (let i = 0; i < CALLS; i++) {
    const labels: number[] = [];
    for (let j = 0; j < sides.length; j++) {
      const s = (i + j) % sides.length;
      await macrotask();
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const r = await sides[s]![1](i % images.length);
      wall[s]!.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu[s]!.push((c.user + c.system) / 1000);
      run[s]!.push(r.run);
      labels[s] = r.label;
    }
    if (labels[0] === labels[1] && labels[1] === labels[2]) agree++;
  }
  const mean = (x: number[]): number => x.reduce((p, q) => p + q, 0) / x.length;
  const median = (x: number[]): number => [...x].sort((p, q) => p - q)[x.length >> 1]!;
  const stateA = states.get(a)!;
  const stateB = states.get(b)!;
  console.log(
    `${dir} (${manifestName}): ${CALLS} calls per side after ${WARMUP} warm-up calls, onnxruntime-web WASM 1 thread (Node); ` +
      `A = ${base}, B = this checkout; same label on ${((agree / CALLS) * 100).toFixed(1)} %; engines A/B ` +
      `${stateA.engine}/${stateB.engine}, exits pruned A/B [${stateA.prunedExits?.join(',')}]/[${stateB.prunedExits?.join(',')}]`,
  );
  console.log(
    '| side | call, CPU ms: mean | median | / full (mean) | call, wall ms: median | onnxruntime run ms: median | / full (median) | call − run, wall µs (median) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  sides.forEach(([name], s) =>
    console.log(
      `| ${name} | ${mean(cpu[s]!).toFixed(3)} | ${median(cpu[s]!).toFixed(3)} | ${(mean(cpu[s]!) / mean(cpu[2]!)).toFixed(3)} | ` +
        `${median(wall[s]!).toFixed(3)} | ${median(run[s]!).toFixed(3)} | ${(median(run[s]!) / median(run[2]!)).toFixed(3)} | ` +
        `${(median(wall[s]!.map((w, i) => w - run[s]![i]!)) * 1000).toFixed(1)} |`,
    ),
  );
  // B − A paired by call (the two calls of an image are neighbours in time)
  const d = cpu[1]!.map((x, i) => x - cpu[0]![i]!);
  const mu = mean(d);
  const se = Math.sqrt(d.reduce((p, x) => p + (x - mu) ** 2, 0) / (d.length - 1) / d.length);
  console.log(
    `B − A, CPU per call: ${(mu * 1000).toFixed(1)} ± ${(1.96 * se * 1000).toFixed(1)} µs (95 %), ` +
      `${((mu / mean(cpu[2]!)) * 100).toFixed(2)} % of the full model's call`,
  );
  await a.dispose();
  await b.dispose();
  await full.release();
} finally {
  await server.close();
}

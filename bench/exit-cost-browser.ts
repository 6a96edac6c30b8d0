// The compiled cascade's layouts side by side in Chromium (onnxruntime-web WASM, as the runtime uses it): the full
// model, the segments re-joined (chain) and with their heads as outputs, the nested layout (each exit's else-branch holds
// the rest), and the flat one (one stage per If), interleaved
// image by image in one page, with no exit firing (worst case) or at the bundle's thresholds. Wall time per run
// (performance.now), medians, means (at the bundle's thresholds the times are bimodal: compare means there) and the
// paired per-image difference to the full model per exit.
//
// --vs DIR adds the nested and exit-free models of a second bundle of the same backbone (e.g. other cuts), same thresholds
// rule (that bundle's own at --at-bundle).
// --prune-from K adds live pruning's two ways of running with exits K.. off (their thresholds above 1, the others as the
// rule says): the gated model (their heads skipped, a gate on every exit) and the model without them (compileBundleCascade
// `dropped`, what the runtime's compiled engine serves since the exits-left-out change).
//
//   npx tsx bench/exit-cost-browser.ts [bundleDir] [--images N] [--rounds R] [--threads T] [--at-bundle] [--vs DIR]
//     [--prune-from K] [--port P]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright';
import { chainModel } from './cascade-variants.js';
import { boolFlag, intFlag, stringFlag } from './args.js';
import { compileBundleCascade, compileBundleChain, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import { serveStatic } from '../scripts/static-server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const IMAGES = intFlag(args, '--images', 100);
const ROUNDS = intFlag(args, '--rounds', 3);
const THREADS = intFlag(args, '--threads', 1);
const PORT = intFlag(args, '--port', 0);
const atBundle = boolFlag(args, '--at-bundle');
const dir = args[0] && !args[0].startsWith('--') ? args[0] : path.resolve(root, '../main/bench/.bundles/resnet56');

const bundle = await readBundleDir(dir);
const vsDir = stringFlag(args, '--vs');
const pruneFrom = args.includes('--prune-from') ? intFlag(args, '--prune-from', 0) : undefined;
const vs = vsDir ? await readBundleDir(vsDir) : undefined;
const m = bundle.manifest;
const all = segmentModels(bundle, 0, m.segments.length);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'exit-cost-browser-'));
const models: Record<string, Uint8Array> = {
  full: bundle.files.get(m.backbone.file!)!,
  chain: encodeModel(chainModel(bundle, false)),
  'chain + heads as outputs': encodeModel(chainModel(bundle, true)),
  nested: encodeModel(compileBundleCascade(m, all, 0, 'nested')),
  flat: encodeModel(compileBundleCascade(m, all, 0, 'flat')),
  // what the runtime's compiled engine serves while every exit is off (compileBundleChain: no thresholds input)
  'exit-free (runtime)': encodeModel(compileBundleChain(m, all)),
};
const pruned = pruneFrom === undefined ? undefined : new Set(m.exits.map((_, e) => e).filter((e) => e >= pruneFrom));
if (pruned) {
  models[`gated, exits ${pruneFrom}.. off`] = encodeModel(compileBundleCascade(m, all, 0, 'nested', true));
  models[`exits ${pruneFrom}.. left out`] = encodeModel(compileBundleCascade(m, all, 0, 'nested', false, pruned));
}
if (vs) {
  const vm = vs.manifest;
  const vAll = segmentModels(vs, 0, vm.segments.length);
  models['nested (--vs)'] = encodeModel(compileBundleCascade(vm, vAll, 0, 'nested'));
  models['exit-free (--vs)'] = encodeModel(compileBundleChain(vm, vAll));
}
const files = Object.keys(models).map((_, k) => `m${k}.onnx`);
Object.values(models).forEach((b, k) => fs.writeFileSync(path.join(tmp, files[k]!), b));
const images = new Uint8Array(fs.readFileSync(path.resolve(root, '../shared/data/cifar10/test-u8.bin')));
const per = 3072;
const xs = Array.from({ length: IMAGES }, (_, k) => {
  const i = (k * 313 + 17) % (images.length / per);
  return toModelInput({ data: images.subarray(i * per, (i + 1) * per), count: 1 }, 0, 1, m.input);
});
const flatX = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
xs.forEach((x, k) => flatX.set(x, k * x.length));
fs.writeFileSync(path.join(tmp, 'x.bin'), flatX);
fs.writeFileSync(path.join(tmp, 'index.html'), '<!doctype html><title>exit cost</title>');
const thresholdsOf = (man: typeof m, off?: ReadonlySet<number>): number[] =>
  Array.from(
    cascadeThresholds(
      man.exits.map((e, i) => (atBundle && !off?.has(i) ? e.threshold : NEVER_EXIT)),
      man.exits.length,
    ),
  );
const vsFrom = vs ? Object.keys(models).indexOf('nested (--vs)') : Infinity;
// each model's thresholds: the rule's, the pruned exits off for the pruning variants, the --vs bundle's own for its
const thrs = Object.keys(models).map((n, k) =>
  k >= vsFrom ? thresholdsOf(vs!.manifest) : n.includes('..') ? thresholdsOf(m, pruned) : thresholdsOf(m),
);

const server = await serveStatic({
  mounts: { '/': tmp, '/ort/': path.join(root, 'node_modules/onnxruntime-web/dist') },
  port: PORT,
});
// WebAssembly tiered up eagerly, as `npm run bench` has it (BENCH_JS_FLAGS): no run is timed at the baseline tier
const jsFlags = process.env.BENCH_JS_FLAGS ?? '--no-wasm-dynamic-tiering';
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', ...(jsFlags ? [`--js-flags=${jsFlags}`] : [])],
});
try {
  const page = await browser.newPage();
  await page.addInitScript('globalThis.__name = (f) => f'); // tsx's keepNames helper, used by the evaluated function
  await page.goto(`${server.url}/index.html`);
  const res = await page.evaluate(
    async ({ names, inputName, dims, thrs, rounds, threads, thrName }) => {
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
      const ts = thrs.map((thr) => new ort.Tensor('float32', Float32Array.from(thr), [thr.length]));
      const sessions: S[] = [];
      for (const n of names)
        sessions.push(await ort.InferenceSession.create(`/${n}`, { graphOptimizationLevel: 'all' }));
      const feeds = (k: number, x: Float32Array): Record<string, unknown> => {
        const tx = new ort.Tensor('float32', x, dims);
        if (k === 0) return { [sessions[0]!.inputNames[0]!]: tx };
        const names = sessions[k]!.inputNames;
        return names.includes(thrName) ? { [inputName]: tx, [thrName]: ts[k]! } : { [inputName]: tx };
      };
      for (const s of sessions.keys()) for (const x of xs.slice(0, 10)) await sessions[s]!.run(feeds(s, x));
      const times = names.map(() => [] as number[]);
      for (let i = 0; i < xs.length; i++)
        for (let j = 0; j < names.length; j++) {
          const k = (i + j) % names.length;
          const t0 = performance.now();
          for (let r = 0; r < rounds; r++) {
            const out = await sessions[k]!.run(feeds(k, xs[i]!));
            for (const o of Object.values(out)) void o.data;
          }
          times[k]!.push((performance.now() - t0) / rounds);
        }
      return times;
    },
    {
      names: files,
      inputName: m.input.name,
      dims: [...inputDims(m.input, 1)],
      thrs,
      rounds: ROUNDS,
      threads: THREADS,
      thrName: CASCADE_IO.thresholds,
    },
  );
  const median = (v: number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1]!;
  const f = median(res[0]!);
  console.log(
    `${dir}: ${m.exits.length} exits, ${IMAGES} images x ${ROUNDS} rounds, Chromium WASM ${THREADS} thread(s), ` +
      `${atBundle ? "bundle's thresholds" : 'no exit (worst case)'}`,
  );
  const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
  const fMean = mean(res[0]!);
  console.log('| variant | median ms | / full | mean ms | mean / full | paired extra per exit, ms |');
  console.log('|---|---:|---:|---:|---:|---:|');
  Object.keys(models).forEach((n, k) => {
    const paired = median(res[k]!.map((t, i) => t - res[0]![i]!));
    console.log(
      `| ${n} | ${median(res[k]!).toFixed(3)} | ${(median(res[k]!) / f).toFixed(3)} | ${mean(res[k]!).toFixed(3)} | ` +
        `${(mean(res[k]!) / fMean).toFixed(3)} | ${(paired / (k >= vsFrom ? vs!.manifest.exits.length : m.exits.length)).toFixed(4)} |`,
    );
  });
} finally {
  await browser.close();
  await server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}

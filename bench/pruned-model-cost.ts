// What live pruning's models cost at a bundle's own thresholds: the full model, the compiled cascade with every exit
// (ungated), and for each depth k the deepest exits k.. pruned two ways: the gated model with their thresholds above 1
// (their heads skipped, a gate on every exit) and the model with those exits left out (compileBundleCascade `dropped`:
// no head, no gate; k = 0 is the exit-free model). onnxruntime-web WASM in Node, 1 thread, batch 1, interleaved call
// by call (the order rotates), wall time per run; each variant's mean over the images, its ratio to `full` and the
// share of images leaving at each exit.
//
//   npx tsx bench/pruned-model-cost.ts <bundleDir> [--images N] [--rounds R]
import path from 'node:path';
import * as ortWeb from 'onnxruntime-web/wasm';
import { intFlag } from './args.js';
import { testImages } from './test-images.js';
import { compileBundleCascade, compileBundleChain, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import type { OrtModule, OrtSession, OrtTensor } from '../src/ort/types.js';

const ort = ortWeb as unknown as OrtModule;
ortWeb.env.wasm.numThreads = 1;
const OPTIONS = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' as const };

const args = process.argv.slice(2);
const dir = args[0];
if (!dir || dir.startsWith('--')) throw new Error('usage: pruned-model-cost.ts <bundleDir> [--images N] [--rounds R]');
const bundle = await readBundleDir(dir);
const m = bundle.manifest;
const batch = testImages(m.input, intFlag(args, '--images', 1000));
if (!batch) throw new Error(`no test images for a ${m.input.height}x${m.input.width}x${m.input.channels} input`);
const IMAGES = batch.count;
const ROUNDS = intFlag(args, '--rounds', 2);
const dims = inputDims(m.input, 1);
const inputs = Array.from(
  { length: IMAGES },
  (_, k) => new ort.Tensor('float32', toModelInput(batch, k, 1, m.input), dims),
);

const E = m.exits.length;
const bundleT = m.exits.map((e) => e.threshold);
const thresholdsTensor = (t: readonly number[]): OrtTensor => new ort.Tensor('float32', cascadeThresholds(t, E), [E]);
const segs = () => segmentModels(bundle, 0, m.segments.length);
const inName = m.input.name;
const last = m.segments[m.segments.length - 1]!.output;

interface Variant {
  readonly name: string;
  readonly session: OrtSession;
  readonly feeds: (x: OrtTensor) => Record<string, OrtTensor>;
  readonly fetches?: readonly string[];
}
const variants: Variant[] = [];
const add = async (name: string, bytes: Uint8Array, t?: readonly number[], fetches?: readonly string[]) => {
  const session = await ort.InferenceSession.create(bytes, OPTIONS);
  const tt = t ? thresholdsTensor(t) : undefined;
  variants.push({
    name,
    session,
    feeds: (x) => (tt ? { [inName]: x, [CASCADE_IO.thresholds]: tt } : { [inName]: x }),
    ...(fetches ? { fetches } : {}),
  });
};
await add('full', bundle.files.get(m.backbone.file!)!);
await add('ungated, every exit', encodeModel(compileBundleCascade(m, segs(), 0, 'nested', false)), bundleT);
const gated = encodeModel(compileBundleCascade(m, segs(), 0, 'nested', true));
for (let k = E - 1; k >= 0; k--) {
  const t = bundleT.map((v, e) => (e >= k ? NEVER_EXIT : v));
  const dropped = new Set(m.exits.map((_, e) => e).filter((e) => e >= k));
  await add(`gated, exits ${k}.. off`, gated, t);
  if (k === 0) await add('exit-free (chain)', encodeModel(compileBundleChain(m, segs())), undefined, [last]);
  else await add(`exits ${k}.. left out`, encodeModel(compileBundleCascade(m, segs(), 0, 'nested', false, dropped)), t);
}

const run = async (v: Variant, x: OrtTensor): Promise<number> => {
  const out = await (v.fetches ? v.session.run(v.feeds(x), v.fetches) : v.session.run(v.feeds(x)));
  const ix = out[CASCADE_IO.exitIndex];
  return ix ? Number(ix.data[0]) : -1;
};
for (let i = 0; i < 100; i++) for (const v of variants) await run(v, inputs[i % IMAGES]!);
const sum = variants.map(() => 0);
const exits = variants.map(() => new Map<number, number>());
let n = 0;
for (let r = 0; r < ROUNDS; r++)
  for (let i = 0; i < IMAGES; i++) {
    for (let j = 0; j < variants.length; j++) {
      const k = (i + j) % variants.length;
      const t0 = performance.now();
      const x = await run(variants[k]!, inputs[i]!);
      sum[k]! += performance.now() - t0;
      if (r === 0) exits[k]!.set(x, (exits[k]!.get(x) ?? 0) + 1);
    }
    n++;
  }
const full = sum[0]! / n;
console.log(
  `${path.basename(dir)}: ${IMAGES} images × ${ROUNDS} rounds, thresholds ${bundleT.map((t) => t.toFixed(4)).join(', ')}`,
);
console.log('variant'.padEnd(28), 'mean ms'.padStart(8), 'ratio'.padStart(7), '  exits (index: share)');
variants.forEach((v, k) => {
  const ms = sum[k]! / n;
  const shares = [...exits[k]!.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([e, c]) => `${e}: ${(c / IMAGES).toFixed(3)}`)
    .join('  ');
  console.log(v.name.padEnd(28), ms.toFixed(3).padStart(8), (ms / full).toFixed(3).padStart(7), ' ', shares);
});

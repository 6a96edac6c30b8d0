// What the exit-free model costs against the original model (issue 12's worst case: every exit pruned, the compiled
// engine runs the segments re-joined with no head and no `If`, plus a pruning probe every PRUNE_DEFAULTS.probeEvery-th
// call). onnxruntime-web WASM in Node, 1 thread, batch 1, interleaved call by call (the order rotates), CPU time of
// this process per run (robust to other jobs on the machine) and wall time. Variants:
//   full             the bundle's backbone (the original model), fed as the bench's baseline worker feeds it
//   exit-free        compileBundleChain's model as CompiledEngine runs it (the input alone, the one output fetched)
//   before …         with --before FILE: an exit-free model of the older compiler (segments renamed `s<i>/`, a
//                    `thresholds` input, Softmax and an exit-index output), fed and fetched as the older engine did
//                    (input + thresholds, `probabilities`), then with one difference removed at a time, to price each
//   probe            the gated model with every threshold 1 (what a probe runs while every exit is pruned)
// Prints median and mean per variant, the ratio to `full`, the paired mean difference with a 95 % interval, and the
// amortised probe cost per call (probe − exit-free) / probeEvery.
//
//   npx tsx bench/exit-free-cost.ts [bundleDir] [--calls N] [--only name,name] [--before FILE]
//
// The older compiler's model (the code at 05b1c6e), for --before: in a checkout of that commit,
//   npx tsx -e "import('./src/cli/bundle-fs.ts').then(async ({readBundleDir}) => { const {compileBundleCascade,
//   segmentModels} = await import('./src/bundle/compiled-cascade.ts'); const {encodeModel} = await
//   import('./src/graph/index.ts'); const b = await readBundleDir('bench/.bundles/fashion'); const m = b.manifest;
//   require('fs').writeFileSync('/tmp/chain-before.onnx', encodeModel(compileBundleCascade(m, segmentModels(b, 0,
//   m.segments.length), 0, 'nested', false, false))); })"
//
// Default bundle: bench/.bundles/fashion (`npm run bench` prepares it); images: the model's test file (28x28x1:
// public/models/fashion-resnet/test-u8.bin, 32x32x3: ../shared/data/cifar10/test-u8.bin). Default 2000 calls per variant.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortWeb from 'onnxruntime-web/wasm';
import { intFlag, stringFlag } from './args.js';
import { compileBundleCascade, compileBundleChain, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { decodeModel, encodeModel, type OnnxModel } from '../src/graph/index.js';
import { pb } from '../src/graph/proto.js';
import type { OrtModule, OrtSession, OrtTensor } from '../src/ort/types.js';
import { PRUNE_DEFAULTS } from '../src/policy/exit-pruning.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ort = ortWeb as unknown as OrtModule;
ortWeb.env.wasm.numThreads = 1;
const OPTIONS = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' as const };

const args = process.argv.slice(2);
const CALLS = intFlag(args, '--calls', 2000);
const ONLY = stringFlag(args, '--only')?.split(',');
const BEFORE = stringFlag(args, '--before');
const dir = args[0] ?? path.join(root, 'bench/.bundles/fashion');

const bundle = await readBundleDir(dir);
const m = bundle.manifest;
const { height, width, channels } = m.input;
const imageFile =
  channels === 1
    ? path.join(root, 'public/models/fashion-resnet/test-u8.bin')
    : path.resolve(root, '../shared/data/cifar10/test-u8.bin');
const all = new Uint8Array(fs.readFileSync(imageFile));
const per = height * width * channels;
const total = all.length / per;
const IMAGES = Math.min(200, total);
const images = Array.from({ length: IMAGES }, (_, k) => {
  const i = (k * 313 + 17) % total;
  return toModelInput({ data: all.subarray(i * per, (i + 1) * per), count: 1 }, 0, 1, m.input);
});
const dims = inputDims(m.input, 1);

const clone = (x: OnnxModel): OnnxModel => decodeModel(encodeModel(x));
const segs = (): OnnxModel[] => segmentModels(bundle, 0, m.segments.length);
const chain = compileBundleChain(m, segs());
const gated = compileBundleCascade(m, segs(), 0, 'nested', true);
const before = BEFORE ? decodeModel(new Uint8Array(fs.readFileSync(BEFORE))) : undefined;

/** The older exit-free model with its `thresholds` input removed. */
function noThresholds(x: OnnxModel): OnnxModel {
  const c = clone(x);
  const g = c.proto.graph!;
  g.input = g.input!.filter((i) => i.name !== CASCADE_IO.thresholds);
  return c;
}
/** The older exit-free model without thresholds, final Softmax and exit-index constant: it outputs the logits. */
function logitsOut(x: OnnxModel): OnnxModel {
  const c = noThresholds(x);
  const g = c.proto.graph!;
  const sm = g.node!.find((n) => n.opType === 'Softmax')!;
  g.node = g.node!.filter((n) => n !== sm && !(n.output ?? []).includes(CASCADE_IO.exitIndex));
  const out = pb.ValueInfoProto.create({ ...g.output![0]!, name: sm.input![0]! });
  g.output = [out];
  return c;
}
/** `x` with the original model's input dims (a named batch dim). */
function origInputDims(x: OnnxModel): OnnxModel {
  const c = clone(x);
  const orig = decodeModel(bundle.files.get(m.backbone.file!)!).proto.graph!.input![0]!;
  const g = c.proto.graph!;
  g.input = g.input!.map((i) => (i.name === orig.name ? pb.ValueInfoProto.create({ ...orig }) : i));
  return c;
}

interface Variant {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly feeds: (x: OrtTensor) => Record<string, OrtTensor>;
  readonly fetches?: readonly string[];
}
const off = new ort.Tensor(
  'float32',
  cascadeThresholds(
    m.exits.map(() => NEVER_EXIT),
    m.exits.length,
  ),
  [m.exits.length],
);
const ones = new ort.Tensor(
  'float32',
  cascadeThresholds(
    m.exits.map(() => 1),
    m.exits.length,
  ),
  [m.exits.length],
);
const inName = m.input.name;
const only = (x: OrtTensor): Record<string, OrtTensor> => ({ [inName]: x });
const last = m.segments[m.segments.length - 1]!.output;
const VARIANTS: Variant[] = [
  { name: 'full', bytes: bundle.files.get(m.backbone.file!)!, feeds: only },
  {
    name: 'exit-free (compileBundleChain, as the engine runs it)',
    bytes: encodeModel(chain),
    feeds: only,
    fetches: [last],
  },
  ...(before
    ? [
        {
          name: 'before: exit-free as the older engine ran it (input + thresholds, fetch probabilities)',
          bytes: encodeModel(before),
          feeds: (x: OrtTensor) => ({ [inName]: x, [CASCADE_IO.thresholds]: off }),
          fetches: [CASCADE_IO.probabilities],
        },
        {
          name: 'before, every output fetched',
          bytes: encodeModel(before),
          feeds: (x: OrtTensor) => ({ [inName]: x, [CASCADE_IO.thresholds]: off }),
        },
        {
          name: 'before, no thresholds input',
          bytes: encodeModel(noThresholds(before)),
          feeds: only,
          fetches: [CASCADE_IO.probabilities],
        },
        { name: 'before, no thresholds, logits out (no Softmax)', bytes: encodeModel(logitsOut(before)), feeds: only },
        {
          name: 'before as above, original input dims',
          bytes: encodeModel(origInputDims(logitsOut(before))),
          feeds: only,
        },
      ]
    : []),
  {
    name: 'probe: gated model, thresholds 1',
    bytes: encodeModel(gated),
    feeds: (x: OrtTensor) => ({ [inName]: x, [CASCADE_IO.thresholds]: ones }),
  },
].filter((v, i) => i === 0 || !ONLY || ONLY.some((o) => v.name.startsWith(o)));

const sessions: OrtSession[] = [];
for (const v of VARIANTS) sessions.push(await ort.InferenceSession.create(v.bytes, OPTIONS));
const inputs = images.map((d) => new ort.Tensor('float32', d, dims));
const runOne = async (k: number, x: OrtTensor): Promise<number> => {
  const v = VARIANTS[k]!;
  const s = sessions[k]!;
  const out = await (v.fetches ? s.run(v.feeds(x), v.fetches) : s.run(v.feeds(x)));
  return (Object.values(out)[0]!.data as Float32Array)[0]!;
};
for (let i = 0; i < 100; i++) for (let k = 0; k < VARIANTS.length; k++) await runOne(k, inputs[i % IMAGES]!);

const cpu = VARIANTS.map(() => [] as number[]);
const wall = VARIANTS.map(() => [] as number[]);
for (let i = 0; i < CALLS; i++) {
  const x = inputs[i % IMAGES]!;
  for (let j = 0; j < VARIANTS.length; j++) {
    const k = (i + j) % VARIANTS.length;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await runOne(k, x);
    const t = performance.now() - t0;
    const c = process.cpuUsage(c0);
    cpu[k]!.push((c.user + c.system) / 1000);
    wall[k]!.push(t);
  }
}
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
};
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
/** Mean of b − a paired by call, with a 95 % half-width. */
function paired(a: number[], b: number[]): string {
  const d = b.map((x, i) => x - a[i]!);
  const mu = mean(d);
  const sd = Math.sqrt(d.reduce((s, x) => s + (x - mu) ** 2, 0) / (d.length - 1));
  return `${(mu * 1000).toFixed(1)} ± ${((1.96 * sd) / Math.sqrt(d.length)) * 1000 < 0.05 ? '0.0' : (((1.96 * sd) / Math.sqrt(d.length)) * 1000).toFixed(1)}`;
}
console.log(
  `${dir}: ${m.segments.length} segments, ${m.exits.length} exits; onnxruntime-web WASM 1 thread (Node), ${CALLS} calls per variant, interleaved`,
);
for (const [label, t] of [
  ['CPU time', cpu],
  ['wall time', wall],
] as const) {
  console.log(`\n${label}:\n| variant | median ms | mean ms | mean / full | paired mean − full, µs |`);
  console.log('|---|---:|---:|---:|---:|');
  VARIANTS.forEach((v, k) =>
    console.log(
      `| ${v.name} | ${median(t[k]!).toFixed(3)} | ${mean(t[k]!).toFixed(3)} | ${(mean(t[k]!) / mean(t[0]!)).toFixed(3)} | ${k ? paired(t[0]!, t[k]!) : ''} |`,
    ),
  );
  const p = VARIANTS.findIndex((v) => v.name.startsWith('probe'));
  const c = VARIANTS.findIndex((v) => v.name.startsWith('exit-free'));
  if (p > 0 && c > 0)
    console.log(
      `probe − exit-free: ${((mean(t[p]!) - mean(t[c]!)) * 1000).toFixed(1)} µs, per call at one probe in ${PRUNE_DEFAULTS.probeEvery}: ${(((mean(t[p]!) - mean(t[c]!)) / PRUNE_DEFAULTS.probeEvery) * 1000).toFixed(1)} µs (${(((mean(t[p]!) - mean(t[c]!)) / PRUNE_DEFAULTS.probeEvery / mean(t[0]!)) * 100).toFixed(2)} % of full)`,
    );
}
for (const s of sessions) await s.release();

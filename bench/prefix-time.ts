// How a bundle's backbone time is spread over its depth at batch 1, against its MACs (issue 12: "where the time goes"
// of the latency goals, ratio ≤ MACs fraction + 0.03). The exit-free prefixes of the backbone up to each exit's cut
// (compileBundleChain of segments 0..i: no head, no `If`, the cut activation out) and the whole backbone run on real
// test images, interleaved call by call (the order rotating), onnxruntime-web WASM in Node, 1 thread, CPU time of this
// process per run. For each exit: the prefix's share of the backbone's MACs and of its time. With `--eval` (the JSON of
// `selfxit eval … --json`, whose exit shares at the bundle's thresholds are on test images no setting saw) it also
// gives the latency ratio a cascade with free exits (no head, no decision, no call overhead) would have with those
// exit shares — the floor the time spread puts under the ratio — against the MACs fraction of the same shares.
// Also timed beside them: the compiled cascade as the engine runs it while no exit is off (ungated heads) at the
// bundle's thresholds (`--sessions N`: in N sessions of the same model; `--also <bundleDir>`: another bundle's of the
// same model too, timed in the same loop); on the images timed, its ratio over that floor is what the heads, decisions
// and `If`s cost.
//
//   npx tsx bench/prefix-time.ts <bundleDir> [--eval eval.json] [--calls N] [--sessions N] [--also bundleDir]
//
// Images: 200 of the model's test file (bench/test-images.ts: 28x28x1 the shipped Fashion model's, 32x32x3 CIFAR-10's
// in ../shared). Default 1000 calls per model.
import fs from 'node:fs';
import * as ortWeb from 'onnxruntime-web/wasm';
import { intFlag, stringFlag } from './args.js';
import { testImages } from './test-images.js';
import { compileBundleCascade, compileBundleChain, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import type { BundleFiles } from '../src/bundle/manifest.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import type { OrtModule, OrtSession, OrtTensor } from '../src/ort/types.js';

const ort = ortWeb as unknown as OrtModule;
ortWeb.env.wasm.numThreads = 1;
const OPTIONS = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' as const };

const args = process.argv.slice(2);
const CALLS = intFlag(args, '--calls', 1000);
const EVAL = stringFlag(args, '--eval');
const SESSIONS = intFlag(args, '--sessions', 1);
const ALSO = stringFlag(args, '--also');
const dir = args[0];
if (!dir || dir.startsWith('--')) {
  console.error(
    'usage: npx tsx bench/prefix-time.ts <bundleDir> [--eval eval.json] [--calls N] [--sessions N] [--also bundleDir]',
  );
  process.exit(2);
}

const bundle = await readBundleDir(dir);
const m = bundle.manifest;
const batch = testImages(m.input, 200);
if (!batch) {
  console.error(`no test images of ${m.input.height}x${m.input.width}x${m.input.channels} (bench/test-images.ts)`);
  process.exit(2);
}
const IMAGES = batch.count;
const dims = inputDims(m.input, 1);
const inputs = Array.from(
  { length: IMAGES },
  (_, i) => new ort.Tensor('float32', toModelInput(batch, i, 1, m.input), dims),
);

// Prefix e: the segments up to exit e's (its head dropped); the last variant is the whole backbone as the bundle
// holds it (the baseline the bench's ratios divide by).
interface Variant {
  readonly name: string;
  readonly macs: number;
  readonly session: OrtSession;
  readonly fetch: string;
  /** A compiled cascade's thresholds input, and the exit each image took (-1: the backbone). */
  readonly cascade?: { readonly thresholds: OrtTensor; readonly exitOf: Map<number, number> };
}
const variants: Variant[] = [];
for (const [e, x] of m.exits.entries()) {
  const count = x.segment + 1;
  const bytes = encodeModel(compileBundleChain(m, segmentModels(bundle, 0, count)));
  const macs = m.segments.slice(0, count).reduce((a, s) => a + s.macs, 0);
  variants.push({
    name: `exit ${e} ${x.name}`,
    macs,
    session: await ort.InferenceSession.create(bytes, OPTIONS),
    fetch: m.segments[x.segment]!.output,
  });
}
const full = await ort.InferenceSession.create(bundle.files.get(m.backbone.file!)!, OPTIONS);
variants.push({ name: 'backbone', macs: m.backbone.macs, session: full, fetch: full.outputNames[0]! });
const B = variants.length - 1;
// The compiled cascade as the engine runs it while no exit is off (ungated heads), at its bundle's thresholds: in
// SESSIONS sessions of the same bytes, timed side by side (onnxruntime's speed differs from session to session); with
// --also, another bundle's of the same model too, in the same loop.
async function addCascades(b: BundleFiles, label: string): Promise<Variant[]> {
  const bm = b.manifest;
  const bytes = encodeModel(compileBundleCascade(bm, segmentModels(b, 0, bm.segments.length), 0, undefined, false));
  const t = cascadeThresholds(
    bm.exits.map((e) => e.threshold),
    bm.exits.length,
  );
  const cascade = { thresholds: new ort.Tensor('float32', t, [t.length]), exitOf: new Map<number, number>() };
  const added: Variant[] = [];
  for (let k = 0; k < SESSIONS; k++) {
    const session = await ort.InferenceSession.create(bytes, OPTIONS);
    added.push({ name: `${label}, session ${k + 1}`, macs: NaN, session, fetch: CASCADE_IO.exitIndex, cascade });
  }
  variants.push(...added);
  return added;
}
const own = await addCascades(bundle, 'compiled cascade');
const also = ALSO ? await readBundleDir(ALSO) : undefined;
if (also && also.manifest.input.name !== m.input.name)
  throw new Error(`${ALSO} reads input ${also.manifest.input.name}, not ${m.input.name}`);
const other = also ? await addCascades(also, `${ALSO}'s compiled cascade`) : [];

const runOne = async (v: Variant, x: OrtTensor, image: number): Promise<void> => {
  const feeds = v.cascade
    ? { [m.input.name]: x, [CASCADE_IO.thresholds]: v.cascade.thresholds }
    : { [m.input.name]: x };
  const out = await v.session.run(feeds, [v.fetch]);
  const data = out[v.fetch]!.data;
  if (v.cascade) v.cascade.exitOf.set(image, Number((data as BigInt64Array)[0]));
};
for (let i = 0; i < 100; i++) for (const v of variants) await runOne(v, inputs[i % IMAGES]!, i % IMAGES);
const cpu = variants.map(() => [] as number[]);
for (let i = 0; i < CALLS; i++) {
  const x = inputs[i % IMAGES]!;
  for (let j = 0; j < variants.length; j++) {
    const k = (i + j) % variants.length;
    const c0 = process.cpuUsage();
    await runOne(variants[k]!, x, i % IMAGES);
    const c = process.cpuUsage(c0);
    cpu[k]!.push((c.user + c.system) / 1000);
  }
}
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const ms = cpu.map(mean);
const fullMs = ms[B]!;
const timeFraction = ms.map((t) => t / fullMs);
const macsFraction = variants.map((v) => v.macs / m.backbone.macs);

console.log(
  `${dir}: ${m.exits.length} exits; onnxruntime-web WASM 1 thread (Node), batch 1, ${CALLS} calls per model, interleaved, mean CPU ms`,
);
console.log('| backbone up to | ms | MACs share | time share | time − MACs |');
console.log('|---|---:|---:|---:|---:|');
variants
  .slice(0, B + 1)
  .forEach((v, k) =>
    console.log(
      `| ${v.name} | ${ms[k]!.toFixed(3)} | ${macsFraction[k]!.toFixed(3)} | ${timeFraction[k]!.toFixed(3)} | ${(timeFraction[k]! - macsFraction[k]!).toFixed(3)} |`,
    ),
  );

// On the images timed (each as often): the exit shares the cascade gave them, what free exits would cost with those
// shares, and what the compiled cascade cost.
const shares = new Array<number>(m.exits.length + 1).fill(0);
for (let i = 0; i < CALLS; i++) {
  const e = own[0]!.cascade!.exitOf.get(i % IMAGES)!;
  shares[e < 0 ? m.exits.length : e]! += 1 / CALLS;
}
const floorHere = shares.reduce((a, s, e) => a + s * timeFraction[e]!, 0);
const macsHere = shares.reduce((a, s, e) => a + s * macsFraction[e]!, 0);
const ratioOf = (v: Variant): number => ms[variants.indexOf(v)]! / fullMs;
console.log(
  `\non the ${Math.min(CALLS, IMAGES)} images timed: exit shares ${shares.map((s) => s.toFixed(3)).join(' / ')}; backbone MACs ` +
    `${macsHere.toFixed(3)}, free exits ${floorHere.toFixed(3)} of the backbone's time, the compiled cascade ` +
    own
      .map((v) => `${ratioOf(v).toFixed(3)}: heads, decisions and \`If\`s +${(ratioOf(v) - floorHere).toFixed(3)}`)
      .join('; another session ') +
    ` (backbone ${fullMs.toFixed(3)} ms)`,
);
if (other.length > 0)
  console.log(
    `${ALSO}'s compiled cascade, same loop: ${other.map((v) => ratioOf(v).toFixed(3)).join(' / ')} of the backbone`,
  );

if (EVAL) {
  const ev = JSON.parse(fs.readFileSync(EVAL, 'utf8')) as {
    exitShares: number[];
    macsFraction: number;
  };
  if (ev.exitShares.length !== m.exits.length + 1)
    throw new Error(`${EVAL} has ${ev.exitShares.length} exit shares; the bundle has ${m.exits.length} exits + 1`);
  // exit e's share pays prefix e; the rest (last share) the whole backbone
  const floor = ev.exitShares.reduce((a, s, e) => a + s * timeFraction[e]!, 0);
  const backboneMacs = ev.exitShares.reduce((a, s, e) => a + s * macsFraction[e]!, 0);
  console.log(
    `\nexit shares (${EVAL}): ${ev.exitShares.map((s) => s.toFixed(3)).join(' / ')}; the cascade's MACs fraction ` +
      `${ev.macsFraction.toFixed(3)} (heads included), backbone MACs alone ${backboneMacs.toFixed(3)}; ` +
      `free exits would run at ${floor.toFixed(3)} of the backbone's time: the time spread adds ` +
      `${(floor - backboneMacs).toFixed(3)} to the ratio over the backbone MACs, the heads' MACs ` +
      `${(ev.macsFraction - backboneMacs).toFixed(3)}`,
  );
}
for (const v of variants) await v.session.release();

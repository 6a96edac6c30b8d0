// Where a compiled cascade's exits cost time inside onnxruntime-web (WASM, Node, 1 thread): the full backbone beside
// graph variants of the same bundle, interleaved image by image, with no exit firing (the compiled worst case):
//   chain     the segments inlined into one graph, heads dropped (= the backbone, split and re-joined)
//   chain + heads as outputs   every exit head computed as an extra graph output, no `If` (what the heads cost)
//   compiled (exit-free)   the engine's model while every exit is off (compileBundleChain: no thresholds input)
//   compiled  the compiled cascade (compileBundleCascade: heads + `If`s), thresholds 1 (every head runs, nothing
//             leaves; --at-bundle: the bundle's; --disabled: NEVER_EXIT, gated heads skipped), beside its nested and
//             flat layouts and its heads ungated (compileCascade's `layout`, `gateHeads`); --forms: its heads rewritten
//             exactly (headFormModel: Gemm weights [in, out], no Concat, Concat before one Flatten, ReduceMax)
// plus the compiled model under other session options. Prints median ms, median ratio to the full model and the
// per-exit extra ((variant − full) / exits, from paired per-image differences) — ratios, as the machine may be loaded.
//
//   npx tsx bench/exit-cost.ts [bundleDir] [--images N] [--rounds R] [--options] [--forms] [--before compiled.onnx]
//     [--at-bundle | --disabled] [--off i,j] [--only names] [--sessions S] [--native]
//
// Default bundle: bench/.bundles/resnet56 (made by `npm run bench`), else ../main/bench/.bundles/resnet56.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortWeb from 'onnxruntime-web/wasm';
import { boolFlag, intFlag, stringFlag } from './args.js';
import { chainModel, headFormModel, ifOnlyModel, type HeadForm } from './cascade-variants.js';
import { compileBundleCascade, compileBundleChain, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import type { OrtModule, OrtSession, OrtSessionOptions, OrtTensor } from '../src/ort/types.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
ortWeb.env.wasm.numThreads = 1;
ortWeb.env.logLevel = 'error'; // not the "Removing initializer" warnings of the pruned variants

const args = process.argv.slice(2);
const IMAGES = intFlag(args, '--images', 40);
const ROUNDS = intFlag(args, '--rounds', 3);
// --native: onnxruntime-node (1 thread) instead of onnxruntime-web's WASM, to tell WASM-only costs from onnxruntime's
const native = boolFlag(args, '--native');
const ort = (native ? await import('onnxruntime-node') : ortWeb) as unknown as OrtModule;
const withOptions = boolFlag(args, '--options');
const copies = intFlag(args, '--sessions', 1);
// --quick: only the full model, the chain and the compiled models (with --before / --sessions copies)
const quick = boolFlag(args, '--quick');
// --at-bundle: the bundle's own thresholds instead of 1 (the exits fire as they would in use); --disabled: every
// threshold NEVER_EXIT (above 1: no exit can fire, gated heads are skipped). Default 1: every head runs and decides,
// only a probability that rounds to 1 in float32 leaves (the bench's worst case)
const atBundle = boolFlag(args, '--at-bundle');
const disabled = boolFlag(args, '--disabled');
// --off 'i,j': these exits NEVER_EXIT (disabled, as a device plan leaves them), the others as above
const off = (stringFlag(args, '--off') ?? '').split(',').filter(Boolean).map(Number);
const BEFORE = stringFlag(args, '--before');
// --only 'a,b': just these variants (names as printed) beside the full model
const only = stringFlag(args, '--only')?.split(',');
// --forms: the compiled cascade with its heads in exact alternative forms (headFormModel), checked against it
const forms = boolFlag(args, '--forms');
const FORMS: HeadForm[] = ['transB0', 'noConcat', 'concat4d', 'reduceMax']; // a compiled model of the same bundle by an earlier compiler, to compare
const dir =
  args[0] ??
  [path.join(root, 'bench/.bundles/resnet56'), path.resolve(root, '../main/bench/.bundles/resnet56')].find((d) =>
    fs.existsSync(path.join(d, 'manifest.json')),
  );
if (!dir) throw new Error('no bundle: pass a bundle directory (npm run bench makes bench/.bundles/resnet56)');

const BASE: OrtSessionOptions = {
  graphOptimizationLevel: 'all', // as the worker (sessionOptions in ort-backend)
  logSeverityLevel: 3, // errors only: the pruned variants leave initializers onnxruntime warns about
  ...(native ? { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' as const } : {}),
};

interface Variant {
  readonly name: string;
  readonly session: OrtSession;
  readonly feeds: (x: OrtTensor) => Record<string, OrtTensor>;
}

/** The head forms against 'compiled' at the bundle's thresholds: largest probability difference, exits that differ. */
async function checkForms(variants: Variant[], inputs: OrtTensor[], thresholds: number[]): Promise<void> {
  const bundleThr = new ort.Tensor('float32', cascadeThresholds(thresholds, thresholds.length), [thresholds.length]);
  const ref = variants.find((v) => v.name === 'compiled')!;
  const run = async (v: Variant, x: OrtTensor): Promise<Record<string, OrtTensor>> =>
    v.session.run({ ...v.feeds(x), [CASCADE_IO.thresholds]: bundleThr });
  for (const v of variants.filter((x) => x.name.startsWith('heads '))) {
    let diff = 0;
    let exitsDiffer = 0;
    for (const x of inputs) {
      const [a, b] = [await run(ref, x), await run(v, x)];
      if (a[CASCADE_IO.exitIndex]!.data[0] !== b[CASCADE_IO.exitIndex]!.data[0]) exitsDiffer++;
      const [pa, pb] = [a, b].map((o) => o[CASCADE_IO.probabilities]!.data as Float32Array);
      pa!.forEach((p, i) => (diff = Math.max(diff, Math.abs(p - pb![i]!))));
    }
    console.log(`${v.name}: max |probability difference| ${diff.toExponential(1)}, exits differing ${exitsDiffer}`);
  }
}

async function main(): Promise<void> {
  const bundle = await readBundleDir(dir!);
  const m = bundle.manifest;
  const exits = m.exits.length;
  const never = new ort.Tensor(
    'float32',
    cascadeThresholds(
      m.exits.map((x, e) => (off.includes(e) ? NEVER_EXIT : atBundle ? x.threshold : disabled ? NEVER_EXIT : 1)),
      exits,
    ),
    [exits],
  );
  const withThr = (x: OrtTensor): Record<string, OrtTensor> => ({ [m.input.name]: x, [CASCADE_IO.thresholds]: never });
  const compiled = encodeModel(compileBundleCascade(m, segmentModels(bundle, 0, m.segments.length)));
  const layout = (l: 'nested' | 'flat', gateHeads = true): Uint8Array =>
    encodeModel(compileBundleCascade(m, segmentModels(bundle, 0, m.segments.length), 0, l, gateHeads));
  const nested = layout('nested');
  const flatIfs = layout('flat');
  const full = await ort.InferenceSession.create(bundle.files.get(m.backbone.file!)!, BASE);
  const specs: [string, Uint8Array, OrtSessionOptions, boolean][] = [
    ['chain', encodeModel(chainModel(bundle, false)), BASE, true],
    ['chain + heads (unread)', encodeModel(chainModel(bundle, false, [-1])), BASE, true],
    [
      'chain + head pools (unread)',
      encodeModel(chainModel(bundle, false, [-1], ['AveragePool', 'MaxPool'])),
      BASE,
      true,
    ],
    [
      'chain + heads to Concat (unread)',
      encodeModel(chainModel(bundle, false, [-1], ['AveragePool', 'MaxPool', 'Flatten', 'Concat'])),
      BASE,
      true,
    ],
    ['nested If + decisions, heads replaced by constants', encodeModel(ifOnlyModel(bundle)), BASE, true],
    ['chain + heads as outputs', encodeModel(chainModel(bundle, true)), BASE, true],
    ...(BEFORE
      ? ([['compiled (before)', new Uint8Array(fs.readFileSync(BEFORE)), BASE, true]] as [
          string,
          Uint8Array,
          OrtSessionOptions,
          boolean,
        ][])
      : []),
    ['compiled (nested)', nested, BASE, true],
    ['compiled (flat)', flatIfs, BASE, true],
    ['compiled (heads ungated)', layout('nested', false), BASE, true],
    // what the compiled engine runs while every exit is off (compileBundleChain): should cost as 'chain'
    [
      'compiled (exit-free)',
      encodeModel(compileBundleChain(m, segmentModels(bundle, 0, m.segments.length))),
      BASE,
      true,
    ],
    ['compiled', compiled, BASE, true],
    ...(forms
      ? FORMS.map(
          (f) =>
            [`heads ${f}`, encodeModel(headFormModel(bundle, f)), BASE, true] as [
              string,
              Uint8Array,
              OrtSessionOptions,
              boolean,
            ],
        )
      : []),
    // The same model in more sessions: tells a session's memory placement (a lottery) from the graph's cost.
    ...(copies > 1
      ? Array.from(
          { length: copies - 1 },
          (_, c) =>
            [`compiled (session ${c + 2})`, compiled, BASE, true] as [string, Uint8Array, OrtSessionOptions, boolean],
        )
      : []),
    ...(withOptions
      ? ([
          ['compiled opt=extended', compiled, { graphOptimizationLevel: 'extended' }, true],
          ['compiled no mem pattern', compiled, { ...BASE, enableMemPattern: false }, true],
          ['compiled no arena', compiled, { ...BASE, enableCpuMemArena: false }, true],
        ] as [string, Uint8Array, OrtSessionOptions, boolean][])
      : []),
  ];
  if (quick) specs.splice(0, specs.length, ...specs.filter(([n]) => n === 'chain' || n.startsWith('compiled')));
  if (only) specs.splice(0, specs.length, ...specs.filter(([n]) => only.includes(n)));
  const variants: Variant[] = [{ name: 'full', session: full, feeds: (x) => ({ [full.inputNames[0]!]: x }) }];
  for (const [name, bytes, opts] of specs) {
    const session = await ort.InferenceSession.create(bytes, opts);
    // a model without the thresholds input (the exit-free one) takes the image alone
    const feeds = session.inputNames.includes(CASCADE_IO.thresholds)
      ? withThr
      : (x: OrtTensor) => ({ [m.input.name]: x });
    variants.push({ name, session, feeds });
  }

  const all = new Uint8Array(fs.readFileSync(path.resolve(root, '../shared/data/cifar10/test-u8.bin')));
  const per = 3072;
  const total = all.length / per;
  const inputs = Array.from({ length: IMAGES }, (_, k) => {
    const i = (k * 313 + 17) % total;
    const images = { data: all.subarray(i * per, (i + 1) * per), count: 1 };
    return new ort.Tensor('float32', toModelInput(images, 0, 1, m.input), inputDims(m.input, 1));
  });
  for (const v of variants) for (const x of inputs.slice(0, 10)) await v.session.run(v.feeds(x)); // warm-up
  if (forms)
    await checkForms(
      variants,
      inputs,
      m.exits.map((x) => x.threshold),
    );
  const times = variants.map(() => [] as number[]);
  // Per image and variant (rotating who goes first): ROUNDS back-to-back runs, timed by this process's CPU time
  // (user + system), which leaves out the time other processes of a loaded machine hold the core.
  for (let i = 0; i < inputs.length; i++)
    for (let j = 0; j < variants.length; j++) {
      const k = (i + j) % variants.length;
      const v = variants[k]!;
      const c0 = process.cpuUsage();
      for (let r = 0; r < ROUNDS; r++) {
        const out = await v.session.run(v.feeds(inputs[i]!));
        for (const o of Object.values(out)) void o.data;
      }
      const c = process.cpuUsage(c0);
      times[k]!.push((c.user + c.system) / 1000 / ROUNDS);
    }
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    const h = s.length >> 1;
    return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
  };
  const fm = median(times[0]!);
  const meanSe = (xs: number[]): string => {
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1);
    return `${mean.toFixed(4)} ± ${Math.sqrt(v / xs.length).toFixed(4)}`;
  };
  console.log(
    `${dir}: ${exits} exits, ${IMAGES} images x ${ROUNDS} rounds, ${native ? 'onnxruntime-node' : 'onnxruntime-web WASM'} 1 thread (Node)`,
  );
  const q10 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 10)]!;
  const f10 = q10(times[0]!);
  console.log(
    '| variant | median ms | median / full | 10th pct / full | extra per exit, ms: paired median | 10th pct | paired mean ± s.e. |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  variants.forEach((v, k) => {
    const paired = median(times[k]!.map((t, n) => t - times[0]![n]!));
    const t = times[k]!;
    console.log(
      `| ${v.name} | ${median(t).toFixed(3)} | ${(median(t) / fm).toFixed(3)} | ${(q10(t) / f10).toFixed(3)} | ` +
        `${(paired / exits).toFixed(4)} | ${((q10(t) - f10) / exits).toFixed(4)} | ${meanSe(t.map((x, n) => (x - times[0]![n]!) / exits))} |`,
    );
  });
  for (const v of variants) await v.session.release();
}

await main();

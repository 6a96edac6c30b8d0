// What each node of a bundle's exit heads costs in onnxruntime-web (WASM, Node, 1 thread): every head taken out of its
// fused segment and run alone on its cut (a real activation), cut short after each of its nodes; the fastest of many
// runs each, so the differences are the nodes' costs (µs) with the per-run overhead removed.
// --states: instead, each whole head (median µs over a model that only outputs a constant) in three states, interleaved:
// hot (the same cut again, as above), vary (the cuts of 64 images in turn) and cold (the whole backbone ran just before
// on that image: about the state the head meets inside the cascade, after the convolutions).
//
//   npx tsx bench/head-cost.ts [bundleDir] [--runs N] [--states]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortWeb from 'onnxruntime-web/wasm';
import { boolFlag, intFlag } from './args.js';
import { segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { encodeModel, type OnnxModel } from '../src/graph/index.js';
import { makeNode, makeTensor, makeValueInfo, pb, readValueInfo, type onnx } from '../src/graph/proto.js';
import type { OrtModule, OrtSession, OrtTensor } from '../src/ort/types.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ort = ortWeb as unknown as OrtModule;
ortWeb.env.wasm.numThreads = 1;
const args = process.argv.slice(2);
const RUNS = intFlag(args, '--runs', 300);
const STATES = boolFlag(args, '--states');
const dir =
  args[0] ??
  [path.join(root, 'bench/.bundles/resnet56'), path.resolve(root, '../main/bench/.bundles/resnet56')].find((d) =>
    fs.existsSync(path.join(d, 'manifest.json')),
  )!;

/** A model running `nodes` (with the initializers they read) on `input`, its outputs `outputs`. */
function subModel(
  seg: OnnxModel,
  nodes: onnx.INodeProto[],
  input: onnx.IValueInfoProto,
  outputs: string[],
): Uint8Array {
  const g = seg.proto.graph!;
  const reads = new Set(nodes.flatMap((n) => n.input ?? []));
  return encodeModel({
    proto: pb.ModelProto.create({
      ...seg.proto,
      graph: {
        name: 'head',
        node: nodes,
        initializer: (g.initializer ?? []).filter((t) => reads.has(t.name ?? '')),
        input: [input],
        output: outputs.map((o) => makeValueInfo(o, undefined)),
      },
    }),
  });
}

async function fastest(bytes: Uint8Array, feeds: Record<string, OrtTensor>): Promise<number> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all' });
  let best = Infinity;
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    const out = await s.run(feeds);
    for (const o of Object.values(out)) void o.data;
    best = Math.min(best, performance.now() - t0);
  }
  await s.release();
  return best * 1000;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/**
 * The whole head of each exit in the hot, vary and cold states (see the top): µs over a constant-output model run the
 * same way. `images`: the model inputs; the segments run without their heads.
 */
async function states(bundle: Awaited<ReturnType<typeof readBundleDir>>, images: OrtTensor[]): Promise<void> {
  const m = bundle.manifest;
  let xs = images;
  const backbone = await ort.InferenceSession.create(bundle.files.get(m.backbone.file!)!);
  console.log(`| exit | cut | hot µs | vary µs | cold µs (after the backbone) |`);
  console.log('|---|---|---:|---:|---:|');
  for (const [k, spec] of m.segments.entries()) {
    const seg = segmentModels(bundle, k, 1)[0]!;
    const g = seg.proto.graph!;
    const isHead = (n: onnx.INodeProto): boolean => (n.name ?? '').startsWith(`${spec.exitOutput}/`);
    const inits = new Set((g.initializer ?? []).map((t) => t.name));
    const realIn = (g.input ?? []).find((i) => !inits.has(i.name))!;
    const segOnly = await ort.InferenceSession.create(
      subModel(
        seg,
        (g.node ?? []).filter((n) => !isHead(n)),
        realIn,
        [spec.output],
      ),
    );
    const cuts: OrtTensor[] = [];
    for (const x of xs) cuts.push((await segOnly.run({ [realIn.name!]: x }))[spec.output]!);
    if (spec.exitOutput !== undefined) {
      const cutInfo = (g.output ?? []).find((o) => o.name === spec.output)!;
      const input = makeValueInfo(
        spec.output,
        'float32',
        (readValueInfo(cutInfo).shape ?? []).map((d, i) => (i ? d : 1)),
      );
      const k10 = new Float32Array(m.labels.length);
      const konst = makeNode('Constant', [], ['k'], { value: makeTensor('', 'float32', [1, k10.length], k10) }, 'k');
      const models = [
        subModel(seg, [konst], input, ['k']),
        subModel(seg, (g.node ?? []).filter(isHead), input, [spec.exitOutput]),
      ];
      const sessions = await Promise.all(
        models.map((b) => ort.InferenceSession.create(b, { graphOptimizationLevel: 'all' })),
      );
      const t = sessions.map(() => ({ hot: [] as number[], vary: [] as number[], cold: [] as number[] }));
      const time = async (s: OrtSession, cut: OrtTensor, into: number[]): Promise<void> => {
        const t0 = performance.now();
        await s.run({ [spec.output]: cut });
        into.push((performance.now() - t0) * 1000);
      };
      for (let r = 0; r < RUNS; r++)
        for (const [j, s] of sessions.entries()) {
          const i = r % cuts.length;
          await s.run({ [spec.output]: cuts[0]! });
          await time(s, cuts[0]!, t[j]!.hot);
          await s.run({ [spec.output]: cuts[(i + 1) % cuts.length]! });
          await time(s, cuts[i]!, t[j]!.vary);
          await backbone.run({ [backbone.inputNames[0]!]: images[i]! });
          await time(s, cuts[i]!, t[j]!.cold);
        }
      const d = (key: 'hot' | 'vary' | 'cold'): string => (median(t[1]![key]) - median(t[0]![key])).toFixed(1);
      console.log(
        `| ${spec.exit} | [${input.type!.tensorType!.shape!.dim!.map((x) => x.dimValue).join(', ')}] | ${d('hot')} | ${d('vary')} | ${d('cold')} |`,
      );
      for (const s of sessions) await s.release();
    }
    await segOnly.release();
    xs = cuts;
  }
  await backbone.release();
}

async function main(): Promise<void> {
  const bundle = await readBundleDir(dir);
  const m = bundle.manifest;
  const img = new Uint8Array(fs.readFileSync(path.resolve(root, '../shared/data/cifar10/test-u8.bin'))).subarray(
    0,
    3072,
  );
  if (STATES) {
    const all = new Uint8Array(fs.readFileSync(path.resolve(root, '../shared/data/cifar10/test-u8.bin')));
    const images = Array.from(
      { length: 64 },
      (_, i) =>
        new ort.Tensor(
          'float32',
          toModelInput({ data: all.subarray(i * 3072, (i + 1) * 3072), count: 1 }, 0, 1, m.input),
          inputDims(m.input, 1),
        ),
    );
    console.log(`${dir}: each exit head alone, onnxruntime-web WASM 1 thread (Node), median of ${RUNS} runs per state`);
    return states(bundle, images);
  }
  let x: OrtTensor = new ort.Tensor(
    'float32',
    toModelInput({ data: img, count: 1 }, 0, 1, m.input),
    inputDims(m.input, 1),
  );
  console.log(`${dir}: per-node cost of each exit head, onnxruntime-web WASM 1 thread (Node), fastest of ${RUNS} runs`);
  for (const [k, spec] of m.segments.entries()) {
    const seg = segmentModels(bundle, k, 1)[0]!;
    const sess = await ort.InferenceSession.create(encodeModel(seg));
    const out = await sess.run({ [sess.inputNames[0]!]: x });
    await sess.release();
    if (spec.exitOutput !== undefined) {
      const g = seg.proto.graph!;
      const cutInfo = (g.output ?? []).find((o) => o.name === spec.output)!;
      const shape = (readValueInfo(cutInfo).shape ?? []).map((d, i) => (i === 0 ? 1 : d));
      const input = makeValueInfo(spec.output, 'float32', shape);
      const head = (g.node ?? []).filter((n) => (n.name ?? '').startsWith(`${spec.exitOutput}/`));
      const feeds = { [spec.output]: out[spec.output]! };
      const base = await fastest(subModel(seg, [], input, [spec.output]), feeds); // Identity-free: input as output
      const cells: string[] = [];
      let prev = base;
      for (let n = 1; n <= head.length; n++) {
        const t = await fastest(subModel(seg, head.slice(0, n), input, [head[n - 1]!.output![0]!]), feeds);
        cells.push(`${head[n - 1]!.opType} ${(t - prev).toFixed(1)}`);
        prev = t;
      }
      console.log(
        `exit ${spec.exit} on [${shape.join(', ')}]: run overhead ${base.toFixed(1)} µs, head ${(prev - base).toFixed(1)} µs: ${cells.join(', ')}`,
      );
    }
    x = out[spec.output]!;
  }
}

await main();

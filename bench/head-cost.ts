// What each node of a bundle's exit heads costs in onnxruntime-web (WASM, Node, 1 thread): every head taken out of its
// fused segment and run alone on its cut (a real activation), cut short after each of its nodes; the fastest of many
// runs each, so the differences are the nodes' costs (µs) with the per-run overhead removed.
//
//   npx tsx bench/head-cost.ts [bundleDir] [--runs N]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortWeb from 'onnxruntime-web/wasm';
import { intFlag } from './args.js';
import { segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { encodeModel, type OnnxModel } from '../src/graph/index.js';
import { makeValueInfo, pb, readValueInfo, type onnx } from '../src/graph/proto.js';
import type { OrtModule, OrtTensor } from '../src/ort/types.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ort = ortWeb as unknown as OrtModule;
ortWeb.env.wasm.numThreads = 1;
const args = process.argv.slice(2);
const RUNS = intFlag(args, '--runs', 300);
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

async function main(): Promise<void> {
  const bundle = await readBundleDir(dir);
  const m = bundle.manifest;
  const img = new Uint8Array(fs.readFileSync(path.resolve(root, '../shared/data/cifar10/test-u8.bin'))).subarray(
    0,
    3072,
  );
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

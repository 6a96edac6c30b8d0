// The exit-free model (src/graph/compile-chain.ts, compileBundleChain): a bundle's segments joined back with no head,
// no `If` and no extra input or output. For segments split from one model it is that model's graph again (same nodes
// in the same order, same names, same inputs and outputs), so onnxruntime runs the full model's graph; a prefix
// outputs its cut; segments whose names clash are namespaced; what cannot be joined throws.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compileBundleChain, segmentModels } from '../src/bundle/compiled-cascade.js';
import type { BundleFiles } from '../src/bundle/manifest.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { assembleBundle } from '../src/bundle/write-bundle.js';
import { isSelfxitError } from '../src/errors.js';
import { compileChain, type ChainPart } from '../src/graph/compile-chain.js';
import { CASCADE_IO } from '../src/graph/compile-cascade.js';
import { analyzeModel, decodeModel, encodeModel, fuseHead, type OnnxModel } from '../src/graph/index.js';
import { makeNode, makeTensor, makeValueInfo, pb, type onnx } from '../src/graph/proto.js';
import { stubCalibration } from './fixtures/calibration.js';
import { rng } from './fixtures/graphs.js';
import { randomHead } from './fixtures/random-head-bundle.js';
import { ortNode } from './fixtures/ort-helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fashionDir = path.join(repoRoot, 'public/models/fashion-resnet');
const ONE_THREAD = { intraOpNumThreads: 1, interOpNumThreads: 1 };

/** The shipped Fashion model as a bundle with random heads on three cuts (prepare's split and head fusion). */
async function fashionBundle(): Promise<{ model: OnnxModel; bundle: BundleFiles }> {
  const model = decodeModel(new Uint8Array(fs.readFileSync(path.join(fashionDir, 'model.onnx'))));
  const analysis = await analyzeModel(model, { ort: ortNode });
  const cuts = ['/stem/stem.2/Relu_output_0', '/stage1/stage1.1/Relu_1_output_0', '/stage2/stage2.1/Relu_1_output_0'];
  const bundle = await assembleBundle({
    modelBytes: encodeModel(model),
    model,
    analysis,
    labels: Array.from({ length: 10 }, (_, i) => String(i)),
    output: analysis.outputs[0]!.name,
    outputKind: 'logits',
    calibration: stubCalibration(),
    input: { name: 'input', height: 28, width: 28, channels: 1, layout: 'NCHW', mean: [0.286], std: [0.353] },
    exits: cuts.map((cut, i) => {
      const [, c, h, w] = analysis.shapes.get(cut)!;
      return { name: cut, cut, head: randomHead(c!, h!, w!, i + 1, 10), threshold: 0.7, expectedShare: 0 };
    }),
  });
  return { model, bundle };
}

/** A node as bytes with its name cleared or kept. */
const nodeBytes = (n: onnx.INodeProto): string => Buffer.from(pb.NodeProto.encode(n).finish()).toString('hex');
const infoBytes = (v: onnx.IValueInfoProto): string =>
  Buffer.from(pb.ValueInfoProto.encode(v).finish()).toString('hex');
const tensorBytes = (t: onnx.ITensorProto): string => Buffer.from(pb.TensorProto.encode(t).finish()).toString('hex');

const code = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return isSelfxitError(e) ? e.code : 'not a SelfxitError';
  }
  return undefined;
};

describe('compileBundleChain on a prepared bundle', () => {
  it(
    "is the source model's graph: same nodes in order, initializers, input and output; no thresholds input",
    {
      timeout: 60_000,
    },
    async () => {
      const { model, bundle } = await fashionBundle();
      const m = bundle.manifest;
      const chain = compileBundleChain(m, segmentModels(bundle, 0, m.segments.length));
      const got = chain.proto.graph!;
      const want = model.proto.graph!;
      expect((got.node ?? []).map(nodeBytes)).toEqual((want.node ?? []).map(nodeBytes));
      const byName = (ts: onnx.ITensorProto[]): string[] => ts.map(tensorBytes).sort();
      expect(byName(got.initializer ?? [])).toEqual(byName(want.initializer ?? []));
      expect((got.input ?? []).map(infoBytes)).toEqual((want.input ?? []).map(infoBytes));
      expect((got.output ?? []).map(infoBytes)).toEqual((want.output ?? []).map(infoBytes));
      expect((got.input ?? []).map((i) => i.name)).not.toContain(CASCADE_IO.thresholds);
      expect(got.valueInfo ?? []).toHaveLength((want.valueInfo ?? []).length);
      // and it computes the source model's output, bit for bit
      const a = await ort.InferenceSession.create(encodeModel(chain), ONE_THREAD);
      const b = await ort.InferenceSession.create(encodeModel(model), ONE_THREAD);
      const images = new Uint8Array(fs.readFileSync(path.join(fashionDir, 'test-u8.bin')));
      for (let i = 0; i < 8; i++) {
        const x = new ort.Tensor(
          'float32',
          toModelInput({ data: images.subarray(i * 7000 * 784, i * 7000 * 784 + 784), count: 1 }, 0, 1, m.input),
          inputDims(m.input, 1),
        );
        const [ga, gb] = [await a.run({ input: x }), await b.run({ input: x })];
        expect(Object.keys(ga)).toEqual(['logits']);
        expect(Array.from(ga.logits!.data as Float32Array)).toEqual(Array.from(gb.logits!.data as Float32Array));
      }
      await Promise.all([a.release(), b.release()]);
    },
  );

  it(
    "a prefix outputs its last segment's cut under its own name, as the segments compute it (within 1e-5)",
    {
      timeout: 60_000,
    },
    async () => {
      const { bundle } = await fashionBundle();
      const m = bundle.manifest;
      const prefix = compileBundleChain(m, segmentModels(bundle, 0, 2));
      const cut = m.segments[1]!.output;
      expect((prefix.proto.graph!.output ?? []).map((o) => o.name)).toEqual([cut]);
      expect((prefix.proto.graph!.node ?? []).some((n) => n.opType === 'If')).toBe(false);
      const s = await ort.InferenceSession.create(encodeModel(prefix), ONE_THREAD);
      const s0 = await ort.InferenceSession.create(bundle.files.get(m.segments[0]!.file)!, ONE_THREAD);
      const s1 = await ort.InferenceSession.create(bundle.files.get(m.segments[1]!.file)!, ONE_THREAD);
      const x = new ort.Tensor(
        'float32',
        Float32Array.from({ length: 784 }, (_, i) => Math.sin(i)),
        [1, 1, 28, 28],
      );
      const got = (await s.run({ input: x }))[cut]!.data as Float32Array;
      const mid = (await s0.run({ input: x }))[m.segments[0]!.output]!;
      const want = (await s1.run({ [m.segments[1]!.input]: mid }))[cut]!.data as Float32Array;
      // (the joined graph may fuse across the cut, so float rounding may differ from separate sessions)
      expect(got.length).toBe(want.length);
      expect(got.reduce((d, v, j) => Math.max(d, Math.abs(v - want[j]!)), 0)).toBeLessThan(1e-5);
      await Promise.all([s.release(), s0.release(), s1.release()]);
    },
  );
});

/**
 * A 1x1 Conv + Relu segment, its internal names prefixed `tag` (the same in each segment by default: they clash),
 * optionally with a fused head writing `probs`.
 */
function segment(seed: number, inName: string, outName: string, withHead: boolean, tag = ''): OnnxModel {
  const r = rng(seed);
  const w = makeTensor(
    `${tag}w`,
    'float32',
    [4, 4, 1, 1],
    Array.from({ length: 16 }, () => r()),
  );
  const proto = pb.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'seg',
      node: [
        makeNode('Conv', [inName, `${tag}w`], [`${tag}/Conv_output_0`], {}, `${tag}/Conv`),
        makeNode('Relu', [`${tag}/Conv_output_0`], [outName], {}, `${tag}/Relu`),
      ],
      initializer: [w],
      input: [makeValueInfo(inName, 'float32', ['batch', 4, 2, 2])],
      output: [makeValueInfo(outName, 'float32', ['batch', 4, 2, 2])],
    },
  });
  const seg = { proto };
  return withHead ? fuseHead(seg, randomHead(4, 2, 2, seed, 3), { outputName: 'probs' }) : seg;
}

describe('compileChain graph rules', () => {
  const a = segment(1, 'x', 'h0', true);
  // b reads a's output under another name and reuses every internal name
  const b = segment(2, 'a_out', 'y', false);
  const parts: ChainPart[] = [
    { model: a, output: 'h0', exitOutput: 'probs' },
    { model: b, output: 'y' },
  ];

  it('namespaces segments whose names clash (input and output keep theirs) and computes what they compute', async () => {
    const chain = compileChain(parts);
    const g = chain.proto.graph!;
    expect((g.input ?? []).map((i) => i.name)).toEqual(['x']);
    expect((g.output ?? []).map((o) => o.name)).toEqual(['y']);
    expect((g.initializer ?? []).map((t) => t.name).sort()).toEqual(['s0/w', 's1/w']);
    expect((g.node ?? []).map((n) => n.opType)).toEqual(['Conv', 'Relu', 'Conv', 'Relu']); // the head dropped
    const x = new ort.Tensor(
      'float32',
      Float32Array.from({ length: 16 }, (_, i) => Math.cos(i)),
      [1, 4, 2, 2],
    );
    const s = await ort.InferenceSession.create(encodeModel(chain), ONE_THREAD);
    const [sa, sb] = await Promise.all([a, b].map((m) => ort.InferenceSession.create(encodeModel(m), ONE_THREAD)));
    const mid = (await sa!.run({ x })).h0!;
    const want = (await sb!.run({ a_out: mid })).y!.data as Float32Array;
    expect(Array.from((await s.run({ x })).y!.data as Float32Array)).toEqual(Array.from(want));
    await Promise.all([s.release(), sa!.release(), sb!.release()]);
  });

  it('keeps the names when nothing clashes, binding an input of another name to the previous output', () => {
    const c = segment(3, 'b_in', 'y', false, 'b');
    const g = compileChain([parts[0]!, { model: c, output: 'y' }]).proto.graph!;
    expect((g.node ?? []).map((n) => n.name)).toEqual(['/Conv', '/Relu', 'b/Conv', 'b/Relu']);
    expect((g.node ?? []).map((n) => n.input![0])).toEqual(['x', '/Conv_output_0', 'h0', 'b/Conv_output_0']);
    expect((g.initializer ?? []).map((t) => t.name)).toEqual(['w', 'bw']);
  });

  it('throws INVALID_BUNDLE for parts that cannot be joined, INVALID_ARGUMENT for none', () => {
    expect(code(() => compileChain([]))).toBe('INVALID_ARGUMENT');
    expect(code(() => compileChain([{ ...parts[0]!, output: 'nope' }]))).toBe('INVALID_BUNDLE');
    const twoInputs = {
      proto: pb.ModelProto.create({
        ...a.proto,
        graph: { ...a.proto.graph!, input: [...a.proto.graph!.input!, makeValueInfo('z', 'float32', [1])] },
      }),
    };
    expect(code(() => compileChain([{ ...parts[0]!, model: twoInputs }]))).toBe('INVALID_BUNDLE');
    const int8In = {
      proto: pb.ModelProto.create({
        ...b.proto,
        graph: { ...b.proto.graph!, input: [makeValueInfo('a_out', 'int8', ['batch', 4, 2, 2])] },
      }),
    };
    expect(code(() => compileChain([parts[0]!, { ...parts[1]!, model: int8In }]))).toBe('INVALID_BUNDLE');
    const opset11 = { proto: pb.ModelProto.create({ ...b.proto, opsetImport: [{ domain: '', version: 11 }] }) };
    expect(code(() => compileChain([parts[0]!, { ...parts[1]!, model: opset11 }]))).toBe('INVALID_BUNDLE');
  });
});

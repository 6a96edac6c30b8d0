// Graph toolkit edge cases from a review: batch-1 `[classes]` outputs through split and the compiled cascade, fixed
// batches > 1, external data and sparse tensors refused, If/Loop/Scan types and MACs, float16 cuts, 'flat' below
// opset 11, the batch rewrite's Constant value_ints and negative Squeeze axes.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { candidateCuts, noExitCutsWarning } from '../src/calibrate/candidate-cuts.js';
import { isSelfxitError } from '../src/errors.js';
import { CASCADE_IO, cascadeThresholds, compileCascade, type CascadePart } from '../src/graph/compile-cascade.js';
import {
  analyzeModel,
  decodeModel,
  encodeModel,
  findCuts,
  graphOutputs,
  resolveBatch,
  splitModel,
  type OnnxModel,
} from '../src/graph/index.js';
import { makeNode, makeTensor, makeValueInfo, pb, type onnx } from '../src/graph/proto.js';
import { GraphBuilder } from './fixtures/graphs.js';
import { ortNode, randomInput, run } from './fixtures/ort-helpers.js';

/** conv → relu (block1) → conv → relu (block2) → GAP → flatten; returns the builder and the [batch, 8] features. */
function trunk(batch: number | string, seed = 3): { g: GraphBuilder; flat: string } {
  const g = new GraphBuilder(seed);
  const x = g.input('x', 'float32', [batch, 3, 8, 8]);
  const r1 = g.op('Relu', [g.conv(x, 3, 8, 3)], {}, 'block1');
  const r2 = g.op('Relu', [g.conv(r1, 8, 8, 3)], {}, 'block2');
  const flat = g.op('Flatten', [g.op('GlobalAveragePool', [r2], {}, 'gap')], { axis: 1 }, 'flat');
  return { g, flat };
}

/** Error code of a thrown SelfxitError (sync or async), else 'no error'. */
async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
    return 'no error';
  } catch (e) {
    return isSelfxitError(e) ? e.code : `not a SelfxitError: ${String(e)}`;
  }
}

function softmax(v: Float32Array): number[] {
  const m = Math.max(...v);
  const e = Array.from(v, (x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

/** The compiled cascade of `m` split at block1 (no exits), run on one input: probabilities and exit index. */
async function compiledFull(m: OnnxModel, x: ort.Tensor): Promise<{ probs: number[]; dims: readonly number[] }> {
  const a = await analyzeModel(m, { ort: ortNode });
  const segs = splitModel(m, ['block1'], a);
  const parts: CascadePart[] = [
    { model: segs[0]!, output: 'block1' },
    { model: segs[1]!, output: graphOutputs(m)[0]!.name },
  ];
  const s = await ort.InferenceSession.create(encodeModel(compileCascade(parts, { end: 'logits', exitCount: 0 })));
  try {
    const out = await s.run({ x, [CASCADE_IO.thresholds]: new ort.Tensor('float32', new Float32Array(0), [0]) });
    const p = out[CASCADE_IO.probabilities]!;
    return { probs: Array.from(p.data as Float32Array), dims: p.dims };
  } finally {
    await s.release();
  }
}

describe('batch-1 model with a [classes] output', () => {
  it('Gather(0) to [classes]: stays batch 1, the last segment keeps [5], the compiled cascade gives its softmax', async () => {
    const { g, flat } = trunk(1);
    g.op('Gather', [g.gemm(flat, 8, 5), g.init('int64', [], [0])], { axis: 0 }, 'logits');
    g.output('logits', 'float32', [5]);
    const m = g.build(13);
    const res = await resolveBatch(m, ortNode);
    expect(res.mode).toBe('one');
    const segs = splitModel(res.model, ['block1'], await analyzeModel(res.model, { ort: ortNode }));
    expect(graphOutputs(segs[1]!)[0]!.shape).toEqual([5]);
    const x = randomInput([1, 3, 8, 8]);
    const want = softmax((await run(m, x))['logits']!.data as Float32Array);
    const got = await compiledFull(res.model, x);
    expect(got.dims).toEqual([1, 5]);
    got.probs.forEach((p, i) => expect(p).toBeCloseTo(want[i]!, 5));
  });

  it('Squeeze without axes: the rewrite is refused by the batch-1 probe (it would give [5], not [1, 5])', async () => {
    const { g, flat } = trunk(1);
    g.op('Squeeze', [g.gemm(flat, 8, 5)], {}, 'logits');
    g.output('logits', 'float32', [5]);
    const m = g.build(13);
    const res = await resolveBatch(m, ortNode);
    expect(res.mode).toBe('one');
    expect(res.note).toMatch(/not 1/);
    const x = randomInput([1, 3, 8, 8]);
    const want = softmax((await run(m, x))['logits']!.data as Float32Array);
    const got = await compiledFull(res.model, x);
    got.probs.forEach((p, i) => expect(p).toBeCloseTo(want[i]!, 5));
  });
});

describe('batch rewrite', () => {
  it('a Reshape target from a Constant value_ints [1, -1] is rewritten', async () => {
    const g = new GraphBuilder(5);
    const x = g.input('x', 'float32', [1, 3, 8, 8]);
    const r1 = g.op('Relu', [g.conv(x, 3, 8, 3)], {}, 'block1');
    g.nodes.push(makeNode('Constant', [], ['tgt'], { value_ints: [1, -1] }, 'tgtc'));
    const f = g.op('Reshape', [g.op('GlobalAveragePool', [r1]), 'tgt']);
    g.gemm(f, 8, 4, 'logits');
    g.output('logits', 'float32', [1, 4]);
    const res = await resolveBatch(g.build(13), ortNode);
    expect(res.mode).toBe('rewritten');
    expect(graphOutputs(res.model)[0]!.shape).toEqual(['N', 4]);
  });

  it('a Squeeze of axis -2 (axis 0 of a rank-2 tensor, rank probed) is rewritten', async () => {
    const { g, flat } = trunk(1);
    g.op('Squeeze', [g.gemm(flat, 8, 5), g.init('int64', [1], [-2])], {}, 'logits');
    g.output('logits', 'float32', [5]);
    const m = g.build(13);
    const res = await resolveBatch(m, ortNode);
    expect(res.mode).toBe('rewritten');
    const x = randomInput([3, 3, 8, 8]);
    const out = (await run(res.model, x))['logits']!;
    expect(out.dims).toEqual([3, 5]);
    const row1 = (await run(m, randomInput([1, 3, 8, 8])))['logits']!.data as Float32Array;
    const again = (await run(res.model, randomInput([1, 3, 8, 8])))['logits']!.data as Float32Array;
    row1.forEach((v, i) => expect(again[i]).toBeCloseTo(v, 5));
  });

  it('a batch fixed at 8 is made dynamic, MACs per sample as the dynamic twin; unrewritable: UNSUPPORTED_MODEL', async () => {
    const build = (batch: number | string): OnnxModel => {
      const { g, flat } = trunk(batch, 21);
      g.gemm(flat, 8, 4, 'logits');
      g.output('logits', 'float32', [batch, 4]);
      return g.build(13);
    };
    const fixed = build(8);
    const dyn = await analyzeModel(build('N'), { ort: ortNode });
    expect((await analyzeModel(fixed, { ort: ortNode })).macs).toBe(dyn.macs);
    const res = await resolveBatch(fixed, ortNode);
    expect(res.mode).toBe('rewritten');
    expect(graphOutputs(res.model)[0]!.shape).toEqual(['N', 4]);
    expect((await analyzeModel(res.model, { ort: ortNode })).macs).toBe(dyn.macs);
    const x = randomInput([2, 3, 8, 8]);
    const a = (await run(res.model, x))['logits']!.data as Float32Array;
    const b = (await run(build('N'), x))['logits']!.data as Float32Array;
    a.forEach((v, i) => expect(v).toBeCloseTo(b[i]!, 5));
    // Flatten(axis 0) folds the batch into the features: no rewrite can hold.
    const g = new GraphBuilder(21);
    const x8 = g.input('x', 'float32', [8, 3, 8, 8]);
    const r = g.op('Relu', [g.conv(x8, 3, 2, 3)], {}, 'block1');
    const f = g.op('Flatten', [g.op('GlobalAveragePool', [r])], { axis: 0 }, 'flat');
    g.gemm(f, 16, 4, 'logits');
    g.output('logits', 'float32', [1, 4]);
    await expect(resolveBatch(g.build(13), ortNode)).rejects.toThrow(/fixes the batch at 8/);
    expect(await codeOf(async () => resolveBatch(g.build(13), ortNode))).toBe('UNSUPPORTED_MODEL');
  });
});

describe('tensors selfxit does not read', () => {
  it('external data (initializer, or a Constant in an If branch) is UNSUPPORTED_MODEL at decode, naming the tensor', async () => {
    const { g, flat } = trunk('N');
    g.gemm(flat, 8, 4, 'logits');
    g.output('logits', 'float32', ['N', 4]);
    const m = g.build();
    const w = m.proto.graph!.initializer![0]!;
    w.externalData = [pb.StringStringEntryProto.create({ key: 'location', value: 'weights.bin' })];
    w.dataLocation = pb.TensorProto.DataLocation.EXTERNAL;
    w.rawData = new Uint8Array(0);
    expect(await codeOf(() => decodeModel(encodeModel(m)))).toBe('UNSUPPORTED_MODEL');
    expect(() => decodeModel(encodeModel(m))).toThrow(new RegExp(`"${w.name}".*weights\\.bin.*inline`));
    // the same inside an If's branch
    const h = trunk('N');
    const c = makeTensor('cst', 'float32', [1], [1]);
    c.dataLocation = pb.TensorProto.DataLocation.EXTERNAL;
    const ifn = makeNode('If', [h.g.init('bool', [], [1])], ['y'], {}, 'branch');
    const br = pb.GraphProto.create({
      name: 'b',
      node: [makeNode('Constant', [], ['y_c'], { value: c }, 'k')],
      output: [makeValueInfo('y_c', 'float32', [1])],
    });
    ifn.attribute = [
      pb.AttributeProto.create({ name: 'then_branch', type: 5, g: br }),
      pb.AttributeProto.create({ name: 'else_branch', type: 5, g: br }),
    ];
    h.g.nodes.push(ifn);
    h.g.op('Add', [h.g.gemm(h.flat, 8, 4), 'y'], {}, 'logits');
    h.g.output('logits', 'float32', ['N', 4]);
    expect(() => decodeModel(encodeModel(h.g.build()))).toThrow(/"cst".*subgraph "then_branch"/);
  });

  it('a sparse_initializer is UNSUPPORTED_MODEL (onnxruntime loads it; selfxit reads dense tensors)', async () => {
    const { g, flat } = trunk('N');
    g.op('Gemm', [flat, g.init('float32', [4, 8]), 'sb'], { transB: 1 }, 'logits');
    g.output('logits', 'float32', ['N', 4]);
    const m = g.build();
    m.proto.graph!.sparseInitializer = [
      pb.SparseTensorProto.create({
        dims: [4],
        values: { name: 'sb', dataType: 1, dims: [1], floatData: [0.5] },
        indices: { dataType: 7, dims: [1], int64Data: [2] },
      }),
    ];
    await ort.InferenceSession.create(encodeModel(m)).then((s) => s.release());
    expect(await codeOf(() => findCuts(m))).toBe('UNSUPPORTED_MODEL');
    expect(() => findCuts(m)).toThrow(/sparse.*"sb"/);
  });
});

/** A model whose cut `y` is an If's output (both branches: an op on block1). */
function ifModel(withConv: boolean): OnnxModel {
  const g = new GraphBuilder(5);
  const x = g.input('x', 'float32', ['N', 3, 8, 8]);
  const r1 = g.op('Relu', [g.conv(x, 3, 8, 3)], {}, 'block1');
  const ifn = makeNode('If', [g.init('bool', [], [1])], ['y'], {}, 'branch');
  const conv = (): onnx.GraphProto => {
    const w = makeTensor('bw', 'float32', [8, 8, 3, 3], new Float32Array(576).fill(0.01));
    return pb.GraphProto.create({
      name: 'conv',
      initializer: [w],
      node: [makeNode('Conv', [r1, 'bw'], ['conv_o'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] })],
      // untyped: the type comes from inference inside the branch; the shape is declared for MACs
      output: [pb.ValueInfoProto.create({ name: 'conv_o' })],
      valueInfo: [makeValueInfo('conv_o', 'float32', ['N', 8, 8, 8])],
    });
  };
  const op = (name: string): onnx.GraphProto =>
    pb.GraphProto.create({
      name,
      node: [makeNode(name, [r1], [`${name}_o`])],
      output: [makeValueInfo(`${name}_o`, 'float32', undefined)],
    });
  ifn.attribute = [
    pb.AttributeProto.create({ name: 'then_branch', type: 5, g: withConv ? conv() : op('Relu') }),
    pb.AttributeProto.create({ name: 'else_branch', type: 5, g: op('Sigmoid') }),
  ];
  g.nodes.push(ifn);
  const r2 = g.op('Relu', [g.conv('y', 8, 8, 3)], {}, 'block2');
  g.gemm(g.op('Flatten', [g.op('GlobalAveragePool', [r2])], { axis: 1 }, 'flat'), 8, 4, 'logits');
  g.output('logits', 'float32', ['N', 4]);
  return g.build();
}

describe('control flow', () => {
  it('splitModel without shapes types an If output from its branches; the segments load and chain', async () => {
    for (const withConv of [false, true]) {
      const m = ifModel(withConv);
      const segs = splitModel(m, ['y']);
      expect(segs[0]!.proto.graph!.output![0]!.type?.tensorType?.elemType).toBe(1);
      const x = randomInput([2, 3, 8, 8]);
      const mid = (await run(segs[0]!, x))['y']!;
      const out = (await run(segs[1]!, mid))['logits']!.data as Float32Array;
      const want = (await run(m, x))['logits']!.data as Float32Array;
      out.forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 5));
    }
  });

  it("an If counts its larger branch's MACs", async () => {
    const [plain, conv] = [
      await analyzeModel(ifModel(false), { ort: ortNode }),
      await analyzeModel(ifModel(true), { ort: ortNode }),
    ];
    expect(conv.macs - plain.macs).toBe(8 * 8 * 8 * 8 * 9);
  });
});

describe('float16 cuts', () => {
  it('are no candidates, and the warning names float16', async () => {
    const g = new GraphBuilder(21);
    const x = g.input('x', 'float32', ['N', 3, 8, 8]);
    let h = g.op('Cast', [x], { to: 10 }, 'x16');
    const conv16 = (inp: string, cin: number, cout: number, name: string): string => {
      const w = g.fresh('w');
      const half = (n: number, s: number): Uint16Array =>
        Uint16Array.from({ length: n }, (_, i) => f16bits(Math.sin(i * 1.7 + n) * s));
      g.inits.push(makeTensor(w, 'float16', [cout, cin, 3, 3], half(cout * cin * 9, 1 / Math.sqrt(cin * 9))));
      return g.op('Relu', [g.op('Conv', [inp, w], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] })], {}, name);
    };
    h = conv16(h, 3, 8, 'block1');
    h = conv16(h, 8, 8, 'block2');
    const f = g.op('Flatten', [g.op('GlobalAveragePool', [h])], { axis: 1 });
    g.gemm(g.op('Cast', [f], { to: 1 }), 8, 4, 'logits');
    g.output('logits', 'float32', ['N', 4]);
    const a = await analyzeModel(g.build(), { ort: ortNode });
    expect(a.cuts.some((c) => c.dtype === 'float16' && c.shape.length === 4)).toBe(true);
    expect(candidateCuts(a.cuts)).toEqual([]);
    expect(noExitCutsWarning(a.cuts)).toMatch(/float16 cuts skipped.*float32/);
  });
});

/** IEEE half bits of a small finite number (truncating; enough for test weights). */
function f16bits(v: number): number {
  const u = new Uint32Array(new Float32Array([v]).buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const e = ((u >>> 23) & 0xff) - 127 + 15;
  return e <= 0 ? sign : sign | (e << 10) | ((u >>> 13) & 0x3ff);
}

describe("compileCascade layout 'flat'", () => {
  it('is INVALID_ARGUMENT below opset 11 (If needs equal branch shapes there), and loads at 11', async () => {
    for (const opset of [10, 11]) {
      const g = new GraphBuilder(5);
      const x = g.input('x', 'float32', ['N', 3, 8, 8]);
      const r1 = g.op('Relu', [g.conv(x, 3, 4, 3)], {}, 'block1');
      const f = g.op('Flatten', [g.op('GlobalAveragePool', [r1])], { axis: 1 });
      g.gemm(f, 4, 4, 'logits');
      g.output('logits', 'float32', ['N', 4]);
      const m = g.build(opset);
      const segs = splitModel(m, ['block1'], await analyzeModel(m, { ort: ortNode }));
      // the exit head: the segment's own Flatten(GAP) → Softmax, added as a second output
      const s0 = segs[0]!;
      const gr = s0.proto.graph!;
      gr.node!.push(
        makeNode('GlobalAveragePool', ['block1'], ['e_gap']),
        makeNode('Flatten', ['e_gap'], ['e_flat'], { axis: 1 }),
        makeNode('Softmax', ['e_flat'], ['e0'], { axis: 1 }),
      );
      gr.output!.push(makeValueInfo('e0', 'float32', ['batch', 4]));
      const parts: CascadePart[] = [
        { model: s0, output: 'block1', exitOutput: 'e0', exit: 0 },
        { model: segs[1]!, output: 'logits' },
      ];
      const compile = (): OnnxModel =>
        compileCascade(parts, { end: 'logits', exitCount: 1, layout: 'flat', gateHeads: false });
      if (opset < 11) {
        expect(await codeOf(compile)).toBe('INVALID_ARGUMENT');
        expect(compile).toThrow(/opset 11/);
        continue;
      }
      const s = await ort.InferenceSession.create(encodeModel(compile()));
      const out = await s.run({
        x: randomInput([1, 3, 8, 8]),
        [CASCADE_IO.thresholds]: new ort.Tensor('float32', cascadeThresholds([2], 1)),
      });
      expect(Number((out[CASCADE_IO.exitIndex]!.data as BigInt64Array)[0])).toBe(-1);
      await s.release();
    }
  });
});

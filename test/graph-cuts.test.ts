// Cut detection and splitting on hand-built graphs: cuts found, segments chained reproduce the full model.
import { describe, expect, it } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import {
  analyzeModel,
  decodeModel,
  encodeModel,
  findCuts,
  splitModel,
  withExtraOutputs,
  graphInputs,
  graphOutputs,
} from '../src/graph/index.js';
import { pb, readValueInfo } from '../src/graph/proto.js';
import {
  chainGraph,
  concatGraph,
  dynamicReshapeGraph,
  fullShapeGraph,
  noCutGraph,
  quantizedGraph,
  quantizedResidualGraph,
  residualGraph,
  twoInputGraph,
  type Fixture,
} from './fixtures/graphs.js';
import { maxAbsDiff, ortNode, randomInput, run, runChain } from './fixtures/ort-helpers.js';

const fixtures: Fixture[] = [
  residualGraph(),
  concatGraph(),
  dynamicReshapeGraph(),
  fullShapeGraph(),
  noCutGraph(),
  quantizedGraph('uint8'),
  quantizedGraph('int8'),
  quantizedResidualGraph('uint8'),
  quantizedResidualGraph('int8'),
];

function expectCode(fn: () => unknown, code: string, text?: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SelfxitError);
    expect((e as SelfxitError).code).toBe(code);
    if (text) expect((e as Error).message).toMatch(text);
    return;
  }
  throw new Error(`expected ${code}`);
}

describe('findCuts on hand-built graphs', () => {
  for (const f of fixtures) {
    it(`${f.name}: finds exactly the expected cuts`, () => {
      // round-trip through bytes so we test what a file would give
      const m = decodeModel(encodeModel(f.model));
      expect(findCuts(m)).toEqual(f.cuts);
    });
  }

  it('does not depend on the stored node order (reversed list → same cuts, segments still run)', async () => {
    for (const f of [residualGraph(), concatGraph(), dynamicReshapeGraph()]) {
      const g = f.model.proto.graph!;
      const reversed = decodeModel(
        encodeModel({
          proto: pb.ModelProto.create({ ...f.model.proto, graph: { ...g, node: [...g.node!].reverse() } }),
        }),
      );
      expect(findCuts(reversed)).toEqual(f.cuts);
      const x = randomInput([2, ...f.inputShape]);
      const want = (await run(f.model, x))[graphOutputs(f.model)[0]!.name]!;
      expect(maxAbsDiff(await runChain(splitModel(reversed, f.cuts), x), want)).toBeLessThanOrEqual(1e-5);
    }
  });

  for (const act of ['uint8', 'int8'] as const) {
    it(`quantized graph: crossing tensors are ${act}`, async () => {
      const f = quantizedGraph(act);
      const a = await analyzeModel(f.model, { ort: ortNode });
      expect(a.cuts.map((c) => [c.tensor, c.dtype])).toEqual([
        ['xq', act],
        ['y1', act],
        ['y2', act],
      ]);
      expect(a.cuts[1]!.shape).toEqual(['batch', 4, 6, 6]);
      expect(a.macs).toBe(4 * 6 * 6 * 3 * 9 + 2 * 6 * 6 * 4);
    });
  }
});

describe('quantized residual block (QLinearConv branch + com.microsoft QLinearAdd skip)', () => {
  for (const act of ['uint8', 'int8'] as const) {
    it(`${act}: the QLinearAdd output is a cut, the branch tensors are not; crossing tensors are ${act}`, async () => {
      const f = quantizedResidualGraph(act);
      const cuts = findCuts(decodeModel(encodeModel(f.model)));
      expect(cuts).toContain('sum');
      for (const inner of ['b1', 'b2']) {
        expect(cuts).not.toContain(inner);
        expectCode(
          () => splitModel(f.model, [inner]),
          'INVALID_CUT',
          new RegExp(`"${inner}".*2 activation tensors are live`),
        );
      }
      const a = await analyzeModel(f.model, { ort: ortNode });
      expect(a.cuts.map((c) => [c.tensor, c.dtype])).toEqual(f.cuts.map((t) => [t, act]));
      expect(a.cuts.find((c) => c.tensor === 'sum')!.shape).toEqual(['batch', 4, 6, 6]);
      expect(a.macs).toBe(f.macs); // QLinearConv counted, QLinearAdd / (De)QuantizeLinear 0
      const segs = splitModel(f.model, ['sum'], a);
      expect(graphOutputs(segs[0]!)).toEqual([{ name: 'sum', dtype: act, shape: ['batch', 4, 6, 6] }]);
      expect(graphInputs(segs[1]!)).toEqual([{ name: 'sum', dtype: act, shape: ['batch', 4, 6, 6] }]);
      expect(segs[0]!.proto.opsetImport!.map((o) => o.domain)).toContain('com.microsoft');
    });

    it(`${act}: segments chained at the QLinearAdd output reproduce the full model exactly`, async () => {
      const f = quantizedResidualGraph(act);
      const segs = splitModel(f.model, ['sum'], await analyzeModel(f.model, { ort: ortNode }));
      const x = randomInput([5, ...f.inputShape], 31);
      const full = await run(withExtraOutputs(f.model, ['sum']), x);
      // the crossing tensor: same integers from segment 0 as inside the full model, and not a degenerate one
      const [crossing] = Object.values(await run(segs[0]!, x));
      expect(crossing!.type).toBe(act);
      expect(full.sum!.type).toBe(act);
      expect(crossing!.dims).toEqual([5, 4, 6, 6]);
      expect(Array.from(crossing!.data as Uint8Array | Int8Array)).toEqual(
        Array.from(full.sum!.data as Uint8Array | Int8Array),
      );
      expect(new Set(crossing!.data as Uint8Array | Int8Array).size).toBeGreaterThan(50);
      // the dequantized output: integer arithmetic on both paths, so no difference at all
      const got = await runChain(segs, x);
      expect(got.dims).toEqual(full.out!.dims);
      expect(maxAbsDiff(got, full.out!)).toBe(0);
    });
  }
});

describe('splitModel: chained segments reproduce the full model', () => {
  for (const f of fixtures) {
    it(`${f.name}: all cuts, batch 1 and 3`, async () => {
      const a = await analyzeModel(f.model, { ort: ortNode });
      const segs = splitModel(f.model, f.cuts, a);
      expect(segs).toHaveLength(f.cuts.length + 1);
      for (const [i, seg] of segs.entries()) {
        const ins = graphInputs(seg);
        const outs = graphOutputs(seg);
        expect(ins).toHaveLength(1);
        expect(ins[0]!.name).toBe(i === 0 ? 'x' : f.cuts[i - 1]);
        expect(ins[0]!.shape[0]).toBe('batch');
        expect(outs[0]!.shape[0]).toBe('batch');
        if (i < f.cuts.length) expect(outs[0]!.name).toBe(f.cuts[i]);
        expect(seg.proto.opsetImport).toEqual(f.model.proto.opsetImport);
        expect(seg.proto.metadataProps).toEqual(f.model.proto.metadataProps);
      }
      for (const batch of [1, 3]) {
        const x = randomInput([batch, ...f.inputShape], 100 + batch);
        const full = await run(f.model, x);
        const want = full[graphOutputs(f.model)[0]!.name]!;
        const got = await runChain(segs, x);
        expect(got.dims).toEqual(want.dims);
        expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-5);
      }
    });
  }

  it('each segment carries only the initializers it reads', () => {
    const f = residualGraph();
    const segs = splitModel(f.model, ['r1', 'y']);
    const total = f.model.proto.graph!.initializer!.length;
    const counts = segs.map((s) => s.proto.graph!.initializer!.length);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(total);
    expect(counts).toEqual([2, 4, 2]);
  });

  it('without analysis, segments still get element types (static inference)', async () => {
    const f = quantizedGraph('int8');
    const segs = splitModel(f.model, ['y1']);
    expect(readValueInfo(segs[1]!.proto.graph!.input![0]!).dtype).toBe('int8');
    const x = randomInput([2, ...f.inputShape]);
    const want = (await run(f.model, x)).out!;
    expect(maxAbsDiff(await runChain(segs, x), want)).toBe(0);
  });

  it('a subset of cuts works and keeps order', async () => {
    const f = dynamicReshapeGraph();
    const segs = splitModel(f.model, ['r1', 'pre']);
    expect(segs).toHaveLength(3);
    // the batch-size side path of segment 1 was rewritten to read its own input
    const shapeNodes = segs[1]!.proto.graph!.node!.filter((n) => n.opType === 'Shape');
    expect(shapeNodes.map((n) => n.input![0])).toEqual(['r1']);
    const x = randomInput([4, ...f.inputShape]);
    expect(maxAbsDiff(await runChain(segs, x), (await run(f.model, x)).logits!)).toBeLessThanOrEqual(1e-5);
  });
});

describe('errors', () => {
  it('INVALID_CUT names a tensor that is not a cut', () => {
    const f = residualGraph();
    expectCode(() => splitModel(f.model, ['c2']), 'INVALID_CUT', /"c2".*2 activation tensors are live/);
    expectCode(() => splitModel(f.model, ['nope']), 'INVALID_CUT', /"nope" is not a tensor of this graph/);
    expectCode(() => splitModel(f.model, ['x']), 'INVALID_CUT', /graph input/);
    expectCode(() => splitModel(f.model, ['logits']), 'INVALID_CUT', /final graph output/);
    expectCode(() => splitModel(concatGraph().model, ['ksum']), 'INVALID_CUT', /constants only/);
  });

  it('cuts out of order or repeated are INVALID_ARGUMENT', () => {
    const f = residualGraph();
    expectCode(() => splitModel(f.model, ['y', 'r1']), 'INVALID_ARGUMENT', /topological order/);
    expectCode(() => splitModel(f.model, ['r1', 'r1']), 'INVALID_ARGUMENT', /twice/);
  });

  it('UNSUPPORTED_MODEL for two inputs', () => {
    expectCode(() => findCuts(twoInputGraph()), 'UNSUPPORTED_MODEL', /exactly one input.*2 \(a, b\)/);
  });

  it('INVALID_MODEL for bytes that are not ONNX and for truncated files', () => {
    expectCode(() => decodeModel(new TextEncoder().encode('this is not an onnx model, just text\n')), 'INVALID_MODEL');
    expectCode(
      () => decodeModel(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13])),
      'INVALID_MODEL',
    );
    expectCode(() => decodeModel(new Uint8Array(0)), 'INVALID_MODEL', /no graph/);
    const bytes = encodeModel(residualGraph().model);
    for (const frac of [0.1, 0.5, 0.9, 0.99])
      expectCode(() => decodeModel(bytes.subarray(0, Math.floor(bytes.length * frac))), 'INVALID_MODEL');
  });

  it('SHAPE_UNKNOWN when shapes are missing and no ort is given', async () => {
    await expect(analyzeModel(residualGraph().model)).rejects.toMatchObject({ code: 'SHAPE_UNKNOWN' });
  });
});

describe('withExtraOutputs', () => {
  it('adds cut tensors as outputs after the original ones', async () => {
    const f = residualGraph();
    const m = withExtraOutputs(f.model, ['r1', 'gap', 'logits']);
    expect(graphOutputs(f.model).map((o) => o.name)).toEqual(['logits']);
    const out = await run(m, randomInput([2, 3, 8, 8]));
    expect(Object.keys(out).sort()).toEqual(['gap', 'logits', 'r1']);
    expect(out.r1!.dims).toEqual([2, 8, 8, 8]);
    const typed = withExtraOutputs(f.model, ['gap'], new Map([['gap', [1, 8, 1, 1]]]));
    expect(graphOutputs(typed)[1]).toEqual({ name: 'gap', dtype: 'float32', shape: ['batch', 8, 1, 1] });
    expect(() => withExtraOutputs(f.model, ['missing'])).toThrow(/missing/);
  });
});

describe('scale', () => {
  // Scale, not speed: times are logged, not asserted (benchmarks are not tests); a quadratic blow-up would still run
  // into the test's timeout.
  it('5,000-node chain: findCuts + analyze find every cut (probe and value_info)', async () => {
    for (const vi of [true, false]) {
      const model = decodeModel(encodeModel(chainGraph(5000, vi)));
      const t0 = performance.now();
      const cuts = findCuts(model);
      const t1 = performance.now();
      const a = await analyzeModel(model, { ort: ortNode });
      const t2 = performance.now();
      console.log(
        `5000-node chain (value_info: ${vi}): findCuts ${(t1 - t0).toFixed(0)} ms, analyzeModel ${(t2 - t1).toFixed(0)} ms`,
      );
      expect(cuts).toHaveLength(4999);
      expect(a.cuts).toHaveLength(4999);
      expect(a.macs).toBe(Math.floor(5000 / 3) * 4 * 4 * 4 * 4);
    }
  }, 180_000);
});

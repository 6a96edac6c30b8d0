// analyzeModel: MAC formulas per op, params, cumulative MACs at cuts, shapes from value_info vs an ORT probe.
import { describe, expect, it } from 'vitest';
import { analyzeModel, findCuts, segmentMacs, sha256Hex, splitModel } from '../src/graph/index.js';
import { chainGraph, costGraph, residualGraph } from './fixtures/graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';

describe('analyzeModel', () => {
  it('counts conv (grouped, depthwise), ConvTranspose, MatMul, Gemm (transB, transA), QLinearMatMul MACs; elementwise ops count 0', async () => {
    const { model, macs } = costGraph();
    const a = await analyzeModel(model, { ort: ortNode });
    const nodes = model.proto.graph!.node!;
    const byOutput = new Map(nodes.map((n, i) => [n.output![0]!, a.nodeMacs[i]!]));
    for (const [name, want] of Object.entries(macs)) expect(byOutput.get(name), name).toBe(want);
    const sum = Object.values(macs).reduce((x, y) => x + y, 0);
    expect(a.macs).toBe(sum);
    expect(a.nodeMacs.reduce((x, y) => x + y, 0)).toBe(sum);
    for (const zero of ['flat', 'flatT', 'q', 'dq']) expect(byOutput.get(zero), zero).toBe(0);
    expect(a.shapes.get('flatT')).toEqual([64, 1]); // transA's K (64) is A's first dim; the second is the batch
    expect(a.shapes.get('deconv')).toEqual([1, 4, 8, 8]);
  });

  it('params and bytes come from the initializers', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const params = 8 * 3 * 9 + 8 + 2 * (8 * 8 * 9 + 8) + 5 * 8 + 5;
    expect(a.params).toBe(params);
    expect(a.paramBytes).toBe(params * 4);
    expect(a.inputs).toEqual([{ name: 'x', dtype: 'float32', shape: ['N', 3, 8, 8] }]);
    expect(a.outputs).toEqual([{ name: 'logits', dtype: 'float32', shape: ['N', 5] }]);
  });

  it('cumulative MACs and fractions at cuts; segmentMacs sums to the total', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const conv = 8 * 8 * 8 * 8 * 9;
    const stem = 8 * 8 * 8 * 3 * 9;
    expect(a.cuts.map((c) => c.macs)).toEqual([
      stem,
      stem,
      stem + 2 * conv,
      stem + 2 * conv,
      stem + 2 * conv,
      stem + 2 * conv,
    ]);
    expect(a.macs).toBe(stem + 2 * conv + 40);
    expect(a.cuts[2]!.fraction).toBeCloseTo((stem + 2 * conv) / a.macs, 12);
    expect(a.cuts.map((c) => c.shape)).toEqual([
      ['batch', 8, 8, 8],
      ['batch', 8, 8, 8],
      ['batch', 8, 8, 8],
      ['batch', 8, 8, 8],
      ['batch', 8, 1, 1],
      ['batch', 8],
    ]);
    const seg = segmentMacs(a, ['r1', 'y']);
    expect(seg).toEqual([stem, 2 * conv, 40]);
    expect(() => segmentMacs(a, ['c2'])).toThrow(/not a cut/);
  });

  it('shapes from value_info match the ORT probe; value_info alone needs no ort', async () => {
    const withVi = await analyzeModel(chainGraph(30, true));
    const probed = await analyzeModel(chainGraph(30, false), { ort: ortNode });
    expect(withVi.cuts).toEqual(probed.cuts);
    expect(withVi.macs).toBe(probed.macs);
    expect(findCuts(chainGraph(30))).toHaveLength(29);
  });

  it('segments built from the analysis have concrete typed boundaries', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const [s0] = splitModel(f.model, ['gap'], a);
    const out = s0!.proto.graph!.output![0]!;
    expect(out.type!.tensorType!.elemType).toBe(1);
    expect(out.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue))).toEqual(['batch', 8, 1, 1]);
  });
});

describe('sha256Hex', () => {
  it('matches known digests', async () => {
    expect(await sha256Hex(new Uint8Array(0))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(await sha256Hex(new TextEncoder().encode('abc'))).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });
});

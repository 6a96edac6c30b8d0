// Exit-head ONNX builder and fusion, checked against a plain TypeScript reference of the head.
import { describe, expect, it } from 'vitest';
import type { DenseLayer, HeadSpec } from '../src/bundle/head-spec.js';
import { SelfxitError } from '../src/errors.js';
import { buildHeadModel, fuseHead, graphOutputs, splitModel, analyzeModel } from '../src/graph/index.js';
import { residualGraph, rng } from './fixtures/graphs.js';
import { maxAbsDiff, ortNode, randomInput, run, runChain } from './fixtures/ort-helpers.js';

function dense(inF: number, outF: number, r: () => number): DenseLayer {
  return {
    in: inF,
    out: outF,
    weight: Float32Array.from({ length: inF * outF }, () => r() / Math.sqrt(inF)),
    bias: Float32Array.from({ length: outF }, () => r() * 0.1),
  };
}

function makeSpec(c: number, h: number, w: number, grid: [number, number], hidden: number | undefined, logitScale: number, classes = 7, seed = 3): HeadSpec {
  const r = rng(seed);
  const inF = c * grid[0] * grid[1];
  const layers = hidden ? [dense(inF, hidden, r), dense(hidden, classes, r)] : [dense(inF, classes, r)];
  return { kind: hidden ? 'pool-mlp' : 'pool-linear', inChannels: c, inHeight: h, inWidth: w, grid, layers, logitScale, classes };
}

/** Reference head: average-pool to the grid, flatten NCHW, dense layers with ReLU between, scale, softmax. */
function referenceHead(spec: HeadSpec, x: ArrayLike<number>, n: number): Float64Array {
  const { inChannels: C, inHeight: H, inWidth: W, grid: [gh, gw] } = spec;
  const kh = H / gh;
  const kw = W / gw;
  const out = new Float64Array(n * spec.classes);
  for (let b = 0; b < n; b++) {
    let feat: number[] = [];
    for (let c = 0; c < C; c++)
      for (let i = 0; i < gh; i++)
        for (let j = 0; j < gw; j++) {
          let s = 0;
          for (let y = i * kh; y < (i + 1) * kh; y++) for (let xx = j * kw; xx < (j + 1) * kw; xx++) s += x[((b * C + c) * H + y) * W + xx]!;
          feat.push(s / (kh * kw));
        }
    spec.layers.forEach((l, li) => {
      if (li > 0) feat = feat.map((v) => Math.max(0, v));
      const next: number[] = [];
      for (let o = 0; o < l.out; o++) {
        let s = l.bias[o]!;
        for (let k = 0; k < l.in; k++) s += l.weight[o * l.in + k]! * feat[k]!;
        next.push(s);
      }
      feat = next;
    });
    const z = feat.map((v) => v * spec.logitScale);
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    const sum = e.reduce((a, v) => a + v, 0);
    e.forEach((v, k) => (out[b * spec.classes + k] = v / sum));
  }
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('buildHeadModel', () => {
  const cases: { name: string; grid: [number, number]; hidden?: number; scale: number; ops: string[] }[] = [
    { name: 'global pool, linear, scale 1', grid: [1, 1], scale: 1, ops: ['GlobalAveragePool', 'Flatten', 'Gemm', 'Softmax'] },
    { name: '2x2 grid, linear, scale 2', grid: [2, 2], scale: 2, ops: ['AveragePool', 'Flatten', 'Gemm', 'Mul', 'Softmax'] },
    { name: 'no pool (grid = H, W), mlp, scale 2', grid: [4, 6], hidden: 16, scale: 2, ops: ['Flatten', 'Gemm', 'Relu', 'Gemm', 'Mul', 'Softmax'] },
    { name: '2x3 grid, mlp, scale 0.5', grid: [2, 3], hidden: 9, scale: 0.5, ops: ['AveragePool', 'Flatten', 'Gemm', 'Relu', 'Gemm', 'Mul', 'Softmax'] },
  ];
  for (const c of cases) {
    it(`${c.name}: matches the TS reference (max abs diff < 1e-5)`, async () => {
      const spec = makeSpec(5, 4, 6, c.grid, c.hidden, c.scale);
      const m = buildHeadModel(spec);
      expect(m.proto.graph!.node!.map((n) => n.opType)).toEqual(c.ops);
      const x = randomInput([3, 5, 4, 6], 21);
      const out = await run(m, x);
      expect(out.probs!.dims).toEqual([3, 7]);
      expect(maxDiff(out.probs!.data as Float32Array, referenceHead(spec, x.data as Float32Array, 3))).toBeLessThan(1e-5);
    });
  }

  it('custom input/output names', () => {
    const m = buildHeadModel(makeSpec(2, 2, 2, [1, 1], undefined, 1), { inputName: 'feat', outputName: 'p' });
    expect(m.proto.graph!.input![0]!.name).toBe('feat');
    expect(graphOutputs(m)).toEqual([{ name: 'p', dtype: 'float32', shape: ['batch', 7] }]);
  });

  it('rejects inconsistent specs with INVALID_ARGUMENT', () => {
    const bad: HeadSpec[] = [
      makeSpec(4, 4, 6, [3, 3], undefined, 1), // grid does not divide
      { ...makeSpec(4, 4, 4, [2, 2], undefined, 1), classes: 9 },
      { ...makeSpec(4, 4, 4, [2, 2], undefined, 1), inChannels: 3 },
      { ...makeSpec(4, 4, 4, [1, 1], 8, 1), layers: [] },
    ];
    for (const s of bad) expect(() => buildHeadModel(s)).toThrow(SelfxitError);
    try {
      buildHeadModel(bad[0]!);
    } catch (e) {
      expect((e as SelfxitError).code).toBe('INVALID_ARGUMENT');
      expect((e as Error).message).toMatch(/grid \[3, 3\] must divide/);
    }
  });
});

describe('fuseHead', () => {
  it('outputs [segment output, head probs]; both match the unfused segment and the reference', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const segs = splitModel(f.model, ['r1', 'y'], a);
    const spec = makeSpec(8, 8, 8, [2, 2], 12, 2, 10, 5);
    const fused = fuseHead(segs[1]!, spec);
    expect(graphOutputs(fused).map((o) => o.name)).toEqual(['y', 'y__exit_probs']);
    expect(graphOutputs(fused)[1]!.shape).toEqual(['batch', 10]);
    const x = randomInput([3, 3, 8, 8], 8);
    const r1 = await runChain([segs[0]!], x);
    const plain = await run(segs[1]!, r1);
    const both = await run(fused, r1);
    expect(maxAbsDiff(both.y!, plain.y!)).toBe(0);
    expect(maxDiff(both.y__exit_probs!.data as Float32Array, referenceHead(spec, plain.y!.data as Float32Array, 3))).toBeLessThan(1e-5);
    // the fused segment still chains: its first output feeds the next segment
    const logits = await runChain([segs[0]!, fused, segs[2]!], x);
    expect(maxAbsDiff(logits, (await run(f.model, x)).logits!)).toBeLessThanOrEqual(1e-5);
    const named = fuseHead(segs[1]!, spec, { outputName: 'exit0' });
    expect(graphOutputs(named).map((o) => o.name)).toEqual(['y', 'exit0']);
    expect(named.proto.opsetImport).toEqual(f.model.proto.opsetImport);
  });

  it('rejects a head whose input shape does not match the cut', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const [s0] = splitModel(f.model, ['gap'], a);
    expect(() => fuseHead(s0!, makeSpec(8, 8, 8, [1, 1], undefined, 1))).toThrow(/has shape \[batch, 8, 1, 1\]/);
    expect(() => fuseHead(s0!, makeSpec(8, 1, 1, [1, 1], undefined, 1))).not.toThrow();
  });
});


// Exit-head ONNX builder and fusion, checked against a plain TypeScript reference of the head.
import { describe, expect, it } from 'vitest';
import { headCost, headInputSize, type DenseLayer, type HeadSpec } from '../src/graph/head-spec.js';
import { SelfxitError } from '../src/errors.js';
import {
  buildHeadModel,
  fuseHead,
  graphOutputs,
  splitModel,
  analyzeModel,
  validateHeadSpec,
} from '../src/graph/index.js';
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

function makeSpec(
  c: number,
  h: number,
  w: number,
  grid: [number, number],
  hidden: number | undefined,
  logitScale: number,
  classes = 7,
  seed = 3,
  maxGrid?: [number, number],
): HeadSpec {
  const r = rng(seed);
  const inF = c * grid[0] * grid[1] + (maxGrid ? c * maxGrid[0] * maxGrid[1] : 0);
  const layers = hidden ? [dense(inF, hidden, r), dense(hidden, classes, r)] : [dense(inF, classes, r)];
  return {
    kind: hidden ? 'pool-mlp' : 'pool-linear',
    inChannels: c,
    inHeight: h,
    inWidth: w,
    grid,
    ...(maxGrid ? { maxGrid } : {}),
    layers,
    logitScale,
    classes,
  };
}

/**
 * Reference head: average-pool to the grid, flatten NCHW, then (with maxGrid) max-pool to it, flatten NCHW and append;
 * dense layers with ReLU between, scale, softmax.
 */
function referenceHead(spec: HeadSpec, x: ArrayLike<number>, n: number): Float64Array {
  const { inChannels: C, inHeight: H, inWidth: W } = spec;
  const pool = (b: number, [gh, gw]: readonly [number, number], max: boolean): number[] => {
    const kh = H / gh;
    const kw = W / gw;
    const f: number[] = [];
    for (let c = 0; c < C; c++)
      for (let i = 0; i < gh; i++)
        for (let j = 0; j < gw; j++) {
          let s = 0;
          let m = -Infinity;
          for (let y = i * kh; y < (i + 1) * kh; y++)
            for (let xx = j * kw; xx < (j + 1) * kw; xx++) {
              const v = x[((b * C + c) * H + y) * W + xx]!;
              s += v;
              m = Math.max(m, v);
            }
          f.push(max ? m : s / (kh * kw));
        }
    return f;
  };
  const out = new Float64Array(n * spec.classes);
  for (let b = 0; b < n; b++) {
    let feat = pool(b, spec.grid, false);
    if (spec.maxGrid) feat = feat.concat(pool(b, spec.maxGrid, true));
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
    {
      name: 'global pool, linear, scale 1',
      grid: [1, 1],
      scale: 1,
      ops: ['GlobalAveragePool', 'Flatten', 'Gemm', 'Softmax'],
    },
    {
      name: '2x2 grid, linear, scale 2',
      grid: [2, 2],
      scale: 2,
      ops: ['AveragePool', 'Flatten', 'Gemm', 'Mul', 'Softmax'],
    },
    {
      name: 'no pool (grid = H, W), mlp, scale 2',
      grid: [4, 6],
      hidden: 16,
      scale: 2,
      ops: ['Flatten', 'Gemm', 'Relu', 'Gemm', 'Mul', 'Softmax'],
    },
    {
      name: '2x3 grid, mlp, scale 0.5',
      grid: [2, 3],
      hidden: 9,
      scale: 0.5,
      ops: ['AveragePool', 'Flatten', 'Gemm', 'Relu', 'Gemm', 'Mul', 'Softmax'],
    },
  ];
  for (const c of cases) {
    it(`${c.name}: matches the TS reference (max abs diff < 1e-5)`, async () => {
      const spec = makeSpec(5, 4, 6, c.grid, c.hidden, c.scale);
      const m = buildHeadModel(spec);
      expect(m.proto.graph!.node!.map((n) => n.opType)).toEqual(c.ops);
      const x = randomInput([3, 5, 4, 6], 21);
      const out = await run(m, x);
      expect(out.probs!.dims).toEqual([3, 7]);
      expect(maxDiff(out.probs!.data as Float32Array, referenceHead(spec, x.data as Float32Array, 3))).toBeLessThan(
        1e-5,
      );
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

describe('buildHeadModel with a max-pooled branch (maxGrid)', () => {
  const cases: {
    name: string;
    grid: [number, number];
    maxGrid: [number, number];
    hidden?: number;
    scale: number;
    ops: string[];
  }[] = [
    {
      name: 'avg 2x3 + max 2x3, linear',
      grid: [2, 3],
      maxGrid: [2, 3],
      scale: 1,
      ops: ['AveragePool', 'Flatten', 'MaxPool', 'Flatten', 'Concat', 'Gemm', 'Softmax'],
    },
    {
      name: 'avg 1x1 + global max 1x1, mlp, scale 2',
      grid: [1, 1],
      maxGrid: [1, 1],
      hidden: 6,
      scale: 2,
      ops: [
        'GlobalAveragePool',
        'Flatten',
        'GlobalMaxPool',
        'Flatten',
        'Concat',
        'Gemm',
        'Relu',
        'Gemm',
        'Mul',
        'Softmax',
      ],
    },
    {
      name: 'avg 2x2 + raw map (maxGrid = H, W), linear',
      grid: [2, 2],
      maxGrid: [4, 6],
      scale: 1,
      ops: ['AveragePool', 'Flatten', 'Flatten', 'Concat', 'Gemm', 'Softmax'],
    },
    {
      name: 'no avg pool (grid = H, W) + max 2x1, linear, scale 0.5',
      grid: [4, 6],
      maxGrid: [2, 1],
      scale: 0.5,
      ops: ['Flatten', 'MaxPool', 'Flatten', 'Concat', 'Gemm', 'Mul', 'Softmax'],
    },
    {
      name: 'avg 1x2 + max 4x3 (different grids), mlp',
      grid: [1, 2],
      maxGrid: [4, 3],
      hidden: 9,
      scale: 1,
      ops: ['AveragePool', 'Flatten', 'MaxPool', 'Flatten', 'Concat', 'Gemm', 'Relu', 'Gemm', 'Softmax'],
    },
  ];
  for (const c of cases) {
    it(`${c.name}: matches the TS reference (max abs diff < 1e-5)`, async () => {
      const spec = makeSpec(5, 4, 6, c.grid, c.hidden, c.scale, 7, 3, c.maxGrid);
      const m = buildHeadModel(spec);
      expect(m.proto.graph!.node!.map((n) => n.opType)).toEqual(c.ops);
      expect(m.proto.opsetImport).toEqual([{ domain: '', version: 13 }]);
      const x = randomInput([3, 5, 4, 6], 22);
      const out = await run(m, x);
      expect(out.probs!.dims).toEqual([3, 7]);
      expect(maxDiff(out.probs!.data as Float32Array, referenceHead(spec, x.data as Float32Array, 3))).toBeLessThan(
        1e-5,
      );
    });
  }

  it('validateHeadSpec rejects a maxGrid that does not divide the map, and a layer sized without the max features', () => {
    const ok = makeSpec(4, 4, 6, [2, 2], undefined, 1, 7, 3, [2, 3]);
    expect(() => validateHeadSpec(ok)).not.toThrow();
    const bad: HeadSpec[] = [
      { ...ok, maxGrid: [3, 3] },
      { ...ok, maxGrid: [4, 4] },
      { ...ok, maxGrid: [0, 2] },
      { ...ok, maxGrid: [1.5, 2] },
    ];
    for (const s of bad) {
      try {
        validateHeadSpec(s);
        expect.unreachable();
      } catch (e) {
        expect((e as SelfxitError).code).toBe('INVALID_ARGUMENT');
        expect((e as Error).message).toMatch(/maxGrid \[.*\] must divide the input size \[4, 6\]/);
      }
    }
    // layers sized for the avg features only
    const noMax = makeSpec(4, 4, 6, [2, 2], undefined, 1);
    expect(() => validateHeadSpec({ ...noMax, maxGrid: [2, 3] })).toThrow(/layer 0 takes 16 inputs, expected 40/);
    // and a spec with max features but no maxGrid
    const { maxGrid: _drop, ...withoutMax } = ok;
    expect(() => validateHeadSpec(withoutMax)).toThrow(/layer 0 takes 40 inputs, expected 16/);
  });
});

describe('headInputSize / headCost', () => {
  it('counts avg features, plus max features with a maxGrid', () => {
    expect(headInputSize({ inChannels: 5, grid: [2, 3] })).toBe(30);
    expect(headInputSize({ inChannels: 5, grid: [2, 3], maxGrid: undefined })).toBe(30);
    expect(headInputSize({ inChannels: 5, grid: [2, 3], maxGrid: [1, 1] })).toBe(35);
    expect(headInputSize({ inChannels: 5, grid: [1, 1], maxGrid: [4, 6] })).toBe(5 + 120);
  });
  it('charges one op per input element for each branch that pools', () => {
    const chw = 5 * 4 * 6;
    const lin = (s: HeadSpec): number => s.layers.reduce((a, l) => a + l.in * l.out, 0);
    const params = (s: HeadSpec): number => s.layers.reduce((a, l) => a + l.in * l.out + l.out, 0);
    const avg = makeSpec(5, 4, 6, [2, 3], undefined, 1);
    expect(headCost(avg)).toEqual({ params: 30 * 7 + 7, macs: 30 * 7 + chw });
    const full = makeSpec(5, 4, 6, [4, 6], 8, 2);
    expect(headCost(full)).toEqual({ params: params(full), macs: lin(full) });
    const both = makeSpec(5, 4, 6, [2, 3], undefined, 1, 7, 3, [2, 2]);
    expect(headCost(both)).toEqual({ params: 50 * 7 + 7, macs: 50 * 7 + 2 * chw });
    const rawMax = makeSpec(5, 4, 6, [1, 1], 4, 1, 7, 3, [4, 6]);
    expect(headCost(rawMax)).toEqual({ params: params(rawMax), macs: lin(rawMax) + chw });
    expect(rawMax.layers[0]!.in).toBe(125);
    const fullMax = makeSpec(5, 4, 6, [4, 6], undefined, 1, 7, 3, [1, 1]);
    expect(headCost(fullMax)).toEqual({ params: 125 * 7 + 7, macs: 125 * 7 + chw });
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
    expect(
      maxDiff(both.y__exit_probs!.data as Float32Array, referenceHead(spec, plain.y!.data as Float32Array, 3)),
    ).toBeLessThan(1e-5);
    // the fused segment still chains: its first output feeds the next segment
    const logits = await runChain([segs[0]!, fused, segs[2]!], x);
    expect(maxAbsDiff(logits, (await run(f.model, x)).logits!)).toBeLessThanOrEqual(1e-5);
    const named = fuseHead(segs[1]!, spec, { outputName: 'exit0' });
    expect(graphOutputs(named).map((o) => o.name)).toEqual(['y', 'exit0']);
    expect(named.proto.opsetImport).toEqual(f.model.proto.opsetImport);
  });

  it('with a maxGrid: two outputs, the cut unchanged and the head probabilities equal to the reference', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const segs = splitModel(f.model, ['a'], a);
    const spec = makeSpec(8, 8, 8, [2, 2], undefined, 1, 5, 9, [4, 4]);
    const fused = fuseHead(segs[0]!, spec, { outputName: 'exit0' });
    expect(graphOutputs(fused).map((o) => o.name)).toEqual(['a', 'exit0']);
    expect(graphOutputs(fused)[1]!.shape).toEqual(['batch', 5]);
    const x = randomInput([4, 3, 8, 8], 31);
    const plain = await run(segs[0]!, x);
    const both = await run(fused, x);
    expect(maxAbsDiff(both.a!, plain.a!)).toBe(0);
    expect(
      maxDiff(both.exit0!.data as Float32Array, referenceHead(spec, plain.a!.data as Float32Array, 4)),
    ).toBeLessThan(1e-5);
    const logits = await runChain([fused, segs[1]!], x);
    expect(maxAbsDiff(logits, (await run(f.model, x)).logits!)).toBeLessThanOrEqual(1e-5);
  });

  it('rejects a head whose input shape does not match the cut', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const [s0] = splitModel(f.model, ['gap'], a);
    expect(() => fuseHead(s0!, makeSpec(8, 8, 8, [1, 1], undefined, 1))).toThrow(/has shape \[batch, 8, 1, 1\]/);
    expect(() => fuseHead(s0!, makeSpec(8, 1, 1, [1, 1], undefined, 1))).not.toThrow();
  });
});

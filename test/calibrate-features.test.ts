// Feature extraction with an optional max-pooled branch, and heads on those features run as ONNX (onnxruntime-node).
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import type { InputSpec } from '../src/bundle/manifest.js';
import { extractFeatures, type FeatureRequest } from '../src/calibrate/features.js';
import { createRng } from '../src/calibrate/rng.js';
import { inputDims, toModelInput, type SampleBatch } from '../src/bundle/input.js';
import { predictHead, toHeadSpec, trainHead } from '../src/calibrate/train-head.js';
import {
  analyzeModel,
  buildHeadModel,
  fuseHead,
  splitModel,
  withExtraOutputs,
  type CutPoint,
} from '../src/graph/index.js';
import { residualGraph } from './fixtures/graphs.js';
import { ortNode, run } from './fixtures/ort-helpers.js';

function naivePool(
  map: ArrayLike<number>,
  n: number,
  c: number,
  h: number,
  w: number,
  [gh, gw]: readonly [number, number],
  max: boolean,
): number[][] {
  const bh = h / gh;
  const bw = w / gw;
  const rows: number[][] = [];
  for (let s = 0; s < n; s++) {
    const f: number[] = [];
    for (let ch = 0; ch < c; ch++)
      for (let i = 0; i < gh; i++)
        for (let j = 0; j < gw; j++) {
          let sum = 0;
          let m = -Infinity;
          for (let y = 0; y < bh; y++)
            for (let x = 0; x < bw; x++) {
              const v = map[((s * c + ch) * h + i * bh + y) * w + j * bw + x]!;
              sum += v;
              m = Math.max(m, v);
            }
          f.push(max ? m : sum / (bh * bw));
        }
    rows.push(f);
  }
  return rows;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

const N = 11;
const input: InputSpec = {
  name: 'x',
  height: 8,
  width: 8,
  channels: 3,
  layout: 'NCHW',
  mean: [0.5, 0.4, 0.3],
  std: [0.25, 0.2, 0.3],
};

async function setup(): Promise<{
  f: ReturnType<typeof residualGraph>;
  cuts: Map<string, CutPoint>;
  samples: SampleBatch;
  x: ort.Tensor;
}> {
  const f = residualGraph();
  const a = await analyzeModel(f.model, { ort: ortNode });
  const rng = createRng(17);
  const samples: SampleBatch = {
    data: Uint8Array.from({ length: N * 8 * 8 * 3 }, () => Math.floor(rng.next() * 256)),
    count: N,
  };
  const x = new ort.Tensor('float32', toModelInput(samples, 0, N, input), inputDims(input, N));
  return { f, cuts: new Map(a.cuts.map((c) => [c.tensor, c])), samples, x };
}

describe('extractFeatures with maxGrid', () => {
  it('fills [avg | max] rows equal to naive pooling of the cut maps, over several batches', async () => {
    const { f, cuts, samples, x } = await setup();
    const requests: FeatureRequest[] = [
      { cut: cuts.get('c1')!, grid: [2, 2], maxGrid: [4, 4] },
      { cut: cuts.get('a')!, grid: [1, 1], maxGrid: [1, 1] },
      { cut: cuts.get('r1')!, grid: [2, 4] },
      { cut: cuts.get('y')!, grid: [1, 1], maxGrid: [8, 8] },
    ];
    const fs = await extractFeatures({
      model: f.model,
      requests,
      samples,
      input,
      output: 'logits',
      outputKind: 'logits',
      classes: 5,
      ort: ortNode,
      batchSize: 4,
    });
    const maps = await run(withExtraOutputs(f.model, ['c1', 'a', 'r1', 'y']), x);
    expect(fs.n).toBe(N);
    for (const [i, r] of requests.entries()) {
      const cf = fs.cuts[i]!;
      const dAvg = 8 * r.grid[0] * r.grid[1];
      const dMax = r.maxGrid ? 8 * r.maxGrid[0] * r.maxGrid[1] : 0;
      expect(cf.dim).toBe(dAvg + dMax);
      expect(cf.x.length).toBe(N * cf.dim);
      expect(cf.maxGrid).toEqual(r.maxGrid);
      expect('maxGrid' in cf).toBe(r.maxGrid !== undefined);
      const map = maps[r.cut.tensor]!.data as Float32Array;
      const avg = naivePool(map, N, 8, 8, 8, r.grid, false);
      const max = r.maxGrid ? naivePool(map, N, 8, 8, 8, r.maxGrid, true) : null;
      for (let s = 0; s < N; s++) {
        const row = cf.x.subarray(s * cf.dim, (s + 1) * cf.dim);
        expect(maxDiff(row.subarray(0, dAvg), avg[s]!)).toBeLessThan(1e-5);
        if (max) expect(Array.from(row.subarray(dAvg))).toEqual(max[s]!.map((v) => Math.fround(v)));
      }
    }
  });

  it('rejects a maxGrid that does not divide the cut before running the model', async () => {
    const { f, cuts, samples } = await setup();
    const create = ortNode.InferenceSession.create.bind(ortNode.InferenceSession);
    let sessions = 0;
    const counting = {
      ...ortNode,
      InferenceSession: { create: (...args: Parameters<typeof create>) => (sessions++, create(...args)) },
    };
    await expect(
      extractFeatures({
        model: f.model,
        requests: [{ cut: cuts.get('c1')!, grid: [2, 2], maxGrid: [3, 3] }],
        samples,
        input,
        output: 'logits',
        outputKind: 'logits',
        classes: 5,
        ort: counting,
      }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(sessions).toBe(0);
  });
});

describe('heads with a max branch: ONNX (onnxruntime-node) equals predictHead on extracted features', () => {
  it('standalone head model and head fused onto the segment give predictHead probabilities (< 1e-5)', async () => {
    const { f, cuts, samples, x } = await setup();
    const cut = cuts.get('a')!;
    const grid: [number, number] = [2, 2];
    const maxGrid: [number, number] = [4, 4];
    const fs = await extractFeatures({
      model: f.model,
      requests: [{ cut, grid, maxGrid }],
      samples,
      input,
      output: 'logits',
      outputKind: 'logits',
      classes: 5,
      ort: ortNode,
      batchSize: 5,
    });
    const cf = fs.cuts[0]!;
    for (const kind of ['pool-linear', 'pool-mlp'] as const) {
      // trained head: the standardisation folded into layer 0 covers the max features too
      const head = trainHead(cf.x, fs.teacher, N, cf.dim, fs.k, { kind, hidden: 6, epochs: 3, batchSize: 4, seed: 2 });
      const spec = toHeadSpec(head, {
        kind,
        inChannels: cf.channels,
        inHeight: cf.height,
        inWidth: cf.width,
        grid: cf.grid,
        maxGrid: cf.maxGrid,
      });
      expect(spec.maxGrid).toEqual(maxGrid);
      expect(spec.layers[0]!.in).toBe(8 * 4 + 8 * 16);
      const want = predictHead(head, cf.x, N);

      const cutMap = (await run(withExtraOutputs(f.model, ['a']), x)).a!;
      const standalone = await run(buildHeadModel(spec), cutMap);
      expect(maxDiff(standalone.probs!.data as Float32Array, want)).toBeLessThan(1e-5);

      const [seg0] = splitModel(f.model, ['a'], await analyzeModel(f.model, { ort: ortNode }));
      const fused = fuseHead(seg0!, spec, { outputName: 'exit0' });
      const out = await run(fused, x);
      expect(Object.keys(out).sort()).toEqual(['a', 'exit0']);
      expect(out.exit0!.dims).toEqual([N, 5]);
      expect(maxDiff(out.exit0!.data as Float32Array, want)).toBeLessThan(1e-5);
    }
  });

  it('toHeadSpec checks the feature count and the max grid; omits maxGrid when absent', async () => {
    const { f, cuts, samples } = await setup();
    const fs = await extractFeatures({
      model: f.model,
      requests: [{ cut: cuts.get('a')!, grid: [1, 1], maxGrid: [2, 2] }],
      samples,
      input,
      output: 'logits',
      outputKind: 'logits',
      classes: 5,
      ort: ortNode,
    });
    const cf = fs.cuts[0]!;
    const head = trainHead(cf.x, fs.teacher, N, cf.dim, fs.k, { epochs: 1 });
    const geo = { kind: 'pool-linear' as const, inChannels: 8, inHeight: 8, inWidth: 8, grid: [1, 1] as const };
    expect(() => toHeadSpec(head, geo)).toThrow(/reads 40 features but 8x1x1 average pooling gives 8/);
    expect(() => toHeadSpec(head, { ...geo, maxGrid: [1, 2] })).toThrow(
      /reads 40 features but 8x1x1 average pooling \+ 8x1x2 max pooling gives 24/,
    );
    expect(() => toHeadSpec(head, { ...geo, grid: [1, 2], maxGrid: [3, 1] })).toThrow(
      /maxGrid 3x1 does not divide 8x8/,
    );
    expect(toHeadSpec(head, { ...geo, maxGrid: [2, 2] }).maxGrid).toEqual([2, 2]);
    const plain = trainHead(cf.x, fs.teacher, N, 8, fs.k, { epochs: 1 });
    expect('maxGrid' in toHeadSpec(plain, geo)).toBe(false);
  });
});

// The heads study's own pieces: the fixed k-means 1x1 convolution features (run in onnxruntime-node, compared with
// a plain JS computation on the cut maps) and the BENCHMARKS.md block rendered from several runs.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { encodedFeatures, encoderWidth, fitEncoders } from '../bench/conv-features.js';
import { renderHeadsBlock, type StudyRecord } from '../bench/heads-render.js';
import type { InputSpec } from '../src/bundle/manifest.js';
import { createRng } from '../src/calibrate/rng.js';
import { inputDims, toModelInput, type SampleBatch } from '../src/bundle/input.js';
import { analyzeModel, withExtraOutputs, type CutPoint } from '../src/graph/index.js';
import { residualGraph } from './fixtures/graphs.js';
import { ortNode, run } from './fixtures/ort-helpers.js';

const N = 9;
const input: InputSpec = {
  name: 'x',
  height: 8,
  width: 8,
  channels: 3,
  layout: 'NCHW',
  mean: [0.5, 0.4, 0.3],
  std: [0.25, 0.2, 0.3],
};

describe('heads study: k-means 1x1 convolution features', () => {
  it('fits unit-norm centroids with quantile thresholds and extracts [avg | max] of relu(conv) equal to a JS computation', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const cuts = ['r1', 'y'].map((t) => a.cuts.find((c) => c.tensor === t)!) as CutPoint[];
    const rng = createRng(5);
    const samples: SampleBatch = {
      data: Uint8Array.from({ length: N * 8 * 8 * 3 }, () => Math.floor(rng.next() * 256)),
      count: N,
    };
    const ctx = { model: f.model, cuts, input, ort: ortNode };
    const enc = await fitEncoders(ctx, samples, N, 0.75, 1);
    const feats = await encodedFeatures(ctx, enc, samples, 4);
    const x = new ort.Tensor('float32', toModelInput(samples, 0, N, input), inputDims(input, N));
    const maps = await run(withExtraOutputs(f.model, ['r1', 'y']), x);
    const hw = 64;
    cuts.forEach((cut, i) => {
      const e = enc[i]!;
      expect(e.k).toBe(encoderWidth(8));
      expect(e.c).toBe(8);
      for (let q = 0; q < e.k; q++) {
        let norm = 0;
        for (let ch = 0; ch < e.c; ch++) norm += e.weight[q * e.c + ch]! ** 2;
        expect(Math.sqrt(norm)).toBeCloseTo(1, 4);
      }
      const map = maps[cut.tensor]!.data as Float32Array;
      let active = 0;
      for (let s = 0; s < N; s++) {
        for (let q = 0; q < e.k; q++) {
          let sum = 0;
          let max = -Infinity;
          for (let p = 0; p < hw; p++) {
            let v = e.bias[q]!;
            for (let ch = 0; ch < e.c; ch++) v += e.weight[q * e.c + ch]! * map[(s * e.c + ch) * hw + p]!;
            v = Math.max(0, v);
            if (v > 0) active++;
            sum += v;
            max = Math.max(max, v);
          }
          expect(feats[i]![s * 2 * e.k + q]).toBeCloseTo(sum / hw, 4);
          expect(feats[i]![s * 2 * e.k + e.k + q]).toBeCloseTo(max, 4);
        }
      }
      // thresholds at the 0.75 quantile of each unit's responses: about a quarter of the positions fire
      const share = active / (N * e.k * hw);
      expect(share).toBeGreaterThan(0.15);
      expect(share).toBeLessThan(0.3);
    });
  });
});

describe('heads study: BENCHMARKS.md block from several runs', () => {
  const record = (
    date: string,
    heads: string,
    candidates = [{ index: 0, tensor: 'a', macsFraction: 0.5 }],
  ): StudyRecord => ({
    date,
    command: `npm run bench:heads m ${heads}`,
    model: 'm',
    calibSamples: 10,
    testSamples: 5,
    candidates,
    rows: [
      {
        heads,
        rule: 'global',
        target: 0.99,
        exits: [0],
        validationAgreement: 0.991,
        testAgreement: 0.98,
        top1VsBackbonePoints: -0.2,
        testMacsFraction: 0.75,
        headTrainingSeconds: 3,
      },
    ],
  });

  it('lists every run with its raw data file and keeps the rows in run order', () => {
    const md = renderHeadsBlock(
      [record('2026-12-01T00:00:00Z', 'one'), { ...record('2026-12-02T00:00:00Z', 'two'), seconds: 12 }],
      ['r1.json', 'r2.json'],
    );
    expect(md).toContain('- 2026-12-01: `npm run bench:heads m one`, raw data `r1.json`');
    expect(md).toContain('- 2026-12-02: `npm run bench:heads m two` (12 s), raw data `r2.json`');
    expect(md.indexOf('| one |')).toBeGreaterThan(0);
    expect(md.indexOf('| two |')).toBeGreaterThan(md.indexOf('| one |'));
    expect(md).toContain('| one | global | 0.99 | 0 | 99.10 % | 98.00 % | -0.20 | 0.750 | 3 s |');
  });

  it('refuses runs with different candidates', () => {
    expect(() =>
      renderHeadsBlock([record('2026-12-01T00:00:00Z', 'one'), record('2026-12-02T00:00:00Z', 'two', [])], ['a', 'b']),
    ).toThrow(/candidates differ/);
  });
});

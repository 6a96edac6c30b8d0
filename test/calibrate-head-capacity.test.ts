// Per-exit head capacity: features of a configuration derived from the stored ones equal a backbone pass with that
// pooling (so the exported ONNX head reads what it was trained on), the ladder follows the data, and selection keeps a
// costlier head only when its out-of-fold saving beats its cost.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import type { InputSpec } from '../src/bundle/manifest.js';
import { extractFeatures, type FeatureRequest } from '../src/calibrate/features.js';
import {
  autoConfigs,
  autoLadder,
  chooseCapacity,
  configFeatures,
  configGeometry,
  fixedConfig,
  headUtility,
  LINEAR,
} from '../src/calibrate/head-capacity.js';
import { packFeatures } from '../src/calibrate/feature-store.js';
import { predictHead, toHeadSpec, trainHead } from '../src/calibrate/train-head.js';
import { crossFit } from '../src/calibrate/crossfit.js';
import { coverageAt } from '../src/calibrate/exit-costs.js';
import { argmaxRows, exitScores } from '../src/policy/cascade-sim.js';
import { createRng } from '../src/calibrate/rng.js';
import { inputDims, toModelInput, type SampleBatch } from '../src/bundle/input.js';
import { analyzeModel, buildHeadModel, encodeModel, sha256Hex, withExtraOutputs } from '../src/graph/index.js';
import { prepare } from '../src/calibrate/prepare.js';
import { blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';
import { residualGraph } from './fixtures/graphs.js';
import { ortNode, run } from './fixtures/ort-helpers.js';

const N = 13;
const input: InputSpec = { name: 'x', height: 8, width: 8, channels: 3, layout: 'NCHW', mean: [0.5], std: [0.25] };

async function features(requests: (cut: never) => FeatureRequest[]) {
  const f = residualGraph();
  const a = await analyzeModel(f.model, { ort: ortNode });
  const cut = a.cuts.find((c) => c.tensor === 'r1')!;
  const rng = createRng(5);
  const samples: SampleBatch = {
    data: Uint8Array.from({ length: N * 8 * 8 * 3 }, () => Math.floor(rng.next() * 256)),
    count: N,
  };
  const go = (reqs: FeatureRequest[]) =>
    extractFeatures({
      model: f.model,
      requests: reqs,
      samples,
      input: { ...input, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
      output: 'logits',
      outputKind: 'logits',
      classes: 5,
      ort: ortNode,
      batchSize: 5,
    });
  return { f, cut, samples, go, requests: requests(cut as never) };
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

describe('configFeatures', () => {
  it('equals a backbone pass with the coarser grid / without the max branch (float32 and float16)', async () => {
    const { cut, go } = await features(() => []);
    const stored = (await go([{ cut, grid: [4, 4], maxGrid: [2, 2] }])).cuts[0]!;
    const mlp = autoLadder(16).map((r) => r.config);
    const [base, coarse, avg] = [fixedConfig('pool-mlp', 16), mlp[1]!, mlp[2]!];
    expect(configFeatures(stored, base)).toBe(stored);
    for (const [config, req] of [
      [coarse, { cut, grid: [2, 2], maxGrid: [2, 2] }],
      [avg, { cut, grid: [4, 4] }],
    ] as const) {
      const want = (await go([req as FeatureRequest])).cuts[0]!;
      const got = configFeatures(stored, config);
      expect(got.grid).toEqual(want.grid);
      expect(got.maxGrid).toEqual(want.maxGrid);
      expect(got.dim).toBe(want.dim);
      expect(configGeometry(stored, config).dim).toBe(want.dim);
      expect(maxDiff(got.x as Float32Array, want.x)).toBeLessThan(1e-5);
      const half = configFeatures({ ...stored, x: packFeatures(stored.x, N, stored.dim, 'f16') }, config);
      expect(half.x instanceof Float32Array).toBe(false);
    }
  });

  it('trains a head on derived features that the exported ONNX head reproduces from the map', async () => {
    const { f, cut, go, samples } = await features(() => []);
    const fs = await go([{ cut, grid: [4, 4], maxGrid: [2, 2] }]);
    const coarse = autoLadder(16)[1]!.config;
    const d = configFeatures(fs.cuts[0]!, coarse);
    const head = trainHead(d.x as Float32Array, fs.teacher, N, d.dim, 5, { kind: 'pool-mlp', hidden: 16, epochs: 3 });
    const spec = toHeadSpec(head, {
      kind: 'pool-mlp',
      inChannels: 8,
      inHeight: 8,
      inWidth: 8,
      grid: d.grid,
      ...(d.maxGrid ? { maxGrid: d.maxGrid } : {}),
    });
    const x = new ort.Tensor(
      'float32',
      toModelInput(samples, 0, N, { ...input, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }),
      inputDims(input, N),
    );
    const map = (await run(withExtraOutputs(f.model, ['r1']), x))['r1']!;
    const out = await run(buildHeadModel(spec), map);
    const probs = Object.values(out)[0]!.data as Float32Array;
    expect(maxDiff(probs, predictHead(head, d.x as Float32Array, N))).toBeLessThan(1e-4);
  });
});

describe('the auto ladder', () => {
  it('adds the wider MLP only with enough rows, and only variants the pooling allows', () => {
    const ladder = autoLadder(64);
    const labels = (rows: number, f: Parameters<typeof autoConfigs>[1]) =>
      autoConfigs(rows, f, ladder).map((c) => c.label);
    expect(labels(20_000, { grid: [2, 2], maxGrid: [2, 2] })).toEqual([]);
    expect(labels(100_000, { grid: [2, 2], maxGrid: [2, 2] })).toEqual(['mlp128', 'mlp64-coarse', 'mlp64-avg']);
    expect(labels(100_000, { grid: [1, 1] })).toEqual(['mlp128']);
  });

  it('fixed capacity is one configuration per kind on the stored pooling', () => {
    expect(fixedConfig('pool-mlp', 64)).toEqual({
      label: 'pool-mlp',
      kind: 'pool-mlp',
      hidden: 64,
      coarse: false,
      max: true,
    });
    expect(LINEAR.hidden).toBe(0);
  });
});

describe('capacity selection by out-of-fold saving net of cost', () => {
  // 2 classes; the teacher is confident. XOR of two feature signs needs a hidden layer; the sign of one does not.
  const n = 800;
  const d = 4;
  const rng = createRng(3);
  const x = Float32Array.from({ length: n * d }, () => rng.next() * 2 - 1);
  const teacher = (rule: (r: number) => boolean): Float32Array => {
    const p = new Float32Array(n * 2);
    for (let r = 0; r < n; r++) {
      const c = rule(r) ? 1 : 0;
      p[r * 2 + c] = 0.99;
      p[r * 2 + 1 - c] = 0.01;
    }
    return p;
  };
  const xor = teacher((r) => x[r * d]! > 0 !== x[r * d + 1]! > 0);
  const sign = teacher((r) => x[r * d]! > 0);
  const coverage = (p: Float32Array, hidden: number): number => {
    const cf = crossFit(x, p, n, d, 2, {
      kind: hidden ? 'pool-mlp' : 'pool-linear',
      hidden: hidden || undefined,
      folds: 4,
      fitFinal: false,
      epochs: 40,
    });
    return coverageAt(exitScores(cf.oof, n, 2, argmaxRows(p, n, 2)), 0.97);
  };
  const after = 0.6;
  const pick = (cov: { linear: number; mlp: number }, mlpCost: number): string => {
    const linear = { label: 'linear', utility: headUtility(cov.linear, after, 0.001) };
    const mlp = { label: 'mlp', utility: headUtility(cov.mlp, after, mlpCost) };
    return chooseCapacity(linear, [mlp]).label;
  };

  it('keeps the larger head only while its extra out-of-fold coverage saves more than its extra cost', () => {
    const cov = { linear: coverage(xor, 0), mlp: coverage(xor, 32) };
    expect(cov.mlp).toBeGreaterThan(cov.linear + 0.3);
    const breakEven = 0.001 + (cov.mlp - cov.linear) * after;
    expect(pick(cov, 0.01)).toBe('mlp');
    expect(pick(cov, breakEven - 0.01)).toBe('mlp');
    expect(pick(cov, breakEven + 0.01)).toBe('linear');
  });
  it('keeps the cheaper head where the larger one covers no more', () => {
    const cov = { linear: coverage(sign, 0), mlp: coverage(sign, 32) };
    expect(pick(cov, 0.01)).toBe('linear');
  });
});

describe('screening on one fold', () => {
  it("trains only that fold's head: its held-out rows get probabilities, the others none", () => {
    const n = 300;
    const rng = createRng(9);
    const x = Float32Array.from({ length: n * 3 }, () => rng.next());
    const p = new Float32Array(n * 2).map((_, i) => (i % 2 ? 0.3 : 0.7));
    const fits: number[] = [];
    const cf = crossFit(x, p, n, 3, 2, { folds: 5, fitFinal: false, onlyFolds: [0], onFit: (f) => fits.push(f.fold) });
    expect(fits).toEqual([0]);
    for (let r = 0; r < n; r++) {
      const sum = cf.oof[r * 2]! + cf.oof[r * 2 + 1]!;
      expect(sum).toBeCloseTo(cf.foldOf[r] === 0 ? 1 : 0, 5);
    }
  });
});

describe("prepare with capacity 'fixed'", () => {
  // Digests of the segments (backbone pieces with fused heads) written by prepare before per-exit capacity existed
  // (commit df28a49), on the same tiny classifier and images.
  const before: [Partial<Parameters<typeof prepare>[0]>, string][] = [
    [{}, '87ed04467c9109241500b2b0b7df5c177eabba5b8d93b17c6c81b8110806f81a'],
    [{ headKinds: ['pool-mlp'], hidden: 8 }, '0f1ea76a023717386aeb2bd6307a7d3c26b1853d4ec50fae6d8db6cef962e93d'],
  ];
  it('reproduces the heads of today, byte for byte', { timeout: 120_000 }, async () => {
    const model = encodeModel(tinyClassifier());
    const n = 400;
    const data = blobImages(n, 8, 8, 3);
    for (const [extra, digest] of before) {
      const res = await prepare({
        model,
        samples: { data, count: n },
        ort: ortNode,
        target: 0.9,
        capacity: 'fixed',
        ...extra,
      });
      const h: string[] = [];
      for (const s of res.manifest.segments) h.push(await sha256Hex(res.files.get(s.file)!));
      expect(await sha256Hex(new TextEncoder().encode(h.join(',')))).toBe(digest);
      for (const c of res.report.candidates) expect(c.capacity).toBe(c.kind);
    }
  });
});

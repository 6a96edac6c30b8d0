// Head ensembles (prepare's `ensemble: M`): the deployed head (one wider MLP, or one linear head) reproduces the mean
// of its members' logits through the real ONNX head graph; cross-fitting scores each row with its fold's ensemble, the
// same average; M = 1 is today's fit byte for byte; bad values are INVALID_ARGUMENT.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { averageLogitHeads, MEMBER_SEED_STEP, trainEnsembleHead } from '../src/calibrate/ensemble.js';
import { crossFit, type FitInfo } from '../src/calibrate/crossfit.js';
import { extractFeatures } from '../src/calibrate/features.js';
import { prepare } from '../src/calibrate/prepare.js';
import { resolvePrepareOptions } from '../src/calibrate/prepare-options.js';
import { createRng } from '../src/calibrate/rng.js';
import { predictHead, toHeadSpec, trainHead, type TrainedHead } from '../src/calibrate/train-head.js';
import { inputDims, toModelInput, type SampleBatch } from '../src/bundle/input.js';
import { isSelfxitError } from '../src/errors.js';
import { analyzeModel, buildHeadModel, encodeModel, sha256Hex, withExtraOutputs } from '../src/graph/index.js';
import { residualGraph } from './fixtures/graphs.js';
import { ortNode, run } from './fixtures/ort-helpers.js';
import { TINY_INPUT, blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

/** softmax(mean of the members' logits), row by row: log-probabilities differ from logits by a per-row constant. */
function meanLogitProbs(members: readonly TrainedHead[], x: Float32Array, n: number, k: number): Float32Array {
  const acc = new Float64Array(n * k);
  for (const m of members) {
    const p = predictHead(m, x, n);
    for (let i = 0; i < n * k; i++) acc[i]! += Math.log(p[i]!) / members.length;
  }
  const out = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, acc[r * k + j]!);
    let s = 0;
    for (let j = 0; j < k; j++) s += Math.exp(acc[r * k + j]! - max);
    for (let j = 0; j < k; j++) out[r * k + j] = Math.exp(acc[r * k + j]! - max) / s;
  }
  return out;
}

describe('the deployed ensemble head', () => {
  const N = 13;
  const input = TINY_INPUT;

  it('reproduces the mean of its members’ logits through the ONNX head graph (pool-mlp and pool-linear)', async () => {
    const f = residualGraph();
    const a = await analyzeModel(f.model, { ort: ortNode });
    const cut = a.cuts.find((c) => c.tensor === 'r1')!;
    const rng = createRng(5);
    const samples: SampleBatch = {
      data: Uint8Array.from({ length: N * 8 * 8 * 3 }, () => Math.floor(rng.next() * 256)),
      count: N,
    };
    const fs = await extractFeatures({
      model: f.model,
      requests: [{ cut, grid: [2, 2], maxGrid: [2, 2] }],
      samples,
      input,
      output: 'logits',
      outputKind: 'logits',
      classes: 5,
      ort: ortNode,
    });
    const c = fs.cuts[0]!;
    const x = c.x;
    const map = (
      await run(
        withExtraOutputs(f.model, ['r1']),
        new ort.Tensor('float32', toModelInput(samples, 0, N, input), inputDims(input, N)),
      )
    )['r1']!;
    for (const [kind, hidden] of [
      ['pool-mlp', 6],
      ['pool-linear', 0],
    ] as const) {
      const opts = { kind, hidden: hidden || undefined, epochs: 3 };
      const members = [0, 1, 2].map((m) =>
        trainHead(x, fs.teacher, N, c.dim, 5, { ...opts, seed: MEMBER_SEED_STEP * m }),
      );
      const head = averageLogitHeads(members);
      // the same head as trainEnsembleHead builds, and as wide as the members together
      expect(trainEnsembleHead(x, fs.teacher, N, c.dim, 5, 3, opts)).toEqual(head);
      expect(head.layers.map((l) => l.out)).toEqual(kind === 'pool-mlp' ? [18, 5] : [5]);
      const spec = toHeadSpec(head, { kind, inChannels: 8, inHeight: 8, inWidth: 8, grid: c.grid, maxGrid: [2, 2] });
      const onnx = Object.values(await run(buildHeadModel(spec), map))[0]!.data as Float32Array;
      const want = meanLogitProbs(members, x, N, 5);
      expect(maxDiff(onnx, want)).toBeLessThan(1e-4);
      // …and differs from any one member (the members are not one head)
      expect(maxDiff(want, predictHead(members[0]!, x, N))).toBeGreaterThan(1e-3);
    }
  });

  it('refuses members that do not stack', () => {
    const lin: TrainedHead = {
      layers: [{ in: 2, out: 2, weight: new Float32Array(4), bias: new Float32Array(2) }],
      logitScale: 1,
    };
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        return isSelfxitError(e) ? e.code : 'untyped';
      }
      return 'none';
    };
    expect(code(() => averageLogitHeads([]))).toBe('INVALID_ARGUMENT');
    expect(code(() => averageLogitHeads([lin, { ...lin, logitScale: 2 }]))).toBe('INVALID_ARGUMENT');
    const wider = { in: 3, out: 2, weight: new Float32Array(6), bias: new Float32Array(2) };
    expect(code(() => averageLogitHeads([lin, { layers: [wider], logitScale: 1 }]))).toBe('INVALID_ARGUMENT');
    expect(averageLogitHeads([lin])).toBe(lin);
  });
});

describe('cross-fitting with an ensemble per fold', () => {
  const n = 240;
  const d = 5;
  const k = 3;
  const rng = createRng(7);
  const x = Float32Array.from({ length: n * d }, () => rng.next() * 2 - 1);
  const p = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    const z = [x[r * d]! * 3, x[r * d + 1]! * 3 - x[r * d + 2]!, x[r * d]! * x[r * d + 3]! * 4];
    const e = z.map(Math.exp);
    const s = e.reduce((a, b) => a + b, 0);
    for (let j = 0; j < k; j++) p[r * k + j] = e[j]! / s;
  }
  const opts = { kind: 'pool-mlp', hidden: 8, folds: 4, epochs: 5 } as const;

  it('scores each held-out row with its fold ensemble’s mean logits, the head the fold reports', () => {
    const fits: FitInfo[] = [];
    const cf = crossFit(x, p, n, d, k, { ...opts, members: 3, onFit: (f) => fits.push(f) });
    expect(fits.map((f) => f.fold)).toEqual([0, 1, 2, 3, -1]);
    for (const f of fits) {
      expect(f.result.layers[0]!.out).toBe(24);
      if (f.fold < 0) continue;
      const rows = f.predictIndices;
      const xs = new Float32Array(rows.length * d);
      rows.forEach((r, i) => xs.set(x.subarray(r * d, r * d + d), i * d));
      const got = Float32Array.from(
        { length: rows.length * k },
        (_, i) => cf.oof[rows[Math.floor(i / k)]! * k + (i % k)]!,
      );
      expect(maxDiff(got, predictHead(f.result, xs, rows.length))).toBeLessThan(1e-4);
    }
    // the final head is the three seeds' final heads averaged
    const members = [0, 1, 2].map((m) => trainHead(x, p, n, d, k, { ...opts, seed: MEMBER_SEED_STEP * m }));
    expect(cf.head).toEqual({ ...averageLogitHeads(members) });
    // an ensemble of 3 is not its first member
    const single = crossFit(x, p, n, d, k, opts);
    expect(maxDiff(single.oof, cf.oof)).toBeGreaterThan(1e-3);
  });

  it('with one member is the single head’s fit, bit for bit', () => {
    const a = crossFit(x, p, n, d, k, opts);
    const b = crossFit(x, p, n, d, k, { ...opts, members: 1 });
    expect(b.oof).toEqual(a.oof);
    expect(b.head).toEqual(a.head);
  });
});

describe('prepare with ensemble', () => {
  const model = encodeModel(tinyClassifier());
  const count = 400;
  const data = blobImages(count, 8, 8, 3);
  const base = { model, samples: { data, count }, ort: ortNode, target: 0.9 } as const;
  const digest = async (res: Awaited<ReturnType<typeof prepare>>): Promise<string> => {
    const h = [
      JSON.stringify({ ...res.manifest, createdAt: '', calibration: { ...res.manifest.calibration, timings: {} } }),
    ];
    for (const [name, bytes] of [...res.files].sort(([a], [b]) => a.localeCompare(b)))
      h.push(`${name}:${await sha256Hex(bytes)}`);
    return h.join('\n');
  };

  it('1 is today’s bundle byte for byte; M deploys M-times-wider pool-mlp heads', { timeout: 180_000 }, async () => {
    const headKinds = ['pool-mlp'] as const;
    const today = await prepare({ ...base, headKinds, hidden: 8, createdAt: 'x' });
    const one = await prepare({ ...base, headKinds, hidden: 8, ensemble: 1, createdAt: 'x' });
    expect(await digest(one)).toBe(await digest(today));
    const three = await prepare({ ...base, headKinds, hidden: 8, ensemble: 3, createdAt: 'x' });
    expect(await digest(three)).not.toBe(await digest(today));
    // An exit at the same cut: params h·(d + 1 + k) + k with h = 24 instead of 8, so params − k triples (k = 4).
    const shared = three.manifest.exits.filter((e) => today.manifest.exits.some((t) => t.name === e.name));
    expect(shared.length).toBeGreaterThan(0);
    for (const e of shared) {
      const t = today.manifest.exits.find((x) => x.name === e.name)!;
      expect(e.headParams - 4).toBe(3 * (t.headParams - 4));
      expect(e.headMacs).toBeGreaterThan(t.headMacs);
    }
  });

  it('refuses counts that are not integers >= 1, and paper mode', () => {
    for (const bad of [0, 1.5, -2, Number.NaN]) {
      try {
        resolvePrepareOptions({ ensemble: bad });
        expect.unreachable(`ensemble ${bad} accepted`);
      } catch (e) {
        expect(isSelfxitError(e) && e.code).toBe('INVALID_ARGUMENT');
      }
    }
    expect(() => resolvePrepareOptions({ mode: 'paper', ensemble: 2 })).toThrow(/ensemble \(--ensemble\)/);
    expect(resolvePrepareOptions({}).ensemble).toBe(1);
  });
});

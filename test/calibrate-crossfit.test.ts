import { describe, expect, it } from 'vitest';
import { crossFit, type FitInfo } from '../src/calibrate/crossfit.js';
import { predictHead } from '../src/calibrate/train-head.js';
import { argmaxAgreement } from '../src/calibrate/linalg.js';
import { kFoldAssign } from '../src/calibrate/rng.js';
import { argmaxRows, exitScores, simulateCascade } from '../src/policy/cascade-sim.js';
import { chooseThresholds } from '../src/policy/thresholds.js';
import { teacherData } from './calibrate-fixtures.js';

const [n, d, k] = [1500, 16, 5];
const data = teacherData(n, d, k, 7);

describe('crossFit', () => {
  const fits: FitInfo[] = [];
  const res = crossFit(data.x, data.p, n, d, k, { folds: 4, seed: 3, onFit: (f) => fits.push(f) });

  it('predicts every sample exactly once, from a head that never saw it', () => {
    const folds = fits.filter((f) => f.fold >= 0);
    expect(folds.length).toBe(4);
    const predictedBy = new Int32Array(n).fill(-1);
    for (const f of folds) {
      const trained = new Uint8Array(n);
      for (const i of f.trainIndices) trained[i] = 1;
      for (const i of f.predictIndices) {
        expect(trained[i]).toBe(0);
        expect(predictedBy[i]).toBe(-1);
        predictedBy[i] = f.fold;
        expect(res.foldOf[i]).toBe(f.fold);
      }
      expect(f.trainIndices.length + f.predictIndices.length).toBe(n);
    }
    expect(predictedBy.every((f) => f >= 0)).toBe(true);
  });

  it('oof rows are exactly the fold heads applied to their own fold', () => {
    for (const f of fits.filter((ff) => ff.fold >= 0)) {
      const rows = f.predictIndices.slice(0, 20);
      const xs = new Float32Array(rows.length * d);
      rows.forEach((i, r) => xs.set(data.x.subarray(i * d, i * d + d), r * d));
      const q = predictHead(f.result, xs, rows.length);
      rows.forEach((i, r) => {
        for (let j = 0; j < k; j++) expect(res.oof[i * k + j]).toBeCloseTo(q[r * k + j]!, 6);
      });
    }
  });

  it('fits a final head on all samples, and oof agreement is high but honest', () => {
    const final = fits.find((f) => f.fold === -1)!;
    expect(final.trainIndices.length).toBe(n);
    expect(res.head).toBeDefined();
    const inSample = argmaxAgreement(data.p, predictHead(res.head!, data.x, n), n, k);
    const oof = argmaxAgreement(data.p, res.oof, n, k);
    expect(oof).toBeGreaterThan(0.85);
    expect(inSample).toBeGreaterThanOrEqual(oof - 0.01);
  });

  it('honours a shared foldOf and fitFinal = false', () => {
    const foldOf = kFoldAssign(n, 3, 11);
    const r = crossFit(data.x, data.p, n, d, k, { foldOf, fitFinal: false, epochs: 1 });
    expect(r.head).toBeUndefined();
    expect(Array.from(r.foldOf)).toEqual(Array.from(foldOf));
    expect(() => crossFit(data.x, data.p, n, d, k, { foldOf: foldOf.subarray(1) })).toThrow(/foldOf/);
  });
});

describe('crossFit: the out-of-fold outputs describe the deployed (final) head', () => {
  // Wide features, few samples and a teacher that is partly unpredictable (30 % of rows carry another sample's
  // teacher): a fold head stopped early by its held-out fold would stay far less confident than the final head, which
  // has no held-out rows and trains to the end; thresholds chosen on its outputs would then let the final head exit
  // about twice as often, disagreeing far more than validation said (with earlyStopping 0.001: share 0.57 on fresh
  // inputs against 0.28 out of fold, agreement 0.79 against 0.90; without: 0.34 against 0.32, 0.89 against 0.90).
  const [n2, d2, k2, m] = [600, 200, 5, 4000];
  const noisy = (count: number, seed: number): { x: Float32Array; p: Float32Array } => {
    const t = teacherData(count, d2, k2, seed, 12345, 4);
    const other = teacherData(count, d2, k2, seed + 1000, 12345, 4).p;
    for (let r = 0; r < count; r++) if ((r * 7919) % 100 < 30) t.p.set(other.subarray(r * k2, (r + 1) * k2), r * k2);
    return t;
  };
  const train = noisy(n2, 7);
  const fresh = noisy(m, 99);
  const costs = { backboneCostAt: [50], headCost: [1], fullCost: 100 };

  it('fold heads train with the final head recipe (no held-out early stopping by default)', () => {
    const fits: FitInfo[] = [];
    crossFit(train.x, train.p, n2, d2, k2, { folds: 5, seed: 1, fitFinal: false, onFit: (f) => fits.push(f) });
    for (const f of fits) expect(f.result.report.bestEpoch).toBe(f.result.report.epochs);
    const stopped: FitInfo[] = [];
    crossFit(train.x, train.p, n2, d2, k2, {
      folds: 5,
      seed: 1,
      fitFinal: false,
      earlyStopping: 0.001,
      onFit: (f) => stopped.push(f),
    });
    expect(stopped.some((f) => f.result.report.epochs < fits[0]!.result.report.epochs)).toBe(true);
  });

  it('a threshold chosen out of fold holds for the final head on fresh inputs', () => {
    const r = crossFit(train.x, train.p, n2, d2, k2, { folds: 5, seed: 1 });
    const oof = exitScores(r.oof, n2, k2, argmaxRows(train.p, n2, k2));
    const choice = chooseThresholds([oof], [0], costs, { target: 0.9, confidence: 0 });
    expect(choice.exitShares[0]).toBeGreaterThan(0.2);
    const deployed = exitScores(predictHead(r.head!, fresh.x, m), m, k2, argmaxRows(fresh.p, m, k2));
    const o = simulateCascade([deployed], [0], choice.thresholds, costs);
    expect(Math.abs(o.exitShares[0]! - choice.exitShares[0]!)).toBeLessThan(0.08);
    expect(o.agreement).toBeGreaterThan(0.9 - 0.04);
  });
});

import { describe, expect, it } from 'vitest';
import { crossFit, type FitInfo } from '../src/calibrate/crossfit.js';
import { predictHead } from '../src/calibrate/train-head.js';
import { argmaxAgreement } from '../src/calibrate/linalg.js';
import { kFoldAssign } from '../src/calibrate/rng.js';
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

import { describe, expect, it } from 'vitest';
import { halfToFloatTable, packFeatures, rowReader, standardisation, toHalf } from '../src/calibrate/feature-store.js';
import { crossFit } from '../src/calibrate/crossfit.js';
import { meanKL } from '../src/calibrate/linalg.js';
import { createRng } from '../src/calibrate/rng.js';
import { teacherData } from './calibrate-fixtures.js';

describe('packed features', () => {
  it('float16 round trip: exact on halves, relative error <= 2^-11 elsewhere', () => {
    const t = halfToFloatTable();
    for (const v of [0, 1, -2.5, 0.000061035156, 65504, 1 / 3, 1e-7, -0])
      expect(Math.abs(t[toHalf(v)]! - v)).toBeLessThanOrEqual(Math.max(Math.abs(v) * 2 ** -11, 2 ** -25));
    expect(t[toHalf(1e6)]).toBe(Infinity);
    const rng = createRng(1);
    for (let i = 0; i < 1000; i++) {
      const v = rng.normal() * 10 ** Math.floor(rng.next() * 6 - 3);
      expect(Math.abs(t[toHalf(v)]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 2 ** -25);
    }
  });
  it('rows read back standardised, f16 and u8 within their steps', () => {
    const [n, d] = [50, 7];
    const rng = createRng(2);
    const x = Float32Array.from({ length: n * d }, () => Math.max(0, 3 * rng.normal()));
    const mean = Float32Array.from({ length: d }, () => rng.normal());
    const inv = Float32Array.from({ length: d }, () => 0.5 + rng.next());
    const want = new Float32Array(d);
    const got = new Float32Array(d);
    const u8 = packFeatures(x, n, d, 'u8');
    for (const packed of [x, packFeatures(x, n, d, 'f16'), u8]) {
      const read = rowReader(packed, d, mean, inv);
      const exact = rowReader(x, d, mean, inv);
      for (let r = 0; r < n; r++) {
        read(r, got, 0);
        exact(r, want, 0);
        for (let i = 0; i < d; i++) {
          const step = packed === u8 ? u8.scale![i]! / 2 : Math.abs(x[r * d + i]!) * 2 ** -11;
          expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(step * inv[i]! + 1e-5);
        }
      }
    }
  });
  it('standardisation over all rows is computed once per matrix, again when the matrix changed', () => {
    const x = Float32Array.from({ length: 40 * 3 }, (_, i) => (i * 7) % 11);
    const all = Int32Array.from({ length: 40 }, (_, i) => i);
    const a = standardisation(x, all, 3);
    expect(standardisation(x, all, 3)).toBe(a);
    const half = standardisation(x, all.subarray(0, 20), 3);
    expect(half).not.toBe(a);
    x.fill(2);
    const b = standardisation(x, all, 3);
    expect(b).not.toBe(a);
    expect(Array.from(b.mean)).toEqual([2, 2, 2]);
    expect(Array.from(b.invStd)).toEqual([1, 1, 1]);
  });
  it('training on packed features reaches the float32 out-of-fold KL', () => {
    const [n, d, k] = [2000, 24, 6];
    const data = teacherData(n, d, k, 1);
    const opts = { kind: 'pool-linear' as const, folds: 4, seed: 3, fitFinal: false };
    const ref = meanKL(data.p, crossFit(data.x, data.p, n, d, k, opts).oof, n, k);
    const f16 = meanKL(data.p, crossFit(packFeatures(data.x, n, d, 'f16'), data.p, n, d, k, opts).oof, n, k);
    const u8 = meanKL(data.p, crossFit(packFeatures(data.x, n, d, 'u8'), data.p, n, d, k, opts).oof, n, k);
    expect(f16).toBeCloseTo(ref, 3);
    expect(u8).toBeLessThan(ref * 1.05);
  });
});

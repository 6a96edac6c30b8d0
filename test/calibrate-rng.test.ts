import { describe, expect, it } from 'vitest';
import { createRng, foldIndices, kFoldAssign, permutation } from '../src/calibrate/rng.js';

describe('rng', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = createRng(7);
    const b = createRng(7);
    const c = createRng(8);
    const sa = Array.from({ length: 20 }, () => a.next());
    expect(Array.from({ length: 20 }, () => b.next())).toEqual(sa);
    expect(Array.from({ length: 20 }, () => c.next())).not.toEqual(sa);
    expect(sa.every((v) => v >= 0 && v < 1)).toBe(true);
  });
  it('draws roughly standard normals', () => {
    const r = createRng(1);
    const xs = Array.from({ length: 20000 }, () => r.normal());
    const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
    const variance = xs.reduce((s, v) => s + (v - mean) ** 2, 0) / xs.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
  });
  it('permutation is a permutation', () => {
    const p = permutation(1000, createRng(2));
    expect([...p].sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });
  it('k-fold split is balanced, seeded and partitions the samples', () => {
    const f = kFoldAssign(103, 5, 9);
    expect(Array.from(kFoldAssign(103, 5, 9))).toEqual(Array.from(f));
    const sizes = [0, 1, 2, 3, 4].map((k) => foldIndices(f, k, true).length);
    expect(sizes.reduce((s, v) => s + v, 0)).toBe(103);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    expect(foldIndices(f, 2, false).length).toBe(103 - sizes[2]!);
    expect(() => kFoldAssign(3, 5, 0)).toThrow(/folds/);
  });
});

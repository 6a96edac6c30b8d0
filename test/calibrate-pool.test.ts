import { describe, expect, it } from 'vitest';
import {
  checkPoolGrids,
  chooseGrid,
  headFeatureDim,
  headFeaturesInto,
  maxPoolNCHW,
  maxPoolNCHWInto,
  poolNCHW,
  poolNCHWInto,
} from '../src/calibrate/pool.js';
import { createRng } from '../src/calibrate/rng.js';
import { isSelfxitError } from '../src/errors.js';

function naivePool(
  map: Float32Array,
  n: number,
  c: number,
  h: number,
  w: number,
  gh: number,
  gw: number,
): Float32Array {
  const out = new Float32Array(n * c * gh * gw);
  const bh = h / gh;
  const bw = w / gw;
  for (let s = 0; s < n; s++)
    for (let ch = 0; ch < c; ch++)
      for (let i = 0; i < gh; i++)
        for (let j = 0; j < gw; j++) {
          let sum = 0;
          for (let y = 0; y < bh; y++)
            for (let x = 0; x < bw; x++) sum += map[((s * c + ch) * h + i * bh + y) * w + j * bw + x]!;
          out[s * c * gh * gw + ch * gh * gw + i * gw + j] = sum / (bh * bw);
        }
  return out;
}

function naiveMaxPool(
  map: Float32Array,
  n: number,
  c: number,
  h: number,
  w: number,
  gh: number,
  gw: number,
): Float32Array {
  const out = new Float32Array(n * c * gh * gw);
  const bh = h / gh;
  const bw = w / gw;
  for (let s = 0; s < n; s++)
    for (let ch = 0; ch < c; ch++)
      for (let i = 0; i < gh; i++)
        for (let j = 0; j < gw; j++) {
          let m = -Infinity;
          for (let y = 0; y < bh; y++)
            for (let x = 0; x < bw; x++) m = Math.max(m, map[((s * c + ch) * h + i * bh + y) * w + j * bw + x]!);
          out[s * c * gh * gw + ch * gh * gw + i * gw + j] = m;
        }
  return out;
}

describe('poolNCHW', () => {
  const rng = createRng(3);
  const [n, c, h, w] = [3, 5, 8, 12];
  const map = Float32Array.from({ length: n * c * h * w }, () => rng.normal());
  for (const grid of [
    [1, 1],
    [2, 3],
    [4, 4],
    [8, 12],
    [2, 12],
  ] as [number, number][]) {
    it(`matches a naive reference for grid ${grid.join('x')}`, () => {
      const got = poolNCHW(map, n, c, h, w, grid);
      const want = naivePool(map, n, c, h, w, grid[0], grid[1]);
      expect(got.length).toBe(want.length);
      for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 5);
    });
  }
  it('accumulating variant fills rows at an offset, batch by batch', () => {
    const d = c * 2 * 3;
    const out = new Float32Array((n + 2) * d).fill(-7);
    poolNCHWInto(map.subarray(0, 2 * c * h * w), 2, c, h, w, [2, 3], out, 1);
    poolNCHWInto(map.subarray(2 * c * h * w), 1, c, h, w, [2, 3], out, 3);
    const want = poolNCHW(map, n, c, h, w, [2, 3]);
    expect(Array.from(out.subarray(0, d)).every((v) => v === -7)).toBe(true);
    expect(Array.from(out.subarray(d, 4 * d))).toEqual(Array.from(want));
    expect(out[4 * d]).toBe(-7);
  });
  it('rejects grids that do not divide the map', () => {
    try {
      poolNCHW(map, n, c, h, w, [3, 3]);
      expect.unreachable();
    } catch (e) {
      expect(isSelfxitError(e, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});

describe('maxPoolNCHW', () => {
  const rng = createRng(4);
  const [n, c, h, w] = [3, 5, 8, 12];
  const map = Float32Array.from({ length: n * c * h * w }, () => rng.normal() - 2);
  for (const grid of [
    [1, 1],
    [2, 3],
    [4, 4],
    [8, 12],
    [2, 12],
    [8, 1],
  ] as [number, number][]) {
    it(`equals a naive reference for grid ${grid.join('x')}`, () => {
      const got = maxPoolNCHW(map, n, c, h, w, grid);
      expect(Array.from(got)).toEqual(Array.from(naiveMaxPool(map, n, c, h, w, grid[0], grid[1])));
    });
  }
  it('full-size grid is the raw map; [1, 1] is the per-channel max', () => {
    expect(Array.from(maxPoolNCHW(map, n, c, h, w, [h, w]))).toEqual(Array.from(map));
    const g = maxPoolNCHW(map, n, c, h, w, [1, 1]);
    for (let s = 0; s < n; s++)
      for (let ch = 0; ch < c; ch++) {
        const plane = map.subarray((s * c + ch) * h * w, (s * c + ch + 1) * h * w);
        expect(g[s * c + ch]).toBe(Math.max(...plane));
      }
  });
  it('rejects grids that do not divide the map', () => {
    try {
      maxPoolNCHW(map, n, c, h, w, [3, 5]);
      expect.unreachable();
    } catch (e) {
      expect(isSelfxitError(e, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});

describe('strided pooling into a shared [n, dAvg + dMax] matrix', () => {
  const rng = createRng(5);
  const [n, c, h, w] = [4, 3, 6, 4];
  const map = Float32Array.from({ length: n * c * h * w }, () => rng.normal());
  const per = c * h * w;
  const cases: { grid: [number, number]; maxGrid: [number, number] }[] = [
    { grid: [2, 2], maxGrid: [2, 2] },
    { grid: [1, 1], maxGrid: [6, 4] },
    { grid: [6, 4], maxGrid: [1, 1] },
    { grid: [3, 1], maxGrid: [2, 4] },
  ];
  for (const { grid, maxGrid } of cases) {
    it(`avg ${grid.join('x')} + max ${maxGrid.join('x')}: headFeaturesInto fills rows batch by batch, avg then max`, () => {
      const dA = c * grid[0] * grid[1];
      const dM = c * maxGrid[0] * maxGrid[1];
      const dim = headFeatureDim(c, grid, maxGrid);
      expect(dim).toBe(dA + dM);
      expect(headFeatureDim(c, grid)).toBe(dA);
      const out = new Float32Array((n + 2) * dim).fill(-7);
      headFeaturesInto(map.subarray(0, 3 * per), 3, c, h, w, grid, maxGrid, out, 1);
      headFeaturesInto(map.subarray(3 * per), 1, c, h, w, grid, maxGrid, out, 4);
      const avg = naivePool(map, n, c, h, w, grid[0], grid[1]);
      const max = naiveMaxPool(map, n, c, h, w, maxGrid[0], maxGrid[1]);
      expect(Array.from(out.subarray(0, dim)).every((v) => v === -7)).toBe(true);
      expect(Array.from(out.subarray(5 * dim)).every((v) => v === -7)).toBe(true);
      for (let r = 0; r < n; r++) {
        const row = out.subarray((r + 1) * dim, (r + 2) * dim);
        for (let f = 0; f < dA; f++) expect(row[f]).toBeCloseTo(avg[r * dA + f]!, 5);
        expect(Array.from(row.subarray(dA))).toEqual(Array.from(max.subarray(r * dM, (r + 1) * dM)));
      }
    });
  }
  it('without maxGrid, headFeaturesInto is poolNCHWInto', () => {
    const a = new Float32Array(n * c * 4);
    const b = new Float32Array(n * c * 4);
    headFeaturesInto(map, n, c, h, w, [2, 2], undefined, a, 0);
    poolNCHWInto(map, n, c, h, w, [2, 2], b, 0);
    expect(Array.from(a)).toEqual(Array.from(b));
  });
  it('row stride and column offset leave the other columns alone; bad layouts are rejected', () => {
    const stride = 2 + c * 4 + 1;
    const out = new Float32Array(n * stride).fill(9);
    maxPoolNCHWInto(map, n, c, h, w, [2, 2], out, 0, stride, 2);
    const want = naiveMaxPool(map, n, c, h, w, 2, 2);
    for (let r = 0; r < n; r++) {
      expect([out[r * stride], out[r * stride + 1], out[(r + 1) * stride - 1]]).toEqual([9, 9, 9]);
      expect(Array.from(out.subarray(r * stride + 2, r * stride + 2 + c * 4))).toEqual(
        Array.from(want.subarray(r * c * 4, (r + 1) * c * 4)),
      );
    }
    const bad: (() => void)[] = [
      () => poolNCHWInto(map, n, c, h, w, [2, 2], out, 0, stride, stride - c * 4 + 1), // columns overflow the row
      () => maxPoolNCHWInto(map, n, c, h, w, [2, 2], out, 1, stride, 2), // rows overflow the matrix
      () => maxPoolNCHWInto(map, n, c, h, w, [2, 2], out, 0, c * 4 - 1), // stride narrower than the features
      () => headFeaturesInto(map, n, c, h, w, [2, 2], [4, 4], new Float32Array(n * 100), 0), // max grid does not divide
    ];
    for (const f of bad) expect(f).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => checkPoolGrids(h, w, [2, 2], [5, 4])).toThrow(/max-pooling grid 5x4 must divide the map 6x4/);
    expect(() => checkPoolGrids(h, w, [2, 2], [3, 2])).not.toThrow();
  });
});

describe('chooseGrid', () => {
  it('picks the largest square-ish divisor grid under the feature budget', () => {
    expect(chooseGrid(16, 32, 32)).toEqual([4, 4]);
    expect(chooseGrid(32, 16, 16)).toEqual([4, 2]);
    expect(chooseGrid(64, 8, 8)).toEqual([2, 2]);
    expect(chooseGrid(16, 32, 32, 1024)).toEqual([8, 8]);
    expect(chooseGrid(3, 7, 7, 256)).toEqual([7, 7]);
    expect(chooseGrid(10, 6, 9, 60)).toEqual([2, 3]);
  });
  it('falls back to global pooling when channels exceed the budget', () => {
    expect(chooseGrid(512, 4, 4)).toEqual([1, 1]);
  });
});

import { describe, expect, it } from 'vitest';
import { chooseGrid, poolNCHW, poolNCHWInto } from '../src/calibrate/pool.js';
import { createRng } from '../src/calibrate/rng.js';
import { isSelfxitError } from '../src/errors.js';

function naivePool(map: Float32Array, n: number, c: number, h: number, w: number, gh: number, gw: number): Float32Array {
  const out = new Float32Array(n * c * gh * gw);
  const bh = h / gh;
  const bw = w / gw;
  for (let s = 0; s < n; s++)
    for (let ch = 0; ch < c; ch++)
      for (let i = 0; i < gh; i++)
        for (let j = 0; j < gw; j++) {
          let sum = 0;
          for (let y = 0; y < bh; y++) for (let x = 0; x < bw; x++) sum += map[((s * c + ch) * h + i * bh + y) * w + j * bw + x]!;
          out[s * c * gh * gw + ch * gh * gw + i * gw + j] = sum / (bh * bw);
        }
  return out;
}

describe('poolNCHW', () => {
  const rng = createRng(3);
  const [n, c, h, w] = [3, 5, 8, 12];
  const map = Float32Array.from({ length: n * c * h * w }, () => rng.normal());
  for (const grid of [[1, 1], [2, 3], [4, 4], [8, 12], [2, 12]] as [number, number][]) {
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

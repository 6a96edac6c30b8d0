import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { augmentedRows, augmentSamples, checkAugment } from '../src/calibrate/augment.js';
import { createRng, kFoldAssign } from '../src/calibrate/rng.js';
import { isSelfxitError } from '../src/errors.js';

const shape = { height: 4, width: 5, channels: 3 };
const per = 4 * 5 * 3;
const batch = { data: Uint8Array.from({ length: 2 * per }, (_, i) => (i * 7) % 256), count: 2 };
const px = (d: Uint8Array, img: number, y: number, x: number, c: number): number => d[img * per + (y * 5 + x) * 3 + c]!;

describe('augmentSamples', () => {
  it('keeps the originals first, then one mirrored copy per image', () => {
    const out = augmentSamples(batch, shape, ['flip'], 0);
    expect(out.count).toBe(4);
    expect(out.data.subarray(0, 2 * per)).toEqual(batch.data);
    for (let i = 0; i < 2; i++)
      for (let y = 0; y < 4; y++)
        for (let x = 0; x < 5; x++)
          for (let c = 0; c < 3; c++) {
            expect(px(out.data, 2 + i, y, x, c)).toBe(px(batch.data, i, y, 4 - x, c));
          }
  });

  it('shifts by at most 2 pixels with repeated edges, the same for the same seed', () => {
    const a = augmentSamples(batch, shape, ['shift'], 3);
    expect(augmentSamples(batch, shape, ['shift'], 3).data).toEqual(a.data);
    for (let i = 0; i < 2; i++) {
      // some offset (dy, dx) in [-2, 2]^2 explains every pixel of the copy
      let found = false;
      for (let dy = -2; dy <= 2 && !found; dy++)
        for (let dx = -2; dx <= 2 && !found; dx++) {
          let ok = true;
          for (let y = 0; y < 4 && ok; y++)
            for (let x = 0; x < 5 && ok; x++)
              for (let c = 0; c < 3; c++) {
                const sy = Math.min(3, Math.max(0, y + dy));
                const sx = Math.min(4, Math.max(0, x + dx));
                if (px(a.data, 2 + i, y, x, c) !== px(batch.data, i, sy, sx, c)) ok = false;
              }
          found = ok;
        }
      expect(found).toBe(true);
    }
  });

  it('rejects an unknown kind with INVALID_ARGUMENT and drops duplicates', () => {
    expect(checkAugment(['flip', 'flip', 'shift'])).toEqual(['flip', 'shift']);
    try {
      checkAugment(['rotate']);
      expect.unreachable();
    } catch (e) {
      expect(isSelfxitError(e, 'INVALID_ARGUMENT')).toBe(true);
      expect((e as Error).message).toContain('rotate');
    }
  });

  it('reads cutmix:K as K cutmix copies, listed last; a checked list checks to itself; 1..8 copies', () => {
    const k = checkAugment(['cutmix:3', 'flip', 'cutmix']);
    expect(k).toEqual(['flip', 'cutmix', 'cutmix', 'cutmix', 'cutmix']);
    expect(checkAugment(k)).toEqual(k);
    for (const bad of [['cutmix:0'], ['cutmix:9'], ['cutmix:5', 'cutmix:4'], ['cutmix:x']])
      expect(() => checkAugment(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('cutmix: a box of another image of the same fold, 25-77 % of an 8x8 image, the rest the image; seeded', () => {
    const n = 40;
    const sh = { height: 8, width: 8, channels: 3 };
    const per = 8 * 8 * 3;
    // image i: every byte i (so each pixel of a copy tells whose it is)
    const data = new Uint8Array(n * per).map((_, b) => Math.floor(b / per));
    const foldOf = Int32Array.from({ length: n }, (_, i) => i % 4);
    const out = augmentSamples({ data, count: n }, sh, ['flip', 'cutmix', 'cutmix'], 3, foldOf);
    expect(out.count).toBe(4 * n);
    for (let a = 2; a < 4; a++)
      for (let i = 0; i < n; i++) {
        const copy = out.data.subarray((a * n + i) * per, (a * n + i + 1) * per);
        const others = [...copy].filter((v) => v !== i);
        expect(others.length / per).toBeGreaterThanOrEqual(0.25);
        expect(others.length / per).toBeLessThanOrEqual(0.77);
        expect(new Set(others).size).toBe(1); // one partner
        expect(foldOf[others[0]!]).toBe(foldOf[i]); // of the same fold
      }
    expect(augmentSamples({ data, count: n }, sh, ['flip', 'cutmix', 'cutmix'], 3, foldOf).data).toEqual(out.data);
    expect(augmentSamples({ data, count: n }, sh, ['flip', 'cutmix', 'cutmix'], 4, foldOf).data).not.toEqual(out.data);
  });

  it('copies made a run at a time (any run sizes, re-read out of order) are the block ones, as before', () => {
    const sh = { height: 7, width: 6, channels: 3 };
    const p = 7 * 6 * 3;
    const n = 37;
    const rng = createRng(11);
    const data = Uint8Array.from({ length: n * p }, () => rng.int(256));
    const kinds = checkAugment(['flip', 'shift', 'cutmix:3']);
    const foldOf = kFoldAssign(n, 4, 5);
    const all = augmentSamples({ data, count: n }, sh, kinds, 5, foldOf);
    // sha256 of the copies the all-at-once code made before copies were streamed (commit 172cae9)
    expect(createHash('sha256').update(all.data).digest('hex')).toBe(
      '4c82f2473eb1be113e8300c281df3fcd60d6a829ab213aa0a551238eadbe3863',
    );
    const rows = augmentedRows({ data, count: n }, sh, kinds, 5, foldOf);
    expect(rows.count).toBe(6 * n);
    const got = new Uint8Array(all.data.length);
    let largest = 0;
    for (let start = 0, k = 0; start < rows.count; k++) {
      const take = Math.min(1 + ((k * 13) % 29), rows.count - start);
      largest = Math.max(largest, take);
      got.set(rows.rows(start, take), start * p);
      start += take;
    }
    expect(got).toEqual(all.data);
    // one run's images held (the largest run), not the 6 x 37 rows
    expect(largest).toBeLessThan(30);
    expect(rows.rows(0, 1).buffer.byteLength).toBe(largest * p);
    // a run before the last one read, and one further on, skipping rows
    expect(rows.rows(5 * n + 3, 4)).toEqual(all.data.subarray((5 * n + 3) * p, (5 * n + 7) * p));
    expect(rows.rows(2 * n, 9)).toEqual(all.data.subarray(2 * n * p, (2 * n + 9) * p));
    expect(rows.rows(4 * n + 1, 2)).toEqual(all.data.subarray((4 * n + 1) * p, (4 * n + 3) * p));
    expect(() => rows.rows(6 * n - 1, 2)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
  });
});

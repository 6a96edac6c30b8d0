import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { mixedCopies, readConcat } from '../bench/mix-copies.js';

// 40 flat 32×32×1 images, image i filled with the value 2i + 1, and two folds (even / odd images).
const shape = { height: 32, width: 32, channels: 1 } as const;
const per = 1024;
const n = 40;
const data = new Uint8Array(n * per);
for (let i = 0; i < n; i++) data.fill(2 * i + 1, i * per, (i + 1) * per);
const foldOf = Int32Array.from({ length: n }, (_, i) => i % 2);
const imageOf = (v: number): number => (v - 1) / 2;

describe('bench/mix-copies', () => {
  it('cutmix pastes one box of a same-fold partner, of 30–70 % of the image, into each copy', () => {
    const m = mixedCopies({ data, count: n }, shape, 'cutmix', 3, foldOf, 5);
    expect(m.count).toBe(3 * n);
    for (let r = 0; r < m.count; r++) {
      const i = r % n;
      const px = [...m.data.subarray(r * per, (r + 1) * per)];
      const other = px.filter((v) => v !== 2 * i + 1);
      expect(other.length / per).toBeGreaterThanOrEqual(0.25);
      expect(other.length / per).toBeLessThanOrEqual(0.75);
      const partners = new Set(other.map(imageOf));
      expect(partners.size).toBe(1);
      const j = [...partners][0]!;
      expect(j).not.toBe(i);
      expect(foldOf[j]).toBe(foldOf[i]);
    }
  });

  it('mixup blends the image with a same-fold partner, its own weight in [0.3, 0.7]; seeded', () => {
    const m = mixedCopies({ data, count: n }, shape, 'mixup', 2, foldOf, 5);
    for (let r = 0; r < m.count; r++) {
      const i = r % n;
      const v = m.data[r * per]!;
      expect(new Set(m.data.subarray(r * per, (r + 1) * per))).toEqual(new Set([v]));
      // v = round(λ(2i+1) + (1−λ)(2j+1)) for some same-fold j ≠ i and λ in [0.3, 0.7]
      const ok = Array.from({ length: n }, (_, j) => j).some((j) => {
        if (j === i || foldOf[j] !== foldOf[i]) return false;
        const [a, b] = [2 * i + 1, 2 * j + 1];
        const lo = Math.min(0.3 * a + 0.7 * b, 0.7 * a + 0.3 * b);
        const hi = Math.max(0.3 * a + 0.7 * b, 0.7 * a + 0.3 * b);
        return v >= Math.floor(lo) && v <= Math.ceil(hi);
      });
      expect(ok).toBe(true);
    }
    expect(mixedCopies({ data, count: n }, shape, 'mixup', 2, foldOf, 5).data).toEqual(m.data);
    expect(mixedCopies({ data, count: n }, shape, 'mixup', 2, foldOf, 6).data).not.toEqual(m.data);
  });

  it('readConcat reads float32 files one after another', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mix-'));
    fs.writeFileSync(path.join(dir, 'a'), Float32Array.from([1, 2, 3]));
    fs.writeFileSync(path.join(dir, 'b'), Float32Array.from([4.5]));
    expect([...readConcat([path.join(dir, 'a'), path.join(dir, 'b')])]).toEqual([1, 2, 3, 4.5]);
    fs.rmSync(dir, { recursive: true });
  });
});

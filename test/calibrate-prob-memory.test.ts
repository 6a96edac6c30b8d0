// prepare's memory cap counts the float32 class probabilities it holds beside the features (the teacher's of every
// row, a candidate head's out-of-fold ones of the samples), and a cross-fit with augmented copies predicts (and
// allocates) only the samples' rows.
import { describe, expect, it } from 'vitest';
import { planFeatures } from '../src/calibrate/prepare-features.js';
import { resolvePrepareOptions } from '../src/calibrate/prepare-options.js';
import { crossFit } from '../src/calibrate/crossfit.js';
import { createRng } from '../src/calibrate/rng.js';
import type { PrepareContext } from '../src/calibrate/prepare-context.js';
import type { CutPoint } from '../src/graph/index.js';

const cut = (tensor: string, c: number, s: number, fraction: number): CutPoint =>
  ({ tensor, shape: [1, c, s, s], dtype: 'float32', macs: fraction * 100, fraction }) as unknown as CutPoint;

/** planFeatures' context: `n` 32×32×3 images, `classes` classes, a cap of `cap` bytes. */
function context(n: number, classes: number, cap: number): PrepareContext {
  return {
    o: resolvePrepareOptions({ maxFeatureBytes: cap, augment: ['flip'] }),
    io: { classes, input: { height: 32, width: 32, channels: 3 } },
    samples: { count: n },
    analysis: { shapes: new Map() },
    warnings: [],
  } as unknown as PrepareContext;
}

describe('the feature memory cap', () => {
  const cuts = [cut('a', 16, 8, 0.3), cut('b', 32, 4, 0.6)];
  it('counts the teacher probabilities of every row and the out-of-fold ones of the samples', () => {
    const small = planFeatures(context(1000, 10, 2 ** 30), cuts);
    // 1,000 samples + 1,000 flipped copies, 10 classes: teacher 2,000 × 10 × 4, out-of-fold 1,000 × 10 × 4
    expect(small.probBytes).toBe(120_000);
    const many = planFeatures(context(1000, 1000, 2 ** 30), cuts);
    expect(many.probBytes).toBe(12_000_000);
    expect(many.note).toMatch(/and the 1000-class probabilities \(11 MB\)/);
    // a cap that holds the images and float32 features (5.4 MB) but not the probabilities of 1,000 classes beside
    // them: the features are reduced, where 10 classes keep them whole
    const f32 = Number(/^float32, ([\d.]+) MB/.exec(small.note)![1]);
    const cap = Math.round(small.imageBytes + (f32 + 1) * 2 ** 20);
    const ten = planFeatures(context(1000, 10, cap), cuts);
    expect([ten.storage, ten.cuts.length]).toEqual(['f32', 2]);
    const thousand = planFeatures(context(1000, 1000, cap), cuts);
    expect(thousand.storage === 'f32' && thousand.cuts.length === 2).toBe(false);
  });

  it('a cross-fit with predictRows gives out-of-fold probabilities of those rows only, as the full run gives them', () => {
    const rng = createRng(2);
    const [n, copies, d, k] = [200, 1, 6, 3];
    const rows = n * (1 + copies);
    const x = Float32Array.from({ length: rows * d }, () => rng.normal());
    const p = new Float32Array(rows * k);
    for (let r = 0; r < rows; r++) p[r * k + (r % k)] = 1;
    const fold = createRng(3);
    const foldOf = Int32Array.from({ length: n }, () => fold.int(4));
    const all = new Int32Array(rows);
    for (let a = 0; a <= copies; a++) all.set(foldOf, a * n);
    const opts = { foldOf: all, fitFinal: false, epochs: 2 };
    const full = crossFit(x, p, rows, d, k, opts);
    const part = crossFit(x, p, rows, d, k, { ...opts, predictRows: n });
    expect(full.oof.length).toBe(rows * k);
    expect(part.oof.length).toBe(n * k);
    expect(part.oof).toEqual(full.oof.subarray(0, n * k));
  });
});

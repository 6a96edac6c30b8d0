// Label-free augmentation for head training: transformed copies of the calibration images. Their targets are the
// backbone's own outputs on each copy, so no label (and no assumption that a flip keeps the class) is involved.
import { SelfxitError } from '../errors.js';
import { createRng } from './rng.js';
import type { SampleBatch, SampleShape } from './samples.js';

/**
 * - `'flip'`: mirror left-right.
 * - `'shift'`: move by a random offset of up to 2 pixels each way (edges repeated), seeded.
 */
export type AugmentKind = 'flip' | 'shift';

const AUGMENT_KINDS: readonly AugmentKind[] = ['flip', 'shift'];
const MAX_SHIFT = 2;

/** Checks a list of augmentation kinds (INVALID_ARGUMENT naming an unknown one); returns it without duplicates. */
export function checkAugment(kinds: readonly string[]): AugmentKind[] {
  for (const k of kinds) {
    if (!(AUGMENT_KINDS as readonly string[]).includes(k)) {
      throw new SelfxitError('INVALID_ARGUMENT', `unknown augmentation "${k}" (${AUGMENT_KINDS.join(', ')})`, {
        augment: k,
      });
    }
  }
  return [...new Set(kinds as readonly AugmentKind[])];
}

function transformInto(
  src: Uint8Array,
  dst: Uint8Array,
  shape: SampleShape,
  count: number,
  pick: (i: number) => { dy: number; dx: number; flip: boolean },
): void {
  const { height: h, width: w, channels: c } = shape;
  const per = h * w * c;
  for (let i = 0; i < count; i++) {
    const { dy, dx, flip } = pick(i);
    const base = i * per;
    for (let y = 0; y < h; y++) {
      const sy = Math.min(h - 1, Math.max(0, y + dy));
      for (let x = 0; x < w; x++) {
        let sx = Math.min(w - 1, Math.max(0, x + dx));
        if (flip) sx = w - 1 - sx;
        const from = base + (sy * w + sx) * c;
        const to = base + (y * w + x) * c;
        for (let k = 0; k < c; k++) dst[to + k] = src[from + k]!;
      }
    }
  }
}

/**
 * The originals followed by one transformed copy per kind, in order: row `a * count + i` is copy `a` of image `i`
 * (copy 0 = the original). Seeded, so the same seed gives the same copies.
 */
export function augmentSamples(
  batch: SampleBatch,
  shape: SampleShape,
  kinds: readonly AugmentKind[],
  seed: number,
): SampleBatch {
  const per = shape.height * shape.width * shape.channels;
  const n = batch.count;
  const out = new Uint8Array(n * per * (1 + kinds.length));
  out.set(batch.data.subarray(0, n * per), 0);
  kinds.forEach((kind, a) => {
    const dst = out.subarray((a + 1) * n * per, (a + 2) * n * per);
    if (kind === 'flip') {
      transformInto(batch.data, dst, shape, n, () => ({ dy: 0, dx: 0, flip: true }));
    } else {
      const rng = createRng(seed + 7919 * (a + 1));
      transformInto(batch.data, dst, shape, n, () => ({
        dy: rng.int(2 * MAX_SHIFT + 1) - MAX_SHIFT,
        dx: rng.int(2 * MAX_SHIFT + 1) - MAX_SHIFT,
        flip: false,
      }));
    }
  });
  return { data: out, count: n * (1 + kinds.length) };
}

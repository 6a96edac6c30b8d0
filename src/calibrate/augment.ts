// Label-free augmentation for head training: transformed copies of the calibration images. Their targets are the
// backbone's own outputs on each copy, so no label (and no assumption that a flip keeps the class) is involved.
import { SelfxitError } from '../errors.js';
import { createRng, type Rng } from './rng.js';
import type { SampleBatch, SampleShape } from './samples.js';

/**
 * - `'flip'`: mirror left-right.
 * - `'shift'`: move by a random offset of up to 2 pixels each way (edges repeated), seeded.
 * - `'cutmix'`: a box of another image of the same cross-fitting fold (mirrored at random) pasted in, covering 30-70 %
 *   of the image, seeded; one copy per `'cutmix'` in the list (`checkAugment` reads `cutmix:K` as K of them). Such
 *   copies act like extra unlabeled images (BENCHMARKS.md "Mixed-image copies as extra distillation data").
 */
export type AugmentKind = 'flip' | 'shift' | 'cutmix';

const AUGMENT_KINDS: readonly AugmentKind[] = ['flip', 'shift', 'cutmix'];
const MAX_SHIFT = 2;
/** Most cutmix copies per image. */
export const MAX_CUTMIX = 8;
/** λ (the share of an image's own pixels in its cutmix copy: 1 − the pasted box's area) is uniform in [LO, HI]. */
const LAMBDA_LO = 0.3;
const LAMBDA_HI = 0.7;

/**
 * Checks a list of augmentation kinds (INVALID_ARGUMENT naming an unknown one): flip and shift once each, cutmix
 * copies counted (`cutmix` one, `cutmix:K` K, at most {@link MAX_CUTMIX} in all) and listed last. A checked list
 * checks to itself.
 */
export function checkAugment(kinds: readonly string[]): AugmentKind[] {
  const out: AugmentKind[] = [];
  let cutmix = 0;
  for (const k of kinds) {
    const m = /^cutmix(?::(\d+))?$/.exec(k);
    if (m) {
      const count = m[1] === undefined ? 1 : Number(m[1]);
      cutmix += count;
      if (count < 1 || cutmix > MAX_CUTMIX)
        throw new SelfxitError('INVALID_ARGUMENT', `cutmix copies must be 1..${MAX_CUTMIX}, got "${k}"`, {
          augment: k,
        });
      continue;
    }
    if (!(AUGMENT_KINDS as readonly string[]).includes(k)) {
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `unknown augmentation "${k}" (${AUGMENT_KINDS.join(', ')}, cutmix:K)`,
        { augment: k },
      );
    }
    if (!out.includes(k as AugmentKind)) out.push(k as AugmentKind);
  }
  for (let i = 0; i < cutmix; i++) out.push('cutmix');
  return out;
}

/** The images of each fold: `foldOf[i]` → its members (all in one fold without a fold map). */
function foldMembers(n: number, foldOf: Int32Array | undefined): Map<number, number[]> {
  const members = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const f = foldOf ? foldOf[i]! : 0;
    const list = members.get(f) ?? [];
    list.push(i);
    members.set(f, list);
  }
  return members;
}

/** A mixing partner for image i: another image of its fold drawn uniformly (i itself when it is alone), mirrored with
 * probability 1/2, and λ. */
export interface MixDraw {
  readonly j: number;
  readonly flip: boolean;
  readonly lambda: number;
}

/**
 * Writes `copies` mixed copies of every image of `batch` into `out` (copy `a` of image `i` at byte `(a * count + i) *
 * imageBytes`), each from a {@link MixDraw} drawn with `rng` and `mix(i, draw, at)` writing it at byte `at`; partners
 * come from the same fold (`foldOf`), so that no image's fold is judged by heads trained on a copy holding it.
 */
export function mixInto(
  batch: SampleBatch,
  shape: SampleShape,
  copies: number,
  foldOf: Int32Array | undefined,
  rng: Rng,
  mix: (i: number, draw: MixDraw, at: number) => void,
): void {
  const per = shape.height * shape.width * shape.channels;
  const n = batch.count;
  const members = foldMembers(n, foldOf);
  for (let a = 0; a < copies; a++)
    for (let i = 0; i < n; i++) {
      const pool = members.get(foldOf ? foldOf[i]! : 0)!;
      let j = i;
      while (j === i && pool.length > 1) j = pool[rng.int(pool.length)]!;
      const flip = rng.next() < 0.5;
      const lambda = LAMBDA_LO + (LAMBDA_HI - LAMBDA_LO) * rng.next();
      mix(i, { j, flip, lambda }, (a * n + i) * per);
    }
}

/** The seeded stream of a batch's cutmix copies (one for all of them: K copies are K calls of {@link cutmixInto}). */
export const cutmixRng = (seed: number): Rng => createRng(seed + 104_729);

/** One cutmix copy of every image of `batch` into `dst` (image i at `i * imageBytes`), drawn with `rng`. */
export function cutmixInto(
  batch: SampleBatch,
  shape: SampleShape,
  foldOf: Int32Array | undefined,
  rng: Rng,
  dst: Uint8Array,
): void {
  const { height: h, width: w, channels: c } = shape;
  const per = h * w * c;
  const src = batch.data;
  mixInto(batch, shape, 1, foldOf, rng, (i, { j, flip, lambda }, o) => {
    // a box of area ≈ (1 − λ)·h·w, the image's aspect, placed uniformly inside it
    const r = Math.sqrt(1 - lambda);
    const bh = Math.max(1, Math.round(r * h));
    const bw = Math.max(1, Math.round(r * w));
    const y0 = rng.int(h - bh + 1);
    const x0 = rng.int(w - bw + 1);
    dst.set(src.subarray(i * per, (i + 1) * per), o);
    for (let y = y0; y < y0 + bh; y++)
      for (let x = x0; x < x0 + bw; x++)
        for (let k = 0; k < c; k++)
          dst[o + (y * w + x) * c + k] = src[j * per + (y * w + (flip ? w - 1 - x : x)) * c + k]!;
  });
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
 * (copy 0 = the original). Seeded, so the same seed gives the same copies. `foldOf` (the images' cross-fitting folds)
 * keeps each cutmix partner in its image's fold.
 */
export function augmentSamples(
  batch: SampleBatch,
  shape: SampleShape,
  kinds: readonly AugmentKind[],
  seed: number,
  foldOf?: Int32Array,
): SampleBatch {
  const per = shape.height * shape.width * shape.channels;
  const n = batch.count;
  const out = new Uint8Array(n * per * (1 + kinds.length));
  out.set(batch.data.subarray(0, n * per), 0);
  const mixRng = cutmixRng(seed);
  kinds.forEach((kind, a) => {
    const dst = out.subarray((a + 1) * n * per, (a + 2) * n * per);
    if (kind === 'cutmix') cutmixInto(batch, shape, foldOf, mixRng, dst);
    else if (kind === 'flip') {
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

// Label-free augmentation for head training: transformed copies of the calibration images. Their targets are the
// backbone's own outputs on each copy, so no label (and no assumption that a flip keeps the class) is involved.
import { SelfxitError } from '../errors.js';
import { createRng, type Rng } from './rng.js';
import type { SampleBatch, SampleRows, SampleShape } from './samples.js';

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

/** Draws image i's {@link MixDraw} from `rng` among `pool` (its fold's members). */
function drawMix(i: number, pool: readonly number[], rng: Rng): MixDraw {
  let j = i;
  while (j === i && pool.length > 1) j = pool[rng.int(pool.length)]!;
  const flip = rng.next() < 0.5;
  const lambda = LAMBDA_LO + (LAMBDA_HI - LAMBDA_LO) * rng.next();
  return { j, flip, lambda };
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
    for (let i = 0; i < n; i++) mix(i, drawMix(i, members.get(foldOf ? foldOf[i]! : 0)!, rng), (a * n + i) * per);
}

/** The seeded stream of a batch's cutmix copies (one for all of them: K copies are K calls of {@link cutmixInto}). */
export const cutmixRng = (seed: number): Rng => createRng(seed + 104_729);

/**
 * Image i's cutmix copy from `draw`: the box (its place drawn from `rng`) of the partner pasted in; written at byte
 * `at` of `dst` when given (without `dst` only the draws are made, to move the stream on).
 */
function cutmixOne(
  src: Uint8Array,
  shape: SampleShape,
  i: number,
  { j, flip, lambda }: MixDraw,
  rng: Rng,
  dst: Uint8Array | undefined,
  at: number,
): void {
  const { height: h, width: w, channels: c } = shape;
  const per = h * w * c;
  // a box of area ≈ (1 − λ)·h·w, the image's aspect, placed uniformly inside it
  const r = Math.sqrt(1 - lambda);
  const bh = Math.max(1, Math.round(r * h));
  const bw = Math.max(1, Math.round(r * w));
  const y0 = rng.int(h - bh + 1);
  const x0 = rng.int(w - bw + 1);
  if (!dst) return;
  dst.set(src.subarray(i * per, (i + 1) * per), at);
  for (let y = y0; y < y0 + bh; y++)
    for (let x = x0; x < x0 + bw; x++)
      for (let k = 0; k < c; k++)
        dst[at + (y * w + x) * c + k] = src[j * per + (y * w + (flip ? w - 1 - x : x)) * c + k]!;
}

/** One cutmix copy of every image of `batch` into `dst` (image i at `i * imageBytes`), drawn with `rng`. */
export function cutmixInto(
  batch: SampleBatch,
  shape: SampleShape,
  foldOf: Int32Array | undefined,
  rng: Rng,
  dst: Uint8Array,
): void {
  mixInto(batch, shape, 1, foldOf, rng, (i, draw, o) => cutmixOne(batch.data, shape, i, draw, rng, dst, o));
}

/** Image `i` of `src` moved by (dy, dx) (edges repeated), then mirrored if `flip`, into `dst` at byte `at`. */
function transformInto(
  src: Uint8Array,
  i: number,
  dst: Uint8Array,
  at: number,
  shape: SampleShape,
  dy: number,
  dx: number,
  flip: boolean,
): void {
  const { height: h, width: w, channels: c } = shape;
  const base = i * shape.height * w * c;
  for (let y = 0; y < h; y++) {
    const sy = Math.min(h - 1, Math.max(0, y + dy));
    for (let x = 0; x < w; x++) {
      let sx = Math.min(w - 1, Math.max(0, x + dx));
      if (flip) sx = w - 1 - sx;
      const from = base + (sy * w + sx) * c;
      const to = at + (y * w + x) * c;
      for (let k = 0; k < c; k++) dst[to + k] = src[from + k]!;
    }
  }
}

/**
 * The originals followed by one transformed copy per kind, in order, made a run of rows at a time (never all at once):
 * row `a * count + i` is copy `a` of image `i` (copy 0 = the original). Seeded, so the same seed gives the same copies,
 * whatever the runs; `foldOf` (the images' cross-fitting folds) keeps each cutmix partner in its image's fold. Holds
 * one run's images (the largest asked for) beside `batch`; runs read in order cost only their own rows (a run before
 * the last one read draws the seeded streams again from the start).
 */
export function augmentedRows(
  batch: SampleBatch,
  shape: SampleShape,
  kinds: readonly AugmentKind[],
  seed: number,
  foldOf?: Int32Array,
): SampleRows {
  const per = shape.height * shape.width * shape.channels;
  const n = batch.count;
  const count = n * (1 + kinds.length);
  const members = kinds.includes('cutmix') ? foldMembers(n, foldOf) : new Map<number, number[]>();
  let mixRng = cutmixRng(seed);
  let shiftRngs = kinds.map((_, a) => createRng(seed + 7919 * (a + 1)));
  let next = 0; // the row the seeded streams are at
  let buf = new Uint8Array(0);
  /** Row r (its draws made; written at byte `at` of `dst` when given). */
  const row = (r: number, dst: Uint8Array | undefined, at: number): void => {
    const a = Math.floor(r / n);
    const i = r - a * n;
    if (a === 0) {
      dst?.set(batch.data.subarray(i * per, (i + 1) * per), at);
      return;
    }
    const kind = kinds[a - 1]!;
    if (kind === 'cutmix') {
      const draw = drawMix(i, members.get(foldOf ? foldOf[i]! : 0)!, mixRng);
      cutmixOne(batch.data, shape, i, draw, mixRng, dst, at);
    } else if (kind === 'flip') {
      if (dst) transformInto(batch.data, i, dst, at, shape, 0, 0, true);
    } else {
      const rng = shiftRngs[a - 1]!;
      const dy = rng.int(2 * MAX_SHIFT + 1) - MAX_SHIFT;
      const dx = rng.int(2 * MAX_SHIFT + 1) - MAX_SHIFT;
      if (dst) transformInto(batch.data, i, dst, at, shape, dy, dx, false);
    }
  };
  return {
    count,
    rows(start: number, rows: number): Uint8Array {
      if (!(Number.isInteger(start) && Number.isInteger(rows) && start >= 0 && rows >= 0 && start + rows <= count))
        throw new SelfxitError('INTERNAL', `rows [${start}, ${start + rows}) outside [0, ${count})`);
      if (start < next) {
        mixRng = cutmixRng(seed);
        shiftRngs = kinds.map((_, a) => createRng(seed + 7919 * (a + 1)));
        next = 0;
      }
      for (; next < start; next++) row(next, undefined, 0);
      if (buf.length < rows * per) buf = new Uint8Array(rows * per);
      for (let k = 0; k < rows; k++) row(start + k, buf, k * per);
      next = start + rows;
      return buf.subarray(0, rows * per);
    },
  };
}

/** {@link augmentedRows} all at once: `(1 + kinds.length) × count` images in one block. */
export function augmentSamples(
  batch: SampleBatch,
  shape: SampleShape,
  kinds: readonly AugmentKind[],
  seed: number,
  foldOf?: Int32Array,
): SampleBatch {
  const all = augmentedRows(batch, shape, kinds, seed, foldOf);
  return { data: all.rows(0, all.count), count: all.count };
}

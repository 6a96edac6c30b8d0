// Calibration/evaluation samples: uint8 NHWC images in memory, read on demand or streamed (collected and checked),
// copies (and with flip, mirrors) left out, seeded shuffling and subsetting. The pixel → model-input conversion lives beside the input spec, in bundle/input.ts.
import { SelfxitError } from '../errors.js';
import { sha256Hex } from '../graph/hash.js';
import { createRng, permutation } from './rng.js';

export type { SampleBatch } from '../bundle/input.js';
import type { SampleBatch } from '../bundle/input.js';

/**
 * Samples read on demand: `count` images, of which `read` returns the chosen ones, in the order given (uint8 NHWC).
 * The seeded shuffle and limit pick indices first, so only those images are ever held (e.g. a large file on disk).
 */
export interface SampleReader {
  readonly count: number;
  read(indices: Int32Array): Promise<Uint8Array>;
}

/**
 * Images made on demand a run at a time (e.g. the originals and their augmented copies, augment.ts): `rows(start, n)`
 * returns images `[start, start + n)` as uint8 NHWC, a view valid until the next call.
 */
export interface SampleRows {
  readonly count: number;
  rows(start: number, rows: number): Uint8Array;
}

/** Samples as one in-memory block, a reader of chosen images, or an async stream of batches (taken in order, never
 * shuffled). */
export type SampleInput = SampleBatch | SampleReader | AsyncIterable<SampleBatch>;

/** Image geometry of one sample. */
export interface SampleShape {
  readonly height: number;
  readonly width: number;
  readonly channels: number;
}

export function isSampleBatch(s: SampleInput): s is SampleBatch {
  return (
    typeof s === 'object' &&
    s !== null &&
    'data' in s &&
    s.data instanceof Uint8Array &&
    typeof (s as SampleBatch).count === 'number'
  );
}

export function isSampleReader(s: SampleInput): s is SampleReader {
  return (
    typeof s === 'object' &&
    s !== null &&
    !('data' in s) &&
    typeof (s as SampleReader).read === 'function' &&
    typeof (s as SampleReader).count === 'number'
  );
}

/** Throws INVALID_SAMPLES unless `batch.data` holds exactly `count` images of `shape`. */
export function checkBatch(batch: SampleBatch, shape: SampleShape, what = 'samples'): void {
  const per = shape.height * shape.width * shape.channels;
  if (!Number.isInteger(batch.count) || batch.count < 0) {
    throw new SelfxitError('INVALID_SAMPLES', `${what}: count ${batch.count} is not a non-negative integer`);
  }
  if (batch.data.length !== batch.count * per) {
    throw new SelfxitError(
      'INVALID_SAMPLES',
      `${what}: ${batch.data.length} bytes do not hold ${batch.count} images of ${shape.height}x${shape.width}x${shape.channels} ` +
        `(${per} bytes each); the model expects ${shape.height}x${shape.width}x${shape.channels} uint8 NHWC images`,
      { bytes: batch.data.length, count: batch.count, expected: [shape.height, shape.width, shape.channels] },
    );
  }
}

/** Collects a sample stream into one block (at most `limit` images), checking each batch's shape. */
export async function collectSamples(
  input: SampleBatch | AsyncIterable<SampleBatch>,
  shape: SampleShape,
  limit = Infinity,
): Promise<SampleBatch> {
  if (isSampleBatch(input)) {
    checkBatch(input, shape);
    return input;
  }
  const per = shape.height * shape.width * shape.channels;
  const parts: Uint8Array[] = [];
  let count = 0;
  for await (const b of input) {
    checkBatch(b, shape, `sample batch ${parts.length}`);
    const take = Math.min(b.count, limit - count);
    if (take <= 0) break;
    parts.push(take === b.count ? b.data : b.data.subarray(0, take * per));
    count += take;
    if (count >= limit) break;
  }
  const data = new Uint8Array(count * per);
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.length;
  }
  return { data, count };
}

/** The indices of `count` images that a seeded shuffle keeps, in their shuffled order (the first `limit`). */
export function chooseSamples(count: number, seed: number, limit = Infinity): Int32Array {
  const perm = permutation(count, createRng(seed));
  return perm.slice(0, Math.min(count, Math.max(0, Math.floor(limit))));
}

/**
 * The samples calibration runs on: the images in a seeded shuffle (`seed`), walked in that order, copies of an image
 * met earlier left out (the same pixels, sha256; with `mirrored`, the flip augmentation on, also an image's left-right
 * mirror, whose flip copy would train the head judging it: keyed by the smaller digest of the two), until `limit`
 * distinct images are kept. A copy in another cross-fitting fold than its original would be judged by a head that
 * trained on it, and the agreement would read high. A reader is asked first for the shuffle's first `limit` images
 * ({@link chooseSamples}: without copies, the same images in the same order as from one block of all of them), then
 * for as many more, in shuffle order, as copies were met: only those are read (a folder of images, e.g., decodes only
 * them). A block is read the same way, so a block and a reader of the same images give the same samples; a stream is
 * collected up to `limit` first. Checks the shape (INVALID_SAMPLES). `copies`: images left out (only those the walk
 * met: with a `limit`, copies past the images chosen are never looked at).
 */
export async function selectSamples(
  input: SampleInput,
  shape: SampleShape,
  seed: number,
  limit = Infinity,
  mirrored = false,
): Promise<{ batch: SampleBatch; copies: number }> {
  const per = shape.height * shape.width * shape.channels;
  let reader: SampleReader;
  // a caller's reader may hand back a view of its own store: its buffer is never written (only ours is compacted)
  const ownReader = !isSampleReader(input);
  if (isSampleReader(input)) {
    if (!Number.isInteger(input.count) || input.count < 0)
      throw new SelfxitError('INVALID_SAMPLES', `samples: count ${input.count} is not a non-negative integer`);
    reader = input;
  } else {
    const block = await collectSamples(input, shape, isSampleBatch(input) ? Infinity : limit);
    reader = {
      count: block.count,
      read(indices: Int32Array): Promise<Uint8Array> {
        const out = new Uint8Array(indices.length * per);
        indices.forEach((k, i) => out.set(block.data.subarray(k * per, (k + 1) * per), i * per));
        return Promise.resolve(out);
      },
    };
  }
  const order = chooseSamples(reader.count, seed);
  const want = Math.min(reader.count, Math.max(0, Math.floor(limit)));
  const seen = new Set<string>();
  let data: Uint8Array = new Uint8Array(0);
  let kept = 0;
  let copies = 0;
  for (let next = 0; kept < want && next < order.length;) {
    const run = order.subarray(next, Math.min(order.length, next + want - kept));
    next += run.length;
    const got = await reader.read(run);
    checkBatch({ data: got, count: run.length }, shape);
    const keys = await imageKeys(got, run.length, shape, mirrored);
    // the first run is the block itself (distinct images moved forward over the copies; a caller's buffer only when it
    // holds no copy, so nothing moves in it); later runs fill its tail
    const distinct = !ownReader && new Set(keys).size === keys.length && keys.every((key) => !seen.has(key));
    if (kept === 0 && got.length === want * per && (ownReader || distinct)) data = got;
    else if (data.length === 0) data = new Uint8Array(want * per);
    const inPlace = data === got;
    keys.forEach((key, i) => {
      if (seen.has(key)) {
        copies++;
        return;
      }
      seen.add(key);
      if (!inPlace || kept !== i) data.set(got.subarray(i * per, (i + 1) * per), kept * per);
      kept++;
    });
  }
  return { batch: { data: kept * per === data.length ? data : data.subarray(0, kept * per), count: kept }, copies };
}

/** The image `px` (`shape`, HWC) mirrored left-right (as the flip augmentation mirrors it), into `out`. */
export function mirrorInto(px: Uint8Array, shape: SampleShape, out: Uint8Array): Uint8Array {
  const { height, width, channels: c } = shape;
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const from = (y * width + x) * c;
      const to = (y * width + width - 1 - x) * c;
      for (let ch = 0; ch < c; ch++) out[to + ch] = px[from + ch]!;
    }
  return out;
}

/** Images digested at once (WebCrypto answers many small digests far faster side by side than one by one). */
const DIGEST_RUN = 256;

/** A key per image of `data` (`count` images of `shape`): the sha256 of its pixels, with `mirrored` the smaller of
 * that and its mirror's. */
async function imageKeys(data: Uint8Array, count: number, shape: SampleShape, mirrored: boolean): Promise<string[]> {
  const per = shape.height * shape.width * shape.channels;
  const keys: string[] = [];
  for (let first = 0; first < count; first += DIGEST_RUN) {
    const n = Math.min(DIGEST_RUN, count - first);
    const run = Array.from({ length: n }, (_, k) => {
      const px = data.subarray((first + k) * per, (first + k + 1) * per);
      const own = sha256Hex(px);
      if (!mirrored) return own;
      const flipped = sha256Hex(mirrorInto(px, shape, new Uint8Array(per)));
      return Promise.all([own, flipped]).then(([a, b]) => (b < a ? b : a));
    });
    keys.push(...(await Promise.all(run)));
  }
  return keys;
}

/**
 * Shuffles the images with `seed` and keeps the first `limit` (files are often class-ordered, so a
 * plain prefix would be biased). Returns the chosen original indices too (to permute labels alike).
 */
export function shuffleAndLimit(
  batch: SampleBatch,
  shape: SampleShape,
  seed: number,
  limit = Infinity,
): { batch: SampleBatch; indices: Int32Array } {
  const per = shape.height * shape.width * shape.channels;
  const indices = chooseSamples(batch.count, seed, limit);
  const n = indices.length;
  const data = new Uint8Array(n * per);
  for (let i = 0; i < n; i++) {
    const src = indices[i]!;
    data.set(batch.data.subarray(src * per, (src + 1) * per), i * per);
  }
  return { batch: { data, count: n }, indices };
}

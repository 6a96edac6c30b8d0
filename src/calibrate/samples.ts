// Calibration/evaluation samples: uint8 NHWC images in memory, read on demand or streamed (collected and checked),
// seeded shuffling and subsetting. The pixel → model-input conversion lives beside the input spec, in bundle/input.ts.
import { SelfxitError } from '../errors.js';
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
 * The samples calibration runs on: shuffled with `seed`, the first `limit` kept ({@link shuffleAndLimit}); a reader
 * reads only those ({@link chooseSamples}: the same images in the same order as from one block of all of them); a
 * stream is collected up to `limit` first. Checks the shape (INVALID_SAMPLES).
 */
export async function selectSamples(
  input: SampleInput,
  shape: SampleShape,
  seed: number,
  limit = Infinity,
): Promise<SampleBatch> {
  if (isSampleReader(input)) {
    if (!Number.isInteger(input.count) || input.count < 0)
      throw new SelfxitError('INVALID_SAMPLES', `samples: count ${input.count} is not a non-negative integer`);
    const indices = chooseSamples(input.count, seed, limit);
    const batch = { data: await input.read(indices), count: indices.length };
    checkBatch(batch, shape);
    return batch;
  }
  const collected = await collectSamples(input, shape, isSampleBatch(input) ? Infinity : limit);
  return shuffleAndLimit(collected, shape, seed, limit).batch;
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

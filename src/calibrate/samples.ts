// Calibration/evaluation samples: uint8 NHWC images in memory, read on demand or streamed (collected and checked),
// exact copies left out, seeded shuffling and subsetting. The pixel → model-input conversion lives beside the input spec, in bundle/input.ts.
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
 * The samples calibration runs on, exact copies of an earlier image left out first ({@link UniqueImages}, as the
 * CLI's sources leave them out: a copy in another cross-fitting fold than its original would be judged by a head that
 * trained on it), then shuffled with `seed` and the first `limit` kept ({@link shuffleAndLimit}). A reader reads only
 * those ({@link chooseSamples}: the same images in the same order as from one block of all of them) and is taken as
 * it is (its duplicates are its own to leave out, e.g. cli/sample-sources.ts); a stream is collected up to `limit`
 * first. Checks the shape (INVALID_SAMPLES). `copies`: images left out.
 */
export async function selectSamples(
  input: SampleInput,
  shape: SampleShape,
  seed: number,
  limit = Infinity,
): Promise<{ batch: SampleBatch; copies: number }> {
  if (isSampleReader(input)) {
    if (!Number.isInteger(input.count) || input.count < 0)
      throw new SelfxitError('INVALID_SAMPLES', `samples: count ${input.count} is not a non-negative integer`);
    const indices = chooseSamples(input.count, seed, limit);
    const batch = { data: await input.read(indices), count: indices.length };
    checkBatch(batch, shape);
    return { batch, copies: 0 };
  }
  const collected = await collectSamples(input, shape, isSampleBatch(input) ? Infinity : limit);
  const unique = await withoutCopies(collected, shape);
  if (unique.copies === 0) return { batch: shuffleAndLimit(collected, shape, seed, limit).batch, copies: 0 };
  return { batch: (await selectSamples(unique.samples, shape, seed, limit)).batch, copies: unique.copies };
}

/** Image indices kept when exact copies of an earlier image are left out, each image known by a digest of its bytes. */
export class UniqueImages {
  private readonly seen = new Set<string>();
  private readonly keptList: number[] = [];
  /** Images left out as copies of an earlier one. */
  copies = 0;

  /** Keeps image `index` unless one kept before had the same `key` (a digest of its bytes); true when kept. */
  add(key: string, index: number): boolean {
    if (this.seen.has(key)) {
      this.copies++;
      return false;
    }
    this.seen.add(key);
    this.keptList.push(index);
    return true;
  }

  /** The indices kept, in the order added. */
  kept(): Int32Array {
    return Int32Array.from(this.keptList);
  }
}

/** Images digested at once (WebCrypto answers many small digests far faster side by side than one by one). */
const DIGEST_RUN = 256;

/** The images of `batch` without exact copies of an earlier image (sha256 of its pixels): the batch itself when it
 * has none, else a reader of those kept, in order. */
export async function withoutCopies(
  batch: SampleBatch,
  shape: SampleShape,
): Promise<{ samples: SampleBatch | SampleReader; copies: number }> {
  const per = shape.height * shape.width * shape.channels;
  const unique = new UniqueImages();
  for (let first = 0; first < batch.count; first += DIGEST_RUN) {
    const run = Array.from({ length: Math.min(DIGEST_RUN, batch.count - first) }, (_, k) =>
      sha256Hex(batch.data.subarray((first + k) * per, (first + k + 1) * per)),
    );
    (await Promise.all(run)).forEach((key, k) => unique.add(key, first + k));
  }
  if (unique.copies === 0) return { samples: batch, copies: 0 };
  const kept = unique.kept();
  const samples: SampleReader = {
    count: kept.length,
    read(indices: Int32Array): Promise<Uint8Array> {
      const out = new Uint8Array(indices.length * per);
      indices.forEach((k, i) => out.set(batch.data.subarray(kept[k]! * per, (kept[k]! + 1) * per), i * per));
      return Promise.resolve(out);
    },
  };
  return { samples, copies: unique.copies };
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

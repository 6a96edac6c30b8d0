// Mixed-image copies as extra unlabeled distillation rows (issue 13 study, bench/ensemble-study.ts `--mix`): mixup
// (λ·x_i + (1−λ)·x_j) and cutmix (a box of x_j pasted into x_i), partners drawn from the image's own cross-fitting fold.
import fs from 'node:fs';
import { cutmixInto, cutmixRng, mixInto } from '../src/calibrate/augment.js';
import type { SampleBatch, SampleShape } from '../src/calibrate/samples.js';

export type MixKind = 'mixup' | 'cutmix';
export const MIX_KINDS: readonly MixKind[] = ['mixup', 'cutmix'];

/**
 * `copies` mixed copies of every image of `batch`: row `a * count + i` is copy `a` of image `i`, mixed with a partner
 * drawn uniformly among the OTHER images of the same fold (`foldOf[i]`), the partner mirrored left-right with
 * probability 1/2; λ (the image's own share) uniform in [0.3, 0.7]. Seeded. Cutmix is prepare's `--augment cutmix:K`
 * (src/calibrate/augment.ts: the same copies for the same seed); mixup is this study's only. Targets are left to the
 * backbone (its softmax on each mixed image), so no label is used.
 */
export function mixedCopies(
  batch: SampleBatch,
  shape: SampleShape,
  kind: MixKind,
  copies: number,
  foldOf: Int32Array,
  seed: number,
): SampleBatch {
  const per = shape.height * shape.width * shape.channels;
  const n = batch.count;
  const rng = cutmixRng(seed);
  const out = new Uint8Array(copies * n * per);
  if (kind === 'cutmix') {
    for (let a = 0; a < copies; a++)
      cutmixInto(batch, shape, foldOf, rng, out.subarray(a * n * per, (a + 1) * n * per));
  } else {
    const src = batch.data;
    const { width: w, channels: c } = shape;
    mixInto(batch, shape, copies, foldOf, rng, (i, { j, flip, lambda }, o) => {
      for (let p = 0; p < per; p++) {
        const k = p % c;
        const x = Math.floor(p / c) % w;
        const y = Math.floor(p / c / w);
        const q = j * per + (y * w + (flip ? w - 1 - x : x)) * c + k;
        out[o + p] = Math.round(lambda * src[i * per + p]! + (1 - lambda) * src[q]!);
      }
    });
  }
  return { data: out, count: copies * n };
}

/** The float32 files `files` (row blocks of one cut, or teacher outputs), read one after another straight into one new
 * array (no intermediate buffers). */
export function readConcat(files: readonly string[]): Float32Array {
  const sizes = files.map((f) => fs.statSync(f).size);
  const out = new Float32Array(sizes.reduce((s, v) => s + v, 0) / 4);
  let offset = 0;
  files.forEach((f, i) => {
    const fd = fs.openSync(f, 'r');
    for (let pos = 0; pos < sizes[i]!;)
      pos += fs.readSync(fd, new Uint8Array(out.buffer, offset + pos, sizes[i]! - pos), 0, sizes[i]! - pos, pos);
    fs.closeSync(fd);
    offset += sizes[i]!;
  });
  return out;
}

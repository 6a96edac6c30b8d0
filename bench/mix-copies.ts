// Mixed-image copies as extra unlabeled distillation rows (issue 13 study, bench/ensemble-study.ts `--mix`): mixup
// (λ·x_i + (1−λ)·x_j) and cutmix (a box of x_j pasted into x_i), partners drawn from the image's own cross-fitting fold.
import fs from 'node:fs';
import { createRng } from '../src/calibrate/rng.js';
import type { SampleBatch, SampleShape } from '../src/calibrate/samples.js';

export type MixKind = 'mixup' | 'cutmix';
export const MIX_KINDS: readonly MixKind[] = ['mixup', 'cutmix'];
/** λ (share of the image's own pixels: mixup weight, or 1 − the pasted box's area) is uniform in [LO, HI]. */
const LAMBDA_LO = 0.3;
const LAMBDA_HI = 0.7;

/**
 * `copies` mixed copies of every image of `batch`: row `a * count + i` is copy `a` of image `i`, mixed with a partner
 * drawn uniformly among the OTHER images of the same fold (`foldOf[i]`), the partner mirrored left-right with
 * probability 1/2. Seeded. Targets are left to the backbone (its softmax on each mixed image), so no label is used.
 */
export function mixedCopies(
  batch: SampleBatch,
  shape: SampleShape,
  kind: MixKind,
  copies: number,
  foldOf: Int32Array,
  seed: number,
): SampleBatch {
  const { height: h, width: w, channels: c } = shape;
  const per = h * w * c;
  const n = batch.count;
  const members = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const f = foldOf[i]!;
    const list = members.get(f) ?? [];
    list.push(i);
    members.set(f, list);
  }
  const rng = createRng(seed + 104_729);
  const src = batch.data;
  const out = new Uint8Array(copies * n * per);
  for (let a = 0; a < copies; a++)
    for (let i = 0; i < n; i++) {
      const pool = members.get(foldOf[i]!)!;
      let j = i;
      while (j === i && pool.length > 1) j = pool[rng.int(pool.length)]!;
      const flip = rng.next() < 0.5;
      const lambda = LAMBDA_LO + (LAMBDA_HI - LAMBDA_LO) * rng.next();
      const o = (a * n + i) * per;
      /** Partner pixel (y, x), channel k (mirrored when `flip`). */
      const partner = (y: number, x: number, k: number): number =>
        src[j * per + (y * w + (flip ? w - 1 - x : x)) * c + k]!;
      if (kind === 'mixup') {
        for (let y = 0; y < h; y++)
          for (let x = 0; x < w; x++)
            for (let k = 0; k < c; k++) {
              const p = (y * w + x) * c + k;
              out[o + p] = Math.round(lambda * src[i * per + p]! + (1 - lambda) * partner(y, x, k));
            }
      } else {
        // a box of area ≈ (1 − λ)·h·w, same aspect as the image, placed uniformly inside it
        const r = Math.sqrt(1 - lambda);
        const bh = Math.max(1, Math.round(r * h));
        const bw = Math.max(1, Math.round(r * w));
        const y0 = rng.int(h - bh + 1);
        const x0 = rng.int(w - bw + 1);
        out.set(src.subarray(i * per, (i + 1) * per), o);
        for (let y = y0; y < y0 + bh; y++)
          for (let x = x0; x < x0 + bw; x++)
            for (let k = 0; k < c; k++) out[o + (y * w + x) * c + k] = partner(y, x, k);
      }
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

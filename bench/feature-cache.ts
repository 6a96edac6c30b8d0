// The study scripts' on-disk cache of extracted features: the teacher's probabilities and one file per cut, raw
// float32, under bench/.cache (ignored by git). Shared by bench/ensemble-study.ts and bench/train-speed.ts.
import fs from 'node:fs';
import path from 'node:path';

/** A float32 file read back as one array (no copy). */
export function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

/**
 * The features under `base` (`<base>.teacher`, `<base>.0` …): read from the cache when there, else extracted by
 * `extract` (timed on stderr as `label`) and written first.
 */
export async function cachedFeatures(
  base: string,
  cutCount: number,
  label: string,
  extract: () => Promise<{ readonly teacher: Float32Array; readonly cuts: readonly { readonly x: Float32Array }[] }>,
): Promise<{ teacher: Float32Array; x: Float32Array[] }> {
  if (!fs.existsSync(`${base}.teacher`)) await writeFeatures(base, label, extract);
  return {
    teacher: readF32(`${base}.teacher`),
    x: Array.from({ length: cutCount }, (_, i) => readF32(`${base}.${i}`)),
  };
}

/** Extracts the features (timed on stderr as `label`) and writes them under `base`, without reading them back. */
export async function writeFeatures(
  base: string,
  label: string,
  extract: () => Promise<{ readonly teacher: Float32Array; readonly cuts: readonly { readonly x: Float32Array }[] }>,
): Promise<void> {
  fs.mkdirSync(path.dirname(base), { recursive: true });
  const t0 = performance.now();
  const f = await extract();
  console.error(`features ${label}: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  f.cuts.forEach((c, i) => fs.writeFileSync(`${base}.${i}`, c.x));
  fs.writeFileSync(`${base}.teacher`, f.teacher); // last: a cache cut short has no teacher and is made again
}

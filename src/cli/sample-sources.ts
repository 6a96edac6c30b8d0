// Sample sources on disk for the CLI: raw uint8 NHWC files and folders of PNG/JPEG images, checked first (readable,
// sizes, headers, one geometry), then read on demand as a SampleReader: a file given again can be left out, and only
// the images the seeded shuffle chooses are read (decoded) and held.
import { promises as fs } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { SelfxitError } from '../errors.js';
import { type SampleBatch, type SampleReader, type SampleShape } from '../calibrate/samples.js';
import { decodeImage, imageHeaderGeometry, toShape, type ByteReader } from './images.js';

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);

async function statOrThrow(p: string): Promise<Stats> {
  try {
    return await fs.stat(p);
  } catch (e) {
    throw ioError(p, e);
  }
}

/** One checked sample source: a raw file or a folder of images, with its image count and native geometry. */
export interface SampleSource {
  readonly path: string;
  readonly kind: 'raw' | 'folder';
  readonly count: number;
  /** The images of a folder (sorted by path); empty for raw files. */
  readonly files: readonly string[];
  /** Native geometry per image: a folder's from each header (channels 1 or 3); a raw file's is `shape`. */
  readonly geometry: readonly SampleShape[];
}

const geometryText = (g: SampleShape): string => `${g.height}x${g.width}x${g.channels}`;

/**
 * Checks every source before any is loaded: it exists and can be opened, a raw file holds a whole number of `shape`
 * images, a folder holds images whose headers read as PNG/JPEG. With more than one source every image must have
 * the first source's size and channel count (one source alone is resized and converted as it is).
 * @throws SelfxitError `IO_ERROR` (unreadable), `INVALID_SAMPLES` naming the file (size, header, geometry).
 */
export async function checkSampleSources(paths: readonly string[], shape: SampleShape): Promise<SampleSource[]> {
  const per = shape.height * shape.width * shape.channels;
  const sources: SampleSource[] = [];
  for (const p of paths) {
    const st = await statOrThrow(p);
    if (st.isFile()) {
      await openOrThrow(p);
      if (st.size === 0 || st.size % per !== 0) {
        throw new SelfxitError(
          'INVALID_SAMPLES',
          `${p}: ${st.size} bytes is not a whole number of ${geometryText(shape)} uint8 images (${per} bytes each); ` +
            'raw sample files are NHWC uint8 — pass --shape H,W,C if the model input does not fix it',
          { file: p, bytes: st.size, perImage: per },
        );
      }
      sources.push({ path: p, kind: 'raw', count: st.size / per, files: [], geometry: [shape] });
      continue;
    }
    const files = (await listImages(p)).sort();
    if (files.length === 0) throw new SelfxitError('INVALID_SAMPLES', `${p}: no .png/.jpg/.jpeg images found`);
    const geometry: SampleShape[] = [];
    for (const f of files) geometry.push(await readGeometry(f));
    sources.push({ path: p, kind: 'folder', count: files.length, files, geometry });
  }
  if (sources.length > 1) {
    const want = sources[0]!.geometry[0]!;
    for (const s of sources)
      s.geometry.forEach((g, i) => {
        if (g.height !== want.height || g.width !== want.width || g.channels !== want.channels) {
          const file = s.kind === 'raw' ? s.path : s.files[i]!;
          throw new SelfxitError(
            'INVALID_SAMPLES',
            `${file}: ${geometryText(g)} images, but ${sources[0]!.path} holds ${geometryText(want)} (height x width x channels): ` +
              'sample sources given together must share image size and channel count',
            { file, geometry: [g.height, g.width, g.channels], expected: [want.height, want.width, want.channels] },
          );
        }
      });
  }
  return sources;
}

/**
 * Loads one or more sample sources (each a raw uint8 NHWC file or a folder of images), checked first
 * ({@link checkSampleSources}), concatenated in the order given into one uint8 NHWC block of `shape`.
 * - A file: raw bytes `[count, H, W, C]`; its size must be a multiple of H*W*C (INVALID_SAMPLES otherwise).
 * - A folder: every .png/.jpg/.jpeg below it (recursively, sorted by path), resized and converted to `shape`.
 * Returns the folders' image paths (to match labels; raw files add none) and each source's count.
 */
export async function loadSampleSources(
  paths: readonly string[],
  shape: SampleShape,
): Promise<SampleBatch & { files: string[]; sources: { path: string; count: number }[] }> {
  const r = await openSampleSources(paths, shape);
  const data = await r.read(Int32Array.from({ length: r.count }, (_, i) => i));
  return { data, count: r.count, files: [...r.files], sources: [...r.sources] };
}

/** Loads samples as uint8 NHWC of `shape` from one source (see {@link loadSampleSources}). */
export async function loadSamples(p: string, shape: SampleShape): Promise<SampleBatch & { files: string[] }> {
  const { data, count, files } = await loadSampleSources([p], shape);
  return { data, count, files };
}

/** Images per read of a raw file (a chunk of up to this many images is read whole, then the chosen ones copied). */
const CHUNK_IMAGES = 1024;

/** Duplicates left out of a set of sources when they are opened (copies of an image's pixels are left out later, by
 * `selectSamples` in prepare: only among the images the shuffle picks, so that only those are decoded). */
export interface DroppedDuplicates {
  /** Images of a file already given (the same path, a link to it, a folder inside another given folder). */
  readonly sameFile: number;
}

/** Checked sample sources read on demand; `read` indices are over the images kept (duplicates left out). */
export interface SourceReader extends SampleReader {
  readonly sources: readonly { path: string; count: number }[];
  /** The folders' image paths, in order (raw files add none). */
  readonly files: readonly string[];
  /** Images in all sources, duplicates included. */
  readonly total: number;
  readonly dropped: DroppedDuplicates;
}

/**
 * Checks `paths` ({@link checkSampleSources}) and returns a reader over their images, concatenated in the order given,
 * resized and converted to `shape` as {@link loadSampleSources} does. With `dedupe`, images of a file already given
 * (by real path: the same path, a link, a folder inside another given folder) are left out; no image is decoded for
 * it. Copies of an image's pixels (a PNG and its lossless re-save, a raw file and a folder of the same images, with
 * flip an image's mirror) are left out by `selectSamples` (calibrate/samples.ts) as prepare reads the images the
 * shuffle picks, so only those are decoded. The images kept keep their order, so without duplicates the reader reads
 * what loading every source would hold. `read` decodes and holds only the chosen images (plus one chunk of a raw file).
 * @throws SelfxitError `IO_ERROR`, `INVALID_SAMPLES` as {@link checkSampleSources} (and when a file changes meanwhile).
 */
export async function openSampleSources(
  paths: readonly string[],
  shape: SampleShape,
  options: { dedupe?: boolean } = {},
): Promise<SourceReader> {
  if (paths.length === 0) throw new SelfxitError('INVALID_ARGUMENT', 'no sample source given');
  const sources = await checkSampleSources(paths, shape);
  const per = shape.height * shape.width * shape.channels;
  const starts: number[] = [];
  let total = 0;
  for (const s of sources) {
    starts.push(total);
    total += s.count;
  }
  let kept: Int32Array;
  let dropped: DroppedDuplicates = { sameFile: 0 };
  if (options.dedupe) ({ kept, dropped } = await findUnique(sources));
  else kept = Int32Array.from({ length: total }, (_, i) => i);
  return {
    sources: sources.map((s) => ({ path: s.path, count: s.count })),
    files: sources.flatMap((s) => [...s.files]),
    total,
    count: kept.length,
    dropped,
    async read(indices: Int32Array): Promise<Uint8Array> {
      const out = new Uint8Array(indices.length * per);
      const slot = new Int32Array(total).fill(-1);
      indices.forEach((k, i) => {
        if (!(k >= 0 && k < kept.length))
          throw new SelfxitError('INTERNAL', `sample index ${k} outside [0, ${kept.length})`);
        slot[kept[k]!] = i;
      });
      for (let j = 0; j < sources.length; j++) {
        const s = sources[j]!;
        const at = starts[j]!;
        if (s.kind === 'raw') {
          await forEachRawChunk(
            s.path,
            per,
            s.count,
            (first, n) => slot.subarray(at + first, at + first + n).some((v) => v >= 0),
            (first, chunk) => {
              for (let i = 0; i * per < chunk.length; i++) {
                const to = slot[at + first + i]!;
                if (to >= 0) out.set(chunk.subarray(i * per, (i + 1) * per), to * per);
              }
            },
          );
        } else {
          for (let i = 0; i < s.files.length; i++) {
            const to = slot[at + i]!;
            if (to < 0) continue;
            const f = s.files[i]!;
            out.set(toShape(decodeImage(await readWhole(f), f), shape), to * per);
          }
        }
      }
      return out;
    },
  };
}

/** Global indices of the images kept after leaving out files given again (by real path), in order. */
async function findUnique(sources: readonly SampleSource[]): Promise<{ kept: Int32Array; dropped: DroppedDuplicates }> {
  const seenFiles = new Set<string>();
  const kept: number[] = [];
  let sameFile = 0;
  let g = 0;
  for (const s of sources) {
    const at = g;
    g += s.count;
    const files = s.kind === 'raw' ? [s.path] : s.files;
    for (let i = 0; i < files.length; i++) {
      const real = await realPath(files[i]!);
      const n = s.kind === 'raw' ? s.count : 1;
      if (seenFiles.has(real)) {
        sameFile += n;
        continue;
      }
      seenFiles.add(real);
      for (let k = 0; k < n; k++) kept.push(at + i + k);
    }
  }
  return { kept: Int32Array.from(kept), dropped: { sameFile } };
}

/** Calls `each(first, bytes)` for the chunks of a raw file of `count` images of `per` bytes that `wanted(first, n)`
 * asks for (the others are not read). */
async function forEachRawChunk(
  p: string,
  per: number,
  count: number,
  wanted: (first: number, n: number) => boolean,
  each: (first: number, bytes: Uint8Array) => void,
): Promise<void> {
  try {
    const fh = await fs.open(p, 'r');
    try {
      const buf = new Uint8Array(Math.min(count, CHUNK_IMAGES) * per);
      for (let first = 0; first < count; first += CHUNK_IMAGES) {
        const n = Math.min(CHUNK_IMAGES, count - first);
        if (!wanted(first, n)) continue;
        const chunk = buf.subarray(0, n * per);
        let off = 0;
        while (off < chunk.length) {
          const { bytesRead } = await fh.read(chunk, off, chunk.length - off, first * per + off);
          if (bytesRead === 0) throw new Error(`file ended after ${first * per + off} of ${count * per} bytes`);
          off += bytesRead;
        }
        each(first, chunk);
      }
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw ioError(p, e);
  }
}

async function readWhole(p: string): Promise<Uint8Array> {
  try {
    const b = await fs.readFile(p);
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  } catch (e) {
    throw ioError(p, e);
  }
}

async function realPath(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch (e) {
    throw ioError(p, e);
  }
}

function ioError(p: string, e: unknown): SelfxitError {
  return new SelfxitError(
    'IO_ERROR',
    `Cannot read samples at ${p}: ${(e as Error).message}`,
    { path: p },
    { cause: e },
  );
}

async function openOrThrow(p: string): Promise<void> {
  try {
    await (await fs.open(p, 'r')).close();
  } catch (e) {
    throw ioError(p, e);
  }
}

/** The size header of the image file `p` (see {@link imageHeaderGeometry}): its first 64 KiB are read at once, bytes
 * past them (a JPEG whose EXIF/ICC/XMP blocks push its SOF further) by positioned reads. */
async function readGeometry(p: string): Promise<SampleShape> {
  try {
    const fh = await fs.open(p, 'r');
    try {
      const head = new Uint8Array(65536);
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      const whole = bytesRead < head.length;
      const read: ByteReader = async (position, length) => {
        if (whole || position + length <= bytesRead)
          return head.subarray(position, Math.min(position + length, bytesRead));
        const buf = new Uint8Array(length);
        return buf.subarray(0, (await fh.read(buf, 0, length, position)).bytesRead);
      };
      return await imageHeaderGeometry(read, p);
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (e instanceof SelfxitError) throw e;
    throw ioError(p, e);
  }
}

async function listImages(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listImages(full)));
    else if (IMAGE_EXT.has(path.extname(e.name).toLowerCase())) out.push(full);
  }
  return out;
}

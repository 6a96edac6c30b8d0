// Node-side sample loading for the CLI: raw uint8 NHWC files and folders of PNG/JPEG images (decoded, bilinearly
// resized to the model input, converted to its channel count), one or several sources checked first, plus label files.
import { promises as fs } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { SelfxitError } from '../errors.js';
import { luma } from '../bundle/input.js';
import type { SampleBatch, SampleShape } from '../calibrate/samples.js';

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);

/** Parses `H,W,C` (e.g. `32,32,3`). Throws INVALID_ARGUMENT. */
export function parseShape(text: string): SampleShape {
  const parts = text.split(/[,x]/).map((s) => Number(s.trim()));
  if (parts.length !== 3 || parts.some((v) => !Number.isInteger(v) || v <= 0)) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `--shape must be H,W,C with positive integers (e.g. 32,32,3), got "${text}"`,
    );
  }
  return { height: parts[0]!, width: parts[1]!, channels: parts[2]! };
}

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
  if (paths.length === 0) throw new SelfxitError('INVALID_ARGUMENT', 'no sample source given');
  const sources = await checkSampleSources(paths, shape);
  const per = shape.height * shape.width * shape.channels;
  const count = sources.reduce((a, s) => a + s.count, 0);
  const data = new Uint8Array(count * per);
  let at = 0;
  for (const s of sources) {
    if (s.kind === 'raw') await readInto(s.path, data.subarray(at * per, (at + s.count) * per));
    else
      for (let i = 0; i < s.files.length; i++) {
        const img = decodeImage(await fs.readFile(s.files[i]!), s.files[i]!);
        data.set(toShape(img, shape), (at + i) * per);
      }
    at += s.count;
  }
  return {
    data,
    count,
    files: sources.flatMap((s) => [...s.files]),
    sources: sources.map((s) => ({ path: s.path, count: s.count })),
  };
}

/** Loads samples as uint8 NHWC of `shape` from one source (see {@link loadSampleSources}). */
export async function loadSamples(p: string, shape: SampleShape): Promise<SampleBatch & { files: string[] }> {
  const { data, count, files } = await loadSampleSources([p], shape);
  return { data, count, files };
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

/** Reads the whole file into `out` (its exact size). */
async function readInto(p: string, out: Uint8Array): Promise<void> {
  try {
    const fh = await fs.open(p, 'r');
    try {
      let off = 0;
      while (off < out.length) {
        const { bytesRead } = await fh.read(out, off, out.length - off, off);
        if (bytesRead === 0) throw new Error(`file ended after ${off} of ${out.length} bytes`);
        off += bytesRead;
      }
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw ioError(p, e);
  }
}

/** Reads up to `length` bytes of an image file from `position` (fewer at its end). */
type ByteReader = (position: number, length: number) => Promise<Uint8Array>;

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

/**
 * Size and colour channels (1 for gray, 3 for colour) from a PNG's IHDR or a JPEG's SOF, the JPEG's found by following
 * the segment lengths however far it is (INVALID_SAMPLES when neither is found). `bytes`: the file, or a reader of it.
 */
export async function imageHeaderGeometry(bytes: Uint8Array | ByteReader, name: string): Promise<SampleShape> {
  const read: ByteReader =
    typeof bytes === 'function'
      ? bytes
      : (position, length) => Promise.resolve(bytes.subarray(position, position + length));
  const be16 = (b: Uint8Array, i: number): number => (b[i]! << 8) | b[i + 1]!;
  const start = await read(0, 26);
  if (start.length >= 26 && start[0] === 0x89 && start[1] === 0x50) {
    const width = be16(start, 16) * 65536 + be16(start, 18);
    const height = be16(start, 20) * 65536 + be16(start, 22);
    const colour = start[25]!;
    return { height, width, channels: colour === 0 || colour === 4 ? 1 : 3 };
  }
  if (start[0] === 0xff && start[1] === 0xd8) {
    let i = 2;
    for (;;) {
      const b = await read(i, 10);
      if (b.length < 4 || b[0] !== 0xff) break;
      const marker = b[1]!;
      if (marker === 0xff) {
        i += 1; // a fill byte before the marker
        continue;
      }
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        if (b.length < 10) break;
        return { height: be16(b, 5), width: be16(b, 7), channels: b[9] === 1 ? 1 : 3 };
      }
      const length = be16(b, 2);
      if (length < 2) break;
      i += 2 + length;
    }
  }
  throw new SelfxitError('INVALID_SAMPLES', `${name}: not a PNG or JPEG image (no size header found)`, {
    file: name,
  });
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

/** Decoded RGBA image. */
export interface RgbaImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/** Decodes PNG or JPEG bytes to RGBA (INVALID_SAMPLES when neither). */
export function decodeImage(bytes: Uint8Array, name = 'image'): RgbaImage {
  try {
    if (bytes[0] === 0x89 && bytes[1] === 0x50) {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
      return {
        width: png.width,
        height: png.height,
        data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length),
      };
    }
    if (bytes[0] === 0xff && bytes[1] === 0xd8) {
      const j = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
      return { width: j.width, height: j.height, data: j.data };
    }
  } catch (e) {
    throw new SelfxitError(
      'INVALID_SAMPLES',
      `${name}: cannot decode image: ${(e as Error).message}`,
      { file: name },
      { cause: e },
    );
  }
  throw new SelfxitError('INVALID_SAMPLES', `${name}: not a PNG or JPEG image`, { file: name });
}

/** Bilinear resize (half-pixel centres) of RGBA to `shape`, then RGB or luma grayscale; uint8 HWC. */
export function toShape(img: RgbaImage, shape: SampleShape): Uint8Array {
  const { height: H, width: W, channels: C } = shape;
  if (C !== 1 && C !== 3) throw new SelfxitError('INVALID_ARGUMENT', `channels must be 1 or 3, got ${C}`);
  const out = new Uint8Array(H * W * C);
  const sy = img.height / H;
  const sx = img.width / W;
  const px = (x: number, y: number, ch: number): number => img.data[(y * img.width + x) * 4 + ch]!;
  for (let y = 0; y < H; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), img.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, img.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < W; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), img.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, img.width - 1);
      const wx = fx - x0;
      const rgb = [0, 0, 0];
      for (let ch = 0; ch < 3; ch++) {
        const top = px(x0, y0, ch) * (1 - wx) + px(x1, y0, ch) * wx;
        const bot = px(x0, y1, ch) * (1 - wx) + px(x1, y1, ch) * wx;
        rgb[ch] = top * (1 - wy) + bot * wy;
      }
      const o = (y * W + x) * C;
      if (C === 3) {
        out[o] = Math.round(rgb[0]!);
        out[o + 1] = Math.round(rgb[1]!);
        out[o + 2] = Math.round(rgb[2]!);
      } else {
        out[o] = luma(rgb[0]!, rgb[1]!, rgb[2]!);
      }
    }
  }
  return out;
}

/** Reads class names, one per line (blank lines ignored). */
export async function readLabelNames(file: string): Promise<string[]> {
  const text = await readText(file);
  const names = text
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (names.length === 0) throw new SelfxitError('INVALID_ARGUMENT', `${file}: no label names`);
  return names;
}

async function readText(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new SelfxitError('IO_ERROR', `Cannot read ${file}: ${(e as Error).message}`, { path: file }, { cause: e });
  }
}

/**
 * Reads ground-truth labels for `count` samples: a raw file of one byte per sample (like
 * test-labels.u8), or a text file with one class index or class name per line. `labelNames` are the
 * model's classes (a bundle's `manifest.labels`); every label must be one of them.
 * @throws SelfxitError `INVALID_ARGUMENT` for a wrong count or a class index outside `[0, labelNames.length)`
 *   (naming the first bad sample), `IO_ERROR` when the file cannot be read.
 */
export async function readLabelFile(file: string, count: number, labelNames: readonly string[]): Promise<Int32Array> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (e) {
    throw new SelfxitError('IO_ERROR', `Cannot read ${file}: ${(e as Error).message}`, { path: file }, { cause: e });
  }
  const classes = labelNames.length;
  if (buf.length === count) {
    const bad = buf.findIndex((v) => v >= classes);
    if (bad >= 0) {
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `${file}: read as one uint8 class index per sample, but sample ${bad} has class ${buf[bad]}, and the model has ${classes} classes (0..${classes - 1})`,
        { file, sample: bad, label: buf[bad], classes },
      );
    }
    return Int32Array.from(buf, (v) => v);
  }
  const lines = buf
    .toString('utf8')
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (lines.length !== count) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `${file}: ${lines.length} labels (or ${buf.length} bytes) for ${count} samples`,
      { file },
    );
  }
  return Int32Array.from(lines, (s, i) => {
    const byName = labelNames.indexOf(s);
    const v = byName >= 0 ? byName : Number(s);
    if (!Number.isInteger(v) || v < 0 || v >= labelNames.length) {
      throw new SelfxitError('INVALID_ARGUMENT', `${file}: line ${i + 1} "${s}" is not a class index or name`, {
        file,
        line: i + 1,
      });
    }
    return v;
  });
}

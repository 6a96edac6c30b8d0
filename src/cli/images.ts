// Images and labels for the CLI: PNG/JPEG size headers, decoding, bilinear resizing to the model input (converted to its
// channel count), --shape, and label files. The sample sources (raw files, folders) are in sample-sources.ts.
import { promises as fs } from 'node:fs';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { SelfxitError } from '../errors.js';
import { luma } from '../bundle/input.js';
import type { SampleShape } from '../calibrate/samples.js';

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

/** Reads up to `length` bytes of an image file from `position` (fewer at its end). */
export type ByteReader = (position: number, length: number) => Promise<Uint8Array>;

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

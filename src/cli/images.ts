// Node-side sample loading for the CLI: a raw uint8 NHWC file, or a folder of PNG/JPEG images
// (decoded, bilinearly resized to the model input, converted to its channel count), plus label files.
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
    throw new SelfxitError(
      'IO_ERROR',
      `Cannot read samples at ${p}: ${(e as Error).message}`,
      { path: p },
      { cause: e },
    );
  }
}

/**
 * Loads samples as uint8 NHWC of `shape`.
 * - A file: raw bytes `[count, H, W, C]`; its size must be a multiple of H*W*C (INVALID_SAMPLES otherwise).
 * - A folder: every .png/.jpg/.jpeg below it (recursively, sorted by path), resized and converted to `shape`.
 * Returns the files' paths for folders (to match labels), empty for raw files.
 */
export async function loadSamples(p: string, shape: SampleShape): Promise<SampleBatch & { files: string[] }> {
  const st = await statOrThrow(p);
  const per = shape.height * shape.width * shape.channels;
  if (st.isFile()) {
    const buf = await fs.readFile(p);
    if (buf.length === 0 || buf.length % per !== 0) {
      throw new SelfxitError(
        'INVALID_SAMPLES',
        `${p}: ${buf.length} bytes is not a whole number of ${shape.height}x${shape.width}x${shape.channels} uint8 images (${per} bytes each); ` +
          'raw sample files are NHWC uint8 — pass --shape H,W,C if the model input does not fix it',
        { bytes: buf.length, perImage: per },
      );
    }
    return { data: new Uint8Array(buf.buffer, buf.byteOffset, buf.length), count: buf.length / per, files: [] };
  }
  const files = (await listImages(p)).sort();
  if (files.length === 0) throw new SelfxitError('INVALID_SAMPLES', `${p}: no .png/.jpg/.jpeg images found`);
  const data = new Uint8Array(files.length * per);
  for (let i = 0; i < files.length; i++) {
    const img = decodeImage(await fs.readFile(files[i]!), files[i]!);
    data.set(toShape(img, shape), i * per);
  }
  return { data, count: files.length, files };
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

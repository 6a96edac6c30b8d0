// Page-side input conversion: what classify() accepts (ClassifierInput, src/types.ts) → what can cross to the worker
// (elements become ImageBitmaps).
import { SelfxitError } from '../errors.js';
import type { WireInput } from '../protocol.js';
import type { BufferPool } from './buffer-pool.js';

function isA<T>(value: unknown, ctor: string): value is T {
  const C = (globalThis as Record<string, unknown>)[ctor];
  return typeof C === 'function' && value instanceof (C as new () => T);
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return (value as object).constructor?.name ?? 'object';
}

/**
 * An element's pixels as a bitmap, as stored: no colour-space conversion (a tagged image is not converted to sRGB) and
 * no premultiplied alpha, as the worker decodes a Blob (preprocess.ts) and the CLI a file (jpeg-js), so the same image
 * classifies the same whichever way it is passed.
 */
async function bitmapOf(source: ImageBitmapSource, what: string): Promise<ImageBitmap> {
  try {
    return await createImageBitmap(source, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw new SelfxitError(
      'INVALID_INPUT',
      `cannot read pixels from the ${what}: ${(e as Error).message}`,
      { input: what },
      { cause: e },
    );
  }
}

/**
 * Throws INVALID_INPUT when `view`'s buffer was transferred away (to a worker, or by `ArrayBuffer.transfer()`). Where
 * `ArrayBuffer.prototype.detached` is missing, an empty buffer is taken for a detached one (empty input is wrong anyway).
 */
function checkNotDetached(view: ArrayBufferView, what: string): void {
  const buffer = view.buffer as ArrayBufferLike & { detached?: boolean };
  if (buffer.detached === true || (buffer.detached === undefined && buffer.byteLength === 0))
    throw new SelfxitError(
      'INVALID_INPUT',
      `the ${what}'s buffer is detached (it was transferred, e.g. to a worker): pass a copy that is still yours`,
      { input: what },
    );
}

/** One input as it crosses to the worker, and the objects created for it that may be moved there. */
export interface WireConversion {
  readonly wire: WireInput;
  readonly transfer: Transferable[];
}

/** Closes the bitmaps made for inputs that will not be sent (`transfer` of their {@link WireConversion}s). */
export function dropTransfers(transfer: readonly Transferable[]): void {
  for (const t of transfer) (t as ImageBitmap).close?.();
}

/** A copy of `src` (just its view) in a buffer of `pool` of its byte size when there is one, else in a new one. */
function pooledCopy<T extends Float32Array | Uint8ClampedArray>(
  src: T,
  pool: BufferPool | undefined,
  view: (buffer: ArrayBuffer) => T,
): T {
  const spare = pool?.take(src.byteLength);
  if (!spare) return src.slice() as T;
  const copy = view(spare);
  copy.set(src);
  return copy;
}

/**
 * Converts one input; `transfer` lists objects created here that may be moved to the worker. Arrays, ImageData,
 * ImageBitmaps and Blobs convert at once (no promise); elements are read into a bitmap first. Arrays and ImageData are
 * copied into a buffer of `pool` of their size when it has one (a spare the worker gave back), else into a new one.
 * @throws SelfxitError INVALID_INPUT (thrown, or the promise rejects).
 */
export function toWireInput(input: unknown, pool?: BufferPool): WireConversion | Promise<WireConversion> {
  // Arrays: one copy of just the view (never the rest of a larger buffer it is part of), moved to the worker; the
  // caller keeps its own. Posting the view itself would clone its whole buffer (and copy it twice).
  if (input instanceof Float32Array) {
    checkNotDetached(input, 'Float32Array');
    const data = pooledCopy(input, pool, (b) => new Float32Array(b));
    return { wire: { kind: 'tensor', data }, transfer: [data.buffer] };
  }
  if (isA<ImageData>(input, 'ImageData')) {
    const pixels = input.data;
    checkNotDetached(pixels, 'ImageData');
    // Chromium's `pixelFormat: 'rgba-float16'` ImageData holds a Float16Array: its values would be read as bytes
    if (!(pixels instanceof Uint8ClampedArray))
      throw new SelfxitError(
        'INVALID_INPUT',
        'only 8-bit RGBA ImageData is supported (this one is not: a float pixel format?); draw it on a canvas first',
        { input: 'ImageData' },
      );
    const data = pooledCopy(pixels, pool, (b) => new Uint8ClampedArray(b));
    return { wire: { kind: 'pixels', width: input.width, height: input.height, data }, transfer: [data.buffer] };
  }
  if (isA<ImageBitmap>(input, 'ImageBitmap')) {
    // A closed (or transferred) ImageBitmap reads as 0 x 0 and cannot be posted.
    if (input.width === 0 || input.height === 0)
      throw new SelfxitError('INVALID_INPUT', 'the ImageBitmap is closed (or was transferred): pass an open one', {
        input: 'ImageBitmap',
      });
    // Cloned, not transferred: the caller keeps its bitmap.
    return { wire: { kind: 'bitmap', bitmap: input }, transfer: [] };
  }
  if (isA<Blob>(input, 'Blob')) return { wire: { kind: 'blob', blob: input }, transfer: [] };
  return elementInput(input);
}

/** An <img> or canvas read into a new ImageBitmap (moved to the worker). */
async function elementInput(input: unknown): Promise<WireConversion> {
  if (isA<HTMLImageElement>(input, 'HTMLImageElement')) {
    if (!input.complete || input.naturalWidth === 0) {
      throw new SelfxitError(
        'INVALID_INPUT',
        `the <img> is not loaded (or failed to load): ${input.currentSrc || input.src || 'no src'}; await img.decode() first`,
      );
    }
    const bitmap = await bitmapOf(input, '<img>');
    return { wire: { kind: 'bitmap', bitmap }, transfer: [bitmap] };
  }
  if (isA<HTMLCanvasElement>(input, 'HTMLCanvasElement') || isA<OffscreenCanvas>(input, 'OffscreenCanvas')) {
    if (input.width === 0 || input.height === 0)
      throw new SelfxitError('INVALID_INPUT', 'the canvas is empty (0 width or height)');
    const bitmap = await bitmapOf(input, 'canvas');
    return { wire: { kind: 'bitmap', bitmap }, transfer: [bitmap] };
  }
  throw new SelfxitError(
    'INVALID_INPUT',
    `unsupported input type ${typeName(input)}: pass an ImageBitmap, ImageData, HTMLImageElement, HTMLCanvasElement, OffscreenCanvas, Blob or a preprocessed Float32Array`,
    { type: typeName(input) },
  );
}

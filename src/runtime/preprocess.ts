// Worker-side preprocessing: any accepted input → the model's float32 input, exactly as the manifest says
// (resize to H×W on an OffscreenCanvas, RGBA → RGB or luma, `(v/255 - mean)/std`, NCHW or NHWC).
import { SelfxitError, isSelfxitError } from '../errors.js';
import type { InputSpec } from '../bundle/manifest.js';
import type { WireInput } from '../protocol.js';
import { inputDims, rgbaToChannels, toModelInput } from '../bundle/input.js';

export { inputDims };

/** Values per sample of the model input (C*H*W). */
export function inputSize(spec: InputSpec): number {
  return spec.channels * spec.height * spec.width;
}

/** The channels of one image on their way to the model input ({@link rgbaToInput} is synchronous: calls never share it). */
let channelScratch = new Uint8Array(0);

/**
 * RGBA pixels of exactly `spec.height × spec.width` → model input written at `out[offset…]`.
 * Grayscale models get luma `round(0.299 R + 0.587 G + 0.114 B)`, the same as the CLI's image loader.
 */
export function rgbaToInput(
  rgba: Uint8Array | Uint8ClampedArray,
  spec: InputSpec,
  out: Float32Array,
  offset = 0,
): void {
  const hw = spec.height * spec.width;
  if (rgba.length !== hw * 4) {
    throw new SelfxitError(
      'INVALID_INPUT',
      `expected ${spec.width}x${spec.height} RGBA pixels (${hw * 4} bytes), got ${rgba.length} bytes`,
    );
  }
  const c = spec.channels;
  if (channelScratch.length < hw * c) channelScratch = new Uint8Array(hw * c);
  const hwc = rgbaToChannels(rgba, hw, c, channelScratch);
  toModelInput({ data: hwc, count: 1 }, 0, 1, spec, out.subarray(offset, offset + hw * c));
}

function describe(input: WireInput): string {
  switch (input.kind) {
    case 'tensor':
      return `Float32Array(${input.data.length})`;
    case 'bitmap':
      return `ImageBitmap ${input.bitmap.width}x${input.bitmap.height}`;
    case 'pixels':
      return `ImageData ${input.width}x${input.height}`;
    case 'blob':
      return `Blob (${input.blob.type || 'unknown type'}, ${input.blob.size} bytes)`;
  }
}

/** The 2D context images are resized on, made once per size (drawScaled is synchronous, so calls never share it). */
let scaler:
  { readonly width: number; readonly height: number; readonly ctx: OffscreenCanvasRenderingContext2D } | undefined;

/** Draws an image source scaled to H×W and reads its RGBA pixels back. */
function drawScaled(source: CanvasImageSource, spec: InputSpec): Uint8ClampedArray {
  if (typeof OffscreenCanvas === 'undefined') {
    throw new SelfxitError(
      'INVALID_INPUT',
      'resizing images needs OffscreenCanvas, which this browser lacks; pass ImageData of the model size or a Float32Array',
    );
  }
  if (scaler?.width !== spec.width || scaler.height !== spec.height) {
    const ctx = new OffscreenCanvas(spec.width, spec.height).getContext('2d', { willReadFrequently: true });
    if (!ctx) throw new SelfxitError('INVALID_INPUT', 'cannot get a 2D context to resize the image');
    scaler = { width: spec.width, height: spec.height, ctx };
  }
  const { ctx } = scaler;
  ctx.clearRect(0, 0, spec.width, spec.height);
  try {
    ctx.drawImage(source, 0, 0, spec.width, spec.height);
    return ctx.getImageData(0, 0, spec.width, spec.height).data;
  } catch (e) {
    // A cross-origin image read without CORS taints the canvas: getImageData throws a SecurityError.
    const name = (e as { name?: unknown } | undefined)?.name;
    const message = (e as { message?: unknown } | undefined)?.message;
    const why =
      name === 'SecurityError'
        ? 'the image is cross-origin and was loaded without CORS, so its pixels may not be read: serve it with ' +
          'Access-Control-Allow-Origin and load it with crossorigin="anonymous" (or fetch it as a Blob)'
        : `its pixels cannot be read: ${String(message ?? e)}`;
    throw new SelfxitError(
      'INVALID_INPUT',
      `cannot preprocess the image: ${why}`,
      { reason: String(name) },
      { cause: e },
    );
  }
}

async function toBitmap(input: WireInput & { kind: 'blob' | 'pixels' }): Promise<ImageBitmap> {
  try {
    if (input.kind === 'blob')
      return await createImageBitmap(input.blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    // The pixels crossed to the worker as a copy of their own: wrap them, no second copy.
    const data = new ImageData(input.data as Uint8ClampedArray<ArrayBuffer>, input.width, input.height);
    return await createImageBitmap(data, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw new SelfxitError(
      'INVALID_INPUT',
      `cannot decode ${describe(input)} as an image: ${(e as Error).message}`,
      { input: describe(input) },
      { cause: e },
    );
  }
}

/** Throws INVALID_INPUT unless a preprocessed input is a Float32Array of `size` finite values. */
function checkTensor(input: WireInput & { kind: 'tensor' }, spec: InputSpec, size: number): void {
  if (!(input.data instanceof Float32Array) || input.data.length !== size) {
    const shape = inputDims(spec, 1).slice(1).join('x');
    throw new SelfxitError(
      'INVALID_INPUT',
      `a preprocessed input must be a Float32Array of ${size} values (${spec.layout} ${shape}), got ${describe(input)}`,
      { expected: size, got: input.data instanceof Float32Array ? input.data.length : null },
    );
  }
  const bad = input.data.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0)
    throw new SelfxitError(
      'INVALID_INPUT',
      `a preprocessed input must hold finite numbers; value ${bad} is ${String(input.data[bad])}`,
      { index: bad },
    );
}

/**
 * Closes the ImageBitmaps among `inputs` from index `from` on: a call that fails before it reached them (each one is
 * closed once drawn) frees their memory now instead of at garbage collection.
 */
export function closeBitmaps(inputs: readonly WireInput[], from = 0): void {
  if (!Array.isArray(inputs)) return;
  for (let i = from; i < inputs.length; i++) {
    const w = inputs[i] as Partial<WireInput> | undefined;
    if (w?.kind === 'bitmap') (w as { bitmap?: Partial<ImageBitmap> }).bitmap?.close?.();
  }
}

/**
 * The model input of `inputs`, row after row. One preprocessed input that fills its own buffer is used as it is (it
 * crossed to the worker as a copy nothing else holds): no copy. Otherwise written into `into` when it has the size
 * (a buffer the caller reuses), else into a new one. An input's INVALID_INPUT names its index in a batch. Every
 * ImageBitmap among the inputs is closed, also when one input fails.
 */
export async function preprocessBatch(
  inputs: readonly WireInput[],
  spec: InputSpec,
  into?: Float32Array,
): Promise<Float32Array> {
  const size = inputSize(spec);
  const only = inputs.length === 1 ? inputs[0]! : undefined;
  if (
    only?.kind === 'tensor' &&
    only.data instanceof Float32Array &&
    only.data.byteOffset === 0 &&
    only.data.buffer.byteLength === only.data.byteLength
  ) {
    checkTensor(only, spec, size);
    return only.data;
  }
  const all = into?.length === inputs.length * size ? into : new Float32Array(inputs.length * size);
  for (let i = 0; i < inputs.length; i++) {
    try {
      const input = inputs[i]!;
      if (!preprocessNow(input, spec, all, i * size)) await preprocessImage(input, spec, all, i * size);
    } catch (e) {
      closeBitmaps(inputs, i + 1); // the inputs after it are not drawn
      if (isSelfxitError(e) && inputs.length > 1)
        throw new SelfxitError(e.code, `input ${i}: ${e.message}`, { ...e.details, inputIndex: i });
      throw e;
    }
  }
  return all;
}

/**
 * Writes one input's model tensor at `out[offset…]`. Throws INVALID_INPUT for a tensor of the
 * wrong length or holding NaN/±Infinity, an empty or undecodable image, or malformed pixels.
 */
export async function preprocessInto(
  input: WireInput,
  spec: InputSpec,
  out: Float32Array,
  offset: number,
): Promise<void> {
  if (!preprocessNow(input, spec, out, offset)) await preprocessImage(input, spec, out, offset);
}

/**
 * {@link preprocessInto} for the inputs that need no image decoding (a tensor, pixels of the model's size): written
 * at once, true; false for the others (nothing written), which {@link preprocessImage} takes.
 */
function preprocessNow(input: WireInput, spec: InputSpec, out: Float32Array, offset: number): boolean {
  switch (input.kind) {
    case 'tensor': {
      checkTensor(input, spec, inputSize(spec));
      out.set(input.data, offset);
      return true;
    }
    case 'pixels': {
      if (!(input.width > 0 && input.height > 0) || input.data.length !== input.width * input.height * 4) {
        throw new SelfxitError(
          'INVALID_INPUT',
          `ImageData ${input.width}x${input.height} must hold ${input.width * input.height * 4} bytes, got ${input.data.length}`,
        );
      }
      if (input.width !== spec.width || input.height !== spec.height) return false;
      rgbaToInput(input.data, spec, out, offset); // exact pixels, no resampling
      return true;
    }
    default:
      return false;
  }
}

/** The inputs {@link preprocessNow} leaves: images decoded and resized on a canvas. */
async function preprocessImage(input: WireInput, spec: InputSpec, out: Float32Array, offset: number): Promise<void> {
  switch (input.kind) {
    case 'pixels': {
      const bmp = await toBitmap(input);
      try {
        rgbaToInput(drawScaled(bmp, spec), spec, out, offset);
      } finally {
        bmp.close();
      }
      return;
    }
    case 'bitmap':
    case 'blob': {
      const bmp = input.kind === 'bitmap' ? input.bitmap : await toBitmap(input);
      try {
        if (!(bmp.width > 0 && bmp.height > 0))
          throw new SelfxitError('INVALID_INPUT', `the image is empty (${describe(input)})`);
        rgbaToInput(drawScaled(bmp, spec), spec, out, offset);
      } finally {
        bmp.close();
      }
      return;
    }
    default:
      throw new SelfxitError(
        'INVALID_INPUT',
        `unsupported input kind ${JSON.stringify((input as { kind?: unknown }).kind)}`,
      );
  }
}

// Worker preprocessing in Node: RGBA → model input (NCHW/NHWC, RGB/luma, mean/std) and INVALID_INPUT checks; what
// crosses to the worker and into the model input without extra copies.
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { InputSpec } from '../src/bundle/manifest.js';
import type { WireInput } from '../src/protocol.js';
import { SelfxitError } from '../src/errors.js';
import { toWireInput } from '../src/page/inputs.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { inputDims, inputSize, preprocessBatch, preprocessInto, rgbaToInput } from '../src/runtime/preprocess.js';

const rgb = (layout: 'NCHW' | 'NHWC'): InputSpec => ({
  name: 'x',
  height: 2,
  width: 2,
  channels: 3,
  layout,
  mean: [0.5, 0.25, 0],
  std: [0.5, 0.25, 1],
});
// 2x2 pixels: (R, G, B, A)
const pixels = Uint8ClampedArray.from([255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 51, 102, 153, 0]);

describe('rgbaToInput', () => {
  it('writes NCHW planes with (v/255 - mean)/std', () => {
    const out = new Float32Array(12);
    rgbaToInput(pixels, rgb('NCHW'), out);
    const r = [1, 0, 0, 0.2].map((v) => (v - 0.5) / 0.5);
    const g = [0, 1, 0, 0.4].map((v) => (v - 0.25) / 0.25);
    const b = [0, 0, 1, 0.6];
    expect(Array.from(out)).toEqual([...r, ...g, ...b].map((v) => expect.closeTo(v, 5)));
  });

  it('writes NHWC interleaved, at an offset', () => {
    const out = new Float32Array(14).fill(9);
    rgbaToInput(pixels, rgb('NHWC'), out, 2);
    expect(out[0]).toBe(9);
    expect(out[2]).toBeCloseTo(1); // R of pixel 0: (1 - 0.5) / 0.5
    expect(out[3]).toBeCloseTo(-1); // G of pixel 0: (0 - 0.25) / 0.25
    expect(out[13]).toBeCloseTo(0.6); // B of pixel 3
  });

  it('uses rounded luma for grayscale models, like the CLI image loader', () => {
    const gray: InputSpec = { name: 'x', height: 2, width: 2, channels: 1, layout: 'NCHW', mean: [0], std: [1] };
    const out = new Float32Array(4);
    rgbaToInput(pixels, gray, out);
    const luma = [
      [255, 0, 0],
      [0, 255, 0],
      [0, 0, 255],
      [51, 102, 153],
    ].map(([r, g, b]) => Math.round(0.299 * r! + 0.587 * g! + 0.114 * b!) / 255);
    expect(Array.from(out)).toEqual(luma.map((v) => expect.closeTo(v, 6)));
  });

  it('rejects pixels of the wrong size', () => {
    expect(() => rgbaToInput(new Uint8ClampedArray(8), rgb('NCHW'), new Float32Array(12))).toThrow(SelfxitError);
  });
});

describe('preprocessInto', () => {
  const spec = rgb('NCHW');
  it('copies a Float32Array of the right length', async () => {
    const out = new Float32Array(24);
    await preprocessInto({ kind: 'tensor', data: Float32Array.from({ length: 12 }, (_, i) => i) }, spec, out, 12);
    expect(out[12]).toBe(0);
    expect(out[23]).toBe(11);
    expect(inputSize(spec)).toBe(12);
    expect(inputDims(spec, 5)).toEqual([5, 3, 2, 2]);
    expect(inputDims(rgb('NHWC'), 5)).toEqual([5, 2, 2, 3]);
  });

  it('throws INVALID_INPUT naming the expected size for a wrong-length tensor', async () => {
    const err = await preprocessInto(
      { kind: 'tensor', data: new Float32Array(7) },
      spec,
      new Float32Array(12),
      0,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SelfxitError);
    expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { expected: 12, got: 7 } });
    expect((err as Error).message).toContain('NCHW 3x2x2');
  });

  it('throws INVALID_INPUT for malformed pixels', async () => {
    await expect(
      preprocessInto(
        { kind: 'pixels', width: 2, height: 2, data: new Uint8ClampedArray(3) },
        spec,
        new Float32Array(12),
        0,
      ),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
  });

  it('takes exact-size pixels without resampling', async () => {
    const out = new Float32Array(12);
    await preprocessInto({ kind: 'pixels', width: 2, height: 2, data: pixels }, spec, out, 0);
    const direct = new Float32Array(12);
    rgbaToInput(pixels, spec, direct);
    expect(out).toEqual(direct);
  });
});

describe('round trip without extra copies', () => {
  const spec = rgb('NCHW');

  it('the page moves a compact copy of a Float32Array view (never its whole buffer), and the caller keeps its own', async () => {
    const big = Float32Array.from({ length: 100 }, (_, i) => i);
    const view = big.subarray(20, 32);
    const { wire, transfer } = await toWireInput(view);
    if (wire.kind !== 'tensor') throw new Error(wire.kind);
    expect(Array.from(wire.data)).toEqual(Array.from(view));
    expect(wire.data.buffer).not.toBe(big.buffer);
    expect(wire.data.buffer.byteLength).toBe(12 * 4);
    expect(transfer).toEqual([wire.data.buffer]);
    // what postMessage does to a transferred buffer: the copy goes, the caller's array stays
    structuredClone(wire, { transfer: transfer as ArrayBuffer[] });
    expect(wire.data.length).toBe(0);
    expect(view[0]).toBe(20);
  });

  it('the worker runs one preprocessed input from its own buffer, and fills one buffer for a batch', async () => {
    const one = Float32Array.from({ length: inputSize(spec) }, (_, i) => i / 10);
    expect(await preprocessBatch([{ kind: 'tensor', data: one }], spec)).toBe(one);
    const view = new Float32Array(2 * inputSize(spec)).subarray(0, inputSize(spec));
    const fromView = await preprocessBatch([{ kind: 'tensor', data: view }], spec);
    expect(fromView).not.toBe(view);
    expect(fromView.length).toBe(inputSize(spec));
    const two = await preprocessBatch(
      [
        { kind: 'tensor', data: one },
        { kind: 'pixels', width: 2, height: 2, data: pixels },
      ],
      spec,
    );
    expect(Array.from(two.subarray(0, inputSize(spec)))).toEqual(Array.from(one));
    const expected = new Float32Array(inputSize(spec));
    rgbaToInput(pixels, spec, expected);
    expect(Array.from(two.subarray(inputSize(spec)))).toEqual(Array.from(expected));
  });

  it('checks a single preprocessed input as before, and names the input of a batch that fails', async () => {
    const bad = new Float32Array(inputSize(spec)).fill(Number.NaN);
    await expect(preprocessBatch([{ kind: 'tensor', data: bad }], spec)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
    const ok = new Float32Array(inputSize(spec));
    await expect(
      preprocessBatch(
        [
          { kind: 'tensor', data: ok },
          { kind: 'tensor', data: bad },
        ],
        spec,
      ),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { inputIndex: 1 } });
  });
});

describe('an image whose pixels may not be read', () => {
  afterEach(() => vi.unstubAllGlobals());
  // its own size (the 2D context is made once per size): the stub canvas below is the one this size gets
  const spec: InputSpec = { ...rgb('NCHW'), height: 3, width: 5 };
  /** An OffscreenCanvas whose 2D context throws on reading a tainted (cross-origin, no CORS) image, as browsers do. */
  class TaintedCanvas {
    getContext(): unknown {
      return {
        clearRect: () => {},
        drawImage: () => {},
        getImageData: () => {
          throw new DOMException('The canvas has been tainted by cross-origin data.', 'SecurityError');
        },
      };
    }
  }
  const bitmap = (): WireInput => ({ kind: 'bitmap', bitmap: { width: 8, height: 8, close: () => {} } as ImageBitmap });

  it('is INVALID_INPUT with the CORS hint, and a batch names its index', async () => {
    vi.stubGlobal('OffscreenCanvas', TaintedCanvas);
    const err = await preprocessInto(bitmap(), spec, new Float32Array(inputSize(spec)), 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SelfxitError);
    expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { reason: 'SecurityError' } });
    expect((err as Error).message).toMatch(/crossorigin="anonymous"/);
    const ok: WireInput = { kind: 'tensor', data: new Float32Array(inputSize(spec)) };
    await expect(preprocessBatch([ok, bitmap()], spec)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      details: { inputIndex: 1, reason: 'SecurityError' },
    });
  });

  it('a batch whose input fails closes the bitmaps after it (never drawn); a failed call on the worker closes all', async () => {
    const closed: number[] = [];
    const spied = (k: number): WireInput => ({
      kind: 'bitmap',
      bitmap: { width: 8, height: 8, close: () => closed.push(k) } as ImageBitmap,
    });
    const bad: WireInput = { kind: 'tensor', data: new Float32Array(1) }; // wrong length
    const ok: WireInput = { kind: 'tensor', data: new Float32Array(inputSize(spec)) };
    await expect(preprocessBatch([ok, bad, spied(2), spied(3)], spec)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      details: { inputIndex: 1 },
    });
    expect(closed.sort()).toEqual([2, 3]); // never reached
    closed.length = 0;
    // a call the worker refuses before it preprocesses anything (no bundle open: INTERNAL)
    const api = createWorkerApi();
    const call = { inputs: [spied(0), spied(1)], thresholds: [], probabilities: false };
    await expect(api.classify(call)).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(closed.sort()).toEqual([0, 1]);
  });
});

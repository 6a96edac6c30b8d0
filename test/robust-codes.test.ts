// Error codes that point the right way and no silent nonsense (issue 16, items 7 and 8): out-of-memory and missing
// onnxruntime files get their own codes, bad inputs (NaN/±Infinity, detached buffers, closed ImageBitmaps, null
// options) are INVALID_INPUT/INVALID_ARGUMENT, labels that do not match the model are INVALID_BUNDLE, and the thread
// count reported is the one onnxruntime runs.
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { isOutOfMemory, SelfxitError, toErrorPayload } from '../src/errors.js';
import { ClassifierImpl } from '../src/page/classifier.js';
import { toWireInput } from '../src/page/inputs.js';
import type { ClassifierTransport } from '../src/page/transport.js';
import type { InitRequest, RuntimeState, WireResult } from '../src/protocol.js';
import { noCache } from '../src/runtime/cache.js';
import { checkClassOutputs, effectiveThreads, sessionCreateError, type OrtHandle } from '../src/runtime/ort-backend.js';
import { preprocessInto } from '../src/runtime/preprocess.js';
import { BundleRuntime } from '../src/runtime/runtime.js';
import type { OrtSession } from '../src/ort/types.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

afterEach(() => vi.unstubAllGlobals());

describe('out of memory and onnxruntime files', () => {
  it('an allocation failure crossing the worker boundary is OUT_OF_MEMORY, other foreign errors stay INTERNAL', () => {
    expect(toErrorPayload(new RangeError('Array buffer allocation failed')).code).toBe('OUT_OF_MEMORY');
    expect(toErrorPayload(new Error('Aborted(OOM)')).code).toBe('OUT_OF_MEMORY');
    expect(toErrorPayload(new Error('WebAssembly.Memory.grow(): Maximum memory size exceeded')).code).toBe(
      'OUT_OF_MEMORY',
    );
    expect(toErrorPayload(new Error('std::bad_alloc')).code).toBe('OUT_OF_MEMORY');
    expect(toErrorPayload(new RangeError('Invalid array length')).code).toBe('INTERNAL');
    expect(toErrorPayload(new TypeError('x is undefined')).code).toBe('INTERNAL');
    expect(isOutOfMemory(new SelfxitError('OUT_OF_MEMORY', 'm'))).toBe(true);
  });

  const handle = {
    backend: 'wasm',
    threads: 1,
    fallbackReason: undefined,
    runtimeFiles: ['https://x.test/ort/ort-wasm-simd-threaded.mjs', 'https://x.test/ort/ort-wasm-simd-threaded.wasm'],
  } as unknown as OrtHandle;

  it('a session onnxruntime cannot create: missing/corrupt runtime files, out of memory, or a bad segment', () => {
    const ortFailed = (why: string): SelfxitError =>
      sessionCreateError(new Error(`no available backend found. ERR: [wasm] ${why}`), handle, 0, 'segment-0.onnx');
    const missing = ortFailed(
      'TypeError: Failed to fetch dynamically imported module: https://x.test/ort/ort-wasm-simd-threaded.mjs',
    );
    expect(missing).toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: 'https://x.test/ort/ort-wasm-simd-threaded.mjs' },
    });
    expect(missing.message).toMatch(/wasmPaths/);
    const corrupt = ortFailed(
      'RuntimeError: Aborted(CompileError: WebAssembly.instantiate(): expected magic word 00 61 73 6d, found 3c 21 64 6f @+0)',
    );
    expect(corrupt).toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: 'https://x.test/ort/ort-wasm-simd-threaded.wasm' },
    });
    expect(corrupt.message).toContain('https://x.test/ort/ort-wasm-simd-threaded.mjs');
    expect(sessionCreateError(new RangeError('Array buffer allocation failed'), handle, 1, 's1')).toMatchObject({
      code: 'OUT_OF_MEMORY',
      details: { segment: 1 },
    });
    expect(
      sessionCreateError(new Error('Failed to load model because protobuf parsing failed.'), handle, 2, 's2'),
    ).toMatchObject({ code: 'INVALID_BUNDLE', details: { segment: 2, file: 's2' } });
    const own = new SelfxitError('INVALID_BUNDLE', 'labels');
    expect(sessionCreateError(own, handle, 0, 's0')).toBe(own);
  });
});

describe('threads', () => {
  it('reports 1 thread when not cross-origin isolated, whatever was asked; the asked count when isolated', () => {
    vi.stubGlobal('crossOriginIsolated', false);
    expect(effectiveThreads(4)).toBe(1);
    expect(effectiveThreads(undefined)).toBe(1);
    vi.stubGlobal('crossOriginIsolated', true);
    expect(effectiveThreads(4)).toBe(4);
    expect(effectiveThreads(2)).toBe(2);
  });
});

describe('inputs', () => {
  const spec = { name: 'x', height: 2, width: 2, channels: 1, layout: 'NCHW', mean: [0], std: [1] } as const;

  it('a Float32Array holding NaN or ±Infinity is INVALID_INPUT, naming the value', async () => {
    const out = new Float32Array(4);
    for (const bad of [Number.NaN, Infinity, -Infinity]) {
      const data = new Float32Array([0, 1, bad, 2]);
      await expect(preprocessInto({ kind: 'tensor', data }, spec, out, 0)).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        details: { index: 2 },
      });
    }
    await preprocessInto({ kind: 'tensor', data: new Float32Array([0, 1, -3e38, 2]) }, spec, out, 0);
    expect(Array.from(out)).toEqual([0, 1, new Float32Array([-3e38])[0], 2]);
  });

  it('a transferred (detached) buffer and a closed ImageBitmap are INVALID_INPUT on the page', async () => {
    // toWireInput throws at once for these kinds (no promise): classify() rejects with what it throws.
    const wire = async (x: unknown) => toWireInput(x);
    const data = new Float32Array(4);
    structuredClone(data.buffer, { transfer: [data.buffer] });
    await expect(wire(data)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    class FakeBitmap {
      constructor(
        readonly width: number,
        readonly height: number,
      ) {}
    }
    vi.stubGlobal('ImageBitmap', FakeBitmap);
    await expect(wire(new FakeBitmap(0, 0))).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(/closed/),
    });
    await expect(wire(new FakeBitmap(2, 2))).resolves.toMatchObject({ wire: { kind: 'bitmap' } });
  });

  it("an ImageData whose pixels are not 8-bit (Chromium's 'rgba-float16' format) is INVALID_INPUT on the page", async () => {
    class FakeImageData {
      constructor(
        readonly data: Uint8ClampedArray | Float32Array,
        readonly width: number,
        readonly height: number,
      ) {}
    }
    vi.stubGlobal('ImageData', FakeImageData);
    const wire = async (x: unknown) => toWireInput(x);
    await expect(wire(new FakeImageData(new Float32Array(16), 2, 2))).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(/8-bit RGBA/),
    });
    await expect(wire(new FakeImageData(new Uint8ClampedArray(16), 2, 2))).resolves.toMatchObject({
      wire: { kind: 'pixels', width: 2, height: 2 },
    });
  });

  it('classify(input, null) is INVALID_ARGUMENT, not a TypeError', async () => {
    const state: RuntimeState = {
      backend: 'wasm',
      threads: 1,
      crossOriginIsolated: false,
      sessions: [true],
      cachedSegments: [false],
      manifestFromCache: false,
      cacheEnabled: false,
    };
    const transport: ClassifierTransport = {
      state,
      classify: async (): Promise<WireResult[]> => [{ index: 0, confidence: 1, exit: -1, stages: [1], totalMs: 1 }],
      plan: async () => {
        throw new Error('unused');
      },
      dispose: async () => {},
      fail: () => {},
    };
    const manifest = {
      labels: ['a'],
      backbone: { macs: 1 },
      segments: [{ file: 's', bytes: 1, macs: 1, headMacs: 0 }],
      exits: [],
      calibration: { target: 0.9, validationAgreement: 1, expectedMacsFraction: 1, curve: [] },
    } as unknown as BundleManifest;
    const clf = new ClassifierImpl(transport, { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/m.json' });
    const x = new Float32Array(1);
    await expect(clf.classify(x, null as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(clf.classifyBatch([x], 'yes' as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(clf.classify(x)).resolves.toMatchObject({ label: 'a' });
  });
});

describe('labels vs the model', () => {
  let tiny: TinyServer;
  beforeAll(async () => {
    tiny = await serveTinyBundles(() => {});
  });
  afterAll(() => tiny.close());

  const request = (bundle: string): InitRequest => tinyInitRequest(tiny.base, bundle, { cache: false });

  it('a manifest whose label count differs from the classes of the exit heads and the model output is INVALID_BUNDLE', async () => {
    const manifest = JSON.parse(readFileSync(path.join(tiny.dir, 'tiny/manifest.json'), 'utf8')) as BundleManifest;
    cpSync(path.join(tiny.dir, 'tiny'), path.join(tiny.dir, 'tiny-labels'), { recursive: true });
    const labels = [...manifest.labels, 'extra'];
    writeFileSync(path.join(tiny.dir, 'tiny-labels/manifest.json'), JSON.stringify({ ...manifest, labels }));
    await expect(
      BundleRuntime.open(request('tiny-labels'), undefined, { loadOrt: loadOrtNode, cache: noCache }),
    ).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
      details: { labels: labels.length, classes: manifest.labels.length },
    });
    const rt = await BundleRuntime.open(request('tiny'), undefined, { loadOrt: loadOrtNode, cache: noCache });
    await rt.dispose();
  });

  it('checkClassOutputs reads the last segment output and exit outputs; unknown class dims pass', async () => {
    const manifest = {
      labels: ['a', 'b', 'c'],
      segments: [
        { file: 's0', output: 'cut', exitOutput: 'p0' },
        { file: 's1', output: 'logits' },
      ],
    } as unknown as BundleManifest;
    const session = (shapes: Record<string, (number | string)[]>) =>
      ({
        outputMetadata: Object.entries(shapes).map(([name, shape]) => ({
          name,
          isTensor: true,
          type: 'float32',
          shape,
        })),
        release: vi.fn(async () => {}),
      }) as unknown as OrtSession;
    const ok = session({ cut: [1, 8, 4, 4], p0: ['batch', 3] });
    await expect(checkClassOutputs(ok, manifest, 0)).resolves.toBe(ok);
    await expect(checkClassOutputs(session({ logits: ['batch', 'classes'] }), manifest, 1)).resolves.toBeDefined();
    const bad = session({ logits: [1, 10] });
    await expect(checkClassOutputs(bad, manifest, 1)).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
      details: { output: 'logits', labels: 3, classes: 10 },
    });
    expect(bad.release).toHaveBeenCalled();
  });
});

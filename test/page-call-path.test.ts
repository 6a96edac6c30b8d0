// classify()'s batch-1 path on the page (issue 12): one input converted and sent at once, its result built once from
// the reply. Checked against classifyBatch() of the same inputs (the path in parts) over the real worker API on a
// tiny bundle (onnxruntime-node): same decisions, probabilities and result shape; the caller's inputs (a Float32Array,
// a view into a larger buffer, ImageData) are neither detached nor written; errors reject the promise with their codes.
// The input buffers the worker moves back are reused for later inputs of their size (page/buffer-pool.ts), never the
// caller's, bounded, and each in one place at a time.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BufferPool } from '../src/page/buffer-pool.js';
import type { WireInput } from '../src/protocol.js';
import { spareBuffers } from '../src/runtime/api.js';
import type { Classifier, ClassifyResult } from '../src/types.js';
import { closeFakeWorkers } from './fixtures/page-fakes.js';
import { loadTinyClassifier } from './fixtures/tiny-classifier.js';
import { serveTinyBundles, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
beforeAll(async () => void (tiny = await serveTinyBundles(() => {})));
afterAll(() => tiny.close());
afterEach(() => {
  closeFakeWorkers();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

/** ImageData as the page has it (Node has none): RGBA bytes of `width` x `height`. */
class FakeImageData {
  constructor(
    readonly data: Uint8ClampedArray,
    readonly width: number,
    readonly height: number,
  ) {}
}

/** The tiny bundle loaded in a stubbed worker that serves the real worker API. */
const loadTiny = (): Promise<Classifier> => loadTinyClassifier(tiny);

/** A result without its timings (which differ from call to call); probabilities as a plain array. */
function decision(r: ClassifyResult): unknown {
  const { timings, probabilities, ...rest } = r;
  return {
    ...rest,
    keys: Object.keys(r),
    timingKeys: Object.keys(timings),
    stages: timings.stages.length,
    ...(probabilities ? { probabilities: [...probabilities] } : {}),
  };
}

/** A 16 x 16 RGBA image made from tiny input `i` (its first channel's values, scaled to bytes). */
function pixels(i: number): FakeImageData {
  const x = tiny.inputs[i]!;
  const data = new Uint8ClampedArray(16 * 16 * 4);
  for (let p = 0; p < 256; p++) {
    for (let c = 0; c < 3; c++) data[p * 4 + c] = Math.round(((x[c * 256 + p]! + 3) / 6) * 255);
    data[p * 4 + 3] = 255;
  }
  return new FakeImageData(data, 16, 16);
}

describe('classify() at batch 1', () => {
  it('gives what classifyBatch() gives, and leaves the inputs as they were', async () => {
    vi.stubGlobal('ImageData', FakeImageData);
    const clf = await loadTiny();
    for (const probabilities of [false, true]) {
      for (let i = 0; i < 8; i++) {
        const own = tiny.inputs[i]!.slice();
        const big = new Float32Array(own.length + 16).fill(7);
        big.set(own, 8);
        const view = big.subarray(8, 8 + own.length);
        const image = pixels(i);
        const imageBytes = image.data.slice();
        for (const input of [own, view, image] as unknown as Float32Array[]) {
          const one = await clf.classify(input, { probabilities });
          const [batch] = await clf.classifyBatch([input], { probabilities });
          expect(decision(one)).toEqual(decision(batch!));
          expect(Object.keys(one)).toEqual(
            probabilities
              ? ['label', 'index', 'confidence', 'exit', 'timings', 'probabilities']
              : ['label', 'index', 'confidence', 'exit', 'timings'],
          );
          expect(Object.keys(one.timings)).toEqual(['totalMs', 'stages']);
          if (input !== (image as unknown)) {
            expect([one.index, one.exit.index]).toEqual([tiny.expected[i]!.index, tiny.expected[i]!.exit]);
            expect(one.exit.name).toBe(one.exit.index < 0 ? 'backbone' : clf.info().exits[one.exit.index]!.name);
            expect(one.label).toBe(clf.labels[one.index]);
          }
        }
        // nothing detached, nothing written
        expect(own).toEqual(tiny.inputs[i]);
        expect(big.buffer.byteLength).toBe((own.length + 16) * 4);
        expect([...big.subarray(0, 8), ...big.subarray(8 + own.length)]).toEqual(new Array(16).fill(7));
        expect(view).toEqual(tiny.inputs[i]);
        expect(image.data.buffer.byteLength).toBe(imageBytes.byteLength);
        expect(image.data).toEqual(imageBytes);
      }
    }
    // the same input twice in a row, and calls overlapping: each its own result
    const inputs = [0, 1, 2, 3, 0, 0].map((i) => tiny.inputs[i]!);
    const overlapping = await Promise.all(inputs.map((x) => clf.classify(x)));
    expect(overlapping.map((r) => [r.index, r.exit.index])).toEqual(
      [0, 1, 2, 3, 0, 0].map((i) => [tiny.expected[i]!.index, tiny.expected[i]!.exit]),
    );
    expect(new Set(overlapping.map((r) => r.timings)).size).toBe(overlapping.length);
    const profiled = await clf.classify(tiny.inputs[0]!, { profile: true });
    expect(Object.keys(profiled.timings)).toEqual(['totalMs', 'stages', 'profile']);
    expect(profiled.timings.profile!.runs).toBeGreaterThan(0);
    await clf.dispose();
  }, 30_000);

  it('rejects (never throws) with the codes it had: INVALID_INPUT, INVALID_ARGUMENT, ABORTED, DISPOSED', async () => {
    const clf = await loadTiny();
    const moved = tiny.inputs[0]!.slice();
    structuredClone(moved.buffer, { transfer: [moved.buffer] }); // detached, as if sent to another worker
    const calls: [() => Promise<unknown>, string][] = [
      [() => clf.classify(moved), 'INVALID_INPUT'],
      [() => clf.classify({} as Float32Array), 'INVALID_INPUT'],
      [() => clf.classify(tiny.inputs[0]!, null as never), 'INVALID_ARGUMENT'],
      [() => clf.classify(tiny.inputs[0]!, { signal: 'no' as never }), 'INVALID_ARGUMENT'],
      [() => clf.classify(tiny.inputs[0]!, { signal: AbortSignal.abort() }), 'ABORTED'],
      [() => clf.classify(new Float32Array(5)), 'INVALID_INPUT'], // the worker's: wrong size
    ];
    for (const [call, code] of calls) {
      let p: Promise<unknown> | undefined;
      expect(() => (p = call())).not.toThrow();
      await expect(p).rejects.toMatchObject({ code });
    }
    // aborted while in flight: ABORTED at once; the classifier stays usable
    const ac = new AbortController();
    const inFlight = clf.classify(tiny.inputs[1]!, { signal: ac.signal });
    ac.abort();
    await expect(inFlight).rejects.toMatchObject({ code: 'ABORTED' });
    expect((await clf.classify(tiny.inputs[1]!)).index).toBe(tiny.expected[1]!.index);
    await clf.dispose();
    await expect(clf.classify(tiny.inputs[0]!)).rejects.toMatchObject({ code: 'DISPOSED' });
  }, 30_000);
});

describe('input buffers moved back by the worker', () => {
  it("are copied into by later inputs of their size: right results, the callers' buffers never among them", async () => {
    vi.stubGlobal('ImageData', FakeImageData);
    const given: ArrayBuffer[] = [];
    const sizes = new Set<number>();
    const taken: (ArrayBuffer | undefined)[] = [];
    const give = BufferPool.prototype.give;
    const take = BufferPool.prototype.take;
    vi.spyOn(BufferPool.prototype, 'give').mockImplementation(function (this: BufferPool, b: ArrayBuffer) {
      given.push(b);
      sizes.add(b.byteLength); // (moved to the worker again once taken)
      give.call(this, b);
    });
    vi.spyOn(BufferPool.prototype, 'take').mockImplementation(function (this: BufferPool, n: number) {
      const b = take.call(this, n);
      taken.push(b);
      return b;
    });
    const clf = await loadTiny();
    const own: Float32Array[] = [];
    for (let i = 0; i < 16; i++) {
      own.push(tiny.inputs[i]!.slice());
      const r = await clf.classify(own[i]!);
      expect([r.index, r.exit.index]).toEqual([tiny.expected[i]!.index, tiny.expected[i]!.exit]);
      const image = pixels(i);
      const [a, b] = [
        await clf.classify(image as unknown as ImageData),
        await clf.classify(image as unknown as ImageData),
      ];
      expect(decision(a)).toEqual(decision(b)); // the second copy went into the first one's buffer
    }
    // every call after the first of each size copied into a buffer the worker gave back, a buffer of that size
    expect(given).toHaveLength(48);
    expect(taken).toHaveLength(48);
    expect(taken.filter((b) => b === undefined)).toHaveLength(2);
    for (const b of taken.filter((x) => x !== undefined)) expect(given).toContain(b);
    expect(sizes).toEqual(new Set([768 * 4, 16 * 16 * 4]));
    for (const x of own) expect(given).not.toContain(x.buffer);
    own.forEach((x, i) => expect(x).toEqual(tiny.inputs[i]));
    // overlapping calls: each takes its own buffer (or a new one), none answered with another's input
    const many = await Promise.all([5, 6, 7, 8, 5].map((i) => clf.classify(tiny.inputs[i]!)));
    expect(many.map((r) => r.index)).toEqual([5, 6, 7, 8, 5].map((i) => tiny.expected[i]!.index));
    await clf.dispose();
  }, 30_000);

  it('the pool: by exact size, newest first, bounded in count and bytes; no empty, detached or repeated buffer', () => {
    const pool = new BufferPool(3, 90);
    const [a, b, c, d] = [new ArrayBuffer(10), new ArrayBuffer(10), new ArrayBuffer(20), new ArrayBuffer(30)];
    pool.give(a);
    pool.give(b);
    pool.give(b);
    pool.give(new ArrayBuffer(0));
    const moved = new ArrayBuffer(8);
    structuredClone(moved, { transfer: [moved] });
    pool.give(moved);
    pool.give(new ArrayBuffer(91)); // over the byte bound alone
    expect(pool.size).toBe(2);
    expect(pool.take(20)).toBeUndefined();
    expect(pool.take(10)).toBe(b);
    pool.give(c);
    pool.give(d);
    expect(pool.size).toBe(3);
    pool.give(new ArrayBuffer(50)); // 4 buffers (a goes), then 100 bytes (c goes)
    expect(pool.size).toBe(2);
    expect(pool.take(10)).toBeUndefined();
    expect(pool.take(20)).toBeUndefined();
    expect(pool.take(30)).toBe(d);
    pool.clear();
    expect(pool.size).toBe(0);
  });

  it("the worker gives back a request's tensor and pixel buffers, each once, not bitmaps nor detached ones", () => {
    const t = new Float32Array(4);
    const p = new Uint8ClampedArray(16);
    const gone = new Float32Array(4);
    structuredClone(gone.buffer, { transfer: [gone.buffer] });
    const inputs: WireInput[] = [
      { kind: 'tensor', data: t },
      { kind: 'pixels', width: 2, height: 2, data: p },
      { kind: 'tensor', data: t },
      { kind: 'tensor', data: gone },
      { kind: 'blob', blob: new Blob([]) },
    ];
    expect(spareBuffers({ inputs, thresholds: [], probabilities: false })).toEqual([t.buffer, p.buffer]);
    expect(spareBuffers({ inputs: inputs.slice(4), thresholds: [], probabilities: false })).toBeUndefined();
  });
});

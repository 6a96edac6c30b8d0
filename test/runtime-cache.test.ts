// The IndexedDB cache degrades to less or no cache, never to an error or a hang: an IdbBundleCache over a fake
// idb-keyval store (the constructor's openStore seam) whose writes hit the quota (QuotaExceededError), whose reads may
// reject and whose requests may never complete, driven through the worker API on onnxruntime-node with the tiny test
// bundle served over local HTTP. A failed write leaves reads on.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Expected } from '../e2e/fixtures/tiny-bundles.js';
import { fakeIdb, type FakeIdb } from './fixtures/fake-idb.js';
import { loadOrtNode, serveTinyBundles, type TinyServer } from './fixtures/tiny-server.js';
import type { BundleManifest } from '../src/bundle/manifest.js';
import type { InitRequest, WireInput } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { BundleSource } from '../src/runtime/bundle-source.js';
import { IdbBundleCache, READ_BYTES_PER_TIMEOUT, compiledKey, noCache, planKey } from '../src/runtime/cache.js';
import { plainModel, plainModelKey } from '../src/runtime/learn-bundle.js';
import { sha256Hex } from '../src/graph/hash.js';

let dir = '';
let base = '';
let log: string[] = [];
let expected: Expected[] = [];
let inputs: Float32Array[] = [];

const loadOrt = loadOrtNode;
const request = (): InitRequest => ({
  manifestUrl: `${base}/tiny/manifest.json`,
  backend: 'wasm',
  threads: 1,
  cache: true,
  manifestMaxAgeMs: Infinity,
  wasmPaths: '/ort/',
  usePlan: true,
});
const all = (): WireInput[] => inputs.map((data) => ({ kind: 'tensor', data }));
const files = (): string[] => log.map((p) => p.split('/').pop()!).sort();

/** Opens the tiny bundle through the worker API with `cache` and classifies all 64 samples; no call may throw. */
async function openAndClassify(cache: IdbBundleCache) {
  log = [];
  const api = createWorkerApi({ loadOrt, cache });
  const init = await api.init(request());
  const thresholds = init.manifest.exits.map((e) => e.threshold);
  const out = await api.classify({ inputs: all(), thresholds, probabilities: false });
  const results = out.results.map((r) => ({ index: r.index, exit: r.exit }));
  await api.dispose();
  return { init, results, state: out.state, fetched: files() };
}

const want = (): { index: number; exit: number }[] => expected.map((e) => ({ index: e.index, exit: e.exit }));
const NETWORK = ['manifest.json', 'segment-0.onnx', 'segment-1.onnx', 'segment-2.onnx'];

let tiny: TinyServer;

beforeAll(async () => {
  tiny = await serveTinyBundles((p) => log.push(p));
  ({ dir, base, expected, inputs } = tiny);
});

afterAll(() => tiny.close());

describe('IdbBundleCache on a failing store degrades to no cache', () => {
  it('reads reject and put throws QuotaExceededError: load and classify work, the cache reports disabled', async () => {
    const idb = fakeIdb(0, true);
    const { init, results, state, fetched } = await openAndClassify(
      new IdbBundleCache('selfxit-test', 'bundles', () => idb.use),
    );
    expect(init.state).toMatchObject({ cacheEnabled: false, manifestFromCache: false });
    expect(results).toEqual(want());
    expect(state).toMatchObject({
      cacheEnabled: false,
      manifestFromCache: false,
      cachedSegments: [false, false, false],
      sessions: [true, true, true],
    });
    expect(fetched).toEqual(NETWORK);
    // The first read failed (the manifest lookup) and switched the cache off: nothing was written after it.
    expect(idb.readErrors).toBe(1);
    expect(idb.data.size).toBe(0);
    // Its methods keep answering as a miss or a dropped write, never with an error.
    const off = new IdbBundleCache('selfxit-test', 'bundles', () => idb.use);
    await expect(off.putSegment('0'.repeat(64), new Uint8Array(8))).resolves.toBe(false); // did not land
    expect(idb.quotaErrors).toHaveLength(1);
    expect(off.enabled).toBe(false);
    await expect(off.getSegment('0'.repeat(64))).resolves.toBeUndefined();
    await expect(off.segmentKeys()).resolves.toEqual(new Set());
  });

  it('the quota fills up after segment 0: the manifest write (after the load) throws QuotaExceededError, later visits still work', async () => {
    // Room for segment 0 (2.1 kB), not for the manifest entry (3.4 kB) too; the manifest is written once the load
    // succeeded, after segment 0.
    const manifestBytes = readFileSync(path.join(dir, 'tiny/manifest.json')).length;
    const idb = fakeIdb(manifestBytes + 200, false);
    const first = await openAndClassify(new IdbBundleCache('selfxit-test', 'bundles', () => idb.use));
    expect(first.init.state).toMatchObject({ manifestFromCache: false, cachedSegments: [true, false, false] });
    expect(first.results).toEqual(want());
    expect(first.state).toMatchObject({ cacheEnabled: false, cachedSegments: [true, false, false] });
    expect(first.fetched).toEqual(NETWORK);
    expect(idb.quotaErrors).toEqual([`manifest:${base}/tiny/manifest.json`]);
    const sha0 = (JSON.parse(readFileSync(path.join(dir, 'tiny/manifest.json'), 'utf8')) as BundleManifest).segments[0]!
      .sha256;
    expect([...idb.data.keys()]).toEqual([`segment:${sha0}`]);

    // Next visit, same full store: segment 0 comes from it, the manifest and other segments from the network.
    const second = await openAndClassify(new IdbBundleCache('selfxit-test', 'bundles', () => idb.use));
    expect(second.init.state).toMatchObject({ manifestFromCache: false, cachedSegments: [true, false, false] });
    expect(second.results).toEqual(want());
    expect(second.fetched).toEqual(['manifest.json', 'segment-1.onnx', 'segment-2.onnx']);
    expect(idb.quotaErrors).toHaveLength(2);
  });
});

/** `p`, or a rejection after `ms` (a load that would hang fails the test quickly). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`hung ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

describe('IdbBundleCache: stalled requests, and a failed write that leaves reads on', () => {
  afterEach(() => vi.unstubAllGlobals());
  const cacheOn = (idb: FakeIdb) => new IdbBundleCache('selfxit-test', 'bundles', () => idb.use, 100);

  it('a read that never completes is abandoned after the timeout: the load goes on without a cache', async () => {
    const idb = fakeIdb(Infinity, false);
    idb.stall = 'readonly';
    const { init, results, fetched } = await within(openAndClassify(cacheOn(idb)), 10_000);
    expect(init.state).toMatchObject({ cacheEnabled: false, manifestFromCache: false });
    expect(results).toEqual(want());
    expect(fetched).toEqual(NETWORK);
    expect(idb.data.size).toBe(0); // nothing written after the storage stalled
  });

  it('a write that never completes is abandoned, reads go on: the next visit reads what was cached', async () => {
    const idb = fakeIdb(Infinity, false);
    await openAndClassify(cacheOn(idb)); // everything cached
    for (const k of [...idb.data.keys()]) if (String(k).startsWith('compiled:')) idb.data.delete(k); // written again
    idb.stall = 'readwrite';
    const second = await within(openAndClassify(cacheOn(idb)), 10_000);
    expect(second.results).toEqual(want());
    expect(second.init.state).toMatchObject({ manifestFromCache: true });
    // the compiled models' writes timed out, not long enough for IndexedDB to count as hung: writes stay on
    expect(second.state).toMatchObject({ cacheEnabled: true });
    expect(second.fetched).toEqual([]); // segments 1 and 2 read from the cache after the stalled write
  });

  it('offline with the quota full: a failed write (the compiled model) leaves the cached segments readable', async () => {
    const idb = fakeIdb(Infinity, false);
    await openAndClassify(cacheOn(idb)); // manifest and every segment cached
    for (const k of [...idb.data.keys()]) if (String(k).startsWith('compiled:')) idb.data.delete(k);
    idb.quotaBytes = 0; // every write fails from now on
    vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
    const api = createWorkerApi({ loadOrt, cache: cacheOn(idb) });
    const init = await api.init(request());
    expect(init.state).toMatchObject({ manifestFromCache: true });
    // load() compiled segment 0 and could not store the model (quota): writes off
    expect(idb.quotaErrors.some((k) => k.startsWith('compiled:'))).toBe(true);
    const thresholds = init.manifest.exits.map((e) => e.threshold);
    const early = expected.findIndex((e) => e.exit === 0);
    const deep = expected.findIndex((e) => e.exit === -1);
    await api.classify({ inputs: [all()[early]!], thresholds, probabilities: false });
    // a deep input needs segments 1 and 2, not loaded yet: read from the cache (no network)
    const { results, state } = await api.classify({ inputs: [all()[deep]!], thresholds, probabilities: false });
    expect(results[0]).toMatchObject({ index: expected[deep]!.index, exit: -1 });
    expect(state).toMatchObject({ cacheEnabled: false });
    await api.dispose();
  });

  it('a read that times out behind a write of its own still under way is a miss, not dead storage, until the write looks hung', async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = cacheOn(idb);
    expect(await cache.putSegment('a', new Uint8Array([1, 2]))).toBe(true); // landed
    idb.stall = 'readwrite';
    const slowWrite = cache.putSegment('b', new Uint8Array([3])); // never settled by IndexedDB
    idb.stall = 'readonly'; // reads queued behind it wait too
    expect(await cache.getSegment('a')).toBeUndefined(); // timed out: a miss
    expect(await slowWrite).toBe(false); // timed out: not known to have landed, nor failed: writes stay on
    idb.stall = undefined;
    expect(await cache.getSegment('a')).toEqual(new Uint8Array([1, 2]));
    expect(cache.enabled).toBe(true);
    // a write unsettled for 3 timeouts means IndexedDB hangs: a read timing out behind it now turns reads off
    await new Promise((r) => setTimeout(r, 300));
    idb.stall = 'readonly';
    expect(await cache.getSegment('a')).toBeUndefined();
    idb.stall = undefined;
    expect(await cache.getSegment('a')).toBeUndefined();
    expect(cache.enabled).toBe(false);
  });

  it('a slow write that completes after the timeout keeps caching on; writes that hang for 3 timeouts turn it off', async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = cacheOn(idb); // 100 ms per operation
    idb.writeDelayMs = 150; // a large compiled model on a slow disk
    const slow = await cache.putCompiled('compiled:x:wasm:3:v2', { sha256: 'a', bytes: new Uint8Array(10) });
    expect(slow).toBe(false); // abandoned: not known to have landed (the runtime keeps what it would read back)
    expect(cache.enabled).toBe(true);
    idb.writeDelayMs = 0;
    await cache.putSegment('abc', new Uint8Array(4));
    expect(idb.data.has('segment:abc')).toBe(true);
    await new Promise((r) => setTimeout(r, 100)); // the slow write landed meanwhile
    expect(idb.data.has('compiled:x:wasm:3:v2')).toBe(true);
    // IndexedDB hangs: each write is abandoned after 100 ms; once one has been unsettled for 300 ms, writes stop
    idb.stall = 'readwrite';
    const t0 = performance.now();
    while (cache.enabled && performance.now() - t0 < 2_000) await cache.putSegment('def', new Uint8Array(4));
    expect(cache.enabled).toBe(false);
    expect(performance.now() - t0).toBeLessThan(600);
    expect(await cache.getSegment('abc')).toEqual(new Uint8Array(4)); // reads go on
  });

  it('a slow read of a large segment is waited for by its size: the cache stays on (a small read that slow turns it off)', async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = cacheOn(idb); // 100 ms per operation, plus 100 ms per READ_BYTES_PER_TIMEOUT expected
    const bytes = new Uint8Array([1, 2, 3]);
    expect(await cache.putSegment('big', bytes)).toBe(true);
    idb.readDelayMs = 150; // a large segment on a slow phone's storage
    expect(await cache.getSegment('big', READ_BYTES_PER_TIMEOUT)).toEqual(bytes); // waited for up to 200 ms
    expect(await cache.getCompiled('compiled:x', READ_BYTES_PER_TIMEOUT)).toBeUndefined(); // a miss, in time
    expect(cache.enabled).toBe(true);
    idb.readDelayMs = 0;
    expect(await cache.putSegment('next', bytes)).toBe(true); // still written
    // the runtime says how large a segment it reads is (the manifest's bytes)
    const sizes: (number | undefined)[] = [];
    const manifest = { segments: [{ file: 's0.onnx', sha256: await sha256Hex(bytes), bytes: 3 }] };
    const seen = { ...noCache, getSegment: async (_h: string, n?: number) => (sizes.push(n), bytes) };
    const source = new BundleSource(
      manifest as unknown as BundleManifest,
      'https://x.test/m.json',
      seen,
      () => {},
      new Set(),
    );
    expect(await source.segmentBytes(0)).toEqual(bytes);
    expect(sizes).toEqual([3]);
    // without a size, a read that slow means storage that does not answer: off
    idb.readDelayMs = 150;
    expect(await cache.getSegment('big')).toBeUndefined();
    expect(cache.enabled).toBe(false);
  });

  it('reads whose size the manifest does not give (the full model, a learning model offline) are waited for by size', async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = cacheOn(idb); // 100 ms per operation, plus 100 ms per READ_BYTES_PER_TIMEOUT expected
    const model = new Uint8Array(1000).fill(7);
    const sha256 = await sha256Hex(model);
    expect(await cache.putSegment(sha256, model)).toBe(true);
    expect(await cache.putCompiled(plainModelKey('https://x.test/m.onnx'), { sha256, bytes: model })).toBe(true);
    idb.readMsPerByte = 0.15; // 150 ms for this entry: slow storage
    // the full model: waited for as long as its segments would be (their bytes: READ_BYTES_PER_TIMEOUT, 200 ms)
    const manifest = {
      backbone: { file: 'model.onnx', sha256 },
      segments: [{ file: 's0.onnx', sha256: 'x', bytes: READ_BYTES_PER_TIMEOUT }],
    };
    const source = new BundleSource(
      manifest as unknown as BundleManifest,
      'https://x.test/m.json',
      cache,
      () => {},
      new Set(),
    );
    expect(await source.backboneBytes()).toEqual(model);
    expect(cache.enabled).toBe(true);
    // a learning load offline: the model's size is not known, it is waited for the longest (12 timeouts)
    vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
    const got = await plainModel('https://x.test/m.onnx', cache, () => {});
    expect(got.bytes).toEqual(model);
    expect(cache.enabled).toBe(true);
  });

  it('a plan miss deletes the plan an older selfxit stored without the engine in its key (never read again)', async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = cacheOn(idb);
    idb.data.set('plan:h:wasm:1', { version: 1, manifestHash: 'h', backend: 'wasm' }); // an older version's key
    idb.data.set('plan:other:wasm:1', { version: 1, manifestHash: 'other', backend: 'wasm' });
    expect(await cache.getPlan(planKey('h', 'wasm', 1, 'compiled'))).toBeUndefined();
    await vi.waitFor(() => expect(idb.data.has('plan:h:wasm:1')).toBe(false));
    expect(idb.data.has('plan:other:wasm:1')).toBe(true); // another bundle version's: left to its own eviction
  });

  it('a compiled-model miss deletes the models older formats stored under its key (never read again)', async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = cacheOn(idb);
    const current = `${compiledKey('h', 'wasm', 3)}:gated`;
    const v2 = current.replace(/:v\d+/, ':v2');
    const v1 = current.replace(/:v\d+/, '');
    for (const k of [v2, v1, 'compiled:other:wasm:3:v2:gated', `${compiledKey('h', 'wasm', 2)}:chain`])
      idb.data.set(k, { sha256: 'a', bytes: new Uint8Array(1) });
    expect(await cache.getCompiled(current)).toBeUndefined();
    await vi.waitFor(() => expect(idb.data.has(v2) || idb.data.has(v1)).toBe(false));
    expect(idb.data.has('compiled:other:wasm:3:v2:gated')).toBe(true); // another bundle version's: its own eviction
    expect(idb.data.has(`${compiledKey('h', 'wasm', 2)}:chain`)).toBe(true); // the current format's: kept
  });

  it("a read is waited for at most 12 operation timeouts, however large (under load()'s timeoutMs)", async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = cacheOn(idb);
    expect(await cache.putSegment('big', new Uint8Array(3))).toBe(true);
    idb.readDelayMs = 1600; // hung: past 12 × 100 ms, far under the 100 × 100 ms its size alone would give
    expect(await cache.getSegment('big', 99 * READ_BYTES_PER_TIMEOUT)).toBeUndefined();
    expect(cache.enabled).toBe(false);
  });

  it('a manifest marked outdated while writes fail is still outdated to the next read in this worker', async () => {
    const idb = fakeIdb(Infinity, false);
    const url = 'https://example.test/outdated/manifest.json';
    const entry = { hash: 'h1', text: '{}', storedAt: 1 };
    await cacheOn(idb).putManifest(url, entry);
    idb.quotaBytes = 0;
    const full = cacheOn(idb);
    await full.putManifest(url, { ...entry, outdated: true });
    expect(full.enabled).toBe(false);
    expect(await cacheOn(idb).getManifest(url)).toMatchObject({ hash: 'h1', outdated: true });
  });
});

// Deploys and the cache, through the worker API on onnxruntime-node over the tiny bundles: a bundle replaced in place
// while its manifest is cached (the next load, or the page's re-open, gets the new version), also behind an HTTP cache
// that keeps the old files, a failed load caching nothing, and the cached manifest standing in, however old, when the network is down.
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Expected } from '../e2e/fixtures/tiny-bundles.js';
import type { SelfxitError } from '../src/errors.js';
import type { InitRequest, WireInput } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { writeBundleV1, writeBundleV2 } from './fixtures/bundle-versions.js';
import { MemoryCache } from './fixtures/memory-cache.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
let log: string[] = [];
let expected: Expected[] = [];

beforeAll(async () => {
  tiny = await serveTinyBundles((p) => log.push(p));
  expected = tiny.expected;
});
afterAll(() => tiny.close());
afterEach(() => vi.unstubAllGlobals());

const request = (bundle: string, over: Partial<InitRequest> = {}): InitRequest =>
  tinyInitRequest(tiny.base, bundle, over);
const tensors = (idx: number[]): WireInput[] => idx.map((i) => ({ kind: 'tensor', data: tiny.inputs[i]! }));
const deep = (): number => expected.findIndex((e) => e.exit === -1);
const early = (): number => expected.findIndex((e) => e.exit === 0);

/** Copies the tiny bundle to `name` (version 1). */
const writeV1 = (name: string): void => writeBundleV1(path.join(tiny.dir, 'tiny'), path.join(tiny.dir, name));
/** Replaces `name` in place with version 2: the segments in `changed` re-encoded (same names, new sha256). */
const writeV2 = (name: string, changed: number[]): Promise<void> =>
  writeBundleV2(path.join(tiny.dir, 'tiny'), path.join(tiny.dir, name), changed);

describe('a bundle replaced in place while its manifest is cached', () => {
  it('a deeper segment of the new version fails with bundleChanged, and the next load opens the new version', async () => {
    writeV1('swap');
    const cache = new MemoryCache();
    const v1 = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init1 = await v1.init(request('swap'));
    const t1 = init1.manifest.exits.map((e) => e.threshold);
    await v1.classify({ inputs: tensors([early()]), thresholds: t1, probabilities: false }); // segment 0 only
    await v1.dispose();
    await writeV2('swap', [1, 2]);

    // Reload: the cached manifest (fresh) and segment 0 (unchanged) open it; a deep input meets the new segment 1.
    log = [];
    const stale = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init2 = await stale.init(request('swap'));
    expect(init2.manifestHash).toBe(init1.manifestHash);
    expect(log).toEqual([]);
    const err = await stale
      .classify({ inputs: tensors([deep()]), thresholds: t1, probabilities: false })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INTEGRITY_ERROR', details: { segment: 1, bundleChanged: true } });
    expect((err as Error).message).toMatch(/was replaced since it was loaded/);
    // segment 1 once more past the HTTP cache (it may hold an older copy), then the manifest
    expect(log).toEqual(['/swap/segment-1.onnx', '/swap/segment-1.onnx', '/swap/manifest.json']);
    await stale.dispose();

    // The next load (no cache: 'reload', the age limit is Infinity) fetches the new manifest and works.
    log = [];
    const v2 = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init3 = await v2.init(request('swap'));
    expect(init3.manifestHash).not.toBe(init1.manifestHash);
    expect(init3.state.manifestFromCache).toBe(false);
    const [r] = (await v2.classify({ inputs: tensors([deep()]), thresholds: t1, probabilities: false })).results;
    expect(r).toMatchObject({ index: expected[deep()]!.index, exit: -1 });
    expect(log).toEqual(['/swap/manifest.json', '/swap/segment-1.onnx', '/swap/segment-2.onnx']);
    await v2.dispose();
    // The old version's segments 1 and 2 were never cached; what is cached now is the new version's.
    expect([...cache.segments.keys()].sort()).toEqual(init3.manifest.segments.map((s) => s.sha256).sort());
  });

  it('the cached manifest cannot be marked outdated (writes dropped): the re-open avoids it by its hash', async () => {
    writeV1('swap-ro');
    const cache = new MemoryCache();
    const v1 = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init1 = await v1.init(request('swap-ro'));
    const t1 = init1.manifest.exits.map((e) => e.threshold);
    await v1.dispose();
    // storage full since: writes are dropped, reads go on (the outdated mark of the replaced manifest never lands)
    cache.putManifest = async () => {};
    await writeV2('swap-ro', [1, 2]);

    const stale = createWorkerApi({ loadOrt: loadOrtNode, cache });
    expect((await stale.init(request('swap-ro'))).manifestHash).toBe(init1.manifestHash);
    const err = await stale
      .classify({ inputs: tensors([deep()]), thresholds: t1, probabilities: false })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'INTEGRITY_ERROR',
      details: { bundleChanged: true, manifestHash: init1.manifestHash },
    });
    await stale.dispose();

    // the page's re-open: a new worker (none of the old one's memory), told which manifest the error named
    const avoidManifestHash = (err as SelfxitError).details!.manifestHash as string;
    const v2 = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init2 = await v2.init(request('swap-ro', { avoidManifestHash }));
    expect(init2.manifestHash).not.toBe(init1.manifestHash);
    expect(init2.state.manifestFromCache).toBe(false);
    const t2 = init2.manifest.exits.map((e) => e.threshold);
    const [r] = (await v2.classify({ inputs: tensors([deep()]), thresholds: t2, probabilities: false })).results;
    expect(r).toMatchObject({ index: expected[deep()]!.index, exit: -1 });
    await v2.dispose();
  });

  it('segment 0 of a replaced bundle changed and the outdated mark is dropped: init() opens the new version', async () => {
    writeV1('swap0-ro');
    const cache = new MemoryCache();
    const v1 = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init1 = await v1.init(request('swap0-ro'));
    await v1.dispose();
    cache.putManifest = async () => {};
    await writeV2('swap0-ro', [0, 1, 2]);
    cache.segments.clear();
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init2 = await api.init(request('swap0-ro'));
    expect(init2.manifestHash).not.toBe(init1.manifestHash);
    await api.dispose();
  });

  it('when segment 0 changed too and is not cached, load() itself re-checks the manifest and opens the new version', async () => {
    writeV1('swap0');
    const cache = new MemoryCache();
    const v1 = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init1 = await v1.init(request('swap0'));
    await v1.dispose();
    await writeV2('swap0', [0, 1, 2]);
    cache.segments.clear();
    log = [];
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init2 = await api.init(request('swap0'));
    expect(init2.manifestHash).not.toBe(init1.manifestHash);
    expect(cache.manifests.get(request('swap0').manifestUrl)!.hash).toBe(init2.manifestHash);
    const all = Array.from({ length: 64 }, (_, i) => i);
    const t = init2.manifest.exits.map((e) => e.threshold);
    const out = await api.classify({ inputs: tensors(all), thresholds: t, probabilities: false });
    expect(out.results.map((r) => r.index)).toEqual(expected.map((e) => e.index));
    await api.dispose();
  });

  it("ping() counts the worker's progress reports (the page's inactivity clocks), also with no onProgress given", async () => {
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache: new MemoryCache() });
    expect(await api.ping()).toEqual({ activity: 0 });
    await api.init(request('tiny'));
    const { activity } = await api.ping();
    expect(activity).toBeGreaterThanOrEqual(4); // manifest and segment 0: initiate, download, …, done, ready
    await api.dispose();
  });

  it('a segment that does not match a manifest that did not change is a plain INTEGRITY_ERROR', async () => {
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache: new MemoryCache() });
    const init = await api.init(request('tiny-badsha2'));
    const t = init.manifest.exits.map((e) => e.threshold);
    const err = await api.classify({ inputs: tensors([deep()]), thresholds: t, probabilities: false }).catch((e) => e);
    expect(err).toMatchObject({ code: 'INTEGRITY_ERROR', details: { segment: 2 } });
    expect((err as { details: Record<string, unknown> }).details.bundleChanged).toBeUndefined();
    await api.dispose();
  });

  it('a load that failed caches no manifest, so the fixed server is asked again', async () => {
    const cache = new MemoryCache();
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache });
    await expect(api.init(request('tiny-badsha0'))).rejects.toMatchObject({ code: 'INTEGRITY_ERROR' });
    expect(cache.manifests.size).toBe(0);
    expect(cache.segments.size).toBe(0);
  });
});

/**
 * A browser's HTTP cache in front of `fetch`, for a server that lets it keep the files `cacheable` names (Cache-Control
 * max-age): a kept copy answers unless the request says `cache: 'reload'` or `'no-cache'` (no validators here, so a
 * revalidation is a full fetch). Records the cache mode of every request.
 */
function httpCache(cacheable: (url: string) => boolean): { fetch: typeof fetch; modes: string[] } {
  const kept = new Map<string, Uint8Array>();
  const real = globalThis.fetch;
  const modes: string[] = [];
  const cached = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = String(input);
    modes.push(`${url.split('/').pop()!}:${init?.cache ?? 'default'}`);
    const hit = kept.get(url);
    if (hit && init?.cache !== 'reload' && init?.cache !== 'no-cache') return new Response(hit.slice());
    const res = await real(url, init);
    const body = new Uint8Array(await res.arrayBuffer());
    if (res.ok && cacheable(url)) kept.set(url, body);
    return new Response(body, { status: res.status, headers: res.headers });
  };
  return { fetch: cached, modes };
}

describe('a bundle replaced in place behind an HTTP cache (files served with max-age)', () => {
  async function replaced(name: string, cacheable: (url: string) => boolean) {
    writeV1(name);
    const http = httpCache(cacheable);
    vi.stubGlobal('fetch', http.fetch);
    const cache = new MemoryCache();
    const v1 = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init1 = await v1.init(request(name));
    await v1.dispose();
    await writeV2(name, [0]);
    return { cache, http, init1 };
  }

  it("cache: 'reload' revalidates the manifest the HTTP cache holds and opens the new version", async () => {
    const { cache, http, init1 } = await replaced('http-all', () => true);
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init = await api.init(request('http-all', { cache: 'reload' }));
    expect(init.manifestHash).not.toBe(init1.manifestHash);
    expect(http.modes).toContain('manifest.json:no-cache');
    await api.dispose();
  });

  it('an expired cached manifest is revalidated too', async () => {
    const { cache, init1 } = await replaced('http-expired', () => true);
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache, now: () => Date.now() + 10_000 });
    const init = await api.init(request('http-expired', { manifestMaxAgeMs: 1000 }));
    expect(init.manifestHash).not.toBe(init1.manifestHash);
    await api.dispose();
  });

  it("the HTTP cache's old copy of a replaced segment is fetched once more past it, and the load works", async () => {
    // the manifest served with no-cache, the segments with max-age
    const { cache, http, init1 } = await replaced('http-files', (u) => !u.endsWith('.json'));
    http.modes.length = 0;
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init = await api.init(request('http-files', { cache: 'reload' }));
    expect(init.manifestHash).not.toBe(init1.manifestHash);
    expect(http.modes).toEqual(['manifest.json:no-cache', 'segment-0.onnx:default', 'segment-0.onnx:reload']);
    const all = Array.from({ length: 64 }, (_, i) => i);
    const t = init.manifest.exits.map((e) => e.threshold);
    const out = await api.classify({ inputs: tensors(all), thresholds: t, probabilities: false });
    expect(out.results.map((r) => r.index)).toEqual(expected.map((e) => e.index));
    await api.dispose();
    expect(cache.segments.has(init.manifest.segments[0]!.sha256)).toBe(true);
  });
});

describe('offline after the manifest expired', () => {
  async function cacheEverything(cache: MemoryCache): Promise<void> {
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache });
    const init = await api.init(request('tiny'));
    const t = init.manifest.exits.map((e) => e.threshold);
    await api.classify({ inputs: tensors([deep()]), thresholds: t, probabilities: false });
    await api.dispose();
  }
  const later = (): number => Date.now() + 2 * 24 * 3600_000;

  it('the network down: load() uses the cached manifest however old, and says it is stale', async () => {
    const cache = new MemoryCache();
    await cacheEverything(cache);
    vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache, now: later });
    const init = await api.init(request('tiny', { manifestMaxAgeMs: 1000 }));
    expect(init.state).toMatchObject({ manifestFromCache: true, manifestStale: true });
    const t = init.manifest.exits.map((e) => e.threshold);
    const [r] = (await api.classify({ inputs: tensors([deep()]), thresholds: t, probabilities: false })).results;
    expect(r).toMatchObject({ index: expected[deep()]!.index, exit: -1 });
    await api.dispose();
    // cache: 'reload' asks for the network, and says it failed.
    const reload = createWorkerApi({ loadOrt: loadOrtNode, cache, now: later });
    await expect(reload.init(request('tiny', { cache: 'reload' }))).rejects.toMatchObject({
      code: 'FETCH_FAILED',
      details: { status: 0 },
    });
  });

  it('a server error (503) falls back to the cache too; a 404 (the bundle is gone) does not', async () => {
    const cache = new MemoryCache();
    await cacheEverything(cache);
    vi.stubGlobal('fetch', async () => new Response('down', { status: 503 }));
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache, now: later });
    const init = await api.init(request('tiny', { manifestMaxAgeMs: 1000 }));
    expect(init.state).toMatchObject({ manifestFromCache: true, manifestStale: true });
    await api.dispose();
    vi.stubGlobal('fetch', async () => new Response('gone', { status: 404 }));
    const gone = createWorkerApi({ loadOrt: loadOrtNode, cache, now: later });
    await expect(gone.init(request('tiny', { manifestMaxAgeMs: 1000 }))).rejects.toMatchObject({
      code: 'FETCH_FAILED',
      details: { status: 404 },
    });
    // A fresh cached manifest is not stale.
    vi.unstubAllGlobals();
    const fresh = createWorkerApi({ loadOrt: loadOrtNode, cache });
    expect((await fresh.init(request('tiny'))).state).toMatchObject({ manifestFromCache: true, manifestStale: false });
    await fresh.dispose();
  });
});

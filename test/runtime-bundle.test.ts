// The worker runtime in Node (onnxruntime-node injected, bundles over a local HTTP server, an in-memory cache):
// lazy segments, progress, results vs the reference, caching and version eviction, typed errors, the worker API and
// its classify port.
import { readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Expected } from '../e2e/fixtures/tiny-bundles.js';
import { MemoryCache } from './fixtures/memory-cache.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { decodeModel, encodeModel, sha256Hex } from '../src/graph/index.js';
import type { ClassifyAnswer, ClassifyRequest, InitRequest, ProgressInfo, WireInput } from '../src/protocol.js';
import { SelfxitError } from '../src/errors.js';
import { createWorkerApi } from '../src/runtime/api.js';
import type { DevicePlan } from '../src/policy/device-plan.js';
import { IdbBundleCache, isDevicePlan, noCache, planKey } from '../src/runtime/cache.js';
import { BundleRuntime, type RuntimeDeps } from '../src/runtime/runtime.js';

let dir = '';
let base = '';
let log: string[] = [];
let expected: Expected[] = [];
let inputs: Float32Array[] = [];

const loadOrt = loadOrtNode;

function request(bundle: string, over: Partial<InitRequest> = {}): InitRequest {
  return tinyInitRequest(base, bundle, { usePlan: true, ...over });
}

function open(
  bundle: string,
  deps: RuntimeDeps,
  over: Partial<InitRequest> = {},
  progress?: (p: ProgressInfo) => void,
): Promise<BundleRuntime> {
  return BundleRuntime.open(request(bundle, over), progress, { loadOrt, ...deps });
}

const tensors = (idx: number[]): WireInput[] => idx.map((i) => ({ kind: 'tensor', data: inputs[i]! }));
const thresholds = (rt: BundleRuntime): number[] => rt.manifest.exits.map((e) => e.threshold);
const files = (): string[] => log.map((p) => p.split('/').slice(-2).join('/'));

let tiny: TinyServer;

beforeAll(async () => {
  tiny = await serveTinyBundles((p) => log.push(p));
  ({ dir, base, expected, inputs } = tiny);
});

afterAll(() => tiny.close());

describe('BundleRuntime', () => {
  it('opens with the manifest and segment 0 only, reporting progress in order with growing byte counts', async () => {
    log = [];
    const events: ProgressInfo[] = [];
    const rt = await open('tiny', { cache: new MemoryCache() }, {}, (p) => events.push(p));
    expect(files()).toEqual(['tiny/manifest.json', 'tiny/segment-0.onnx']);
    expect(events.map((e) => `${e.status}:${e.file}`).filter((s) => !s.startsWith('progress'))).toEqual([
      'initiate:manifest.json',
      'download:manifest.json',
      'done:manifest.json',
      'initiate:segment-0.onnx',
      'download:segment-0.onnx',
      'done:segment-0.onnx',
      'ready:segment-0.onnx',
    ]);
    const loaded = events.flatMap((e) => (e.status === 'progress' ? [e.loaded] : []));
    expect(loaded.length).toBeGreaterThan(0);
    expect(loaded.every((v, i) => i === 0 || v >= loaded[i - 1]!)).toBe(true);
    expect(loaded.at(-1)).toBe(rt.manifest.segments[0]!.bytes);
    expect(rt.state()).toMatchObject({
      sessions: [true, false, false],
      cachedSegments: [true, false, false],
      manifestFromCache: false,
      cacheEnabled: true,
    });
    await rt.dispose();
  });

  it('classifies like the reference; a batch equals single calls; deeper segments load when first reached', async () => {
    log = [];
    const rt = await open('tiny', { cache: new MemoryCache() });
    const early = expected.findIndex((e) => e.exit === 0);
    const [r0] = await rt.classify({ inputs: tensors([early]), thresholds: thresholds(rt), probabilities: true });
    expect(r0).toMatchObject({ index: expected[early]!.index, exit: 0 });
    expect(r0!.stages).toHaveLength(1);
    expect(r0!.probabilities).toHaveLength(10);
    expect(files()).toEqual(['tiny/manifest.json', 'tiny/segment-0.onnx']);
    const all = Array.from({ length: 64 }, (_, i) => i);
    const batch = await rt.classify({ inputs: tensors(all), thresholds: thresholds(rt), probabilities: false });
    expect(files()).toEqual([
      'tiny/manifest.json',
      'tiny/segment-0.onnx',
      'tiny/segment-1.onnx',
      'tiny/segment-2.onnx',
    ]);
    batch.forEach((r, i) => {
      expect({ index: r.index, exit: r.exit }).toEqual({ index: expected[i]!.index, exit: expected[i]!.exit });
      expect(r.confidence).toBeCloseTo(expected[i]!.confidence, 5);
      expect(r.stages).toHaveLength(r.exit < 0 ? 3 : r.exit + 1);
      expect(r.probabilities).toBeUndefined();
    });
    const singles = await Promise.all(
      all.map((i) => rt.classify({ inputs: tensors([i]), thresholds: thresholds(rt), probabilities: false })),
    );
    singles.forEach(([r], i) =>
      expect({ index: r!.index, exit: r!.exit }).toEqual({ index: batch[i]!.index, exit: batch[i]!.exit }),
    );
    // Other thresholds (as setTarget would send): never exit → every sample runs the backbone.
    const full = await rt.classify({
      inputs: tensors([0, 1, 2]),
      thresholds: [NEVER_EXIT, NEVER_EXIT],
      probabilities: false,
    });
    expect(full.every((r) => r.exit === -1 && r.stages.length === 3)).toBe(true);
    await rt.dispose();
  });

  it('serves a second open from the cache without any request, and refetches only the manifest when it is too old', async () => {
    const cache = new MemoryCache();
    const rt1 = await open('tiny', { cache });
    await rt1.classify({
      inputs: tensors(Array.from({ length: 64 }, (_, i) => i)),
      thresholds: thresholds(rt1),
      probabilities: false,
    });
    await rt1.dispose();
    log = [];
    const rt2 = await open('tiny', { cache });
    await rt2.classify({
      inputs: tensors(Array.from({ length: 64 }, (_, i) => i)),
      thresholds: thresholds(rt2),
      probabilities: false,
    });
    expect(log).toEqual([]);
    expect(rt2.state()).toMatchObject({ manifestFromCache: true, cachedSegments: [true, true, true] });
    expect(rt2.manifestHash).toBe(rt1.manifestHash);
    await rt2.dispose();
    log = [];
    const rt3 = await open('tiny', { cache, now: () => Date.now() + 10_000 }, { manifestMaxAgeMs: 1000 });
    expect(files()).toEqual(['tiny/manifest.json']);
    await rt3.dispose();
  });

  it('refetches a segment whose cached bytes are corrupt', async () => {
    const cache = new MemoryCache();
    await (await open('tiny', { cache })).dispose();
    const sha0 = [...cache.segments.keys()][0]!;
    cache.segments.set(sha0, new Uint8Array([1, 2, 3]));
    log = [];
    const rt = await open('tiny', { cache });
    expect(files()).toEqual(['tiny/segment-0.onnx']);
    expect(cache.segments.get(sha0)!.length).toBeGreaterThan(3);
    await rt.dispose();
  });

  it("evicts the segments a new bundle version at the same URL no longer uses (cache: 'reload')", async () => {
    const cache = new MemoryCache();
    const vdir = path.join(dir, 'versioned');
    const src = path.join(dir, 'tiny');
    rmSync(vdir, { recursive: true, force: true });
    (await import('node:fs')).mkdirSync(vdir);
    for (const f of ['manifest.json', 'segment-0.onnx', 'segment-1.onnx', 'segment-2.onnx'])
      copyFileSync(path.join(src, f), path.join(vdir, f));
    const rt1 = await open('versioned', { cache });
    await rt1.classify({
      inputs: tensors(Array.from({ length: 64 }, (_, i) => i)),
      thresholds: thresholds(rt1),
      probabilities: false,
    });
    await rt1.dispose();
    const old2 = rt1.manifest.segments[2]!.sha256;
    expect(cache.segments.has(old2)).toBe(true);
    await cache.putPlan(planKey(rt1.manifestHash, 'wasm', 1, 'compiled'), {
      manifestHash: rt1.manifestHash,
    } as DevicePlan);

    // v2: segment 2 re-encoded with another doc string (new bytes, new sha256), the rest unchanged.
    const m2 = decodeModel(readFileSync(path.join(src, 'segment-2.onnx')));
    m2.proto.docString = 'version 2';
    const bytes2 = encodeModel(m2);
    writeFileSync(path.join(vdir, 'segment-2-v2.onnx'), bytes2);
    const manifest = JSON.parse(readFileSync(path.join(src, 'manifest.json'), 'utf8')) as BundleManifest;
    const v2: BundleManifest = {
      ...manifest,
      segments: manifest.segments.map((s, i) =>
        i === 2 ? { ...s, file: 'segment-2-v2.onnx', sha256: '', bytes: bytes2.length } : s,
      ),
    };
    (v2.segments[2] as { sha256: string }).sha256 = await sha256Hex(bytes2);
    writeFileSync(path.join(vdir, 'manifest.json'), JSON.stringify(v2));

    log = [];
    const stale = await open('versioned', { cache });
    expect(stale.manifestHash).toBe(rt1.manifestHash); // cached manifest, no request
    expect(log).toEqual([]);
    await stale.dispose();
    const rt2 = await open('versioned', { cache }, { cache: 'reload' });
    expect(rt2.manifestHash).not.toBe(rt1.manifestHash);
    expect(cache.segments.has(old2)).toBe(false);
    expect(cache.segments.has(rt1.manifest.segments[0]!.sha256)).toBe(true);
    expect(cache.plans.size).toBe(0); // the old version's plan went with it
    const deep = expected.findIndex((e) => e.exit === -1);
    const [r] = await rt2.classify({ inputs: tensors([deep]), thresholds: thresholds(rt2), probabilities: false });
    expect(r).toMatchObject({ index: expected[deep]!.index, exit: -1 });
    expect(files()).toEqual(['versioned/manifest.json', 'versioned/segment-2-v2.onnx']);
    await rt2.dispose();
  });

  it('degrades to no cache where IndexedDB is missing', async () => {
    log = [];
    const idb = new IdbBundleCache('selfxit-test');
    const rt = await open('tiny', { cache: idb });
    expect(rt.state().cacheEnabled).toBe(false);
    expect(await rt.cachedPlan()).toBeUndefined();
    await expect(idb.putPlan('plan:x:wasm:1', {} as DevicePlan)).resolves.toBeUndefined();
    expect(files()).toEqual(['tiny/manifest.json', 'tiny/segment-0.onnx']);
    await rt.dispose();
  });

  it('throws typed errors: FETCH_FAILED, INVALID_BUNDLE, INTEGRITY_ERROR, INVALID_INPUT, INVALID_ARGUMENT, DISPOSED', async () => {
    const cache = new MemoryCache();
    await expect(open('missing', { cache })).rejects.toMatchObject({ code: 'FETCH_FAILED', details: { status: 404 } });
    await expect(open('not-json', { cache })).rejects.toMatchObject({ code: 'INVALID_BUNDLE' });
    await expect(open('tiny-badsha0', { cache })).rejects.toMatchObject({
      code: 'INTEGRITY_ERROR',
      details: { segment: 0 },
    });
    const rt = await open('tiny-badsha2', { cache: new MemoryCache() });
    const deep = expected.findIndex((e) => e.exit === -1);
    await expect(
      rt.classify({ inputs: tensors([deep]), thresholds: thresholds(rt), probabilities: false }),
    ).rejects.toMatchObject({ code: 'INTEGRITY_ERROR', details: { segment: 2 } });
    await expect(
      rt.classify({
        inputs: [{ kind: 'tensor', data: new Float32Array(5) }],
        thresholds: thresholds(rt),
        probabilities: false,
      }),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
    await expect(
      rt.classify({
        inputs: [...tensors([0]), { kind: 'tensor', data: new Float32Array(5) }],
        thresholds: thresholds(rt),
        probabilities: false,
      }),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      details: { inputIndex: 1 },
    });
    await expect(rt.classify({ inputs: tensors([0]), thresholds: [0.5], probabilities: false })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    const early = expected.findIndex((e) => e.exit === 0);
    await expect(
      rt.classify({ inputs: tensors([early]), thresholds: thresholds(rt), probabilities: false }),
    ).resolves.toHaveLength(1);
    await rt.dispose();
    await expect(
      rt.classify({ inputs: tensors([0]), thresholds: thresholds(rt), probabilities: false }),
    ).rejects.toMatchObject({ code: 'DISPOSED' });
  });
});

describe('device plans', () => {
  it('measures every stage, plans by those times, caches the plan (and validation.bin by sha256)', async () => {
    const cache = new MemoryCache();
    const events: ProgressInfo[] = [];
    const rt = await open('tiny', { cache }, { engine: 'stages' }); // the compiled engine's plan: compiled-engine tests
    expect(await rt.cachedPlan()).toBeUndefined();
    log = [];
    const plan = await rt.plan({ target: 0.99 }, (p) => events.push(p));
    expect(files()).toEqual(['tiny/validation.bin', 'tiny/segment-1.onnx', 'tiny/segment-2.onnx']);
    expect(rt.state().sessions).toEqual([true, true, true]);
    expect(events.filter((e) => e.status !== 'progress').map((e) => `${e.status}:${e.file}`)).toEqual([
      'initiate:validation.bin',
      'download:validation.bin',
      'done:validation.bin',
      'initiate:segment-1.onnx',
      'download:segment-1.onnx',
      'done:segment-1.onnx',
      'ready:segment-1.onnx',
      'initiate:segment-2.onnx',
      'download:segment-2.onnx',
      'done:segment-2.onnx',
      'ready:segment-2.onnx',
    ]);
    const { stageMs, decisionMs } = plan.timings;
    expect(stageMs).toHaveLength(3);
    expect(decisionMs).toHaveLength(3);
    expect([...stageMs, ...decisionMs].every((t) => Number.isFinite(t) && t >= 0)).toBe(true);
    expect(stageMs.every((t) => t > 0)).toBe(true);
    expect(decisionMs[2]).toBe(0);
    expect(plan).toMatchObject({
      version: 1,
      manifestHash: rt.manifestHash,
      backend: 'wasm',
      threads: 1,
      target: 0.99,
    });
    expect(plan.thresholds).toHaveLength(2);
    expect(plan.enabled).toHaveLength(2);
    plan.enabled.forEach((on, j) => on || expect(plan.thresholds[j]).toBe(NEVER_EXIT));
    expect(planKey(rt.manifestHash, 'wasm', 1, 'stages')).toBe(`plan:${rt.manifestHash}:wasm:1:stages`);
    expect(cache.plans.get(planKey(rt.manifestHash, 'wasm', 1, 'stages'))).toEqual(plan);
    expect(isDevicePlan(structuredClone(plan))).toBe(true); // what IndexedDB gives back passes the shape check
    for (const bad of [
      null,
      {},
      { ...plan, version: 2 },
      { ...plan, thresholds: [0.5] },
      { ...plan, timings: { stageMs: [1] } },
    ])
      expect(isDevicePlan(bad)).toBe(false);
    expect(await rt.cachedPlan()).toEqual(plan);
    // Planning again: validation.bin comes from the cache.
    log = [];
    const again = await rt.plan({ target: 1 });
    expect(log).toEqual([]);
    expect(again.enabled).toEqual([false, false]);
    expect(again.thresholds).toEqual([NEVER_EXIT, NEVER_EXIT]);
    const out = await rt.classify({
      inputs: tensors(Array.from({ length: 64 }, (_, i) => i)),
      thresholds: again.thresholds,
      probabilities: false,
    });
    expect(out.every((r) => r.exit === -1)).toBe(true);
    await rt.dispose();
    // The worker API: a later init on the same engine finds the cached plan (unless usePlan is false); other thread
    // counts, and the compiled engine (whose times price exits otherwise), have none.
    const stages = { engine: 'stages' } as const;
    const api = createWorkerApi({ loadOrt, cache });
    const init = await api.init(request('tiny', stages));
    expect(init).toMatchObject({ plan: { target: 1, enabled: [false, false] } });
    await api.dispose();
    const compiled = createWorkerApi({ loadOrt, cache });
    const initCompiled = await compiled.init(request('tiny'));
    expect(initCompiled.state.engine).toBe('compiled');
    expect(initCompiled.plan).toBeUndefined();
    await compiled.dispose();
    const off = createWorkerApi({ loadOrt, cache });
    const initOff = await off.init(request('tiny', { ...stages, usePlan: false }));
    expect(initOff.plan).toBeUndefined();
    await off.dispose();
    const threads2 = createWorkerApi({ loadOrt: async () => ({ ...(await loadOrt()), threads: 2 }), cache });
    const init2 = await threads2.init(request('tiny', stages));
    expect(init2.plan).toBeUndefined();
    await threads2.dispose();
  });

  it('stores nothing without a cache; a bundle without (or with a corrupt) validation file gives a typed error', async () => {
    const rt = await open('tiny', { cache: noCache });
    const plan = await rt.plan({ target: 0.5 });
    expect(plan.thresholds).toHaveLength(2);
    expect(await rt.cachedPlan()).toBeUndefined();
    await expect(rt.plan({ target: 0 })).rejects.toMatchObject({ code: 'INVALID_TARGET' });
    await rt.dispose();
    await expect(rt.plan({ target: 0.5 })).rejects.toMatchObject({ code: 'DISPOSED' });
    const api = createWorkerApi({ loadOrt, cache: new MemoryCache() });
    await api.init(request('tiny-novalidation'));
    const none = api.plan({ target: 0.9 });
    await expect(none).rejects.toThrow(/validation.*prepare/);
    await expect(none).rejects.toMatchObject({ code: 'INVALID_BUNDLE' });
    await api.dispose();
    const bad = await open('tiny-badvalidation', { cache: new MemoryCache() });
    await expect(bad.plan({ target: 0.9 })).rejects.toMatchObject({
      code: 'INTEGRITY_ERROR',
      details: { file: 'validation.bin' },
    });
    await bad.dispose();
  });
});

describe('createWorkerApi', () => {
  it('serves classify() on its port: results (probabilities moved), the state only when it changed, typed errors with the state', async () => {
    const api = createWorkerApi({ loadOrt, cache: new MemoryCache() });
    const init = await api.init(request('tiny'));
    const th = init.manifest.exits.map((e) => e.threshold);
    const { port1, port2 } = new MessageChannel();
    await api.connect(port2);
    const call = (id: number, req: ClassifyRequest): Promise<ClassifyAnswer> =>
      new Promise((resolve) => {
        port1.onmessage = (ev: MessageEvent<ClassifyAnswer>) => resolve(ev.data);
        port1.postMessage({ id, request: req });
      });
    // an input that needs the last segment: its session is created, so the answer brings the new state
    const deep = expected.findIndex((e) => e.exit < 0);
    const req: ClassifyRequest = { inputs: tensors([deep]), thresholds: th, probabilities: true };
    const first = await call(1, req);
    const result = { index: expected[deep]!.index, exit: -1 };
    expect(first).toMatchObject({ id: 1, results: [result], state: { sessions: [true, true, true] } });
    expect('results' in first && first.results[0]!.probabilities).toBeInstanceOf(Float32Array);
    const again = await call(2, req);
    expect(again).toMatchObject({ id: 2, results: [result] });
    expect(again.state).toBeUndefined();
    const bad = await call(3, { ...req, inputs: [{ kind: 'tensor', data: new Float32Array(1) }] });
    expect(bad).toMatchObject({ id: 3, error: { code: 'INVALID_INPUT' }, state: { backend: 'wasm' } });
    // a state another reply reported (here: state()) is the page's: the next answer leaves an unchanged one out
    expect(await api.state()).toMatchObject({ sessions: [true, true, true] });
    expect((await call(4, req)).state).toBeUndefined();
    await api.dispose();
    expect(await call(5, req)).toMatchObject({ id: 5, error: { code: 'DISPOSED' } });
    port1.close();
  }, 20_000);

  it('replies with values and the state; a failed call throws a SelfxitError with its code', async () => {
    const api = createWorkerApi({ loadOrt, cache: new MemoryCache() });
    await expect(api.init(request('missing'))).rejects.toMatchObject({
      name: 'SelfxitError',
      code: 'FETCH_FAILED',
      details: { status: 404 },
    });
    expect(await api.state()).toBeUndefined();

    const api2 = createWorkerApi({ loadOrt, cache: new MemoryCache() });
    const before = api2.classify({ inputs: tensors([0]), thresholds: [0.5, 0.5], probabilities: false });
    await expect(before).rejects.toMatchObject({ code: 'INTERNAL' });
    const init = await api2.init(request('tiny'));
    expect(init.manifest.labels).toHaveLength(10);
    expect(init.manifestHash).toMatch(/^[0-9a-f]{64}$/);
    expect(init.state).toMatchObject({ backend: 'wasm', sessions: [true, false, false] });
    const th = init.manifest.exits.map((e) => e.threshold);
    const ok = await api2.classify({ inputs: tensors([0]), thresholds: th, probabilities: true });
    expect(ok).toMatchObject({
      results: [{ index: expected[0]!.index, exit: expected[0]!.exit }],
      state: { backend: 'wasm' },
    });
    const wrong = api2.classify({
      inputs: [{ kind: 'tensor', data: new Float32Array(1) }],
      thresholds: th,
      probabilities: false,
    });
    await expect(wrong).rejects.toBeInstanceOf(SelfxitError);
    await expect(wrong).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await api2.state()).toMatchObject({ backend: 'wasm' });
    await expect(api2.init(request('tiny'))).rejects.toMatchObject({ code: 'INTERNAL' });
    await api2.dispose();
    await expect(api2.classify({ inputs: tensors([0]), thresholds: th, probabilities: false })).rejects.toMatchObject({
      code: 'DISPOSED',
    });
  });
});

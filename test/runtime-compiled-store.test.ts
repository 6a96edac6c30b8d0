// What the compiled engine keeps, through the worker API in Node (onnxruntime-node, the tiny bundle over local HTTP):
// the cached compiled models as more segments load (every ungated prefix kept, a longer gated one evicting the shorter but prefix 1),
// and the segment bytes let go only once the cache is known to hold them (which engine runs a batch request's chunks:
// runtime-batch-engine.test.ts).
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { WorkerApi } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { compiledKey, type CachedCompiled } from '../src/runtime/cache.js';
import { CompiledEngine } from '../src/runtime/compiled-engine.js';
import { CompiledCache } from './fixtures/memory-cache.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
});
afterAll(() => tiny.close());
afterEach(() => vi.restoreAllMocks()); // a failed test's engine tracking too

/** Classifies tiny input `i` alone, then waits until no compiled model is being made. */
async function single(a: WorkerApi, engines: Set<CompiledEngine>, i: number, thresholds: number[]): Promise<number> {
  const data = tiny.inputs[i]!;
  const r = await a.classify({ inputs: [{ kind: 'tensor', data }], thresholds, probabilities: false });
  await Promise.all([...engines].map((e) => e.idle()));
  return r.results[0]!.exit;
}

/** Adds each compiled engine that serves a call to `engines` (to wait for its builds); `mockRestore()` at the end. */
function trackEngines(engines: Set<CompiledEngine>): { mockRestore: () => void } {
  const ready = CompiledEngine.prototype.ready;
  return vi.spyOn(CompiledEngine.prototype, 'ready').mockImplementation(function (this: CompiledEngine) {
    engines.add(this);
    return ready.call(this);
  });
}

describe('compiled engine: what it keeps', () => {
  it('every ungated prefix stays cached (each open walks through them); a longer model without an exit evicts the shorter ones but prefix 1', async () => {
    const engines = new Set<CompiledEngine>();
    const spy = trackEngines(engines);
    const cache = new CompiledCache();
    const puts: string[] = [];
    const putCompiled = cache.putCompiled.bind(cache);
    cache.putCompiled = async (k: string, e: CachedCompiled) => (puts.push(k), putCompiled(k, e));
    const open = async () => {
      const a = createWorkerApi({ cache, loadOrt: loadOrtNode });
      return { a, init: await a.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' })) };
    };
    let { a, init } = await open();
    const thresholds = init.manifest.exits.map((e) => e.threshold);
    const key = (n: number, kind = ''): string => compiledKey(init.manifestHash, 'wasm', n) + kind;
    expect([...cache.compiled.keys()]).toEqual([key(1)]);
    // An input leaving at exit 1 loads segment 1: the next call makes (and stores) the prefix of segments 0-1.
    const atExit1 = tiny.expected.findIndex((e) => e.exit === 1);
    expect(await single(a, engines, atExit1, thresholds)).toBe(1);
    await single(a, engines, atExit1, thresholds);
    expect([...cache.compiled.keys()].sort()).toEqual([key(1), key(2)].sort());
    // A deep input loads segment 2: the whole bundle's model is stored beside the shorter ones.
    const deep = tiny.expected.findIndex((e) => e.exit === -1);
    expect(await single(a, engines, deep, thresholds)).toBe(-1);
    await single(a, engines, deep, thresholds);
    expect([...cache.compiled.keys()].sort()).toEqual([key(1), key(2), key(3)].sort());
    await a.dispose();
    // A new session walks through the same prefixes: every ungated model comes from the cache, none is compiled again.
    puts.length = 0;
    ({ a, init } = await open());
    await single(a, engines, atExit1, thresholds);
    await single(a, engines, deep, thresholds);
    await single(a, engines, deep, thresholds);
    expect(puts).toEqual([]);
    // The last exit off: the model of the loaded prefix without it is made; a longer one of that kind evicts it.
    const lastOff = thresholds.map((t, e) => (e === thresholds.length - 1 ? 2 : t));
    const atExit0 = tiny.expected.findIndex((e) => e.exit === 0);
    await a.dispose();
    ({ a, init } = await open());
    expect(await single(a, engines, atExit0, lastOff)).toBe(0);
    await single(a, engines, atExit0, lastOff);
    expect(cache.compiled.has(key(1, ':drop:1'))).toBe(true);
    expect(await single(a, engines, deep, lastOff)).toBe(-1);
    await single(a, engines, deep, lastOff);
    // ... but prefix 1 (each open starts there): a new session with the exit off from its first call compiles nothing
    expect([...cache.compiled.keys()].sort()).toEqual(
      [key(1), key(2), key(3), key(1, ':drop:1'), key(3, ':drop:1')].sort(),
    );
    await a.dispose();
    puts.length = 0;
    ({ a, init } = await open());
    expect(await single(a, engines, atExit0, lastOff)).toBe(0);
    await single(a, engines, atExit0, lastOff);
    expect(puts).toEqual([]);
    await a.dispose();
    spy.mockRestore();
  });

  it('once the whole bundle is compiled and the cache holds it and the segments, segment bytes are let go: a later build reads them from the cache', async () => {
    const engines = new Set<CompiledEngine>();
    const spy = trackEngines(engines);
    /** Segment reads from `cache` while the other gating's whole-bundle model is made after the first. */
    const rereads = async (cache: CompiledCache): Promise<number> => {
      let reads = 0;
      const getSegment = cache.getSegment.bind(cache);
      cache.getSegment = async (h: string) => (reads++, getSegment(h));
      const a = createWorkerApi({ cache, loadOrt: loadOrtNode });
      const init = await a.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }));
      const never = init.manifest.exits.map(() => 2); // every exit off: every segment loads, the gated model is made
      await single(a, engines, 0, never);
      await single(a, engines, 0, never);
      const before = reads;
      // exits on: the ungated model of the whole bundle is compiled (none cached yet)
      const thresholds = init.manifest.exits.map((e) => e.threshold);
      await single(a, engines, 0, thresholds);
      const deep = tiny.expected.findIndex((e) => e.exit === -1);
      expect(await single(a, engines, deep, thresholds)).toBe(-1);
      expect((await a.classify({ inputs: [], thresholds, probabilities: false })).state.engine).toBe('compiled');
      await a.dispose();
      return reads - before;
    };
    expect(await rereads(new CompiledCache())).toBe(3); // the three segments, read again from the cache to compile
    // A cache that keeps no compiled models: the bytes stay (the build compiles from them, nothing read again).
    const plain = new CompiledCache();
    Object.assign(plain, { getCompiled: undefined, putCompiled: undefined, deleteCompiled: undefined });
    expect(await rereads(plain)).toBe(0);
    // One segment's write did not land (abandoned after a timeout: cache.enabled stays true): the bytes stay.
    const lostSegment = new CompiledCache();
    const putSegment = lostSegment.putSegment.bind(lostSegment);
    let puts = 0;
    lostSegment.putSegment = async (h: string, b: Uint8Array) => (++puts === 3 ? false : putSegment(h, b));
    expect(await rereads(lostSegment)).toBe(0);
    // The compiled model's write did not land: the bytes stay too.
    const lostCompiled = new CompiledCache();
    lostCompiled.putCompiled = async () => false;
    expect(await rereads(lostCompiled)).toBe(0);
    spy.mockRestore();
  });
});

// The compiled engine through the worker API in Node (onnxruntime-node, the tiny bundles over local HTTP): the same
// decisions as the stage engine for several targets without recompiling, lazy segments kept, and the fallback to the
// stage engine when the segments cannot be composed; a switch of model made in the background while calls run on the
// model in use (two compiled sessions alive only while one is made). Over 400 lines: one suite, as its tests share the
// session-counting worker API and the settled-model setup below.
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import * as compiledCascade from '../src/bundle/compiled-cascade.js';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { decodeModel, encodeModel, sha256Hex } from '../src/graph/index.js';
import { chooseThresholds } from '../src/page/target.js';
import type { ClassifyRequest, EngineChoice, InitRequest, WireResult, WorkerApi } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { compiledKey, noCache, type BundleCache, type CachedCompiled } from '../src/runtime/cache.js';
import { CompiledEngine } from '../src/runtime/compiled-engine.js';
import type { OrtHandle } from '../src/runtime/ort-backend.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

// compileBundleCascade, counted (the original runs): with a cache that keeps models, a switch between the models of two kinds never recompiles.
vi.mock('../src/bundle/compiled-cascade.js', async (importOriginal) => {
  const orig = await importOriginal<typeof compiledCascade>();
  return { ...orig, compileBundleCascade: vi.fn(orig.compileBundleCascade) };
});
const compiles = (): number => vi.mocked(compiledCascade.compileBundleCascade).mock.calls.length;

let tiny: TinyServer;
let log: string[] = [];

beforeAll(async () => {
  tiny = await serveTinyBundles((p) => log.push(p));
  await writeClashBundle(tiny.dir);
});
afterAll(() => tiny.close());
afterEach(() => vi.restoreAllMocks()); // the spies of a test that failed midway (CompiledEngine's methods)

/** `tiny-clash/`: the tiny bundle with segment 0's input named `thresholds`, a name the compiled model reserves. */
async function writeClashBundle(dir: string): Promise<void> {
  const src = path.join(dir, 'tiny');
  const out = path.join(dir, 'tiny-clash');
  mkdirSync(out, { recursive: true });
  for (const f of readdirSync(src)) writeFileSync(path.join(out, f), readFileSync(path.join(src, f)));
  const manifest = JSON.parse(readFileSync(path.join(src, 'manifest.json'), 'utf8')) as BundleManifest;
  const seg = manifest.segments[0]!;
  const model = decodeModel(new Uint8Array(readFileSync(path.join(src, seg.file))));
  const g = model.proto.graph!;
  for (const i of g.input ?? []) if (i.name === seg.input) i.name = 'thresholds';
  for (const n of g.node ?? []) n.input = (n.input ?? []).map((x) => (x === seg.input ? 'thresholds' : x));
  const bytes = encodeModel(model);
  writeFileSync(path.join(out, seg.file), bytes);
  const sha256 = await sha256Hex(bytes);
  const segments = manifest.segments.map((s, i) =>
    i === 0 ? { ...s, input: 'thresholds', bytes: bytes.length, sha256 } : s,
  );
  writeFileSync(path.join(out, 'manifest.json'), JSON.stringify({ ...manifest, segments }));
}

/** A compiled session made by {@link api}: its runs (warm-ups included) and releases so far. */
interface CompiledSession {
  runs: number;
  releases: number;
}

/**
 * A worker API on onnxruntime-node that counts the sessions it creates, and the compiled ones (those with a
 * `thresholds` input) alive now and at most at once, each with its runs and releases; `onCreate` is awaited as each
 * session is made (inside its onnxruntime queue job; a throw fails the creation).
 */
function api(
  cache: BundleCache = noCache,
  onCreate: (compiled: boolean) => Promise<void> = async () => {},
  nested = false,
): {
  api: WorkerApi;
  creates: () => number;
  compiledLive: () => { now: number; peak: number };
  compiledSessions: CompiledSession[];
} {
  let n = 0;
  const live = { now: 0, peak: 0 };
  const compiledSessions: CompiledSession[] = [];
  const loadOrt = async (): Promise<OrtHandle> => {
    const h = await loadOrtNode();
    const create = h.ort.InferenceSession.create.bind(h.ort.InferenceSession);
    const counted = async (...args: Parameters<typeof create>) => {
      n++;
      const session = await create(...args);
      const compiled = session.inputNames.includes('thresholds');
      try {
        await onCreate(compiled);
      } catch (e) {
        await session.release();
        throw e;
      }
      if (!compiled) return session;
      live.peak = Math.max(live.peak, ++live.now);
      const made: CompiledSession = { runs: 0, releases: 0 };
      compiledSessions.push(made);
      const [release, run] = [session.release.bind(session), session.run.bind(session)];
      return Object.assign(session, {
        release: () => (live.now--, made.releases++, release()),
        run: ((...a: Parameters<typeof run>) => (made.runs++, run(...a))) as typeof run,
      });
    };
    const InferenceSession = { create: counted as typeof create };
    return { ...h, ort: { ...h.ort, InferenceSession } as typeof h.ort };
  };
  return {
    api: createWorkerApi({ loadOrt, cache, nested }),
    creates: () => n,
    compiledLive: () => ({ ...live }),
    compiledSessions,
  };
}

/** The compiled engines that served a call since this was called; `idle()` waits until none is making a model. */
function trackEngines(): { idle: () => Promise<void>; mockRestore: () => void } {
  const engines = new Set<CompiledEngine>();
  const ready = CompiledEngine.prototype.ready;
  const spy = vi.spyOn(CompiledEngine.prototype, 'ready').mockImplementation(function (this: CompiledEngine) {
    engines.add(this);
    return ready.call(this);
  });
  return {
    idle: async () => void (await Promise.all([...engines].map((e) => e.idle()))),
    mockRestore: () => spy.mockRestore(),
  };
}

/** A gate that holds whoever awaits `wait()` while closed; `entered` resolves when someone first waits on it closed. */
function gate(): { wait: () => Promise<void>; open: () => void; close: () => void; entered: () => Promise<void> } {
  let opened: Promise<void> = Promise.resolve();
  let open = (): void => {};
  let enter = (): void => {};
  let entered = new Promise<void>((r) => (enter = r));
  return {
    wait: () => (enter(), opened),
    open: () => open(),
    close: () => {
      opened = new Promise((r) => (open = r));
      entered = new Promise((r) => (enter = r));
    },
    entered: () => entered,
  };
}

function request(bundle: string, engine: EngineChoice): InitRequest {
  return tinyInitRequest(tiny.base, bundle, { engine });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `call`, which must not wait for a build held meanwhile: rejects, naming it, when it takes over 2 s. */
const soon = <T>(call: Promise<T>, what: string): Promise<T> =>
  Promise.race([
    call,
    sleep(2000).then(() => {
      throw new Error(`${what} waited for the model being made`);
    }),
  ]);

/** One call on tiny input `i`, with probabilities. */
async function one(a: WorkerApi, i: number, thresholds: readonly number[]): Promise<WireResult> {
  const data = tiny.inputs[i]!;
  return (await a.classify({ inputs: [{ kind: 'tensor', data }], thresholds, probabilities: true })).results[0]!;
}

/**
 * A compiled worker API ({@link api}) on the tiny bundle with every segment loaded and no build under way, the model in
 * use the one without exit 0 (`withoutExit0`; `off0`: exit 0 disabled, every input leaves at exit 1) or the ungated
 * one (`on`: every exit at 1); each
 * compiled session's creation awaits `onCompiled` (default: the returned `hold`, open until closed); `cache` default:
 * none. Restore `engines` at the end.
 */
async function settled(
  withoutExit0: boolean,
  {
    onCompiled,
    cache = noCache,
    nested = false,
  }: { onCompiled?: () => Promise<void>; cache?: BundleCache; nested?: boolean } = {},
): Promise<
  ReturnType<typeof api> & {
    engines: ReturnType<typeof trackEngines>;
    hold: ReturnType<typeof gate>;
    m: BundleManifest;
    on: number[];
    off0: number[];
  }
> {
  const hold = gate();
  const made = api(
    cache,
    async (compiled) => {
      if (compiled) await (onCompiled ?? hold.wait)();
    },
    nested,
  );
  const engines = trackEngines();
  const m = (await made.api.init(request('tiny', 'compiled'))).manifest;
  const on = m.exits.map(() => 1);
  const off0 = m.exits.map((_, i) => (i === 0 ? NEVER_EXIT : 0));
  await singles(
    made.api,
    m.exits.map(() => NEVER_EXIT),
  ); // every segment loads
  await useModel(made.api, engines, withoutExit0 ? off0 : on);
  return { ...made, engines, hold, m, on, off0 };
}

/**
 * Puts the model `thresholds` ask for (without the exits they disable), of the whole loaded prefix, in use: models
 * are made in the background, so a call may run on an older one.
 */
async function useModel(
  a: WorkerApi,
  engines: ReturnType<typeof trackEngines>,
  thresholds: readonly number[],
): Promise<void> {
  // The first call sets the gating wanted; after the builds under way, the second makes that model if not in use.
  for (let k = 0; k < 2; k++) {
    await engines.idle();
    await one(a, 0, thresholds);
  }
  await engines.idle();
}

type TimeRun = CompiledEngine['timeRun'];
/** One timed run of a device plan's measurement: whether the model was the gated one, its thresholds, where it left. */
interface TimedRun {
  gated: boolean;
  thresholds: readonly number[];
  exit: number;
}

/**
 * Spies on CompiledEngine.timeRun (the runs a device plan times); `each` is told the count so far before each run.
 * Restore with `mockRestore()`.
 */
function spyTimeRun(each: (n: number) => void = () => {}): { runs: TimedRun[]; mockRestore: () => void } {
  const runs: TimedRun[] = [];
  const orig = CompiledEngine.prototype.timeRun;
  const spy = vi.spyOn(CompiledEngine.prototype, 'timeRun').mockImplementation(async function (
    this: CompiledEngine,
    ...[c, thresholds]: Parameters<TimeRun>
  ) {
    each(runs.length);
    const r = await orig.call(this, c, thresholds);
    runs.push({ gated: c.kind === 'gated', thresholds, exit: r.exit });
    return r;
  });
  return { runs, mockRestore: () => spy.mockRestore() };
}

async function singles(a: WorkerApi, thresholds: readonly number[]): Promise<WireResult[]> {
  const out: WireResult[] = [];
  for (const data of tiny.inputs) {
    const r = await a.classify({ inputs: [{ kind: 'tensor', data }], thresholds, probabilities: true });
    out.push(r.results[0]!);
  }
  return out;
}

describe('compiled engine', () => {
  it('decides as the stage engine on every tiny input for several targets, thresholds changed without recompiling', async () => {
    const compiled = api();
    const stages = api();
    const engines = trackEngines();
    const c = await compiled.api.init(request('tiny', 'compiled'));
    const s = await stages.api.init(request('tiny', 'stages'));
    expect(c.state.engine).toBe('compiled');
    expect(c.state.engineFallbackReason).toBeUndefined();
    expect(s.state.engine).toBe('stages');
    const m = c.manifest;
    const vectors = [
      m.exits.map((e) => e.threshold),
      ...[0.5, 0.8, 0.9, 0.95, 1].map((t) => chooseThresholds(m, t).thresholds),
      m.exits.map((_, i) => (i === 0 ? 0 : NEVER_EXIT)), // everything at exit 0
      m.exits.map(() => NEVER_EXIT), // the worst case: nothing exits
      m.exits.map((_, i) => (i === 0 ? NEVER_EXIT : 0)), // exit 0 off, everything at exit 1
    ];
    // Load every segment first (the backbone thresholds), so the compiled model covers the whole bundle; every exit
    // disabled runs the exit-free model, some the model without them, thresholds of 1 the ungated one (no cache here:
    // only the bytes of the model in use are held, a switch recompiles from the segment bytes).
    await singles(compiled.api, vectors[7]!);
    const ones = m.exits.map(() => 1);
    for (const t of [vectors[7]!, vectors[8]!, ones]) await useModel(compiled.api, engines, t);
    // Only the model in use's bytes are held: a switch to the model without exit 0 and back compiles each again.
    const beforeSwitch = compiles();
    for (const t of [vectors[8]!, ones]) await useModel(compiled.api, engines, t);
    expect(compiles() - beforeSwitch, 'no cache: a switch of model recompiles').toBe(2);
    // Other thresholds for the same model: nothing compiled.
    const sameKind = compiles();
    for (const t of [vectors[0]!, m.exits.map(() => 0.99)]) await useModel(compiled.api, engines, t);
    expect(compiles(), 'thresholds changed without recompiling').toBe(sameKind);
    engines.mockRestore();
    const exitsSeen = new Set<number>();
    for (const [v, thr] of vectors.entries()) {
      const [got, want] = [await singles(compiled.api, thr), await singles(stages.api, thr)];
      got.forEach((g, i) => {
        const w = want[i]!;
        const where = `thresholds #${v} input ${i}`;
        expect({ index: g.index, exit: g.exit, stages: g.stages.length }, where).toEqual({
          index: w.index,
          exit: w.exit,
          stages: w.stages.length,
        });
        expect(Math.abs(g.confidence - w.confidence), where).toBeLessThan(1e-5);
        g.probabilities!.forEach((p, k) => expect(Math.abs(p - w.probabilities![k]!), where).toBeLessThan(1e-5));
        exitsSeen.add(g.exit);
      });
    }
    expect(exitsSeen).toEqual(new Set([0, 1, -1]));
    // The compiled run covered the whole backbone: one time, spread evenly (the stage engine times each segment).
    const full = await singles(compiled.api, vectors[7]!);
    expect(full.every((r) => r.stages.length === 3 && new Set(r.stages).size === 1)).toBe(true);
    expect(compiled.compiledLive().peak, 'two compiled sessions only while one is made').toBe(2);
    const state = await compiled.api.state();
    expect(state?.engine).toBe('compiled');
    await compiled.api.dispose();
    expect(compiled.compiledLive().now, 'dispose() releases the compiled session').toBe(0);
    await stages.api.dispose();
  });

  it('a disabled exit switches to the model without it (no head, no gate): the other one is released, a switch back reads the cache', async () => {
    const store = new Map<string, CachedCompiled>();
    const cache: BundleCache = {
      ...noCache,
      enabled: true,
      getCompiled: async (k) => store.get(k),
      putCompiled: async (k, e) => (store.set(k, e), true),
      deleteCompiled: async (k) => void store.delete(k),
    };
    const { api: a, creates, compiledLive, compiledSessions } = api(cache);
    const engines = trackEngines();
    const init = await a.init(request('tiny', 'compiled'));
    const m = init.manifest;
    const all = m.exits.map(() => 1);
    const off0 = m.exits.map((_, i) => (i === 0 ? NEVER_EXIT : 0));
    await singles(
      a,
      m.exits.map(() => NEVER_EXIT),
    ); // every segment loads; every exit off: the exit-free model
    await useModel(a, engines, off0);
    await useModel(a, engines, all);
    const [made, compiled] = [creates(), compiles()];
    const key = compiledKey(init.manifestHash, 'wasm', m.segments.length);
    expect([...store.keys()].filter((k) => k.startsWith(key)).sort()).toEqual([key, `${key}:chain`, `${key}:drop:0`]);
    const stages = api().api;
    await stages.init(request('tiny', 'stages'));
    for (const thr of [off0, all, off0]) {
      const [got, want] = [await singles(a, thr), await singles(stages, thr)];
      expect(got.map((r) => [r.index, r.exit])).toEqual(want.map((r) => [r.index, r.exit]));
      if (thr === off0) expect(got.every((r) => r.exit !== 0)).toBe(true);
      await engines.idle();
    }
    // off0 → all → off0: each switch (at the call after the thresholds changed) makes one session from the cache.
    engines.mockRestore();
    expect(creates(), 'one session per switch').toBe(made + 3);
    expect(compiles(), 'no recompile').toBe(compiled);
    expect(compiledLive(), 'two compiled sessions alive only while one is made').toEqual({ now: 1, peak: 2 });
    expect(compiledSessions.map((c) => c.releases)).toEqual([...compiledSessions.slice(1).map(() => 1), 0]);
    await a.dispose();
    await stages.dispose();
  });

  it('calls that would switch the model while plan() measures it: they run on the gated model plan() holds, decisions as the stage engine', async () => {
    const { api: a, compiledLive } = api();
    const engines = trackEngines();
    const m = (await a.init(request('tiny', 'compiled'))).manifest;
    const stages = api().api;
    await stages.init(request('tiny', 'stages'));
    const vectors = [m.exits.map(() => 1), m.exits.map((_, i) => (i === 0 ? NEVER_EXIT : 0.5))];
    const want = await Promise.all(vectors.map((v) => singles(stages, v)));
    // While plan() times the gated compiled model run after run, calls alternate two kinds of model: they run on the gated
    // model the measurement holds (other models made only before and after it), deciding as the stage engine.
    let planned = false;
    const planning = a.plan({ target: 0.9 }).finally(() => (planned = true));
    let switches = 0;
    for (let v = 0; !planned && switches < 500; v = 1 - v, switches++) {
      const i = switches % tiny.inputs.length;
      const req = {
        inputs: [{ kind: 'tensor', data: tiny.inputs[i]! }],
        thresholds: vectors[v]!,
        probabilities: false,
      };
      const [r] = (await a.classify(req as ClassifyRequest)).results;
      expect([r!.index, r!.exit], `input ${i}`).toEqual([want[v]![i]!.index, want[v]![i]!.exit]);
    }
    expect(switches).toBeGreaterThan(2);
    expect((await planning).plan.timings.stageMs).toHaveLength(m.segments.length);
    await engines.idle();
    engines.mockRestore();
    expect(compiledLive()).toEqual({ now: 1, peak: 2 });
    await a.dispose();
    expect(compiledLive().now).toBe(0);
    await stages.dispose();
  });

  it("'auto' compiles; a prefix continues stage by stage and downloads no segment past the last exit it needs", async () => {
    const { api: a } = api();
    log = [];
    const init = await a.init(request('tiny', 'auto'));
    expect(init.state.engine).toBe('compiled');
    const m = init.manifest;
    const exit0 = m.exits.map((_, i) => (i === 0 ? 0 : NEVER_EXIT));
    const r0 = await singles(a, exit0);
    expect(r0.every((r) => r.exit === 0 && r.stages.length === 1)).toBe(true);
    expect(log.filter((p) => p.endsWith('.onnx')).map((p) => path.basename(p))).toEqual(['segment-0.onnx']);
    // Exit 1 only: segment 1 loads through the stage engine's continuation, never segment 2.
    const exit1 = m.exits.map((_, i) => (i === 1 ? 0 : NEVER_EXIT));
    const r1 = await singles(a, exit1);
    expect(r1.every((r) => r.exit === 1 && r.stages.length === 2)).toBe(true);
    expect(log.filter((p) => p.endsWith('.onnx')).map((p) => path.basename(p))).toEqual([
      'segment-0.onnx',
      'segment-1.onnx',
    ]);
    expect((await a.state())?.sessions).toEqual([true, true, false]);
    // Results after the recompile of segments 0-1 equal the stage references.
    const want = tiny.expected;
    const mixed = await singles(
      a,
      m.exits.map((e) => e.threshold),
    );
    mixed.forEach((g, i) => {
      expect({ index: g.index, exit: g.exit }).toEqual({ index: want[i]!.index, exit: want[i]!.exit });
      expect(Math.abs(g.confidence - want[i]!.confidence)).toBeLessThan(1e-5);
    });
    await a.dispose();
  });

  it('a bundle whose segments cannot be composed falls back to the stage engine, saying why, with the same results', async () => {
    const { api: a } = api();
    const init = await a.init(request('tiny-clash', 'compiled'));
    expect(init.state.engine).toBe('stages');
    expect(init.state.engineFallbackReason).toMatch(/cannot be compiled.*"thresholds" is reserved/);
    const got = await singles(
      a,
      init.manifest.exits.map((e) => e.threshold),
    );
    got.forEach((g, i) =>
      expect({ index: g.index, exit: g.exit }).toEqual({
        index: tiny.expected[i]!.index,
        exit: tiny.expected[i]!.exit,
      }),
    );
    await a.dispose();
  });

  it('caches the compiled model per manifest hash and backend; a corrupt cached one is detected by sha256 and rebuilt', async () => {
    const store = new Map<string, CachedCompiled>();
    const puts: string[] = [];
    const cache: BundleCache = {
      ...noCache,
      enabled: true,
      getCompiled: async (k) => store.get(k),
      putCompiled: async (k, e) => (puts.push(k), store.set(k, e), true),
      deleteCompiled: async (k) => void store.delete(k),
    };
    const first = api(cache).api;
    const init = await first.init(request('tiny', 'compiled'));
    await first.dispose();
    const key = compiledKey(init.manifestHash, 'wasm', 1);
    expect([...store.keys()]).toEqual([key]);
    expect(puts).toEqual([key]);
    // A second open reads it (no compile, no put).
    const second = api(cache).api;
    expect((await second.init(request('tiny', 'compiled'))).state.engine).toBe('compiled');
    await second.dispose();
    expect(puts).toEqual([key]);
    // Corrupt the cached bytes (a weight in the middle), its sha256 left as stored: detected, rebuilt, never run.
    const good = store.get(key)!;
    const bad = new Uint8Array(good.bytes); // a copy (Buffer.slice would be a view)
    bad[bad.length >> 1]! ^= 0x40;
    store.set(key, { sha256: good.sha256, bytes: bad });
    const third = api(cache).api;
    const t = await third.init(request('tiny', 'compiled'));
    expect(t.state.engine).toBe('compiled');
    expect(puts).toEqual([key, key]);
    expect(store.get(key)!.sha256).toBe(good.sha256);
    expect(Buffer.from(store.get(key)!.bytes).equals(Buffer.from(good.bytes))).toBe(true);
    const got = await singles(
      third,
      t.manifest.exits.map((e) => e.threshold),
    );
    got.forEach((g, i) => {
      const w = tiny.expected[i]!;
      expect({ index: g.index, exit: g.exit }).toEqual({ index: w.index, exit: w.exit });
      expect(Math.abs(g.confidence - w.confidence)).toBeLessThan(1e-5);
    });
    await third.dispose();
  });

  it('plan() on the compiled engine times the gated compiled model: every segment loaded, each exit its measured cost', async () => {
    const a = api().api;
    const init = await a.init(request('tiny', 'compiled'));
    expect(init.state.engine).toBe('compiled');
    const timed = spyTimeRun();
    const { plan, state } = await a.plan({ target: 0.99 }).finally(timed.mockRestore);
    expect(state.sessions.every(Boolean)).toBe(true);
    expect(state.engine).toBe('compiled');
    const { stageMs, decisionMs } = plan.timings;
    expect(stageMs).toHaveLength(init.manifest.segments.length);
    expect(stageMs.every((t) => Number.isFinite(t) && t >= 0)).toBe(true);
    expect(stageMs.reduce((x, y) => x + y, 0)).toBeGreaterThan(0);
    expect(decisionMs.every((t) => t === 0)).toBe(true);
    const exitMs = plan.timings.exitMs!;
    expect(exitMs).toHaveLength(init.manifest.segments.length);
    init.manifest.segments.forEach((g, s) =>
      expect(exitMs[s], `segment ${s}`).toSatisfy((t: number) => (g.exit === undefined ? t === 0 : t >= 0)),
    );
    // Every timed run was on the gated model and left where its thresholds say: at the first exit at 0 (none: ran
    // through); one that left at an exit in use but passed (threshold 1) has that exit's cost unmeasured, 0.
    expect(timed.runs.length).toBeGreaterThan(0);
    expect(timed.runs.every((r) => r.gated)).toBe(true);
    for (const r of timed.runs) {
      const left = r.exit >= 0 && r.thresholds[r.exit] === 1;
      expect(r.exit, r.thresholds.join()).toBe(left ? r.exit : r.thresholds.indexOf(0));
      if (left) expect(exitMs[init.manifest.exits[r.exit]!.segment]).toBe(0);
    }
    // the plan's thresholds classify on the compiled engine as on the stage engine
    const s = api().api;
    await s.init(request('tiny', 'stages'));
    const both = await Promise.all([singles(a, plan.thresholds), singles(s, plan.thresholds)]);
    expect(both[0].map((r) => [r.index, r.exit])).toEqual(both[1].map((r) => [r.index, r.exit]));
    await a.dispose();
    await s.dispose();
  });

  it('a model flip: the next call runs on the model in use while the other is made; that one takes over once warmed up, the old one released once', async () => {
    const t = await settled(false);
    const [a, made, off0] = [t.api, t.compiledSessions, t.off0];
    const stages = api().api;
    await stages.init(request('tiny', 'stages'));
    const [old, n] = [made.at(-1)!, made.length];
    t.hold.close();
    const flip = await one(a, 0, off0); // on the ungated model in use: the next calls want the one without exit 0
    const runs = old.runs;
    // The next call starts that model's build, whose session creation is held: the call resolves meanwhile.
    const next = one(a, 1, off0);
    await t.hold.entered();
    await soon(next, 'the call after the flip');
    expect(old.runs, 'the call ran on the model in use').toBe(runs + 1);
    expect(made.length, 'the new session is still held').toBe(n);
    for (const [i, g] of [flip, await next].entries()) {
      const w = await one(stages, i, off0);
      expect({ index: g.index, exit: g.exit }).toEqual({ index: w.index, exit: w.exit });
      expect(Math.abs(g.confidence - w.confidence)).toBeLessThan(1e-5);
    }
    t.hold.open();
    await t.engines.idle();
    expect(made.length).toBe(n + 1);
    const fresh = made.at(-1)!;
    expect([old.releases, fresh.releases], 'the old session released once, the new one in use').toEqual([1, 0]);
    const before = [old.runs, fresh.runs];
    const [all, want] = [await singles(a, off0), await singles(stages, off0)];
    expect(all.map((r) => [r.index, r.exit])).toEqual(want.map((r) => [r.index, r.exit]));
    expect([old.runs, fresh.runs], 'every call on the new model').toEqual([before[0], before[1]! + tiny.inputs.length]);
    expect(t.compiledLive()).toEqual({ now: 1, peak: 2 });
    t.engines.mockRestore();
    await a.dispose();
    expect(made.map((c) => c.releases)).toEqual(made.map(() => 1));
    await stages.dispose();
  });

  it("nested in another runtime's queued jobs (RuntimeDeps.nested: the learning runtime): the call after a model flip waits for its model, made in its turn", async () => {
    const t = await settled(false, { nested: true });
    const [a, made, off0] = [t.api, t.compiledSessions, t.off0];
    const n = made.length;
    t.hold.close();
    await one(a, 0, off0); // on the ungated model in use: the next call wants the one without exit 0
    let done = false;
    const next = one(a, 1, off0).then((r) => ((done = true), r));
    await t.hold.entered();
    await new Promise((r) => setTimeout(r, 100));
    expect(done, 'no onnxruntime step outside the call: it waits for the held session creation').toBe(false);
    t.hold.open();
    await next;
    expect(made.length, 'the model without exit 0 was made in the call').toBe(n + 1);
    await t.engines.idle();
    expect(made.map((c) => c.releases)).toEqual([...made.slice(0, -1).map(() => 1), 0]);
    t.engines.mockRestore();
    await a.dispose();
  });

  it('dispose() while a model is made in the background (its session creation held): both released, nothing made after', async () => {
    const t = await settled(false);
    const [a, made, off0] = [t.api, t.compiledSessions, t.off0];
    t.hold.close();
    await one(a, 0, off0);
    const next = one(a, 1, off0); // starts the build of the model without exit 0
    await t.hold.entered();
    await soon(next, 'the call after the flip');
    const at = { creates: t.creates(), compiles: compiles() };
    let disposed = false;
    const disposing = a.dispose().then(() => (disposed = true));
    await sleep(20);
    expect(disposed, 'dispose() waits for the build under way').toBe(false);
    t.hold.open();
    await disposing;
    t.engines.mockRestore();
    expect({ creates: t.creates(), compiles: compiles() }, 'nothing made after dispose()').toEqual(at);
    expect(t.compiledLive().now).toBe(0);
    expect(made.at(-1)!.runs, 'the session made during dispose() never ran (no warm-up either)').toBe(0);
    expect(
      made.map((c) => c.releases),
      'each compiled session released once',
    ).toEqual(made.map(() => 1));
    await expect(one(a, 0, off0)).rejects.toMatchObject({ code: 'DISPOSED' });
  });

  it('a background build that fails: the stage engine takes over, saying why, the model in use released', async () => {
    let failing = false;
    const t = await settled(false, {
      onCompiled: async () => {
        if (failing) throw new Error('no memory for another model (test)');
      },
    });
    const [a, made, off0] = [t.api, t.compiledSessions, t.off0];
    const stages = api().api;
    await stages.init(request('tiny', 'stages'));
    failing = true;
    await one(a, 0, off0);
    const next = await one(a, 1, off0); // runs on the model in use; the other build fails in the background
    expect([next.index, next.exit]).toEqual([(await one(stages, 1, off0)).index, (await one(stages, 1, off0)).exit]);
    await t.engines.idle();
    t.engines.mockRestore();
    const state = (await a.state())!;
    expect(state.engine).toBe('stages');
    expect(state.engineFallbackReason).toMatch(/cannot run the compiled model: no memory for another model \(test\)/);
    expect(t.compiledLive().now, 'the model in use released').toBe(0);
    expect(made.map((c) => c.releases)).toEqual(made.map(() => 1));
    const [got, want] = [await singles(a, off0), await singles(stages, off0)];
    expect(got.map((r) => [r.index, r.exit])).toEqual(want.map((r) => [r.index, r.exit]));
    await a.dispose();
    await stages.dispose();
  });

  it('an unexpected error in a background build (here a cache read throws): the stage engine takes over, saying why', async () => {
    let broken = false;
    const store = new Map<string, CachedCompiled>();
    const cache: BundleCache = {
      ...noCache,
      enabled: true,
      getCompiled: async (k) => {
        if (broken) throw new Error('cache bug (test)');
        return store.get(k);
      },
      putCompiled: async (k, e) => (store.set(k, e), true),
      deleteCompiled: async (k) => void store.delete(k),
    };
    const t = await settled(false, { cache });
    const [a, off0] = [t.api, t.off0];
    broken = true;
    await one(a, 0, off0);
    await one(a, 1, off0); // runs on the model in use; the other build throws in the background
    await t.engines.idle();
    t.engines.mockRestore();
    const state = (await a.state())!;
    expect(state.engine).toBe('stages');
    expect(state.engineFallbackReason).toMatch(/making the compiled model failed: cache bug \(test\)/);
    expect(t.compiledLive().now).toBe(0);
    expect((await one(a, 2, off0)).exit).not.toBe(0);
    await a.dispose();
  });

  it('plan() while the ungated model a call asked for is made in the background: it waits for that build and times the gated one', async () => {
    const t = await settled(true);
    const [a, made, on, hold] = [t.api, t.compiledSessions, t.on, t.hold];
    await one(a, 0, on); // runs the model without exit 0 in use; every exit on: the next call builds the ungated one
    hold.close();
    const n = made.length;
    const call = one(a, 0, on);
    await hold.entered();
    await soon(call, 'the call that started the build'); // on the model without exit 0, its ungated build held until plan() asks for the gated one (withGated)
    const withGated = CompiledEngine.prototype.withGated;
    const spy = vi.spyOn(CompiledEngine.prototype, 'withGated').mockImplementation(function (this: CompiledEngine, fn) {
      hold.open();
      return withGated.call(this, fn);
    });
    const timed = spyTimeRun();
    const { plan } = await a
      .plan({ target: 0.9 })
      .finally(timed.mockRestore)
      .finally(() => spy.mockRestore());
    t.engines.mockRestore();
    // made[n]: the ungated model (it ran its warm-up only), made[n + 1]: the gated one every timed run ran on.
    expect(made.length).toBe(n + 2);
    expect(made[n]!.runs, 'no timed run on the ungated model').toBe(1);
    expect(made[n + 1]!.runs).toBe(2 + timed.runs.length);
    expect(timed.runs.length).toBeGreaterThan(0);
    expect(timed.runs.every((r) => r.gated)).toBe(true);
    expect(plan.timings.exitMs).toHaveLength(t.m.segments.length);
    expect(t.compiledLive().peak, 'the ungated one made while the one without exit 0 served').toBe(2);
    await a.dispose();
  });

  it('dispose() while plan() measures: no compiled model is made after it, plan() rejects with DISPOSED', async () => {
    const { api: a, creates, compiledLive } = api();
    await a.init(request('tiny', 'compiled'));
    let disposing: Promise<void> | undefined;
    let at: { creates: number; compiles: number } | undefined;
    const timed = spyTimeRun((n) => {
      if (n !== 10) return;
      at = { creates: creates(), compiles: compiles() };
      disposing = a.dispose();
    });
    await expect(a.plan({ target: 0.9 }).finally(timed.mockRestore)).rejects.toMatchObject({ code: 'DISPOSED' });
    await disposing;
    expect(at, 'dispose() was called during the measurement').toBeDefined();
    expect({ creates: creates(), compiles: compiles() }, 'nothing made after dispose()').toEqual(at);
    expect(compiledLive().now).toBe(0);
  });

  it("profile: the call's parts in the worker, only when asked for", async () => {
    const a = api().api;
    await a.init(request('tiny', 'compiled'));
    const thresholds = [0, 0];
    const data = tiny.inputs[0]!;
    const plain = await a.classify({ inputs: [{ kind: 'tensor', data }], thresholds, probabilities: false });
    expect(plain.results[0]!.profile).toBeUndefined();
    const r = await a.classify({ inputs: [{ kind: 'tensor', data }], thresholds, probabilities: false, profile: true });
    const p = r.results[0]!.profile!;
    expect(p.runs).toBe(1); // one compiled run
    const parts = p.preprocessMs + p.runMs + p.queueMs + p.readbackMs + p.decisionMs + p.replyMs;
    for (const v of [p.preprocessMs, p.runMs, p.queueMs, p.readbackMs, p.decisionMs, p.replyMs])
      expect(v).toBeGreaterThanOrEqual(0);
    expect(p.runMs).toBeGreaterThan(0);
    expect(parts).toBeLessThanOrEqual(p.replyAt - p.recvAt + 1e-6);
    expect(p.replyAt).toBeGreaterThan(p.recvAt);
    await a.dispose();
  });
});

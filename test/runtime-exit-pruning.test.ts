// Live exit pruning in the worker runtime (runtime.ts + live-pruning.ts + policy/exit-pruning.ts) on the tiny bundle in
// Node (onnxruntime-node over local HTTP): with every threshold at 1 (nothing leaves) the exits are pruned and stop
// running (the compiled engine's gated or exit-free model, probes on a spare compiled model; the stage engine fetches no
// head output), but for the probes, with the same decisions as without pruning; `pruneExits: false` keeps every exit
// running; calibrated traffic prunes nothing at MACs prices, and an exit priced by time (the per-exit overhead over the
// live call time) goes; the pruned state is remembered in the cache and back in force at the next load.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { PRUNE_DEFAULTS } from '../src/policy/exit-pruning.js';
import type { DevicePlan } from '../src/policy/device-plan.js';
import type { EngineChoice, WireResult, WorkerApi } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { IdbBundleCache, noCache, prunedKey, type BundleCache, type PrunedRecord } from '../src/runtime/cache.js';
import { CompiledEngine } from '../src/runtime/compiled-engine.js';
import { decodeModel } from '../src/graph/index.js';
import type { OrtHandle } from '../src/runtime/ort-backend.js';
import { fakeIdb } from './fixtures/fake-idb.js';
import { prunedCache } from './fixtures/pruned-cache.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
});
afterAll(() => tiny.close());
afterEach(() => vi.restoreAllMocks());

/** A worker API on onnxruntime-node counting the segment runs that fetch an exit head's output (`heads()`). */
async function open(
  engine: EngineChoice,
  pruneExits?: boolean,
  deps: { cache?: BundleCache; exitOverheadMs?: number } = {},
): Promise<{ api: WorkerApi; heads: () => number; exits: number; manifest: BundleManifest; pruned?: number[] }> {
  let headRuns = 0;
  let exitOutputs = new Set<string>();
  const loadOrt = async (): Promise<OrtHandle> => {
    const h = await loadOrtNode();
    const create = h.ort.InferenceSession.create.bind(h.ort.InferenceSession);
    const counted = async (...args: Parameters<typeof create>) => {
      const session = await create(...args);
      const run = session.run.bind(session);
      return Object.assign(session, {
        run: ((feeds: Parameters<typeof run>[0], fetches?: unknown) => {
          if (Array.isArray(fetches) && fetches.some((f) => exitOutputs.has(f as string))) headRuns++;
          return (run as (f: unknown, o?: unknown) => ReturnType<typeof run>)(feeds, fetches);
        }) as typeof run,
      });
    };
    return { ...h, ort: { ...h.ort, InferenceSession: { create: counted as typeof create } } as typeof h.ort };
  };
  const api = createWorkerApi({ loadOrt, cache: noCache, ...deps });
  const reply = await api.init(
    tinyInitRequest(tiny.base, 'tiny', { engine, ...(pruneExits === undefined ? {} : { pruneExits }) }),
  );
  exitOutputs = new Set(reply.manifest.segments.flatMap((s) => (s.exitOutput ? [s.exitOutput] : [])));
  const { prunedExits } = reply.state;
  return {
    api,
    heads: () => headRuns,
    exits: reply.manifest.exits.length,
    manifest: reply.manifest,
    ...(prunedExits ? { pruned: [...prunedExits] } : {}),
  };
}

/** `calls` calls of `batch` tiny inputs each (cycling through the 64), with `thresholds`; every result in order. */
async function serve(a: WorkerApi, calls: number, batch: number, thresholds: readonly number[]): Promise<WireResult[]> {
  const out: WireResult[] = [];
  for (let c = 0; c < calls; c++) {
    const inputs = Array.from({ length: batch }, (_, j) => ({
      kind: 'tensor' as const,
      data: tiny.inputs[(c * batch + j) % 64]!.slice(),
    }));
    out.push(...(await a.classify({ inputs, thresholds, probabilities: false })).results);
  }
  return out;
}

/**
 * `got` decides as `want`: same label and exit per input, confidence within 1e-5 (the exit-free model's softmax is the
 * stage engine's, in JS; the cascade models apply it in the graph: float32 rounding may differ).
 */
function expectSameDecisions(got: readonly WireResult[], want: readonly WireResult[]): void {
  expect(got.map((r) => [r.index, r.exit])).toEqual(want.map((r) => [r.index, r.exit]));
  got.forEach((r, i) => expect(Math.abs(r.confidence - want[i]!.confidence), `input ${i}`).toBeLessThan(1e-5));
}

describe('live exit pruning in the worker', () => {
  it('compiled engine, nothing leaves: every exit is pruned, the exit-free model runs them off but for 1 probe in 32, decisions unchanged', async () => {
    const runs: { kind: string; thresholds: number[] }[] = [];
    const orig = CompiledEngine.prototype.run;
    vi.spyOn(CompiledEngine.prototype, 'run').mockImplementation(function (this: CompiledEngine, ...args) {
      runs.push({ kind: args[0].kind, thresholds: [...args[2]] });
      return orig.apply(this, args);
    });
    const pruned = await open('compiled');
    const ones = Array.from({ length: pruned.exits }, () => 1);
    const calls = 400;
    const withPruning = await serve(pruned.api, calls, 1, ones);
    const state = await pruned.api.state();
    expect(state?.prunedExits).toEqual([0, 1]);
    // From the call after the last exit was pruned: probes (thresholds as requested) exactly every 32nd call, every
    // other call with every exit off; soon all of them on the exit-free 'chain' model (no head, no If; a probe there
    // runs a spare compiled model with the exits)
    const first = runs.findIndex((r) => r.thresholds.every((t) => t === NEVER_EXIT));
    expect(first).toBeGreaterThanOrEqual(PRUNE_DEFAULTS.minCount);
    const probes = runs.map((r, i) => (r.thresholds.every((t) => t === 1) ? i : -1)).filter((i) => i > first);
    expect(probes.length).toBeGreaterThanOrEqual(Math.floor((calls - first) / PRUNE_DEFAULTS.probeEvery) - 1);
    for (let j = 1; j < probes.length; j++) expect(probes[j]! - probes[j - 1]!).toBe(PRUNE_DEFAULTS.probeEvery);
    expect(runs.length).toBe(calls);
    expect(runs.slice(-100).every((r) => r.kind === 'chain')).toBe(true);
    // the probes run no segment session (the stages would fetch both heads' outputs): a spare compiled model
    const h0 = pruned.heads();
    const more = await serve(pruned.api, 4 * PRUNE_DEFAULTS.probeEvery, 1, ones);
    expect(runs.slice(calls).filter((r) => r.thresholds.every((t) => t === 1))).toHaveLength(4);
    expect(pruned.heads() - h0).toBe(0);
    withPruning.push(...more);

    const plain = await open('compiled', false);
    const without = await serve(plain.api, calls, 1, ones);
    without.push(...(await serve(plain.api, 4 * PRUNE_DEFAULTS.probeEvery, 1, ones)));
    expect((await plain.api.state())?.prunedExits).toBeUndefined();
    expectSameDecisions(withPruning, without);
    const plainRuns = runs.slice(calls + 4 * PRUNE_DEFAULTS.probeEvery);
    expect(plainRuns.every((r) => r.kind === 'ungated' && r.thresholds.every((t) => t === 1))).toBe(true);
    await pruned.api.dispose();
    await plain.api.dispose();
  });

  it('compiled engine, only the last exit pruned: the model without it runs (no head, no gate), probes on the ungated spare, decisions unchanged', async () => {
    // the model each call ran on (CompiledEngine's modelFor picks it: the one at hand, or the spare for a probe)
    const runs: { kind: string; thresholds: number[] }[] = [];
    type Picked = { kind: string } | undefined;
    const proto = CompiledEngine.prototype as unknown as { modelFor: (m: unknown, t: readonly number[]) => Picked };
    const orig = proto.modelFor;
    vi.spyOn(proto, 'modelFor').mockImplementation(function (this: unknown, m, t) {
      const picked = orig.call(this, m, t);
      runs.push({ kind: picked?.kind ?? 'stages', thresholds: [...t] });
      return picked;
    });
    const pruned = await open('compiled');
    const last = pruned.exits - 1;
    // the bundle's thresholds but the last exit's at 1: a third of the inputs leave at exit 0 (it pays: kept), none at
    // the last exit (it does not: pruned)
    const requested = pruned.manifest.exits.map((e, i) => (i === last ? 1 : e.threshold));
    const calls = 400;
    const withPruning = await serve(pruned.api, calls, 1, requested);
    expect((await pruned.api.state())?.prunedExits).toEqual([last]);
    // the steady calls (the last exit off) run the model without it; the probes (as requested) the ungated model kept
    // beside it, with no segment session (the stages would fetch the heads' outputs)
    const tail = runs.slice(-128);
    const steady = tail.filter((r) => r.thresholds[last] === NEVER_EXIT);
    const probes = tail.filter((r) => r.thresholds[last] === 1);
    expect(steady.length + probes.length).toBe(tail.length);
    expect(probes).toHaveLength(128 / PRUNE_DEFAULTS.probeEvery);
    expect(steady.every((r) => r.kind === `drop:${last}`)).toBe(true);
    expect(probes.every((r) => r.kind === 'ungated')).toBe(true);
    const h0 = pruned.heads();
    withPruning.push(...(await serve(pruned.api, 2 * PRUNE_DEFAULTS.probeEvery, 1, requested)));
    expect(pruned.heads() - h0).toBe(0);
    const plain = await open('compiled', false);
    const without = await serve(plain.api, calls, 1, requested);
    without.push(...(await serve(plain.api, 2 * PRUNE_DEFAULTS.probeEvery, 1, requested)));
    expectSameDecisions(withPruning, without);
    await pruned.api.dispose();
    await plain.api.dispose();
  });

  it('stage engine, batches: pruned heads are not fetched but on probes; pruneExits: false fetches them on every call', async () => {
    const pruned = await open('stages');
    const plain = await open('stages', false);
    const ones = Array.from({ length: pruned.exits }, () => 1);
    // 8 inputs a call: each reaches both exits, so the windows fill 8 at a time
    const a = await serve(pruned.api, 40, 8, ones);
    expect((await pruned.api.state())?.prunedExits).toEqual([0, 1]);
    const b = await serve(plain.api, 40, 8, ones);
    expectSameDecisions(a, b);
    const [h0, p0] = [pruned.heads(), plain.heads()];
    await serve(pruned.api, 64, 8, ones);
    await serve(plain.api, 64, 8, ones);
    expect(plain.heads() - p0).toBe(64 * 2); // two exit heads read per call
    expect(pruned.heads() - h0).toBe((64 / PRUNE_DEFAULTS.probeEvery) * 2); // the probes only
    await pruned.api.dispose();
    await plain.api.dispose();
  });

  it('at the bundle thresholds (exits that pay at MACs prices) nothing is pruned and the decisions are the Node reference', async () => {
    const { api, manifest } = await open('compiled', undefined, { exitOverheadMs: 0 });
    const rs = await serve(
      api,
      320,
      1,
      manifest.exits.map((e) => e.threshold),
    );
    expect((await api.state())?.prunedExits).toEqual([]);
    rs.forEach((r, i) => {
      const e = tiny.expected[i % 64]!;
      expect([r.index, r.exit]).toEqual([e.index, e.exit]);
      expect(r.confidence).toBeCloseTo(e.confidence, 5);
    });
    await api.dispose();
  });
});

/**
 * The bundle's thresholds with exit 1 made stricter: of the inputs reaching it, ~14 % leave (the top quarter of those
 * leaving at the bundle's threshold): above its break-even at MACs prices + 1 % (9 %), far below it at 5 % per exit
 * (33 %) or at a cost of a third of the call.
 */
function stricterExit1(manifest: BundleManifest): number[] {
  const leaving = tiny.expected
    .filter((e) => e.exit === 1)
    .map((e) => e.confidence)
    .sort((a, b) => a - b);
  return [manifest.exits[0]!.threshold, leaving[Math.floor(leaving.length * 0.75)]!];
}

describe('exits priced by time', () => {
  it('an exit that pays at MACs prices goes when each exit costs its overhead over the live call time; answers move only to the full model', async () => {
    const probe = await open('compiled', false);
    const t = stricterExit1(probe.manifest);
    const reference = await serve(probe.api, 64, 1, t);
    const full = await serve(probe.api, 64, 1, [NEVER_EXIT, NEVER_EXIT]);
    await probe.api.dispose();
    const byMacs = await open('compiled', undefined, { exitOverheadMs: 0 });
    await serve(byMacs.api, 320, 1, t);
    expect((await byMacs.api.state())?.prunedExits).toEqual([]);
    await byMacs.api.dispose();
    // a per-exit overhead far above this tiny model's call time: each exit is charged the cap, 5 % of a call
    const { api } = await open('compiled', undefined, { exitOverheadMs: 1000 });
    const rs = await serve(api, 320, 1, t);
    expect((await api.state())?.prunedExits).toEqual([1]);
    let moved = 0;
    rs.forEach((r, i) => {
      const e = reference[i % 64]!;
      if (r.exit === e.exit) return expect(r.index).toBe(e.index);
      moved++;
      expect([e.exit, r.exit]).toEqual([1, -1]); // an input of the pruned exit: the full model's answer
      expect(r.index).toBe(full[i % 64]!.index);
    });
    expect(moved).toBeGreaterThan(0);
    await api.dispose();
  });
});

describe('exits priced by a device plan in force', () => {
  it('an exit whose measured cost is a third of the call goes though it pays at MACs prices; a plan for other threads is not used', async () => {
    const first = createWorkerApi({ loadOrt: loadOrtNode, cache: noCache });
    const { manifest, manifestHash } = await first.init(tinyInitRequest(tiny.base, 'tiny'));
    await first.dispose();
    const t = stricterExit1(manifest);
    const plan = (threads: number): DevicePlan => ({
      version: 1,
      manifestHash,
      backend: 'wasm',
      threads,
      measuredAt: new Date(0).toISOString(),
      // compiled-engine times: exit 1 costs 1 ms of a 3 ms backbone, exit 0 next to nothing
      timings: { stageMs: [1, 1, 1], decisionMs: [0, 0, 0], exitMs: [0.001, 1, 0] },
      target: 0.9,
      enabled: [true, true],
      thresholds: t,
      expectedAgreement: 1,
      expectedMacsFraction: 1,
      expectedMsFraction: 1,
      curve: [],
    });
    const pruned = async (threads: number): Promise<readonly number[] | undefined> => {
      const api = createWorkerApi({
        loadOrt: loadOrtNode,
        cache: { ...noCache, getPlan: async () => plan(threads) },
        exitOverheadMs: 0, // without the plan: MACs + 1 %, where exit 1 pays
      });
      const reply = await api.init(tinyInitRequest(tiny.base, 'tiny', { usePlan: true }));
      expect(reply.plan?.threads).toBe(threads === 1 ? 1 : undefined);
      await serve(api, 320, 1, t);
      const out = (await api.state())?.prunedExits;
      await api.dispose();
      return out;
    };
    expect(await pruned(1)).toEqual([1]);
    expect(await pruned(2)).toEqual([]);
  });
});

describe('the pruned state across loads', () => {
  it('is remembered per bundle and backend: the next load starts with it pruned, probes still run, decisions unchanged', async () => {
    const cache = prunedCache();
    const first = await open('compiled', undefined, { cache });
    expect(first.pruned).toEqual([]);
    const ones = Array.from({ length: first.exits }, () => 1);
    await serve(first.api, 200, 1, ones);
    expect((await first.api.state())?.prunedExits).toEqual([0, 1]);
    await first.api.dispose();
    const [key, record] = [...cache.records.entries()][0]!;
    expect(record.entries).toHaveLength(1);
    expect(record.entries[0]).toMatchObject({ thresholds: ones, pruned: [0, 1] });

    const runs: number[][] = [];
    const orig = CompiledEngine.prototype.run;
    vi.spyOn(CompiledEngine.prototype, 'run').mockImplementation(function (this: CompiledEngine, ...args) {
      runs.push([...args[2]]);
      return orig.apply(this, args);
    });
    const second = await open('compiled', undefined, { cache });
    // right after load, before any call, only a memory of the thresholds the first call is expected to send (the
    // manifest's here) is in force: not this one
    expect(second.pruned).toEqual([]);
    const again = await serve(second.api, 64, 1, ones);
    expect(runs[0]).toEqual([NEVER_EXIT, NEVER_EXIT]); // the first call with them already runs with the exits off
    expect(runs.filter((t) => t.every((x) => x === 1))).toHaveLength(64 / PRUNE_DEFAULTS.probeEvery); // probes
    const plain = await open('compiled', false);
    expectSameDecisions(again, await serve(plain.api, 64, 1, ones));
    // other thresholds: nothing remembered for them, nothing pruned
    await serve(second.api, 1, 1, [0.5, 0.5]);
    expect((await second.api.state())?.prunedExits).toEqual([]);
    await second.api.dispose();
    await plain.api.dispose();
    // remembered for the manifest's thresholds: in force right after load, the exit-free model made first
    const bundle = second.manifest.exits.map((e) => e.threshold);
    cache.records.set(key, { ...record, entries: [{ ...record.entries[0]!, thresholds: bundle }] });
    const third = await open('compiled', undefined, { cache });
    expect(third.pruned).toEqual([0, 1]);
    await third.api.dispose();
  });

  it('a spare model that cannot be made leaves the compiled engine on (probes run the stages) and is not asked for again', async () => {
    const cache = prunedCache();
    const first = createWorkerApi({ loadOrt: loadOrtNode, cache: noCache });
    const { manifestHash, manifest } = await first.init(tinyInitRequest(tiny.base, 'tiny'));
    await first.dispose();
    // every exit pruned at the manifest's thresholds: the exit-free model is made first, and no spare beside it
    const bundle = manifest.exits.map((e) => e.threshold);
    const probes = bundle.map(() => ({ n: 0, left: 0 }));
    cache.records.set(prunedKey(manifestHash, 'wasm'), {
      version: 1,
      manifestHash,
      backend: 'wasm',
      entries: [{ thresholds: bundle, pruned: [0, 1], probes }],
    });
    let failing = false;
    let refused = 0;
    const loadOrt = async (): Promise<OrtHandle> => {
      const h = await loadOrtNode();
      const create = h.ort.InferenceSession.create.bind(h.ort.InferenceSession);
      // once open: onnxruntime refuses every compiled model with exits (its `If` nodes), i.e. the probes' spare
      const refusing = (async (bytes: Uint8Array, options?: unknown) => {
        if (failing && (decodeModel(bytes).proto.graph?.node ?? []).some((n) => n.opType === 'If')) {
          refused++;
          throw new Error('no session for this one');
        }
        return (create as (b: Uint8Array, o?: unknown) => ReturnType<typeof create>)(bytes, options);
      }) as typeof create;
      return { ...h, ort: { ...h.ort, InferenceSession: { create: refusing } } as typeof h.ort };
    };
    const api = createWorkerApi({ loadOrt, cache });
    await api.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }));
    failing = true;
    const rs = await serve(api, 6 * PRUNE_DEFAULTS.probeEvery, 1, bundle);
    const state = await api.state();
    expect(state?.engineFallbackReason).toBeUndefined();
    expect(state).toMatchObject({ engine: 'compiled', prunedExits: [0, 1] });
    expect(refused).toBe(1);
    expect(rs.some((r) => r.exit >= 0)).toBe(true); // probes still run the exits (on the stages)
    await api.dispose();
  });

  it('a record that does not fit (a middle exit, another exit count, garbage) is ignored; a write that never settles breaks nothing', async () => {
    const cache = prunedCache(true);
    const a = await open('compiled', undefined, { cache });
    const ones = Array.from({ length: a.exits }, () => 1);
    const rs = await serve(a.api, 200, 1, ones);
    expect(rs).toHaveLength(200);
    expect((await a.api.state())?.prunedExits).toEqual([0, 1]);
    expect(cache.puts).toBe(1); // one write, never settled: no second one queued behind it
    await a.api.dispose();

    const stored = prunedCache();
    await serve((await open('compiled', undefined, { cache: stored })).api, 200, 1, ones);
    const [k] = [...stored.records.keys()];
    const good = stored.records.get(k!)!;
    const bad: unknown[] = [
      { ...good, entries: [{ thresholds: ones, pruned: [0], probes: [{ n: 0, left: 0 }] }] }, // exit 1 in use after it
      { ...good, entries: [{ thresholds: [1, 1, 1], pruned: [2], probes: [{ n: 0, left: 0 }] }] },
      {
        ...good,
        entries: [
          {
            thresholds: ones,
            pruned: [0, 1],
            probes: [
              { n: 5, left: 9 },
              { n: 0, left: 0 },
            ],
          },
        ],
      },
      { ...good, manifestHash: 'other' },
    ];
    for (const record of bad) {
      stored.records.set(k!, record as PrunedRecord);
      const b = await open('compiled', undefined, { cache: stored });
      await serve(b.api, 1, 1, ones); // a record that fits would be in force from this call on
      expect((await b.api.state())?.prunedExits).toEqual([]);
      await b.api.dispose();
    }
  });

  it('in IndexedDB (IdbBundleCache): written, read back at the next load, malformed values a miss, dropped with the bundle version; a full disk breaks nothing', async () => {
    const idb = fakeIdb(Infinity, false);
    const cache = (): IdbBundleCache => new IdbBundleCache('selfxit-test', 'bundles', () => idb.use, 100);
    const a = await open('compiled', undefined, { cache: cache() });
    const ones = Array.from({ length: a.exits }, () => 1);
    await serve(a.api, 200, 1, ones);
    await a.api.dispose();
    const key = [...idb.data.keys()].map(String).find((k) => k.startsWith('pruned:'))!;
    const hash = key.split(':')[1]!;
    expect(key).toBe(prunedKey(hash, 'wasm'));
    const b = await open('compiled', undefined, { cache: cache() });
    await serve(b.api, 1, 1, ones); // in force from the first call with those thresholds
    expect((await b.api.state())?.prunedExits).toEqual([0, 1]);
    await b.api.dispose();
    idb.data.set(key, { version: 1, manifestHash: hash, backend: 'wasm', entries: 'x' });
    const c = await open('compiled', undefined, { cache: cache() });
    expect(c.pruned).toEqual([]);
    await c.api.dispose();
    await cache().deletePlans(hash);
    expect(idb.data.has(key)).toBe(false);
    // writes fail (quota): serving goes on, nothing is remembered
    const full = fakeIdb(0, false);
    const d = await open('compiled', undefined, {
      cache: new IdbBundleCache('selfxit-test', 'bundles', () => full.use, 100),
    });
    expect(await serve(d.api, 200, 1, ones)).toHaveLength(200);
    expect((await d.api.state())?.prunedExits).toEqual([0, 1]);
    expect(full.quotaErrors.length).toBeGreaterThan(0);
    await d.api.dispose();
  });
});

// Live exit pruning in the worker runtime (runtime.ts + policy/exit-pruning.ts) on the tiny bundle in Node
// (onnxruntime-node over local HTTP): with every threshold at 1 (nothing leaves) the exits are pruned and stop running
// (the compiled engine's gated model; the stage engine fetches no head output), but for the probes, with the same
// decisions as without pruning; `pruneExits: false` keeps every exit running; calibrated traffic prunes nothing.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { PRUNE_DEFAULTS } from '../src/policy/exit-pruning.js';
import type { EngineChoice, WireResult, WorkerApi } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { noCache } from '../src/runtime/cache.js';
import { CompiledEngine } from '../src/runtime/compiled-engine.js';
import type { OrtHandle } from '../src/runtime/ort-backend.js';
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
): Promise<{ api: WorkerApi; heads: () => number; exits: number; manifest: BundleManifest }> {
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
  const api = createWorkerApi({ loadOrt, cache: noCache });
  const reply = await api.init(
    tinyInitRequest(tiny.base, 'tiny', { engine, ...(pruneExits === undefined ? {} : { pruneExits }) }),
  );
  exitOutputs = new Set(reply.manifest.segments.flatMap((s) => (s.exitOutput ? [s.exitOutput] : [])));
  return { api, heads: () => headRuns, exits: reply.manifest.exits.length, manifest: reply.manifest };
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

const decisions = (rs: readonly WireResult[]): [number, number, number][] =>
  rs.map((r) => [r.index, r.exit, Math.round(r.confidence * 1e6)]);

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
    // runs the stages)
    const first = runs.findIndex((r) => r.thresholds.every((t) => t === NEVER_EXIT));
    expect(first).toBeGreaterThan(PRUNE_DEFAULTS.minCount);
    const probes = runs.map((r, i) => (r.thresholds.every((t) => t === 1) ? i : -1)).filter((i) => i > first);
    expect(probes.length).toBeGreaterThanOrEqual(Math.floor((calls - first) / PRUNE_DEFAULTS.probeEvery) - 1);
    for (let j = 1; j < probes.length; j++) expect(probes[j]! - probes[j - 1]!).toBe(PRUNE_DEFAULTS.probeEvery);
    expect(runs.length).toBe(calls);
    expect(runs.slice(-100).every((r) => r.kind === 'chain')).toBe(true);

    const plain = await open('compiled', false);
    const without = await serve(plain.api, calls, 1, ones);
    expect((await plain.api.state())?.prunedExits).toBeUndefined();
    expect(decisions(withPruning)).toEqual(decisions(without));
    const plainRuns = runs.slice(calls);
    expect(plainRuns.every((r) => r.kind === 'ungated' && r.thresholds.every((t) => t === 1))).toBe(true);
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
    expect(decisions(a)).toEqual(decisions(b));
    const [h0, p0] = [pruned.heads(), plain.heads()];
    await serve(pruned.api, 64, 8, ones);
    await serve(plain.api, 64, 8, ones);
    expect(plain.heads() - p0).toBe(64 * 2); // two exit heads read per call
    expect(pruned.heads() - h0).toBe((64 / PRUNE_DEFAULTS.probeEvery) * 2); // the probes only
    await pruned.api.dispose();
    await plain.api.dispose();
  });

  it('at the bundle thresholds (exits that pay) nothing is pruned and the decisions are the Node reference', async () => {
    const { api, manifest } = await open('compiled');
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

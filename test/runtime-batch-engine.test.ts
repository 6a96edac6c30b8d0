// The batch engine through the worker API in Node (onnxruntime-node, the tiny bundles over local HTTP): batches run on
// one batch model once it is made (the first batch by stages meanwhile), deciding as the stage engine for several
// thresholds without recompiling, in 64-row chunks and a 1-row chunk; a prefix's rows continue stage by stage and no
// segment past the last exit needed is downloaded; the model is cached, a corrupt copy rebuilt; a bundle that cannot be
// composed runs batches stage by stage, saying why.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { chooseThresholds } from '../src/page/target.js';
import type { WireResult, WorkerApi } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { BATCH_MODEL_MAX_BYTES, BatchEngine } from '../src/runtime/batch-engine.js';
import { compiledKey, noCache } from '../src/runtime/cache.js';
import type { OrtHandle } from '../src/runtime/ort-backend.js';
import { CompiledCache } from './fixtures/memory-cache.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
let log: string[] = [];
beforeAll(async () => {
  tiny = await serveTinyBundles((p) => log.push(p));
});
afterAll(() => tiny.close());
afterEach(() => vi.restoreAllMocks());

/**
 * A worker API on onnxruntime-node counting the runs of batch models (sessions with a `row_index` output); with
 * `failRuns`, every batch-model run after the warm-ups throws.
 */
function api(cache = new CompiledCache(), failRuns = false): { api: WorkerApi; batchRuns: () => number } {
  let runs = 0;
  const loadOrt = async (): Promise<OrtHandle> => {
    const h = await loadOrtNode();
    const create = h.ort.InferenceSession.create.bind(h.ort.InferenceSession);
    const counted = async (...args: Parameters<typeof create>) => {
      const session = await create(...args);
      if (!session.outputNames.includes('row_index')) return session;
      const run = session.run.bind(session);
      let n = 0;
      const counted = (...a: Parameters<typeof run>) => {
        runs++;
        if (failRuns && ++n > 2) return Promise.reject(new Error('a kernel failed (test)'));
        return run(...a);
      };
      return Object.assign(session, { run: counted as typeof run });
    };
    return { ...h, ort: { ...h.ort, InferenceSession: { create: counted as typeof create } } as typeof h.ort };
  };
  return { api: createWorkerApi({ cache, loadOrt }), batchRuns: () => runs };
}

/** Waits until no batch model is being made, for every batch engine that served a call since this was called. */
function trackEngines(): () => Promise<void> {
  const engines = new Set<BatchEngine>();
  const model = BatchEngine.prototype.model;
  vi.spyOn(BatchEngine.prototype, 'model').mockImplementation(function (this: BatchEngine) {
    engines.add(this);
    return model.call(this);
  });
  return async () => void (await Promise.all([...engines].map((e) => e.idle())));
}

async function batch(
  a: WorkerApi,
  thresholds: readonly number[],
  inputs = tiny.inputs,
): Promise<readonly WireResult[]> {
  const r = await a.classify({
    inputs: inputs.map((d) => ({ kind: 'tensor' as const, data: d.slice() })),
    thresholds,
    probabilities: true,
  });
  return r.results;
}

function expectSameResults(got: readonly WireResult[], want: readonly WireResult[], where: string): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    const w = want[i]!;
    expect({ index: g.index, exit: g.exit, stages: g.stages.length }, `${where} input ${i}`).toEqual({
      index: w.index,
      exit: w.exit,
      stages: w.stages.length,
    });
    expect(Math.abs(g.confidence - w.confidence), `${where} input ${i}`).toBeLessThan(1e-5);
    g.probabilities!.forEach((p, k) => expect(Math.abs(p - w.probabilities![k]!)).toBeLessThan(1e-5));
  });
}

describe('batch engine', () => {
  it('batches run on the batch model once made: as the stage engine on every tiny input, several thresholds, chunks of 64 and 1', async () => {
    const idle = trackEngines();
    const { api: a, batchRuns } = api();
    const stages = api().api;
    const init = await a.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }));
    await stages.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'stages' }));
    expect(init.state.batchEngine).toBe('compiled');
    const m = init.manifest;
    const never = m.exits.map(() => NEVER_EXIT);
    // The first batch runs by stages (every segment loads) while the batch model is made in the background.
    expectSameResults(await batch(a, never), await batch(stages, never), 'first batch');
    await idle();
    const vectors = [
      m.exits.map((e) => e.threshold),
      ...[0.5, 0.8, 0.95, 1].map((t) => chooseThresholds(m, t).thresholds),
      m.exits.map((_, i) => (i === 0 ? 0 : NEVER_EXIT)), // everything at exit 0
      never, // nothing exits
      m.exits.map((_, i) => (i === 0 ? NEVER_EXIT : 0)), // exit 0 off (its head skipped), everything at exit 1
    ];
    const exitsSeen = new Set<number>();
    for (const [v, t] of vectors.entries()) {
      const before = batchRuns();
      const got = await batch(a, t);
      expect(batchRuns() - before, `thresholds #${v}: one batch model run`).toBe(1);
      expectSameResults(got, await batch(stages, t), `thresholds #${v}`);
      got.forEach((r) => exitsSeen.add(r.exit));
    }
    expect(exitsSeen).toEqual(new Set([0, 1, -1]));
    // 65 inputs: chunks of 64 and 1, each one run of the batch model; a single input runs on the batch-1 engine.
    const t = m.exits.map((e) => e.threshold);
    const more = [...tiny.inputs, tiny.inputs[0]!];
    const before = batchRuns();
    expectSameResults(await batch(a, t, more), await batch(stages, t, more), '65 inputs');
    expect(batchRuns() - before).toBe(2);
    await batch(a, t, [tiny.inputs[0]!]);
    expect(batchRuns() - before).toBe(2);
    expect((await a.state())?.batchEngine).toBe('compiled');
    await a.dispose();
    await stages.dispose();
  });

  it('a prefix: the rows no compiled exit took continue stage by stage; no segment past the last exit needed is downloaded', async () => {
    const idle = trackEngines();
    const { api: a, batchRuns } = api();
    log = [];
    const init = await a.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'auto' }));
    const m = init.manifest;
    const segmentsFetched = (): string[] => log.filter((p) => p.endsWith('.onnx')).map((p) => path.basename(p));
    const exit0 = m.exits.map((_, i) => (i === 0 ? 0 : NEVER_EXIT));
    await batch(a, exit0);
    await idle();
    const before = batchRuns();
    const r0 = await batch(a, exit0);
    expect(batchRuns()).toBe(before + 1);
    expect(r0.every((r) => r.exit === 0 && r.stages.length === 1)).toBe(true);
    expect(segmentsFetched()).toEqual(['segment-0.onnx']);
    // Exit 1 only: the prefix model (segment 0) continues every row; segment 1 loads through the stages, never 2.
    const exit1 = m.exits.map((_, i) => (i === 1 ? 0 : NEVER_EXIT));
    const r1 = await batch(a, exit1);
    expect(batchRuns()).toBe(before + 2);
    expect(r1.every((r) => r.exit === 1 && r.stages.length === 2)).toBe(true);
    expect(segmentsFetched()).toEqual(['segment-0.onnx', 'segment-1.onnx']);
    // The bundle's thresholds: the model of segments 0-1 (made meanwhile) decides exits 0 and 1, the rest continue
    // (segment 2 loads then), as the references say.
    await idle();
    const mixed = await batch(
      a,
      m.exits.map((e) => e.threshold),
    );
    mixed.forEach((g, i) => {
      const w = tiny.expected[i]!;
      expect({ index: g.index, exit: g.exit }).toEqual({ index: w.index, exit: w.exit });
      expect(Math.abs(g.confidence - w.confidence)).toBeLessThan(1e-5);
    });
    await a.dispose();
  });

  it('caches the batch model per manifest hash, backend and prefix; a corrupt cached one is detected by sha256 and rebuilt', async () => {
    const idle = trackEngines();
    const cache = new CompiledCache();
    const never = (n: number): number[] => Array.from({ length: n }, () => NEVER_EXIT);
    const open = async (): Promise<{ a: WorkerApi; batchRuns: () => number; exits: number; hash: string }> => {
      const { api: made, batchRuns } = api(cache);
      const init = await made.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }));
      return { a: made, batchRuns, exits: init.manifest.exits.length, hash: init.manifestHash };
    };
    const first = await open();
    await batch(first.a, never(first.exits)); // every segment loads; the batch model of all three is made
    await idle();
    const key = `${compiledKey(first.hash, 'wasm', 3)}:batch`;
    expect([...cache.compiled.keys()].filter((k) => k.endsWith(':batch'))).toEqual([key]);
    await first.a.dispose();
    // Corrupt the cached bytes (its sha256 kept): a new session detects it, rebuilds and stores a good copy.
    const good = cache.compiled.get(key)!;
    const bad = new Uint8Array(good.bytes);
    bad[bad.length >> 1]! ^= 0x40;
    cache.compiled.set(key, { sha256: good.sha256, bytes: bad });
    const { a, batchRuns, exits } = await open();
    await batch(a, never(exits));
    await idle();
    expect(Buffer.from(cache.compiled.get(key)!.bytes).equals(Buffer.from(good.bytes))).toBe(true);
    const before = batchRuns();
    const got = await batch(a, [0.9, 0.9]);
    expect(batchRuns()).toBe(before + 1);
    const want = await batch(a, [0.9, 0.9], tiny.inputs.slice(0, 1));
    expect(got[0]!.exit).toBe(want[0]!.exit);
    await a.dispose();
  });

  it('a bundle whose segments cannot be composed: batches run stage by stage, batchEngineFallbackReason says why', async () => {
    const idle = trackEngines();
    const { api: a, batchRuns } = api();
    const stages = api().api;
    // the tiny bundle compiled at batch 1 but its batch model refused: the class count it needs is not declared
    const spy = vi
      .spyOn(BatchEngine.prototype as unknown as { build: () => Promise<unknown> }, 'build')
      .mockImplementationOnce(async function (this: BatchEngine) {
        (this as unknown as { fail: (r: string) => void }).fail(
          'the segments cannot be compiled into one batch model: test',
        );
      });
    const init = await a.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }));
    await stages.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'stages' }));
    const t = init.manifest.exits.map((e) => e.threshold);
    await batch(a, t);
    await idle();
    const got = await batch(a, t);
    expect(batchRuns()).toBe(0);
    expectSameResults(got, await batch(stages, t), 'after the failure');
    const state = await a.state();
    expect(state?.batchEngine).toBe('stages');
    expect(state?.batchEngineFallbackReason).toMatch(/cannot be compiled into one batch model/);
    expect(state?.engine).toBe('compiled');
    spy.mockRestore();
    await a.dispose();
    await stages.dispose();
  });

  it('off, saying why, for a model that takes one image per run and for segments over BATCH_MODEL_MAX_BYTES', () => {
    const m = JSON.parse(readFileSync(path.join(tiny.dir, 'tiny/manifest.json'), 'utf8')) as BundleManifest;
    const engine = (manifest: BundleManifest): BatchEngine => {
      const pool = { ort: { backend: 'wasm' } } as unknown as ConstructorParameters<typeof BatchEngine>[1];
      const runner = {} as ConstructorParameters<typeof BatchEngine>[2];
      return new BatchEngine(manifest, pool, runner, noCache, 'hash');
    };
    expect(engine(m).on).toBe(true);
    const one = engine({ ...m, backbone: { ...m.backbone, batch: 'one' } });
    expect(one.on).toBe(false);
    expect(one.failure).toMatch(/one image per run/);
    const big = engine({ ...m, segments: m.segments.map((g) => ({ ...g, bytes: BATCH_MODEL_MAX_BYTES / 2 })) });
    expect(big.on).toBe(false);
    expect(big.failure).toMatch(/MiB\) are over the batch model's 64 MiB/);
  });

  it('a batch model run that fails: that batch and the later ones run stage by stage, batchEngineFallbackReason says why', async () => {
    const idle = trackEngines();
    const { api: a } = api(new CompiledCache(), true);
    const stages = api().api;
    const init = await a.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }));
    await stages.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'stages' }));
    const t = init.manifest.exits.map((e) => e.threshold);
    await batch(
      a,
      init.manifest.exits.map(() => NEVER_EXIT),
    ); // every segment loads; the batch model is made
    await idle();
    const want = await batch(stages, t);
    expectSameResults(await batch(a, t), want, 'the failed run');
    const state = await a.state();
    expect(state?.batchEngine).toBe('stages');
    expect(state?.batchEngineFallbackReason).toMatch(/failed running the batch model: a kernel failed \(test\)/);
    expectSameResults(await batch(a, t), want, 'after it');
    await a.dispose();
    await stages.dispose();
  });
});

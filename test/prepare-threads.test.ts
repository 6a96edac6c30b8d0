// Parallel head training (issue 13): prepare() with the CLI's worker-thread pool gives the same bundle bytes as the
// library's in-process training, ensembles included; an abort mid-heads rejects ABORTED and stops the threads; a task
// that throws in a worker, or a worker that dies, rejects with a typed SelfxitError instead of hanging. Paper mode's
// heads train on the same pool, with the same bundle bytes.
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { prepare, type PrepareOptions, type PrepareResult } from '../src/calibrate/prepare.js';
import type { HeadTrainerPool } from '../src/calibrate/train-task.js';
import {
  FeatureCache,
  inProcessTrainer,
  mapLimit,
  runStackTask,
  settleAll,
  type StackTask,
} from '../src/calibrate/train-task.js';
import { SelfxitError } from '../src/errors.js';
import { crossFit, foldFits, memberStack, planCrossFit, type FitInfo } from '../src/calibrate/crossfit.js';
import { addMemberLogits } from '../src/calibrate/head-stack.js';
import { foldIndices, kFoldAssign } from '../src/calibrate/rng.js';
import { paperGroups, paperTask } from '../src/calibrate/paper-mode.js';
import { resolveTrainSettings, toTrainHeadResult, trainHeadOnRows } from '../src/calibrate/train-head.js';
import { createHeadTrainerPool, type NodeTrainerPool } from '../src/cli/trainer-pool.js';
import { teacherData } from './calibrate-fixtures.js';
import { encodeModel } from '../src/graph/index.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';
import { selfxitRejection } from './fixtures/rejection.js';

const model = encodeModel(tinyClassifier());
const pools: NodeTrainerPool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

function pool(threads: number, workerUrl?: URL): NodeTrainerPool {
  const p = createHeadTrainerPool({ threads, ...(workerUrl ? { workerUrl } : {}) });
  pools.push(p);
  return p;
}

/**
 * prepare() on the tiny classifier with a fixed clock and date (timings 0), so that runs compare byte for byte (target
 * 0.9 unless `extra` says otherwise; none in paper mode, which takes none).
 */
function run(n: number, extra: Partial<PrepareOptions>): Promise<PrepareResult> {
  return prepare({
    model,
    samples: { data: blobImages(n, 8, 8, 3), count: n },
    ort: ortNode,
    ...(extra.mode === 'paper' ? {} : { target: 0.9 }),
    now: () => 0,
    createdAt: '2026-01-01T00:00:00.000Z',
    ...extra,
  });
}

function expectSameBundle(a: PrepareResult, b: PrepareResult): void {
  expect(JSON.stringify(b.manifest)).toBe(JSON.stringify(a.manifest));
  expect([...b.files.keys()].sort()).toEqual([...a.files.keys()].sort());
  for (const [name, bytes] of a.files) expect(Buffer.compare(b.files.get(name)!, bytes), name).toBe(0);
  // the candidates' out-of-fold statistics too (training times aside)
  const stats = (r: PrepareResult): string =>
    JSON.stringify(r.report.candidates, (k, v: unknown) => (k === 'trainMs' ? 0 : v));
  expect(stats(b)).toBe(stats(a));
}

/** Waits until every thread of `p` has exited; fails (rather than hangs) when some are still running after 20 s. */
async function threadsExited(p: NodeTrainerPool): Promise<void> {
  for (let i = 0; i < 2000 && p.workers > 0; i++) await new Promise((r) => setTimeout(r, 10));
  if (p.workers > 0) throw new Error(`${p.workers} worker thread(s) still running 20 s after they should have stopped`);
}

describe('stack tasks', () => {
  it('reproduce crossFit bit for bit, ensemble members trained apart included', () => {
    const [n, d, k] = [300, 12, 4];
    const { x, p } = teacherData(n, d, k, 3);
    const foldOf = kFoldAssign(n, 5, 0);
    const features = {
      n,
      k,
      teacher: p,
      cuts: [{ cut: {}, channels: d, height: 1, width: 1, grid: [1, 1], dim: d, x }],
    };
    const data = { features, rows: n, foldOf } as unknown as Parameters<typeof runStackTask>[0];
    const config = { label: 'pool-mlp', kind: 'pool-mlp', hidden: 8, coarse: false, max: false } as const;
    for (const members of [1, 3]) {
      const opts = {
        kind: 'pool-mlp',
        hidden: 8,
        foldOf,
        seed: 2,
        members,
        fitFinal: false,
        predictRows: 250,
      } as const;
      const fits: FitInfo[] = [];
      const ref = crossFit(x, p, n, d, k, { ...opts, onFit: (f) => fits.push(f) });
      const plan = planCrossFit(n, opts);
      const results = Array.from({ length: members }, (_, m) => {
        const member = memberStack(plan, m);
        const task: StackTask = {
          cut: 0,
          config,
          group: 'folds',
          heads: member.heads,
          train: { kind: 'pool-mlp', hidden: 8, earlyStopping: 0 },
          shuffleSeed: member.shuffleSeed,
          oof: { rows: plan.predictRows, logits: members > 1 },
        };
        return runStackTask(data, task);
      });
      let oof = results[0]!.oof!;
      if (members > 1) {
        oof = new Float32Array(plan.predictRows * k);
        for (const r of results) addMemberLogits(oof, r.oof!, 1 / members, plan.settings.logitScale);
      }
      const got: FitInfo[] = [];
      foldFits(
        plan,
        results.map((r) => r.stack),
        oof,
        k,
        0,
        (f) => got.push(f),
      );
      expect(Buffer.from(oof.buffer).equals(Buffer.from(ref.oof.buffer)), `members ${members}`).toBe(true);
      expect(got.map((f) => f.result.layers)).toEqual(fits.map((f) => f.result.layers));
    }
  });

  it("reproduce paper mode's in-process fit bit for bit (trainHeadOnRows on every fold but fold 0)", () => {
    const [n, d, k, seed, temperature] = [200, 10, 3, 7, 2];
    const { x, p } = teacherData(n, d, k, 5);
    const foldOf = kFoldAssign(n, 5, seed);
    const features = {
      n,
      k,
      teacher: p,
      cuts: [{ cut: {}, channels: d, height: 1, width: 1, grid: [1, 1], dim: d, x }],
    };
    // paper mode's task and groups (paper-mode.ts) against its fit before it ran on tasks (2297c74's runPaperHeads)
    const data = { features, rows: n, foldOf: paperGroups(foldOf) } as unknown as Parameters<typeof runStackTask>[0];
    const task = paperTask(0, seed, temperature);
    const r = runStackTask(data, task);
    const got = toTrainHeadResult(r.stack, 0, resolveTrainSettings(task.train).logitScale, r.ms);
    const ref = trainHeadOnRows(x, p, n, d, k, foldIndices(foldOf, 0, false), { kind: 'paper', seed, temperature });
    expect(got.layers.length).toBe(2); // whole input -> hidden -> classes
    expect(got.logitScale).toBe(ref.logitScale);
    got.layers.forEach((l, j) => {
      const want = ref.layers[j]!;
      expect([l.in, l.out], `layer ${j}`).toEqual([want.in, want.out]);
      const bytes = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
      expect(bytes(l.weight).equals(bytes(want.weight)), `layer ${j} weights`).toBe(true);
      expect(bytes(l.bias).equals(bytes(want.bias)), `layer ${j} biases`).toBe(true);
    });
  });
});

/** A one-head task on cut 0. */
const deadTask: StackTask = {
  cut: 0,
  config: { label: 'pool-linear', kind: 'pool-linear', hidden: 0, coarse: false, max: true },
  group: 'all',
  heads: [{ holdOut: -1, seed: 0 }],
  train: {},
  shuffleSeed: 0,
};

/** A fake pool job: settles when told, and rejects ABORTED at once when `signal` aborts (as both pools do). */
function job<T>(signal: AbortSignal): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  signal.addEventListener('abort', () => reject(new SelfxitError('ABORTED', 'Calibration cancelled')), { once: true });
  return { promise, resolve, reject };
}

describe('mapLimit and settleAll', () => {
  it('reject with the failure that stopped the others, not the ABORTED of a shorter chain', async () => {
    const stop = new AbortController();
    const deep = job<number>(stop.signal);
    const deepOther = job<number>(stop.signal);
    const shallow = job<number>(stop.signal);
    const all = mapLimit(
      [0, 1],
      2,
      async (lane) => {
        if (lane === 1) return shallow.promise; // awaited directly (candidate-heads' ladder winner)
        const [inner] = await settleAll([settleAll([deep.promise, deepOther.promise], stop)], stop); // two layers
        return inner![0]!;
      },
      stop,
    );
    deep.reject(new SelfxitError('WORKER_DIED', 'a head-training worker thread died: out of memory'));
    const err = await selfxitRejection(all);
    expect(err.code).toBe('WORKER_DIED');
    expect(stop.signal.aborted).toBe(true);
  });

  it('reject ABORTED when the caller aborted first', async () => {
    const stop = new AbortController();
    const a = job<number>(stop.signal);
    const b = job<number>(stop.signal);
    const all = mapLimit([a, b], 2, (j) => settleAll([j.promise], stop), stop);
    stop.abort(); // the caller's signal (loadTrainer forwards it to stop)
    b.reject(new SelfxitError('WORKER_DIED', 'late'));
    expect((await selfxitRejection(all)).code).toBe('ABORTED');
  });
});

describe('FeatureCache', () => {
  it('derives a coarser pooling once and hands the same matrix to the next task', () => {
    const [n, k] = [6, 2];
    const x = new Float32Array(n * 16).map((_, i) => i % 7);
    const features = {
      n,
      k,
      teacher: new Float32Array(n * k),
      cuts: [{ cut: {}, channels: 4, height: 2, width: 2, grid: [2, 2], dim: 16, x }],
    };
    const data = { features, rows: n, foldOf: new Int32Array(n) } as unknown as Parameters<typeof runStackTask>[0];
    const cache = new FeatureCache();
    const coarse = { label: 'pool-mlp coarse', kind: 'pool-mlp', hidden: 8, coarse: true, max: false } as const;
    const a = cache.get(data, 0, coarse);
    expect(a.x).not.toBe(x); // derived
    expect(cache.get(data, 0, coarse)).toBe(a);
    expect(cache.get(data, 0, coarse).x).toBe(a.x);
  });
});

describe('prepare on a worker-thread trainer pool', () => {
  it('gives the same bundle bytes as in-process training', { timeout: 180_000 }, async () => {
    const one = await run(400, {});
    const p = pool(2);
    const two = await run(400, { trainerPool: p });
    expect(one.manifest.exits.length).toBeGreaterThan(0);
    expectSameBundle(one, two);
    expect(p.workers).toBe(2); // both threads trained (idle now, unref'd: they keep no process alive)
    // each heads phase unloads its data at its end: the pool keeps no features of the run alive
    const err = await selfxitRejection(p.run(deadTask));
    expect(err.code).toBe('INTERNAL');
    expect(err.message).toMatch(/before load/);
  });

  it('gives the same bundle with pool-mlp heads as ensembles of 2', { timeout: 180_000 }, async () => {
    const extra: Partial<PrepareOptions> = { ensemble: 2, headKinds: ['pool-mlp'], target: 0.7 };
    const one = await run(1000, extra);
    const two = await run(1000, { ...extra, trainerPool: pool(2) });
    // a pool-mlp exit: its final head is an ensemble trained as two tasks, as are its cross-fits
    expect(one.manifest.exits.map((e) => e.headKind)).toContain('pool-mlp');
    expectSameBundle(one, two);
  });

  it(
    'an ensemble whose members arrive out of order gives the same bundle (members added in member order)',
    { timeout: 180_000 },
    async () => {
      const extra: Partial<PrepareOptions> = { ensemble: 3, headKinds: ['pool-mlp'], target: 0.7 };
      const one = await run(600, extra);
      // a pool that answers an ensemble's member 0 after another member: the later members' held-out logits wait for
      // it. The members are run all at once and trained one at a time in order (inProcessTrainer), so member 0's result
      // is held until member 1 has answered, which it does once trained (no timing); should that ever not come (the
      // dispatch changed), member 0 goes on after a bounded number of turns and the test fails on `reordered`.
      const inner = inProcessTrainer();
      const seen = new Set<string>();
      const answered = new Map<string, () => void>(); // per ensemble met first: signalled by its other members
      let [firsts, reordered] = [0, 0];
      const late: HeadTrainerPool = {
        concurrency: 2,
        sharedMemory: false,
        load: (d) => inner.load(d),
        unload: () => inner.unload!(),
        close: () => inner.close(),
        run: async (task, signal) => {
          const key = JSON.stringify([task.cut, task.config.label, task.group, task.heads.length, task.oof]);
          const first = task.oof?.logits === true && !seen.has(key);
          seen.add(key);
          if (first) firsts++;
          const signalled = first ? new Promise<void>((res) => answered.set(key, res)) : undefined;
          const r = await inner.run(task, signal);
          if (signalled) {
            let other = false;
            const heard = signalled.then(() => {
              other = true;
            });
            // the bounded fallback: at most 500 turns of the event loop (the trainer yields by setTimeout 0)
            const turns = async (): Promise<void> => {
              for (let turn = 0; turn < 500 && !other; turn++) await new Promise((res) => setTimeout(res, 0));
            };
            await Promise.race([heard, turns()]);
            if (other) reordered++;
            answered.delete(key);
          } else answered.get(key)?.();
          return r;
        },
      };
      const two = await run(600, { ...extra, trainerPool: late });
      expect(reordered).toBeGreaterThan(0); // the order was really changed
      expect(reordered).toBe(firsts); // for every ensemble held (none went on by the fallback)
      expectSameBundle(one, two);
    },
  );

  it(
    'paper mode trains its heads on the pool, the same bundle bytes for any thread count',
    { timeout: 180_000 },
    async () => {
      const one = await run(400, { mode: 'paper' });
      expect(one.manifest.exits.length).toBe(3); // three heads: three tasks
      for (const threads of [2, 3]) {
        const p = pool(threads);
        const many = await run(400, { mode: 'paper', trainerPool: p });
        expect(p.workers, `${threads} threads`).toBe(threads); // every thread trained a head
        expectSameBundle(one, many);
      }
    },
  );

  it('an abort during paper head training rejects ABORTED and stops the threads', { timeout: 180_000 }, async () => {
    const p = pool(2);
    const ctl = new AbortController();
    const err = await selfxitRejection(
      run(400, {
        mode: 'paper',
        trainerPool: p,
        signal: ctl.signal,
        onProgress: (e) => {
          if (e.stage === 'heads' && e.done >= 1) ctl.abort();
        },
      }),
    );
    expect(err.code).toBe('ABORTED');
    await threadsExited(p);
  });

  it('an abort during head training rejects ABORTED and stops the threads', { timeout: 180_000 }, async () => {
    const p = pool(2);
    const ctl = new AbortController();
    const err = await selfxitRejection(
      run(400, {
        trainerPool: p,
        signal: ctl.signal,
        onProgress: (e) => {
          if (e.stage === 'heads' && e.done >= 1) ctl.abort();
        },
      }),
    );
    expect(err.code).toBe('ABORTED');
    await threadsExited(p);
    expect(p.workers).toBe(0);
  });

  it('a task that throws in a worker rejects prepare with its typed error', { timeout: 180_000 }, async () => {
    const p = pool(2);
    let tasks = 0;
    // the third task reads a cut that does not exist: the worker's runStackTask throws INVALID_ARGUMENT
    const faulty: HeadTrainerPool = {
      concurrency: p.concurrency,
      sharedMemory: p.sharedMemory,
      load: (d) => p.load(d),
      run: (task, signal) => p.run(++tasks === 3 ? { ...task, cut: 99 } : task, signal),
      close: () => p.close(),
    };
    const err = await selfxitRejection(run(400, { trainerPool: faulty }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(/cut 99/);
    // the failure aborts the tasks in flight, which stops their threads (idle ones, when none was, go on close)
    await p.close();
    await threadsExited(p);
  });

  it('a worker that dies rejects its task with WORKER_DIED', { timeout: 60_000 }, async () => {
    const url = pathToFileURL(path.join(import.meta.dirname, 'fixtures/exiting-worker.mjs'));
    const p = pool(1, url);
    const data = {
      features: { n: 2, k: 2, teacher: new Float32Array(new SharedArrayBuffer(16)), cuts: [] },
      rows: 2,
      foldOf: new Int32Array(2),
    };
    await p.load(data);
    const err = await selfxitRejection(p.run(deadTask));
    expect(err.code).toBe('WORKER_DIED');
    await threadsExited(p);
  });

  it('a thread that cannot start rejects its task with WORKER_DIED and leaves no job queued', async () => {
    const p = pool(1, new URL('https://example.invalid/head-worker.js')); // a worker cannot load a URL over https
    await p.load({
      features: { n: 2, k: 2, teacher: new Float32Array(new SharedArrayBuffer(16)), cuts: [] },
      rows: 2,
      foldOf: new Int32Array(2),
    });
    const [a, b] = [p.run(deadTask), p.run(deadTask)];
    for (const r of [a, b]) {
      const err = await selfxitRejection(r);
      expect(err.code).toBe('WORKER_DIED');
      expect(err.message).toMatch(/could not start/);
    }
    expect(p.workers).toBe(0);
  });

  it('refuses data that is not on SharedArrayBuffer', async () => {
    const p = pool(1);
    const x = new Float32Array(new SharedArrayBuffer(8));
    const cut = { cut: {}, channels: 1, height: 1, width: 1, grid: [1, 1], dim: 1, x };
    const data = (teacher: Float32Array, cuts: unknown[]): Parameters<NodeTrainerPool['load']>[0] =>
      ({ features: { n: 2, k: 2, teacher, cuts }, rows: 2, foldOf: new Int32Array(2) }) as never;
    const plainCut = { ...cut, x: new Float32Array(2) };
    const err = await selfxitRejection(p.load(data(new Float32Array(new SharedArrayBuffer(16)), [cut, plainCut])));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(/cut 1 not on SharedArrayBuffer/);
    expect((await selfxitRejection(p.load(data(new Float32Array(4), [cut])))).message).toMatch(/the teacher/);
    await p.load(data(new Float32Array(new SharedArrayBuffer(16)), [cut])); // all shared: accepted
  });

  it('a load() that rejects is unloaded before prepare rejects with its error (selfxit and paper mode)', async () => {
    for (const mode of ['selfxit', 'paper'] as const) {
      const inner = inProcessTrainer();
      let unloads = 0;
      const failing: HeadTrainerPool = {
        ...inner,
        load: () => Promise.reject(new SelfxitError('OUT_OF_MEMORY', 'no room for the data')),
        unload: () => (unloads++, inner.unload!()),
      };
      const err = await selfxitRejection(run(200, { mode, trainerPool: failing }));
      expect([err.code, err.message], mode).toEqual(['OUT_OF_MEMORY', 'no room for the data']);
      expect(unloads, mode).toBe(1);
    }
    // an unload() that throws at once (a plain-JS pool) does not hide the load's error either
    const throwing: HeadTrainerPool = {
      ...inProcessTrainer(),
      load: () => Promise.reject(new SelfxitError('OUT_OF_MEMORY', 'no room for the data')),
      unload: () => {
        throw new Error('unload failed');
      },
    };
    const err = await selfxitRejection(run(200, { trainerPool: throwing }));
    expect([err.code, err.message]).toEqual(['OUT_OF_MEMORY', 'no room for the data']);
  });

  it('prepare refuses a trainer pool whose concurrency is not an integer >= 1', async () => {
    for (const concurrency of [0, Number.NaN, 1.5]) {
      const bad: HeadTrainerPool = { ...inProcessTrainer(), concurrency };
      const err = await selfxitRejection(run(50, { trainerPool: bad }));
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.message).toMatch(/trainerPool.concurrency must be an integer >= 1/);
    }
  });

  it('prepare with a shared-memory pool where SharedArrayBuffer is missing rejects BACKEND_UNAVAILABLE', async () => {
    const shared: HeadTrainerPool = { ...inProcessTrainer(), sharedMemory: true };
    vi.stubGlobal('SharedArrayBuffer', undefined);
    try {
      const err = await selfxitRejection(run(50, { trainerPool: shared }));
      expect(err.code).toBe('BACKEND_UNAVAILABLE');
      expect(err.message).toMatch(/SharedArrayBuffer/);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('refuses a thread count that is not an integer from 1 to 64', () => {
    for (const threads of [0, 1.5, Number.NaN, 65]) {
      expect(() => createHeadTrainerPool({ threads })).toThrow(/threads must be an integer from 1 to 64/);
    }
  });
});

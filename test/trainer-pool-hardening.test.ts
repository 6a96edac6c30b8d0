// The CLI's head-trainer pool (src/cli/trainer-pool.ts) when a message cannot cross a thread boundary, and after an
// abort: every task settles with a typed SelfxitError (a task that cannot be posted costs no thread), a stray message
// from an idle thread is ignored, every thread it started is stopped by close() (`workers` 0), no more than `threads`
// run at once, and no thread starts for a task already aborted. Node's Worker is wrapped to count the threads the pool starts
// and to reach them (a `messageerror` cannot be provoked from a worker on demand: it is emitted on the thread's
// Worker, as Node does when an answer cannot be deserialized).
import { getEventListeners, once } from 'node:events';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as WorkerThreads from 'node:worker_threads';
import type { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { StackTask, TrainingData } from '../src/calibrate/train-task.js';
import { isSelfxitError } from '../src/errors.js';
import { createHeadTrainerPool, transferError, type NodeTrainerPool } from '../src/cli/trainer-pool.js';
import { selfxitRejection } from './fixtures/rejection.js';

const started = vi.hoisted(() => ({ workers: [] as Worker[] }));
vi.mock('node:worker_threads', async (importOriginal) => {
  const m = await importOriginal<typeof WorkerThreads>();
  class Counted extends m.Worker {
    constructor(...args: ConstructorParameters<typeof m.Worker>) {
      super(...args);
      started.workers.push(this);
    }
  }
  return { ...m, Worker: Counted };
});

const silentWorker = pathToFileURL(path.join(import.meta.dirname, 'fixtures/silent-worker.mjs'));
const chattyWorker = pathToFileURL(path.join(import.meta.dirname, 'fixtures/chatty-worker.mjs'));
const pools: NodeTrainerPool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
  started.workers.length = 0;
});

function pool(threads: number, workerUrl?: URL): NodeTrainerPool {
  const p = createHeadTrainerPool({ threads, ...(workerUrl ? { workerUrl } : {}) });
  pools.push(p);
  return p;
}

/** Data with no cuts: the real worker answers every task INVALID_ARGUMENT ("reads cut 0 of 0"). */
function emptyData(): TrainingData {
  return {
    features: { n: 2, k: 2, teacher: new Float32Array(new SharedArrayBuffer(16)), cuts: [] },
    rows: 2,
    foldOf: new Int32Array(2),
  };
}

const task: StackTask = {
  cut: 0,
  config: { label: 'pool-linear', kind: 'pool-linear', hidden: 0, coarse: false, max: true },
  group: 'all',
  heads: [{ holdOut: -1, seed: 0 }],
  train: {},
  shuffleSeed: 0,
};

/** A task structured clone refuses (a function in it). */
const uncloneable = { ...task, train: { onEpoch: () => undefined } } as unknown as StackTask;

/** A task whose serialization throws `error` (a getter: structured clone reads it as it copies the task). */
function throwingTask(error: Error): StackTask {
  return {
    ...task,
    get train(): StackTask['train'] {
      throw error;
    },
  };
}

/** The promise's outcome so far, read after the pending callbacks have run (no timing: one turn of the loop). */
function watch(p: Promise<unknown>): () => Promise<'pending' | { code: string; message: string }> {
  let outcome: 'pending' | { code: string; message: string } = 'pending';
  p.then(
    () => {
      outcome = { code: 'resolved', message: '' };
    },
    (e: unknown) => {
      expect(isSelfxitError(e), String(e)).toBe(true);
      outcome = e as { code: string; message: string };
    },
  );
  return async () => {
    await new Promise((r) => setImmediate(r));
    return outcome;
  };
}

describe('head-trainer pool: messages that cannot cross', () => {
  it('a task that cannot be cloned rejects INTERNAL, and its thread takes the next task', async () => {
    const p = pool(1);
    await p.load(emptyData());
    const err = await selfxitRejection(p.run(uncloneable));
    expect(err.code).toBe('INTERNAL');
    expect(err.message).toMatch(/a training task could not be sent to a head-training worker thread/);
    // the thread was not lost to that task: it answers the next one (the worker's own error: no cut 0)
    const next = await selfxitRejection(p.run(task));
    expect(next.code).toBe('INVALID_ARGUMENT');
    expect(next.message).toMatch(/cut 0 of 0/);
    expect(started.workers.length).toBe(1);
    await p.close();
    expect(p.workers).toBe(0);
  });

  it('data that cannot be cloned to a new thread rejects its task; close() stops that thread', async () => {
    const p = pool(2);
    await p.load({ ...emptyData(), onRow: () => undefined } as unknown as TrainingData);
    const err = await selfxitRejection(p.run(task));
    expect(started.workers.length).toBe(1);
    await p.close();
    expect(p.workers).toBe(0); // the thread that could not take the data was stopped
    expect(err.code).toBe('INTERNAL');
    expect(err.message).toMatch(/the heads phase's data could not be sent/);
  });

  it('load() of data that cannot be cloned to running threads rejects with a typed error', async () => {
    const p = pool(1);
    await p.load(emptyData());
    expect((await selfxitRejection(p.run(task))).code).toBe('INVALID_ARGUMENT'); // a thread started, and holds the data
    const err = await selfxitRejection(p.load({ ...emptyData(), onRow: () => undefined } as unknown as TrainingData));
    expect(err.code).toBe('INTERNAL');
    expect(err.message).toMatch(/the heads phase's data could not be sent/);
    // the data of a failed load() is not kept: a task rejects as before any load()
    const next = await selfxitRejection(p.run(task));
    expect(next.code).toBe('INTERNAL');
    expect(next.message).toMatch(/before load/);
    await p.close();
    expect(p.workers).toBe(0);
  });

  it('a thread stopped because it cannot take new data rejects the task it was running', async () => {
    const p = pool(1, silentWorker);
    await p.load(emptyData());
    const running = watch(p.run(task)); // never answered by the silent worker
    const err = await selfxitRejection(p.load({ ...emptyData(), onRow: () => undefined } as unknown as TrainingData));
    expect(err.code).toBe('INTERNAL');
    expect(await running()).toMatchObject({ code: 'INTERNAL', message: err.message });
    await p.close();
    expect(p.workers).toBe(0);
  });

  it('a failure to post is OUT_OF_MEMORY when an allocation failed, else INTERNAL (never WORKER_DIED)', () => {
    const oom = transferError(new RangeError('Array buffer allocation failed'), 'a training task', 2);
    expect([oom.code, oom.details]).toEqual(['OUT_OF_MEMORY', { threads: 2 }]);
    expect(transferError(new TypeError('getter boom'), 'a training task', 2).code).toBe('INTERNAL');
    const clone = new DOMException('() => undefined could not be cloned.', 'DataCloneError');
    expect(transferError(clone, 'a training task', 2).code).toBe('INTERNAL');
  });

  it('a task whose serialization fails to allocate rejects OUT_OF_MEMORY, and its thread takes the next', async () => {
    const p = pool(1);
    await p.load(emptyData());
    const err = await selfxitRejection(p.run(throwingTask(new RangeError('Array buffer allocation failed'))));
    expect(err.code).toBe('OUT_OF_MEMORY');
    expect(err.message).toMatch(/a training task could not be sent to a head-training worker thread/);
    const other = await selfxitRejection(p.run(throwingTask(new TypeError('getter boom'))));
    expect(other.code).toBe('INTERNAL');
    expect(p.workers).toBe(1); // the thread was not stopped
    // the same thread answers the next task (the worker's own error: no cut 0)
    const next = await selfxitRejection(p.run(task));
    expect(next.code).toBe('INVALID_ARGUMENT');
    expect(next.message).toMatch(/cut 0 of 0/);
    expect(started.workers.length).toBe(1);
    expect(p.workers).toBe(1);
    await p.close();
    expect(p.workers).toBe(0);
  });

  it('a message from an idle thread that answers no task is ignored: the pool goes on', async () => {
    const p = pool(1, chattyWorker);
    await p.load(emptyData());
    // each answer is followed by an id-less message, which the main thread reads once the task has settled (idle)
    for (const id of [0, 1, 2]) {
      const err = await selfxitRejection(p.run(task));
      expect([err.code, err.message]).toEqual(['INVALID_ARGUMENT', `task ${id}`]);
    }
    // messages from one thread arrive in order: task 1's and 2's answers came after the stray messages before them
    expect(started.workers.length).toBe(1);
    expect(p.workers).toBe(1);
    await p.close();
    expect(p.workers).toBe(0);
  });

  it('an answer that cannot be deserialized rejects its task INTERNAL and stops its thread', async () => {
    const p = pool(1, silentWorker);
    await p.load(emptyData());
    const outcome = watch(p.run(task));
    const second = watch(p.run(task)); // queued: the one thread is busy
    expect(started.workers.length).toBe(1);
    expect(await outcome()).toBe('pending'); // the silent worker never answers
    const exited = once(started.workers[0]!, 'exit');
    started.workers[0]!.emit('messageerror', new Error('Unable to deserialize cloned data.'));
    // the next task waits for the stopped thread to exit (never two threads at once), then runs on a fresh one;
    // checked at once, before the stopped thread's exit can land
    expect(started.workers.length).toBe(1);
    expect(p.workers).toBe(1);
    const err = await outcome();
    expect(err).not.toBe('pending');
    expect(err).toMatchObject({ code: 'INTERNAL' });
    expect((err as { message: string }).message).toMatch(/answer could not be read: Unable to deserialize/);
    await exited;
    expect(started.workers.length).toBe(2);
    expect(p.workers).toBe(1);
    expect(await second()).toBe('pending');
    await p.close();
    expect(await second()).toMatchObject({ code: 'DISPOSED' });
    expect(p.workers).toBe(0);
  });
});

describe('head-trainer pool: after an abort', () => {
  it('starts no thread for tasks already aborted, and close() leaves none', async () => {
    const p = pool(1, silentWorker);
    await p.load(emptyData());
    const ctl = new AbortController();
    const [a, b] = [p.run(task, ctl.signal), p.run(task, ctl.signal)]; // a runs, b waits for the one thread
    expect(started.workers.length).toBe(1);
    ctl.abort();
    for (const r of [a, b]) expect((await selfxitRejection(r)).code).toBe('ABORTED');
    expect(started.workers.length).toBe(1); // a's thread stopped; none started for b
    await p.close();
    expect(p.workers).toBe(0);
  });
});

describe('head-trainer pool: one abort listener per signal', () => {
  it('holds one listener for many tasks of one signal, removed once they settle or abort', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      // the real worker answers every task of data without cuts INVALID_ARGUMENT: 24 tasks settle one by one
      const p = pool(2);
      await p.load(emptyData());
      const done = new AbortController();
      const settled = Array.from({ length: 24 }, () => selfxitRejection(p.run(task, done.signal)));
      expect(getEventListeners(done.signal, 'abort')).toHaveLength(1);
      for (const r of settled) expect((await r).code).toBe('INVALID_ARGUMENT');
      expect(getEventListeners(done.signal, 'abort')).toHaveLength(0);

      // a thread that never answers: 24 tasks wait (one runs) until the abort, which settles every one
      const q = pool(1, silentWorker);
      await q.load(emptyData());
      const ctl = new AbortController();
      const waiting = Array.from({ length: 24 }, () => selfxitRejection(q.run(task, ctl.signal)));
      expect(getEventListeners(ctl.signal, 'abort')).toHaveLength(1);
      ctl.abort();
      for (const r of waiting) expect((await r).code).toBe('ABORTED');
      expect(getEventListeners(ctl.signal, 'abort')).toHaveLength(0);
      await new Promise((r) => setImmediate(r)); // a warning is emitted on the next tick
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});

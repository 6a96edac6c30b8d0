// The Node head-trainer pool of `selfxit prepare --threads N`: worker threads (head-worker.ts) that train prepare's
// head stacks side by side. The heads phase's features and teacher are allocated on SharedArrayBuffer (prepare does
// so for a pool whose `sharedMemory` is true) and posted once per phase: every thread reads the same memory, so the
// pool adds no copy of the features (each thread holds its own training workspace and, for a coarser pooling, the
// one derived matrix it trains on). Results are the same bytes as in-process training (train-task.ts).
// Workers start on the first task, are unref'd while idle (an idle pool never keeps the process alive), and stop
// on close(); an aborted task stops its thread and the idle ones (fresh ones start for a next task). A task that
// throws rejects with its SelfxitError (code kept), a thread that dies with WORKER_DIED; a message that cannot cross
// to a thread (postMessage throws) or back (the worker's `messageerror`) settles its task too (see transferError),
// and a thread is counted in `workers` from its start to its exit, whatever stopped it: close() waits for them all,
// and no more than `threads` run at once (a new one starts only once a stopped one has exited).
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { fromErrorPayload, isOutOfMemory, SelfxitError, type SelfxitErrorPayload } from '../errors.js';
import type { HeadTrainerPool, StackTask, StackTaskResult, TrainingData } from '../calibrate/train-task.js';

/** Messages to a worker. */
export type WorkerRequest =
  | { readonly type: 'data'; readonly data: TrainingData }
  | { readonly type: 'unload' }
  | { readonly type: 'task'; readonly id: number; readonly task: StackTask };

/** Messages from a worker. */
export type WorkerReply =
  | { readonly type: 'done'; readonly id: number; readonly result: StackTaskResult }
  | { readonly type: 'error'; readonly id: number; readonly error: SelfxitErrorPayload };

/**
 * The error of a message that could not be posted to a thread. postMessage throws only for the message itself (posting
 * to a thread that has exited does not throw: the message is dropped, and the thread's exit settles its task): an
 * allocation that failed while serializing it is OUT_OF_MEMORY (errors.ts isOutOfMemory); anything else (a
 * DataCloneError, a getter that throws) is INTERNAL: prepare's data and tasks are plain data, so only a bug (or a
 * custom caller's odd data) makes one, and no other thread would take it either. The thread itself is sound. Both say
 * what failed, and keep the original error as the cause.
 */
export function transferError(e: unknown, what: string, threads: number): SelfxitError {
  const why = e instanceof Error ? e.message : String(e);
  const message = `${what} could not be sent to a head-training worker thread: ${why}`;
  return new SelfxitError(isOutOfMemory(e) ? 'OUT_OF_MEMORY' : 'INTERNAL', message, { threads }, { cause: e });
}

/** Threads `--threads` defaults to at most: the heads phase rarely has more independent trainings in flight. */
export const MAX_DEFAULT_THREADS = 4;

/** The most threads a pool (and `--threads`) takes: more would only add memory, a thread per task queued. */
export const MAX_TRAINER_THREADS = 64;

/** The default thread count: the cores Node may use (os.availableParallelism()), at most {@link MAX_DEFAULT_THREADS}. */
export function defaultTrainerThreads(): number {
  return Math.max(1, Math.min(MAX_DEFAULT_THREADS, os.availableParallelism()));
}

export interface TrainerPoolOptions {
  /** Worker threads (tasks trained at once), an integer from 1 to {@link MAX_TRAINER_THREADS}. */
  readonly threads: number;
  /** The worker script (tests). Default: head-worker.js beside this module (head-worker.ts when run from src/). */
  readonly workerUrl?: URL;
}

/** A head-trainer pool on worker threads. */
export interface NodeTrainerPool extends HeadTrainerPool {
  /** Threads started and not yet exited (0 once close() has resolved, and soon after an abort). */
  readonly workers: number;
}

interface Job {
  readonly id: number;
  readonly task: StackTask;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (r: StackTaskResult) => void;
  readonly reject: (e: unknown) => void;
  readonly onAbort: () => void;
}

interface Slot {
  readonly worker: Worker;
  job: Job | undefined;
  /** Stopped on purpose (abort, close): its exit rejects nothing. */
  stopping: boolean;
}

/** The worker script: head-worker.js beside the built CLI, head-worker.ts beside this file when run from src/. */
function defaultWorkerUrl(): URL {
  const here = import.meta.url;
  return new URL(/\.ts$/.test(new URL(here).pathname) ? './head-worker.ts' : './head-worker.js', here);
}

/**
 * Starts the worker script. A TypeScript one (run from src/, by tsx or Vitest) is imported by a small bootstrap that
 * first registers tsx's loader in the thread: a worker does not get the loader that `npx tsx …` gave the main thread.
 * Throws when the thread cannot be started (tsx not found, a URL a worker cannot load): pump() rejects WORKER_DIED.
 */
function startWorker(url: URL): Worker {
  if (!url.pathname.endsWith('.ts')) return new Worker(url);
  const api = import.meta.resolve('tsx/esm/api'); // tsx's public entry (its package exports), not its file layout
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(boot, { eval: true });
}

/** INVALID_ARGUMENT unless the features and teacher of `d` are on SharedArrayBuffer (the threads must not copy them). */
function checkShared(d: TrainingData): void {
  const shared = (a: ArrayBufferView): boolean =>
    typeof SharedArrayBuffer !== 'undefined' && a.buffer instanceof SharedArrayBuffer;
  const unshared = [
    ...(shared(d.features.teacher) ? [] : ['the teacher']),
    ...d.features.cuts.flatMap((f, i) => (shared(f.x instanceof Float32Array ? f.x : f.x.data) ? [] : [`cut ${i}`])),
  ];
  if (unshared.length > 0)
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `the head-trainer pool shares its data with its threads: ${unshared.join(', ')} not on SharedArrayBuffer`,
    );
}

function aborted(): SelfxitError {
  return new SelfxitError('ABORTED', 'Calibration cancelled during head training', { stage: 'head training' });
}

/**
 * A pool of `threads` worker threads training prepare's head stacks (pass it as prepare's `trainerPool`, and close it
 * after). @throws SelfxitError `INVALID_ARGUMENT` when threads is not an integer from 1 to {@link MAX_TRAINER_THREADS}.
 */
export function createHeadTrainerPool(options: TrainerPoolOptions): NodeTrainerPool {
  const { threads } = options;
  if (!(Number.isInteger(threads) && threads >= 1 && threads <= MAX_TRAINER_THREADS))
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `threads must be an integer from 1 to ${MAX_TRAINER_THREADS}, got ${String(threads)}`,
    );
  const url = options.workerUrl ?? defaultWorkerUrl();
  const slots: Slot[] = [];
  const queue: Job[] = [];
  let data: TrainingData | undefined;
  let nextId = 0;
  let closed = false;
  /** Every thread started and not yet exited, in a slot or stopping (close() terminates them all). */
  const live = new Set<Worker>();
  /**
   * The unsettled jobs of each abort signal, behind one listener per signal: a prepare queues every head task of a
   * phase on one signal (over a hundred), and Node warns (MaxListenersExceededWarning) past ten listeners on one.
   */
  const bySignal = new Map<AbortSignal, { readonly jobs: Set<Job>; readonly onAbort: () => void }>();
  const watch = (job: Job): void => {
    const s = job.signal;
    if (!s) return;
    let w = bySignal.get(s);
    if (!w) {
      const jobs = new Set<Job>();
      const onAbort = (): void => {
        bySignal.delete(s);
        for (const j of [...jobs]) j.onAbort();
      };
      bySignal.set(s, (w = { jobs, onAbort }));
      s.addEventListener('abort', onAbort, { once: true });
    }
    w.jobs.add(job);
  };
  /** The job settled (or is about to): its signal no longer reaches it; the last one removes the listener. */
  const unwatch = (job: Job): void => {
    const s = job.signal;
    const w = s && bySignal.get(s);
    if (!w || !w.jobs.delete(job) || w.jobs.size > 0) return;
    bySignal.delete(s);
    s.removeEventListener('abort', w.onAbort);
  };

  /** Posts `msg` to the slot's thread: undefined when it went, else the typed error (postMessage threw). */
  const send = (slot: Slot, msg: WorkerRequest): SelfxitError | undefined => {
    try {
      slot.worker.postMessage(msg);
      return undefined;
    } catch (e) {
      const what = msg.type === 'task' ? 'a training task' : msg.type === 'data' ? "the heads phase's data" : 'unload';
      return transferError(e, what, threads);
    }
  };

  const finish = (slot: Slot): Job | undefined => {
    const job = slot.job;
    slot.job = undefined;
    if (job) unwatch(job);
    slot.worker.unref();
    return job;
  };

  const drop = (slot: Slot): void => {
    const i = slots.indexOf(slot);
    if (i >= 0) slots.splice(i, 1);
  };

  /** A new thread, in `slots` and `live` (its data, when loaded, still to send). */
  const spawn = (): Slot => {
    const worker = startWorker(url);
    live.add(worker);
    const slot: Slot = { worker, job: undefined, stopping: false };
    slots.push(slot);
    worker.unref();
    worker.on('message', (msg: WorkerReply | undefined) => {
      // not the answer to its task in flight (none: an idle thread; another id): nothing to settle
      const job = slot.job;
      if (!job || msg?.id !== job.id) return;
      finish(slot);
      if (msg.type === 'done') job.resolve(msg.result);
      else job.reject(fromErrorPayload(msg.error));
      pump();
    });
    const died = (why: string): void => {
      drop(slot);
      const job = finish(slot);
      if (job && !slot.stopping)
        job.reject(new SelfxitError('WORKER_DIED', `a head-training worker thread died: ${why}`, { threads }));
      slot.stopping = true;
      pump();
    };
    worker.on('error', (e) => died(e instanceof Error ? e.message : String(e)));
    worker.on('exit', (code) => {
      live.delete(worker);
      died(`it exited with code ${code}`);
    });
    // an answer that cannot be deserialized: its task would wait forever. The thread stops (a fresh one takes the
    // next task): its one answer in flight was this one, and the task fails as a bug would (INTERNAL)
    worker.on('messageerror', (e) => {
      const why = e instanceof Error ? e.message : String(e);
      const message = `a head-training worker thread's answer could not be read: ${why}`;
      fail(slot, new SelfxitError('INTERNAL', message, { threads }, { cause: e }));
      pump();
    });
    return slot;
  };

  /**
   * Stops the slot's thread: it leaves `slots` at once, but stays in `live` (and counts against `threads`) until its
   * exit, which terminate() always brings; until then it keeps the process alive, so that a task waiting for its place
   * is never left behind by an exiting process.
   */
  const stop = (slot: Slot): Promise<number> => {
    slot.stopping = true;
    drop(slot);
    finish(slot);
    slot.worker.ref();
    return slot.worker.terminate();
  };

  /** Stops the slot's thread, its task (when it has one) rejecting with `error`. */
  const fail = (slot: Slot, error: SelfxitError): void => {
    const job = finish(slot);
    void stop(slot);
    job?.reject(error);
  };

  /** Rejects the job first in line with `error` (its thread could not start, or not take the data). */
  const rejectFirst = (error: SelfxitError): void => {
    const job = queue.shift()!;
    unwatch(job);
    job.reject(error);
  };

  /**
   * A new thread holding the data, or undefined when it cannot start (WORKER_DIED) or the data cannot be posted to
   * it (transferError; the thread, useless without it, stops): the job first in line is then rejected.
   */
  const trySpawn = (): Slot | undefined => {
    let slot: Slot;
    try {
      slot = spawn();
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      rejectFirst(
        new SelfxitError('WORKER_DIED', `a head-training worker thread could not start: ${why}`, { threads }),
      );
      return undefined;
    }
    const failed = data ? send(slot, { type: 'data', data }) : undefined;
    if (!failed) return slot;
    void stop(slot);
    rejectFirst(failed);
    return undefined;
  };

  /** Drops the data, here and in every thread (one that cannot be told stops: it may hold the data). */
  const unloadAll = (): void => {
    data = undefined;
    for (const slot of slots.slice()) {
      const e = send(slot, { type: 'unload' });
      if (e) fail(slot, e);
    }
  };

  function pump(): void {
    while (!closed && queue.length > 0) {
      // an aborted job is left to its abort listener, still to run, which rejects it: no thread starts for it
      if (queue[0]!.signal?.aborted) {
        queue.shift();
        continue;
      }
      let slot = slots.find((s) => !s.job && !s.stopping);
      if (!slot) {
        // threads still stopping count too (their exit calls pump again): never more than `threads` at once
        if (live.size >= threads) return;
        slot = trySpawn();
        if (!slot) continue; // it could not start: the job first in line was rejected
      }
      const job = queue.shift()!;
      slot.job = job;
      slot.worker.ref(); // a running task keeps the process alive until its answer
      const failed = send(slot, { type: 'task', id: job.id, task: job.task });
      if (!failed) continue;
      // nothing reached the thread: the job fails (the message's own fault), and the thread stays, idle, for the next
      finish(slot);
      job.reject(failed);
    }
  }

  return {
    concurrency: threads,
    sharedMemory: true,
    get workers() {
      return live.size;
    },
    load(d) {
      if (closed) return Promise.reject(new SelfxitError('DISPOSED', 'the head-trainer pool is closed'));
      try {
        checkShared(d);
      } catch (e) {
        return Promise.reject(e);
      }
      // a thread that cannot take the data stops (new ones get it on start, or fail their task the same way)
      let failed: SelfxitError | undefined;
      for (const slot of slots.slice()) {
        const e = send(slot, { type: 'data', data: d });
        if (e) fail(slot, e);
        failed ??= e;
      }
      if (!failed) {
        data = d;
        return Promise.resolve();
      }
      // the data is kept only on success: the pool (and the threads that took it) let it go, and tasks reject as
      // before any load()
      unloadAll();
      return Promise.reject(failed);
    },
    unload() {
      unloadAll();
      return Promise.resolve();
    },
    run(task, signal) {
      if (closed) return Promise.reject(new SelfxitError('DISPOSED', 'the head-trainer pool is closed'));
      if (signal?.aborted) return Promise.reject(aborted());
      if (!data) return Promise.reject(new SelfxitError('INTERNAL', 'a training task was run before load()'));
      return new Promise<StackTaskResult>((resolve, reject) => {
        const job: Job = {
          id: nextId++,
          task,
          signal,
          resolve,
          reject,
          onAbort: () => {
            const q = queue.indexOf(job);
            if (q >= 0) queue.splice(q, 1);
            // its thread stops mid-training, and the idle ones with it (the aborted run's other tasks stop theirs);
            // the next task starts fresh ones
            for (const slot of slots.filter((s) => s.job === job || !s.job)) void stop(slot);
            reject(aborted());
            pump();
          },
        };
        watch(job);
        queue.push(job);
        pump();
      });
    },
    async close() {
      closed = true;
      data = undefined;
      for (const job of queue.splice(0)) {
        unwatch(job);
        job.reject(new SelfxitError('DISPOSED', 'the head-trainer pool was closed'));
      }
      const running = slots.map((s) => s.job).filter((j): j is Job => j !== undefined);
      for (const slot of slots.slice()) void stop(slot);
      // every thread, those already stopping (an abort, a failed post) included: none outlives close()
      await Promise.allSettled([...live].map((w) => w.terminate()));
      for (const job of running) job.reject(new SelfxitError('DISPOSED', 'the head-trainer pool was closed'));
    },
  };
}

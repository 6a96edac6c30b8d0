// Head training as self-contained tasks, run by an injected trainer: the heads phase of prepare (candidate heads,
// final heads) is a list of independent, seeded head stacks (one per cross-fit member, one per final-head member),
// each described by a small plain task that names the rows it reads (a candidate cut's pooled features, in the
// pooling of a head configuration) instead of carrying them. The calibration core stays environment-agnostic: it
// only knows the HeadTrainerPool interface; the in-process trainer below runs the tasks one at a time (the default,
// and in a browser worker), the Node CLI runs them on worker threads (src/cli/trainer-pool.ts). A task's result
// depends on the task and the data only, so the bundle is the same whatever runs them, and however many at once.
import { SelfxitError } from '../errors.js';
import { trainStack, type StackHead, type StackResult } from './head-stack.js';
import { configFeatures, type HeadConfig } from './head-capacity.js';
import type { FeatureRows } from './feature-store.js';
import type { CutFeatures, FeatureSet } from './features.js';
import { throwIfAborted, yieldToEventLoop } from './progress.js';
import { resolveTrainSettings, type TrainHeadOptions } from './train-head.js';

/** What every task of one heads phase reads: the candidates' pooled features and teacher, and the fold of each row. */
export interface TrainingData {
  /** Rows [0, n) are the samples, then their augmented copies (`rows` in all). */
  readonly features: FeatureSet<FeatureRows>;
  readonly rows: number;
  /**
   * Fold of every row (the cross-fit split); -1: a row no task trains on (paper mode's held-out fold, whose heads
   * train on one group, 0, of the other rows: trainStack leaves rows of a negative group out).
   */
  readonly foldOf: Int32Array;
}

/**
 * One head stack to train (head-stack.ts `trainStack`): plain data (it crosses a worker boundary by structured clone).
 */
export interface StackTask {
  /** Candidate cut (index into the data's feature cuts). */
  readonly cut: number;
  /** Head configuration: its pooling picks the feature matrix (configFeatures), its kind and width the head. */
  readonly config: HeadConfig;
  /** 'folds': rows grouped by the data's folds (a cross-fit's fold heads); 'all': every row trains every head. */
  readonly group: 'folds' | 'all';
  readonly heads: readonly StackHead[];
  /** Training options (kind, width, temperature, early stopping…), resolved by train-head.ts's rules. */
  readonly train: TrainHeadOptions;
  readonly shuffleSeed: number;
  /** Held-out outputs of the rows below `rows`: probabilities, or raw logits (an ensemble member). */
  readonly oof?: { readonly rows: number; readonly logits: boolean };
}

/** A trained stack: the heads on standardised features and the standardisation, with the held-out outputs asked. */
export interface StackTaskResult {
  readonly stack: StackResult;
  /** `[oof.rows, k]`: held-out rows' probabilities or raw logits; 0 elsewhere. */
  readonly oof?: Float32Array;
  /** Training time of this task, ms. */
  readonly ms: number;
}

/**
 * Runs training tasks. Implementations: {@link inProcessTrainer} (one at a time, in this thread: the default) and,
 * in the CLI, its worker-thread pool (src/cli/trainer-pool.ts, not exported by the package).
 *
 * What a custom pool must guarantee, for prepare to give the same bundle bytes:
 * - `run` trains with {@link runStackTask} on the data last given to `load`, unchanged (no copy that changes the
 *   values, no other trainer): a task's result depends on the task and the data only.
 * - `load` is called once per heads phase, before the phase's `run` calls (selfxit mode: candidate heads, then final
 *   heads, twice per prepare; paper mode: once, its heads); `unload`, when present, at the end of each phase, and
 *   when `load` rejects (before prepare rejects with that error).
 * - `concurrency` is an integer >= 1 (prepare rejects INVALID_ARGUMENT otherwise).
 * - `sharedMemory: true` makes prepare allocate the features on SharedArrayBuffer: it needs SharedArrayBuffer
 *   (in a browser, a cross-origin isolated page), else prepare rejects BACKEND_UNAVAILABLE.
 * - `run` rejects with a SelfxitError (ABORTED once `signal` aborts, the task's own error when it throws), and settles
 *   every task it accepted.
 */
export interface HeadTrainerPool {
  /** Tasks it runs at once: the heads phase keeps about this many head trainings in flight (an integer >= 1). */
  readonly concurrency: number;
  /**
   * True when the tasks run in other threads, which read the features through shared memory: prepare then allocates
   * the pooled features and teacher on SharedArrayBuffer, so that no thread holds a copy.
   */
  readonly sharedMemory: boolean;
  /** Makes `data` the data of the next tasks (once per heads phase, before any `run`). */
  load(data: TrainingData): Promise<void>;
  /**
   * Trains one task. Rejects with ABORTED when `signal` aborts first (a running task's thread is stopped), with the
   * task's own SelfxitError when it throws, WORKER_DIED when its thread dies.
   */
  run(task: StackTask, signal?: AbortSignal): Promise<StackTaskResult>;
  /**
   * Drops the data of the phase (prepare calls it at the end of each heads phase, whether it succeeded or not), so that
   * a pool reused across runs keeps no features alive between them. Optional for a custom pool.
   */
  unload?(): Promise<void>;
  /** Drops the data and stops every thread (the pool's owner calls it; the in-process trainer has none). */
  close(): Promise<void>;
}

/** Caches the last derived feature matrix (a coarse or max-less pooling), so that a cross-fit's members share one. */
export class FeatureCache {
  private key = '';
  /** The stored matrix `value` was derived from (a new load's features derive anew). */
  private base: FeatureRows | undefined;
  private value: CutFeatures<FeatureRows> | undefined;
  /** The features of `config` at cut `cut` of `data` (the stored matrix itself, or one derived from it). */
  get(data: TrainingData, cut: number, config: HeadConfig): CutFeatures<FeatureRows> {
    const base = data.features.cuts[cut];
    if (!base)
      throw new SelfxitError('INVALID_ARGUMENT', `training task reads cut ${cut} of ${data.features.cuts.length}`);
    const key = `${cut}:${config.coarse ? 1 : 0}:${config.max ? 1 : 0}`;
    if (this.key !== key || !this.value || this.base !== base.x) {
      const f = configFeatures(base, config);
      if (f === base) return base; // the stored pooling: nothing to keep
      this.key = key;
      this.base = base.x;
      this.value = f;
    }
    return this.value;
  }
  clear(): void {
    this.key = '';
    this.base = undefined;
    this.value = undefined;
  }
}

/** Trains `task` on `data` (what every trainer runs, in this thread or a worker). */
export function runStackTask(data: TrainingData, task: StackTask, cache = new FeatureCache()): StackTaskResult {
  const t0 = Date.now();
  const f = cache.get(data, task.cut, task.config);
  const { teacher, k } = data.features;
  const n = data.rows;
  const settings = resolveTrainSettings(task.train);
  const group = task.group === 'folds' ? data.foldOf : new Int32Array(n);
  if (group.length !== n) throw new SelfxitError('INVALID_ARGUMENT', `foldOf has ${group.length} rows, expected ${n}`);
  const oofRows = Math.min(n, task.oof?.rows ?? 0);
  const oof = task.oof ? new Float32Array(oofRows * k) : undefined;
  const stack = trainStack(
    f.x,
    teacher,
    n,
    f.dim,
    k,
    group,
    task.heads,
    { ...settings, shuffleSeed: task.shuffleSeed },
    oof,
    oofRows,
    task.oof?.logits ? 'raw' : undefined,
  );
  return { stack, ...(oof ? { oof } : {}), ms: Date.now() - t0 };
}

/**
 * The default trainer: tasks run one at a time in this thread, in the order given, each after a turn of the event
 * loop (so progress is painted and an abort is seen between them).
 */
export function inProcessTrainer(): HeadTrainerPool {
  let data: TrainingData | undefined;
  const cache = new FeatureCache();
  let queue: Promise<unknown> = Promise.resolve();
  return {
    concurrency: 1,
    sharedMemory: false,
    load(d) {
      data = d;
      cache.clear();
      return Promise.resolve();
    },
    run(task, signal) {
      const result = queue.then(async () => {
        throwIfAborted(signal, 'head training');
        if (!data) throw new SelfxitError('INTERNAL', 'a training task ran before its data was loaded');
        const r = runStackTask(data, task, cache);
        await yieldToEventLoop();
        return r;
      });
      queue = result.then(
        () => undefined,
        () => undefined,
      ); // not the result itself: unload() must leave nothing alive
      return result;
    },
    unload() {
      data = undefined;
      cache.clear();
      return Promise.resolve();
    },
    close() {
      data = undefined;
      cache.clear();
      return Promise.resolve();
    },
  };
}

/** The failure that aborted each `stop` controller of mapLimit/settleAll (not set when its caller aborted it). */
const stopFailures = new WeakMap<AbortSignal, { readonly error: unknown }>();

/**
 * Aborts `stop` on a task's failure and remembers that failure as the cause (the first to come; a `stop` already
 * aborted, by the caller or another failure, keeps its cause).
 */
function failStop(stop: AbortController | undefined, error: unknown): void {
  if (!stop || stop.signal.aborted) return;
  stopFailures.set(stop.signal, { error });
  stop.abort(error);
}

/**
 * The error to reject with: the failure that aborted `stop` when a task's failure did, else `error`. The other tasks
 * that `stop` aborted reject ABORTED, and one of them, on a shorter chain of awaits, can reach a mapLimit/settleAll
 * before the failure that caused it: the cause, not that ABORTED, is what the caller must see.
 */
function firstFailure(stop: AbortController | undefined, error: unknown): unknown {
  const cause = stop ? stopFailures.get(stop.signal) : undefined;
  return cause ? cause.error : error;
}

/**
 * Runs `fn` over `items` with at most `limit` at once, results in item order. On the first failure no further item
 * starts and `stop` (when given) aborts, so that tasks already queued give up; it rejects with that failure once those
 * running have settled (no work is left behind): the failure that aborted `stop` when there is one, however deep in
 * nested mapLimit/settleAll calls sharing `stop` it came, rather than an ABORTED it caused.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  stop?: AbortController,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  let failed: { error: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (error) {
        failed ??= { error };
        failStop(stop, error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  if (failed) throw firstFailure(stop, failed.error);
  return out;
}

/**
 * Every promise's value, in order; on a rejection `stop` aborts (the other tasks give up) and, once all have settled,
 * it rejects with the first rejection to come (the failure that aborted `stop` when there is one, as mapLimit).
 */
export async function settleAll<R>(promises: readonly Promise<R>[], stop?: AbortController): Promise<R[]> {
  let failed: { error: unknown } | undefined;
  const settled = await Promise.allSettled(
    promises.map((p) =>
      p.catch((error: unknown) => {
        failed ??= { error };
        failStop(stop, error);
        throw error;
      }),
    ),
  );
  if (failed) throw firstFailure(stop, failed.error);
  return settled.map((r) => (r as PromiseFulfilledResult<R>).value);
}

// One promise queue for every onnxruntime call in the worker: concurrent create()/run() calls fail or hang in ORT-web.

/** Runs async jobs one at a time, in submission order; a failing job does not stop the queue. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;
  /** Told each job's wait (queued → started) and run time, ms, while set (a profiled call, profile.ts). */
  observer: ((waitMs: number, runMs: number) => void) | undefined;

  /** Queues `job`; resolves or rejects with its result once every earlier job has settled. */
  run<T>(job: () => Promise<T> | T): Promise<T> {
    this.pending++;
    const observer = this.observer;
    const result = this.tail.then(observer ? observed(job, observer) : job);
    this.tail = result.then(this.settled, this.settled);
    return result;
  }

  /** A job settled (made once: not a pair of closures per job). */
  private readonly settled = (): void => {
    this.pending--;
  };

  /** Jobs queued or running. */
  get size(): number {
    return this.pending;
  }
}

/** `job`, reporting its wait (from now until it starts) and its run time to `observer`. */
function observed<T>(job: () => Promise<T> | T, observer: (waitMs: number, runMs: number) => void): () => Promise<T> {
  const queued = performance.now();
  return async () => {
    const start = performance.now();
    try {
      return await job();
    } finally {
      observer(start - queued, performance.now() - start);
    }
  };
}

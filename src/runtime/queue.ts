// One promise queue for every onnxruntime call in the worker: concurrent create()/run() calls fail or hang in ORT-web.

/** Runs async jobs one at a time, in submission order; a failing job does not stop the queue. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  /** Queues `job`; resolves or rejects with its result once every earlier job has settled. */
  run<T>(job: () => Promise<T> | T): Promise<T> {
    this.pending++;
    const result = this.tail.then(job);
    this.tail = result.then(
      () => this.pending--,
      () => this.pending--,
    );
    return result;
  }

  /** Jobs queued or running. */
  get size(): number {
    return this.pending;
  }
}

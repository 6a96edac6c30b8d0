// Page side of the baseline: spawns the baseline worker and times each call from the page, like clf.classify().
import * as Comlink from 'comlink';
import type { BaselineBackend, BaselineInit, BaselineResult, BaselineWorkerApi } from './baseline-protocol.js';

export type { BaselineBackend, BaselineInit, BaselineResult } from './baseline-protocol.js';

/** The original model in its own worker, as one plain onnxruntime-web session. */
export class Baseline {
  private constructor(
    private readonly worker: Worker,
    private readonly api: Comlink.Remote<BaselineWorkerApi>,
    /** Backend the session runs on. */
    readonly backend: BaselineBackend,
  ) {}

  /** Starts the worker and creates the session (throws what onnxruntime throws). */
  static async create(options: BaselineInit): Promise<Baseline> {
    const worker = new Worker(new URL('./baseline.worker.ts', import.meta.url), {
      type: 'module',
      name: 'selfxit-baseline',
    });
    const api = Comlink.wrap<BaselineWorkerApi>(worker);
    try {
      const info = await api.init(options);
      return new Baseline(worker, api, info.backend);
    } catch (e) {
      worker.terminate();
      throw e;
    }
  }

  /** Classifies `count` uint8 NHWC images; `pageMs` is the page-side round trip. */
  async run(images: Uint8Array, count: number): Promise<BaselineResult & { pageMs: number }> {
    const t0 = performance.now();
    // Send a compact copy, moved not cloned: a view into a large buffer would clone the whole buffer.
    const own = images.slice();
    const r = await this.api.run(Comlink.transfer(own, [own.buffer]), count);
    return { ...r, pageMs: performance.now() - t0 };
  }

  async dispose(): Promise<void> {
    try {
      await this.api.dispose();
    } finally {
      this.api[Comlink.releaseProxy]();
      this.worker.terminate();
    }
  }
}

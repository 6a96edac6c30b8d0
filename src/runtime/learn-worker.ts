// The fits of on-device learning in a second worker, so that serving is never blocked by head training: the runtime
// worker starts its own script again under the name LEARNER_NAME (worker.ts then serves this API instead), and hands
// each fit job over with its feature buffers transferred. It starts with the classifier (load() waits for it to answer,
// so its start-up never coincides with a fit); where a worker cannot start one, fits run in the thread.
import { proxy, transfer, wrap, type Remote } from 'comlink';
import { fitLearned, type FitJob, type LearnedExits, type PrepareProgress } from '../learn/fit.js';
import type { FitWorker } from './learn-runtime.js';

/** The name a learner worker is started with (worker.ts checks it). */
export const LEARNER_NAME = 'selfxit-learner';

/** What the learner worker serves. */
export interface LearnerApi {
  fit(job: FitJob, onProgress?: (p: PrepareProgress) => void): Promise<LearnedExits>;
  /** Answers once the worker runs (its script fetched and evaluated). */
  ready(): boolean;
}

export function createLearnerApi(): LearnerApi {
  return { fit: (job, onProgress) => fitLearned(job, onProgress), ready: () => true };
}

/**
 * Every buffer of a job's feature matrices: the teacher's, each cut's rows and, for per-row codes, their ranges (moved,
 * not copied: the job owns a snapshot — Learner.runFit builds it from FeatureReservoir.snapshot's fresh arrays and
 * reads none of it after handing it over).
 */
function jobBuffers(job: FitJob): ArrayBuffer[] {
  const f = job.features;
  const xs = f.cuts.flatMap((c) =>
    c.x instanceof Float32Array ? [c.x.buffer] : [c.x.data.buffer, ...(c.x.rowRange ? [c.x.rowRange.buffer] : [])],
  );
  return [...new Set([f.teacher.buffer, ...xs])] as ArrayBuffer[];
}

/**
 * A fit runner backed by a learner worker started from `scriptUrl` (this worker's own script), or undefined where
 * workers cannot start workers. A worker that fails makes this and later fits run in the thread.
 */
export function learnerWorkerRunner(scriptUrl: string | undefined): FitWorker | undefined {
  const W = (globalThis as { Worker?: typeof Worker }).Worker;
  if (!W || !scriptUrl) return undefined;
  let worker: Worker;
  try {
    worker = new W(scriptUrl, { type: 'module', name: LEARNER_NAME });
  } catch {
    return undefined;
  }
  let broken: Error | undefined;
  let failed: (e: Error) => void = () => {};
  const failure = new Promise<never>((_, reject) => (failed = reject));
  failure.catch(() => undefined);
  worker.addEventListener('error', (ev) => {
    broken = new Error(`the learner worker failed: ${(ev as ErrorEvent).message ?? 'could not start'}`);
    failed(broken);
  });
  const api: Remote<LearnerApi> = wrap<LearnerApi>(worker);
  return {
    // A failed worker rejects the fit in flight (its buffers were moved); later fits run in the thread.
    run: async (job, onProgress) => {
      if (broken) return fitLearned(job, onProgress);
      const progress = onProgress ? proxy(onProgress) : undefined;
      return Promise.race([api.fit(transfer(job, jobBuffers(job)), progress), failure]);
    },
    close: () => worker.terminate(),
    get broken() {
      return broken !== undefined;
    },
    ready: Promise.race([api.ready(), failure]).then(
      () => true,
      () => false,
    ),
  };
}

// The fits of on-device learning in a second worker, so that serving is never blocked by head training: the runtime
// worker starts its own script again under the name LEARNER_NAME (worker.ts then serves this API instead), and hands
// each fit job over with its feature buffers transferred. It starts with the classifier (load() waits for it to answer,
// so its start-up never coincides with a fit); where a worker cannot start one, fits run in the thread. The learning
// code itself is a lazily loaded chunk (learnCode(): learn-chunk.ts, dist/selfxit.learn-<hash>.js), not part of the
// worker's entry.
import { proxy, transfer, wrap, type Remote } from 'comlink';
import { SelfxitError } from '../errors.js';
import type { FitJob, LearnedExits, PrepareProgress } from '../learn/fit.js';
import type * as LearnChunk from './learn-chunk.js';
import type { FitWorker } from './learn-runtime.js';
import { urlIn } from './ort-backend.js';

/** The name a learner worker is started with (worker.ts checks it). */
export const LEARNER_NAME = 'selfxit-learner';

/** The learning chunk's file name in dist/, next to selfxit.worker.js (vite.config.ts names it; <hash>: its content's). */
export const LEARN_CHUNK = 'selfxit.learn-<hash>.js';

/**
 * The learning code (learn-chunk.ts), imported on first use so that a worker that only classifies never fetches it:
 * RUNTIME_FILES_UNAVAILABLE when it cannot be fetched (a worker copied without its chunk: docs/DEPLOY.md).
 */
export function learnCode(): Promise<typeof LearnChunk> {
  return import('./learn-chunk.js').catch((e: unknown) => {
    const message = (e as Error | undefined)?.message ?? String(e);
    const url = urlIn(message) ?? LEARN_CHUNK;
    throw new SelfxitError(
      'RUNTIME_FILES_UNAVAILABLE',
      `the on-device learning code could not be loaded from ${url} (${message}): serve ${LEARN_CHUNK} next to the ` +
        'worker script (selfxit.worker.js), from the same build (copy dist/ as it is)',
      { url },
      { cause: e },
    );
  });
}

/** Fits in this thread, the learning code loaded on first use. */
const fitHere = async (job: FitJob, onProgress?: (p: PrepareProgress) => void): Promise<LearnedExits> =>
  (await learnCode()).fitLearned(job, onProgress);

/** What the learner worker serves. */
export interface LearnerApi {
  fit(job: FitJob, onProgress?: (p: PrepareProgress) => void): Promise<LearnedExits>;
  /** Answers once the worker runs (its script fetched and evaluated) and holds the fit code (the learning chunk). */
  ready(): boolean | Promise<boolean>;
}

/**
 * The learner worker's API: exposed synchronously when the worker starts (so that no message is lost); its fit code
 * loaded by ready(), which load() waits for (so that fetching and parsing it never coincides with a fit).
 */
export function createLearnerApi(): LearnerApi {
  return { fit: fitHere, ready: () => learnCode().then(() => true) };
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
 * Whether this thread is a classic worker (webpack 5 makes selfxit's worker one; the classic blob that starts it on
 * another origin is one): `importScripts()` with no arguments does nothing there, and throws a TypeError in a module
 * worker (the HTML standard's "import scripts into worker global scope": a module worker's type is checked before the
 * URLs are); a page or Node has no `importScripts`.
 */
export function inClassicWorker(): boolean {
  const g = globalThis as { importScripts?: (...urls: string[]) => void };
  if (typeof g.importScripts !== 'function') return false;
  try {
    g.importScripts();
    return true;
  } catch {
    return false;
  }
}

/**
 * A fit runner backed by a learner worker started from `scriptUrl` (this worker's own script) as the same type of
 * worker as this one (`module`: a classic worker's script, webpack's, loads its chunks with importScripts, which
 * throws in a module worker), or undefined where workers cannot start workers. A worker that fails makes this and later
 * fits run in the thread (`learning().fitRanIn: 'thread'`).
 */
export function learnerWorkerRunner(scriptUrl: string | undefined, module = !inClassicWorker()): FitWorker | undefined {
  const W = (globalThis as { Worker?: typeof Worker }).Worker;
  if (!W || !scriptUrl) return undefined;
  let worker: Worker;
  try {
    worker = new W(scriptUrl, module ? { type: 'module', name: LEARNER_NAME } : { name: LEARNER_NAME });
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
      if (broken) return fitHere(job, onProgress);
      const progress = onProgress ? proxy(onProgress) : undefined;
      return Promise.race([api.fit(transfer(job, jobBuffers(job)), progress), failure]);
    },
    close: () => worker.terminate(),
    get broken() {
      return broken !== undefined;
    },
    // A worker that cannot load the fit code (the learning chunk) is broken too: fits then run in the thread.
    ready: Promise.race([api.ready(), failure]).then(
      () => true,
      (e: unknown) => {
        broken ??= new Error(
          `the learner worker could not load its fit code: ${(e as Error | undefined)?.message ?? String(e)}`,
        );
        worker.terminate();
        return false;
      },
    ),
  };
}

// The page classifier's life cycle: a bundle replaced on the server is re-opened in a new worker (the failed call runs
// again there), dispose() during that re-open ends it at once (the waiting call rejects DISPOSED, the new worker is
// terminated), and dispose() called twice gives one promise and leaves no timer behind.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import { ClassifierImpl, load } from '../src/page/classifier.js';
import type { WorkerApi } from '../src/protocol.js';
import type { LoadOptions } from '../src/types.js';
import {
  FakeTransport,
  closeFakeWorkers,
  fakeWorkerApi,
  manifest,
  state0,
  stubWorkers,
} from './fixtures/page-fakes.js';

afterEach(() => {
  closeFakeWorkers();
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

const options: LoadOptions = { workerUrl: 'https://x.test/selfxit.worker.js', heartbeatMs: 0, callTimeoutMs: 0 };

/** A worker whose bundle was replaced on the server: its classify() calls reject so. */
function replacedApi(): WorkerApi {
  return {
    ...fakeWorkerApi(),
    classify: async () => {
      throw new SelfxitError('INTEGRITY_ERROR', 'manifest.json changed', { bundleChanged: true });
    },
  };
}

/** A worker that opens the new version (`init` as given) and classifies every input as class 1 at exit 0. */
function newVersionApi(init: WorkerApi['init'] = fakeWorkerApi().init): WorkerApi {
  return {
    ...fakeWorkerApi(),
    init,
    classify: async (r) => ({
      results: r.inputs.map(() => ({ index: 1, confidence: 0.95, exit: 0, stages: [1], totalMs: 1 })),
      state: state0,
    }),
  };
}

describe('Classifier re-open and dispose()', () => {
  it('a call that finds the bundle replaced runs again on the new version, in a new worker', async () => {
    const workers = stubWorkers([replacedApi(), newVersionApi()]);
    const clf = await load('https://x.test/b/', options);
    const r = await clf.classify(new Float32Array(1));
    expect(r).toMatchObject({ label: 'b', exit: { index: 0, name: 'e0' } });
    expect(workers).toHaveLength(2);
    await vi.waitFor(() => expect(workers[0]!.terminated).toBe(true)); // the old worker ends
    await clf.dispose();
    expect(workers[1]!.terminated).toBe(true);
  });

  it('dispose() during the re-open: the waiting call rejects DISPOSED at once and the new worker is terminated', async () => {
    let opening = false;
    const hanging: WorkerApi['init'] = () => {
      opening = true;
      return new Promise(() => {}); // still downloading the new version
    };
    const workers = stubWorkers([replacedApi(), newVersionApi(hanging)]);
    const clf = await load('https://x.test/b/', { ...options, timeoutMs: 5000 });
    const call = clf.classify(new Float32Array(1)).catch((e: unknown) => e);
    await vi.waitFor(() => expect(opening).toBe(true));
    const t0 = performance.now();
    await clf.dispose();
    expect(await call).toMatchObject({ code: 'DISPOSED' });
    expect(performance.now() - t0).toBeLessThan(1000); // not load()'s timeoutMs later
    expect(workers.map((w) => w.terminated)).toEqual([true, true]);
  });

  it('dispose() twice: one promise, settled once the worker released its sessions; no timer left behind', async () => {
    vi.useFakeTimers();
    const transport = new FakeTransport();
    let release: () => void = () => {};
    transport.dispose = () => new Promise<void>((r) => (release = r));
    const failed = vi.spyOn(transport, 'fail');
    const clf = new ClassifierImpl(transport, { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/m.json' });
    const first = clf.dispose();
    const second = clf.dispose();
    expect(second).toBe(first);
    release();
    await first;
    expect(failed).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
    await expect(clf.classify(new Float32Array(1))).rejects.toMatchObject({ code: 'DISPOSED' });
  });
});

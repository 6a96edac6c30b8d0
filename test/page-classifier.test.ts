// The page classifier's life cycle: a bundle replaced on the server is re-opened in a new worker (the failed call runs
// again there), dispose() during that re-open ends it at once (the waiting call rejects DISPOSED, the new worker is
// terminated), and dispose() called twice gives one promise and leaves no timer behind.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import { ClassifierImpl, load } from '../src/page/classifier.js';
import type { InitRequest, LearningState, WireResult, WorkerApi } from '../src/protocol.js';
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

/** A worker whose bundle was replaced on the server: its classify() calls reject so (naming the outdated manifest). */
function replacedApi(): WorkerApi {
  return {
    ...fakeWorkerApi(),
    classify: async () => {
      throw new SelfxitError('INTEGRITY_ERROR', 'manifest.json changed', { bundleChanged: true, manifestHash: 'h' });
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

  it('the re-open asks the new worker to avoid the outdated manifest (its cached copy may not be marked so)', async () => {
    const requests: InitRequest[] = [];
    const opens: WorkerApi['init'] = async (req) => {
      requests.push(req);
      return { manifest, manifestHash: 'h2', state: state0 };
    };
    stubWorkers([replacedApi(), newVersionApi(opens)]);
    const clf = await load('https://x.test/b/', options);
    await clf.classify(new Float32Array(1));
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ avoidManifestHash: 'h', manifestUrl: 'https://x.test/b/manifest.json' });
    expect(clf.info().manifestHash).toBe('h2');
    await clf.dispose();
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

describe('a batch during a re-open', () => {
  it('a part sent after another call re-opened the bundle does not go to the new version: the whole batch runs again there', async () => {
    const result = (index: number) => ({ index, confidence: 1, exit: -1, stages: [1], totalMs: 1 });
    const old = new FakeTransport();
    let firstPart: (r: ReturnType<typeof result>[]) => void = () => {};
    let calls = 0;
    old.classify = () => {
      if (++calls === 1) return new Promise((r) => (firstPart = r)); // part 1 of the batch, still running
      return Promise.reject(new SelfxitError('INTEGRITY_ERROR', 'replaced', { bundleChanged: true }));
    };
    const next = new FakeTransport();
    const parts: number[] = [];
    next.classify = async (req) => (parts.push(req.inputs.length), req.inputs.map(() => result(1)));
    const opened = { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/m.json' };
    const reopen = async () => ({ client: next, opened: { ...opened, manifestHash: 'h2' } });
    const clf = new ClassifierImpl(old, opened, reopen, 8); // 8 bytes a part: 2 inputs each
    const batch = clf.classifyBatch([0, 1, 2, 3].map(() => new Float32Array(1)));
    await vi.waitFor(() => expect(calls).toBe(1));
    await clf.classify(new Float32Array(1)); // finds the bundle replaced: re-opens, runs on the new version
    expect(clf.info().manifestHash).toBe('h2');
    firstPart([0, 1].map(() => result(0))); // the old version answers part 1
    const results = await batch;
    expect(results.map((r) => r.index)).toEqual([1, 1, 1, 1]); // all of it from the new version
    expect(parts).toEqual([1, 2, 2]); // the single call, then the batch again in two parts
  });

  it('a batch re-opened twice during its runs runs a third time, not DISPOSED (the classifier is alive)', async () => {
    const result = (index: number) => ({ index, confidence: 1, exit: -1, stages: [1], totalMs: 1 });
    /** A version: a classify() sent while `hold` waits for `answer`; while `replaced`, it finds the bundle replaced. */
    const version = (n: number) => {
      const t = new FakeTransport();
      const v = { t, calls: 0, hold: false, replaced: false, answer: (_r: ReturnType<typeof result>[]) => {} };
      t.classify = async (req) => {
        v.calls++;
        if (v.hold) return ((v.hold = false), new Promise((r) => (v.answer = r)));
        if (v.replaced) throw new SelfxitError('INTEGRITY_ERROR', 'replaced', { bundleChanged: true });
        return req.inputs.map(() => result(n));
      };
      return v;
    };
    const [v1, v2, v3] = [version(1), version(2), version(3)];
    const opened = { manifest, manifestHash: 'h1', manifestUrl: 'https://x.test/m.json' };
    const versions = [
      { client: v2.t, opened: { ...opened, manifestHash: 'h2' } },
      { client: v3.t, opened: { ...opened, manifestHash: 'h3' } },
    ];
    const reopen = async () => versions.shift()!;
    const clf = new ClassifierImpl(v1.t, opened, reopen, 8); // 8 bytes a part: 3 parts of 2 inputs
    v1.hold = true;
    const batch = clf.classifyBatch([0, 1, 2, 3, 4, 5].map(() => new Float32Array(1)));
    await vi.waitFor(() => expect(v1.calls).toBe(1));
    v1.replaced = true;
    expect((await clf.classify(new Float32Array(1))).index).toBe(2); // re-open 1: v2
    v2.hold = true; // the batch's run on v2 waits in its first part
    v1.answer([result(1), result(1)]); // part 1 answered on v1; part 2 sees the re-open: the batch runs again on v2
    await vi.waitFor(() => expect(v2.hold).toBe(false));
    v2.replaced = true;
    expect((await clf.classify(new Float32Array(1))).index).toBe(3); // re-open 2: v3
    expect(clf.info().manifestHash).toBe('h3');
    v2.answer([result(2), result(2)]); // part 1 of the re-run answered on v2; part 2 sees the second re-open
    const results = await batch;
    expect(results.map((r) => r.index)).toEqual([3, 3, 3, 3, 3, 3]); // all from v3
  }, 5_000);

  it('a single call the old version answers after a re-open is labelled with that version', async () => {
    const old = new FakeTransport();
    let answer: (r: WireResult[]) => void = () => {};
    let calls = 0;
    old.classify = () => {
      if (++calls === 1) return new Promise((r) => (answer = r));
      return Promise.reject(new SelfxitError('INTEGRITY_ERROR', 'replaced', { bundleChanged: true }));
    };
    const opened = { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/m.json' };
    const renamed = { ...manifest, labels: ['x', 'y'] } as typeof manifest;
    const reopen = async () => ({ client: new FakeTransport(), opened: { ...opened, manifest: renamed } });
    const clf = new ClassifierImpl(old, opened, reopen);
    const first = clf.classify(new Float32Array(1));
    await vi.waitFor(() => expect(calls).toBe(1));
    expect((await clf.classify(new Float32Array(1))).label).toBe('x');
    answer([{ index: 0, confidence: 1, exit: -1, stages: [1], totalMs: 1 }]);
    expect((await first).label).toBe('a');
  });
});

describe('load() times out on inactivity', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** A worker whose init() downloads for `ms` (its ping's activity count grows meanwhile when `moving`). */
  function downloading(ms: number, moving: boolean): WorkerApi {
    let activity = 0;
    let busy = false;
    return {
      ...fakeWorkerApi(),
      ping: async () => ({ activity: busy && moving ? ++activity : activity }),
      init: async () => {
        busy = true;
        await sleep(ms);
        busy = false;
        return { manifest, manifestHash: 'h', state: state0 };
      },
    };
  }
  const liveness: LoadOptions = { ...options, heartbeatMs: 100, timeoutMs: 300 };

  it('a download of 4× timeoutMs that keeps progressing (no onProgress given) loads', async () => {
    stubWorkers([downloading(1200, true)]);
    const clf = await load('https://x.test/b/', liveness);
    expect(clf.info().manifestHash).toBe('h');
    await clf.dispose();
  });

  it('one that makes no progress for timeoutMs rejects with TIMEOUT and its worker ends', async () => {
    const workers = stubWorkers([downloading(1200, false)]);
    await expect(load('https://x.test/b/', liveness)).rejects.toMatchObject({
      code: 'TIMEOUT',
      details: { timeoutMs: 300 },
      message: expect.stringMatching(/no progress for 300 ms/) as unknown,
    });
    expect(workers[0]!.terminated).toBe(true);
  });

  it('a page restored from the back/forward cache during load() restarts its clock (the time frozen is no silence)', async () => {
    const target = new EventTarget();
    vi.stubGlobal('addEventListener', target.addEventListener.bind(target));
    vi.stubGlobal('removeEventListener', target.removeEventListener.bind(target));
    let finish = (): void => {};
    const gate = new Promise<void>((r) => (finish = r));
    stubWorkers([
      { ...fakeWorkerApi(), init: async () => (await gate, { manifest, manifestHash: 'h', state: state0 }) },
    ]);
    const loading = load('https://x.test/b/', { ...options, timeoutMs: 500 }); // no heartbeat, no onProgress
    await sleep(350);
    target.dispatchEvent(Object.assign(new Event('pageshow'), { persisted: true })); // restored
    await sleep(350); // 700 ms since load(), 350 since the restore
    finish();
    const clf = await loading;
    expect(clf.info().manifestHash).toBe('h');
    await clf.dispose();
  });
});

describe('Classifier while learning: the manifest of the learned exits in force', () => {
  /** The exitless manifest served before a fit, and a learning state (version; the manifest sent with a change). */
  const exitless = { ...manifest, exits: [], segments: [manifest.segments[0]] } as unknown as typeof manifest;
  const learning = (version: number, withManifest: boolean): LearningState =>
    ({
      ...{ samplesSeen: 0, samplesStored: 0, fits: 1, fitting: false, exitsOn: true, exits: 2, tightenings: 0 },
      thresholds: [0.9, 0.9],
      target: 0.99,
      expectedAgreement: 0.99,
      macsFraction: 0.5,
      version,
      ...(withManifest ? { manifest, manifestHash: 'h2' } : {}),
    }) as unknown as LearningState;

  it('a change reported on the first part of a batch is followed: its results and later ones name the new exits', async () => {
    let calls = 0;
    const transport = new FakeTransport();
    transport.state = { ...state0, learning: learning(1, false) };
    transport.classify = async (req) => {
      calls++;
      // the worker swapped the exits before part 1: part 1's reply carries the manifest (sent once), part 2's not
      transport.state = { ...state0, learning: learning(2, calls === 1) };
      return req.inputs.map(() => ({ index: 1, confidence: 1, exit: 1, stages: [1], totalMs: 1 }));
    };
    const opened = { manifest: exitless, manifestHash: 'h1', manifestUrl: 'https://x.test/m.onnx' };
    const clf = new ClassifierImpl(transport, opened, undefined, 4); // 4 bytes a part: 2 inputs each
    const results = await clf.classifyBatch([0, 1, 2, 3].map(() => new Float32Array(1)));
    expect(calls).toBe(2);
    expect(results.map((r) => r.exit.name)).toEqual(['e1', 'e1', 'e1', 'e1']);
    expect(clf.info()).toMatchObject({ manifestHash: 'h2', exits: [{ name: 'e0' }, { name: 'e1' }] });
    expect((await clf.classify(new Float32Array(1))).exit).toMatchObject({ index: 1, name: 'e1', macsFraction: 0.6 });
  });
});

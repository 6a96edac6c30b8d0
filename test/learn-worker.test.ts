// The learner worker's hand-over (src/runtime/learn-worker.ts): a fit job built as Learner.runFit builds it (a
// reservoir snapshot) goes to the worker with every feature buffer moved, the rows' ranges included, not copied.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { expose } from 'comlink';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { analyseForLearning, type FitJob, type LearnedExits } from '../src/learn/learner.js';
import { FeatureReservoir, reservoirCuts } from '../src/learn/reservoir.js';
import { resolveLearnOptions } from '../src/learn/learn-options.js';
import { learnerWorkerRunner, LEARNER_NAME, type LearnerApi } from '../src/runtime/learn-worker.js';
import { createRng } from '../src/calibrate/rng.js';
import { ortNode } from './fixtures/ort-helpers.js';
import fs from 'node:fs';
import path from 'node:path';

const modelPath = path.resolve(import.meta.dirname, '../public/models/fashion-resnet/model.onnx');

/** What the stub learner worker saw of each job: per cut, its rows' and ranges' byte lengths. */
const received: { data: number; ranges: number }[][] = [];

/** A Worker over a MessageChannel whose far end serves a stub LearnerApi (records the job, fits nothing). */
class ChannelWorker {
  private readonly port: MessagePort;
  private readonly far: MessagePort;
  constructor() {
    const { port1, port2 } = new MessageChannel();
    [this.port, this.far] = [port1, port2];
    const api: LearnerApi = {
      fit: (job) => {
        received.push(
          job.features.cuts.map((c) => ({
            data: c.x instanceof Float32Array ? c.x.byteLength : c.x.data.byteLength,
            ranges: c.x instanceof Float32Array ? 0 : (c.x.rowRange?.byteLength ?? 0),
          })),
        );
        return Promise.resolve({ exits: [], summary: {} } as unknown as LearnedExits);
      },
      ready: () => (ChannelWorker.readyFails ? Promise.reject(new Error('no learning chunk')) : true),
    };
    expose(api, port2 as unknown as Parameters<typeof expose>[1]);
  }
  postMessage(message: unknown, transfer?: Transferable[]): void {
    this.port.postMessage(message, transfer as never);
  }
  /** Set by a test: the worker's ready() rejects (it cannot load the learning chunk). */
  static readyFails = false;
  /** The error listeners (a test fires them: the worker failed). */
  static readonly onError: ((ev: unknown) => void)[] = [];
  addEventListener(type: string, listener: (ev: unknown) => void): void {
    if (type === 'message') this.port.addEventListener('message', listener as never);
    if (type === 'error') ChannelWorker.onError.push(listener);
  }
  removeEventListener(type: string, listener: (ev: unknown) => void): void {
    if (type === 'message') this.port.removeEventListener('message', listener as never);
  }
  start(): void {
    this.port.start();
  }
  terminate(): void {
    this.port.close();
    this.far.close();
  }
}

afterEach(() => {
  vi.unstubAllGlobals();
  ChannelWorker.readyFails = false;
});

describe('learner worker', () => {
  it('moves every buffer of a fit job to the worker, the rows’ ranges included', async () => {
    const lm = await analyseForLearning(new Uint8Array(fs.readFileSync(modelPath)), ortNode, {
      input: { mean: [0.286], std: [0.353] },
    });
    const cuts = reservoirCuts(lm.requests);
    const reservoir = new FeatureReservoir(cuts, 10, { maxSamples: 100, maxBytes: 1e8, seed: 1 });
    const rng = createRng(3);
    const rows = 20;
    const maps = cuts.map((c) =>
      Float32Array.from({ length: rows * c.channels * c.height * c.width }, () => rng.next()),
    );
    reservoir.addFromMaps(
      maps,
      Float32Array.from({ length: rows * 10 }, () => rng.next()),
      rows,
    );
    const features = await reservoir.snapshot(() => Promise.resolve());
    const job: FitJob = {
      analysis: lm.analysis,
      io: lm.io,
      requests: lm.requests,
      options: resolveLearnOptions({}),
      features,
    };
    const sent = features.cuts.map((c) => (c.x instanceof Float32Array ? undefined : c.x));

    vi.stubGlobal('Worker', ChannelWorker);
    const runner = learnerWorkerRunner('learner.js')!;
    try {
      expect(await runner.ready).toBe(true);
      await runner.run(job);
    } finally {
      runner.close();
    }
    // the worker got every row and range …
    expect(received).toEqual([cuts.map((c) => ({ data: rows * c.dim, ranges: 2 * rows * 4 }))]);
    // … and this side kept none: moved, not copied
    expect(features.teacher.byteLength).toBe(0);
    for (const x of sent) expect([x?.data.byteLength, x?.rowRange?.byteLength]).toEqual([0, 0]);
    // the reservoir itself is untouched (the snapshot owned its arrays)
    expect(reservoir.size).toBe(rows);
    expect((await reservoir.snapshot(() => Promise.resolve())).cuts[0]!.x).toMatchObject({ n: rows });
  });

  it('says when it broke (its fits then run in the thread: learning().fitRanIn is "thread")', async () => {
    vi.stubGlobal('Worker', ChannelWorker);
    const runner = learnerWorkerRunner('learner.js')!;
    try {
      expect(await runner.ready).toBe(true);
      expect(runner.broken).toBe(false);
      for (const listener of ChannelWorker.onError.splice(0)) listener({ message: 'crashed' });
      expect(runner.broken).toBe(true);
    } finally {
      runner.close();
    }
  });

  it('a worker that cannot load the fit code is broken: its fits run in the thread, not in it', async () => {
    vi.stubGlobal('Worker', ChannelWorker);
    ChannelWorker.readyFails = true;
    const sent = received.length;
    const runner = learnerWorkerRunner('learner.js')!;
    try {
      expect(await runner.ready).toBe(false);
      expect(runner.broken).toBe(true);
      // the fit runs here (fitLearned on a job without features fails here), never reaching the worker
      const job = { features: { teacher: new Float32Array(0), cuts: [] } } as unknown as FitJob;
      await expect(runner.run(job)).rejects.toThrow();
      expect(received.length).toBe(sent);
    } finally {
      runner.close();
    }
  });
});

describe('the learner worker’s type', () => {
  /** Starts a runner on a Worker stub and returns the options it was started with. */
  function started(...args: Parameters<typeof learnerWorkerRunner>): [string, WorkerOptions | undefined] {
    const asked: [string, WorkerOptions | undefined][] = [];
    vi.stubGlobal(
      'Worker',
      class {
        constructor(u: string, o?: WorkerOptions) {
          asked.push([u, o]);
        }
        addEventListener() {}
        postMessage() {}
        terminate() {}
      },
    );
    learnerWorkerRunner(...args)?.ready?.catch(() => {});
    return asked[0]!;
  }

  it('is the one of the worker that starts it: classic in a classic worker (webpack’s: importScripts() works), else a module', () => {
    // a classic worker: importScripts() with no arguments does nothing
    vi.stubGlobal('importScripts', () => {});
    expect(started('w.js')).toEqual(['w.js', { name: LEARNER_NAME }]);
    // a module worker: importScripts() throws a TypeError
    vi.stubGlobal('importScripts', () => {
      throw new TypeError('Module scripts do not support importScripts().');
    });
    expect(started('w.js')).toEqual(['w.js', { type: 'module', name: LEARNER_NAME }]);
    // no importScripts (not in a worker): a module
    vi.unstubAllGlobals();
    expect(started('w.js')).toEqual(['w.js', { type: 'module', name: LEARNER_NAME }]);
    expect(started('w.js', false)).toEqual(['w.js', { name: LEARNER_NAME }]);
  });
});

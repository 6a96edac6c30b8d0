// The shared-memory lane of classify() (src/shared-lane.ts; load option `sharedMemory`): its request and answer encoding
// round-trips exactly; over the real worker API on the tiny bundle (onnxruntime-node; Node has SharedArrayBuffer and
// Atomics.waitAsync) calls through the lane give what calls by message give, post no classify message while the lane
// answers, and fall back to the port where they must (overlapping calls, a new runtime state, an error); a client that
// fails or is disposed closes the lane, and a call waiting in it settles (TIMEOUT, DISPOSED), never hangs.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { WorkerClient } from '../src/page/worker-client.js';
import type { ClassifyRequest, WireResult, WorkerApi } from '../src/protocol.js';
import { serveClassify, serveLane } from '../src/runtime/api.js';
import {
  LANE,
  LaneView,
  createLane,
  fitsRequest,
  laneSupported,
  readAnswer,
  readRequest,
  writeAnswer,
  writeRequest,
} from '../src/shared-lane.js';
import type { Classifier, ClassifyResult } from '../src/types.js';
import { closeFakeWorkers, fakeWorkerApi, stubWorkers } from './fixtures/page-fakes.js';
import { selfxitRejection } from './fixtures/rejection.js';
import { loadTinyClassifier } from './fixtures/tiny-classifier.js';
import { serveTinyBundles, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
beforeAll(async () => void (tiny = await serveTinyBundles(() => {})));
afterAll(() => tiny.close());
afterEach(() => {
  closeFakeWorkers();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe('the encoding', () => {
  it('a request round-trips: flags, thresholds, tensors and pixels (copied out, not views of the lane)', () => {
    const view = new LaneView(createLane(256, 4096));
    const tensor = new Float32Array([1.5, -2, 3.25, Number.MAX_VALUE / 2 ** 900]);
    const big = new Uint8ClampedArray(64).map((_, i) => i * 3);
    const pixels = big.subarray(5, 5 + 2 * 3 * 4 - 1); // odd length, not at its buffer's start
    const request: ClassifyRequest = {
      inputs: [
        { kind: 'pixels', width: 3, height: 2, data: pixels },
        { kind: 'tensor', data: tensor },
      ],
      thresholds: [0.9, 0.25, 1],
      probabilities: true,
      profile: true,
    };
    expect(fitsRequest(view, request)).toBe(true);
    writeRequest(view, 41, request);
    const { id, request: back } = readRequest(view);
    expect(id).toBe(41);
    expect(back).toEqual(request);
    expect(back.inputs[0]!.kind === 'pixels' && back.inputs[0]!.data.buffer).not.toBe(view.buffer);
    for (const flags of [
      { probabilities: false },
      { probabilities: true },
      { probabilities: false, profile: true },
    ] as const) {
      writeRequest(view, 2, { ...flags, inputs: [{ kind: 'tensor', data: tensor }], thresholds: [] });
      expect(readRequest(view).request).toEqual({
        ...flags,
        inputs: [{ kind: 'tensor', data: tensor }],
        thresholds: [],
      });
    }
  });

  it('what the lane cannot carry: bitmaps, blobs, no inputs, inputs over its bytes, a header over its words', () => {
    const view = new LaneView(createLane(13, 64));
    const tensor = (n: number): ClassifyRequest['inputs'][number] => ({ kind: 'tensor', data: new Float32Array(n) });
    const req = (inputs: ClassifyRequest['inputs'], thresholds: number[] = []): ClassifyRequest => ({
      inputs,
      thresholds,
      probabilities: false,
    });
    expect(fitsRequest(view, req([tensor(16)]))).toBe(true);
    expect(fitsRequest(view, req([tensor(17)]))).toBe(false);
    expect(fitsRequest(view, req([tensor(8), tensor(8)]))).toBe(true);
    expect(fitsRequest(view, req([]))).toBe(false);
    expect(fitsRequest(view, req([{ kind: 'blob', blob: new Blob([]) }]))).toBe(false);
    expect(fitsRequest(view, req([{ kind: 'bitmap', bitmap: {} as ImageBitmap }]))).toBe(false);
    expect(fitsRequest(view, req([tensor(1)], [1, 1, 1, 1, 1]))).toBe(true); // 3 + 5 + 5 = 13 words
    expect(fitsRequest(view, req([tensor(1)], [1, 1, 1, 1, 1, 1]))).toBe(false);
    expect(() => new LaneView(new SharedArrayBuffer(64))).toThrow(RangeError);
  });

  it('an answer round-trips: results, stages, probabilities as float32, one shared profile; too large: false', () => {
    const view = new LaneView(createLane(64, 0));
    const profile = {
      recvAt: 1e12 + 0.125,
      replyAt: 1e12 + 3.5,
      preprocessMs: 0.1,
      runMs: 2.2,
      runs: 1,
      queueMs: 0.01,
      readbackMs: 0.02,
      decisionMs: 0.03,
      replyMs: 0.04,
    };
    const results: WireResult[] = [
      {
        index: 3,
        confidence: Math.fround(0.987654321),
        exit: 1,
        stages: [0.5, 1.25],
        totalMs: 1.75,
        probabilities: Float32Array.from([0.1, 0.2, 0.7]),
        profile,
      },
      { index: 0, confidence: 0.5, exit: -1, stages: [1, 2, 3], totalMs: 1.75, profile },
    ];
    expect(writeAnswer(view, results)).toBe(true);
    const back = readAnswer(view);
    expect(back).toEqual(results);
    expect(back[0]!.probabilities).toBeInstanceOf(Float32Array);
    expect(back[0]!.profile).toBe(back[1]!.profile);
    // a profile without a lap it did not take: the key stays absent
    const { readbackMs: _r, ...partial } = profile;
    expect(writeAnswer(view, [{ ...results[1]!, profile: partial as typeof profile }])).toBe(true);
    expect(Object.keys(readAnswer(view)[0]!.profile!)).not.toContain('readbackMs');
    expect(writeAnswer(view, [{ ...results[0]!, probabilities: new Float32Array(64) }])).toBe(false);
    expect(writeAnswer(view, [])).toBe(true);
    expect(readAnswer(view)).toEqual([]);
  });
});

/** The tiny bundle in a stubbed worker serving the real worker API; `sharedMemory` as given. */
const loadTiny = (sharedMemory: boolean): Promise<Classifier> => loadTinyClassifier(tiny, { sharedMemory });

/** A result without its timings, confidence and probabilities (compared by {@link expectSame}). */
function decision(r: ClassifyResult): unknown {
  const { timings, probabilities, confidence: _c, ...rest } = r;
  return { ...rest, stages: timings.stages.length, probabilities: probabilities?.length };
}

/**
 * The same decisions, and confidences and probabilities within 1e-6: two classifiers may run an input on different
 * engines (the compiled model is made in the background), which differ in the last float bits.
 */
function expectSame(got: readonly ClassifyResult[], want: readonly ClassifyResult[]): void {
  expect(got.map(decision)).toEqual(want.map(decision));
  got.forEach((r, i) => {
    expect(Math.abs(r.confidence - want[i]!.confidence)).toBeLessThan(1e-6);
    r.probabilities?.forEach((p, k) => expect(Math.abs(p - want[i]!.probabilities![k]!)).toBeLessThan(1e-6));
  });
}

/** Counts classify() requests posted on a MessagePort (the classify port's `{ id, request }` messages). */
function countPortCalls(): { readonly count: () => number } {
  let n = 0;
  const post = MessagePort.prototype.postMessage;
  vi.spyOn(MessagePort.prototype, 'postMessage').mockImplementation(function (
    this: MessagePort,
    message: unknown,
    ...rest: unknown[]
  ) {
    if ((message as { request?: unknown } | null)?.request !== undefined) n++;
    return (post as (m: unknown, ...r: unknown[]) => void).call(this, message, ...rest);
  });
  return { count: () => n };
}

describe('classify() through the lane', () => {
  it('gives what the message path gives (single calls, probabilities, batches, profiles) without a classify message', async () => {
    const viaMessage = await loadTiny(false);
    expect(viaMessage.info().transport).toBe('message');
    const want: ClassifyResult[] = [];
    for (let i = 0; i < 64; i++) want.push(await viaMessage.classify(tiny.inputs[i]!, { probabilities: i % 2 === 0 }));
    const wantBatch = await viaMessage.classifyBatch(tiny.inputs.slice(0, 24));
    await viaMessage.dispose();

    const clf = await loadTiny(true);
    expect(clf.info().transport).toBe('shared-memory');
    for (let i = 0; i < 2; i++) await clf.classify(tiny.inputs[63 - i]!); // the first calls open sessions (new states)
    const posted = countPortCalls();
    const got: ClassifyResult[] = [];
    for (let i = 0; i < 64; i++) got.push(await clf.classify(tiny.inputs[i]!, { probabilities: i % 2 === 0 }));
    expectSame(got, want);
    expect(got.map((r) => r.index)).toEqual(tiny.expected.slice(0, 64).map((e) => e.index));
    expectSame(await clf.classifyBatch(tiny.inputs.slice(0, 24)), wantBatch);
    const profiled = await clf.classify(tiny.inputs[0]!, { profile: true });
    expect(Object.keys(profiled.timings)).toEqual(['totalMs', 'stages', 'profile']);
    expect(profiled.timings.profile!.runs).toBeGreaterThan(0);
    expect(profiled.timings.profile!.replyAt).toBeGreaterThanOrEqual(profiled.timings.profile!.recvAt);
    // every call of this stretch went through the lane unless it changed the worker's state (answered on the port)
    expect(posted.count()).toBe(0);
    expect(clf.info().transport).toBe('shared-memory');
    await clf.dispose();
    expect(clf.info().transport).toBe('message');
  }, 30_000);

  it('overlapping calls: one in the lane, the others by message; each its own right result', async () => {
    const clf = await loadTiny(true);
    await clf.classify(tiny.inputs[63]!);
    const posted = countPortCalls();
    const ids = [0, 1, 2, 3, 0, 0, 9, 17];
    const many = await Promise.all(ids.map((i) => clf.classify(tiny.inputs[i]!)));
    expect(many.map((r) => [r.index, r.exit.index])).toEqual(
      ids.map((i) => [tiny.expected[i]!.index, tiny.expected[i]!.exit]),
    );
    expect(posted.count()).toBeGreaterThan(0);
    expect(posted.count()).toBeLessThan(ids.length);
    await clf.dispose();
  }, 30_000);

  it("a worker's error (a wrong-sized input) rejects with its code through the lane; the lane serves the next call", async () => {
    const clf = await loadTiny(true);
    const e = await selfxitRejection(clf.classify(new Float32Array(5)));
    expect(e.code).toBe('INVALID_INPUT');
    const r = await clf.classify(tiny.inputs[4]!);
    expect([r.index, r.exit.index]).toEqual([tiny.expected[4]!.index, tiny.expected[4]!.exit]);
    expect(clf.info().transport).toBe('shared-memory');
    await clf.dispose();
  }, 30_000);
});

describe('a lane whose client ends', () => {
  /** A worker whose classify() never answers, serving the lane too; the lane it was handed. */
  function hangingWorker(): { api: WorkerApi; lane: () => SharedArrayBuffer | undefined } {
    const base = fakeWorkerApi(true);
    let handed: SharedArrayBuffer | undefined;
    const api: WorkerApi = {
      ...base,
      async connect(this: WorkerApi, port: MessagePort, lane?: SharedArrayBuffer) {
        handed = lane;
        const classify = (r: ClassifyRequest) => this.classify(r);
        serveClassify(port, classify, () => this.state());
        return serveLane(lane, port, classify, () => this.state());
      },
    };
    return { api, lane: () => handed };
  }

  it('a call waiting in the lane times out (TIMEOUT), the next is refused (WORKER_DIED), the lane is closed', async () => {
    const { api, lane } = hangingWorker();
    stubWorkers([api]);
    const client = WorkerClient.start(new URL('https://x.test/selfxit.worker.js'), {
      heartbeatMs: 0,
      callTimeoutMs: 150,
    });
    await client.init({} as never);
    expect(client.sharedMemory).toBe(true);
    const request: ClassifyRequest = {
      inputs: [{ kind: 'tensor', data: new Float32Array(4) }],
      thresholds: [],
      probabilities: false,
    };
    const pending = client.classify(request, []);
    await new Promise((r) => setTimeout(r, 20));
    expect(new LaneView(lane()!).state).toBe(LANE.REQUEST);
    expect((await selfxitRejection(pending)).code).toBe('TIMEOUT');
    expect(new LaneView(lane()!).state).toBe(LANE.CLOSED);
    expect(client.sharedMemory).toBe(false);
    expect((await selfxitRejection(client.classify(request, []))).code).toBe('WORKER_DIED');
  });

  it('dispose() settles a call waiting in the lane (DISPOSED) and closes it', async () => {
    const { api, lane } = hangingWorker();
    stubWorkers([api]);
    const client = WorkerClient.start(new URL('https://x.test/selfxit.worker.js'));
    await client.init({} as never);
    const pending = client.classify(
      { inputs: [{ kind: 'tensor', data: new Float32Array(4) }], thresholds: [], probabilities: false },
      [],
    );
    await new Promise((r) => setTimeout(r, 20));
    const settled = selfxitRejection(pending);
    await client.dispose();
    expect((await settled).code).toBe('DISPOSED');
    expect(new LaneView(lane()!).state).toBe(LANE.CLOSED);
  });

  it('a worker without the lane (an older one, or no Atomics.waitAsync): every call by message', async () => {
    stubWorkers([fakeWorkerApi()]);
    const client = WorkerClient.start(new URL('https://x.test/selfxit.worker.js'));
    await client.init({} as never);
    expect(client.sharedMemory).toBe(false);
    const lane = createLane();
    expect(
      serveLane(
        new ArrayBuffer(8),
        {} as MessagePort,
        async () => ({ results: [] }),
        async () => undefined,
      ),
    ).toBe(false);
    vi.stubGlobal('Atomics', { ...Atomics, waitAsync: undefined });
    expect(
      serveLane(
        lane,
        {} as MessagePort,
        async () => ({ results: [] }),
        async () => undefined,
      ),
    ).toBe(false);
  });

  it('no lane where the context is not cross-origin isolated or a SharedArrayBuffer cannot be sent', () => {
    expect(laneSupported()).toBe(true); // Node: SharedArrayBuffer, Atomics.waitAsync, no isolation flag
    vi.stubGlobal('crossOriginIsolated', false);
    expect(laneSupported()).toBe(false);
    vi.unstubAllGlobals();
    vi.stubGlobal('structuredClone', () => {
      throw new DOMException('SharedArrayBuffer transfer requires self.crossOriginIsolated', 'DataCloneError');
    });
    expect(laneSupported()).toBe(false);
    vi.unstubAllGlobals();
    vi.stubGlobal('SharedArrayBuffer', undefined);
    expect(laneSupported()).toBe(false);
    vi.unstubAllGlobals();
    // Chromium before 91: Atomics.waitAsync exists but may never wake (Chromium issue 1167541)
    const ua = (v: string): string =>
      `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) ${v} Safari/537.36`;
    vi.stubGlobal('navigator', { userAgent: ua('Chrome/90.0.4430.93') });
    expect(laneSupported()).toBe(false);
    vi.stubGlobal('navigator', { userAgent: ua('Chrome/91.0.4472.77') });
    expect(laneSupported()).toBe(true);
    vi.stubGlobal('navigator', { userAgent: ua('HeadlessChrome/131.0.6778.85') });
    expect(laneSupported()).toBe(true);
  });
});

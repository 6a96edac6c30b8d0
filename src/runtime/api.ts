// The worker's API object (exposed through comlink by worker.ts): one bundle per worker; a failed call throws a
// SelfxitError, which protocol.ts's transfer handler carries to the page with its code and details. classify() calls
// arrive on their own port (serveClassify: one plain message each way) or, where the page is cross-origin isolated, in
// shared memory (serveLane, src/shared-lane.ts). ping() and holdLock() are the page's liveness
// checks (worker-client.ts); ping() also tells the page whether the worker is making progress (its inactivity clocks).
import { transfer } from 'comlink';
import { SelfxitError, isSelfxitError, toErrorPayload } from '../errors.js';
import { LANE, LaneView, laneSupported, readRequest, writeAnswer } from '../shared-lane.js';
import type {
  ClassifyAnswer,
  ClassifyCall,
  ClassifyReply,
  ClassifyRequest,
  InitReply,
  InitRequest,
  PlanReply,
  PingReply,
  PlanRequest,
  ProgressInfo,
  RuntimeState,
  WireResult,
  WorkerApi,
} from '../protocol.js';
import type { LearnDeps, LearnRuntime } from './learn-runtime.js';
import { learnCode } from './learn-worker.js';
import { closeBitmaps } from './preprocess.js';
import { BundleRuntime } from './runtime.js';
import { sameItems } from './same-items.js';

/** A progress callback that never throws (a comlink proxy returns a promise that rejects when the page is gone). */
function bestEffort(onProgress: ((p: ProgressInfo) => void) | undefined): (p: ProgressInfo) => void {
  return (p) => {
    if (onProgress) void Promise.resolve(onProgress(p)).catch(() => {});
  };
}

/** A thrown value's message (String() of a value that is not an Error). */
const messageOf = (e: unknown): string => (e as Error | undefined)?.message ?? String(e);

/** The results' probability buffers: moved to the page, not copied. */
function resultTransfers(results: readonly WireResult[]): Transferable[] {
  const buffers: Transferable[] = [];
  for (const r of results) if (r.probabilities) buffers.push(r.probabilities.buffer as ArrayBuffer);
  return buffers;
}

/**
 * Whether state `a` equals `b` but for `b`'s `seq` (a learning state always counts as changed: the page follows every
 * one).
 */
function sameState(a: RuntimeState, b: RuntimeState): boolean {
  if (a.learning || b.learning) return false;
  const keys = Object.keys(a) as (keyof RuntimeState)[];
  if (keys.length !== Object.keys(b).length - (b.seq === undefined ? 0 : 1)) return false;
  for (const k of keys) {
    const x = a[k];
    const y = b[k];
    if (x === y) continue;
    if (!Array.isArray(x) || !Array.isArray(y) || !sameItems(x, y)) return false;
  }
  return true;
}

/** What a classify() call answers on the port: its results, the worker's state when it changed, input buffers to move back. */
export interface PortReply {
  readonly results: readonly WireResult[];
  readonly state?: RuntimeState;
  readonly spare?: readonly ArrayBuffer[];
}

/**
 * The request's input buffers (tensors, pixels) once the call is done with them, each once (not empty, not detached):
 * moved back to the page, which copies its next inputs into them (page/buffer-pool.ts). Only for a runtime that keeps
 * no input past the call (BundleRuntime: its own input buffer is never the request's; learning keeps some to audit).
 */
export function spareBuffers(request: ClassifyRequest): ArrayBuffer[] | undefined {
  let spare: ArrayBuffer[] | undefined;
  for (const w of request.inputs) {
    if (w.kind !== 'tensor' && w.kind !== 'pixels') continue;
    const b = w.data.buffer;
    if (!(b instanceof ArrayBuffer) || b.byteLength === 0 || spare?.includes(b)) continue;
    (spare ??= []).push(b);
  }
  return spare;
}

/** How a classify() call is answered on the classify port: its reply or its error, by id. */
interface PortAnswers {
  /** Posts the results (probability buffers moved; `spare` input buffers moved back when they can be). */
  reply(id: number, reply: PortReply): void;
  /** Posts the error (code and details kept) with the worker's `state()` after it; INTERNAL when it cannot be sent. */
  fail(id: number, e: unknown): void;
}

function portAnswers(port: MessagePort, state: () => Promise<RuntimeState | undefined>): PortAnswers {
  const fail = (id: number, e: unknown): void => {
    const answer = (s: RuntimeState | undefined): void => {
      const error = toErrorPayload(e);
      try {
        port.postMessage({ id, error, state: s } satisfies ClassifyAnswer);
      } catch (why) {
        // Its details cannot be cloned: the code and message still answer the call (INTERNAL: a bug).
        const message = `${error.code}: ${error.message} (its details could not be sent: ${messageOf(why)})`;
        port.postMessage({ id, error: { code: 'INTERNAL', message }, state: s } satisfies ClassifyAnswer);
      }
    };
    state().then(answer, () => answer(undefined));
  };
  const reply = (id: number, { results, state: s, spare }: PortReply): void => {
    const answer: ClassifyAnswer = s ? { id, results, state: s } : { id, results };
    try {
      if (spare) {
        try {
          const transfers = resultTransfers(results);
          for (const b of spare) transfers.push(b);
          port.postMessage(s ? { id, results, state: s, spare } : { id, results, spare }, transfers);
          return;
        } catch {
          // a spare that cannot be moved: the reply goes without them
        }
      }
      port.postMessage(answer, resultTransfers(results));
    } catch (e) {
      fail(id, new SelfxitError('INTERNAL', `the classify reply could not be sent: ${messageOf(e)}`));
    }
  };
  return { reply, fail };
}

/**
 * Answers the {@link ClassifyCall}s arriving on `port` with `classify()`: its results (probability buffers moved), or the
 * error (as a payload, code and details kept) with the worker's `state()` after it. A reply that cannot be posted (an
 * error whose details cannot be cloned included) is answered as INTERNAL.
 */
export function serveClassify(
  port: MessagePort,
  classify: (request: ClassifyRequest) => Promise<PortReply>,
  state: () => Promise<RuntimeState | undefined>,
): void {
  const answers = portAnswers(port, state);
  // A request that cannot be deserialised has no id to answer: the page's deadline (callTimeoutMs) settles its call.
  port.onmessageerror = () =>
    console.error('selfxit worker: a classify() request could not be deserialised; it stays unanswered');
  port.onmessage = (ev: MessageEvent<ClassifyCall>) => {
    const { id, request } = ev.data;
    classify(request).then(
      (reply) => answers.reply(id, reply),
      (e: unknown) => answers.fail(id, e),
    );
  };
}

/**
 * Serves the page's shared-memory lane (src/shared-lane.ts) beside `port`, until the page closes it: each request is
 * run with `classify()`; plain results that fit are answered in the lane, anything else (a new state, an error, results
 * too large) on the port by the call's id, the lane then set ON_PORT. False (not served) where this worker has no
 * Atomics.waitAsync or `lane` is not a lane.
 */
export function serveLane(
  lane: unknown,
  port: MessagePort,
  classify: (request: ClassifyRequest) => Promise<PortReply>,
  state: () => Promise<RuntimeState | undefined>,
): boolean {
  if (typeof SharedArrayBuffer !== 'function' || !(lane instanceof SharedArrayBuffer) || !laneSupported()) return false;
  let view: LaneView;
  try {
    view = new LaneView(lane);
  } catch {
    return false;
  }
  const answers = portAnswers(port, state);
  const serve = async (): Promise<void> => {
    for (;;) {
      if ((await view.until([LANE.REQUEST, LANE.CLOSED])) === LANE.CLOSED) return;
      let id = view.callId;
      let reply: PortReply;
      try {
        const call = readRequest(view);
        id = call.id;
        reply = await classify(call.request);
      } catch (e) {
        answers.fail(id, e);
        if (!view.swap(LANE.REQUEST, LANE.ON_PORT)) return;
        continue;
      }
      if (!reply.state && writeAnswer(view, reply.results)) {
        if (!view.swap(LANE.REQUEST, LANE.ANSWER)) return;
        continue;
      }
      const { spare: _spare, ...onPort } = reply; // the lane's inputs were the worker's own copies
      answers.reply(id, onPort);
      if (!view.swap(LANE.REQUEST, LANE.ON_PORT)) return;
    }
  };
  void serve().catch((e: unknown) => console.error('selfxit worker: the shared-memory lane stopped:', e));
  return true;
}

/** Creates the API one worker serves: one bundle per worker, opened by init(). */
export function createWorkerApi(deps: LearnDeps = {}): WorkerApi {
  let runtime: BundleRuntime | LearnRuntime | undefined;
  let opening = false;
  let disposed = false;
  /** The state the page holds: the last one a reply carried (classify answers leave out an unchanged one). */
  let pageState: RuntimeState | undefined;
  /** The runtime's snapshot `pageState` was made from (a runtime returns the same object while its state holds). */
  let pageSource: RuntimeState | undefined;
  let seq = 0;
  /** Progress reports made so far (learning's aside): the page's inactivity clocks restart while it grows (ping()). */
  let activity = 0;
  /** `onProgress` as the runtime calls it: best effort, each report counted as activity. */
  const counted = (onProgress: ((p: ProgressInfo) => void) | undefined): ((p: ProgressInfo) => void) => {
    const report = bestEffort(onProgress);
    return (p) => {
      if (p.status !== 'learn') activity++;
      report(p);
    };
  };
  const reported = (s: RuntimeState): RuntimeState => {
    pageSource = s;
    return (pageState = { ...s, seq: ++seq });
  };

  function current(): BundleRuntime | LearnRuntime {
    if (disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    if (!runtime) throw new SelfxitError('INTERNAL', 'init() has not completed');
    return runtime;
  }

  /**
   * One classify() call on the runtime. When it fails (also before it started: DISPOSED), the request's ImageBitmaps
   * are closed: those it did not reach would otherwise stay open until garbage collection.
   */
  async function run(
    request: ClassifyRequest,
  ): Promise<{ rt: BundleRuntime | LearnRuntime; results: readonly WireResult[] }> {
    try {
      const rt = current();
      return { rt, results: await rt.classify(request) };
    } catch (e) {
      closeBitmaps(request.inputs);
      throw e;
    }
  }

  const api: WorkerApi = {
    async init(request: InitRequest, onProgress?: (p: ProgressInfo) => void): Promise<InitReply> {
      if (runtime || opening) throw new SelfxitError('INTERNAL', 'init() called twice on one worker');
      opening = true;
      const progress = counted(onProgress);
      const open = (req: InitRequest): Promise<BundleRuntime | LearnRuntime> =>
        req.learn
          ? learnCode().then((m) => m.LearnRuntime.open(req, progress, deps)) // a chunk loaded on first use
          : BundleRuntime.open(req, progress, deps);
      try {
        runtime = await open(request);
      } catch (e) {
        // A cached manifest whose bundle was replaced on the server (marked outdated, and avoided by its hash should
        // the mark not have landed): open the new version, the same way (a learning load learns from it: its
        // backbone, or segment 0 as its exits open, was the mismatch).
        if (!isSelfxitError(e, 'INTEGRITY_ERROR') || e.details?.bundleChanged !== true) throw e;
        const avoid = e.details.manifestHash;
        runtime = await open(typeof avoid === 'string' ? { ...request, avoidManifestHash: avoid } : request);
      }
      const plan =
        request.usePlan === true && runtime instanceof BundleRuntime ? await runtime.cachedPlan() : undefined;
      return {
        manifest: runtime.manifest,
        manifestHash: runtime.manifestHash,
        state: reported(runtime.state()),
        ...(plan ? { plan } : {}),
      };
    },

    async classify(request: ClassifyRequest): Promise<ClassifyReply> {
      const { rt, results } = await run(request);
      const reply: ClassifyReply = { results, state: reported(rt.state()) };
      const buffers = resultTransfers(results);
      return buffers.length > 0 ? transfer(reply, buffers) : reply;
    },

    async connect(port: MessagePort, lane?: SharedArrayBuffer): Promise<boolean> {
      // The port's replies carry the state only when it differs from the one the page holds.
      const classify = async (request: ClassifyRequest): Promise<PortReply> => {
        const { rt, results } = await run(request);
        const state = rt.state();
        const same = pageState && ((state === pageSource && !state.learning) || sameState(state, pageState));
        const spare = rt instanceof BundleRuntime ? spareBuffers(request) : undefined;
        if (same) return spare ? { results, spare } : { results };
        return spare ? { results, state: reported(state), spare } : { results, state: reported(state) };
      };
      serveClassify(port, classify, api.state);
      return lane !== undefined && serveLane(lane, port, classify, api.state);
    },

    async plan(request: PlanRequest, onProgress?: (p: ProgressInfo) => void): Promise<PlanReply> {
      const rt = current();
      if (!(rt instanceof BundleRuntime))
        throw new SelfxitError(
          'LEARNING_UNAVAILABLE',
          'plan() is not available while learning: the learner chooses the exits',
        );
      const plan = await rt.plan(request, counted(onProgress));
      return { plan, state: reported(rt.state()) };
    },

    async resetLearning(): Promise<RuntimeState> {
      const rt = current();
      if (rt instanceof BundleRuntime)
        throw new SelfxitError('LEARNING_UNAVAILABLE', 'resetLearning() needs a classifier loaded with { learn }');
      await rt.resetLearning();
      return reported(rt.state());
    },

    async ping(): Promise<PingReply> {
      return { activity };
    },

    async holdLock(name: string): Promise<boolean> {
      const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
      if (!locks) return false;
      return new Promise<boolean>((granted) => {
        // Held until this worker ends (close(), terminate(), a crash): then the page's request for it is granted.
        void locks.request(name, () => new Promise<never>(() => granted(true))).catch(() => granted(false));
      });
    },

    async state(): Promise<RuntimeState | undefined> {
      return runtime && reported(runtime.state());
    },

    async dispose(): Promise<void> {
      disposed = true;
      await runtime?.dispose();
    },
  };
  return api;
}

// Page side of the worker link: starts the module worker, speaks its comlink API (errors arrive as SelfxitErrors through
// protocol.ts's transfer handler) and, for classify(), a port of its own (one plain message each way); rejects every
// pending call with WORKER_DIED when the worker dies: an error event, a Web Lock the worker holds until it ends, a
// heartbeat while idle, neither an answer nor progress (a download under way: progress events, the heartbeat's activity
// count) for `callTimeoutMs` while calls are pending (TIMEOUT, watched by one timer). Where the page is cross-origin
// isolated, classify() calls go through shared memory instead (src/shared-lane.ts: no message hop either way), one at a
// time; the others, and those the lane cannot carry, by the port.
// Over 400 lines: one class, since every liveness check settles the same table of calls in flight.
import { proxy, releaseProxy, transfer, wrap, type Remote } from 'comlink';
import { SelfxitError, fromErrorPayload } from '../errors.js';
import type { DevicePlan } from '../policy/device-plan.js';
import {
  installErrorTransfer,
  type ClassifyAnswer,
  type ClassifyCall,
  type ClassifyRequest,
  type InitReply,
  type InitRequest,
  type LearningState,
  type PingReply,
  type PlanRequest,
  type ProgressInfo,
  type RuntimeState,
  type WireResult,
  type WorkerApi,
} from '../protocol.js';
import { LANE, LaneView, createLane, fitsRequest, laneSupported, readAnswer, writeRequest } from '../shared-lane.js';
import { BufferPool } from './buffer-pool.js';
import { dropTransfers } from './inputs.js';
import { missingWorkerFile, type MissingFile } from './worker-files.js';
import type { Liveness } from './options.js';
import type { ClassifierTransport } from './transport.js';

/** Liveness checks off (tests that drive a fake worker). */
const NO_LIVENESS: Liveness = { heartbeatMs: 0, callTimeoutMs: 0 };
/**
 * Heartbeat periods a ping sent while no call was in flight may go unanswered before the worker counts as dead or stuck
 * (60 s at the 5 s default; at least {@link MIN_IDLE_MS}): between calls the worker may still run synchronous onnxruntime work a call left (a
 * compiled model made in the background, a learning audit), during which it answers nothing. A worker that ends is
 * seen at once through its Web Lock where those exist.
 */
const IDLE_PING_PERIODS = 12;
/**
 * The least time a ping sent while idle may go unanswered, however short `heartbeatMs` (100 ms at least): a compiled
 * model made in the background or a learning audit blocks the worker for seconds.
 */
export const MIN_IDLE_MS = 10_000;

/** How long a ping sent while idle may go unanswered: {@link IDLE_PING_PERIODS} heartbeats, at least 10 s. */
export const idleLimitMs = (liveness: Liveness): number =>
  liveness.idleMs ?? Math.max(IDLE_PING_PERIODS * liveness.heartbeatMs, MIN_IDLE_MS);
let lockCount = 0;

/**
 * A started worker; where it is on another origin, the blob URL it was started from (to revoke) and the URL that blob
 * loads (for error messages: the bundler's URL of the default worker is known only here).
 */
export interface Started {
  readonly worker: Worker;
  readonly blobUrl?: string;
  readonly crossOrigin?: URL;
  /**
   * The URL the worker is fetched from where only the bundler's rewrite tells it (the default worker on the page's
   * origin, as {@link literalWorkerTarget} recorded it), for the telling apart of a start failure.
   */
  readonly target?: URL;
  /** false: a classic worker (webpack 5's rewrite of the default one), whose script loads with importScripts. */
  readonly module?: boolean;
}

/** The page's origin, where there is one (a page or a worker; not Node). */
const pageOrigin = (): string | undefined => (globalThis as { location?: { origin: string } }).location?.origin;

/**
 * Starts a worker from `url`; when `url` is on another origin, through a same-origin blob that loads it: a module that
 * imports it, or for a classic worker (`module: false`: webpack 5 rewrites the default worker to one whose chunks load
 * with importScripts) a classic script that importScripts it.
 */
export function startAt(url: URL, module = true): Started {
  const origin = pageOrigin();
  if (origin && url.origin !== origin) {
    const source = module ? `import ${JSON.stringify(url.href)};` : `importScripts(${JSON.stringify(url.href)});`;
    const blobUrl = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
    try {
      const options: WorkerOptions = module ? { type: 'module', name: 'selfxit' } : { name: 'selfxit' };
      return { worker: new Worker(blobUrl, options), blobUrl, crossOrigin: url, module };
    } catch (e) {
      URL.revokeObjectURL(blobUrl);
      throw e;
    }
  }
  return { worker: new Worker(url, { type: 'module', name: 'selfxit' }) };
}

/**
 * The default worker. The literal `new Worker(new URL('../runtime/worker.ts', import.meta.url), …)` lets vite (this
 * library's build) and an app's bundler (Vite, webpack 5, reading dist/selfxit.js) emit the worker and rewrite its URL;
 * a bundler knows the pattern only as written, with the global `Worker`.
 */
const literalWorker = (): Worker =>
  new Worker(new URL('../runtime/worker.ts', import.meta.url), { type: 'module', name: 'selfxit' });

/**
 * The URL {@link literalWorker} starts its worker from, as the bundler rewrote it, and whether as a module, without
 * starting one: the global `Worker` is replaced, for that one synchronous call, by a stand-in that records them.
 * Undefined where the global cannot be replaced (frozen globals, e.g. SES) or the call fails.
 */
export function literalWorkerTarget(): { url: URL; module: boolean } | undefined {
  const g = globalThis as { Worker: typeof Worker };
  const native = g.Worker;
  let asked: { url: URL; module: boolean } | undefined;
  const standIn = function (this: unknown, u: string | URL, o?: WorkerOptions) {
    asked = {
      url: new URL(String(u), (globalThis as { location?: { href: string } }).location?.href),
      module: o?.type === 'module',
    };
  } as unknown as typeof Worker;
  try {
    g.Worker = standIn;
  } catch {
    return undefined; // a frozen global: the literal starts the worker as written
  }
  try {
    if (g.Worker === standIn) literalWorker();
  } catch {
    asked = undefined;
  } finally {
    try {
      g.Worker = native;
    } catch {
      // swapped in but cannot be put back: nothing more to do than leave it
    }
  }
  return asked;
}

/** The URL {@link literalWorker} starts its worker from (see {@link literalWorkerTarget}). */
export const literalWorkerUrl = (): URL | undefined => literalWorkerTarget()?.url;

/**
 * A worker URL on another origin cannot be started directly (a script tag or an app whose assets are on a CDN: Chromium
 * throws a SecurityError, the HTML standard fails it later with an error event): it is loaded through a same-origin
 * blob, for `url` and for the default one (whose URL is read, without side effects, before it is started). The
 * default on the page's origin is started by the literal itself.
 */
function startWorker(url: URL | undefined): Started {
  if (typeof Worker === 'undefined')
    throw new SelfxitError('BACKEND_UNAVAILABLE', 'this environment has no Web Workers');
  if (url) return startAt(url);
  const origin = pageOrigin();
  const literal = origin ? literalWorkerTarget() : undefined;
  if (literal && literal.url.origin !== origin) return startAt(literal.url, literal.module);
  return { worker: literalWorker(), ...(literal ? { target: literal.url, module: literal.module } : {}) };
}

/**
 * The URL the default worker would be fetched from, as the bundler's rewrite says (recorded without starting one), for
 * the message of a worker that could not even be constructed. Undefined outside a page or where it cannot be recorded.
 */
const recordedTarget = (): URL | undefined => (pageOrigin() ? literalWorkerTarget()?.url : undefined);

/**
 * The URL a worker started without `workerUrl` is fetched from, when known, for error messages: selfxit.worker.js
 * beside the running module when that is the package's plain dist/selfxit.js or script-tag selfxit.iife.js, served
 * as built (the literal in {@link startWorker} resolves to it there). Undefined when an app's bundler emitted the
 * worker (under a name of its own, from a chunk of another name; a file: URL where it inlined the module's path).
 */
export function builtWorkerUrl(moduleUrl: string): string | undefined {
  let self: URL;
  try {
    self = new URL(moduleUrl);
  } catch {
    return undefined;
  }
  if (self.protocol === 'file:' || !/\/selfxit(\.iife)?\.js$/.test(self.pathname)) return undefined;
  return new URL('selfxit.worker.js', self).href;
}

/** The worker's URL for error messages: `workerUrl`, else {@link builtWorkerUrl} of this module, if known. */
function workerUrlOf(url: URL | undefined): string | undefined {
  return url?.href ?? builtWorkerUrl(import.meta.url);
}

/**
 * Where the worker was started from, in words (the URL only where it is the one really fetched): `url` (workerUrl),
 * else the default one as built, else `recorded` (the bundler's rewrite of the default one), else in general.
 */
function workerWhere(url: URL | undefined, recorded?: string): string {
  const href = workerUrlOf(url);
  if (url) return href!;
  if (href) return `its default URL ${href} (selfxit.worker.js next to selfxit.js)`;
  return recorded
    ? `${recorded} (the worker file your bundler emitted for selfxit)`
    : 'the worker file your bundler emitted for selfxit';
}

/** A call sent and not settled: when it was sent (performance.now()), whether `callTimeoutMs` applies, how to settle it. */
interface InFlight {
  readonly sentAt: number;
  /**
   * Where its `callTimeoutMs` clock runs from: when it was sent or, if later, the latest answer to a call sent before
   * it or the latest progress of the worker.
   */
  from: number;
  readonly deadline: boolean;
  readonly reject: (e: SelfxitError) => void;
  /** A classify() call's: its answer arrives on the classify port. */
  readonly resolve?: (results: readonly WireResult[]) => void;
}

/** WORKER_DIED for an error event of a worker that had started (answered a call). */
function died(ev: ErrorEvent): SelfxitError {
  const what = ev.message ? `: ${ev.message}` : ' (the worker script failed to load or threw)';
  return new SelfxitError('WORKER_DIED', `the selfxit worker died${what}`, {
    filename: ev.filename || undefined,
    lineno: ev.lineno || undefined,
  });
}

/** A thrown value's message (String() of a value that is not an Error, e.g. a string thrown in the worker). */
const messageOf = (e: unknown): string => (e as Error | undefined)?.message ?? String(e);

/** What a call whose request could not be posted rejects with: INVALID_INPUT (DataCloneError), else WORKER_DIED. */
function postError(e: unknown): SelfxitError {
  if ((e as { name?: unknown } | undefined)?.name === 'DataCloneError')
    return new SelfxitError(
      'INVALID_INPUT',
      'the input cannot be sent to the selfxit worker (a closed ImageBitmap, a transferred buffer, or an image from ' +
        `another origin read without CORS: set crossorigin="anonymous" and serve it with CORS headers?): ${(e as Error).message}`,
      {},
      { cause: e },
    );
  return new SelfxitError('WORKER_DIED', `the call to the selfxit worker failed: ${messageOf(e)}`, {}, { cause: e });
}

/** One worker and the calls in flight to it. */
export class WorkerClient implements ClassifierTransport {
  private readonly worker: Worker;
  private readonly api: Remote<WorkerApi>;
  /** classify() calls go here ({@link ClassifyCall}); the worker serves it once {@link WorkerApi.connect} ran. */
  private readonly port: MessagePort;
  private dead: SelfxitError | undefined;
  /** Whether the worker has answered a call: an error before that means it could not start (its script or imports). */
  private answered = false;
  /**
   * Set while a start failure is told apart (which file is missing) before the client fails: aborts that when the
   * client fails first (disposed, a load that timed out or was aborted).
   */
  private diagnosis: AbortController | undefined;
  /**
   * The shared-memory lane, once the worker said it serves it (undefined: every call goes by the port), and whether a
   * call is in it now.
   */
  private lane: LaneView | undefined;
  private laneBusy = false;
  /** Calls sent and not settled (pings aside), by id, oldest first. */
  private readonly inFlight = new Map<number, InFlight>();
  private nextId = 1;
  /** The one timer that watches the calls' deadlines: armed for the oldest call, re-armed when it fires. */
  private watchdog: ReturnType<typeof setTimeout> | undefined;
  /**
   * The blob URL a worker on another origin was started from: revoked once init() settled (the worker and the
   * learner worker it may start from its own `self.location` during init have been created from it by then) or the
   * worker is stopped.
   */
  private blobUrl: string | undefined;
  /** The URL on another origin the worker was started for through a blob, if it was. */
  private readonly crossOrigin: URL | undefined;
  /** Whether the worker is a classic one (webpack 5's rewrite of the default worker): its script is importScripts'd. */
  private readonly classic: boolean;
  /** The worker's URL for the telling apart of a start failure: `workerUrl`, the default's as built or as recorded. */
  private readonly target: string | undefined;
  /** The directive of a Content-Security-Policy violation that refused a worker script while this one was starting. */
  private violation: string | undefined;
  /**
   * Takes a violation as this worker's when it blocked the worker's URL (Chromium reports the whole URL, or its origin
   * only) or, started through a blob, `blob`; for a worker whose URL is not known here, any worker-src one.
   */
  private readonly onViolation = (e: Event): void => {
    const { effectiveDirective: directive = '', blockedURI: uri = '' } = e as Partial<SecurityPolicyViolationEvent>;
    if (this.answered || !/^(?:worker-src|script-src|script-src-elem|child-src|default-src)$/.test(directive)) return;
    const target = this.target;
    const ours = target
      ? uri !== '' &&
        (uri === target ||
          target.startsWith(`${uri}/`) ||
          // the blob a worker on another origin starts from: only a directive that governs workers (not the
          // script-src(-elem) that refused, say, a blob script of the app's at the same moment)
          (this.crossOrigin !== undefined &&
            /^blob(?::|$)/.test(uri) &&
            /^(?:worker-src|child-src|default-src)$/.test(directive)))
      : directive === 'worker-src';
    if (ours) this.violation ??= directive;
  };
  /** Latest state the worker reported (while learning, with the manifest of the exits in force: {@link setState}). */
  state: RuntimeState | undefined;
  /** The input buffers the worker moved back with its answers (ClassifyAnswer `spare`), for the next inputs. */
  readonly spares = new BufferPool();
  /** The newest state as the worker reported it (before the learned manifest's overlay). */
  private reported: RuntimeState | undefined;
  /** While learning: the newest manifest of the exits in force the worker reported (it sends one once per change). */
  private learned: { readonly seq: number | undefined; readonly learning: LearningState } | undefined;
  /** When the unanswered ping was sent (undefined: none outstanding), and whether no call was in flight then. */
  private pingSentAt: number | undefined;
  private pingWhileIdle = false;
  /** The worker's activity count (PingReply) at its last answered ping. */
  private activity = 0;
  /** Told when the worker makes progress (load()'s inactivity deadline: classifier.ts). */
  onActivity: (() => void) | undefined;
  private readonly heartbeat: ReturnType<typeof setInterval> | undefined;
  /**
   * A page restored from the back/forward cache: while it was kept there its worker and timers were frozen, so the
   * clocks of the calls in flight, of load()'s or a re-open's deadline ({@link onActivity}) and of an outstanding ping
   * start again from now (the time frozen is no silence).
   */
  private readonly onPageShow = (e: Event): void => {
    if (!(e as PageTransitionEvent).persisted || this.dead) return;
    if (this.pingSentAt !== undefined) this.pingSentAt = Date.now();
    this.progressed();
  };
  /** Cancels the page's request for the worker's lock. */
  private readonly lockWatch = typeof AbortController === 'undefined' ? undefined : new AbortController();

  private constructor(
    { worker, blobUrl, crossOrigin, target, module }: Started,
    private readonly url: URL | undefined,
    private readonly liveness: Liveness,
    sharedMemory: boolean,
  ) {
    this.worker = worker;
    this.blobUrl = blobUrl;
    this.crossOrigin = crossOrigin;
    this.classic = module === false;
    // `workerUrl`; else the default worker's URL as the bundler rewrote it (recorded), on another origin or this one;
    // else the default's as built (plain dist/)
    this.target = url?.href ?? (crossOrigin ?? target)?.href ?? workerUrlOf(undefined);
    // A Content-Security-Policy that refuses the worker (Chromium: worker-src, for its URL or the blob one) reports it
    // on the page as it refuses it; heard until the worker answers or the client fails.
    (globalThis as Partial<EventTarget>).addEventListener?.('securitypolicyviolation', this.onViolation);
    this.api = wrap<WorkerApi>(worker);
    const channel = new MessageChannel();
    this.port = channel.port1;
    this.port.onmessage = (ev: MessageEvent<ClassifyAnswer>) => this.answer(ev.data);
    // An answer that cannot be deserialised has no id: its call would wait for its deadline (or for ever).
    this.port.onmessageerror = () =>
      this.fail(new SelfxitError('WORKER_DIED', 'an answer of the selfxit worker could not be deserialised'));
    // Sent before init(): the worker serves the port before any classify() can be made. A worker that answers it with an
    // error (a selfxit.worker.js of another version, without the port) fails every call at once rather than letting
    // classify() calls wait for their deadline; one that never answers fails as a dead worker does. Its answer means
    // the worker's script and imports ran: an error event after it is a crash (WORKER_DIED), not missing files.
    const lane = sharedMemory && laneSupported() ? createLane() : undefined;
    this.api.connect(transfer(channel.port2, [channel.port2]), lane).then(
      (served) => {
        this.heard(-1);
        if (served === true && lane && !this.dead) this.lane = new LaneView(lane);
      },
      (e: unknown) => {
        const url = this.target;
        const where = url ? ` at ${url}` : '';
        this.fail(
          new SelfxitError(
            'RUNTIME_FILES_UNAVAILABLE',
            `the selfxit worker${where} does not serve classify() (${messageOf(e)}): serve selfxit.worker.js ` +
              'from the same version as selfxit.js',
            url ? { url } : {},
          ),
        );
      },
    );
    if (liveness.heartbeatMs > 0) {
      this.heartbeat = setInterval(() => this.beat(), liveness.heartbeatMs);
      (this.heartbeat as { unref?: () => void }).unref?.();
    }
    this.watchLock();
    (globalThis as Partial<EventTarget>).addEventListener?.('pageshow', this.onPageShow);
    worker.addEventListener('error', (ev: ErrorEvent) => {
      ev.preventDefault?.();
      if (this.dead) return; // failed already (disposed, a load aborted or timed out): nothing left to tell
      if (!this.answered) {
        // Never answered: its script (or a module it imports) could not be fetched or evaluated: the files, not a crash.
        // The event names no file, so ask the server which one is missing (bounded), then fail with it.
        if (this.diagnosis) return; // a second event while the first is told apart
        this.diagnosis = new AbortController();
        const url = this.target;
        if (!url) return this.fail(this.startError(ev, undefined, undefined));
        void missingWorkerFile(url, 3000, this.diagnosis.signal).then(
          (missing) => this.fail(this.answered ? died(ev) : this.startError(ev, url, missing)), // answered: a crash
          () => this.fail(this.startError(ev, url, undefined)),
        );
        return;
      }
      this.fail(died(ev));
    });
    worker.addEventListener('messageerror', () => {
      this.fail(new SelfxitError('WORKER_DIED', 'a message from the selfxit worker could not be deserialised'));
    });
  }

  /**
   * The heartbeat, every `heartbeatMs`: pings the worker. A ping sent while no call was in flight is answered by a live
   * worker once the work a call left in the background (a compiled model made, a learning audit) lets it: unanswered
   * for {@link idleLimitMs} (12 periods, at least 10 s), the worker is dead (it closed itself, or is stuck; its end is
   * seen at once through the Web Lock where that exists). A ping sent during a call may wait while ORT blocks the worker thread: no
   * deadline then, `callTimeoutMs` watches calls; once the calls are answered it counts as sent when idle.
   */
  private beat(): void {
    if (this.dead) return;
    const now = Date.now();
    if (this.pingSentAt === undefined) {
      this.pingSentAt = now;
      this.pingWhileIdle = this.inFlight.size === 0;
      this.api.ping().then(
        (reply) => {
          this.pingSentAt = undefined;
          const n = (reply as Partial<PingReply> | undefined)?.activity;
          if (typeof n === 'number' && n !== this.activity) {
            this.activity = n;
            this.progressed();
          }
        },
        () => {},
      );
    } else if (this.pingWhileIdle && now - this.pingSentAt > idleLimitMs(this.liveness)) {
      const ms = now - this.pingSentAt;
      this.fail(
        new SelfxitError('WORKER_DIED', `the selfxit worker stopped answering (no reply to a ping in ${ms} ms)`),
      );
    }
  }

  /**
   * Where Web Locks exist: the worker takes a lock and holds it until it ends; the page's request for the same lock is
   * then granted, which means the worker is gone (close(), terminated, crashed), even in the middle of a long call.
   */
  private watchLock(): void {
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
    const watch = this.lockWatch;
    if (!locks || !watch || this.liveness.heartbeatMs === 0) return;
    const name = `selfxit-worker-${Date.now()}-${Math.random().toString(36).slice(2)}-${++lockCount}`;
    this.api.holdLock(name).then(
      (held) => {
        if (!held || this.dead) return;
        locks
          .request(name, { signal: watch.signal }, () =>
            this.fail(new SelfxitError('WORKER_DIED', 'the selfxit worker ended (closed or terminated)')),
          )
          .catch(() => {}); // aborted by fail()
      },
      () => {},
    );
  }

  /**
   * Starts the worker. Throws RUNTIME_FILES_UNAVAILABLE when it cannot even be constructed (e.g. a blocked URL).
   * `sharedMemory`: classify() through the shared-memory lane where this page and the worker can (load option).
   */
  static start(url: URL | undefined, liveness: Liveness = NO_LIVENESS, sharedMemory = true): WorkerClient {
    installErrorTransfer();
    try {
      return WorkerClient.on(startWorker(url), url, liveness, sharedMemory);
    } catch (e) {
      if (e instanceof SelfxitError) throw e;
      // the default worker's URL as the bundler rewrote it, where this module cannot tell it (as built)
      const recorded = url || workerUrlOf(undefined) ? undefined : recordedTarget()?.href;
      const href = workerUrlOf(url) ?? recorded;
      throw new SelfxitError(
        'RUNTIME_FILES_UNAVAILABLE',
        `cannot start the selfxit worker from ${workerWhere(url, recorded)}: ${messageOf(e)}`,
        href ? { url: href } : {},
        { cause: e },
      );
    }
  }

  /**
   * A client of a worker already started ({@link startAt}, or {@link start}'s way) for `url` (the workerUrl option;
   * undefined: the default worker).
   */
  static on(
    started: Started,
    url: URL | undefined,
    liveness: Liveness = NO_LIVENESS,
    sharedMemory = true,
  ): WorkerClient {
    installErrorTransfer();
    return new WorkerClient(started, url, liveness, sharedMemory);
  }

  /** Whether classify() calls go through the shared-memory lane (src/shared-lane.ts) now. */
  get sharedMemory(): boolean {
    return this.lane !== undefined && this.dead === undefined;
  }

  /** Opens the bundle in the worker. */
  async init(request: InitRequest, onProgress?: (p: ProgressInfo) => void): Promise<InitReply> {
    try {
      const reply = await this.call((api) => api.init(request, this.remoteCallback(onProgress)));
      this.setState(reply.state);
      return reply;
    } finally {
      this.releaseBlob();
    }
  }

  private releaseBlob(): void {
    if (this.blobUrl !== undefined) URL.revokeObjectURL(this.blobUrl);
    this.blobUrl = undefined;
  }

  /**
   * The worker made progress (a progress event, or a ping whose activity count grew: a download under way): every call
   * in flight counts its time from now (what it waits for is moving), and so does load()'s deadline.
   */
  private progressed(): void {
    const now = performance.now();
    for (const call of this.inFlight.values()) call.from = Math.max(call.from, now);
    this.onActivity?.();
  }

  /**
   * A page callback as the worker calls it (through a comlink proxy); each report but learning's is progress
   * ({@link progressed}).
   */
  private remoteCallback(onProgress: ((p: ProgressInfo) => void) | undefined): ((p: ProgressInfo) => void) | undefined {
    if (!onProgress) return undefined;
    return proxy((p: ProgressInfo) => {
      if (p.status !== 'learn') this.progressed();
      onProgress(p);
    });
  }

  /**
   * The worker answered call `id` (a reply or its own error): it runs, and the calls sent after that one, which waited
   * behind it, count their time from now. An answer to a later call does not restart an earlier one's clock (a call the
   * worker lost still times out while others are answered).
   */
  private heard(id: number): void {
    if (!this.answered)
      (globalThis as Partial<EventTarget>).removeEventListener?.('securitypolicyviolation', this.onViolation);
    this.answered = true;
    const now = performance.now();
    for (const [k, call] of this.inFlight) if (k > id) call.from = Math.max(call.from, now);
  }

  /**
   * Sends the call on the classify port (inputs moved, not copied); it settles with the answer, or with TIMEOUT /
   * WORKER_DIED / DISPOSED as any other call. An input that cannot be posted rejects at once with INVALID_INPUT. The
   * transfers are the SDK's own (bitmaps made for the inputs, copies): when they are not sent, the bitmaps are closed.
   */
  classify(request: ClassifyRequest, transfers: readonly Transferable[]): Promise<readonly WireResult[]> {
    if (this.dead) {
      dropTransfers(transfers); // the bitmaps made for it will not be sent
      return Promise.reject(this.dead);
    }
    const lane = this.lane;
    if (lane && !this.laneBusy && fitsRequest(lane, request)) return this.classifyShared(lane, request, transfers);
    const id = this.nextId++;
    return new Promise<readonly WireResult[]>((resolve, reject) => {
      try {
        this.port.postMessage({ id, request } satisfies ClassifyCall, transfers as Transferable[]);
      } catch (e) {
        dropTransfers(transfers); // not posted: nothing was moved, the bitmaps made for it are still the page's
        reject(postError(e));
        return;
      }
      const now = performance.now();
      this.track(id, { sentAt: now, from: now, deadline: true, reject, resolve });
    });
  }

  /**
   * classify() through the lane: the request written into it (the inputs copied; their buffers, the SDK's own copies,
   * go back to {@link spares}), the worker woken; the answer read from it, or left to the port when the worker answered
   * there (a new state, an error). The lane is free again before the call settles, so the caller's next call finds it
   * so. Deadlines and failures settle the call as any other (the lane is then closed).
   */
  private classifyShared(
    lane: LaneView,
    request: ClassifyRequest,
    transfers: readonly Transferable[],
  ): Promise<readonly WireResult[]> {
    const id = this.nextId++;
    writeRequest(lane, id, request);
    for (const t of transfers) if (t instanceof ArrayBuffer) this.spares.give(t);
    this.laneBusy = true;
    return new Promise<readonly WireResult[]>((resolve, reject) => {
      const now = performance.now();
      this.track(id, { sentAt: now, from: now, deadline: true, reject, resolve });
      lane.set(LANE.REQUEST);
      void lane.until([LANE.ANSWER, LANE.ON_PORT, LANE.CLOSED]).then(
        (s) => {
          if (s === LANE.CLOSED) return; // the client failed: the call was settled with it
          const results = s === LANE.ANSWER ? readAnswer(lane) : undefined;
          if (!lane.swap(s as typeof LANE.ANSWER | typeof LANE.ON_PORT, LANE.IDLE, false)) return;
          this.laneBusy = false;
          if (!results) return; // answered on the port: answer() settles it
          const call = this.inFlight.get(id);
          if (!call) return;
          this.settled(id);
          this.heard(id);
          call.resolve!(results);
        },
        (e: unknown) => this.fail(new SelfxitError('INTERNAL', `the shared-memory lane failed: ${messageOf(e)}`)),
      );
    });
  }

  /**
   * Settles the classify() call an answer of the classify port is for (one already rejected is left alone); its state
   * is taken either way (the worker counts it as delivered).
   */
  private answer(a: ClassifyAnswer): void {
    this.setState(a.state);
    const call = this.inFlight.get(a.id);
    if (!call) return;
    this.settled(a.id);
    this.heard(a.id);
    if ('error' in a) call.reject(fromErrorPayload(a.error));
    else {
      // before the caller hears of it: its next call may copy its input into one
      if (a.spare) for (const b of a.spare) this.spares.give(b);
      call.resolve!(a.results);
    }
  }

  /**
   * Takes a state the worker reported, unless a newer one (by `seq`) came first on the other channel. While learning,
   * the worker sends the manifest of the exits in force once per change: the newest one any state brought (also an
   * older state, or a failed call's) stays on the states after it, so the classifier can never miss a change (whatever
   * reply it reads, and whenever).
   */
  private setState(s: RuntimeState | undefined): void {
    if (!s) return;
    const l = s.learning;
    const kept = this.learned?.seq;
    if (l?.manifest && (s.seq === undefined || kept === undefined || s.seq > kept))
      this.learned = { seq: s.seq, learning: l };
    const have = this.reported?.seq;
    if (s.seq === undefined || have === undefined || s.seq > have) this.reported = s;
    // the overlay is made again from the state as reported: a manifest arriving late (an older seq than the state in
    // force, newer than the manifest held) replaces the one overlaid before
    const now = this.reported?.learning;
    const m = this.learned?.learning;
    this.state =
      now && m && !now.manifest
        ? { ...this.reported!, learning: { ...now, manifest: m.manifest, manifestHash: m.manifestHash } }
        : this.reported;
  }

  /** Counts a call sent; with a deadline, makes sure the watchdog runs. */
  private track(id: number, call: InFlight): void {
    this.inFlight.set(id, call);
    const ms = this.liveness.callTimeoutMs;
    if (call.deadline && ms > 0 && this.watchdog === undefined) this.armWatchdog(ms);
  }

  private armWatchdog(ms: number): void {
    this.watchdog = setTimeout(() => this.checkDeadlines(), ms);
    (this.watchdog as { unref?: () => void }).unref?.();
  }

  /**
   * The watchdog: a deadline on inactivity. The worker runs calls one at a time, so a call waits for those before it:
   * its clock runs from when it was sent or, if later, from the worker's latest answer to a call sent before it (an
   * answer to a later call does not count: a call the worker lost times out while others are answered) or its latest
   * progress (bytes of a download arriving, a file or segment ready: {@link progressed}; finite, so a lost call still
   * times out once the downloads end). The oldest call with a deadline whose clock passed `callTimeoutMs` (the worker
   * neither answered nor moved on for that long) rejects with TIMEOUT and the worker is stopped (what blocks it would
   * block every later call: other pending and later calls reject with WORKER_DIED); otherwise the watchdog is armed
   * again for that call, if any.
   */
  private checkDeadlines(): void {
    this.watchdog = undefined;
    const ms = this.liveness.callTimeoutMs;
    for (const [id, call] of this.inFlight) {
      if (!call.deadline) continue;
      const left = call.from + ms - performance.now();
      if (left > 0) return this.armWatchdog(left);
      this.inFlight.delete(id);
      const details = { callTimeoutMs: ms };
      const why = `no answer and no progress in ${ms} ms`;
      call.reject(new SelfxitError('TIMEOUT', `a call to the selfxit worker timed out: ${why}`, details));
      return this.fail(new SelfxitError('WORKER_DIED', `the selfxit worker was stopped: a call got ${why}`, details));
    }
  }

  /** Forgets a settled call. A ping the worker left waiting while busy now counts from here, as sent when idle. */
  private settled(id: number): void {
    this.inFlight.delete(id);
    if (this.pingSentAt !== undefined && !this.pingWhileIdle) {
      this.pingSentAt = Date.now();
      this.pingWhileIdle = this.inFlight.size === 0;
    }
  }

  /** Ends the lane: the worker's loop stops, a call waiting in it settles as the client did. */
  private closeLane(): void {
    this.lane?.set(LANE.CLOSED);
    this.lane = undefined;
  }

  /** Rejects every call in flight with `error`. */
  private rejectAll(error: SelfxitError): void {
    const calls = [...this.inFlight.values()];
    this.inFlight.clear();
    for (const call of calls) call.reject(error);
  }

  async resetLearning(): Promise<void> {
    // Optional in WorkerApi (test fakes leave it out); a comlink proxy has every member.
    const reset = (api: Remote<WorkerApi>): Promise<RuntimeState> =>
      (api as unknown as { resetLearning: () => Promise<RuntimeState> }).resetLearning();
    this.setState(await this.call(reset, true));
  }

  async plan(request: PlanRequest, onProgress?: (p: ProgressInfo) => void): Promise<DevicePlan> {
    const reply = await this.call((api) => api.plan(request, this.remoteCallback(onProgress)), true);
    this.setState(reply.state);
    return reply.plan;
  }

  /** Rejects every call not answered yet with DISPOSED, then releases the worker's sessions. */
  async dispose(): Promise<void> {
    this.rejectAll(new SelfxitError('DISPOSED', 'the classifier was disposed before this call was answered'));
    this.closeLane();
    await this.call((api) => api.dispose());
  }

  /**
   * Why a worker that never answered could not start, from what its error event and the server ({@link
   * missingWorkerFile} of `url`; undefined: no answer, or no URL to ask) tell: a missing file or one served as not
   * JavaScript; a Content-Security-Policy seen refusing it (`details.csp`); a script that threw as it started; a
   * module worker on another origin whose server gave the page no answer (no CORS: `details.crossOrigin`), or a
   * classic one (webpack's: importScripts needs no CORS; its publicPath or a CORP header); no answer in time (a slow
   * server: nothing claimed); else in general.
   */
  private startError(
    ev: ErrorEvent,
    url: string | undefined,
    missing: MissingFile | 'served' | 'timeout' | undefined,
  ): SelfxitError {
    const details = { filename: ev.filename || undefined, lineno: ev.lineno || undefined, ...(url ? { url } : {}) };
    const where = workerWhere(this.url, url);
    const why = ev.message ? `: ${ev.message}` : '';
    const fail = (message: string, more: Record<string, unknown> = {}): SelfxitError =>
      new SelfxitError('RUNTIME_FILES_UNAVAILABLE', `the selfxit worker could not be started from ${where}${message}`, {
        ...details,
        ...more,
      });
    if (typeof missing === 'object') {
      const chunk = missing.url !== url;
      const what = missing.why.startsWith('HTTP ') ? 'fetched' : 'loaded';
      const fallback = what === 'loaded' ? ' (the fallback page a server answers for a file it lacks?)' : '';
      const more = {
        url: missing.url,
        ...(chunk ? { workerUrl: url } : {}),
        ...(missing.contentType ? { contentType: missing.contentType } : {}),
      };
      return chunk
        ? fail(
            `: the module it imports, ${missing.url}, could not be ${what} (${missing.why})${fallback}. Serve the ` +
              "package's dist/ files as they are, from one build (the worker and its chunks go together)",
            more,
          )
        : fail(
            `: it could not be ${what} (${missing.why})${fallback}. Serve the package's dist/ files (see the ` +
              "README's bundler section) or set the workerUrl option to where selfxit.worker.js is served",
            more,
          );
    }
    if (this.violation)
      return fail(
        `${why}: a Content-Security-Policy refused it (its ${this.violation}). The policy must allow the worker's ` +
          'URL in worker-src and script-src, and blob: in worker-src where the worker is on another origin than the ' +
          "page: see docs/DEPLOY.md's Content-Security-Policy section",
        { csp: true, directive: this.violation },
      );
    if (missing === 'served' && ev.message)
      return fail(
        `${why}: its script failed as it started, although the server serves it and the modules it imports. Serve ` +
          'selfxit.worker.js and its chunks from the same build as selfxit.js',
      );
    if (missing === 'served')
      return fail(
        ', although the server serves it and the modules it imports as JavaScript: the browser refused it, possibly ' +
          "by a Content-Security-Policy (its worker-src or script-src must allow the worker's URL, and blob: where " +
          "the worker is on another origin than the page: see docs/DEPLOY.md's Content-Security-Policy section), or " +
          'its script failed as it started',
      );
    if (missing === 'timeout')
      return fail(
        `${why}: the page's check of ${url} got no answer in time (a slow or hung server), so which file is missing ` +
          "cannot be told. Serve the package's dist/ files (see the README's bundler section) or set the workerUrl " +
          "option to where selfxit.worker.js is served; a Content-Security-Policy's worker-src may also refuse it " +
          '(see docs/DEPLOY.md)',
      );
    const origin = pageOrigin();
    if (url && this.crossOrigin && origin && new URL(url).origin !== origin)
      return this.classic
        ? fail(
            `${why}: the page got no answer for it from ${new URL(url).origin}. It is a classic worker (webpack's), ` +
              'loaded with importScripts, which needs no CORS: its chunks resolve against output.publicPath (with ' +
              "'auto', against the page's blob: URL, where they are not: set an absolute publicPath), a page that " +
              'is cross-origin isolated (COEP) needs a Cross-Origin-Resource-Policy header on them, or that server ' +
              'is offline (see docs/DEPLOY.md\'s "Another origin" section)',
          )
        : fail(
            `${why}: the page got no answer for it from ${new URL(url).origin}. A worker on another origin than the ` +
              'page is loaded as a module import, so that server must send it, its chunks and ort/ with an ' +
              'Access-Control-Allow-Origin header for the page (see docs/DEPLOY.md\'s "Another origin" section); or ' +
              "it is offline, or the page's Content-Security-Policy connect-src forbids its check",
            { crossOrigin: true },
          );
    return fail(
      `${why}. Serve the package's dist/ files (see the README's bundler section) or set the workerUrl option to ` +
        "where selfxit.worker.js is served; a Content-Security-Policy's worker-src may also refuse it (see " +
        'docs/DEPLOY.md)',
    );
  }

  /** Rejects every pending and future call with `error`, and stops the worker. */
  fail(error: SelfxitError): void {
    if (this.dead) return;
    this.dead = error;
    this.diagnosis?.abort();
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    clearTimeout(this.watchdog);
    this.lockWatch?.abort();
    (globalThis as Partial<EventTarget>).removeEventListener?.('pageshow', this.onPageShow);
    (globalThis as Partial<EventTarget>).removeEventListener?.('securitypolicyviolation', this.onViolation);
    this.releaseBlob();
    this.spares.clear();
    this.closeLane();
    this.rejectAll(error);
    this.port.close();
    try {
      this.api[releaseProxy]();
    } catch {
      // already released
    }
    this.worker.terminate();
  }

  /**
   * Calls the worker; resolves with its reply, or rejects with {@link WorkerClient.callError}'s error. With `deadline`,
   * the call is watched by {@link WorkerClient.checkDeadlines} (TIMEOUT, then the worker is stopped).
   */
  private call<T>(fn: (api: Remote<WorkerApi>) => Promise<T>, deadline = false): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const now = performance.now();
      this.track(id, { sentAt: now, from: now, deadline, reject });
      fn(this.api)
        .then((reply) => {
          this.heard(id);
          return reply;
        })
        .catch(async (e: unknown) => {
          throw await this.callError(e, id);
        })
        .then(resolve, reject)
        .finally(() => this.settled(id));
    });
  }

  /**
   * What a failed call rejects with: the worker's SelfxitError, once the state the failed call left is read (as a reply
   * would have brought it); INVALID_INPUT when the request could not be posted (a closed ImageBitmap, a detached
   * buffer: the worker is fine); WORKER_DIED when the worker is gone or the call could not reach it.
   */
  private async callError(e: unknown, id: number): Promise<SelfxitError> {
    if (this.dead) return this.dead;
    if ((e as { name?: unknown } | undefined)?.name === 'DataCloneError') return postError(e);
    if (e instanceof SelfxitError) this.heard(id);
    else {
      return new SelfxitError(
        'WORKER_DIED',
        `the call to the selfxit worker failed: ${messageOf(e)}`,
        {},
        { cause: e },
      );
    }
    const state = await this.api.state().catch(() => undefined);
    this.setState(state);
    return this.dead ?? e;
  }
}

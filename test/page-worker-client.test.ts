// The page's worker link (WorkerClient) over comlink, with a MessagePort standing in for the Worker: replies update the
// state, a worker's SelfxitError rejects the call as one (code, message, details) after the state the failed call left
// is read, and a dying worker rejects pending and later calls with WORKER_DIED: an error event, a heartbeat unanswered
// while idle, no answer for callTimeoutMs (TIMEOUT, then the worker is stopped); a busy worker is not taken for dead.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DevicePlan } from '../src/policy/device-plan.js';
import { SelfxitError } from '../src/errors.js';
import { literalWorkerUrl, startAt, WorkerClient } from '../src/page/worker-client.js';
import { staticImports } from '../src/page/worker-files.js';
import type { Liveness } from '../src/page/options.js';
import type { ClassifyReply, ClassifyRequest, InitRequest, RuntimeState, WorkerApi } from '../src/protocol.js';
import { closeFakeWorkers, fakeWorkerApi, manifest, state0, state1, stubWorkers } from './fixtures/page-fakes.js';
import { selfxitRejection } from './fixtures/rejection.js';

const request = {} as InitRequest;
const classifyRequest: ClassifyRequest = { inputs: [], thresholds: [], probabilities: false };

/** A server of `files` (URL → body, served as `type`; others 404), as fetch. */
function serve(files: Record<string, string>, type = 'text/javascript; charset=utf-8'): typeof fetch {
  return (async (input: string | URL | Request) => {
    const url = String(input instanceof Request ? input.url : input);
    const body = files[url];
    return body === undefined
      ? new Response('gone', { status: 404 })
      : new Response(body, { status: 200, headers: { 'content-type': type } });
  }) as typeof fetch;
}

/** The page's `addEventListener` and `removeEventListener` on an EventTarget of the test's (Node's global is none). */
function pageEvents(): EventTarget {
  const target = new EventTarget();
  vi.stubGlobal('addEventListener', target.addEventListener.bind(target));
  vi.stubGlobal('removeEventListener', target.removeEventListener.bind(target));
  return target;
}

// No test here may reach a network: a worker's start failure asks the server which file is missing.
beforeEach(() => vi.stubGlobal('fetch', serve({})));
afterEach(() => {
  closeFakeWorkers();
  vi.unstubAllGlobals();
});

/** Starts a client on a stubbed Worker that serves `api`. */
function startClient(
  api: WorkerApi,
  liveness?: Liveness,
): { client: WorkerClient; worker: MessagePort; exposed: MessagePort } {
  const workers = stubWorkers([api]);
  const client = WorkerClient.start(new URL('https://x.test/selfxit.worker.js'), liveness);
  return { client, worker: workers[0]!.worker, exposed: workers[0]!.exposed };
}

/** A learning state of exits `version`, carrying the manifest named `hash` when given (sent once per change). */
const learning = (version: number, hash?: string) =>
  ({
    version,
    ...(hash ? { manifest: { ...manifest, labels: [hash] }, manifestHash: hash } : {}),
  }) as unknown as NonNullable<RuntimeState['learning']>;

describe('WorkerClient', () => {
  it('takes the state from replies; a SelfxitError from the worker arrives as one, with the state it left', async () => {
    const { client } = startClient(fakeWorkerApi());
    const reply = await client.init(request);
    expect(reply).toMatchObject({ manifestHash: 'h', state: state0 });
    expect(client.state).toEqual(state0);
    const err = await client.classify(classifyRequest, []).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SelfxitError);
    expect(err).toMatchObject({
      code: 'INTEGRITY_ERROR',
      message: 'segment-1.onnx: sha256 mismatch',
      details: { segment: 1 },
    });
    expect(client.state).toEqual(state1);
    await expect(client.plan({ target: 0.9 })).rejects.toMatchObject({ code: 'INVALID_BUNDLE' });
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('keeps the newest state (by seq) whichever channel brings it first: an older one arriving later is ignored', async () => {
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      classify: async () => ({ results: [], state: { ...state1, seq: 5 } }),
      plan: async () => ({ plan: {} as DevicePlan, state: { ...state0, seq: 3 } }),
    };
    const { client } = startClient(api);
    await client.init(request);
    await client.classify(classifyRequest, []);
    expect(client.state).toMatchObject({ seq: 5, cacheEnabled: false });
    await client.plan({ target: 0.9 });
    expect(client.state).toMatchObject({ seq: 5, cacheEnabled: false });
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('while learning, the manifest of the exits in force (sent once per change) stays on later states, whichever call brought it', async () => {
    let n = 0;
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      init: async () => ({ manifest, manifestHash: 'h', state: { ...state0, seq: 1, learning: learning(1, 'h1') } }),
      // a failed call: the page reads the state it left (the change comes with it), then an answer without it
      classify: async () => {
        n++;
        if (n === 1) throw new SelfxitError('INVALID_INPUT', 'bad input');
        return { results: [], state: { ...state0, seq: 3 + n, learning: learning(3) } };
      },
      state: async () => ({ ...state0, seq: 3, learning: learning(2, 'h2') }),
      // an older state (seq 2) with an older manifest, arriving late: it does not replace the newer one
      plan: async () => ({ plan: {} as DevicePlan, state: { ...state0, seq: 2, learning: learning(1, 'h1') } }),
    };
    const { client } = startClient(api);
    await client.init(request);
    expect(client.state?.learning?.manifestHash).toBe('h1');
    await expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await client.classify(classifyRequest, []);
    expect(client.state?.learning).toMatchObject({ version: 3, manifestHash: 'h2', manifest: { labels: ['h2'] } });
    await client.plan({ target: 0.9 });
    expect(client.state?.learning).toMatchObject({ version: 3, manifestHash: 'h2' });
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a manifest change arriving after a newer state without it (other channel) is still taken', async () => {
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      init: async () => ({ manifest, manifestHash: 'h', state: { ...state0, seq: 1, learning: learning(1, 'h1') } }),
      // seq 6 (no manifest: sent once, with seq 5) is read first; seq 5, carrying the change, arrives after it
      classify: async () => ({ results: [], state: { ...state0, seq: 6, learning: learning(2) } }),
      plan: async () => ({ plan: {} as DevicePlan, state: { ...state0, seq: 5, learning: learning(2, 'h2') } }),
    };
    const { client } = startClient(api);
    await client.init(request);
    await client.classify(classifyRequest, []);
    expect(client.state?.learning?.manifestHash).toBe('h1');
    await client.plan({ target: 0.9 });
    expect(client.state).toMatchObject({
      seq: 6,
      learning: { version: 2, manifestHash: 'h2', manifest: { labels: ['h2'] } },
    });
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a worker that dies rejects the pending call and every later one with WORKER_DIED', async () => {
    const { client, worker } = startClient(fakeWorkerApi(true));
    await client.init(request);
    const pending = client.classify(classifyRequest, []);
    worker.dispatchEvent(new Event('error'));
    await expect(pending).rejects.toMatchObject({ code: 'WORKER_DIED' });
    await expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'WORKER_DIED' });
  });

  it('a worker that fails before it ever answered (its script or imports) rejects with RUNTIME_FILES_UNAVAILABLE naming the URL', async () => {
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    worker.dispatchEvent(new Event('error'));
    await expect(pending).rejects.toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: 'https://x.test/selfxit.worker.js' },
    });
    await expect(pending).rejects.toThrow(/workerUrl/);
    await expect(pending).rejects.toThrow(/could not be fetched \(HTTP 404\)/);
  });

  it('a worker whose script is served but a module it imports is not: RUNTIME_FILES_UNAVAILABLE names that module', async () => {
    const server = serve({
      'https://x.test/selfxit.worker.js': 'import{a as b}from"./selfxit.shared-abc.js";import"./side.js";b();',
      'https://x.test/selfxit.shared-abc.js': 'export const a=()=>1;',
    });
    const asked: string[] = [];
    vi.stubGlobal('fetch', (u: string) => (asked.push(u), server(u)));
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    worker.dispatchEvent(new Event('error'));
    worker.dispatchEvent(new Event('error')); // a second event while the first is told apart changes nothing
    await expect(pending).rejects.toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: 'https://x.test/side.js', workerUrl: 'https://x.test/selfxit.worker.js' },
    });
    await expect(pending).rejects.toThrow(
      /the module it imports, https:\/\/x\.test\/side\.js, could not be fetched \(HTTP 404\)/,
    );
    await expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE' });
    expect(asked).toHaveLength(3); // one diagnosis: the script and its two imports
  });

  it('a worker that answers while its start failure is told apart has started: WORKER_DIED, as for a crash', async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    vi.stubGlobal('fetch', async () => (await held, new Response('gone', { status: 404 })));
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    worker.dispatchEvent(new Event('error'));
    await pending; // the worker answered
    release();
    await vi.waitFor(() => expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'WORKER_DIED' }));
  });

  it('an error event after the client failed (disposed) starts no diagnosis', async () => {
    const asked: string[] = [];
    vi.stubGlobal('fetch', (u: string) => (asked.push(u), Promise.resolve(new Response('', { status: 404 }))));
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    client.fail(new SelfxitError('DISPOSED', 'disposed'));
    worker.dispatchEvent(new Event('error'));
    await expect(pending).rejects.toMatchObject({ code: 'DISPOSED' });
    await new Promise((r) => setTimeout(r, 20));
    expect(asked).toEqual([]);
  });

  it('the telling apart stops when the client fails first (disposed)', async () => {
    let signal: AbortSignal | undefined;
    vi.stubGlobal('fetch', (_u: string, init: RequestInit) => {
      signal = init.signal ?? undefined;
      return new Promise<Response>(() => {}); // never answered
    });
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    worker.dispatchEvent(new Event('error'));
    await vi.waitFor(() => expect(signal).toBeDefined());
    client.fail(new SelfxitError('DISPOSED', 'disposed'));
    await expect(pending).rejects.toMatchObject({ code: 'DISPOSED' });
    expect(signal!.aborted).toBe(true);
  });

  it('a worker whose files are all served but that still fails to start, no policy seen: possibly a CSP (no details.csp)', async () => {
    vi.stubGlobal(
      'fetch',
      serve({ 'https://x.test/selfxit.worker.js': 'import "./ok.js";', 'https://x.test/ok.js': '' }),
    );
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    worker.dispatchEvent(new Event('error'));
    const e = await selfxitRejection(pending);
    expect(e).toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: 'https://x.test/selfxit.worker.js' },
    });
    expect(e.details).not.toHaveProperty('csp');
    expect(e.message).toMatch(
      /from https:\/\/x\.test\/selfxit\.worker\.js, although the server serves it .* possibly by a Content-Security-Policy/,
    );
    expect(e.message).not.toMatch(/Serve the package's dist/);
  });

  it('a Content-Security-Policy violation seen on the page while the worker started: details.csp and the directive', async () => {
    const page = pageEvents();
    vi.stubGlobal('fetch', serve({ 'https://x.test/selfxit.worker.js': '' }));
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    const violation = (effectiveDirective: string, blockedURI: string) =>
      page.dispatchEvent(Object.assign(new Event('securitypolicyviolation'), { effectiveDirective, blockedURI }));
    violation('script-src', 'inline'); // another script of the page's, refused meanwhile: not the worker's
    violation('worker-src', 'https://x.test/other-worker.js');
    violation('worker-src', 'https://x.test/selfxit.worker.js');
    worker.dispatchEvent(new Event('error'));
    await expect(pending).rejects.toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: 'https://x.test/selfxit.worker.js', csp: true, directive: 'worker-src' },
    });
    await expect(pending).rejects.toThrow(/a Content-Security-Policy refused it \(its worker-src\)/);
  });

  it('a worker served as text/html with 200 (a fallback page for a missing file) is missing, not refused by a CSP', async () => {
    const page = '<!doctype html><title>app</title>';
    for (const [type, as] of [
      ['text/html; charset=utf-8', 'served as text/html'],
      ['text/javascript', 'served as text/javascript'],
      ['', 'served with no Content-Type'],
    ]) {
      vi.stubGlobal('fetch', serve({ 'https://x.test/selfxit.worker.js': page }, type));
      const { client, worker } = startClient(fakeWorkerApi());
      const pending = client.init(request);
      worker.dispatchEvent(new Event('error'));
      const e = await selfxitRejection(pending);
      expect(e).toMatchObject({
        code: 'RUNTIME_FILES_UNAVAILABLE',
        details: { url: 'https://x.test/selfxit.worker.js' },
      });
      expect(e.details).not.toHaveProperty('csp');
      expect(e.message).not.toMatch(/Content-Security-Policy/);
      expect(e.message).toContain(`could not be loaded (an HTML page, ${as})`);
      expect(e.message).not.toMatch(/not as JavaScript/);
      expect(e.message).toMatch(/workerUrl/);
      closeFakeWorkers();
    }
    // a chunk answered by the fallback page: named, with its Content-Type
    const server = serve({ 'https://x.test/selfxit.worker.js': 'import "./selfxit.shared-x.js";' });
    vi.stubGlobal('fetch', async (u: string) =>
      u.endsWith('shared-x.js') ? new Response(page, { headers: { 'content-type': 'text/html' } }) : server(u),
    );
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    worker.dispatchEvent(new Event('error'));
    await expect(pending).rejects.toMatchObject({
      details: { url: 'https://x.test/selfxit.shared-x.js', contentType: 'text/html' },
      message: expect.stringMatching(/shared-x\.js, could not be loaded \(served as text\/html, not as JavaScript\)/),
    });
  });

  it('a worker whose files are served but whose script threw as it started (the event has a message): no CSP claimed', async () => {
    vi.stubGlobal('fetch', serve({ 'https://x.test/selfxit.worker.js': 'throw 1' }));
    const { client, worker } = startClient(fakeWorkerApi());
    const pending = client.init(request);
    worker.dispatchEvent(Object.assign(new Event('error'), { message: 'Uncaught SyntaxError: bad' }));
    const e = await selfxitRejection(pending);
    expect(e.message).toMatch(/: Uncaught SyntaxError: bad: its script failed as it started/);
    expect(e.message).not.toMatch(/Content-Security-Policy/);
    expect(e.details).not.toHaveProperty('csp');
  });

  it('a worker on another origin whose server gives the page no answer (no CORS): the message names Access-Control-Allow-Origin', async () => {
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/' });
    vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
    const created = vi.spyOn(URL, 'createObjectURL').mockImplementation(() => 'blob:https://page.test/1');
    const revoked = vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => {});
    try {
      const workers = stubWorkers([fakeWorkerApi()]);
      const client = WorkerClient.start(new URL('https://cdn.test/selfxit.worker.js'));
      const pending = client.init(request);
      workers[0]!.worker.dispatchEvent(new Event('error'));
      await expect(pending).rejects.toMatchObject({
        code: 'RUNTIME_FILES_UNAVAILABLE',
        details: { url: 'https://cdn.test/selfxit.worker.js', crossOrigin: true },
        message: expect.stringMatching(/no answer for it from https:\/\/cdn\.test.*Access-Control-Allow-Origin/),
      });
    } finally {
      created.mockRestore();
      revoked.mockRestore();
    }
  });

  it('staticImports reads the specifiers vite emits, not dynamic imports or bare names', () => {
    expect(
      staticImports(
        'import{a as b}from"./s-1.js";import"/abs.js";export{c}from\'../up.js\';import("./lazy.js");import x from "pkg";',
      ),
    ).toEqual(['./s-1.js', '/abs.js', '../up.js']);
  });

  it('a worker that crashes after it started (its connect answered) rejects with WORKER_DIED, not RUNTIME_FILES_UNAVAILABLE', async () => {
    let connected: () => void = () => {};
    const started = new Promise<void>((r) => (connected = r));
    const base = fakeWorkerApi();
    const api: WorkerApi = {
      ...base,
      init: () => new Promise(() => {}), // crashes while opening the bundle (below)
      async connect(this: WorkerApi, port: MessagePort) {
        const served = await base.connect.call(this, port);
        connected();
        return served;
      },
    };
    const { client, worker } = startClient(api);
    const pending = client.init(request);
    await started;
    await new Promise((r) => setTimeout(r, 10)); // the connect answer reaches the page
    worker.dispatchEvent(new Event('error'));
    await expect(pending).rejects.toMatchObject({ code: 'WORKER_DIED' });
  });

  it('a worker on another origin starts from a blob URL, revoked once init() settled or the worker is stopped', async () => {
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/' });
    let n = 0;
    const created = vi.spyOn(URL, 'createObjectURL').mockImplementation(() => `blob:https://page.test/${++n}`);
    const revoked = vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => {});
    try {
      const { client } = startClient(fakeWorkerApi());
      expect(created).toHaveBeenCalledTimes(1);
      const opening = client.init(request);
      expect(revoked).not.toHaveBeenCalled(); // the worker (and a learner it starts from its own URL) still needs it
      await opening;
      expect(revoked.mock.calls).toEqual([['blob:https://page.test/1']]);
      client.fail(new SelfxitError('DISPOSED', 'done'));
      expect(revoked).toHaveBeenCalledTimes(1);
      // a worker stopped before init() settled (load()'s timeoutMs, its signal)
      const hung = startClient({ ...fakeWorkerApi(), init: () => new Promise(() => {}) }).client;
      void hung.init(request).catch(() => {});
      hung.fail(new SelfxitError('TIMEOUT', 'load() did not finish'));
      expect(revoked.mock.calls).toEqual([['blob:https://page.test/1'], ['blob:https://page.test/2']]);
    } finally {
      created.mockRestore();
      revoked.mockRestore();
    }
  });

  it('an input that cannot be posted (DataCloneError: a closed ImageBitmap) rejects with INVALID_INPUT; the worker stays usable', async () => {
    const { client } = startClient(fakeWorkerApi(true));
    await client.init(request);
    // A value structured clone refuses, as it refuses a closed ImageBitmap: postMessage throws DataCloneError.
    const uncloneable = {
      ...classifyRequest,
      inputs: [{ kind: 'blob', blob: () => {} }],
    } as unknown as ClassifyRequest;
    await expect(client.classify(uncloneable, [])).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(client.init(request)).resolves.toMatchObject({ manifestHash: 'h' });
  });

  it('the bitmaps made for a call that is not sent (not postable, or the worker is dead) are closed', async () => {
    const { client } = startClient(fakeWorkerApi(true));
    await client.init(request);
    let closed = 0;
    const bitmap = (): Transferable => ({ close: () => closed++ }) as unknown as Transferable;
    const uncloneable = {
      ...classifyRequest,
      inputs: [{ kind: 'blob', blob: () => {} }],
    } as unknown as ClassifyRequest;
    await expect(client.classify(uncloneable, [bitmap()])).rejects.toBeInstanceOf(SelfxitError);
    expect(closed).toBe(1);
    client.fail(new SelfxitError('WORKER_DIED', 'gone'));
    await expect(client.classify(classifyRequest, [bitmap()])).rejects.toMatchObject({ code: 'WORKER_DIED' });
    expect(closed).toBe(2);
  });

  it('a worker without the classify port (another version of selfxit.worker.js) fails at once with RUNTIME_FILES_UNAVAILABLE', async () => {
    const { connect: _, ...old } = fakeWorkerApi();
    const { client } = startClient(old as WorkerApi);
    await expect(client.init(request)).rejects.toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      message: expect.stringMatching(/same version/),
    });
    await expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE' });
  });

  it('an error whose details cannot be cloned still answers the call, as INTERNAL with its code and message', async () => {
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      classify: async () => {
        throw new SelfxitError('INVALID_INPUT', 'bad input', { hint: () => 'a function cannot be cloned' });
      },
    };
    const { client } = startClient(api);
    await client.init(request);
    const err = await client.classify(classifyRequest, []).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/^INVALID_INPUT: bad input/) });
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('an answer that cannot be deserialised fails the pending calls with WORKER_DIED', async () => {
    const { client } = startClient(fakeWorkerApi(true));
    await client.init(request);
    const pending = client.classify(classifyRequest, []);
    (client as unknown as { port: MessagePort }).port.dispatchEvent(new MessageEvent('messageerror'));
    await expect(pending).rejects.toMatchObject({
      code: 'WORKER_DIED',
      message: expect.stringMatching(/deserialised/),
    });
  });

  it('a request that cannot be deserialised is logged by the worker, whose port keeps serving', async () => {
    const logged = vi.spyOn(console, 'error').mockImplementation(() => {});
    let served: MessagePort | undefined;
    const base = fakeWorkerApi();
    const api: WorkerApi = {
      ...base,
      classify: async () => ({ results: [], state: state0 }) as ClassifyReply,
      async connect(this: WorkerApi, port: MessagePort) {
        served = port;
        return base.connect.call(this, port);
      },
    };
    const { client } = startClient(api);
    await client.init(request);
    served!.dispatchEvent(new MessageEvent('messageerror'));
    expect(logged).toHaveBeenCalledWith(expect.stringMatching(/could not be deserialised/));
    await expect(client.classify(classifyRequest, [])).resolves.toEqual([]);
    logged.mockRestore();
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('the state of an answer to a call already rejected (DISPOSED) is still taken', async () => {
    let answer: (() => void) | undefined;
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      classify: () =>
        new Promise<ClassifyReply>((resolve) => {
          answer = () => resolve({ results: [], state: { ...state1, seq: 7 } });
        }),
    };
    const { client } = startClient(api);
    await client.init(request);
    const pending = client.classify(classifyRequest, []).catch((e: unknown) => e);
    await vi.waitFor(() => expect(answer).not.toBe(undefined));
    await client.dispose();
    expect(await pending).toMatchObject({ code: 'DISPOSED' });
    answer!();
    await vi.waitFor(() => expect(client.state).toMatchObject({ seq: 7, cacheEnabled: false }));
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a Worker constructor that throws a non-Error value: RUNTIME_FILES_UNAVAILABLE names that value', () => {
    vi.stubGlobal(
      'Worker',
      class {
        constructor() {
          throw 'blocked by the page policy';
        }
      },
    );
    expect(() => WorkerClient.start(new URL('https://x.test/selfxit.worker.js'))).toThrow(
      expect.objectContaining({
        code: 'RUNTIME_FILES_UNAVAILABLE',
        message: expect.stringMatching(/: blocked by the page policy$/),
      }),
    );
  });

  it('dispose() rejects the calls not answered yet with DISPOSED, then later ones too', async () => {
    const { client } = startClient(fakeWorkerApi(true));
    await client.init(request);
    const queued = [client.classify(classifyRequest, []), client.classify(classifyRequest, [])].map((q) =>
      q.then(
        () => 'resolved',
        (e: unknown) => e,
      ),
    );
    await client.dispose();
    for (const q of queued) expect(await q).toMatchObject({ code: 'DISPOSED' });
    client.fail(new SelfxitError('DISPOSED', 'the classifier was disposed'));
    await expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'DISPOSED' });
  });
});

describe('WorkerClient liveness', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('a worker that stops answering while idle is declared dead within 13 ping periods: later calls reject with WORKER_DIED', async () => {
    const { client, exposed } = startClient(fakeWorkerApi(true), {
      heartbeatMs: 20,
      callTimeoutMs: 0,
      idleMs: 12 * 20,
    });
    await client.init(request);
    await sleep(50); // idle a while (pings answered)
    exposed.close(); // the worker closed itself: messages go nowhere, no error event
    await sleep(13 * 20 + 20);
    const t0 = Date.now();
    const later = await client.classify(classifyRequest, []).catch((e: unknown) => e);
    expect(later).toMatchObject({ code: 'WORKER_DIED', message: expect.stringMatching(/stopped answering/) });
    expect(Date.now() - t0).toBeLessThan(20);
  });

  /** A worker whose pings wait while `blocked` (synchronous work in the background between calls); `holdLock` as given. */
  function blockingApi(held: boolean): { api: WorkerApi; block: () => void; unblock: () => void } {
    let gate: Promise<void> | undefined;
    let open = (): void => {};
    return {
      api: {
        ...fakeWorkerApi(true),
        ping: async () => (await gate, { activity: 0 }),
        holdLock: async () => held,
      },
      block: () => void (gate = new Promise((r) => (open = r))),
      unblock: () => (open(), (gate = undefined)),
    };
  }

  /** A client of `w` whose worker was busy (pings unanswered) for 6 periods while idle: it answers a call after. */
  async function busyForSixPeriods(w: ReturnType<typeof blockingApi>): Promise<WorkerClient> {
    const { client } = startClient(w.api, { heartbeatMs: 20, callTimeoutMs: 0, idleMs: 12 * 20 });
    await client.init(request);
    w.block();
    await sleep(6 * 20 + 20);
    w.unblock();
    await sleep(30);
    expect(await client.plan({ target: 0.9 }).catch((e: unknown) => e)).toMatchObject({ code: 'INVALID_BUNDLE' });
    return client;
  }

  it('a page restored from the back/forward cache: the time it was frozen does not count against the worker', async () => {
    const target = new EventTarget();
    vi.stubGlobal('addEventListener', target.addEventListener.bind(target));
    vi.stubGlobal('removeEventListener', target.removeEventListener.bind(target));
    const w = blockingApi(false);
    const { client } = startClient(w.api, { heartbeatMs: 20, callTimeoutMs: 0, idleMs: 12 * 20 });
    await client.init(request);
    w.block(); // a ping outstanding when the page was frozen (the worker frozen with it)
    await sleep(9 * 20);
    const show = Object.assign(new Event('pageshow'), { persisted: true });
    target.dispatchEvent(show); // restored: 9 periods of the ping's 12 had passed (the time frozen)
    await sleep(5 * 20); // 14 periods since the ping, 5 since the restore
    w.unblock();
    await sleep(30);
    expect(await client.plan({ target: 0.9 }).catch((e: unknown) => e)).toMatchObject({ code: 'INVALID_BUNDLE' });
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('with the shortest heartbeat (100 ms), an idle worker busy for 1.5 s (over 12 periods) is not taken for dead', async () => {
    const w = blockingApi(false);
    const { client } = startClient(w.api, { heartbeatMs: 100, callTimeoutMs: 0 }); // the default idle limit
    await client.init(request);
    w.block(); // a background compile: pings wait
    await sleep(1500);
    w.unblock();
    await sleep(50);
    expect(await client.plan({ target: 0.9 }).catch((e: unknown) => e)).toMatchObject({ code: 'INVALID_BUNDLE' });
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a worker busy in the background between calls for 6 ping periods is not taken for dead', async () => {
    const w = blockingApi(false);
    await busyForSixPeriods(w);
  });

  it('where the Web Lock watch is on, an idle worker busy for 6 ping periods stays; its end is seen at once through the lock', async () => {
    let release = (): void => {};
    const granted = new Promise<void>((r) => (release = r));
    const locks = {
      request: async (_name: string, _options: unknown, cb: () => unknown) => {
        await granted; // the worker holds the lock until it ends
        return cb();
      },
    };
    vi.stubGlobal('navigator', { locks });
    const w = blockingApi(true);
    const client = await busyForSixPeriods(w);
    release(); // the worker ended
    await sleep(10);
    expect(await client.plan({ target: 0.9 }).catch((e: unknown) => e)).toMatchObject({
      code: 'WORKER_DIED',
      message: expect.stringMatching(/ended/) as unknown,
    });
  });

  /** A worker that runs classify() calls one at a time, each `ms` long; the `hang`-th (1-based) never ends. */
  function sequentialApi(ms: number, hang = 0): WorkerApi {
    let queue: Promise<unknown> = Promise.resolve();
    let n = 0;
    return {
      ...fakeWorkerApi(),
      classify: (): Promise<ClassifyReply> => {
        const k = ++n;
        const run = queue.then(async () => {
          if (k === hang) await new Promise(() => {});
          await sleep(ms);
          return { results: [], state: state0 } as ClassifyReply;
        });
        queue = run;
        return run;
      },
    };
  }

  it('calls queued behind others in a busy worker are not timed out: the deadline counts from the latest answer', async () => {
    // 20 calls of 30 ms sent at once: 600 ms of work in all, more than callTimeoutMs, but an answer every 30 ms.
    const { client } = startClient(sequentialApi(30), { heartbeatMs: 0, callTimeoutMs: 300 });
    await client.init(request);
    const calls = Array.from({ length: 20 }, () => client.classify(classifyRequest, []).catch((e: unknown) => e));
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 20 }, () => []));
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('in a busy worker, the call that gets no answer for callTimeoutMs is the one that times out', async () => {
    const { client } = startClient(sequentialApi(30, 3), { heartbeatMs: 0, callTimeoutMs: 150 });
    await client.init(request);
    const t0 = performance.now();
    const calls = Array.from({ length: 5 }, () => client.classify(classifyRequest, []).catch((e: unknown) => e));
    const out = await Promise.all(calls);
    expect(out.slice(0, 2)).toEqual([[], []]);
    expect(out[2]).toMatchObject({ code: 'TIMEOUT', details: { callTimeoutMs: 150 } });
    expect(out.slice(3)).toEqual([
      expect.objectContaining({ code: 'WORKER_DIED' }),
      expect.objectContaining({ code: 'WORKER_DIED' }),
    ]);
    // The third call's clock started at the second answer (~60 ms): it timed out at ~210 ms, not at 150 ms.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(200);
  });

  it('a call the worker lost times out although later calls keep being answered', async () => {
    // The 2nd call is never answered; every other one is answered 10 ms after it is sent, one sent every 30 ms.
    let n = 0;
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      classify: async (): Promise<ClassifyReply> => {
        if (++n === 2) await new Promise(() => {});
        await sleep(10);
        return { results: [], state: state0 } as ClassifyReply;
      },
    };
    const { client } = startClient(api, { heartbeatMs: 0, callTimeoutMs: 150 });
    await client.init(request);
    const t0 = performance.now();
    const calls: Promise<unknown>[] = [];
    let [lostAt, settled, traffic, duringTraffic] = [0, false, true, false];
    const first = client.classify(classifyRequest, []).catch((e: unknown) => e);
    const second = client.classify(classifyRequest, []).catch((e: unknown) => {
      [lostAt, settled, duringTraffic] = [performance.now() - t0, true, traffic];
      return e;
    });
    // traffic for up to 1.8 s, answered every 30 ms: an answer to a later call restarting every clock would hold the
    // lost call's timeout off until the traffic stops
    for (let i = 0; i < 60 && !settled; i++) {
      calls.push(client.classify(classifyRequest, []).catch((e: unknown) => e));
      await sleep(30);
    }
    traffic = false;
    expect(await second).toMatchObject({ code: 'TIMEOUT', details: { callTimeoutMs: 150 } });
    expect(duringTraffic, 'the lost call timed out while later calls were being answered').toBe(true);
    expect(lostAt).toBeGreaterThanOrEqual(140);
    expect(await first).toEqual([]);
    await Promise.all(calls);
  });

  it('a call past callTimeoutMs rejects with TIMEOUT; the worker is stopped: other pending and later calls get WORKER_DIED', async () => {
    const { client } = startClient(fakeWorkerApi(true), { heartbeatMs: 0, callTimeoutMs: 100 });
    await client.init(request);
    const first = client.classify(classifyRequest, []).catch((e: unknown) => e);
    await sleep(50);
    const second = client.classify(classifyRequest, []).catch((e: unknown) => e);
    expect(await first).toMatchObject({ code: 'TIMEOUT', details: { callTimeoutMs: 100 } });
    expect(await second).toMatchObject({ code: 'WORKER_DIED' });
    await expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'WORKER_DIED' });
  });

  /** A worker whose classify() downloads for `ms` (its ping's activity count grows meanwhile when `moving`). */
  function downloadingApi(ms: number, moving: boolean): WorkerApi {
    let activity = 0;
    let downloading = false;
    return {
      ...fakeWorkerApi(),
      ping: async () => ({ activity: downloading && moving ? ++activity : activity }),
      classify: async () => {
        downloading = true;
        await sleep(ms);
        downloading = false;
        return { results: [], state: state0 } as ClassifyReply;
      },
    };
  }

  it('callTimeoutMs counts inactivity: a call downloading for 4× as long (activity growing) is answered', async () => {
    const { client } = startClient(downloadingApi(600, true), { heartbeatMs: 20, callTimeoutMs: 150 });
    await client.init(request);
    await expect(client.classify(classifyRequest, [])).resolves.toEqual([]);
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a worker that answers pings but makes no progress still times out the call', async () => {
    const { client } = startClient(downloadingApi(600, false), { heartbeatMs: 20, callTimeoutMs: 150 });
    await client.init(request);
    expect(await client.classify(classifyRequest, []).catch((e: unknown) => e)).toMatchObject({
      code: 'TIMEOUT',
      details: { callTimeoutMs: 150 },
    });
    await expect(client.classify(classifyRequest, [])).rejects.toMatchObject({ code: 'WORKER_DIED' });
  });

  it('progress events restart the clock too: a plan() reporting progress for 4× callTimeoutMs resolves', async () => {
    const plan = { target: 0.9 } as DevicePlan;
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      plan: async (_req, onProgress) => {
        for (let i = 0; i < 20; i++) {
          await sleep(30);
          await onProgress?.({ status: 'progress', file: 'validation.bin', loaded: i, total: 20, progress: 5 * i });
        }
        return { plan, state: state0 };
      },
    };
    const { client } = startClient(api, { heartbeatMs: 0, callTimeoutMs: 150 });
    await client.init(request);
    const seen: string[] = [];
    await expect(client.plan({ target: 0.9 }, (p) => seen.push(p.status))).resolves.toEqual(plan);
    expect(seen).toHaveLength(20);
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a worker busy in a long call (pings unanswered meanwhile) is not taken for dead', async () => {
    let busy = false;
    const api: WorkerApi = {
      ...fakeWorkerApi(),
      // While "ORT blocks the thread", a ping is answered only when the call is over.
      ping: async () => {
        while (busy) await sleep(5);
        return { activity: 0 };
      },
      classify: async () => {
        busy = true;
        await sleep(600);
        busy = false;
        return { results: [], state: state0 } as ClassifyReply;
      },
    };
    const { client } = startClient(api, { heartbeatMs: 40, callTimeoutMs: 5000 });
    await client.init(request);
    await expect(client.classify(classifyRequest, [])).resolves.toEqual([]);
    await sleep(200);
    await expect(client.classify(classifyRequest, [])).resolves.toEqual([]);
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });
});

describe('the default worker on the page origin (an app bundled by Vite or webpack on its own origin)', () => {
  /** The page on the origin of the literal's URL here (this module's: a file: URL, origin 'null'). */
  const sameOrigin = () => vi.stubGlobal('location', { origin: 'null', href: 'file:///app/' });

  it('a start failure asks the server for the URL the bundler wrote: a fallback HTML page answered with 200 is named', async () => {
    sameOrigin();
    const fakes = stubWorkers([fakeWorkerApi()]);
    const Fake = globalThis.Worker;
    const asked: string[] = [];
    vi.stubGlobal(
      'Worker',
      class {
        constructor(u: string | URL, o?: WorkerOptions) {
          asked.push(String(u));
          return new Fake(u, o);
        }
      },
    );
    const recorded = literalWorkerUrl()!;
    expect(asked).toEqual([]);
    const page = '<!doctype html><title>app</title>';
    vi.stubGlobal('fetch', serve({ [recorded.href]: page }, 'text/html'));
    const client = WorkerClient.start(undefined);
    expect(asked).toEqual([recorded.href]); // started by the literal itself, not through a blob
    const pending = client.init(request);
    fakes[0]!.worker.dispatchEvent(new Event('error'));
    const e = await selfxitRejection(pending);
    expect(e).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE', details: { url: recorded.href } });
    expect(e.message).toContain('could not be loaded (an HTML page, served as text/html)');
    expect(e.message).toContain(`from ${recorded.href} (the worker file your bundler emitted`);
  });

  it('a Content-Security-Policy event that comes after the worker error event is still named (the server is asked first)', async () => {
    sameOrigin();
    const page = pageEvents();
    const recorded = literalWorkerUrl()!;
    vi.stubGlobal('fetch', serve({ [recorded.href]: 'export {};' }));
    const fakes = stubWorkers([fakeWorkerApi()]);
    const client = WorkerClient.start(undefined);
    const pending = client.init(request);
    fakes[0]!.worker.dispatchEvent(new Event('error'));
    page.dispatchEvent(
      Object.assign(new Event('securitypolicyviolation'), {
        effectiveDirective: 'worker-src',
        blockedURI: recorded.href,
      }),
    );
    await expect(pending).rejects.toMatchObject({ details: { csp: true, directive: 'worker-src' } });
  });

  it('a worker that answers connect with an error (another version) names the recorded URL', async () => {
    sameOrigin();
    const recorded = literalWorkerUrl()!;
    stubWorkers([
      {
        ...fakeWorkerApi(),
        connect: () => Promise.reject(new Error('no connect')),
      } as WorkerApi,
    ]);
    const client = WorkerClient.start(undefined);
    await expect(client.init(request)).rejects.toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: recorded.href },
      message: expect.stringContaining(`the selfxit worker at ${recorded.href} does not serve classify()`),
    });
  });

  it('a worker that cannot even be constructed names the recorded URL', () => {
    sameOrigin();
    vi.stubGlobal(
      'Worker',
      class {
        constructor() {
          throw new DOMException('refused', 'SecurityError');
        }
      },
    );
    const recorded = literalWorkerUrl()!.href;
    expect(() => WorkerClient.start(undefined)).toThrow(
      expect.objectContaining({
        details: { url: recorded },
        message: `cannot start the selfxit worker from ${recorded} (the worker file your bundler emitted for selfxit): refused`,
      }),
    );
  });
});

describe('a Content-Security-Policy violation of a blob while a worker on another origin starts', () => {
  it('counts only under a directive that governs workers, not script-src(-elem) (a blob script of the app refused meanwhile)', async () => {
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/' });
    const page = pageEvents();
    vi.stubGlobal('fetch', serve({ 'https://cdn.test/selfxit.worker.js': '' }));
    const created = vi.spyOn(URL, 'createObjectURL').mockImplementation(() => 'blob:https://page.test/1');
    const revoked = vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => {});
    try {
      for (const [directive, ours] of [
        ['script-src-elem', false],
        ['script-src', false],
        ['worker-src', true],
        ['child-src', true],
        ['default-src', true],
      ] as const) {
        const workers = stubWorkers([fakeWorkerApi()]);
        const client = WorkerClient.start(new URL('https://cdn.test/selfxit.worker.js'));
        const pending = client.init(request);
        page.dispatchEvent(
          Object.assign(new Event('securitypolicyviolation'), { effectiveDirective: directive, blockedURI: 'blob' }),
        );
        workers[0]!.worker.dispatchEvent(new Event('error'));
        const e = await selfxitRejection(pending);
        if (ours) expect(e.details).toMatchObject({ csp: true, directive });
        else expect(e.details).not.toHaveProperty('csp');
        closeFakeWorkers();
      }
    } finally {
      created.mockRestore();
      revoked.mockRestore();
    }
  });
});

describe('a worker on another origin whose server gives the page no answer', () => {
  const onCdn = () => {
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/' });
    const created = vi.spyOn(URL, 'createObjectURL').mockImplementation(() => 'blob:https://page.test/1');
    const revoked = vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => {});
    return () => {
      created.mockRestore();
      revoked.mockRestore();
    };
  };
  afterEach(() => vi.useRealTimers());

  it('no answer in time (a hung server): said so, no missing CORS claimed', async () => {
    const restore = onCdn();
    try {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      vi.stubGlobal(
        'fetch',
        (_: string, init?: RequestInit) =>
          new Promise((_resolve, reject) =>
            init?.signal?.addEventListener('abort', () => reject(new Error('aborted'))),
          ),
      );
      const workers = stubWorkers([fakeWorkerApi()]);
      const client = WorkerClient.start(new URL('https://cdn.test/selfxit.worker.js'));
      const pending = selfxitRejection(client.init(request));
      workers[0]!.worker.dispatchEvent(new Event('error'));
      await vi.advanceTimersByTimeAsync(3000);
      const e = await pending;
      expect(e).toMatchObject({
        code: 'RUNTIME_FILES_UNAVAILABLE',
        details: { url: 'https://cdn.test/selfxit.worker.js' },
      });
      expect(e.details).not.toHaveProperty('crossOrigin');
      expect(e.message).toMatch(/got no answer in time/);
      expect(e.message).not.toMatch(/Access-Control-Allow-Origin|module import/);
    } finally {
      restore();
    }
  });

  it('a classic worker (webpack’s, started through a classic blob): importScripts, publicPath and CORP named, not CORS', async () => {
    const restore = onCdn();
    try {
      vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
      const workers = stubWorkers([fakeWorkerApi()]);
      const client = WorkerClient.on(startAt(new URL('https://cdn.test/app/100.js'), false), undefined);
      const pending = selfxitRejection(client.init(request));
      workers[0]!.worker.dispatchEvent(new Event('error'));
      const e = await pending;
      expect(e).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE', details: { url: 'https://cdn.test/app/100.js' } });
      expect(e.details).not.toHaveProperty('crossOrigin');
      expect(e.message).toMatch(/importScripts, which needs no CORS/);
      expect(e.message).toMatch(/publicPath/);
      expect(e.message).toMatch(/Cross-Origin-Resource-Policy/);
      expect(e.message).not.toMatch(/module import|Access-Control-Allow-Origin/);
    } finally {
      restore();
    }
  });
});

it('a worker served as text/plain (not HTML): "served as text/plain, not as JavaScript"', async () => {
  vi.stubGlobal('fetch', serve({ 'https://x.test/selfxit.worker.js': 'export {};' }, 'text/plain'));
  const { client, worker } = startClient(fakeWorkerApi());
  const pending = client.init(request);
  worker.dispatchEvent(new Event('error'));
  await expect(pending).rejects.toMatchObject({
    details: { contentType: 'text/plain' },
    message: expect.stringContaining('could not be loaded (served as text/plain, not as JavaScript)'),
  });
});

// Page side of the worker link: starts the module worker, unwraps Wire replies into values or SelfxitErrors,
// and rejects every pending call with WORKER_DIED when the worker dies (nothing waits forever).
import { releaseProxy, wrap, type Remote } from 'comlink';
import { SelfxitError, fromErrorPayload } from '../errors.js';
import type { RuntimeState, Wire, WorkerApi } from '../protocol.js';

/** A worker URL on another origin cannot be started directly: load it through a same-origin blob module. */
function startWorker(url: URL | undefined): Worker {
  if (typeof Worker === 'undefined')
    throw new SelfxitError('BACKEND_UNAVAILABLE', 'this environment has no Web Workers');
  // The literal `new Worker(new URL('../runtime/worker.ts', import.meta.url), …)` lets vite bundle and emit the worker.
  if (!url) return new Worker(new URL('../runtime/worker.ts', import.meta.url), { type: 'module', name: 'selfxit' });
  const origin = (globalThis as { location?: { origin: string } }).location?.origin;
  if (origin && url.origin !== origin) {
    const shim = new Blob([`import ${JSON.stringify(url.href)};`], { type: 'text/javascript' });
    return new Worker(URL.createObjectURL(shim), { type: 'module', name: 'selfxit' });
  }
  return new Worker(url, { type: 'module', name: 'selfxit' });
}

/** One worker and the calls in flight to it. */
export class WorkerClient {
  private readonly api: Remote<WorkerApi>;
  private dead: SelfxitError | undefined;
  private readonly rejectors = new Set<(e: SelfxitError) => void>();
  /** Latest state the worker reported. */
  state: RuntimeState | undefined;

  private constructor(private readonly worker: Worker) {
    this.api = wrap<WorkerApi>(worker);
    worker.addEventListener('error', (ev: ErrorEvent) => {
      ev.preventDefault?.();
      const what = ev.message ? `: ${ev.message}` : ' (the worker script failed to load or threw)';
      this.fail(
        new SelfxitError('WORKER_DIED', `the selfxit worker died${what}`, {
          filename: ev.filename || undefined,
          lineno: ev.lineno || undefined,
        }),
      );
    });
    worker.addEventListener('messageerror', () => {
      this.fail(new SelfxitError('WORKER_DIED', 'a message from the selfxit worker could not be deserialised'));
    });
  }

  /** Starts the worker. Throws WORKER_DIED when it cannot even be constructed (e.g. a blocked URL). */
  static start(url: URL | undefined): WorkerClient {
    try {
      return new WorkerClient(startWorker(url));
    } catch (e) {
      if (e instanceof SelfxitError) throw e;
      throw new SelfxitError(
        'WORKER_DIED',
        `cannot start the selfxit worker${url ? ` from ${url.href}` : ''}: ${(e as Error).message}`,
        {},
        { cause: e },
      );
    }
  }

  /** Rejects every pending and future call with `error`, and stops the worker. */
  fail(error: SelfxitError): void {
    if (this.dead) return;
    this.dead = error;
    for (const reject of [...this.rejectors]) reject(error);
    this.rejectors.clear();
    try {
      this.api[releaseProxy]();
    } catch {
      // already released
    }
    this.worker.terminate();
  }

  /** Calls the worker; resolves with the value, or rejects with the worker's SelfxitError or WORKER_DIED. */
  call<T>(fn: (api: Remote<WorkerApi>) => Promise<Wire<T>>): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise<T>((resolve, reject) => {
      const onDeath = (e: SelfxitError): void => reject(e);
      this.rejectors.add(onDeath);
      fn(this.api).then(
        (wire) => {
          this.rejectors.delete(onDeath);
          if (wire.state) this.state = wire.state;
          if (wire.ok) resolve(wire.value);
          else reject(fromErrorPayload(wire.error));
        },
        (e: unknown) => {
          this.rejectors.delete(onDeath);
          reject(
            this.dead ??
              new SelfxitError(
                'WORKER_DIED',
                `the call to the selfxit worker failed: ${(e as Error)?.message ?? String(e)}`,
                {},
                { cause: e },
              ),
          );
        },
      );
    });
  }
}

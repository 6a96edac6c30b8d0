// The worker's API object (exposed through comlink by worker.ts): every reply is a Wire value, so errors keep their code.
import { transfer } from 'comlink';
import { SelfxitError, toErrorPayload } from '../errors.js';
import type { DevicePlan } from '../policy/device-plan.js';
import type {
  ClassifyRequest,
  InitReply,
  InitRequest,
  PlanRequest,
  ProgressInfo,
  Wire,
  WireResult,
  WorkerApi,
} from '../protocol.js';
import { BundleRuntime, type RuntimeDeps } from './runtime.js';

/** A progress callback that never throws (a comlink proxy returns a promise that rejects when the page is gone). */
function bestEffort(onProgress: ((p: ProgressInfo) => void) | undefined): (p: ProgressInfo) => void {
  return (p) => {
    if (onProgress) void Promise.resolve(onProgress(p)).catch(() => {});
  };
}

/** Creates the API one worker serves: one bundle per worker, opened by init(). */
export function createWorkerApi(deps: RuntimeDeps = {}): WorkerApi {
  let runtime: BundleRuntime | undefined;
  let opening = false;
  let disposed = false;

  async function reply<T>(fn: () => Promise<T>): Promise<Wire<T>> {
    try {
      const value = await fn();
      return { ok: true, value, ...(runtime ? { state: runtime.state() } : {}) };
    } catch (e) {
      return { ok: false, error: toErrorPayload(e), ...(runtime ? { state: runtime.state() } : {}) };
    }
  }

  function current(): BundleRuntime {
    if (disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    if (!runtime) throw new SelfxitError('INTERNAL', 'init() has not completed');
    return runtime;
  }

  return {
    init(request: InitRequest, onProgress?: (p: ProgressInfo) => void): Promise<Wire<InitReply>> {
      return reply(async () => {
        if (runtime || opening) throw new SelfxitError('INTERNAL', 'init() called twice on one worker');
        opening = true;
        runtime = await BundleRuntime.open(request, bestEffort(onProgress), deps);
        const plan = request.usePlan === true ? await runtime.cachedPlan() : undefined;
        return {
          manifest: runtime.manifest,
          manifestHash: runtime.manifestHash,
          state: runtime.state(),
          ...(plan ? { plan } : {}),
        };
      });
    },

    async classify(request: ClassifyRequest): Promise<Wire<WireResult[]>> {
      const wire = await reply(() => current().classify(request));
      if (!wire.ok) return wire;
      const buffers = wire.value.flatMap((r) => (r.probabilities ? [r.probabilities.buffer as ArrayBuffer] : []));
      return buffers.length > 0 ? transfer(wire, buffers) : wire;
    },

    plan(request: PlanRequest, onProgress?: (p: ProgressInfo) => void): Promise<Wire<DevicePlan>> {
      return reply(() => current().plan(request, bestEffort(onProgress)));
    },

    dispose(): Promise<Wire<null>> {
      return reply(async () => {
        disposed = true;
        await runtime?.dispose();
        return null;
      });
    },
  };
}

// What the page's classifier needs of the runtime it drives: the worker link (worker-client.ts) in a page, a fake in
// tests. Calls resolve with the worker's values or reject with its SelfxitError (WORKER_DIED when the worker is gone).
import type { BundleManifest } from '../bundle/manifest.js';
import type { SelfxitError } from '../errors.js';
import type { DevicePlan } from '../policy/device-plan.js';
import type { ClassifyRequest, PlanRequest, ProgressInfo, RuntimeState, WireResult } from '../protocol.js';
import type { BufferPool } from './buffer-pool.js';

/** The calls a classifier makes once its bundle is open, and the runtime state they report. */
export interface ClassifierTransport {
  /** The runtime's state as of its latest reply (undefined before the first). */
  readonly state: RuntimeState | undefined;
  /** Input buffers the runtime gave back, for the next inputs' copies (page/buffer-pool.ts); none: new ones. */
  readonly spares?: BufferPool;
  /** Whether classify() calls go through shared memory now (src/shared-lane.ts); absent: by message. */
  readonly sharedMemory?: boolean;
  /** Runs the cascade on `request.inputs`; `transfer` lists objects created for this call that may be moved. */
  classify(request: ClassifyRequest, transfer: readonly Transferable[]): Promise<readonly WireResult[]>;
  /** Measures the stages, plans exits by those times, caches and returns the plan. */
  plan(request: PlanRequest, onProgress?: (p: ProgressInfo) => void): Promise<DevicePlan>;
  /** Forgets what on-device learning learned (runtimes loaded with `learn` only). */
  resetLearning?(): Promise<void>;
  /** Releases the runtime's sessions. */
  dispose(): Promise<void>;
  /** Rejects every pending and later call with `error`, and stops the runtime. */
  fail(error: SelfxitError): void;
}

/** What the runtime reported when it opened the bundle. */
export interface OpenedBundle {
  readonly manifest: BundleManifest;
  /** sha256 (hex) of the manifest text. */
  readonly manifestHash: string;
  /** Absolute URL of manifest.json. */
  readonly manifestUrl: string;
  /** A cached device plan for this manifest, backend, thread count and engine, to apply at once. */
  readonly plan?: DevicePlan | undefined;
  /** load()'s warnings about its options (page/options.ts), reported by `learning()`. */
  readonly warnings?: readonly string[];
}

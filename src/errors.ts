// One error class for the whole SDK: a stable `code`, a human message, and plain-data `details`.
// It crosses a worker boundary as a plain payload (toErrorPayload()/fromErrorPayload(); protocol.ts's comlink handler).

/** Stable error codes. Never rename one: callers switch on them. */
export type SelfxitErrorCode =
  // graph / model input
  | 'INVALID_MODEL' // bytes are not an ONNX model, or it is truncated/corrupt
  | 'UNSUPPORTED_MODEL' // a valid ONNX model selfxit cannot handle (e.g. two inputs)
  | 'INVALID_CUT' // a requested cut tensor is not a cut point
  | 'SHAPE_UNKNOWN' // a tensor shape needed for cost or heads could not be determined
  // files / IO
  | 'IO_ERROR' // a file or folder could not be read or written
  | 'INVALID_ARGUMENT' // an option or CLI argument is out of range or malformed
  // calibration
  | 'INVALID_SAMPLES' // samples do not fit the model (shape, count, format)
  | 'TOO_FEW_SAMPLES' // fewer samples than a meaningful threshold needs
  | 'INVALID_TARGET' // agreement target outside (0, 1]
  // bundle / runtime
  | 'INVALID_BUNDLE' // manifest missing, malformed or of an unknown version
  | 'FETCH_FAILED' // a bundle file could not be fetched (HTTP status in details)
  | 'INTEGRITY_ERROR' // a file's sha256 does not match the manifest
  | 'INVALID_INPUT' // classify() input of the wrong type or size
  | 'BACKEND_UNAVAILABLE' // the requested backend cannot run here
  | 'RUNTIME_FILES_UNAVAILABLE' // the worker script, its chunks (the learning code's too) or onnxruntime's .mjs/.wasm cannot be fetched or started (URL in details)
  | 'OUT_OF_MEMORY' // the browser ran out of (WASM or GPU) memory running or loading a segment
  | 'DISPOSED' // the classifier was disposed
  | 'WORKER_DIED' // the worker crashed or was terminated
  | 'ABORTED' // the operation was cancelled by the caller
  | 'TIMEOUT' // no answer and no progress within the deadline (load() timeoutMs, callTimeoutMs: on inactivity)
  | 'LEARNING_UNAVAILABLE' // a call that needs on-device learning without it (learning()), or not possible while learning (plan())
  | 'INTERNAL'; // a bug: please report

/** Plain-data form of a {@link SelfxitError}, safe to post across a worker boundary. */
export interface SelfxitErrorPayload {
  readonly code: SelfxitErrorCode;
  readonly message: string;
  readonly details?: Record<string, unknown>;
  readonly stack?: string;
}

/**
 * The error every selfxit API throws or rejects with.
 *
 * @example
 * try { await clf.classify(img); } catch (e) {
 *   if (e instanceof SelfxitError && e.code === 'INVALID_INPUT') showHint(e.message);
 * }
 */
export class SelfxitError extends Error {
  override readonly name = 'SelfxitError';
  readonly code: SelfxitErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: SelfxitErrorCode,
    message: string,
    details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
    this.details = details;
  }
}

/** True for a SelfxitError, optionally of the given code. */
export function isSelfxitError(e: unknown, code?: SelfxitErrorCode): e is SelfxitError {
  return e instanceof SelfxitError && (code === undefined || e.code === code);
}

/** Messages of allocation failures: a JS RangeError, WebAssembly memory growth, onnxruntime's OOM aborts, WebGPU. */
const OUT_OF_MEMORY_RE =
  /out of memory|\bOOM\b|allocation failed|failed to allocate|cannot allocate|bad_alloc|Memory\.grow|maximum memory|Cannot enlarge memory/i;

/** True when `e` (a foreign error, e.g. from onnxruntime) says memory ran out. */
export function isOutOfMemory(e: unknown): boolean {
  if (e instanceof SelfxitError) return e.code === 'OUT_OF_MEMORY';
  const err = e instanceof Error ? e : undefined;
  const text = err ? `${err.name}: ${err.message}` : String(e);
  return (err instanceof RangeError && /memory|alloc|buffer/i.test(err.message)) || OUT_OF_MEMORY_RE.test(text);
}

/** Any thrown value → payload (out-of-memory errors become OUT_OF_MEMORY, other unknown errors INTERNAL). */
export function toErrorPayload(e: unknown): SelfxitErrorPayload {
  if (e instanceof SelfxitError) {
    return {
      code: e.code,
      message: e.message,
      ...(e.details ? { details: e.details } : {}),
      ...(e.stack ? { stack: e.stack } : {}),
    };
  }
  const err = e instanceof Error ? e : new Error(String(e));
  const code = isOutOfMemory(e) ? 'OUT_OF_MEMORY' : 'INTERNAL';
  return { code, message: err.message, ...(err.stack ? { stack: err.stack } : {}) };
}

/** Payload → SelfxitError, keeping code and details. */
export function fromErrorPayload(p: SelfxitErrorPayload): SelfxitError {
  const e = new SelfxitError(p.code, p.message, p.details);
  if (p.stack) e.stack = p.stack;
  return e;
}

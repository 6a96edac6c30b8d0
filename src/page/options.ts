// load() options (the public LoadOptions of src/types.ts): their documented defaults and their resolution in one place.
import { SelfxitError } from '../errors.js';
import { LEARN_OPTION_NAMES, refuseUnknownKeys, resolveLearnOptions } from '../learn/learn-options.js';
import type { InitRequest, LearnRequest, ProgressInfo } from '../protocol.js';
import type { LearnLoadOptions, LearnOptions, LoadOptions } from '../types.js';
import { packageBaseUrl } from './package-url.js';

/** Default values of {@link LoadOptions}. */
export const LOAD_DEFAULTS = {
  backend: 'auto',
  cache: true,
  manifestMaxAgeMs: 24 * 60 * 60 * 1000,
  plan: 'cached',
  timeoutMs: 120_000,
  heartbeatMs: 5_000,
  callTimeoutMs: 300_000,
  engine: 'auto',
  pruneExits: true,
  sharedMemory: true,
} as const satisfies Partial<LoadOptions>;

/** How the page watches its worker (worker-client.ts): ping period and per-call deadline, in ms (0 = off). */
export interface Liveness {
  readonly heartbeatMs: number;
  readonly callTimeoutMs: number;
  /**
   * How long a ping sent while idle may go unanswered before the worker counts as dead; default (load() never sets it):
   * 12 heartbeats, at least 10 s (worker-client.ts `idleLimitMs`). Tests that drive a fake worker shorten it.
   */
  readonly idleMs?: number;
}

export interface ResolvedLoad {
  readonly init: InitRequest;
  readonly onProgress: ((p: ProgressInfo) => void) | undefined;
  readonly workerUrl: URL | undefined;
  /** load()'s deadline on inactivity in ms (0 = none): no progress for that long (classifier.ts `watchInactivity`). */
  readonly timeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly liveness: Liveness;
  /** classify() through shared memory where the page and worker can (LoadOptions `sharedMemory`). */
  readonly sharedMemory: boolean;
  /** What load() warns about once (console.warn) and `learning()` reports: options whose defaults may well be wrong. */
  readonly warnings: readonly string[];
}

/** A duration option: a number >= 0 (`Infinity` and 0 mean none, resolved to 0). Throws INVALID_ARGUMENT. */
function durationMs(value: unknown, name: string, fallback: number): number {
  const v = value ?? fallback;
  if (!(typeof v === 'number' && v >= 0))
    throw new SelfxitError('INVALID_ARGUMENT', `${name} must be a number of ms >= 0, got ${String(v)}`);
  return Number.isFinite(v) ? v : 0;
}

/**
 * The shortest `heartbeatMs` and `callTimeoutMs` accepted (0 aside: off): below it a call's deadline would stop a worker
 * busy for a moment (an onnxruntime run). An idle worker gets at least 10 s however short the heartbeat
 * (worker-client.ts `idleLimitMs`: work a call left in the background).
 */
export const MIN_LIVENESS_MS = 100;

/** A liveness period ({@link durationMs}), 0 (off) or at least {@link MIN_LIVENESS_MS}. Throws INVALID_ARGUMENT. */
function livenessMs(value: unknown, name: string, fallback: number): number {
  const v = durationMs(value, name, fallback);
  if (v !== 0 && v < MIN_LIVENESS_MS)
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `${name} must be 0 (off) or at least ${MIN_LIVENESS_MS} ms, got ${v}: a shorter one is taken for a dead or stuck worker too soon`,
      { [name]: v },
    );
  return v;
}

/** Checks an `AbortSignal` option. Throws INVALID_ARGUMENT. */
export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  const s = signal as Partial<AbortSignal> | null;
  if (!s || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function')
    throw new SelfxitError('INVALID_ARGUMENT', 'signal must be an AbortSignal');
  return signal as AbortSignal;
}

function documentBase(): string {
  const loc = (globalThis as { location?: { href: string } }).location;
  const doc = (globalThis as { document?: { baseURI: string } }).document;
  return doc?.baseURI ?? loc?.href ?? packageBaseUrl();
}

function toUrl(value: string | URL, what: string, base: string): URL {
  try {
    return new URL(String(value), base);
  } catch (e) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `${what} ${JSON.stringify(String(value))} is not a valid URL`,
      { [what]: String(value) },
      { cause: e },
    );
  }
}

/** The manifest URL for a bundle URL: a `.json` URL as is, a folder URL + `manifest.json`. */
export function manifestUrlOf(bundleUrl: string | URL, base = documentBase()): string {
  const url = toUrl(bundleUrl, 'bundleUrl', base);
  if (/\.json$/i.test(url.pathname)) return url.href;
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return new URL('manifest.json', url).href;
}

/** Whether a URL names a plain ONNX model (`….onnx`) rather than a bundle. */
const isModelUrl = (url: URL): boolean => /\.onnx$/i.test(url.pathname);

/**
 * The warning for a plain model learnt with its input normalisation (partly) left at mean 0 / std 1: a model trained
 * with another one then classifies wrongly without any error (the shipped Fashion model: top-1 0.155 instead of 0.915).
 */
export function defaultNormalisationWarning(input: LearnLoadOptions['input']): string | undefined {
  const unset = (['mean', 'std'] as const).filter((k) => input?.[k] === undefined);
  if (unset.length === 0) return undefined;
  return (
    `learn.input.${unset.join(' and learn.input.')} not set: the plain model's input is normalised with the default ` +
    `${unset.map((k) => (k === 'mean' ? 'mean 0' : 'std 1')).join(', ')} ((pixel / 255 - mean) / std), which must match ` +
    'how the model was trained, else its predictions are wrong without any error: set learn: { input: { mean, std } }'
  );
}

/** The keys of {@link LearnLoadOptions} besides the learner's options. */
const LEARN_LOAD_KEYS = ['input', 'labels', 'output', 'persist', 'corruptAudit'] as const satisfies readonly Exclude<
  keyof LearnLoadOptions,
  keyof LearnOptions
>[];

/** Every top-level key of {@link LoadOptions} (the compiler checks that none is missing). */
const LOAD_KEYS: Readonly<Record<keyof LoadOptions, true>> = {
  backend: true,
  threads: true,
  cache: true,
  manifestMaxAgeMs: true,
  plan: true,
  engine: true,
  pruneExits: true,
  sharedMemory: true,
  onProgress: true,
  timeoutMs: true,
  signal: true,
  heartbeatMs: true,
  callTimeoutMs: true,
  wasmPaths: true,
  workerUrl: true,
  learn: true,
};

/**
 * The `learn` option as the worker gets it, its learner options checked here before anything is fetched (names and
 * ranges, by learn/learn-options.ts, which the worker applies again). A plain `.onnx` URL needs it; with a bundle URL
 * learning starts from the bundle's exits (its manifest gives the input and labels, so `input` and `labels` are
 * refused there).
 */
function resolveLearn(
  value: LoadOptions['learn'],
  bundleUrl: string | URL,
  base: string,
  cache: boolean | 'reload',
): LearnRequest | undefined {
  const url = toUrl(bundleUrl, 'bundleUrl', base);
  if (value === undefined || value === false) {
    if (isModelUrl(url))
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `${url.href} is a plain ONNX model: load it with { learn: { input: { mean, std } } }, its input ` +
          'normalisation as in training ((pixel / 255 - mean[c]) / std[c]; mean 0, std 1 when left out)',
      );
    return undefined;
  }
  if (value !== true && (typeof value !== 'object' || value === null))
    throw new SelfxitError('INVALID_ARGUMENT', `learn must be a boolean or an object, got ${String(value)}`);
  const o: LearnLoadOptions = value === true ? {} : value;
  refuseUnknownKeys(o, [...LEARN_OPTION_NAMES, ...LEARN_LOAD_KEYS], 'learn.', 'a learn option');
  const { input, labels, output, persist, corruptAudit, ...options } = o;
  resolveLearnOptions(options);
  const fromBundle = !isModelUrl(url);
  if (fromBundle && (input !== undefined || labels !== undefined || output !== undefined))
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      'learn.input, learn.labels and learn.output are for a plain .onnx model: a bundle brings its own in its manifest',
    );
  if (output !== undefined && (typeof output !== 'string' || output === ''))
    throw new SelfxitError('INVALID_ARGUMENT', `learn.output must be an output name, got ${String(output)}`);
  return {
    options,
    ...(fromBundle ? { fromBundle: true } : {}),
    ...(input ? { input } : {}),
    ...(labels ? { labels: [...labels] } : {}),
    ...(output ? { output } : {}),
    persist: persist !== false && cache !== false,
    ...(corruptAudit === true ? { corruptAudit: true } : {}),
  };
}

/** Checks the options and fills in the defaults. Throws INVALID_ARGUMENT naming the bad option. */
export function resolveLoadOptions(bundleUrl: string | URL, options: LoadOptions = {}): ResolvedLoad {
  if (bundleUrl === undefined || bundleUrl === null || String(bundleUrl) === '') {
    throw new SelfxitError('INVALID_ARGUMENT', 'load() needs the URL of a bundle folder or its manifest.json');
  }
  if (typeof options !== 'object' || options === null)
    throw new SelfxitError('INVALID_ARGUMENT', `load() options must be an object, got ${String(options)}`);
  refuseUnknownKeys(options, Object.keys(LOAD_KEYS), '', 'a load() option');
  const backend = options.backend ?? LOAD_DEFAULTS.backend;
  if (backend !== 'auto' && backend !== 'webgpu' && backend !== 'wasm') {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `backend must be 'auto', 'webgpu' or 'wasm', got ${JSON.stringify(backend)}`,
    );
  }
  const { threads } = options;
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 64)) {
    throw new SelfxitError('INVALID_ARGUMENT', `threads must be an integer in [1, 64], got ${String(threads)}`);
  }
  const cache = options.cache ?? LOAD_DEFAULTS.cache;
  if (cache !== true && cache !== false && cache !== 'reload') {
    throw new SelfxitError('INVALID_ARGUMENT', `cache must be true, false or 'reload', got ${JSON.stringify(cache)}`);
  }
  const manifestMaxAgeMs = options.manifestMaxAgeMs ?? LOAD_DEFAULTS.manifestMaxAgeMs;
  if (!(typeof manifestMaxAgeMs === 'number' && manifestMaxAgeMs >= 0)) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `manifestMaxAgeMs must be a number >= 0, got ${String(manifestMaxAgeMs)}`,
    );
  }
  const plan = options.plan ?? LOAD_DEFAULTS.plan;
  if (plan !== 'cached' && plan !== 'off') {
    throw new SelfxitError('INVALID_ARGUMENT', `plan must be 'cached' or 'off', got ${JSON.stringify(plan)}`);
  }
  const engine = options.engine ?? LOAD_DEFAULTS.engine;
  if (engine !== 'auto' && engine !== 'compiled' && engine !== 'stages') {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `engine must be 'auto', 'compiled' or 'stages', got ${JSON.stringify(engine)}`,
    );
  }
  const pruneExits = options.pruneExits ?? LOAD_DEFAULTS.pruneExits;
  if (typeof pruneExits !== 'boolean') {
    throw new SelfxitError('INVALID_ARGUMENT', `pruneExits must be a boolean, got ${JSON.stringify(pruneExits)}`);
  }
  const sharedMemory = options.sharedMemory ?? LOAD_DEFAULTS.sharedMemory;
  if (typeof sharedMemory !== 'boolean') {
    throw new SelfxitError('INVALID_ARGUMENT', `sharedMemory must be a boolean, got ${JSON.stringify(sharedMemory)}`);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new SelfxitError('INVALID_ARGUMENT', 'onProgress must be a function');
  }
  const base = documentBase();
  const learn = resolveLearn(options.learn, bundleUrl, base, cache);
  const normWarning =
    learn && !learn.fromBundle
      ? defaultNormalisationWarning(typeof options.learn === 'object' ? options.learn.input : undefined)
      : undefined;
  // No wasmPaths: the worker loads onnxruntime-web's files from `ort/` beside itself, through `new URL` literals
  // that bundlers follow (src/runtime/ort-backend.ts).
  const wasmPaths = options.wasmPaths === undefined ? undefined : toUrl(options.wasmPaths, 'wasmPaths', base).href;
  return {
    init: {
      manifestUrl:
        learn && !learn.fromBundle ? toUrl(bundleUrl, 'bundleUrl', base).href : manifestUrlOf(bundleUrl, base),
      backend,
      threads,
      cache,
      manifestMaxAgeMs,
      wasmPaths: wasmPaths === undefined || wasmPaths.endsWith('/') ? wasmPaths : `${wasmPaths}/`,
      usePlan: plan === 'cached',
      engine,
      pruneExits,
      ...(learn ? { learn } : {}),
    },
    onProgress: options.onProgress,
    timeoutMs: durationMs(options.timeoutMs, 'timeoutMs', LOAD_DEFAULTS.timeoutMs),
    signal: checkSignal(options.signal),
    liveness: {
      heartbeatMs: livenessMs(options.heartbeatMs, 'heartbeatMs', LOAD_DEFAULTS.heartbeatMs),
      callTimeoutMs: livenessMs(options.callTimeoutMs, 'callTimeoutMs', LOAD_DEFAULTS.callTimeoutMs),
    },
    sharedMemory,
    warnings: normWarning ? [normWarning] : [],
    workerUrl: options.workerUrl === undefined ? undefined : toUrl(options.workerUrl, 'workerUrl', base),
  };
}

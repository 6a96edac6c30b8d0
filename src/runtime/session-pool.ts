// The worker's segment sessions: created lazily from the bundle's files (integrity-checked, warmed up, progress reported),
// every ORT call through one queue, and the WebGPU → WASM fallback written once ({@link SessionPool.withFallback}); a
// batch run out of GPU memory on a working device rejects with OUT_OF_MEMORY instead (a smaller batch stays on WebGPU).
// A segment with quantized ops never runs on WebGPU, which computes them wrongly: every segment moves to WASM first.
import type { BundleManifest } from '../bundle/manifest.js';
import { LazySessions, type SessionProvider } from '../engine/stage-runner.js';
import { SelfxitError, isOutOfMemory, isSelfxitError } from '../errors.js';
import { quantizedOps } from '../graph/quant-ops.js';
import type { OrtSession } from '../ort/types.js';
import type { BundleSource, Progress } from './bundle-source.js';
import {
  checkClassOutputs,
  quantizedFallbackReason,
  sessionCreateError,
  sessionOptions,
  type OrtHandle,
} from './ort-backend.js';
import { inputDims } from './preprocess.js';
import { SerialQueue } from './queue.js';

/** How {@link SessionPool.withFallback} treats a failure. */
interface FallbackOptions<T> {
  /** What failed, for the fallback reason (`<reason>: <error message>`). */
  readonly reason: string;
  /** What was in progress ('classifying'): a failure once the pool is disposed becomes DISPOSED "… while <during>". */
  readonly during?: string;
  /** Fall back on a SelfxitError too (by default it is the bundle's or the caller's fault, the same on any backend). */
  readonly anyError?: boolean;
  /** Run again when `job` succeeded but the backend changed meanwhile (its result was made partly on the old one). */
  readonly redoIfSwitched?: boolean;
  /** What runs after the fallback. Default: `job` again. */
  readonly retry?: () => Promise<T>;
  /**
   * How many inputs `job` runs at once (default 1): out of GPU memory with more than one, on a working device, the call
   * rejects with OUT_OF_MEMORY (a smaller batch may fit); with one, no smaller call would, so WASM takes over.
   */
  readonly rows?: number;
}

/** The sessions of one open bundle, on the backend in use; the SessionProvider of the worker's stage runner. */
export class SessionPool implements SessionProvider {
  /** The one queue for every onnxruntime call in the worker. */
  readonly queue = new SerialQueue();
  /** Whether each segment's session exists on the current backend (for the page's `info()`). */
  readonly created: boolean[];
  private readonly sessions = new LazySessions((s) => this.createSession(s));
  /** Sessions made on WebGPU: the ones a fallback releases. */
  private readonly onWebGpu = new WeakSet<OrtSession>();
  /** Bumped when the backend changes (WebGPU → WASM fallback); sessions of older generations are gone. */
  private generation = 0;
  private disposedFlag = false;
  /** Each segment's verified bytes once loaded, when kept (`keepBytes`: the compiled engine compiles from them). */
  private readonly bytes: (Uint8Array | undefined)[] = [];
  /** Whether each segment's bytes were loaded and verified (its session made once). */
  private readonly loaded: boolean[];
  /** Bytes of a segment whose load moved the pool to WASM ({@link wasmOnlyReason}), for the load that replaces it. */
  private readonly handedOver: (Uint8Array | undefined)[] = [];

  constructor(
    private readonly manifest: BundleManifest,
    readonly ort: OrtHandle,
    private readonly source: BundleSource,
    private readonly progress: Progress,
    private keepBytes = false,
    /** Told the quantized ops a segment's bytes were found to hold (a bundle without `backbone.quantized`). */
    private readonly onQuantized: (ops: readonly string[]) => void = () => {},
  ) {
    this.created = manifest.segments.map(() => false);
    this.loaded = manifest.segments.map(() => false);
  }

  /** How many leading segments have loaded: segments 0 .. count - 1. */
  loadedCount(): number {
    const n = this.loaded.indexOf(false);
    return n < 0 ? this.loaded.length : n;
  }

  /**
   * The bytes of segments 0 .. count - 1: those kept (`keepBytes`), else read again from the bundle source (the cache,
   * re-verified, else fetched), without progress reports.
   */
  prefixBytes(count: number): Promise<Uint8Array[]> {
    return Promise.all(
      Array.from({ length: count }, (_, s) => this.bytes[s] ?? this.source.segmentBytes(s, { report: false })),
    );
  }

  /** Whether every segment's bytes are known to be in the bundle cache (read from it, or their write landed). */
  segmentsCached(): boolean {
    return this.source.cachedSegments.every(Boolean);
  }

  /**
   * Stops keeping segment bytes (frees those held): once every model the compiled engine may make again can come from
   * the bundle cache, which holds the segments too ({@link prefixBytes}, {@link segmentsCached}).
   */
  dropBytes(): void {
    this.keepBytes = false;
    this.bytes.length = 0;
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  /** Changes when the backend does (WebGPU → WASM fallback): work begun under another value is of the old backend. */
  get backendGeneration(): number {
    return this.generation;
  }

  /** Session of segment `s`, created once (concurrent callers share it; a failure is retried on the next call). */
  session(s: number): Promise<OrtSession> {
    if (this.disposedFlag) return Promise.reject(new SelfxitError('DISPOSED', 'the classifier was disposed'));
    return this.sessions.session(s);
  }

  /**
   * The WebGPU → WASM fallback: runs `job`; when it fails on WebGPU (with an error `options` let through), switches every
   * segment to WASM and runs `options.retry` (default `job`) once. A job that failed after another call switched the
   * backend runs again without a second switch. A run of more than one row (`options.rows`) out of memory (not
   * `anyError`: session creation falls back) while segment 0 still runs on the device rejects with OUT_OF_MEMORY, and
   * WebGPU stays; one row out of memory (a later segment too large for the device) falls back. (The compiled model out
   * of memory on one input does not come here: the compiled engine turns itself off and the stages run on WebGPU.)
   */
  async withFallback<T>(job: () => Promise<T>, options: FallbackOptions<T>): Promise<T> {
    const gen = this.generation;
    let value: T;
    try {
      value = await job();
    } catch (e) {
      this.throwIfDisposed(options.during);
      if (isSelfxitError(e) && !options.anyError) throw e;
      if (gen === this.generation) {
        if (this.ort.backend !== 'webgpu') throw e;
        // Out of GPU memory on a batch with the device still working (a smaller batch may fit): this call fails, WebGPU
        // stays. One input out of memory (a stage) would fail every time: WASM takes over.
        const batch = (options.rows ?? 1) > 1;
        if (!options.anyError && batch && isOutOfMemory(e) && (await this.deviceWorks()) && gen === this.generation) {
          const message = `${options.reason}: out of WebGPU memory (${(e as Error).message}): try smaller batches`;
          throw new SelfxitError('OUT_OF_MEMORY', message, { backend: 'webgpu' }, { cause: e });
        }
        if (gen === this.generation) this.fallbackToWasm(`${options.reason}: ${(e as Error).message}`);
      }
      return this.once(options.retry ?? job, options.during);
    }
    return options.redoIfSwitched && gen !== this.generation ? this.once(job, options.during) : value;
  }

  private async once<T>(job: () => Promise<T>, during: string | undefined): Promise<T> {
    try {
      return await job();
    } catch (e) {
      this.throwIfDisposed(during);
      throw e;
    }
  }

  private throwIfDisposed(during: string | undefined): void {
    if (during !== undefined && this.disposedFlag)
      throw new SelfxitError('DISPOSED', `the classifier was disposed while ${during}`);
  }

  /** Segment `s`'s session: its bytes, then the session on the current backend, on WASM when WebGPU cannot make it. */
  private async createSession(s: number): Promise<OrtSession> {
    const bytes = this.handedOver[s] ?? (await this.source.segmentBytes(s));
    this.handedOver[s] = undefined;
    if (this.disposedFlag) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    const wasmOnly = this.wasmOnlyReason(bytes);
    if (wasmOnly !== undefined) {
      // every segment to WASM (this load forgotten with the others); the WASM load takes these bytes, not another fetch
      this.handedOver[s] = bytes;
      this.fallbackToWasm(wasmOnly);
      return this.session(s);
    }
    const session = await this.withFallback(() => this.createOnBackend(bytes, s), {
      reason: `creating a WebGPU session for segment ${s} failed`,
      anyError: true, // a session WebGPU cannot create may still load on WASM
      retry: () => this.session(s), // the fallback dropped this load: the WASM one is made as a shared one
    });
    if (this.keepBytes) this.bytes[s] = bytes;
    this.loaded[s] = true;
    return session;
  }

  /**
   * Why the segment of `bytes` may not run on WebGPU while that is the backend: the model's quantized ops, which
   * onnxruntime-web's WebGPU backend computes wrongly. The manifest's `backbone.quantized` decides; only a bundle written
   * before that field has its segments' bytes looked at (graph/quant-ops.ts, no decode). Undefined on WASM.
   */
  private wasmOnlyReason(bytes: Uint8Array): string | undefined {
    if (this.ort.backend !== 'webgpu') return undefined;
    const flagged = this.manifest.backbone.quantized;
    if (flagged !== undefined) return flagged ? quantizedFallbackReason() : undefined;
    const ops = quantizedOps(bytes);
    if (ops.length === 0) return undefined;
    this.onQuantized(ops);
    return quantizedFallbackReason(ops);
  }

  /** Whether segment 0 still runs one input on the backend in use (after an out-of-memory error: is the device lost?). */
  async deviceWorks(): Promise<boolean> {
    try {
      const session = await this.session(0);
      await this.warmUp(session, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** Creates and warms up (one run on zeros, compiling shaders on WebGPU) segment `s`'s session on the current backend. */
  private async createOnBackend(bytes: Uint8Array, s: number): Promise<OrtSession> {
    const seg = this.manifest.segments[s]!;
    const last = s === this.manifest.segments.length - 1;
    const options = sessionOptions(this.ort, last ? [] : [seg.output]);
    const onWebGpu = this.ort.backend === 'webgpu';
    const session = await this.queue.run(async () => {
      try {
        return await checkClassOutputs(await this.ort.ort.InferenceSession.create(bytes, options), this.manifest, s);
      } catch (e) {
        throw sessionCreateError(e, this.ort, s, seg.file);
      }
    });
    if (onWebGpu) this.onWebGpu.add(session);
    try {
      await this.warmUp(session, s);
    } catch (e) {
      await this.queue.run(() => session.release()).catch(() => {});
      throw e;
    }
    this.created[s] = true;
    this.progress({ status: 'ready', file: seg.file, segment: s, backend: this.ort.backend });
    return session;
  }

  /** One run of segment `s`'s `session` on zeros at batch 1 (nothing when its input shape is not fully known). */
  private async warmUp(session: OrtSession, s: number): Promise<void> {
    const seg = this.manifest.segments[s]!;
    const dims = this.warmupDims(session, s);
    if (dims) {
      const size = dims.reduce((a, b) => a * b, 1);
      const { Tensor } = this.ort.ort;
      const type = this.warmupType(session, s); // a quantized model's segments pass uint8/int8 cuts
      const zeros =
        type === 'uint8'
          ? new Tensor('uint8', new Uint8Array(size), dims)
          : type === 'int8'
            ? new Tensor('int8', new Int8Array(size), dims)
            : new Tensor('float32', new Float32Array(size), dims);
      const out = await this.queue.run(() => session.run({ [seg.input]: zeros }));
      for (const t of Object.values(out)) if (t.location === 'gpu-buffer') t.dispose();
    }
  }

  /** Element type of segment `s`'s input, where the session says (float32 when not). */
  private warmupType(session: OrtSession, s: number): string {
    if (s === 0) return 'float32';
    const meta = session.inputMetadata?.find((m) => m.name === this.manifest.segments[s]!.input);
    return meta?.isTensor ? meta.type : 'float32';
  }

  /** Input dims for a batch-1 warm-up run, or undefined when the input shape is not fully known. */
  private warmupDims(session: OrtSession, s: number): number[] | undefined {
    if (s === 0) return inputDims(this.manifest.input, 1);
    const meta = session.inputMetadata?.find((m) => m.name === this.manifest.segments[s]!.input);
    if (!meta || !meta.isTensor) return undefined;
    const dims = meta.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? 1 : -1));
    return dims.every((d) => d > 0) ? dims : undefined;
  }

  /** Switches every segment to WASM (same JSEP module), releasing the WebGPU sessions. */
  private fallbackToWasm(reason: string): void {
    this.ort.backend = 'wasm';
    this.ort.fallbackReason = reason;
    this.generation++;
    this.created.fill(false);
    for (const p of this.sessions.clear()) {
      // A load in flight may end on WASM (the one falling back here): only WebGPU sessions go.
      void p
        .then((sess) => (this.onWebGpu.has(sess) ? this.queue.run(() => sess.release()) : undefined))
        .catch(() => {});
    }
  }

  /** Releases every session. Later calls fail with DISPOSED. */
  async dispose(): Promise<void> {
    if (this.disposedFlag) return;
    this.disposedFlag = true;
    await this.sessions.releaseAll(this.queue).catch(() => undefined);
  }
}

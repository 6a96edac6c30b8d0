// The worker-side classifier: opens a bundle (manifest from cache or network), creates segment sessions
// lazily with integrity checks and progress, classifies batches with the shared cascade (runCascade), and
// makes device plans (stage times measured here + the bundle's validation file → planExits, cached).
import type { InferenceSession } from 'onnxruntime-common';
import { validateManifest, type BundleManifest } from '../bundle/manifest.js';
import { decodeValidation, VALIDATION_ENCODING, type ValidationExit } from '../bundle/validation-file.js';
import { checkTarget } from '../policy/bounds.js';
import { planExits, type DevicePlan, type StageTimings } from '../policy/device-plan.js';
import { runCascade } from '../engine/cascade.js';
import { SelfxitError, isSelfxitError } from '../errors.js';
import type { ClassifyRequest, InitRequest, PlanRequest, ProgressInfo, RuntimeState, WireResult } from '../protocol.js';
import { IdbBundleCache, noCache, planKey, type BundleCache } from './cache.js';
import { fetchBytes, fetchText } from './fetch-file.js';
import { sha256Hex } from './integrity.js';
import { DEFAULT_MEASURE_RUNS, measureStages } from './measure.js';
import { loadOrt, sessionOptions, type OrtHandle } from './ort-backend.js';
import { inputDims, inputSize, preprocessInto } from './preprocess.js';
import { SerialQueue } from './queue.js';
import { OrtStageRunner } from './stage-runner.js';

/** Samples per cascade run inside one classify request (bigger requests are cut into chunks of this size). */
export const MAX_BATCH = 64;

/** Injected dependencies, for tests: the cache and the ORT loader. */
export interface RuntimeDeps {
  readonly cache?: BundleCache;
  readonly loadOrt?: (request: InitRequest) => Promise<OrtHandle>;
  readonly now?: () => number;
}

type Progress = (p: ProgressInfo) => void;

interface LoadedManifest {
  readonly manifest: BundleManifest;
  readonly hash: string;
  readonly fromCache: boolean;
}

function parseManifest(text: string, url: string): BundleManifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SelfxitError(
      'INVALID_BUNDLE',
      `Invalid bundle manifest at ${url}: not JSON (${(e as Error).message})`,
      { url },
      { cause: e },
    );
  }
  const m = validateManifest(json);
  const { input } = m;
  if (
    !(input.height > 0 && input.width > 0) ||
    (input.channels !== 1 && input.channels !== 3) ||
    (input.layout !== 'NCHW' && input.layout !== 'NHWC')
  ) {
    throw new SelfxitError(
      'INVALID_BUNDLE',
      `Invalid bundle manifest at ${url}: input spec ${JSON.stringify(input)} is not usable`,
      { url },
    );
  }
  if (m.labels.length === 0)
    throw new SelfxitError('INVALID_BUNDLE', `Invalid bundle manifest at ${url}: no labels`, { url });
  for (const s of m.segments) {
    if (!s.input || !s.output)
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `Invalid bundle manifest at ${url}: segment ${s.file} lacks input/output names`,
        { url },
      );
  }
  return m;
}

/** sha256 of the files a manifest lists that the cache keeps by content: segments and the validation file. */
function contentHashes(m: Partial<BundleManifest>): string[] {
  const all: unknown[] = [...(m.segments ?? []).map((s) => s.sha256), m.calibration?.validation?.sha256];
  return all.filter((h): h is string => typeof h === 'string');
}

/** A bundle file the runtime fetches: name, sha256 and announced size; `segment` for segment files. */
interface BundleFile {
  readonly file: string;
  readonly sha256: string;
  readonly bytes: number;
  readonly url: string;
  readonly segment?: number;
}

/** Manifest for `url`: the cached copy unless reload/expired, else fetched, validated and cached (evicting what a new version replaces). */
async function loadManifest(
  url: string,
  req: InitRequest,
  cache: BundleCache,
  now: number,
  progress: Progress,
): Promise<LoadedManifest> {
  const file = 'manifest.json';
  progress({ status: 'initiate', file });
  const cached = req.cache === 'reload' ? undefined : await cache.getManifest(url);
  if (cached && now - cached.storedAt <= req.manifestMaxAgeMs) {
    try {
      const manifest = parseManifest(cached.text, url);
      progress({ status: 'done', file, fromCache: true });
      return { manifest, hash: cached.hash, fromCache: true };
    } catch {
      await cache.deleteManifest(url); // written by another selfxit version: fetch it again
    }
  }
  progress({ status: 'download', file });
  const text = await fetchText(url);
  const manifest = parseManifest(text, url);
  const hash = await sha256Hex(text);
  const previous = cached ?? (req.cache === 'reload' ? await cache.getManifest(url) : undefined);
  if (previous && previous.hash !== hash) {
    // A new bundle version at the same URL: drop the old version's plans, and its segments (and validation file)
    // that the new one does not use.
    await cache.deletePlans(previous.hash);
    try {
      const old = JSON.parse(previous.text) as Partial<BundleManifest>;
      const keep = new Set(contentHashes(manifest));
      const stale = contentHashes(old).filter((h) => !keep.has(h));
      await cache.deleteSegments(stale);
    } catch {
      // an unreadable old manifest has nothing to evict
    }
  }
  await cache.putManifest(url, { hash, text, storedAt: now });
  progress({ status: 'done', file, fromCache: false });
  return { manifest, hash, fromCache: false };
}

/** One open bundle in the worker. Create with {@link BundleRuntime.open}. */
export class BundleRuntime {
  private readonly queue = new SerialQueue();
  private readonly sessions = new Map<number, Promise<InferenceSession>>();
  private readonly created: boolean[];
  private readonly cachedSegments: boolean[];
  private readonly segmentUrls: string[];
  private disposed = false;
  /** Progress listener of the plan() call in flight, besides the one given at open(). */
  private planProgress: Progress | undefined;
  /** plan() calls run one after another (concurrent measurements would disturb each other's timings). */
  private planning: Promise<unknown> = Promise.resolve();
  /** Bumped when the backend changes (WebGPU → WASM fallback); sessions of older generations are gone. */
  private generation = 0;

  private constructor(
    readonly manifest: BundleManifest,
    readonly manifestHash: string,
    private readonly manifestFromCache: boolean,
    private readonly ort: OrtHandle,
    private readonly cache: BundleCache,
    private readonly openProgress: Progress,
    private readonly manifestUrl: string,
    cachedKeys: ReadonlySet<string>,
  ) {
    this.created = manifest.segments.map(() => false);
    this.cachedSegments = manifest.segments.map((s) => cachedKeys.has(s.sha256));
    this.segmentUrls = manifest.segments.map((s) => new URL(s.file, manifestUrl).href);
  }

  /**
   * Opens the bundle at `req.manifestUrl`: manifest (cache first unless `cache: 'reload'` or older than
   * `manifestMaxAgeMs`), onnxruntime with the chosen backend, then segment 0 (fetched or cached, verified, warmed up).
   * Deeper segments load when a sample first reaches them.
   */
  static async open(req: InitRequest, progress: Progress = () => {}, deps: RuntimeDeps = {}): Promise<BundleRuntime> {
    const cache = deps.cache ?? (req.cache === false ? noCache : new IdbBundleCache());
    const now = (deps.now ?? Date.now)();
    const loaded = await loadManifest(req.manifestUrl, req, cache, now, progress);
    const ort = await (deps.loadOrt ?? loadOrt)(req);
    const keys = await cache.segmentKeys();
    const rt = new BundleRuntime(
      loaded.manifest,
      loaded.hash,
      loaded.fromCache,
      ort,
      cache,
      progress,
      req.manifestUrl,
      keys,
    );
    try {
      await rt.session(0);
    } catch (e) {
      await rt.dispose();
      throw e;
    }
    return rt;
  }

  /** Reports progress to the listener given at open() and to that of the plan() call in flight. */
  private progress(p: ProgressInfo): void {
    this.openProgress(p);
    this.planProgress?.(p);
  }

  /** Snapshot for the page's `info()`. */
  state(): RuntimeState {
    const g = globalThis as { crossOriginIsolated?: boolean };
    return {
      backend: this.ort.backend,
      threads: this.ort.threads,
      crossOriginIsolated: g.crossOriginIsolated === true,
      ...(this.ort.fallbackReason ? { fallbackReason: this.ort.fallbackReason } : {}),
      sessions: [...this.created],
      cachedSegments: [...this.cachedSegments],
      manifestFromCache: this.manifestFromCache,
      cacheEnabled: this.cache.enabled,
    };
  }

  /** Session of segment `s`, created once (concurrent callers share it; a failure is retried on the next call). */
  session(s: number): Promise<InferenceSession> {
    if (this.disposed) return Promise.reject(new SelfxitError('DISPOSED', 'the classifier was disposed'));
    let p = this.sessions.get(s);
    if (!p) {
      const gen = this.generation;
      p = this.createSession(s).catch((e: unknown) => {
        if (this.sessions.get(s) === p && this.generation === gen) this.sessions.delete(s);
        throw e;
      });
      this.sessions.set(s, p);
    }
    return p;
  }

  /** A bundle file's bytes: from the cache (re-verified) or fetched, sha256-checked and cached by content hash. */
  private async fileBytes(f: BundleFile): Promise<Uint8Array> {
    const { file, sha256: expected, url } = f;
    const at = f.segment === undefined ? {} : { segment: f.segment };
    const cached = await this.cache.getSegment(expected);
    if (cached) {
      if ((await sha256Hex(cached)) === expected) {
        this.progress({ status: 'done', file, ...at, fromCache: true });
        return cached;
      }
      await this.cache.deleteSegments([expected]); // corrupted in storage: fetch again
      if (f.segment !== undefined) this.cachedSegments[f.segment] = false;
    }
    this.progress({ status: 'download', file, ...at });
    const bytes = await fetchBytes(url, {
      expectedBytes: f.bytes,
      onProgress: (loaded, total) =>
        this.progress({
          status: 'progress',
          file,
          ...at,
          loaded,
          total,
          progress: total > 0 ? (100 * loaded) / total : Number.NaN,
        }),
    });
    const actual = await sha256Hex(bytes);
    if (actual !== expected) {
      const what = f.segment === undefined ? file : `segment ${f.segment}`;
      throw new SelfxitError(
        'INTEGRITY_ERROR',
        `${what} (${url}) has sha256 ${actual}, the manifest says ${expected}`,
        { url, file, ...at, expected, actual },
      );
    }
    await this.cache.putSegment(expected, bytes);
    if (f.segment !== undefined) this.cachedSegments[f.segment] = this.cache.enabled;
    this.progress({ status: 'done', file, ...at, fromCache: false });
    return bytes;
  }

  private async createSession(s: number): Promise<InferenceSession> {
    const seg = this.manifest.segments[s];
    if (!seg) throw new SelfxitError('INTERNAL', `no segment ${s}`);
    this.progress({ status: 'initiate', file: seg.file, segment: s });
    const bytes = await this.fileBytes({
      file: seg.file,
      sha256: seg.sha256,
      bytes: seg.bytes,
      url: this.segmentUrls[s]!,
      segment: s,
    });
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    const last = s === this.manifest.segments.length - 1;
    let session: InferenceSession;
    try {
      session = await this.createOnBackend(bytes, last ? [] : [seg.output], s);
    } catch (e) {
      if (this.ort.backend !== 'webgpu') throw e;
      await this.fallbackToWasm(`creating a WebGPU session for segment ${s} failed: ${(e as Error).message}`);
      return this.session(s);
    }
    this.created[s] = true;
    this.progress({ status: 'ready', file: seg.file, segment: s, backend: this.ort.backend });
    return session;
  }

  /** Creates and warms up (one run on zeros, compiling shaders on WebGPU) a session on the current backend. */
  private async createOnBackend(bytes: Uint8Array, gpuOutputs: string[], s: number): Promise<InferenceSession> {
    const seg = this.manifest.segments[s]!;
    const options = sessionOptions(this.ort, gpuOutputs);
    const session = await this.queue.run(async () => {
      try {
        return await this.ort.ort.InferenceSession.create(bytes, options);
      } catch (e) {
        throw new SelfxitError(
          'INVALID_BUNDLE',
          `segment ${s} (${seg.file}) cannot be loaded by onnxruntime-web (${this.ort.backend}): ${(e as Error).message}`,
          {
            segment: s,
            file: seg.file,
          },
        );
      }
    });
    const dims = this.warmupDims(session, s);
    if (dims) {
      const zeros = new this.ort.ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
      try {
        const out = await this.queue.run(() => session.run({ [seg.input]: zeros }));
        for (const t of Object.values(out)) if (t.location === 'gpu-buffer') t.dispose();
      } catch (e) {
        await this.queue.run(() => session.release()).catch(() => {});
        throw e;
      }
    }
    return session;
  }

  /** Input dims for a batch-1 warm-up run, or undefined when the input shape is not fully known. */
  private warmupDims(session: InferenceSession, s: number): number[] | undefined {
    if (s === 0) return inputDims(this.manifest.input, 1);
    const meta = session.inputMetadata?.find((m) => m.name === this.manifest.segments[s]!.input);
    if (!meta || !meta.isTensor) return undefined;
    const dims = meta.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? 1 : -1));
    return dims.every((d) => d > 0) ? dims : undefined;
  }

  /** Switches every segment to WASM (same JSEP module), dropping the WebGPU sessions. */
  private async fallbackToWasm(reason: string): Promise<void> {
    if (this.ort.backend !== 'webgpu') return;
    this.ort.backend = 'wasm';
    this.ort.fallbackReason = reason;
    this.generation++;
    const old = [...this.sessions.values()];
    this.sessions.clear();
    this.created.fill(false);
    for (const p of old) {
      void p.then((sess) => this.queue.run(() => sess.release())).catch(() => {});
    }
  }

  /** Classifies every input of the request with the given thresholds. */
  async classify(req: ClassifyRequest): Promise<WireResult[]> {
    if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    const t0 = performance.now();
    const { manifest } = this;
    if (
      req.thresholds.length !== manifest.exits.length ||
      req.thresholds.some((t) => typeof t !== 'number' || Number.isNaN(t))
    ) {
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `expected ${manifest.exits.length} thresholds, got ${JSON.stringify(req.thresholds)}`,
      );
    }
    if (!Array.isArray(req.inputs) || req.inputs.length === 0) return [];
    const size = inputSize(manifest.input);
    const all = new Float32Array(req.inputs.length * size);
    for (let i = 0; i < req.inputs.length; i++) {
      try {
        await preprocessInto(req.inputs[i]!, manifest.input, all, i * size);
      } catch (e) {
        if (isSelfxitError(e) && req.inputs.length > 1) {
          throw new SelfxitError(e.code, `input ${i}: ${e.message}`, { ...e.details, inputIndex: i });
        }
        throw e;
      }
    }
    const results: WireResult[] = [];
    for (let start = 0; start < req.inputs.length; start += MAX_BATCH) {
      const rows = Math.min(MAX_BATCH, req.inputs.length - start);
      results.push(...(await this.runChunk(all.subarray(start * size, (start + rows) * size), rows, req)));
    }
    const totalMs = performance.now() - t0;
    return results.map((r) => ({ ...r, totalMs }));
  }

  private async runChunk(data: Float32Array, rows: number, req: ClassifyRequest): Promise<WireResult[]> {
    const { manifest } = this;
    for (let attempt = 0; ; attempt++) {
      const gen = this.generation;
      const stageMs: number[] = [];
      const runner = new OrtStageRunner({
        Tensor: this.ort.ort.Tensor,
        manifest,
        queue: this.queue,
        session: (s) => this.session(s),
      });
      const input = new this.ort.ort.Tensor('float32', data, inputDims(manifest.input, rows));
      try {
        const out = await runCascade(manifest, runner, input, rows, {
          thresholds: req.thresholds,
          onStage: (s, _rows, ms) => (stageMs[s] = ms),
        });
        return out.map((r) => {
          const lastSegment = r.exit < 0 ? manifest.segments.length - 1 : manifest.exits[r.exit]!.segment;
          return {
            index: r.index,
            confidence: r.confidence,
            exit: r.exit,
            stages: stageMs.slice(0, lastSegment + 1),
            totalMs: 0,
            ...(req.probabilities ? { probabilities: r.probs } : {}),
          };
        });
      } catch (e) {
        if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed while classifying');
        if (isSelfxitError(e) || attempt > 0) throw e;
        if (gen === this.generation) {
          if (this.ort.backend !== 'webgpu') throw e;
          await this.fallbackToWasm(`a WebGPU run failed: ${(e as Error).message}`);
        }
        // the backend changed under this run: retry once on the new one
      }
    }
  }

  /**
   * The cached device plan for this manifest hash and the backend and thread count in use, if one exists and fits
   * the manifest (a malformed or mismatched entry is ignored).
   */
  async cachedPlan(): Promise<DevicePlan | undefined> {
    const { manifest, manifestHash } = this;
    const { backend, threads } = this.ort;
    const p = await this.cache.getPlan(planKey(manifestHash, backend, threads));
    const fits =
      p !== undefined &&
      p.manifestHash === manifestHash &&
      p.backend === backend &&
      p.threads === threads &&
      p.thresholds.length === manifest.exits.length &&
      p.timings.stageMs.length === manifest.segments.length &&
      p.timings.decisionMs.length === manifest.segments.length;
    return fits ? p : undefined;
  }

  /**
   * Times every stage on the backend in use ({@link measureStages}: all sessions are created first, through the
   * lazy loading path). When a WebGPU run fails, falls back to WASM and measures again there.
   * @param runs timed runs per stage and kind. Default {@link DEFAULT_MEASURE_RUNS}.
   */
  async measureTimings(runs = DEFAULT_MEASURE_RUNS): Promise<StageTimings> {
    for (let attempt = 0; ; attempt++) {
      if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
      const gen = this.generation;
      try {
        const timings = await measureStages(
          { Tensor: this.ort.ort.Tensor, manifest: this.manifest, queue: this.queue, session: (s) => this.session(s) },
          runs,
        );
        if (gen === this.generation || attempt > 0) return timings;
        // the backend changed during the measurement: measure again on the new one
      } catch (e) {
        if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed while measuring');
        if (isSelfxitError(e) || attempt > 0) throw e;
        if (gen === this.generation) {
          if (this.ort.backend !== 'webgpu') throw e;
          await this.fallbackToWasm(`a WebGPU run failed while measuring: ${(e as Error).message}`);
        }
      }
    }
  }

  /** The bundle's validation outputs: validation.bin from the cache or fetched (sha256-verified), decoded. */
  private async validation(): Promise<ValidationExit[]> {
    const { manifest, manifestUrl } = this;
    if (manifest.exits.length === 0) return [];
    const v = manifest.calibration.validation;
    if (!v) {
      const why =
        manifest.calibration.mode === 'paper'
          ? 'paper-mode bundles carry none: prepare the model in selfxit mode'
          : 'run `selfxit prepare` again with this selfxit version';
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `the bundle at ${manifestUrl} has no validation file (calibration.validation), which a device plan needs: ${why}`,
        {
          url: manifestUrl,
          mode: manifest.calibration.mode,
        },
      );
    }
    if (
      typeof v.file !== 'string' ||
      typeof v.sha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(v.sha256) ||
      !(Number.isInteger(v.samples) && v.samples > 0)
    ) {
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `the bundle at ${manifestUrl} has a malformed calibration.validation entry`,
        { url: manifestUrl },
      );
    }
    if (v.encoding !== VALIDATION_ENCODING) {
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `${v.file} has encoding ${JSON.stringify(v.encoding)}; this selfxit reads "${VALIDATION_ENCODING}"`,
        { url: manifestUrl, file: v.file },
      );
    }
    const url = new URL(v.file, manifestUrl).href;
    this.progress({ status: 'initiate', file: v.file });
    const bytes = await this.fileBytes({ file: v.file, sha256: v.sha256, bytes: v.bytes, url });
    return decodeValidation(bytes, manifest.exits.length, v.samples);
  }

  /**
   * Makes this device's plan for agreement target `req.target`: the validation file (cached by sha256), stage times
   * measured here ({@link measureTimings}), then {@link planExits}; the plan is cached under
   * `plan:<manifestHash>:<backend>:<threads>` and returned. Calls run one at a time.
   * @throws SelfxitError INVALID_TARGET, INVALID_BUNDLE (no or malformed validation file), INTEGRITY_ERROR, FETCH_FAILED.
   */
  plan(req: PlanRequest, onProgress?: Progress): Promise<DevicePlan> {
    const run = async (): Promise<DevicePlan> => {
      if (this.disposed) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
      const target = req?.target;
      if (typeof target !== 'number') checkTarget(Number.NaN);
      checkTarget(target);
      this.planProgress = onProgress;
      try {
        const validation = await this.validation();
        const timings = await this.measureTimings();
        const { backend, threads } = this.ort;
        const plan = planExits(this.manifest, validation, timings, {
          target,
          manifestHash: this.manifestHash,
          backend,
          threads,
        });
        await this.cache.putPlan(planKey(this.manifestHash, backend, threads), plan);
        return plan;
      } finally {
        this.planProgress = undefined;
      }
    };
    const result = this.planning.then(run, run);
    this.planning = result.catch(() => undefined);
    return result;
  }

  /** Releases every session. Later calls fail with DISPOSED. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(
      all.map((p) =>
        p.then(
          (s) => this.queue.run(() => s.release()),
          () => undefined,
        ),
      ),
    ).catch(() => undefined);
  }
}

// The compiled engine for batch-1 calls: the segments loaded so far as ONE onnxruntime model with `If` exits
// (compileBundleCascade), thresholds fed as an input; an input no compiled exit takes continues stage by stage from the cut.
// Over 400 lines: the three models' switching (background builds, backend fallback, disposal, the spare kept for
// pruning probes) shares its state here.
import { compileBundleCascade, compileBundleChain } from '../bundle/compiled-cascade.js';
import type { BundleManifest } from '../bundle/manifest.js';
import { argmaxRow, runCascade, softmaxRow, type CascadeResult, type StageRunner } from '../engine/cascade.js';
import type { OrtStageRunner } from '../engine/stage-runner.js';
import { isOutOfMemory, isSelfxitError, SelfxitError } from '../errors.js';
import { CASCADE_IO, cascadeThresholds, EXIT_INDEX_CONTINUE, EXIT_INDEX_FULL } from '../graph/compile-cascade.js';
import { decodeModel, encodeModel, sha256Hex } from '../graph/index.js';
import type { OrtSession, OrtTensor } from '../ort/types.js';
import type { Backend } from '../protocol.js';
import { sessionOptions } from './ort-backend.js';
import { inputDims } from './preprocess.js';
import { compiledKey, verifiedCompiled, type BundleCache } from './cache.js';
import type { CallProfiler } from './profile.js';
import { sameItems } from './same-items.js';
import type { SessionPool } from './session-pool.js';

/**
 * The most segment bytes (the bundle's weights) for which the gated model stays loaded beside the exit-free one, for
 * pruning probes: two sessions of the whole model are held then.
 */
export const SPARE_MAX_BYTES = 64 * 1024 * 1024;

/** `ms` spread evenly over `n` segments (a packed array: `new Array(n).fill()` makes a slow holey one). */
export function spread(ms: number, n: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < n; s++) out.push(ms / n);
  return out;
}

/** `runner` with segments 0 .. count - 1 already run (by a compiled prefix): they pass on, the last of them `cut`, and
 * never exit; later segments run as `runner` runs them. */
export function skippingRunner(
  runner: OrtStageRunner,
  count: number,
  cut: OrtTensor | undefined,
): StageRunner<OrtTensor> {
  return {
    runStage: async (s, input, rows, readExit) =>
      s < count ? { next: s === count - 1 ? cut! : input } : runner.runStage(s, input, rows, readExit),
    selectRows: (a, keep, rows) => runner.selectRows(a, keep, rows),
    release: (a) => runner.release(a),
  };
}

/** A batch-1 decision of the compiled engine, with the wall ms of each segment the input ran. */
export interface CompiledResult extends CascadeResult {
  readonly stages: number[];
}

/** The model of the prefix the thresholds in use want: no exit disabled ('ungated'), some (`drop:<exits>`: those
 * exits left out, heads and all: compileBundleCascade's `dropped`), every one ('chain': compileBundleChain's exit-free
 * model, the backbone's own graph: the full model's cost; its one input is the image, its one output the last
 * segment's); or 'gated' (every exit, heads gated: compileCascade's gateHeads), which device plans measure. */
type ModelKind = 'ungated' | 'gated' | 'chain' | `drop:${string}`;
/** The cache key of a model kind made from the prefix whose key is `base`. */
const kindKey = (base: string, kind: ModelKind): string => (kind === 'ungated' ? base : `${base}:${kind}`);
/** Each `drop:` kind's exits, parsed once (the classify path asks on every call). */
const droppedSets = new Map<string, ReadonlySet<number>>();
/** The exits a `drop:` kind leaves out (none for the other kinds; 'chain' has none at all: see {@link lacks}). */
function droppedOf(kind: ModelKind): ReadonlySet<number> {
  let set = droppedSets.get(kind);
  if (!set)
    droppedSets.set(kind, (set = new Set(kind.startsWith('drop:') ? kind.slice(5).split(',').map(Number) : [])));
  return set;
}
/** Whether a model of `kind` cannot decide exit `e` (it left it out). */
const lacks = (kind: ModelKind, e: number): boolean => kind === 'chain' || droppedOf(kind).has(e);
/** Whether a model of `kind` leaves some exit out (so a pruning probe that enables it needs another model). */
const lacksSome = (kind: ModelKind): boolean => kind === 'chain' || kind.startsWith('drop:');

interface Compiled {
  readonly session: OrtSession;
  /**
   * The exit-free model's ('chain') one output, fetched alone: the backbone's output (logits or probabilities as
   * `backbone.outputKind` says) when `count` is every segment, else the cut activation to continue from.
   */
  readonly chainOutput?: readonly [string];
  /** Segments 0 .. count - 1 are in the model; `count` < segments: a prefix ending in 'continue'. */
  readonly count: number;
  readonly backend: Backend;
  readonly kind: ModelKind;
  /** Replaced (another model is in use, or none: failed, disposed): its release is queued; later runs take the new one. */
  retired: boolean;
}

/**
 * The compiled model of the loaded segment prefix, made at open and again, before the next call, whenever more leading
 * segments have loaded (the stage engine loads them lazily for inputs that continue past the prefix) or the backend
 * changed (WebGPU → WASM fallback). When the segments cannot be composed (SelfxitError from the compiler) or onnxruntime
 * cannot load the composed model, the engine is off for good and {@link failure} says why: the runtime uses the stages.
 * Compiled models are cached per manifest hash, backend, prefix length and gating, their sha256 checked on every read
 * (every ungated prefix is kept, as each open walks through them again; a longer model of another kind evicts the
 * shorter ones of its kind but prefix 1: {@link evictShorter}).
 * While a classify call's thresholds disable some exits (above 1: NEVER_EXIT; live pruning's exits from the back, a
 * plan's), the next calls run a model without them (`drop:`: their heads removed, no gate on the others, so the exits
 * left cost what they cost in the ungated model); while they disable EVERY exit (live pruning's worst case), the
 * exit-free 'chain' model (no head, no `If`: the full model's cost). The call itself runs on the model at hand, which
 * decides the same. A call that enables an exit the model at hand left out (a pruning probe) runs a spare model with
 * it instead: the one it replaced, kept loaded beside it, or one made in the background after a probe found none (of
 * that probe's thresholds and the prefix in use; only for bundles of at most {@link SPARE_MAX_BYTES} of segments, as
 * two models are held then); the spare goes back in use without a build when the calls want its kind again; with no
 * spare a probe runs the stages. A device plan's measurement holds the gated model ({@link withGated}: every exit, a
 * disabled one skips its head), which measures what each exit costs. A switch (plan(), setTarget(), a longer prefix) makes the other model in the background,
 * from the bundle cache when an earlier build stored it, else compiled (the first model of each kind and prefix, and
 * every switch when the cache does not keep them: only the bytes of the model in use are held here; the pool's segment bytes, from which models are compiled, are let go once the whole bundle is
 * compiled and the cache is known to hold its model and every segment: a later compile reads them from the cache),
 * while calls keep running on the model in use (same decisions; a shorter prefix continues stage by stage); once the new session
 * is made and warmed up it takes over and the old one is released after the runs queued on it. So two compiled
 * sessions coexist only while one is being made, or while a model without some exits serves beside its spare; a call waits for a build only when no model of the backend in use is
 * at hand (the first one; after a WebGPU → WASM fallback, when the old one goes first) or always, for an engine made
 * with `background: false` (nested in another runtime's queued jobs). Onnxruntime runs one job at a time (queue.ts): a
 * call arriving during the new session's creation or a warm-up run still waits for that one step.
 */
export class CompiledEngine {
  /** Why the compiled engine is off (the runtime then runs the stage engine), once that happened. */
  failure: string | undefined;
  /** The model in use (undefined before the first is made, after a backend change, a failure or dispose()). */
  private current: Compiled | undefined;
  /** While a model without some exits is in use: a model with them (the one it replaced), kept for pruning probes. */
  private spare: Compiled | undefined;
  /** The build under way, if any (one at a time): the next model in use. */
  private building: Promise<Compiled | undefined> | undefined;
  /** The bytes of the model in use (by cache key), when the bundle cache is not known to hold it: only that kind's
   * (a switch to another kind recompiles it from the segment bytes, which the pool holds in that case). */
  private held: { readonly key: string; readonly bytes: Uint8Array } | undefined;
  /** The last thresholds tensor made, reused while the thresholds stay the same (setTarget() changes them). */
  private thresholds: { readonly values: readonly number[]; readonly tensor: OrtTensor } | undefined;
  /** The input's dims at batch 1 (every run's input tensor is made with them). */
  private readonly inputDims: readonly number[];
  /**
   * The last input tensor made and its data: the runtime hands in the same buffer call after call (refilled; runs read
   * it when they start), so its tensor is made again only for another buffer.
   */
  private input: { readonly data: Float32Array; readonly tensor: OrtTensor } | undefined;
  /** The model the next calls run: the last classify call's thresholds disabled no exit, some, or every one. */
  private want: ModelKind = 'ungated';
  /** The kind of spare a probe on the exit-free model wanted and found none of (made by the next ready()). */
  private spareWant: ModelKind | undefined;
  /** The backend and prefix (`backend:count`) whose spare could not be made: none is asked for again (probes run the stages). */
  private noSpare: string | undefined;
  /** Whether the last call's requested thresholds enable an exit its pruned ones do not (probes will come). */
  private probing = false;
  /** Measurements under way that need the gated model ({@link withGated}): while any, every call runs it. */
  private gatedHolds = 0;
  /** Set by {@link dispose}: no model is made or run after it. */
  private disposed = false;

  constructor(
    private readonly manifest: BundleManifest,
    private readonly pool: SessionPool,
    private readonly runner: OrtStageRunner,
    private readonly cache: BundleCache,
    private readonly manifestHash: string,
    /**
     * `background: false`: a call whose model does not fit waits for its replacement (made in its turn), as a runtime
     * nested in another one's queued jobs needs (runtime.ts RuntimeDeps.nested): no onnxruntime step may happen
     * outside the caller's job there.
     */
    private readonly options: { readonly background: boolean } = { background: true },
  ) {
    this.inputDims = inputDims(manifest.input, 1);
  }

  /**
   * The compiled model to run a call on, undefined once failed or disposed. When the one in use does not fit the
   * current prefix and gating, its replacement is made in the background (one build at a time, so it may be of the
   * other gating) and the one in use is returned meanwhile; only when none of the backend in use is at hand, or with
   * `background: false`, does this wait for the build.
   */
  async ready(): Promise<Compiled | undefined> {
    if (this.failure !== undefined || this.disposed) return undefined;
    const now = this.readyNow();
    if (now) return now;
    const c = this.current;
    const usable = this.options.background && c?.backend === this.pool.ort.backend;
    if (!this.building) {
      const made = this.build(this.wanted(), usable);
      // No call awaits a background build: an unexpected error (a bug) turns the engine off as a failed build does.
      const settled = usable
        ? made.catch((e: unknown) => this.fail(`making the compiled model failed: ${(e as Error).message}`))
        : made;
      this.building = settled.finally(() => (this.building = undefined));
    }
    return usable ? c : this.building;
  }

  /**
   * {@link ready} when the model in use fits (the steady state), without a promise; undefined otherwise (ready() then
   * says which model runs).
   */
  readyNow(): Compiled | undefined {
    const c = this.current;
    if (this.failure !== undefined || this.disposed || !c || !this.fits(c)) return undefined;
    this.makeSpare(c);
    return c;
  }

  /**
   * While `c`, a model without some exits, serves and a probe since found no spare of its prefix and backend: makes one in the
   * background (of the kind that probe wanted), unless a build is under way, the engine runs nested, or the bundle is
   * too large to hold two models ({@link SPARE_MAX_BYTES}).
   */
  private makeSpare(c: Compiled): void {
    const kind = this.spareWant;
    const s = this.spare;
    if (!kind || !this.probing || !lacksSome(c.kind) || this.building || !this.options.background) return;
    if (!this.spareFits()) return;
    if (s && s.backend === c.backend && s.count >= c.count && s.kind === kind) return;
    if (this.noSpare === `${c.backend}:${c.count}`) return;
    this.spareWant = undefined;
    // The spare is optional: an error making it (a bug included) leaves the model in use and the engine on.
    const made = this.build(kind, true, true).catch(() => this.spareFailed());

    this.building = made.finally(() => (this.building = undefined));
  }

  /**
   * Sets the model the next calls want from thresholds about to be used (the pruned state a runtime recalled at open),
   * before the first call says so: open then makes that one first.
   */
  prefer(thresholds: readonly number[]): void {
    this.want = this.kindFor(thresholds);
  }

  /** The model kind for calls with thresholds `t`: a missing threshold never fires, as one above 1. */
  private kindFor(t: readonly number[]): ModelKind {
    const n = this.manifest.exits.length;
    const off: number[] = [];
    for (let e = 0; e < n; e++) if (!((t[e] ?? Infinity) <= 1)) off.push(e);
    return off.length === 0 ? 'ungated' : off.length < n ? `drop:${off.join(',')}` : 'chain';
  }

  /** Whether `m` can decide every exit in its prefix that `thresholds` enable. */
  private serves(m: Compiled, thresholds: readonly number[]): boolean {
    if (!lacksSome(m.kind)) return true;
    const { exits } = this.manifest;
    for (let e = 0; e < exits.length; e++)
      if (exits[e]!.segment < m.count && (thresholds[e] ?? Infinity) <= 1 && lacks(m.kind, e)) return false;
    return true;
  }

  /** Resolves once no model is being made (a failed build: see {@link failure}). */
  async idle(): Promise<void> {
    while (this.building) await this.building.catch(() => undefined);
  }

  /** The model the next calls run: as the last call's thresholds want, gated while a measurement holds it. */
  private wanted(): ModelKind {
    return this.gatedHolds > 0 ? 'gated' : this.want;
  }

  /** Whether `c` is the model the next calls should run: backend in use, the whole loaded prefix, the gating wanted. */
  private fits(c: Compiled): boolean {
    return c.backend === this.pool.ort.backend && c.count >= this.pool.loadedCount() && c.kind === this.wanted();
  }

  /**
   * Calls `fn` with the gated model of the whole loaded prefix in use (made now if needed; undefined once failed), and
   * keeps every call on it until `fn` ends: device plans time it, as there a disabled exit skips its head, so what an
   * exit in use costs can be measured. It decides as the ungated one. A build under way (of either gating, e.g. the
   * ungated one a call started just before) is awaited first, as it would replace the model measured.
   * @throws SelfxitError DISPOSED once {@link dispose} began.
   */
  async withGated<T>(fn: (c: Compiled | undefined) => Promise<T>): Promise<T> {
    this.gatedHolds++;
    try {
      let c: Compiled | undefined;
      do {
        await this.building;
        c = await this.ready();
      } while (c && (this.building || !this.fits(c)));
      if (!c && this.disposed) throw this.gone('measuring');
      return await fn(c);
    } finally {
      this.gatedHolds--;
    }
  }

  /**
   * Makes the `kind` model of the loaded prefix on the backend in use and puts it in use, the old one
   * retired once the new one is warmed up; undefined when the engine failed (then the old one is retired too) or
   * dispose() began (then nothing stays made). `background`: a model is in use meanwhile; the call that started this
   * queues its run first. `asSpare`: the model made becomes the spare (the exit-free model stays in use).
   */
  private async build(kind: ModelKind, background: boolean, asSpare = false): Promise<Compiled | undefined> {
    // In the background, a macrotask before the compile and before each onnxruntime step: the calls that arrived
    // meanwhile (the one that started this first) queue their runs on the model in use before it, so each waits for
    // one step at most.
    const turn = (): Promise<unknown> => (background ? new Promise((r) => setTimeout(r, 0)) : Promise.resolve());
    const step = async <T>(job: () => Promise<T>): Promise<T> => {
      await turn();
      return this.pool.queue.run(job);
    };
    await turn();
    if (this.disposed) return undefined;
    const { ort } = this.pool;
    const count = this.pool.loadedCount();
    const backend = ort.backend;
    const generation = this.pool.backendGeneration;
    const spare = this.spare;
    if (!asSpare && spare?.kind === kind && spare.backend === backend && spare.count >= count) {
      // the gated model kept beside the exit-free one goes back in use, no build
      this.spare = undefined;
      this.drop();
      return (this.current = spare);
    }
    const base = compiledKey(this.manifestHash, backend, count);
    const key = kindKey(base, kind);
    const held = this.held?.key === key ? this.held.bytes : undefined;
    let bytes = held ?? (await this.cached(key, count));
    // Whether the cache holds this model: read from it, or its write known to have landed (not dropped nor timed out).
    let stored = held === undefined && bytes !== undefined;
    if (!bytes) {
      let prefix: Uint8Array[];
      try {
        prefix = await this.pool.prefixBytes(count);
      } catch (e) {
        if (this.disposed) return undefined;
        if (asSpare) return this.spareFailed();
        return this.fail(`the segments could not be read again to compile them: ${(e as Error).message}`);
      }
      try {
        bytes = encodeModel(
          kind === 'chain'
            ? compileBundleChain(this.manifest, prefix.map(decodeModel))
            : compileBundleCascade(
                this.manifest,
                prefix.map(decodeModel),
                0,
                'nested',
                kind === 'gated',
                droppedOf(kind),
              ),
        );
      } catch (e) {
        if (!isSelfxitError(e)) throw e;
        if (asSpare) return this.spareFailed();
        return this.fail(`the segments cannot be compiled into one model: ${e.message}`);
      }
      stored = (await this.cache.putCompiled?.(key, { sha256: await sha256Hex(bytes), bytes })) === true;
      await this.evictShorter(backend, count, kind);
    }
    if (this.disposed) return undefined; // dispose() began meanwhile: no session is made
    const cacheKeeps = stored && this.cache.enabled;
    // Every segment is in the model and the bundle cache is known to hold it and every segment: a later build (another
    // kind, a backend fallback) reads them from it, so the pool need not hold the segment bytes (~1x the weights) any
    // more. A write not known to have landed (dropped, or timed out) keeps them, and this model's bytes.
    if (cacheKeeps && count === this.manifest.segments.length && this.pool.segmentsCached()) this.pool.dropBytes();
    if (!asSpare) this.held = cacheKeeps ? undefined : { key, bytes };
    // A model of another backend (WebGPU → WASM fallback) is of no use: it goes first (its runs under way finish).
    if (this.current && this.current.backend !== backend) this.drop();
    let session: OrtSession | undefined;
    try {
      const made = await step(() => ort.ort.InferenceSession.create(bytes, sessionOptions(ort, [])));
      session = made;
      // Warm-up (shader compilation on WebGPU): every exit off, so the whole prefix runs; a gated model once more
      // with every exit on at 1 (its heads run; an input leaves only at a probability of exactly 1).
      const zeros = new Float32Array(this.inputSize());
      for (const t of kind === 'gated' ? [[], this.manifest.exits.map(() => 1)] : [[]])
        if (!this.disposed) await step(() => made.run(this.feeds(zeros, kind === 'chain' ? undefined : t)));
    } catch (e) {
      if (session) await this.release(session);
      if (this.disposed) return undefined;
      if (backend === 'webgpu' && this.pool.backendGeneration === generation) await this.probeDevice();
      // The backend fell back meanwhile (a WebGPU device lost): the next call makes the model on WASM.
      if (this.disposed || this.pool.backendGeneration !== generation) return undefined;
      if (asSpare) return this.spareFailed();
      return this.fail(`onnxruntime (${backend}) cannot run the compiled model: ${(e as Error).message}`);
    }
    if (this.disposed || this.pool.backendGeneration !== generation) {
      // dispose() began while it was made: it never runs; the backend fell back meanwhile: the next call makes another
      await this.release(session);
      return undefined;
    }
    const made: Compiled = {
      session,
      count,
      backend,
      kind,
      retired: false,
      ...(kind === 'chain' ? { chainOutput: [this.manifest.segments[count - 1]!.output] as const } : {}),
    };
    const old = this.current;
    const keepOld = lacksSome(kind) && this.probing && old && !lacksSome(old.kind) && old.backend === backend;
    if (asSpare || (keepOld && this.spareFits())) {
      // kept for the probes while a model without some exits serves: the one made, or the one that model replaces
      this.dropSpare();
      this.spare = asSpare ? made : old;
      if (asSpare) return old;
      this.current = undefined;
    }
    this.drop(lacksSome(kind));
    return (this.current = made);
  }

  /**
   * Whether `e`, an error of `m`'s run, is the compiled model out of WebGPU memory on a device that still runs segment
   * 0: then the engine is off ({@link fail}, with the reason) and the stage engine runs on WebGPU, as when WebGPU
   * cannot make the compiled model. Another error, or a device that no longer works: the caller's WASM fallback.
   */
  private async tooLarge(m: Compiled, e: unknown): Promise<boolean> {
    if (m.backend !== 'webgpu' || !isOutOfMemory(e) || this.disposed) return false;
    const generation = this.pool.backendGeneration;
    if (!(await this.pool.deviceWorks()) || this.disposed || this.pool.backendGeneration !== generation) return false;
    this.fail(`onnxruntime (webgpu) ran out of memory running the compiled model: ${(e as Error).message}`);
    return true;
  }

  /**
   * After a compiled model failed on WebGPU: runs segment 0's session once through the pool's fallback, so that a lost
   * device (its runs fail too) switches every segment to WASM, as a failed call does, instead of turning the compiled
   * engine off; a compiled model WebGPU cannot run while the segments run leaves the backend as it is.
   */
  private async probeDevice(): Promise<void> {
    const { Tensor } = this.pool.ort.ort;
    const feeds = {
      [this.manifest.segments[0]!.input]: new Tensor(
        'float32',
        new Float32Array(this.inputSize()),
        inputDims(this.manifest.input, 1),
      ),
    };
    const job = async (): Promise<void> => {
      const s = await this.pool.session(0);
      const out = await this.pool.queue.run(() => s.run(feeds));
      for (const t of Object.values(out)) if (t.location === 'gpu-buffer') t.dispose();
    };
    await this.pool
      .withFallback(job, { reason: 'a WebGPU run failed while making the compiled model' })
      .catch(() => undefined);
  }

  /** Whether the bundle is small enough to keep the gated model beside the exit-free one ({@link SPARE_MAX_BYTES}). */
  private spareFits(): boolean {
    return this.manifest.segments.reduce((a, g) => a + g.bytes, 0) <= SPARE_MAX_BYTES;
  }

  /** Retires the model in use, if any (see {@link retire}), and the spare unless `keepSpare`; none is in use after it. */
  private drop(keepSpare = false): void {
    const c = this.current;
    this.current = undefined;
    if (c) void this.retire(c);
    if (!keepSpare) this.dropSpare();
  }

  /** Retires the spare, if any. */
  private dropSpare(): void {
    const s = this.spare;
    this.spare = undefined;
    if (s) void this.retire(s);
  }

  /** Marks `c` replaced and queues its release: after the runs already queued on it, before any later job. */
  private async retire(c: Compiled): Promise<void> {
    c.retired = true;
    await this.release(c.session);
  }

  /** Releases `session` through the queue (after the runs queued on it); a failing release is ignored. */
  private async release(session: OrtSession): Promise<void> {
    await this.pool.queue.run(() => session.release()).catch(() => undefined);
  }

  /**
   * Calls `fn` with `c`, or with the model in use when `c` was replaced meanwhile (undefined: the engine failed or was
   * disposed: then no model is made). `fn` must queue its runs before its first await: then no release comes before
   * them (see {@link retire}).
   */
  private async using<T>(c: Compiled, fn: (c: Compiled | undefined) => Promise<T>): Promise<T> {
    let m: Compiled | undefined = c;
    while (m?.retired) m = await this.ready();
    return fn(m);
  }

  /**
   * Deletes the cached gated or exit-free ('chain') models of the prefixes 2 .. count - 1 (same backend) once that of
   * `count` is stored: those are made after traffic or a plan, on the whole prefix loaded by then, so a shorter one is
   * rarely of use again. Prefix 1 of every kind is kept: each open starts there (segment 0 alone), and a session whose
   * thresholds disable an exit from its first call would otherwise compile it again. Ungated models are all kept: each open loads
   * segment 0 only, then 1, 2, … as inputs go deeper, and runs the ungated model of each prefix on the way.
   */
  private async evictShorter(backend: Backend, count: number, kind: ModelKind): Promise<void> {
    if (kind === 'ungated') return;
    for (let c = 2; c < count; c++)
      await this.cache.deleteCompiled?.(kindKey(compiledKey(this.manifestHash, backend, c), kind));
  }

  /**
   * The cached compiled model under `key` (of segments 0 .. count - 1, about their size: a read waited for by size)
   * when its bytes match its sha256; a corrupt entry is deleted (and rebuilt).
   */
  private async cached(key: string, count: number): Promise<Uint8Array | undefined> {
    const bytes = this.manifest.segments.slice(0, count).reduce((a, s) => a + s.bytes, 0);
    return verifiedCompiled(this.cache, key, bytes);
  }

  /**
   * A spare could not be made: the model in use stays, the engine stays on, and no spare is asked for again for this
   * backend and prefix (probes run the stages). Returns the model in use, as a spare build that succeeded does.
   */
  private spareFailed(): Compiled | undefined {
    const c = this.current;
    if (c) this.noSpare = `${c.backend}:${c.count}`;
    return c;
  }

  /** Turns the engine off for good (the stage engine runs), saying why; the model in use, if any, is retired. */
  private fail(reason: string): undefined {
    this.failure = reason;
    this.drop();
    return undefined;
  }

  private inputSize(): number {
    return this.inputDims.reduce((a, b) => a * b, 1);
  }

  /**
   * A run's inputs: `data` (one input) and the thresholds' tensor (the last one made while they stay the same); no
   * thresholds (`undefined`) for the exit-free model, which has no such input.
   */
  private feeds(data: Float32Array, thresholds: readonly number[] | undefined): Record<string, OrtTensor> {
    const { Tensor } = this.pool.ort.ort;
    if (this.input?.data !== data)
      this.input = { data, tensor: new Tensor('float32', data, this.inputDims as number[]) };
    const input = this.manifest.segments[0]!.input;
    if (!thresholds) return { [input]: this.input.tensor };
    const last = this.thresholds;
    let tensor = last?.tensor;
    if (!last || !sameItems(last.values, thresholds)) {
      const t = cascadeThresholds(thresholds, this.manifest.exits.length);
      this.thresholds = { values: [...thresholds], tensor: (tensor = new Tensor('float32', t, [t.length])) };
    }
    return { [input]: this.input.tensor, [CASCADE_IO.thresholds]: tensor! };
  }

  /**
   * Classifies one preprocessed input with `c`: one run of the compiled prefix; when it says "continue", runCascade
   * over the stage runner from the next segment on (the prefix's segments pass the cut activation through), so every
   * decision is the stage engine's rule. The compiled run's ms is spread evenly over the segments it covered.
   * `pruning`: live exit pruning's `steady` thresholds, whose disabled exits choose the next calls' model (its probes
   * run the requested thresholds but keep the model of the steady ones), and the `requested` ones: while they enable
   * an exit that the steady ones do not, probes will come, so a spare model with exits is kept beside the exit-free one.
   */
  async run(
    c: Compiled,
    data: Float32Array,
    thresholds: readonly number[],
    profiler?: CallProfiler,
    pruning?: { readonly steady: readonly number[]; readonly requested: readonly number[] },
  ): Promise<CompiledResult> {
    const { manifest } = this;
    const k = manifest.labels.length;
    // The next ready() remakes the model if this changes its kind.
    this.want = this.kindFor(pruning?.steady ?? thresholds);
    this.probing = pruning !== undefined && this.kindFor(pruning.requested) !== this.want;
    if (!this.probing && this.spare) this.dropSpare();
    // `c` replaced meanwhile: the model in use runs; the engine failed meanwhile (none): the stages from segment 0;
    // disposed meanwhile: DISPOSED.
    // The model's run is timed inside its queue job: waiting for other jobs is not its time (live pruning prices by it).
    const ran = await this.using(c, async (m) => {
      if (!m && this.disposed) throw this.gone('classifying');
      const on = m && this.modelFor(m, thresholds);
      if (!on) return undefined;
      try {
        return await this.pool.queue.run(async () => {
          const t0 = performance.now();
          const chain = on.chainOutput;
          const feeds = this.feeds(data, chain ? undefined : thresholds);
          const out = await (chain ? on.session.run(feeds, chain) : on.session.run(feeds));
          return { count: on.count, out, ms: performance.now() - t0, chain };
        });
      } catch (e) {
        if (!(await this.tooLarge(on, e))) throw e;
        return undefined; // the engine is off: this call runs the stages from segment 0, on WebGPU still
      }
    });
    const ms = ran?.ms ?? 0;
    const t1 = profiler ? performance.now() : 0;
    // the exit-free model's exit is fixed by its prefix (chainExit); it outputs one tensor, the backbone's or the cut
    const chain = ran?.chain?.[0];
    const exit = !ran
      ? EXIT_INDEX_CONTINUE
      : chain !== undefined
        ? this.chainExit(ran.count)
        : Number(ran.out[CASCADE_IO.exitIndex]!.data[0]);
    if (ran && exit !== EXIT_INDEX_CONTINUE) {
      const data = ran.out[chain ?? CASCADE_IO.probabilities]!.data as Float32Array;
      // the backbone's logits get the stage engine's softmax (in the cascade models the graph applies it)
      const probs =
        chain !== undefined && manifest.backbone.outputKind === 'logits' ? softmaxRow(data, 0, k) : data.slice(0, k);
      if (profiler) profiler.add('readbackMs', performance.now() - t1);
      const { index, value } = argmaxRow(probs, 0, k);
      const n = exit < 0 ? manifest.segments.length : manifest.exits[exit]!.segment + 1;
      return { index, confidence: value, exit, probs, stages: spread(ms, n) };
    }
    const count = ran?.count ?? 0;
    const stages = spread(ms, count);
    const input = new this.pool.ort.ort.Tensor('float32', data, this.inputDims as number[]);
    const cut = ran?.out[chain ?? CASCADE_IO.continueActivation];
    const [r] = await runCascade(manifest, skippingRunner(this.runner, count, cut), input, 1, {
      thresholds,
      onStage: (s, _rows, t) => {
        if (s >= count) stages[s] = t;
      },
    });
    return { ...r!, stages };
  }

  /** Where the exit-free model of segments 0 .. count - 1 leaves: the whole bundle runs through, a prefix continues. */
  private chainExit(count: number): number {
    return count >= this.manifest.segments.length ? EXIT_INDEX_FULL : EXIT_INDEX_CONTINUE;
  }

  /**
   * The model a call with `thresholds` runs when `m` is at hand: `m`, unless it is the chain, which decides no exit,
   * and the thresholds enable one in it (a pruning probe): then the spare gated model when one is at hand (same
   * backend; one of a shorter prefix continues by stages), else none (the stages from segment 0), and the next
   * ready() makes a spare in the background.
   */
  private modelFor(m: Compiled, thresholds: readonly number[]): Compiled | undefined {
    if (this.serves(m, thresholds)) return m;
    const s = this.spare;
    const fit = s && !s.retired && s.backend === m.backend && this.serves(s, thresholds) ? s : undefined;
    if (fit && fit.count >= m.count) return fit;
    this.spareWant = this.kindFor(thresholds);
    return fit;
  }

  /**
   * Times one run of `c` on a zero input with per-exit `thresholds` (ms, inside its queue job: waiting for other jobs
   * is not counted), for device plans ({@link measureCompiled}), with the exit the run left at (the model's exit index:
   * -1 ran through, {@link EXIT_INDEX_CONTINUE} continues past a prefix). Outputs are read as a classify call reads
   * them.
   * @throws SelfxitError DISPOSED once {@link dispose} began, INTERNAL when the engine failed.
   */
  async timeRun(c: Compiled, thresholds: readonly number[]): Promise<{ ms: number; exit: number }> {
    const data = new Float32Array(this.inputSize());
    return this.using(c, (m) => {
      if (!m) throw this.gone('measuring');
      return this.pool.queue.run(async () => {
        const t0 = performance.now();
        const out = await m.session.run(this.feeds(data, thresholds));
        const exit = Number(out[CASCADE_IO.exitIndex]!.data[0]);
        return { ms: performance.now() - t0, exit };
      });
    });
  }

  /** Why no model is at hand: DISPOSED after {@link dispose}, else INTERNAL (the engine failed while `during`). */
  private gone(during: string): SelfxitError {
    return this.disposed
      ? new SelfxitError('DISPOSED', `the classifier was disposed while ${during}`)
      : new SelfxitError('INTERNAL', `the compiled engine failed while ${during}: ${this.failure}`);
  }

  /**
   * Releases the compiled session (once the runs under way end), a build under way's too (it makes nothing after it)
   * and the bytes held; no model is made after it.
   */
  async dispose(): Promise<void> {
    this.disposed = true;
    await this.idle();
    this.held = undefined;
    const c = this.current;
    const s = this.spare;
    this.current = this.spare = undefined;
    if (c) await this.retire(c);
    if (s) await this.retire(s);
  }
}

// The compiled engine for batches (calls of more than one input, on WASM): the segments loaded so far as ONE
// onnxruntime model that keeps the rows going on with `Compress` at each exit (compileBundleBatchCascade), thresholds an
// input; the rows no compiled exit took continue stage by stage from the cut, so lazy download stays. One run replaces
// a session run per segment, the activations read out of WebAssembly memory and copied back in, and the JS decisions.
import { compileBundleBatchCascade } from '../bundle/compiled-cascade.js';
import type { BundleManifest } from '../bundle/manifest.js';
import { argmaxRow, runCascade, type CascadeResult } from '../engine/cascade.js';
import type { OrtStageRunner } from '../engine/stage-runner.js';
import { isSelfxitError } from '../errors.js';
import { BATCH_CASCADE_IO } from '../graph/compile-batch-cascade.js';
import { cascadeThresholds } from '../graph/compile-cascade.js';
import { decodeModel, encodeModel, sha256Hex } from '../graph/index.js';
import type { OrtSession, OrtTensor } from '../ort/types.js';
import type { Backend } from '../protocol.js';
import { compiledKey, verifiedCompiled, type BundleCache } from './cache.js';
import { skippingRunner, spread } from './compiled-engine.js';
import { sessionOptions } from './ort-backend.js';
import { sameItems } from './same-items.js';
import { inputDims } from './preprocess.js';
import type { SessionPool } from './session-pool.js';

/**
 * The most segment bytes (the bundle's weights) for which a batch model is made: it holds another copy of the weights
 * beside the segment sessions and the single-input compiled model, which a larger model (an ImageNet-size one on a
 * phone) may not have room for; larger bundles run batches stage by stage.
 */
export const BATCH_MODEL_MAX_BYTES = 64 * 1024 * 1024;

/** A batch decision of the batch engine: per row, its result and the wall ms of each segment it ran. */
export interface BatchResult extends CascadeResult {
  readonly stages: number[];
}

interface BatchModel {
  readonly session: OrtSession;
  /** Segments 0 .. count - 1 are in the model; `count` < segments: a prefix whose rows may continue by stages. */
  readonly count: number;
  readonly backend: Backend;
  /** Replaced, failed or disposed: its release is queued; later runs take the model in use, or the stages. */
  retired: boolean;
}

/** The cache key of the batch model of the prefix whose batch-1 key is `base`. */
const batchKey = (base: string): string => `${base}:batch`;

/**
 * Runs batches on the batch model of the loaded segment prefix, made in the background after a batch that found none
 * covering the loaded segments (the first one, and one that loaded more segments); batches run stage by stage while
 * there is none (a shorter prefix's model runs meanwhile, its rows continuing by stages). Not for a runtime nested in
 * another's queued jobs (the learning runtime's serving runtimes, remade at every fit): runtime.ts makes none there.
 * WASM only: on WebGPU onnxruntime-web has no `Compress` kernel (it would run on the CPU between GPU copies), so
 * batches run stage by stage there. When the segments cannot be composed, onnxruntime cannot load the model, the model takes one image per run (`backbone.batch` 'one') or
 * its segments are over {@link BATCH_MODEL_MAX_BYTES}, the engine is off for good and {@link failure} says why. The
 * model is cached per manifest hash, backend and prefix (`compiled:…:batch`), its sha256 checked on every read (a
 * corrupt copy is rebuilt, never run); a longer prefix's model evicts the shorter ones but prefix 1.
 */
export class BatchEngine {
  /** Why the batch engine is off (batches run stage by stage), once that happened. */
  failure: string | undefined;
  private current: BatchModel | undefined;
  private building: Promise<BatchModel | undefined> | undefined;
  /** The last thresholds tensor made, reused while the thresholds stay the same. */
  private thresholds: { readonly values: readonly number[]; readonly tensor: OrtTensor } | undefined;
  private disposed = false;

  constructor(
    private readonly manifest: BundleManifest,
    private readonly pool: SessionPool,
    private readonly runner: OrtStageRunner,
    private readonly cache: BundleCache,
    private readonly manifestHash: string,
  ) {
    const bytes = manifest.segments.reduce((a, s) => a + s.bytes, 0);
    if (manifest.backbone.batch === 'one')
      this.failure = "the model takes one image per run (manifest backbone.batch 'one'): batches run row by row";
    else if (bytes > BATCH_MODEL_MAX_BYTES)
      this.failure = `the bundle's segments (${(bytes / 2 ** 20).toFixed(0)} MiB) are over the batch model's ${BATCH_MODEL_MAX_BYTES / 2 ** 20} MiB (another copy of the weights): batches run stage by stage`;
  }

  /** Whether batches may run on this engine now: not failed, not disposed, on WASM. */
  get on(): boolean {
    return this.failure === undefined && !this.disposed && this.pool.ort.backend === 'wasm';
  }

  /**
   * The model a batch runs now, or undefined: the batch runs stage by stage. A model of a shorter prefix than the one
   * loaded runs (its rows continue by stages) until {@link refresh} has made the longer one.
   */
  model(): BatchModel | undefined {
    const c = this.current;
    return this.on && c && c.backend === this.pool.ort.backend ? c : undefined;
  }

  /**
   * After a batch: when no model covers the loaded prefix, makes it in the background (one build at a time). After the
   * batch, not before: a batch loads the segments its rows reach, so the model made covers them all.
   */
  refresh(): void {
    if (!this.on || this.building) return;
    const c = this.current;
    if (c && c.backend === this.pool.ort.backend && c.count >= this.pool.loadedCount()) return;
    void this.startBuild();
  }

  private startBuild(): Promise<BatchModel | undefined> {
    if (!this.building) {
      // An unexpected error (a bug) turns the engine off as a failed build does.
      const made = this.build().catch((e: unknown) =>
        this.fail(`making the batch model failed: ${(e as Error).message}`),
      );
      this.building = made.finally(() => (this.building = undefined));
    }
    return this.building;
  }

  /** Resolves once no model is being made. */
  async idle(): Promise<void> {
    while (this.building) await this.building.catch(() => undefined);
  }

  private async build(): Promise<BatchModel | undefined> {
    // A macrotask before the compile and before each onnxruntime step: calls that arrived meanwhile queue their runs
    // first.
    const turn = (): Promise<unknown> => new Promise((r) => setTimeout(r, 0));
    const step = async <T>(job: () => Promise<T>): Promise<T> => {
      await turn();
      return this.pool.queue.run(job);
    };
    await turn();
    if (!this.on) return undefined;
    const { ort } = this.pool;
    const count = this.pool.loadedCount();
    const backend = ort.backend;
    const generation = this.pool.backendGeneration;
    const key = batchKey(compiledKey(this.manifestHash, backend, count));
    const size = this.manifest.segments.slice(0, count).reduce((a, s) => a + s.bytes, 0);
    let bytes = await verifiedCompiled(this.cache, key, size);
    if (!bytes) {
      let prefix: Uint8Array[];
      try {
        prefix = await this.pool.prefixBytes(count);
      } catch (e) {
        if (this.disposed) return undefined;
        return this.fail(`the segments could not be read again to compile them: ${(e as Error).message}`);
      }
      try {
        bytes = encodeModel(compileBundleBatchCascade(this.manifest, prefix.map(decodeModel)));
      } catch (e) {
        if (!isSelfxitError(e)) throw e;
        return this.fail(`the segments cannot be compiled into one batch model: ${e.message}`);
      }
      await this.cache.putCompiled?.(key, { sha256: await sha256Hex(bytes), bytes });
      for (let c = 2; c < count; c++)
        await this.cache.deleteCompiled?.(batchKey(compiledKey(this.manifestHash, backend, c)));
    }
    if (!this.on) return undefined;
    let session: OrtSession | undefined;
    try {
      const made = await step(() => ort.ort.InferenceSession.create(bytes, sessionOptions(ort, [])));
      session = made;
      // Warm-up: two rows, every exit off (the whole prefix runs), then every exit on at 1 (the heads run).
      for (const t of [[], this.manifest.exits.map(() => 1)])
        if (this.on) await step(() => made.run(this.feeds(new Float32Array(2 * this.inputSize()), 2, t)));
    } catch (e) {
      if (session) await this.release(session);
      if (this.disposed || this.pool.backendGeneration !== generation) return undefined;
      return this.fail(`onnxruntime (${backend}) cannot run the batch model: ${(e as Error).message}`);
    }
    if (!this.on || this.pool.backendGeneration !== generation) {
      await this.release(session);
      return undefined;
    }
    this.drop();
    return (this.current = { session, count, backend, retired: false });
  }

  /**
   * Classifies `rows` preprocessed inputs with `m` (the model in use when `m` was replaced meanwhile; undefined when
   * none is at hand, or the run failed: then the engine is off, saying why, and the caller runs the stages): one run
   * of the compiled prefix, then runCascade over the stage runner from the next segment for the rows it did not
   * decide, so every decision is the stage engine's rule. The run's ms is spread evenly over the segments it covered.
   */
  async run(
    m: BatchModel,
    data: Float32Array,
    rows: number,
    thresholds: readonly number[],
  ): Promise<BatchResult[] | undefined> {
    const use = m.retired ? this.current : m;
    if (!use || use.retired || use.backend !== this.pool.ort.backend) return undefined;
    // queued before any await: a retire queued later releases the session after this run
    const job = this.pool.queue.run(async () => {
      const t0 = performance.now();
      const out = await use.session.run(this.feeds(data, rows, thresholds));
      return { out, ms: performance.now() - t0 };
    });
    let ran: Awaited<typeof job>;
    try {
      ran = await job;
    } catch (e) {
      if (this.disposed) return undefined; // the stage path says DISPOSED
      // the stage engine runs this batch and the later ones (an error it meets too is the caller's)
      this.fail(`onnxruntime (${use.backend}) failed running the batch model: ${(e as Error).message}`);
      return undefined;
    }
    const { manifest } = this;
    const k = manifest.labels.length;
    const n = manifest.segments.length;
    const stages = spread(ran.ms, use.count);
    const results: BatchResult[] = new Array<BatchResult>(rows);
    const probs = ran.out[BATCH_CASCADE_IO.probabilities]!.data as Float32Array;
    const exits = ran.out[BATCH_CASCADE_IO.exitIndex]!.data as BigInt64Array;
    const rowIndex = ran.out[BATCH_CASCADE_IO.rowIndex]!.data as BigInt64Array;
    for (let j = 0; j < rowIndex.length; j++) {
      const p = probs.slice(j * k, (j + 1) * k);
      const { index, value } = argmaxRow(p, 0, k);
      const exit = Number(exits[j]);
      const last = exit < 0 ? n : manifest.exits[exit]!.segment + 1;
      results[Number(rowIndex[j])] = { index, confidence: value, exit, probs: p, stages: stages.slice(0, last) };
    }
    const contRows = use.count < n ? (ran.out[BATCH_CASCADE_IO.continueRows]!.data as BigInt64Array) : undefined;
    if (contRows && contRows.length > 0) {
      const more = [...stages];
      const cut = ran.out[BATCH_CASCADE_IO.continueActivation];
      const input = new this.pool.ort.ort.Tensor('float32', new Float32Array(0), [0]); // never read: segment 0 is skipped
      const rest = await runCascade(manifest, skippingRunner(this.runner, use.count, cut), input, contRows.length, {
        thresholds,
        onStage: (s, _rows, t) => {
          if (s >= use.count) more[s] = t;
        },
      });
      rest.forEach((r, j) => {
        const last = r.exit < 0 ? n : manifest.exits[r.exit]!.segment + 1;
        results[Number(contRows[j])] = { ...r, stages: more.slice(0, last) };
      });
    }
    return results;
  }

  private inputSize(): number {
    return inputDims(this.manifest.input, 1).reduce((a, b) => a * b, 1);
  }

  private feeds(data: Float32Array, rows: number, thresholds: readonly number[]): Record<string, OrtTensor> {
    const { Tensor } = this.pool.ort.ort;
    const last = this.thresholds;
    let tensor = last?.tensor;
    if (!last || !sameItems(last.values, thresholds)) {
      const t = cascadeThresholds(thresholds, this.manifest.exits.length);
      this.thresholds = { values: [...thresholds], tensor: (tensor = new Tensor('float32', t, [t.length])) };
    }
    return {
      [this.manifest.segments[0]!.input]: new Tensor('float32', data, inputDims(this.manifest.input, rows)),
      [BATCH_CASCADE_IO.thresholds]: tensor!,
    };
  }

  /** Retires the model in use, if any: marked, then released after the runs already queued on it. */
  private drop(): void {
    const c = this.current;
    this.current = undefined;
    if (c) {
      c.retired = true;
      void this.release(c.session);
    }
  }

  private async release(session: OrtSession): Promise<void> {
    await this.pool.queue.run(() => session.release()).catch(() => undefined);
  }

  /** Turns the engine off for good (batches run stage by stage), saying why. */
  private fail(reason: string): undefined {
    this.failure = reason;
    this.drop();
    return undefined;
  }

  /** Releases the model (once the runs under way end) and any build under way's; none is made after it. */
  async dispose(): Promise<void> {
    this.disposed = true;
    await this.idle();
    this.drop();
  }
}

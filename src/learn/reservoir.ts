// A bounded reservoir of what on-device learning keeps per served input: the pooled features at every candidate cut
// (uint8 square-root codes over each row's range per cut, calibrate/feature-store.ts encodeRowU8: half float16's
// bytes, so the same cap holds twice the samples) and the full model's probabilities. Uniform reservoir sampling (Algorithm R)
// over every input ever added, within a stated byte cap, allocated as rows arrive (doubling, never above the cap);
// snapshots (copied in slices) are FeatureSets that prepare's fit reads as is. An input offered with a key (input-key.ts:
// a hash of its preprocessed tensor) that a stored row holds is an exact repeat and is not stored again: a copy in
// another fold would be judged by a head that trained on its twin, so the fit's out-of-fold agreement would read high
// and its thresholds would be too low (measured on random labels, where unseen inputs agree 0.10: every row stored
// twice read 0.44); prepare drops exact copies of its samples for the same reason (calibrate/samples.ts).
import { SelfxitError } from '../errors.js';
import { softmaxRow } from '../engine/cascade.js';
import { encodeRowU8, type FeatureRows, type PackedFeatures } from '../calibrate/feature-store.js';
import {
  cutGeometry,
  cutLayout,
  type CutFeatures,
  type FeatureRequest,
  type FeatureSet,
} from '../calibrate/features.js';
import { headFeatureDim, headFeaturesInto } from '../calibrate/pool.js';
import { createRng, type Rng } from '../calibrate/rng.js';

/** Offers the recent repeat rate ({@link FeatureReservoir.repeatRate}) averages over (the weight of the newest is
 * 1/16): short, so that varied traffic after a still screen is completed at `learnShare` again within a few dozen
 * samples. */
export const REPEAT_RATE_SPAN = 16;

/** One candidate cut as the reservoir stores it: its pooling and geometry (a CutFeatures without the matrix). */
export type ReservoirCut = Omit<CutFeatures, 'x'>;

/** The stored rows, as plain structured-cloneable data (persistence). */
export interface ReservoirState {
  /** Inputs offered and drawn for (Algorithm R), repeats of stored rows not counted. */
  readonly seen: number;
  readonly size: number;
  /** Inputs offered that repeated a stored row exactly (same key): not stored, nor counted in `seen` or `fresh`. */
  readonly repeats: number;
  /** Rows added since the last {@link FeatureReservoir.markFitted}. */
  readonly fresh: number;
  /** Per cut, `size × dim` uint8 codes … */
  readonly features: readonly Uint8Array[];
  /** … and per cut, `2 × size` floats: each row's least value and range (encodeRowU8). */
  readonly ranges: readonly Float32Array[];
  /** `size × classes` probabilities of the full model. */
  readonly teacher: Float32Array;
  /** Per row, the key of the input it came from (input-key.ts), NaN for a row added without one. */
  readonly keys: Float64Array;
}

/** The cuts' pooling from feature requests (geometry checked: INVALID_ARGUMENT / SHAPE_UNKNOWN). */
export function reservoirCuts(requests: readonly FeatureRequest[]): ReservoirCut[] {
  return requests.map((r) => {
    const g = cutGeometry(r.cut);
    return {
      cut: r.cut,
      ...g,
      grid: r.grid,
      ...(r.maxGrid ? { maxGrid: r.maxGrid } : {}),
      dim: headFeatureDim(g.channels, r.grid, r.maxGrid),
    };
  });
}

/** Bytes one stored input takes: 1 per pooled feature, 8 per cut (the row's least value and range), 4 per class
 * probability, 8 for its input's key and about {@link KEY_INDEX_BYTES} for its entry in the index of keys stored. */
export function bytesPerRow(cuts: readonly ReservoirCut[], classes: number): number {
  return cuts.reduce((a, c) => a + c.dim + 8, 0) + 4 * classes + 8 + KEY_INDEX_BYTES;
}

/** Bytes a stored key takes in the index of keys stored (a Map from key to row: its entry and the key's heap
 * number, about 40 in V8), counted per row allocated. */
export const KEY_INDEX_BYTES = 40;

/** Uniform sample of every input added, at most `capacity` rows (`min(maxSamples, maxBytes / bytesPerRow)`). */
export class FeatureReservoir {
  readonly capacity: number;
  /** Bytes the reservoir may grow to (`capacity` rows). */
  readonly maxBytes: number;
  private features: Uint8Array[];
  private ranges: Float32Array[];
  private teacher: Float32Array;
  /** Per row, its input's key (NaN: none), and the row of each key stored. */
  private keys: Float64Array;
  private readonly rowOf = new Map<number, number>();
  /** Rows allocated (grows by doubling up to `capacity`). */
  private allocated = 0;
  private rng: Rng;
  private scratch: Float32Array[];
  /** A channels-last cut's map of one input transposed to NCHW (grown to the largest such cut; empty: none yet). */
  private nchw = new Float32Array(0);
  /** Per sliced copy under way ({@link snapshot}, {@link sliceState}; a fit's and a save's may overlap), the rows
   * written meanwhile (copied again at its end). */
  private readonly dirty = new Set<Set<number>>();
  seen = 0;
  size = 0;
  fresh = 0;
  repeats = 0;
  /** The share of exact repeats among the recent offers: a moving average over about the last
   * {@link REPEAT_RATE_SPAN} (1 a stream of one input, 0 varied traffic); not persisted (0 again after a reload). */
  repeatRate = 0;

  constructor(
    readonly cuts: readonly ReservoirCut[],
    readonly classes: number,
    limits: { readonly maxSamples: number; readonly maxBytes: number; readonly seed?: number },
  ) {
    this.capacity = Math.min(limits.maxSamples, Math.floor(limits.maxBytes / bytesPerRow(cuts, classes)));
    if (!(this.capacity >= 1))
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `learn.maxBytes ${limits.maxBytes} cannot hold one sample (${bytesPerRow(cuts, classes)} bytes each)`,
        { maxBytes: limits.maxBytes },
      );
    this.maxBytes = this.capacity * bytesPerRow(cuts, classes);
    this.features = cuts.map(() => new Uint8Array(0));
    this.ranges = cuts.map(() => new Float32Array(0));
    this.teacher = new Float32Array(0);
    this.keys = new Float64Array(0);
    this.rng = createRng(limits.seed ?? 0);
    this.scratch = cuts.map((c) => new Float32Array(c.dim));
  }

  /** Bytes held now (allocated as rows arrive; at most {@link maxBytes}). */
  get bytes(): number {
    const b = (a: readonly { readonly byteLength: number }[]): number => a.reduce((s, f) => s + f.byteLength, 0);
    return (
      b(this.features) +
      b(this.ranges) +
      this.teacher.byteLength +
      this.keys.byteLength +
      this.allocated * KEY_INDEX_BYTES
    );
  }

  /** Inputs offered so far: those drawn for and the repeats of stored rows. */
  get offered(): number {
    return this.seen + this.repeats;
  }

  /** Makes room for `rows` rows (doubling, at least 256, at most `capacity`), keeping the rows stored. */
  private reserve(rows: number): void {
    if (rows <= this.allocated) return;
    const n = Math.min(this.capacity, Math.max(rows, 256, 2 * this.allocated));
    const grow = <T extends Uint8Array | Float32Array | Float64Array>(
      a: T,
      per: number,
      make: (len: number) => T,
    ): T => {
      const g = make(n * per);
      g.set(a.subarray(0, this.size * per));
      return g;
    };
    this.features = this.features.map((f, i) => grow(f, this.cuts[i]!.dim, (l) => new Uint8Array(l)));
    this.ranges = this.ranges.map((a) => grow(a, 2, (l) => new Float32Array(l)));
    this.teacher = grow(this.teacher, this.classes, (l) => new Float32Array(l));
    this.keys = grow(this.keys, 1, (l) => new Float64Array(l));
    this.allocated = n;
  }

  /**
   * The row a new input with `key` (NaN: none) goes to (Algorithm R), or -1 when it is not kept: an exact repeat of a
   * stored row (its key stored) is never kept, nor counted as seen or fresh. The key is the row's once it returns one.
   */
  private slot(key: number): number {
    const repeat = this.rowOf.has(key);
    this.repeatRate += ((repeat ? 1 : 0) - this.repeatRate) / REPEAT_RATE_SPAN;
    if (repeat) {
      this.repeats++;
      return -1;
    }
    this.fresh++;
    const seen = this.seen++;
    let at: number;
    if (this.size < this.capacity) {
      this.reserve(this.size + 1);
      at = this.size++;
    } else {
      const j = this.rng.int(seen + 1);
      if (j >= this.capacity) return -1;
      at = j;
      const old = this.keys[at]!;
      if (this.rowOf.get(old) === at) this.rowOf.delete(old);
    }
    this.keys[at] = key;
    if (!Number.isNaN(key)) this.rowOf.set(key, at);
    return at;
  }

  /**
   * Adds `rows` inputs from one run of the model with the cuts as extra outputs: `maps[i]` the map of cut i
   * (`rows × C × H × W`, or `rows × H × W × C` for a channels-last cut: transposed as its head does), `output` the model's `[rows, classes]` logits (or probabilities with `kind`
   * 'probabilities'). Pooled here, one row at a time. `keys`: each row's input key (input-key.ts); a row whose key a
   * stored row holds is a repeat, not stored again. Without keys no row is a repeat.
   */
  addFromMaps(
    maps: readonly Float32Array[],
    output: Float32Array,
    rows: number,
    kind: 'logits' | 'probabilities' = 'logits',
    keys?: ArrayLike<number>,
  ): void {
    const k = this.classes;
    for (let r = 0; r < rows; r++) {
      const at = this.slot(keys ? keys[r]! : NaN);
      if (at < 0) continue;
      this.cuts.forEach((c, i) => {
        const size = c.channels * c.height * c.width;
        const map = maps[i]!.subarray(r * size, (r + 1) * size);
        const layout = cutLayout(c.cut);
        if (layout === 'NHWC' && this.nchw.length < size) this.nchw = new Float32Array(size);
        headFeaturesInto(
          map,
          1,
          c.channels,
          c.height,
          c.width,
          c.grid,
          c.maxGrid,
          this.scratch[i]!,
          0,
          layout,
          this.nchw,
        );
      });
      const p = kind === 'logits' ? softmaxRow(output, r * k, k) : output.subarray(r * k, (r + 1) * k);
      this.write(at, this.scratch, p);
    }
  }

  /**
   * Adds `rows` inputs already pooled: `pooled[i]` the `rows × dim` float32 features of cut i, `probs` the full model's
   * `rows × classes` probabilities (bench/adapt-encoding.ts feeds the rows of a feature cache this way); `keys` as
   * {@link addFromMaps}.
   */
  addPooled(pooled: readonly Float32Array[], probs: Float32Array, rows: number, keys?: ArrayLike<number>): void {
    const k = this.classes;
    for (let r = 0; r < rows; r++) {
      const at = this.slot(keys ? keys[r]! : NaN);
      if (at < 0) continue;
      const row = this.cuts.map((c, i) => pooled[i]!.subarray(r * c.dim, (r + 1) * c.dim));
      this.write(at, row, probs.subarray(r * k, (r + 1) * k));
    }
  }

  /** Stores one input's pooled features (per cut) and probabilities at row `at`, encoded (encodeRowU8). */
  private write(at: number, pooled: readonly Float32Array[], probs: ArrayLike<number>): void {
    for (const d of this.dirty) d.add(at);
    this.cuts.forEach((c, i) => encodeRowU8(pooled[i]!, c.dim, this.features[i]!, at * c.dim, this.ranges[i]!, 2 * at));
    this.teacher.set(probs, at * this.classes);
  }

  /**
   * A copy of the stored rows as prepare's FeatureSet (packed 'u8row'), unaffected by later additions; made in slices
   * of about `sliceBytes` with `pause()` awaited between them (so that a fit starting on a full reservoir of tens of
   * MB never holds the thread for the whole copy): rows written meanwhile are copied again at the end, so the snapshot
   * is the reservoir as it is when it ends (its rows [0, n), n the rows stored when it began).
   */
  async snapshot(pause: () => Promise<void>, sliceBytes = 4 << 20): Promise<FeatureSet<FeatureRows>> {
    const { n, features, ranges, teacher } = await this.copySliced(pause, sliceBytes);
    return {
      n,
      k: this.classes,
      teacher,
      cuts: this.cuts.map((c, i) => ({
        ...c,
        x: { format: 'u8row', n, d: c.dim, data: features[i]!, rowRange: ranges[i]! } satisfies PackedFeatures,
      })),
    };
  }

  /**
   * {@link state} copied in slices as {@link snapshot} (a save of a full reservoir never holds the thread for the whole
   * copy): the rows [0, n) as they are at its end; rows appended meanwhile are left out of the copy and of its counts.
   * A reservoir cleared meanwhile gives its state as it is now.
   */
  async sliceState(pause: () => Promise<void>, sliceBytes = 4 << 20): Promise<ReservoirState> {
    const { n, features, ranges, teacher, keys } = await this.copySliced(pause, sliceBytes);
    if (this.size < n) return this.state();
    const appended = this.size - n;
    return {
      seen: this.seen - appended,
      size: n,
      repeats: this.repeats,
      fresh: Math.max(0, this.fresh - appended),
      features,
      ranges,
      teacher,
      keys,
    };
  }

  private async copySliced(
    pause: () => Promise<void>,
    sliceBytes: number,
  ): Promise<{ n: number; features: Uint8Array[]; ranges: Float32Array[]; teacher: Float32Array; keys: Float64Array }> {
    const n = this.size;
    const k = this.classes;
    const teacher = new Float32Array(n * k);
    const keys = new Float64Array(n);
    const xs = this.cuts.map((c) => new Uint8Array(n * c.dim));
    const ranges = this.cuts.map(() => new Float32Array(2 * n));
    const copyRows = (from: number, to: number): void => {
      this.cuts.forEach((c, i) => {
        xs[i]!.set(this.features[i]!.subarray(from * c.dim, to * c.dim), from * c.dim);
        ranges[i]!.set(this.ranges[i]!.subarray(2 * from, 2 * to), 2 * from);
      });
      teacher.set(this.teacher.subarray(from * k, to * k), from * k);
      keys.set(this.keys.subarray(from, to), from);
    };
    const rows = Math.max(1, Math.floor(sliceBytes / bytesPerRow(this.cuts, k)));
    const dirty = new Set<number>();
    this.dirty.add(dirty);
    try {
      for (let at = 0; at < n; at += rows) {
        if (at > 0) await pause();
        if (this.size < n) break; // cleared meanwhile (a drift restart): the fit will not be adopted
        copyRows(at, Math.min(n, at + rows));
      }
      if (this.size >= n) for (const r of dirty) if (r < n) copyRows(r, r + 1);
    } finally {
      this.dirty.delete(dirty);
    }
    return { n, features: xs, ranges, teacher, keys };
  }

  /** Starts counting fresh rows again (a fit has used every row stored so far). */
  markFitted(): void {
    this.fresh = 0;
  }

  /** Forgets every row and gives their memory back. */
  clear(): void {
    this.seen = this.size = this.fresh = this.repeats = this.allocated = this.repeatRate = 0;
    this.features = this.cuts.map(() => new Uint8Array(0));
    this.ranges = this.cuts.map(() => new Float32Array(0));
    this.teacher = new Float32Array(0);
    this.keys = new Float64Array(0);
    this.rowOf.clear();
  }

  state(): ReservoirState {
    return {
      seen: this.seen,
      size: this.size,
      repeats: this.repeats,
      fresh: this.fresh,
      features: this.features.map((f, i) => f.slice(0, this.size * this.cuts[i]!.dim)),
      ranges: this.ranges.map((a) => a.slice(0, 2 * this.size)),
      teacher: this.teacher.slice(0, this.size * this.classes),
      keys: this.keys.slice(0, this.size),
    };
  }

  /** Restores stored rows; false (nothing changed) when they do not fit this reservoir's cuts and capacity. */
  restore(s: ReservoirState): boolean {
    const n = s.size;
    const ok =
      Number.isInteger(n) &&
      n >= 0 &&
      n <= this.capacity &&
      Number.isInteger(s.seen) &&
      s.seen >= n &&
      Number.isInteger(s.fresh) &&
      s.fresh >= 0 &&
      Number.isInteger(s.repeats) &&
      s.repeats >= 0 &&
      s.keys instanceof Float64Array &&
      s.keys.length === n &&
      s.teacher instanceof Float32Array &&
      s.teacher.length === n * this.classes &&
      Array.isArray(s.features) &&
      s.features.length === this.cuts.length &&
      s.features.every((f, i) => f instanceof Uint8Array && f.length === n * this.cuts[i]!.dim) &&
      Array.isArray(s.ranges) &&
      s.ranges.length === this.cuts.length &&
      s.ranges.every((a) => a instanceof Float32Array && a.length === 2 * n);
    if (!ok) return false;
    this.clear();
    this.reserve(n);
    s.features.forEach((f, i) => this.features[i]!.set(f));
    s.ranges.forEach((a, i) => this.ranges[i]!.set(a));
    this.teacher.set(s.teacher);
    this.keys.set(s.keys);
    s.keys.forEach((key, row) => {
      if (!Number.isNaN(key)) this.rowOf.set(key, row);
    });
    this.seen = s.seen;
    this.repeats = s.repeats;
    this.size = n;
    this.fresh = s.fresh;
    this.rng = createRng(s.seen);
    return true;
  }
}

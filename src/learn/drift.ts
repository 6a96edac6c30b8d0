// An unsupervised drift signal for on-device learning, pure: cheap statistics of each preprocessed input (per channel:
// mean, spread, mean |horizontal| and |vertical| difference — brightness, contrast, sharpness, orientation) and a
// two-sample Kolmogorov-Smirnov test of the last inputs against a reference sample of the traffic the exits learned
// on. It needs no answer of the full model, so it sees a switch long before a few-percent audit can.
import type { InputSpec } from '../bundle/manifest.js';
import { createRng, type Rng } from '../calibrate/rng.js';

/** Statistics per input channel (see {@link inputStats}). */
export const STATS_PER_CHANNEL = 4;

/**
 * The drift statistics of one preprocessed input (`spec`'s layout, at `offset` of `data`): per channel its mean, its
 * standard deviation, and the mean absolute difference of horizontal and of vertical neighbours.
 */
export function inputStats(
  data: Float32Array,
  offset: number,
  spec: Pick<InputSpec, 'height' | 'width' | 'channels' | 'layout'>,
): Float64Array {
  const { height: h, width: w, channels: c } = spec;
  const out = new Float64Array(STATS_PER_CHANNEL * c);
  // element (y, x) of channel ch is at offset + y * ys + x * xs + ch * cs
  const [ys, xs, cs] = spec.layout === 'NCHW' ? [w, 1, h * w] : [w * c, c, 1];
  for (let ch = 0; ch < c; ch++) {
    let sum = 0,
      sq = 0,
      dx = 0,
      dy = 0;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const at = offset + y * ys + x * xs + ch * cs;
        const v = data[at]!;
        sum += v;
        sq += v * v;
        if (x > 0) dx += Math.abs(v - data[at - xs]!);
        if (y > 0) dy += Math.abs(v - data[at - ys]!);
      }
    const n = h * w;
    const mean = sum / n;
    out.set(
      [
        mean,
        Math.sqrt(Math.max(0, sq / n - mean * mean)),
        dx / Math.max(1, h * (w - 1)),
        dy / Math.max(1, (h - 1) * w),
      ],
      ch * STATS_PER_CHANNEL,
    );
  }
  return out;
}

/** Kolmogorov's tail Q(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²): the asymptotic p-value of a KS statistic. */
export function kolmogorovQ(lambda: number): number {
  if (lambda < 0.2) return 1;
  let sum = 0;
  for (let k = 1; k <= 100; k++) {
    const term = Math.exp(-2 * k * k * lambda * lambda);
    sum += (k % 2 === 1 ? 1 : -1) * term;
    if (term < 1e-12) break;
  }
  return Math.min(1, Math.max(0, 2 * sum));
}

/**
 * Two-sample KS test of sorted samples `a` and `b`: the statistic D (largest gap of the empirical CDFs) and its
 * asymptotic p-value (with Stephens' small-sample correction of λ).
 */
export function ksTwoSample(a: Float64Array, b: Float64Array): { d: number; p: number } {
  const n = a.length;
  const m = b.length;
  if (n === 0 || m === 0) return { d: 0, p: 1 };
  let i = 0,
    j = 0,
    d = 0;
  while (i < n && j < m) {
    const v = Math.min(a[i]!, b[j]!);
    while (i < n && a[i]! <= v) i++;
    while (j < m && b[j]! <= v) j++;
    d = Math.max(d, Math.abs(i / n - j / m));
  }
  const ne = Math.sqrt((n * m) / (n + m));
  return { d, p: kolmogorovQ((ne + 0.12 + 0.11 / ne) * d) };
}

export interface DriftOptions {
  /** Recent inputs compared with the reference. Default 200. */
  readonly recent: number;
  /** Inputs between two tests. Default 100. */
  readonly every: number;
  /** Reference inputs kept (a uniform sample of the inputs since the reference started). Default 1,000. */
  readonly reference: number;
  /** Family-wise false-alarm probability of one test (Bonferroni over the statistics). Default 1e-4. */
  readonly alpha: number;
  readonly seed?: number;
}

export const DRIFT_DEFAULTS: DriftOptions = { recent: 200, every: 100, reference: 1000, alpha: 1e-4 };

/** What `learning().drift` reports. */
export interface DriftStatus {
  /** Reference inputs held, and tests run since the reference started. */
  readonly reference: number;
  readonly tests: number;
  /** Alarms over the learner's life, and the smallest p-value (Bonferroni-corrected) of the last test. */
  readonly alarms: number;
  readonly lastP: number;
}

/** The detector's state, as plain structured-cloneable data (persistence): the reference only. */
export interface DriftState {
  readonly dim: number;
  readonly seen: number;
  readonly alarms: number;
  /** `size × dim` statistics. */
  readonly reference: Float64Array;
}

/**
 * Sequential two-sample test: each input's statistics enter a ring of the last `recent`; an input leaving the ring
 * enters the reference (a uniform reservoir of `reference` rows). Every `every` inputs, once both are full enough,
 * each statistic of the ring is compared with the reference by a KS test; the smallest p-value times the number of
 * statistics (Bonferroni) below `alpha` is an alarm. At alpha 1e-4 and a test per 100 inputs, a stationary stream
 * raises about one false alarm per 10^6 inputs (measured in test/learn-drift.test.ts).
 */
export class DriftDetector {
  readonly options: DriftOptions;
  private readonly ref: Float64Array;
  private refSize = 0;
  /** Inputs that entered the reference so far (Algorithm R's count). */
  private refSeen = 0;
  private readonly ring: Float64Array;
  private ringSize = 0;
  private ringAt = 0;
  private sinceTest = 0;
  private tests = 0;
  private alarms = 0;
  private lastP = 1;
  private rng: Rng;

  constructor(
    readonly dim: number,
    options: Partial<DriftOptions> = {},
  ) {
    this.options = { ...DRIFT_DEFAULTS, ...options };
    this.ref = new Float64Array(this.options.reference * dim);
    this.ring = new Float64Array(this.options.recent * dim);
    this.rng = createRng((this.options.seed ?? 0) ^ 0xd81f7);
  }

  /** One input's statistics; true when this input completed a test that raised an alarm. */
  observe(stats: ArrayLike<number>): boolean {
    const { dim } = this;
    const { recent } = this.options;
    if (this.ringSize === recent) this.toReference(this.ringAt);
    for (let j = 0; j < dim; j++) this.ring[this.ringAt * dim + j] = stats[j] ?? 0;
    this.ringAt = (this.ringAt + 1) % recent;
    this.ringSize = Math.min(recent, this.ringSize + 1);
    if (++this.sinceTest < this.options.every || this.ringSize < recent || this.refSize < recent) return false;
    this.sinceTest = 0;
    return this.test();
  }

  /** Moves ring row `row` into the reference reservoir. */
  private toReference(row: number): void {
    const cap = this.options.reference;
    const seen = this.refSeen++;
    const at = this.refSize < cap ? this.refSize++ : this.rng.int(seen + 1);
    if (at < cap) this.ref.set(this.ring.subarray(row * this.dim, (row + 1) * this.dim), at * this.dim);
  }

  private test(): boolean {
    const { dim } = this;
    const column = (src: Float64Array, n: number, j: number): Float64Array => {
      const col = new Float64Array(n);
      for (let i = 0; i < n; i++) col[i] = src[i * dim + j]!;
      return col.sort();
    };
    let p = 1;
    for (let j = 0; j < dim; j++)
      p = Math.min(p, ksTwoSample(column(this.ring, this.ringSize, j), column(this.ref, this.refSize, j)).p);
    this.lastP = Math.min(1, p * dim);
    this.tests++;
    if (this.lastP >= this.options.alpha) return false;
    this.alarms++;
    return true;
  }

  /** Starts a new reference from the next inputs (after an alarm: the new traffic is the reference). */
  restart(): void {
    this.refSize = this.refSeen = this.ringSize = this.ringAt = this.sinceTest = this.tests = 0;
    this.lastP = 1;
  }

  /** Forgets everything: the reference, and the alarms counted (a reset of learning). */
  reset(): void {
    this.restart();
    this.alarms = 0;
  }

  status(): DriftStatus {
    return { reference: this.refSize, tests: this.tests, alarms: this.alarms, lastP: this.lastP };
  }

  state(): DriftState {
    return {
      dim: this.dim,
      seen: this.refSeen,
      alarms: this.alarms,
      reference: this.ref.slice(0, this.refSize * this.dim),
    };
  }

  /** Restores a persisted reference; false (nothing changed) when it does not fit this detector. */
  restore(s: DriftState): boolean {
    const n = s.reference instanceof Float64Array ? s.reference.length / this.dim : NaN;
    const ok =
      s.dim === this.dim &&
      Number.isInteger(n) &&
      n <= this.options.reference &&
      Number.isInteger(s.seen) &&
      s.seen >= n &&
      Number.isInteger(s.alarms) &&
      s.alarms >= 0;
    if (!ok) return false;
    this.restart();
    this.ref.set(s.reference);
    this.refSize = n;
    this.refSeen = s.seen;
    this.alarms = s.alarms;
    this.rng = createRng(s.seen ^ 0xd81f7);
    return true;
  }
}

// prepare()'s options: the public PrepareOptions, every default and range check in one place
// (resolvePrepareOptions, minimumSamples); the model's input/output spec (resolveModelIO) lives in model-io.ts.
import { SelfxitError } from '../errors.js';
import type { HeadKind } from '../bundle/manifest.js';
import type { OrtModule, OrtSessionOptions } from '../ort/types.js';
import type { CostTable } from '../policy/cost-table.js';
import { THRESHOLD_RULES, type ThresholdRule } from '../policy/exit-rule.js';
import { checkAugment, type AugmentKind } from './augment.js';
import { noSharedMemory } from './features.js';
import type { InputOverrides } from './model-io.js';
import type { ProgressCallback } from './progress.js';
import type { SampleInput } from './samples.js';
import type { HeadTrainerPool } from './train-task.js';
import { DEFAULT_HIDDEN } from './train-head.js';

/** Options of {@link prepare}. Defaults are resolved in {@link resolvePrepareOptions}. */
export interface PrepareOptions {
  /** ONNX model bytes (one image input `[N, C, H, W]`, one `[N, classes]` output). */
  readonly model: Uint8Array;
  /** uint8 NHWC images of the model's input size (never labels: calibration is unsupervised). Copies of an image met
   * while the seeded shuffle picks them (the same pixels; with flip augmentation, its mirror too) are left out
   * (`report.duplicates`); a reader is asked only for the images picked. */
  readonly samples: SampleInput;
  /** Input geometry and normalisation. Default: H, W, C from the model input, mean 0, std 1, layout NCHW. Symbolic
   * C/H/W dims of the model are fixed from these (the calibrated model and the bundle then have them). */
  readonly input?: InputOverrides;
  /** The output holding the class scores (logits, or a Softmax's probabilities). Required when the model has several
   * outputs; the others (and what only they need) are dropped from the calibrated model and the bundle. */
  readonly output?: string;
  /** Class names. Default "0".."k-1". */
  readonly labels?: readonly string[];
  /** Agreement target with the backbone, in (0, 1]. Default 0.99. */
  readonly target?: number;
  /** Head kinds tried per cut, cheapest first. Default ['pool-linear', 'pool-mlp']. */
  readonly headKinds?: readonly HeadKind[];
  /** Seed of the shuffle, folds and head init. Default 0. */
  readonly seed?: number;
  /** Use at most this many samples (taken after a seeded shuffle). Default all. */
  readonly limit?: number;
  /** Cross-fitting folds. Default 5. */
  readonly folds?: number;
  /** Distillation temperature of head training. Default 1. */
  readonly temperature?: number;
  /** Transformed copies of every sample added to head training, each with the backbone's output on it as target
   * (label-free; thresholds are still chosen on the untransformed samples only). selfxit mode default ['flip'];
   * paper mode uses none. `'cutmix:K'` (or K × `'cutmix'`): K cutmix copies, see {@link AugmentKind}. */
  readonly augment?: readonly (AugmentKind | `cutmix:${number}`)[];
  /** How exit scores become thresholds (see ThresholdRule). Default 'cost-calibrated'; 'global' is one shared
   * max-softmax threshold. Paper mode always uses its fixed global threshold. */
  readonly thresholdRule?: ThresholdRule;
  /** Per-exit overhead as a fraction of the backbone cost (selection only). Default 0.01. */
  readonly overheadFraction?: number;
  /** Measured costs; when given, selection minimises them instead of MACs (`costUnit` 'ms'). */
  readonly costTable?: CostTable;
  /** 'selfxit' (default): cross-fitted heads on every candidate, exit selection, target-driven thresholds.
   * 'paper': paper heads (full flattened map, MLP) at fixed exits, one fixed threshold, no selection. */
  readonly mode?: 'selfxit' | 'paper';
  /** Cut tensors (or exit display names). selfxit: restricts the candidates; paper: the exits (default: the cuts
   * nearest 25 %, 50 % and 75 % of the MACs). */
  readonly exits?: readonly string[];
  /** Paper mode: the fixed max-softmax threshold. Default 0.9. */
  readonly threshold?: number;
  /** Candidate cuts considered (spread evenly over the MACs). Default 16. */
  readonly maxCandidates?: number;
  /** Kinds after the cheapest are trained only on this many cuts (the preliminary selection plus the most useful
   * cuts by the cheapest head). Default 6; Infinity trains every kind on every cut. */
  readonly shortlist?: number;
  /** Average-pooled features per head input (chooseGrid). Default 256. */
  readonly maxFeatures?: number;
  /** Hidden width of pool-mlp heads (with capacity 'auto': the base width of the ladder). Default 64 (DEFAULT_HIDDEN). */
  readonly hidden?: number;
  /**
   * Head capacity on the shortlisted cuts. 'fixed': every kind of `headKinds` at `hidden`, on the stored pooling.
   * 'auto' (default): a ladder of configurations that grows with the training rows (hidden `hidden`, the same with a
   * coarser average grid or without the max branch, hidden 2·`hidden` from 30,000 rows), each screened on one fold;
   * per cut the best by out-of-fold utility (coverage × cost saved − head cost) is kept.
   */
  readonly capacity?: 'auto' | 'fixed';
  /**
   * pool-mlp heads as ensembles of this many members trained with different seeds, in every fold and for the deployed
   * head alike: out-of-fold outputs and the deployed head are the members' mean logits (the deployed head is one MLP
   * M times as wide, charged as such by exit selection). pool-linear heads stay single (their training is convex: the
   * members would converge to one head). Head training takes about M times as long. Default 1 (one head).
   */
  readonly ensemble?: number;
  /** Side of the max-pooling grid whose features heads read besides the average-pooled ones (2: a 2x2 grid of
   * maxima per channel; 1: global max; 0: none). A side that does not divide the map falls back to 1. Default 2. */
  readonly maxPoolGrid?: number;
  /** Paper mode: memory for the full flattened maps, bytes; samples beyond it are left out. Default 256 MiB. */
  readonly paperMemoryBytes?: number;
  /** Rows per backbone run during feature extraction. Default 64. */
  readonly batchSize?: number;
  /** selfxit mode: memory cap, bytes, of the sample images, a batch of their augmented copies and the candidates' pooled
   * features (float32 when they fit, else float16, else fewer candidate cuts, then no augmented copies, each step
   * stated in the report; images that leave the features less than float16 of every candidate: that floor, over the
   * cap, with a warning naming a `--limit`). Default 1.5 GiB. */
  readonly maxFeatureBytes?: number;
  /** Points of the calibration curve. Default 100. */
  readonly curvePoints?: number;
  readonly ort: OrtModule;
  readonly sessionOptions?: OrtSessionOptions;
  readonly onProgress?: ProgressCallback;
  /** Receives a warning as soon as it is known, before the long steps (it is in the result's `warnings` too). */
  readonly onWarning?: (message: string) => void;
  readonly signal?: AbortSignal;
  /**
   * Runs the head trainings of the heads phase (selfxit mode: candidate and final heads; paper mode: one head per
   * exit), `concurrency` at a time.
   * Default: one at a time in this thread ({@link inProcessTrainer}). The package exports no thread pool: the CLI's
   * `selfxit prepare --threads N` uses its own worker-thread pool (src/cli/trainer-pool.ts, not part of the published
   * API); from code, pass an implementation of {@link HeadTrainerPool} that keeps its contract (see its doc). With
   * `sharedMemory: true` the pooled features are allocated on SharedArrayBuffer. The bundle is the same bytes whatever
   * the trainer and its concurrency. The caller owns the pool: it closes it after prepare (and may reuse it for
   * another prepare, not two at once). INVALID_ARGUMENT when `concurrency` is not an integer >= 1,
   * BACKEND_UNAVAILABLE when `sharedMemory` is true and SharedArrayBuffer is missing.
   */
  readonly trainerPool?: HeadTrainerPool;
  /** Written into the manifest. Default "selfxit". */
  readonly generator?: string;
  /** ISO date for the manifest. Default now. */
  readonly createdAt?: string;
  /** Clock for timings (ms). Default performance.now. */
  readonly now?: () => number;
}

const HEAD_ORDER: readonly HeadKind[] = ['pool-linear', 'pool-mlp', 'paper'];

/** The mode a run takes: `mode` when given, else paper when `headKinds` is exactly ['paper'], else selfxit. */
export function prepareMode(o: Pick<PrepareOptions, 'mode' | 'headKinds'>): PrepareOptions['mode'] {
  return o.mode ?? (o.headKinds?.length === 1 && o.headKinds[0] === 'paper' ? 'paper' : 'selfxit');
}

/**
 * Fewest samples for a meaningful threshold: with zero disagreements among m validation samples, the one-sided
 * 95 % upper bound on the disagreement rate is about 3/m ("rule of three"), so certifying `1 - target` needs
 * m >= 3 / (1 - target) (300 for 0.99, 30 for 0.9); and every one of `folds` folds needs >= 20 samples to train on.
 * Never below 100.
 */
export function minimumSamples(target: number, folds = 5): number {
  const certify = target < 1 ? Math.ceil(3 / (1 - target) - 1e-9) : 0;
  return Math.max(100, certify, 20 * folds);
}

/** Options with defaults filled in, validated. */
export interface ResolvedPrepareOptions {
  readonly target: number;
  readonly headKinds: readonly HeadKind[];
  readonly seed: number;
  readonly limit: number;
  readonly folds: number;
  readonly temperature: number;
  readonly augment: readonly AugmentKind[];
  readonly thresholdRule: ThresholdRule;
  readonly overheadFraction: number;
  readonly mode: 'selfxit' | 'paper';
  readonly threshold: number;
  readonly maxCandidates: number;
  readonly shortlist: number;
  readonly maxFeatures: number;
  readonly hidden: number;
  readonly capacity: 'auto' | 'fixed';
  readonly ensemble: number;
  readonly maxPoolGrid: number;
  readonly paperMemoryBytes: number;
  readonly batchSize: number;
  readonly maxFeatureBytes: number;
  readonly curvePoints: number;
}

function badArg(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_ARGUMENT', msg, details);
}

/** Options that steer selfxit mode's heads, selection or thresholds (with their CLI flags): paper mode has none of these. */
const SELFXIT_ONLY = {
  target: '--target',
  hidden: '--hidden',
  capacity: '--capacity',
  ensemble: '--ensemble',
  maxFeatures: '--max-features',
  thresholdRule: '--threshold-rule',
  maxPoolGrid: '--max-pool-grid',
  maxCandidates: '--max-candidates',
  maxFeatureBytes: '--max-feature-memory',
  shortlist: undefined,
  overheadFraction: undefined,
} as const;

/** INVALID_ARGUMENT naming the selfxit-mode options given to paper mode (which would ignore them). */
function refuseSelfxitOnly(o: Omit<PrepareOptions, 'model' | 'samples' | 'ort'>): void {
  const given = Object.entries(SELFXIT_ONLY)
    .filter(([k]) => o[k as keyof typeof SELFXIT_ONLY] !== undefined)
    .map(([k, flag]) => (flag ? `${k} (${flag})` : k));
  if (o.headKinds?.some((k) => k !== 'paper')) given.unshift('headKinds other than "paper" (--heads)');
  if (given.length > 0)
    badArg(
      `paper mode has fixed paper heads, exits and one threshold, and certifies no target: ${given.join(', ')} ${given.length > 1 ? 'apply' : 'applies'} to selfxit mode only`,
      { options: given },
    );
}

/**
 * A trainer pool prepare can use: `concurrency` an integer >= 1 (INVALID_ARGUMENT), and SharedArrayBuffer present when
 * it asks for shared memory (BACKEND_UNAVAILABLE: a browser page without cross-origin isolation has none).
 */
function checkTrainerPool(pool: HeadTrainerPool): void {
  const c = pool.concurrency;
  if (!(Number.isInteger(c) && c >= 1)) badArg(`trainerPool.concurrency must be an integer >= 1, got ${String(c)}`);
  if (pool.sharedMemory && typeof SharedArrayBuffer === 'undefined') throw noSharedMemory();
}

/** Resolves every default in one place and validates ranges (INVALID_TARGET, INVALID_ARGUMENT; BACKEND_UNAVAILABLE:
 * a trainer pool with shared memory where SharedArrayBuffer is missing). */
export function resolvePrepareOptions(o: Omit<PrepareOptions, 'model' | 'samples' | 'ort'>): ResolvedPrepareOptions {
  const target = o.target ?? 0.99;
  if (!(typeof target === 'number' && target > 0 && target <= 1)) {
    throw new SelfxitError('INVALID_TARGET', `target agreement must be in (0, 1], got ${String(target)}`, { target });
  }
  const mode = prepareMode(o);
  if (mode !== 'selfxit' && mode !== 'paper') badArg(`mode must be "selfxit" or "paper", got "${String(mode)}"`);
  if (mode === 'paper') refuseSelfxitOnly(o);
  const headKinds = mode === 'paper' ? (['paper'] as const) : [...(o.headKinds ?? ['pool-linear', 'pool-mlp'])];
  if (headKinds.length === 0) badArg('headKinds is empty');
  for (const k of headKinds)
    if (!HEAD_ORDER.includes(k)) badArg(`unknown head kind "${String(k)}" (pool-linear, pool-mlp, paper)`);
  if (mode === 'selfxit' && headKinds.includes('paper'))
    badArg('head kind "paper" needs mode "paper" (fixed exits and threshold)');
  const sorted = [...new Set(headKinds)].sort((a, b) => HEAD_ORDER.indexOf(a) - HEAD_ORDER.indexOf(b));
  // Infinity ("no limit") only where it means one: limit, maxCandidates, shortlist (every kind on every cut),
  // maxFeatureBytes (elsewhere it would fail late, e.g. `hidden` in head training after the whole backbone pass, or
  // read as "at least Infinity samples")
  const int = (v: number | undefined, dflt: number, name: string, min: number, unbounded = false): number => {
    const x = v ?? dflt;
    if (!((unbounded && x === Infinity) || (Number.isInteger(x) && x >= min)))
      badArg(`${name} must be an integer >= ${min}${unbounded ? ' or Infinity' : ''}, got ${String(v)}`);
    return x;
  };
  const threshold = o.threshold ?? 0.9;
  if (!(threshold >= 0 && threshold <= 1)) badArg(`threshold must be in [0, 1], got ${threshold}`);
  if (o.threshold !== undefined && mode !== 'paper')
    badArg('a fixed threshold applies to paper mode only; selfxit mode chooses thresholds from the target');
  const temperature = o.temperature ?? 1;
  if (!(Number.isFinite(temperature) && temperature > 0))
    badArg(`temperature must be a finite number > 0, got ${temperature}`);
  const overheadFraction = o.overheadFraction ?? 0.01;
  if (!(overheadFraction >= 0)) badArg(`overheadFraction must be >= 0, got ${overheadFraction}`);
  const seed = o.seed ?? 0;
  if (!Number.isInteger(seed)) badArg(`seed must be an integer, got ${seed}`);
  const augment = mode === 'paper' ? [] : checkAugment(o.augment ?? ['flip']);
  if (mode === 'paper' && o.augment?.length)
    badArg('paper mode trains its heads on the samples as they are: augment applies to selfxit mode only');
  // The table's contents are checked once the model's cut tensors are known (prepare()).
  if (o.costTable !== undefined && mode === 'paper')
    badArg('a cost table steers exit selection; paper mode has fixed exits and no selection');
  if (o.trainerPool !== undefined) checkTrainerPool(o.trainerPool);
  const capacity = o.capacity ?? 'auto';
  if (capacity !== 'auto' && capacity !== 'fixed')
    badArg(`capacity must be "auto" or "fixed", got "${String(capacity)}"`);
  const thresholdRule = o.thresholdRule ?? 'cost-calibrated';
  if (!THRESHOLD_RULES.includes(thresholdRule))
    badArg(`thresholdRule must be one of ${THRESHOLD_RULES.join(', ')}, got "${String(thresholdRule)}"`);
  return {
    target,
    headKinds: sorted,
    seed,
    limit: int(o.limit, Infinity, 'limit', 1, true),
    folds: int(o.folds, 5, 'folds', 2),
    temperature,
    augment,
    thresholdRule,
    overheadFraction,
    mode,
    threshold,
    maxCandidates: int(o.maxCandidates, 16, 'maxCandidates', 1, true),
    shortlist: int(o.shortlist, 6, 'shortlist', 0, true),
    maxFeatures: int(o.maxFeatures, 256, 'maxFeatures', 1),
    hidden: int(o.hidden, DEFAULT_HIDDEN['pool-mlp'], 'hidden', 1),
    capacity,
    ensemble: int(o.ensemble, 1, 'ensemble', 1),
    maxPoolGrid: int(o.maxPoolGrid, 2, 'maxPoolGrid', 0),
    paperMemoryBytes: int(o.paperMemoryBytes, 256 * 2 ** 20, 'paperMemoryBytes', 1),
    batchSize: int(o.batchSize, 64, 'batchSize', 1),
    maxFeatureBytes: int(o.maxFeatureBytes, 1.5 * 2 ** 30, 'maxFeatureBytes', 1, true),
    curvePoints: int(o.curvePoints, 100, 'curvePoints', 2),
  };
}

/** Class names: the caller's, or "0".."k-1" (INVALID_ARGUMENT when their count is not `classes`). */
export function resolveLabels(labels: readonly string[] | undefined, classes: number): string[] {
  const names = labels ? [...labels] : Array.from({ length: classes }, (_, i) => String(i));
  if (names.length !== classes)
    badArg(`${names.length} labels for a model with ${classes} classes`, { labels: names.length, classes });
  return names;
}

/**
 * TOO_FEW_SAMPLES unless `count` reaches {@link minimumSamples} (paper mode, which certifies no target: 20 per fold,
 * never below 100).
 */
export function checkSampleCount(count: number, o: ResolvedPrepareOptions): void {
  const minimum = o.mode === 'paper' ? Math.max(100, 20 * o.folds) : minimumSamples(o.target, o.folds);
  if (count < minimum) {
    throw new SelfxitError(
      'TOO_FEW_SAMPLES',
      `${count} samples are too few: at least ${minimum} are needed ${o.mode === 'paper' ? `for ${o.folds} folds` : `to certify agreement ${o.target} (about 3 / (1 - target), and 20 per fold for ${o.folds} folds)`}`,
      { samples: count, minimum, target: o.target, folds: o.folds },
    );
  }
}

export { fitModelIO, resolveModelIO, type InputOverrides, type ModelIO } from './model-io.js';

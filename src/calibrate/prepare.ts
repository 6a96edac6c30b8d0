// The calibration pipeline: model + unlabeled samples → bundle (segments with fused exit heads + manifest).
// Steps: features (one backbone pass, pooled cut maps), heads (cross-fitted per candidate cut), thresholds and
// exit selection on out-of-fold outputs, bundle assembly. Pure: onnxruntime is injected, nothing touches disk.
import { SelfxitError } from '../errors.js';
import { checkCostTable, type CostTable } from '../policy/cost-table.js';
import type {
  BundleManifest,
  CalibrationSummary,
  CurvePoint,
  ExitStats,
  HeadKind,
  InputSpec,
} from '../bundle/manifest.js';
import type { HeadSpec } from '../graph/head-spec.js';
import { assembleBundle, type BundleExit } from '../bundle/write-bundle.js';
import { analyzeModel, decodeModel, type CutPoint, type ModelAnalysis, type OnnxModel } from '../graph/index.js';
import type { OrtModule, OrtSessionOptions } from '../ort/types.js';
import { argmaxRows, exitScores, simulateCascade, type CascadeCosts, type ExitScores } from '../policy/cascade-sim.js';
import { augmentSamples, checkAugment, type AugmentKind } from './augment.js';
import { crossFit } from './crossfit.js';
import { selectExitsWithRule, THRESHOLD_RULES, type RuleSelection, type ThresholdRule } from '../policy/exit-rule.js';
import { cutGeometry, extractFeatures, type CutFeatures, type FeatureRequest, type FeatureSet } from './features.js';
import { chooseGrid } from './pool.js';
import { StepTimer, throwIfAborted, yieldToEventLoop, type ProgressCallback } from './progress.js';
import { kFoldAssign } from './rng.js';
import { collectSamples, isSampleBatch, shuffleAndLimit, type SampleBatch, type SampleInput } from './samples.js';
import { paperCascade } from '../policy/select-exits.js';
import { NEVER_EXIT } from '../policy/thresholds.js';
import { DEFAULT_HIDDEN, toHeadSpec, trainHead, type TrainedHead } from './train-head.js';
import { runPaperHeads, paperFeatureBudget } from './paper-mode.js';

/** Options of {@link prepare}. Defaults are resolved in {@link resolvePrepareOptions}. */
export interface PrepareOptions {
  /** ONNX model bytes (one image input `[N, C, H, W]`, one `[N, classes]` output). */
  readonly model: Uint8Array;
  /** uint8 NHWC images of the model's input size (never labels: calibration is unsupervised). */
  readonly samples: SampleInput;
  /** Input geometry and normalisation. Default: H, W, C from the model input, mean 0, std 1, layout NCHW. */
  readonly input?: Partial<Pick<InputSpec, 'height' | 'width' | 'channels' | 'mean' | 'std' | 'layout'>>;
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
   * paper mode uses none. */
  readonly augment?: readonly AugmentKind[];
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
  /** Hidden width of pool-mlp heads. Default 64 (DEFAULT_HIDDEN). */
  readonly hidden?: number;
  /** Side of the max-pooling grid whose features heads read besides the average-pooled ones (2: a 2x2 grid of
   * maxima per channel; 1: global max; 0: none). A side that does not divide the map falls back to 1. Default 2. */
  readonly maxPoolGrid?: number;
  /** Paper mode: memory for the full flattened maps, bytes; samples beyond it are left out. Default 256 MiB. */
  readonly paperMemoryBytes?: number;
  /** Rows per backbone run during feature extraction. Default 64. */
  readonly batchSize?: number;
  /** Points of the calibration curve. Default 100. */
  readonly curvePoints?: number;
  readonly ort: OrtModule;
  readonly sessionOptions?: OrtSessionOptions;
  readonly onProgress?: ProgressCallback;
  readonly signal?: AbortSignal;
  /** Written into the manifest. Default "selfxit". */
  readonly generator?: string;
  /** ISO date for the manifest. Default now. */
  readonly createdAt?: string;
  /** Clock for timings (ms). Default performance.now. */
  readonly now?: () => number;
}

/** One head trained at one candidate cut (out-of-fold statistics). */
export interface CandidateHeadReport {
  readonly kind: HeadKind;
  /** Out-of-fold agreement of the head's argmax with the backbone. */
  readonly agreement: number;
  readonly meanScore: number;
  /** Share of samples the head alone could answer at the target agreement (top scores first). */
  readonly coverage: number;
  /** Expected saving per sample (cost units / backbone cost): coverage × cost after the cut − head cost. */
  readonly utility: number;
  readonly trainMs: number;
}

/** One candidate cut as calibration saw it: its heads, the kind kept, and whether exit selection chose it. */
export interface CandidateReport {
  readonly name: string;
  readonly cut: string;
  readonly macsFraction: number;
  readonly grid: readonly [number, number];
  readonly features: number;
  readonly heads: readonly CandidateHeadReport[];
  /** Kind kept for this cut. */
  readonly kind: HeadKind;
  readonly selected: boolean;
}

/** Extra data for reports (not part of the manifest). */
export interface PrepareReport {
  readonly candidates: readonly CandidateReport[];
  /** Subsets evaluated by exit selection. */
  readonly selectionEvaluations: number;
  /** Lower confidence bound of the validation agreement at the chosen thresholds. */
  readonly agreementLowerBound: number;
  /** Samples used for calibration, and the minimum the target needs. */
  readonly samples: number;
  readonly minimumSamples: number;
  /** Bytes of the pooled feature matrices held in memory. */
  readonly featureBytes: number;
  readonly timings: Readonly<Record<string, number>>;
}

/** What {@link prepare} returns: the bundle in memory (manifest + files), warnings, and report data. */
export interface PrepareResult {
  readonly manifest: BundleManifest;
  /** Bundle files by name (segments, backbone.onnx); the manifest is not among them. */
  readonly files: Map<string, Uint8Array>;
  readonly warnings: string[];
  readonly report: PrepareReport;
}

const HEAD_ORDER: readonly HeadKind[] = ['pool-linear', 'pool-mlp', 'paper'];

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
  readonly maxPoolGrid: number;
  readonly paperMemoryBytes: number;
  readonly batchSize: number;
  readonly curvePoints: number;
}

function badArg(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_ARGUMENT', msg, details);
}

/** Resolves every default in one place and validates ranges (INVALID_TARGET, INVALID_ARGUMENT). */
export function resolvePrepareOptions(o: Omit<PrepareOptions, 'model' | 'samples' | 'ort'>): ResolvedPrepareOptions {
  const target = o.target ?? 0.99;
  if (!(typeof target === 'number' && target > 0 && target <= 1)) {
    throw new SelfxitError('INVALID_TARGET', `target agreement must be in (0, 1], got ${String(target)}`, { target });
  }
  const mode = o.mode ?? (o.headKinds?.length === 1 && o.headKinds[0] === 'paper' ? 'paper' : 'selfxit');
  if (mode !== 'selfxit' && mode !== 'paper') badArg(`mode must be "selfxit" or "paper", got "${String(mode)}"`);
  const headKinds = mode === 'paper' ? (['paper'] as const) : [...(o.headKinds ?? ['pool-linear', 'pool-mlp'])];
  if (headKinds.length === 0) badArg('headKinds is empty');
  for (const k of headKinds)
    if (!HEAD_ORDER.includes(k)) badArg(`unknown head kind "${String(k)}" (pool-linear, pool-mlp, paper)`);
  if (mode === 'selfxit' && headKinds.includes('paper'))
    badArg('head kind "paper" needs mode "paper" (fixed exits and threshold)');
  const sorted = [...new Set(headKinds)].sort((a, b) => HEAD_ORDER.indexOf(a) - HEAD_ORDER.indexOf(b));
  const int = (v: number | undefined, dflt: number, name: string, min: number): number => {
    const x = v ?? dflt;
    if (!(x === Infinity || (Number.isInteger(x) && x >= min)))
      badArg(`${name} must be an integer >= ${min}, got ${String(v)}`);
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
  if (o.costTable !== undefined) {
    checkCostTable(o.costTable);
    if (mode === 'paper') badArg('a cost table steers exit selection; paper mode has fixed exits and no selection');
  }
  const thresholdRule = o.thresholdRule ?? 'cost-calibrated';
  if (!THRESHOLD_RULES.includes(thresholdRule))
    badArg(`thresholdRule must be one of ${THRESHOLD_RULES.join(', ')}, got "${String(thresholdRule)}"`);
  return {
    target,
    headKinds: sorted,
    seed,
    limit: int(o.limit, Infinity, 'limit', 1),
    folds: int(o.folds, 5, 'folds', 2),
    temperature,
    augment,
    thresholdRule,
    overheadFraction,
    mode,
    threshold,
    maxCandidates: int(o.maxCandidates, 16, 'maxCandidates', 1),
    shortlist: int(o.shortlist, 6, 'shortlist', 0),
    maxFeatures: int(o.maxFeatures, 256, 'maxFeatures', 1),
    hidden: int(o.hidden, DEFAULT_HIDDEN['pool-mlp'], 'hidden', 1),
    maxPoolGrid: int(o.maxPoolGrid, 2, 'maxPoolGrid', 0),
    paperMemoryBytes: int(o.paperMemoryBytes, 256 * 2 ** 20, 'paperMemoryBytes', 1),
    batchSize: int(o.batchSize, 64, 'batchSize', 1),
    curvePoints: int(o.curvePoints, 100, 'curvePoints', 2),
  };
}

/** The model's input spec and output, with `overrides` applied (INVALID_SAMPLES / UNSUPPORTED_MODEL when they cannot fit). */
export function resolveModelIO(
  model: OnnxModel,
  analysis: Pick<ModelAnalysis, 'inputs' | 'outputs'>,
  overrides: PrepareOptions['input'] = {},
): { input: InputSpec; output: string; outputKind: 'logits' | 'probabilities'; classes: number } {
  const inp = analysis.inputs[0];
  if (!inp || analysis.inputs.length !== 1)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `the model must have exactly one input, it has ${analysis.inputs.length}`,
    );
  if (inp.dtype !== 'float32')
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `model input "${inp.name}" is ${inp.dtype}; selfxit feeds float32 images`,
    );
  if (inp.shape.length !== 4)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `model input "${inp.name}" has rank ${inp.shape.length}; expected an image batch [N, C, H, W]`,
    );
  const dim = (i: number): number | undefined =>
    typeof inp.shape[i] === 'number' ? (inp.shape[i] as number) : undefined;
  const layout =
    overrides.layout ??
    (dim(1) === 1 || dim(1) === 3 || dim(3) === undefined || (dim(3) !== 1 && dim(3) !== 3) ? 'NCHW' : 'NHWC');
  const [ci, hi, wi] = layout === 'NCHW' ? [1, 2, 3] : [3, 1, 2];
  const pick = (override: number | undefined, i: number, what: string): number => {
    const m = dim(i);
    if (override !== undefined && m !== undefined && override !== m) {
      throw new SelfxitError(
        'INVALID_SAMPLES',
        `samples are ${what} ${override} but the model input "${inp.name}" fixes ${what} ${m}`,
        { [what]: override, model: m },
      );
    }
    const v = override ?? m;
    if (v === undefined)
      throw new SelfxitError(
        'INVALID_SAMPLES',
        `the model input's ${what} is dynamic: give the sample ${what} (input.${what} / --shape)`,
      );
    return v;
  };
  const channels = pick(overrides.channels, ci, 'channels');
  if (channels !== 1 && channels !== 3)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `the model input has ${channels} channels; selfxit handles 1 (grayscale) or 3 (RGB)`,
    );
  const height = pick(overrides.height, hi, 'height');
  const width = pick(overrides.width, wi, 'width');
  const mean = overrides.mean ? [...overrides.mean] : new Array<number>(channels).fill(0);
  const std = overrides.std ? [...overrides.std] : new Array<number>(channels).fill(1);
  if (mean.length === 1 && channels === 3) mean.push(mean[0]!, mean[0]!);
  if (std.length === 1 && channels === 3) std.push(std[0]!, std[0]!);
  if (mean.length !== channels || std.length !== channels)
    badArg(`mean and std need ${channels} values, got ${mean.length} and ${std.length}`);
  if (std.some((s) => !(s > 0))) badArg(`std values must be > 0, got ${std.join(',')}`);
  const out = analysis.outputs[0];
  if (!out) throw new SelfxitError('UNSUPPORTED_MODEL', 'the model has no output');
  const classes = out.shape.length === 2 && typeof out.shape[1] === 'number' ? out.shape[1] : undefined;
  if (classes === undefined || classes < 2)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `output "${out.name}" must be [N, classes], got [${out.shape.join(', ')}]`,
    );
  const producer = (model.proto.graph?.node ?? []).find((n) => (n.output ?? []).includes(out.name));
  const outputKind = producer?.opType === 'Softmax' ? 'probabilities' : 'logits';
  return {
    input: { name: inp.name, height, width, channels: channels as 1 | 3, layout, mean, std },
    output: out.name,
    outputKind,
    classes,
  };
}

/** Short display name of a cut tensor, e.g. "/layer2/layer2.1/Relu_1_output_0" → "layer2.1". */
export function exitName(tensor: string): string {
  const bare = tensor.replace(/^\//, '');
  const parts = bare.split('/');
  if (parts.length > 1) return parts[parts.length - 2]!;
  return bare.replace(/_output_\d+$/, '') || tensor;
}

/**
 * Candidate exit cuts: 4-D float32 cuts with known C, H, W, after some backbone work and before the last 2 % of it;
 * of cuts at the same MACs (e.g. Add then Relu) the last. At most `max`, spread evenly over the MACs fraction.
 */
export function candidateCuts(cuts: readonly CutPoint[], max = Infinity): CutPoint[] {
  const ok = cuts.filter(
    (c) =>
      c.dtype === 'float32' &&
      c.shape.length === 4 &&
      c.shape.slice(1).every((d) => typeof d === 'number' && d > 0) &&
      c.fraction > 0 &&
      c.fraction < 0.98,
  );
  const dedup = ok.filter((c, i) => i === ok.length - 1 || ok[i + 1]!.macs !== c.macs);
  if (dedup.length <= max) return dedup;
  const keep = new Set<number>();
  for (let i = 0; i < max; i++) {
    const want =
      dedup[0]!.fraction + ((dedup[dedup.length - 1]!.fraction - dedup[0]!.fraction) * i) / Math.max(1, max - 1);
    let best = 0;
    dedup.forEach((c, j) => {
      if (
        !keep.has(j) &&
        Math.abs(c.fraction - want) < Math.abs(dedup[best]!.fraction - want) + (keep.has(best) ? Infinity : 0)
      )
        best = j;
    });
    keep.add(best);
  }
  return dedup.filter((_, j) => keep.has(j));
}

/** Finds cuts by tensor name or display name (INVALID_CUT naming the unknown one). */
function findNamedCuts(all: readonly CutPoint[], names: readonly string[]): CutPoint[] {
  const found = names.map((nm) => {
    const c = all.find((x) => x.tensor === nm) ?? all.filter((x) => exitName(x.tensor) === nm).pop();
    if (!c) {
      throw new SelfxitError(
        'INVALID_CUT',
        `"${nm}" is not a cut of this model; cuts: ${all.map((x) => exitName(x.tensor)).join(', ')}`,
        { tensor: nm },
      );
    }
    return c;
  });
  return [...new Set(found)].sort((a, b) => all.indexOf(a) - all.indexOf(b));
}

/** Cost model in MACs (or the cost table's unit) over the candidates. */
function buildCosts(
  analysis: ModelAnalysis,
  cuts: readonly CutPoint[],
  headMacs: readonly number[],
  table?: CostTable,
): { costs: CascadeCosts; unit: 'macs' | 'ms'; overheadUnit: number } {
  if (!table) {
    return {
      costs: { backboneCostAt: cuts.map((c) => c.macs), headCost: headMacs, fullCost: analysis.macs },
      unit: 'macs',
      overheadUnit: analysis.macs,
    };
  }
  if (!(table.backbone > 0)) badArg(`cost table: backbone must be > 0, got ${table.backbone}`);
  const at = cuts.map((c) => table.cuts?.[c.tensor] ?? table.backbone * c.fraction);
  const head = cuts.map(
    (c, i) => table.heads?.[c.tensor] ?? (table.backbone * headMacs[i]!) / Math.max(1, analysis.macs),
  );
  return {
    costs: { backboneCostAt: at, headCost: head, fullCost: table.backbone },
    unit: 'ms',
    overheadUnit: table.backbone,
  };
}

/** Coverage of a head alone at the target: the largest top-score share whose agreement is >= target. */
function coverageAt(s: ExitScores, target: number): number {
  const order = Array.from({ length: s.n }, (_, i) => i).sort((a, b) => s.score[b]! - s.score[a]!);
  let agree = 0;
  let best = 0;
  order.forEach((idx, r) => {
    agree += s.agree[idx]!;
    if (agree >= target * (r + 1)) best = r + 1;
  });
  return s.n ? best / s.n : 0;
}

function meanOf(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return a.length ? s / a.length : 0;
}

/** Head MACs for a kind on features of a cut (`hidden`: its hidden width, 0 for none; pooling as in headCost). */
function estimateHeadMacs(
  hidden: number,
  f: Pick<CutFeatures, 'dim' | 'channels' | 'height' | 'width' | 'grid' | 'maxGrid'>,
  k: number,
): number {
  const dense = hidden ? f.dim * hidden + hidden * k : f.dim * k;
  const pools = (g: readonly [number, number] | undefined): number =>
    g && !(g[0] === f.height && g[1] === f.width) ? f.channels * f.height * f.width : 0;
  return dense + pools(f.grid) + pools(f.maxGrid);
}

/**
 * Calibrates early exits for `options.model` on unlabeled samples and returns the bundle in memory.
 * Validates everything before heavy work: INVALID_TARGET, INVALID_ARGUMENT, INVALID_SAMPLES (shape),
 * TOO_FEW_SAMPLES (fewer than {@link minimumSamples}); a model without an inner cut gives a one-segment bundle
 * with no exits and a warning.
 *
 * @example
 * const { manifest, files } = await prepare({ model, samples: { data, count }, ort, input: { mean, std } });
 */
export async function prepare(options: PrepareOptions): Promise<PrepareResult> {
  const o = resolvePrepareOptions(options);
  const { ort, signal } = options;
  const timer = new StepTimer(options.now);
  const warnings: string[] = [];
  const progress = options.onProgress ?? (() => undefined);

  const model = decodeModel(options.model);
  const analysis = await timer.time('analyze', () => analyzeModel(model, { ort }));
  if (options.costTable)
    checkCostTable(
      options.costTable,
      analysis.cuts.map((c) => c.tensor),
    );
  const io = resolveModelIO(model, analysis, options.input);
  const k = io.classes;
  const labels = options.labels ? [...options.labels] : Array.from({ length: k }, (_, i) => String(i));
  if (labels.length !== k)
    badArg(`${labels.length} labels for a model with ${k} classes`, { labels: labels.length, classes: k });

  const shape = { height: io.input.height, width: io.input.width, channels: io.input.channels };
  const collected = await collectSamples(options.samples, shape, isSampleBatch(options.samples) ? Infinity : o.limit);
  const samples: SampleBatch = shuffleAndLimit(collected, shape, o.seed, o.limit).batch;
  const minimum = o.mode === 'paper' ? Math.max(100, 20 * o.folds) : minimumSamples(o.target, o.folds);
  if (samples.count < minimum) {
    throw new SelfxitError(
      'TOO_FEW_SAMPLES',
      `${samples.count} samples are too few: at least ${minimum} are needed ${o.mode === 'paper' ? `for ${o.folds} folds` : `to certify agreement ${o.target} (about 3 / (1 - target), and 20 per fold for ${o.folds} folds)`}`,
      { samples: samples.count, minimum, target: o.target, folds: o.folds },
    );
  }
  throwIfAborted(signal, 'validation');

  const common = { options, o, model, analysis, io, labels, samples, timer, warnings, progress };
  const innerCuts = candidateCuts(analysis.cuts);
  if (innerCuts.length === 0) {
    warnings.push(
      'The model has no inner cut where an exit head can read a 4-D feature map: the bundle has no exits (one segment, the whole model).',
    );
    return finish(common, [], noExitSummary(common), {
      candidates: [],
      selectionEvaluations: 0,
      agreementLowerBound: 1,
      featureBytes: 0,
    });
  }
  return o.mode === 'paper' ? runPaper(common) : runSelfxit(common);
}

interface Common {
  readonly options: PrepareOptions;
  readonly o: ResolvedPrepareOptions;
  readonly model: OnnxModel;
  readonly analysis: ModelAnalysis;
  readonly io: ReturnType<typeof resolveModelIO>;
  readonly labels: string[];
  readonly samples: SampleBatch;
  readonly timer: StepTimer;
  readonly warnings: string[];
  readonly progress: ProgressCallback;
}

function noExitSummary(c: Common): CalibrationSummary {
  return {
    samples: c.samples.count,
    target: c.o.target,
    rule: 'max-softmax',
    mode: c.o.mode,
    folds: c.o.folds,
    seed: c.o.seed,
    validationAgreement: 1,
    expectedMacsFraction: 1,
    candidates: [],
    curve: [{ knob: NEVER_EXIT, thresholds: [], agreement: 1, macsFraction: 1, exitShares: [1] }],
    costUnit: c.options.costTable ? 'ms' : 'macs',
  };
}

/** Assembles the bundle and result from chosen exits. */
async function finish(
  c: Common,
  exits: readonly BundleExit[],
  summary: CalibrationSummary,
  extra: Pick<PrepareReport, 'candidates' | 'selectionEvaluations' | 'agreementLowerBound' | 'featureBytes'>,
  validation?: readonly ExitScores[],
): Promise<PrepareResult> {
  const { manifest: m0, files } = await c.timer.time('bundle', () =>
    assembleBundle({
      modelBytes: c.options.model,
      model: c.model,
      analysis: c.analysis,
      input: c.io.input,
      labels: c.labels,
      output: c.io.output,
      outputKind: c.io.outputKind,
      exits,
      calibration: summary,
      generator: c.options.generator ?? 'selfxit',
      ...(c.options.createdAt ? { createdAt: c.options.createdAt } : {}),
      ...(validation ? { validation } : {}),
      onFile: (done, total, file) => c.progress({ stage: 'bundle', done, total, detail: file }),
    }),
  );
  const timings = c.timer.toJSON();
  const manifest: BundleManifest = { ...m0, calibration: { ...m0.calibration, timings } };
  return {
    manifest,
    files,
    warnings: c.warnings,
    report: {
      ...extra,
      samples: c.samples.count,
      minimumSamples: c.o.mode === 'paper' ? 0 : minimumSamples(c.o.target, c.o.folds),
      timings,
    },
  };
}

/** Per-exit MACs-based outcome (overhead excluded) at the given thresholds, for the manifest. */
function macsOutcome(
  scores: readonly ExitScores[],
  selected: readonly number[],
  thresholds: readonly number[],
  macsCosts: CascadeCosts,
) {
  return simulateCascade(scores, selected, thresholds, { ...macsCosts, overhead: 0 });
}

/** One backbone pass over `samples` pooling the requested cuts (extractFeatures with prepare's options). */
function backbonePass(c: Common, requests: readonly FeatureRequest[], samples: SampleBatch): Promise<FeatureSet> {
  const { options, o, io, progress } = c;
  return extractFeatures({
    model: c.model,
    requests,
    samples,
    input: io.input,
    output: io.output,
    outputKind: io.outputKind,
    classes: io.classes,
    ort: options.ort,
    batchSize: o.batchSize,
    ...(options.sessionOptions ? { sessionOptions: options.sessionOptions } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    onProgress: progress,
  });
}

async function runSelfxit(c: Common): Promise<PrepareResult> {
  const { o, analysis, io, samples, timer, progress, options } = c;
  const k = io.classes;
  const n = samples.count;
  let cuts = candidateCuts(analysis.cuts, options.exits ? Infinity : o.maxCandidates);
  if (options.exits) {
    const usable = new Set(cuts);
    const named = findNamedCuts(analysis.cuts, options.exits);
    for (const x of named)
      if (!usable.has(x))
        c.warnings.push(`"${x.tensor}" cannot hold an exit (not a 4-D float map inside the backbone); skipped`);
    cuts = named.filter((x) => usable.has(x));
  }
  const grids = cuts.map((cut) => {
    const g = cutGeometry(cut);
    return chooseGrid(g.channels, g.height, g.width, o.maxFeatures);
  });
  const maxGrids = cuts.map((cut): [number, number] | undefined => {
    const { height: h, width: w } = cutGeometry(cut);
    const side = o.maxPoolGrid;
    if (side === 0) return undefined;
    return h % side === 0 && w % side === 0 ? [side, side] : [1, 1];
  });
  // Rows [0, n) are the samples; rows a*n + i the a-th augmented copy of sample i (training only, same fold as i).
  const copies = 1 + o.augment.length;
  const rows = n * copies;
  const trainSamples = o.augment.length
    ? augmentSamples(
        samples,
        { height: io.input.height, width: io.input.width, channels: io.input.channels },
        o.augment,
        o.seed,
      )
    : samples;
  const features: FeatureSet = await timer.time('features', () =>
    backbonePass(
      c,
      cuts.map((cut, i) => ({ cut, grid: grids[i]!, ...(maxGrids[i] ? { maxGrid: maxGrids[i] } : {}) })),
      trainSamples,
    ),
  );
  const featureBytes = features.cuts.reduce((a, f) => a + f.x.byteLength, 0);
  const teacherPred = argmaxRows(features.teacher, n, k);
  const sampleFold = kFoldAssign(n, o.folds, o.seed);
  const foldOf = new Int32Array(rows);
  for (let a = 0; a < copies; a++) foldOf.set(sampleFold, a * n);

  // ---- heads: cheapest kind on every candidate, costlier kinds on a shortlist ----
  const [first, ...others] = o.headKinds;
  const shortlistSize = Math.min(cuts.length, o.shortlist);
  const totalFits = (cuts.length + (others.length ? shortlistSize * others.length : 0)) * o.folds;
  let fitsDone = 0;
  const trained = cuts.map(() => new Map<HeadKind, { scores: ExitScores; report: CandidateHeadReport }>());
  const hiddenOf = (kind: HeadKind): number => (kind === 'pool-mlp' ? o.hidden : DEFAULT_HIDDEN[kind]);
  const headMacsOf = (i: number, kind: HeadKind): number => estimateHeadMacs(hiddenOf(kind), features.cuts[i]!, k);
  const costsFor = (kindOf: (i: number) => HeadKind) =>
    buildCosts(
      analysis,
      cuts,
      cuts.map((_, i) => headMacsOf(i, kindOf(i))),
      options.costTable,
    );
  const train = async (i: number, kind: HeadKind): Promise<void> => {
    throwIfAborted(options.signal, 'head training');
    const f = features.cuts[i]!;
    const cf = crossFit(f.x, features.teacher, rows, f.dim, k, {
      kind,
      hidden: hiddenOf(kind),
      foldOf,
      seed: o.seed,
      temperature: o.temperature,
      fitFinal: false,
      onFit: () =>
        progress({ stage: 'heads', done: ++fitsDone, total: totalFits, detail: `${exitName(f.cut.tensor)} ${kind}` }),
    });
    const scores = exitScores(cf.oof.subarray(0, n * k), n, k, teacherPred);
    const { costs } = costsFor(() => kind);
    const after = (costs.fullCost - (costs.backboneCostAt as number[])[i]!) / costs.fullCost;
    const coverage = coverageAt(scores, o.target);
    const head = (costs.headCost as number[])[i]! / costs.fullCost;
    trained[i]!.set(kind, {
      scores,
      report: {
        kind,
        agreement: meanOf(scores.agree),
        meanScore: meanOf(scores.score),
        coverage,
        utility: coverage * after - head,
        trainMs: cf.ms,
      },
    });
    await yieldToEventLoop();
  };
  const selectWith = (kindOf: (i: number) => HeadKind): RuleSelection => {
    const { costs, overheadUnit } = costsFor(kindOf);
    const overhead = options.costTable?.overhead ?? o.overheadFraction * overheadUnit;
    return selectExitsWithRule(
      cuts.map((_, i) => trained[i]!.get(kindOf(i))!.scores),
      costs,
      { target: o.target, overhead, curvePoints: o.curvePoints, rule: o.thresholdRule },
    );
  };
  await timer.time('heads', async () => {
    for (let i = 0; i < cuts.length; i++) await train(i, first!);
    if (others.length > 0 && shortlistSize > 0) {
      const prelim = selectWith(() => first!);
      const byUtility = cuts
        .map((_, i) => i)
        .sort((a, b) => trained[b]!.get(first!)!.report.utility - trained[a]!.get(first!)!.report.utility);
      const short = [...new Set([...prelim.selected, ...byUtility])].slice(0, shortlistSize).sort((a, b) => a - b);
      for (const kind of others) for (const i of short) await train(i, kind);
    }
  });
  const kindOf = cuts.map(
    (_, i) => [...trained[i]!.values()].reduce((a, b) => (b.report.utility > a.report.utility ? b : a)).report.kind,
  );

  // ---- thresholds and exit selection on out-of-fold outputs ----
  progress({ stage: 'thresholds', done: 0, total: 1 });
  const sel = await timer.time('thresholds', async () => selectWith((i) => kindOf[i]!));
  progress({ stage: 'thresholds', done: 1, total: 1 });
  const scores = cuts.map((_, i) => trained[i]!.get(kindOf[i]!)!.scores);
  const macsCosts = buildCosts(
    analysis,
    cuts,
    cuts.map((_, i) => headMacsOf(i, kindOf[i]!)),
  ).costs;
  const outcome = macsOutcome(scores, sel.selected, sel.thresholds, macsCosts);
  // The curve in MACs (selection may have used measured ms): the same knobs and thresholds, re-simulated.
  const curve: CurvePoint[] =
    sel.selected.length > 0
      ? sel.curve.map((p) => {
          const m = macsOutcome(scores, sel.selected, p.thresholds, macsCosts);
          return {
            knob: p.knob,
            thresholds: p.thresholds,
            agreement: m.agreement,
            macsFraction: m.macsFraction,
            exitShares: m.exitShares,
          };
        })
      : noExitSummary(c).curve.slice();

  // ---- final heads on all samples for the selected exits ----
  const finals: { head: TrainedHead; i: number }[] = await timer.time('final-heads', async () => {
    const out: { head: TrainedHead; i: number }[] = [];
    for (const i of sel.selected) {
      throwIfAborted(options.signal, 'final head training');
      const f = features.cuts[i]!;
      out.push({
        i,
        head: trainHead(f.x, features.teacher, rows, f.dim, k, {
          kind: kindOf[i]!,
          hidden: hiddenOf(kindOf[i]!),
          seed: o.seed,
          temperature: o.temperature,
        }),
      });
      await yieldToEventLoop();
    }
    return out;
  });
  const exits: BundleExit[] = finals.map(({ head, i }, j) => {
    const f = features.cuts[i]!;
    const spec: HeadSpec = toHeadSpec(head, {
      kind: kindOf[i]!,
      inChannels: f.channels,
      inHeight: f.height,
      inWidth: f.width,
      grid: [f.grid[0], f.grid[1]],
      ...(f.maxGrid ? { maxGrid: [f.maxGrid[0], f.maxGrid[1]] as const } : {}),
    });
    const map = sel.maps[j]!;
    return {
      name: exitName(f.cut.tensor),
      cut: f.cut.tensor,
      head: spec,
      threshold: sel.thresholds[j]!,
      expectedShare: outcome.exitShares[j]!,
      ...(sel.rule === 'cost-calibrated'
        ? { scoreMap: { slope: map.slope, intercept: map.intercept, remaining: map.remaining } }
        : {}),
    };
  });
  const candidates: ExitStats[] = cuts.map((cut, i) => {
    const r = trained[i]!.get(kindOf[i]!)!.report;
    return { name: exitName(cut.tensor), agreement: r.agreement, meanScore: r.meanScore };
  });
  if (sel.selected.length === 0)
    c.warnings.push(
      `No exit pays off at target ${o.target}: the bundle runs the whole backbone (no exits). Try a lower target or more samples.`,
    );
  const summary: CalibrationSummary = {
    samples: n,
    target: o.target,
    rule: 'max-softmax',
    mode: 'selfxit',
    folds: o.folds,
    seed: o.seed,
    thresholdRule: o.thresholdRule,
    augment: [...o.augment],
    validationAgreement: outcome.agreement,
    expectedMacsFraction: outcome.macsFraction,
    candidates,
    curve,
    costUnit: options.costTable ? 'ms' : 'macs',
  };
  const candReports: CandidateReport[] = cuts.map((cut, i) => ({
    name: exitName(cut.tensor),
    cut: cut.tensor,
    macsFraction: cut.fraction,
    grid: grids[i]!,
    features: features.cuts[i]!.dim,
    heads: [...trained[i]!.values()].map((t) => t.report),
    kind: kindOf[i]!,
    selected: sel.selected.includes(i),
  }));
  const validation = sel.selected.map((i) => scores[i]!);
  return finish(
    c,
    exits,
    summary,
    {
      candidates: candReports,
      selectionEvaluations: sel.evaluations,
      agreementLowerBound: sel.agreementLowerBound,
      featureBytes,
    },
    validation,
  );
}

async function runPaper(c: Common): Promise<PrepareResult> {
  const { o, analysis, io, timer, progress, options } = c;
  const k = io.classes;
  const inner = candidateCuts(analysis.cuts);
  const cuts = options.exits
    ? findNamedCuts(analysis.cuts, options.exits)
    : [
        ...new Set(
          [0.25, 0.5, 0.75].map((t) =>
            inner.reduce((a, b) => (Math.abs(b.fraction - t) < Math.abs(a.fraction - t) ? b : a)),
          ),
        ),
      ];
  for (const cut of cuts) cutGeometry(cut);
  const geoms = cuts.map((cut) => cutGeometry(cut));
  const budget = paperFeatureBudget(
    geoms.map((g) => g.channels * g.height * g.width),
    c.samples.count,
    o.paperMemoryBytes,
  );
  if (budget.samples < c.samples.count) {
    c.warnings.push(
      `Paper mode keeps full feature maps (${budget.bytesPerSample} bytes per sample); to stay within ${Math.round(o.paperMemoryBytes / 2 ** 20)} MiB it uses ${budget.samples} of the ${c.samples.count} samples.`,
    );
  }
  const per = io.input.height * io.input.width * io.input.channels;
  const samples: SampleBatch = { data: c.samples.data.subarray(0, budget.samples * per), count: budget.samples };
  const features = await timer.time('features', () =>
    backbonePass(
      c,
      cuts.map((cut, i) => ({ cut, grid: [geoms[i]!.height, geoms[i]!.width] as const })),
      samples,
    ),
  );
  const heads = await timer.time('heads', () =>
    runPaperHeads(features, {
      folds: o.folds,
      seed: o.seed,
      temperature: o.temperature,
      onProgress: progress,
      ...(options.signal ? { signal: options.signal } : {}),
    }),
  );
  const macsCosts = buildCosts(
    analysis,
    cuts,
    heads.exits.map((e) => estimateHeadMacs(DEFAULT_HIDDEN.paper, features.cuts[e.index]!, k)),
  ).costs;
  progress({ stage: 'thresholds', done: 0, total: 1 });
  const sel = await timer.time('thresholds', async () =>
    paperCascade(heads.scores, macsCosts, { threshold: o.threshold, curvePoints: o.curvePoints, overhead: 0 }),
  );
  progress({ stage: 'thresholds', done: 1, total: 1 });
  const all = cuts.map((_, i) => i);
  const outcome = macsOutcome(heads.scores, all, sel.thresholds, macsCosts);
  const exits: BundleExit[] = heads.exits.map((e, j) => {
    const f = features.cuts[e.index]!;
    const spec = toHeadSpec(e.head, {
      kind: 'paper',
      inChannels: f.channels,
      inHeight: f.height,
      inWidth: f.width,
      grid: [f.height, f.width],
    });
    return {
      name: exitName(f.cut.tensor),
      cut: f.cut.tensor,
      head: spec,
      threshold: sel.thresholds[j]!,
      expectedShare: outcome.exitShares[j]!,
    };
  });
  const summary: CalibrationSummary = {
    samples: samples.count,
    target: o.target,
    rule: 'max-softmax',
    mode: 'paper',
    folds: o.folds,
    seed: o.seed,
    validationAgreement: outcome.agreement,
    expectedMacsFraction: outcome.macsFraction,
    candidates: cuts.map((cut, i) => ({
      name: exitName(cut.tensor),
      agreement: meanOf(heads.scores[i]!.agree),
      meanScore: meanOf(heads.scores[i]!.score),
    })),
    curve: sel.curve,
    costUnit: 'macs',
  };
  const candReports: CandidateReport[] = cuts.map((cut, i) => ({
    name: exitName(cut.tensor),
    cut: cut.tensor,
    macsFraction: cut.fraction,
    grid: [geoms[i]!.height, geoms[i]!.width],
    features: features.cuts[i]!.dim,
    heads: [
      {
        kind: 'paper',
        agreement: meanOf(heads.scores[i]!.agree),
        meanScore: meanOf(heads.scores[i]!.score),
        coverage: coverageAt(heads.scores[i]!, o.target),
        utility: NaN,
        trainMs: heads.exits[i]!.ms,
      },
    ],
    kind: 'paper',
    selected: true,
  }));
  return finish(c, exits, summary, {
    candidates: candReports,
    selectionEvaluations: 0,
    agreementLowerBound: sel.agreementLowerBound,
    featureBytes: features.cuts.reduce((a, f) => a + f.x.byteLength, 0),
  });
}

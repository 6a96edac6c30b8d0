// On-device learning's fit, pure: a model analysed for learning (its candidate cuts and their pooling) and the fit
// job — prepare's SelfXit fit (calibrate/selfxit-mode.ts) on the reservoir's features — as plain data, so that it can
// run in another worker (runtime/learn-worker.ts).
import { curveSamples, type BundleManifest, type CalibrationSummary, type CurvePoint } from '../bundle/manifest.js';
import { pickCurvePoint } from '../policy/curve.js';
import type { CostTable } from '../policy/cost-table.js';
import { costTableFromPlan, type StageTimings } from '../policy/device-plan.js';
import { isSelfxitError } from '../errors.js';
import { assembleBundle, type BundleExit } from '../bundle/write-bundle.js';
import { analyzeModel, decodeModel, type ModelAnalysis, type OnnxModel } from '../graph/index.js';
import type { OrtModule } from '../ort/types.js';
import { noExitCurve } from '../calibrate/prepare-context.js';
import { candidateCuts } from '../calibrate/candidate-cuts.js';
import type { FeatureRequest, FeatureSet } from '../calibrate/features.js';
import type { FeatureRows } from '../calibrate/feature-store.js';
import { poolingRequests, sizeHeadsForClasses } from '../calibrate/prepare-features.js';
import {
  resolveLabels,
  resolveModelIO,
  resolvePrepareOptions,
  type ModelIO,
  type PrepareOptions,
} from '../calibrate/prepare-options.js';
import { StepTimer, type PrepareProgress } from '../calibrate/progress.js';

export type { PrepareProgress };
import type { FitContext } from '../calibrate/prepare-context.js';
import { fitSelfxitExits } from '../calibrate/selfxit-mode.js';
import { resolveLearnOptions, type LearnOptions, type ResolvedLearnOptions } from './learn-options.js';

/** A model ready to learn on: analysed, its input/output resolved, its candidate cuts' pooling chosen. */
export interface LearnModel {
  readonly model: OnnxModel;
  readonly analysis: ModelAnalysis;
  readonly io: ModelIO;
  readonly labels: string[];
  /** Candidate cuts and their pooling (empty when the model has none: it then serves the full model only). */
  readonly requests: readonly FeatureRequest[];
  /** Why the model cannot learn exits (no candidate cut), when it cannot. */
  readonly cannotLearn?: string;
  /** How the heads were sized for many classes (prepare's sizeHeadsForClasses), when they were. */
  readonly headSizing?: string;
}

/**
 * Decodes and analyses `modelBytes` for learning (INVALID_MODEL, UNSUPPORTED_MODEL, SHAPE_UNKNOWN as prepare).
 * `input`, `output` and `labels` as prepare's options of those names.
 */
export async function analyseForLearning(
  modelBytes: Uint8Array,
  ort: OrtModule,
  options: {
    readonly input?: PrepareOptions['input'];
    /** The class-score output (a bundle's `backbone.output`); needed when the model has several. */
    readonly output?: string;
    readonly labels?: readonly string[];
    readonly learn?: LearnOptions;
  },
): Promise<LearnModel> {
  const o = resolveLearnOptions(options.learn);
  const model = decodeModel(modelBytes);
  const analysis = await analyzeModel(model, { ort });
  const io = resolveModelIO(model, analysis, options.input, options.output);
  const labels = resolveLabels(options.labels, io.classes);
  const cuts = candidateCuts(analysis.cuts, o.maxCandidates);
  const sized = learnFitOptions(o, analysis, io.classes);
  const requests = poolingRequests(cuts, sized.o);
  return {
    model,
    analysis,
    io,
    labels,
    requests,
    ...(sized.note ? { headSizing: sized.note } : {}),
    ...(cuts.length === 0 ? { cannotLearn: 'the model has no inner cut where an exit head can read a 4-D map' } : {}),
  };
}

/**
 * prepare()'s resolved options for a learning fit: the learner's target, seed, folds, candidates and head ensembles; no
 * augmentation;
 * heads sized for many classes as prepare sizes them (sizeHeadsForClasses: from 100 classes, pool-mlp heads within
 * 1.25 % of the backbone's parameters each, global max pooling, unless `learn.headKinds` is set), so that a 1,000-class
 * model's pooling and heads are those prepare would train. Deterministic: the pooling of the reservoir
 * ({@link analyseForLearning}) and every fit ({@link fitLearned}) resolve the same.
 */
export function learnFitOptions(
  o: ResolvedLearnOptions,
  analysis: Pick<ModelAnalysis, 'cuts' | 'params'>,
  classes: number,
): { o: ReturnType<typeof resolvePrepareOptions>; note?: string } {
  const base = resolvePrepareOptions({
    target: o.target,
    seed: o.seed,
    folds: o.folds,
    maxCandidates: o.maxCandidates,
    ensemble: o.ensemble,
    augment: [],
    ...(o.headKinds ? { headKinds: o.headKinds } : {}),
  });
  return sizeHeadsForClasses(base, { headKinds: o.headKinds }, analysis.cuts, classes, analysis.params);
}

/** The exits a fit chose: prepare's exits and calibration summary (curve included). */
export interface LearnedExits {
  readonly exits: readonly BundleExit[];
  readonly summary: CalibrationSummary;
  /**
   * Set for the exits of the bundle learning started from (`load(bundleUrl, { learn })`): `exits` is then empty (the
   * heads live in the bundle's segments, which serve them) and this names the bundle and its exit count.
   */
  readonly bundle?: { readonly manifestHash: string; readonly exits: number };
}

/** How many exits `l` has (the bundle's, for a bundle's exits). */
export const exitCount = (l: LearnedExits | undefined): number => l?.bundle?.exits ?? l?.exits.length ?? 0;

/**
 * Where `learned`'s exits serve at `target`: the cheapest point of its calibration curve that meets it, as
 * policy/curve.ts picks for the page's setTarget (through the confidence bound on the curve's sample count); undefined
 * (exits off) when none does or the pick is the backbone-only point.
 */
export function curvePointFor(learned: LearnedExits, target: number): CurvePoint | undefined {
  const c = learned.summary;
  const exits = exitCount(learned);
  if (!c.curve.some((p) => p.thresholds.length === exits)) return undefined; // (pickCurvePoint's INVALID_BUNDLE)
  const { point, reached } = pickCurvePoint(c.curve, target, { samples: curveSamples(c), exits });
  return reached && !backbonePoint(point) ? point : undefined;
}

/** Whether a curve point is the backbone-only one (every sample reaches the backbone). */
export const backbonePoint = (p: CurvePoint): boolean =>
  p.exitShares.length > 0 && p.exitShares[p.exitShares.length - 1] === 1;

/** Everything a fit reads, as plain structured-cloneable data (it may run in another worker). */
export interface FitJob {
  readonly analysis: ModelAnalysis;
  readonly io: ModelIO;
  readonly requests: readonly FeatureRequest[];
  readonly options: ResolvedLearnOptions;
  /** The reservoir's rows (uint8-coded features at every candidate cut, the full model's probabilities). */
  readonly features: FeatureSet<FeatureRows>;
  /** Measured costs (a device plan's stage times: {@link planCostTable}); exit selection minimises them instead of
   * MACs (the summary's `costUnit` 'ms'). */
  readonly costTable?: CostTable;
}

/**
 * A device plan's measured times (ms per sample on this device and backend) as a fit's cost table: the device plan's
 * own {@link costTableFromPlan} (the cumulative backbone time up to each exit cut of the plan's bundle, the whole
 * backbone, the heads' measured cost — the compiled engine's `exitMs`, else each segment's head share by MACs — and
 * the mean exit decision as the per-exit overhead). Cuts that are not the bundle's get `backbone ms × MACs fraction`,
 * heads `backbone ms × head MACs / backbone MACs` (CostTable's defaults). Undefined when the timings do not fit the
 * manifest or give no positive backbone time (costTableFromPlan's INVALID_ARGUMENT): the fits then select by MACs.
 */
export function planCostTable(manifest: BundleManifest, timings: StageTimings): CostTable | undefined {
  try {
    return costTableFromPlan(manifest, { timings });
  } catch (e) {
    if (isSelfxitError(e, 'INVALID_ARGUMENT')) return undefined;
    throw e;
  }
}

/** Runs a fit job: {@link fitLearned} in this thread, or a proxy to another worker. */
export type FitRunner = (job: FitJob, onProgress?: (p: PrepareProgress) => void) => Promise<LearnedExits>;

/**
 * prepare's SelfXit fit (calibrate/selfxit-mode.ts: cross-fitted heads, exit selection and thresholds, final heads)
 * on the job's features, without augmentation. Pure; yields to the event loop between heads.
 */
export async function fitLearned(job: FitJob, onProgress?: (p: PrepareProgress) => void): Promise<LearnedExits> {
  const { features, io, analysis } = job;
  const timer = new StepTimer();
  const c: FitContext = {
    o: learnFitOptions(job.options, analysis, io.classes).o,
    analysis,
    io,
    timer,
    warnings: [],
    progress: onProgress ?? (() => undefined),
    options: job.costTable ? { costTable: job.costTable } : {},
    samples: { count: features.n },
  };
  const plan = {
    cuts: features.cuts.map((f) => f.cut),
    requests: job.requests,
    augment: [],
    note: `uint8 reservoir, ${features.n} samples`,
  };
  const outcome = await fitSelfxitExits(c, plan, features);
  return { exits: outcome.exits, summary: { ...outcome.summary, timings: timer.toJSON() } };
}

/** The calibration summary of the exit-less bundle served before a fit (the full model answers every input). */
export function noExitSummary(o: ResolvedLearnOptions): CalibrationSummary {
  return {
    samples: 0,
    target: o.target,
    rule: 'max-softmax',
    mode: 'selfxit',
    folds: o.folds,
    seed: o.seed,
    validationAgreement: 1,
    expectedMacsFraction: 1,
    candidates: [],
    curve: noExitCurve(),
    costUnit: 'macs',
  };
}

/**
 * The bundle of `learned` exits on `lm` (without them, the full model as one segment, as served before a fit): its
 * manifest and files (`includeBackbone`: also backbone.onnx, for `selfxit eval`).
 */
export function assembleLearned(
  lm: LearnModel,
  modelBytes: Uint8Array,
  learned: LearnedExits | undefined,
  o: ResolvedLearnOptions,
  includeBackbone: boolean,
  generator = 'selfxit learn',
): ReturnType<typeof assembleBundle> {
  return assembleBundle({
    modelBytes,
    model: lm.model,
    analysis: lm.analysis,
    input: lm.io.input,
    labels: lm.labels,
    output: lm.io.output,
    outputKind: lm.io.outputKind,
    exits: learned?.exits ?? [],
    calibration: learned?.summary ?? noExitSummary(o),
    generator,
    includeBackbone,
  });
}

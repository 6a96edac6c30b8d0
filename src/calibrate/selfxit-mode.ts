// selfxit mode of prepare(): cross-fitted heads on every candidate cut (costlier kinds on a shortlist), exit
// selection and target-driven thresholds on their out-of-fold outputs, final heads on all samples for the chosen exits.
import type { CalibrationSummary, CurvePoint, ExitStats, HeadKind } from '../bundle/manifest.js';
import type { BundleExit } from '../bundle/write-bundle.js';
import type { CutPoint } from '../graph/index.js';
import {
  argmaxRows,
  exitScores,
  exitStatsOf,
  type CascadeCosts,
  type CascadeOutcome,
  type ExitScores,
} from '../policy/cascade-sim.js';
import type { CostTable } from '../policy/cost-table.js';
import { selectExitsWithRule, type RuleSelection } from '../policy/exit-rule.js';
import { augmentSamples, type AugmentKind } from './augment.js';
import { candidateCuts, exitName, findNamedCuts } from './candidate-cuts.js';
import { crossFit } from './crossfit.js';
import { buildCosts, coverageAt, estimateHeadMacs, macsOutcome } from './exit-costs.js';
import type { FeatureRows } from './feature-store.js';
import { featureMatrixBytes, type FeatureSet } from './features.js';
import {
  backbonePass,
  bundleExit,
  noExitCurve,
  type CandidateHeadReport,
  type CandidateReport,
  type ModeOutcome,
  type PrepareContext,
} from './prepare-context.js';
import type { ResolvedPrepareOptions } from './prepare-options.js';
import { throwIfAborted, yieldToEventLoop } from './progress.js';
import { kFoldAssign } from './rng.js';
import type { SampleBatch } from './samples.js';
import { planFeatures, type FeaturePlan } from './prepare-features.js';
import { DEFAULT_HIDDEN, trainHead, type TrainedHead } from './train-head.js';

/** Out-of-fold scores of one head at one cut, and its report line. */
interface TrainedCandidate {
  readonly scores: ExitScores;
  readonly report: CandidateHeadReport;
}

/** The trained heads of every candidate cut, by kind. */
type TrainedCandidates = readonly Map<HeadKind, TrainedCandidate>[];

/** What head training reads: the candidates' pooled features and the fold of every row. */
interface HeadData {
  readonly cuts: readonly CutPoint[];
  /** Rows [0, n) are the samples; rows a*n + i the a-th augmented copy of sample i (training only, same fold as i). */
  readonly features: FeatureSet<FeatureRows>;
  readonly rows: number;
  readonly foldOf: Int32Array;
  /** The backbone's argmax on the n untransformed samples. */
  readonly teacherPred: Int32Array;
}

/**
 * What fitting exits on pooled features already in memory reads of the prepare context (prepare() passes its own;
 * on-device learning, src/learn/, a context over its reservoir): no model bytes, no samples beyond their count.
 */
export type FitContext = Pick<PrepareContext, 'o' | 'analysis' | 'io' | 'timer' | 'warnings' | 'progress'> & {
  readonly options: Pick<PrepareContext['options'], 'costTable' | 'signal'>;
  readonly samples: Pick<SampleBatch, 'count'>;
};

/** The candidate cuts and their pooling that {@link fitSelfxitExits} fits heads on (a FeaturePlan's fields). */
export type FitPlan = Pick<FeaturePlan, 'cuts' | 'requests' | 'augment' | 'note'>;

/** Runs selfxit mode on the context's samples (a model with at least one inner cut). */
export async function runSelfxitMode(c: PrepareContext): Promise<ModeOutcome> {
  const plan = planFeatures(c, selfxitCuts(c));
  // The augmented copies live only through the backbone pass (not held while heads train).
  const features = await c.timer.time('features', () =>
    backbonePass(c, plan.requests, withAugmentedCopies(c, plan.augment), plan.storage),
  );
  return fitSelfxitExits(c, plan, features);
}

/**
 * The SelfXit fit on features in memory: cross-fitted heads on every candidate cut of `plan`, exit selection and
 * thresholds on their out-of-fold outputs, final heads for the chosen exits. `features` rows [0, n) are the
 * `c.samples.count` samples, then `plan.augment.length` augmented copies of them.
 */
export async function fitSelfxitExits(
  c: FitContext,
  plan: FitPlan,
  features: FeatureSet<FeatureRows>,
): Promise<ModeOutcome> {
  const { o, timer, progress, options } = c;
  const n = c.samples.count;
  const { cuts, requests } = plan;
  const data = headData(c, cuts, features, plan.augment.length);

  const trained = await timer.time('heads', () => trainCandidates(c, data));
  const kindOf = bestKinds(trained);

  // ---- thresholds and exit selection on out-of-fold outputs ----
  progress({ stage: 'thresholds', done: 0, total: 1 });
  const sel = await timer.time('thresholds', async () => selectExitsFor(c, data, trained, (i) => kindOf[i]!));
  progress({ stage: 'thresholds', done: 1, total: 1 });
  const scores = cuts.map((_, i) => trained[i]!.get(kindOf[i]!)!.scores);
  const macsCosts = headCosts(c, data, (i) => kindOf[i]!, undefined).costs;
  const outcome = macsOutcome(scores, sel.selected, sel.thresholds, macsCosts);

  const finals = await timer.time('final-heads', () => trainFinalHeads(c, data, sel.selected, kindOf));
  const exits = bundleExits(features, finals, kindOf, sel, outcome);
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
    augment: [...plan.augment],
    validationAgreement: outcome.agreement,
    expectedMacsFraction: outcome.macsFraction,
    candidates,
    curve: macsCurve(scores, sel, macsCosts),
    costUnit: options.costTable ? 'ms' : 'macs',
  };
  const candReports: CandidateReport[] = cuts.map((cut, i) => ({
    name: exitName(cut.tensor),
    cut: cut.tensor,
    macsFraction: cut.fraction,
    grid: requests[i]!.grid,
    features: features.cuts[i]!.dim,
    heads: [...trained[i]!.values()].map((t) => t.report),
    kind: kindOf[i]!,
    selected: sel.selected.includes(i),
  }));
  return {
    exits,
    summary,
    report: {
      candidates: candReports,
      selectionEvaluations: sel.evaluations,
      agreementLowerBound: sel.agreementLowerBound,
      featureBytes: features.cuts.reduce((a, f) => a + featureMatrixBytes(f.x), 0),
      featureStorage: plan.note,
    },
    validation: sel.selected.map((i) => scores[i]!),
  };
}

/** The candidate cuts: spread over the MACs, or those named in `exits` that can hold an exit (warning for the rest). */
function selfxitCuts(c: PrepareContext): CutPoint[] {
  const { analysis, options, o } = c;
  const cuts = candidateCuts(analysis.cuts, options.exits ? Infinity : o.maxCandidates);
  if (!options.exits) return cuts;
  const usable = new Set(cuts);
  const named = findNamedCuts(analysis.cuts, options.exits);
  for (const x of named)
    if (!usable.has(x))
      c.warnings.push(`"${x.tensor}" cannot hold an exit (not a 4-D float map inside the backbone); skipped`);
  return named.filter((x) => usable.has(x));
}

/** The samples followed by their augmented copies (the samples alone without augmentation). */
function withAugmentedCopies(c: PrepareContext, augment: readonly AugmentKind[]): SampleBatch {
  const { o, io, samples } = c;
  if (!augment.length) return samples;
  const shape = { height: io.input.height, width: io.input.width, channels: io.input.channels };
  return augmentSamples(samples, shape, augment, o.seed);
}

/** Folds of every feature row (an augmented copy shares its sample's fold) and the backbone's argmax. */
function headData(
  c: FitContext,
  cuts: readonly CutPoint[],
  features: FeatureSet<FeatureRows>,
  augmentCopies: number,
): HeadData {
  const { o } = c;
  const n = c.samples.count;
  const copies = 1 + augmentCopies;
  const rows = n * copies;
  const teacherPred = argmaxRows(features.teacher, n, c.io.classes);
  const sampleFold = kFoldAssign(n, o.folds, o.seed);
  const foldOf = new Int32Array(rows);
  for (let a = 0; a < copies; a++) foldOf.set(sampleFold, a * n);
  return { cuts, features, rows, foldOf, teacherPred };
}

/** Hidden width of a head kind. */
function hiddenOf(o: ResolvedPrepareOptions, kind: HeadKind): number {
  return kind === 'pool-mlp' ? o.hidden : DEFAULT_HIDDEN[kind];
}

/** Cost model with the head of kind `kindOf(i)` at cut i (MACs, or `table`'s measured costs). */
function headCosts(
  c: FitContext,
  data: HeadData,
  kindOf: (i: number) => HeadKind,
  table: CostTable | undefined,
): ReturnType<typeof buildCosts> {
  const headMacs = data.cuts.map((_, i) =>
    estimateHeadMacs(hiddenOf(c.o, kindOf(i)), data.features.cuts[i]!, c.io.classes),
  );
  return buildCosts(c.analysis, data.cuts, headMacs, table);
}

/** Cross-fits one `kind` head at cut i: out-of-fold scores on the samples, coverage and utility at the target. */
function trainCandidate(c: FitContext, data: HeadData, i: number, kind: HeadKind, onFit: () => void): TrainedCandidate {
  const { o } = c;
  const n = c.samples.count;
  const k = c.io.classes;
  const f = data.features.cuts[i]!;
  const cf = crossFit(f.x, data.features.teacher, data.rows, f.dim, k, {
    kind,
    hidden: hiddenOf(o, kind),
    foldOf: data.foldOf,
    seed: o.seed,
    temperature: o.temperature,
    fitFinal: false,
    onFit,
  });
  const scores = exitScores(cf.oof.subarray(0, n * k), n, k, data.teacherPred);
  const { costs } = headCosts(c, data, () => kind, c.options.costTable);
  const after = (costs.fullCost - costs.backboneCostAt[i]!) / costs.fullCost;
  const coverage = coverageAt(scores, o.target);
  const head = costs.headCost[i]! / costs.fullCost;
  const { agreement, meanScore } = exitStatsOf(scores);
  return {
    scores,
    report: { kind, agreement, meanScore, coverage, utility: coverage * after - head, trainMs: cf.ms },
  };
}

/** The cheapest kind on every candidate; costlier kinds on the shortlist. */
async function trainCandidates(c: FitContext, data: HeadData): Promise<TrainedCandidates> {
  const { o, options, progress } = c;
  const { cuts } = data;
  const [first, ...others] = o.headKinds;
  const shortlistSize = Math.min(cuts.length, o.shortlist);
  const totalFits = (cuts.length + (others.length ? shortlistSize * others.length : 0)) * o.folds;
  let fitsDone = 0;
  const trained = cuts.map(() => new Map<HeadKind, TrainedCandidate>());
  const train = async (i: number, kind: HeadKind): Promise<void> => {
    throwIfAborted(options.signal, 'head training');
    const detail = `${exitName(cuts[i]!.tensor)} ${kind}`;
    const onFit = (): void => progress({ stage: 'heads', done: ++fitsDone, total: totalFits, detail });
    trained[i]!.set(kind, trainCandidate(c, data, i, kind, onFit));
    await yieldToEventLoop();
  };
  for (let i = 0; i < cuts.length; i++) await train(i, first!);
  if (others.length > 0 && shortlistSize > 0) {
    const short = shortlist(c, data, trained, first!, shortlistSize);
    for (const kind of others) for (const i of short) await train(i, kind);
  }
  return trained;
}

/**
 * Cuts worth a costlier head: the exits a selection with `first` heads picks, then the most useful cuts by the
 * `first` head, `size` in all (in cut order).
 */
function shortlist(c: FitContext, data: HeadData, trained: TrainedCandidates, first: HeadKind, size: number): number[] {
  const prelim = selectExitsFor(c, data, trained, () => first);
  const utility = (i: number): number => trained[i]!.get(first)!.report.utility;
  const byUtility = data.cuts.map((_, i) => i).sort((a, b) => utility(b) - utility(a));
  return [...new Set([...prelim.selected, ...byUtility])].slice(0, size).sort((a, b) => a - b);
}

/** Per cut, the kind whose head has the highest utility (the first of equals). */
function bestKinds(trained: TrainedCandidates): HeadKind[] {
  return trained.map(
    (byKind) => [...byKind.values()].reduce((a, b) => (b.report.utility > a.report.utility ? b : a)).report.kind,
  );
}

/** Exit selection and thresholds under the threshold rule, with the head of kind `kindOf(i)` at cut i. */
function selectExitsFor(
  c: FitContext,
  data: HeadData,
  trained: TrainedCandidates,
  kindOf: (i: number) => HeadKind,
): RuleSelection {
  const { o, options } = c;
  const { costs, overheadUnit } = headCosts(c, data, kindOf, options.costTable);
  const overhead = options.costTable?.overhead ?? o.overheadFraction * overheadUnit;
  return selectExitsWithRule(
    data.cuts.map((_, i) => trained[i]!.get(kindOf(i))!.scores),
    costs,
    { target: o.target, overhead, curvePoints: o.curvePoints, rule: o.thresholdRule },
  );
}

/** The curve in MACs (selection may have used measured ms): the same knobs and thresholds, re-simulated. */
function macsCurve(scores: readonly ExitScores[], sel: RuleSelection, macsCosts: CascadeCosts): CurvePoint[] {
  if (sel.selected.length === 0) return noExitCurve();
  return sel.curve.map((p) => {
    const m = macsOutcome(scores, sel.selected, p.thresholds, macsCosts);
    return {
      knob: p.knob,
      thresholds: p.thresholds,
      agreement: m.agreement,
      macsFraction: m.macsFraction,
      exitShares: m.exitShares,
    };
  });
}

/** Final heads on all rows (samples and copies) for the selected cuts. */
async function trainFinalHeads(
  c: FitContext,
  data: HeadData,
  selected: readonly number[],
  kindOf: readonly HeadKind[],
): Promise<{ head: TrainedHead; i: number }[]> {
  const { o, options } = c;
  const out: { head: TrainedHead; i: number }[] = [];
  for (const i of selected) {
    throwIfAborted(options.signal, 'final head training');
    const f = data.features.cuts[i]!;
    out.push({
      i,
      head: trainHead(f.x, data.features.teacher, data.rows, f.dim, c.io.classes, {
        kind: kindOf[i]!,
        hidden: hiddenOf(o, kindOf[i]!),
        seed: o.seed,
        temperature: o.temperature,
      }),
    });
    await yieldToEventLoop();
  }
  return out;
}

/** The bundle's exits: each final head as a HeadSpec at its cut, with its threshold and (cost-calibrated) score map. */
function bundleExits(
  features: FeatureSet<FeatureRows>,
  finals: readonly { head: TrainedHead; i: number }[],
  kindOf: readonly HeadKind[],
  sel: RuleSelection,
  outcome: CascadeOutcome,
): BundleExit[] {
  return finals.map(({ head, i }, j) => {
    const map = sel.maps[j]!;
    return {
      ...bundleExit(features.cuts[i]!, head, kindOf[i]!, sel.thresholds[j]!, outcome.exitShares[j]!),
      ...(sel.rule === 'cost-calibrated'
        ? { scoreMap: { slope: map.slope, intercept: map.intercept, remaining: map.remaining } }
        : {}),
    };
  });
}

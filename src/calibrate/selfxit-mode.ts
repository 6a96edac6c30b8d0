// selfxit mode of prepare(): cross-fitted heads on every candidate cut (costlier heads on a shortlist: fixed kinds, or
// with capacity 'auto' the configurations of head-capacity.ts screened on one fold), exit selection and target-driven
// thresholds on their out-of-fold outputs, final heads on all samples for the chosen exits.
import type { CalibrationSummary, CurvePoint, ExitStats } from '../bundle/manifest.js';
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
import { planFeatures } from './prepare-features.js';
import { DEFAULT_HIDDEN, trainHead, type TrainedHead } from './train-head.js';
import {
  autoConfigs,
  autoLadder,
  configFeatures,
  configGeometry,
  fixedConfig,
  subsetScores,
  chooseCapacity,
  headUtility,
  type HeadConfig,
} from './head-capacity.js';
import type { CutFeatures } from './features.js';

/** Out-of-fold scores of one head at one cut, and its report line. */
interface TrainedCandidate {
  readonly config: HeadConfig;
  readonly scores: ExitScores;
  readonly report: CandidateHeadReport;
}

/** The trained heads of every candidate cut, by configuration label. */
type TrainedCandidates = readonly Map<string, TrainedCandidate>[];

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

/** Runs selfxit mode on the context's samples (a model with at least one inner cut). */
export async function runSelfxitMode(c: PrepareContext): Promise<ModeOutcome> {
  const { o, timer, progress, options } = c;
  const n = c.samples.count;
  const plan = planFeatures(c, selfxitCuts(c));
  const { cuts, requests } = plan;
  // The augmented copies live only through the backbone pass (not held while heads train).
  const features = await timer.time('features', () =>
    backbonePass(c, requests, withAugmentedCopies(c, plan.augment), plan.storage),
  );
  const data = headData(c, cuts, features, plan.augment.length);

  const { trained, screened } = await timer.time('heads', () => trainCandidates(c, data));
  const configOf = bestConfigs(trained);

  // ---- thresholds and exit selection on out-of-fold outputs ----
  progress({ stage: 'thresholds', done: 0, total: 1 });
  const sel = await timer.time('thresholds', async () => selectExitsFor(c, data, trained, (i) => configOf[i]!));
  progress({ stage: 'thresholds', done: 1, total: 1 });
  const scores = cuts.map((_, i) => trained[i]!.get(configOf[i]!.label)!.scores);
  const macsCosts = headCosts(c, data, (i) => configOf[i]!, undefined).costs;
  const outcome = macsOutcome(scores, sel.selected, sel.thresholds, macsCosts);

  const finals = await timer.time('final-heads', () => trainFinalHeads(c, data, sel.selected, configOf));
  const exits = bundleExits(finals, configOf, sel, outcome);
  const candidates: ExitStats[] = cuts.map((cut, i) => {
    const r = trained[i]!.get(configOf[i]!.label)!.report;
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
  const candReports: CandidateReport[] = cuts.map((cut, i) => {
    const g = configGeometry(features.cuts[i]!, configOf[i]!);
    return {
      name: exitName(cut.tensor),
      cut: cut.tensor,
      macsFraction: cut.fraction,
      grid: g.grid,
      features: g.dim,
      heads: [...[...trained[i]!.values()].map((t) => t.report), ...screened[i]!],
      kind: configOf[i]!.kind,
      capacity: configOf[i]!.label,
      selected: sel.selected.includes(i),
    };
  });
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
  c: PrepareContext,
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

/** Fixed capacity: one configuration per head kind (pool-mlp at `o.hidden`), on the stored pooling. */
function fixedConfigs(o: ResolvedPrepareOptions): HeadConfig[] {
  return o.headKinds.map((kind) => fixedConfig(kind, kind === 'pool-mlp' ? o.hidden : DEFAULT_HIDDEN[kind]));
}

/** Cost model with the head `configOf(i)` at cut i (MACs, or `table`'s measured costs). */
function headCosts(
  c: PrepareContext,
  data: HeadData,
  configOf: (i: number) => HeadConfig,
  table: CostTable | undefined,
): ReturnType<typeof buildCosts> {
  const headMacs = data.cuts.map((_, i) =>
    estimateHeadMacs(configOf(i).hidden, configGeometry(data.features.cuts[i]!, configOf(i)), c.io.classes),
  );
  return buildCosts(c.analysis, data.cuts, headMacs, table);
}

/**
 * Cross-fits the `config` head at cut i on its features `f` (every fold, or only `onlyFolds`: screening), and rates
 * it on the samples whose out-of-fold outputs it produced: agreement, coverage and utility at the target.
 */
function trainCandidate(
  c: PrepareContext,
  data: HeadData,
  i: number,
  config: HeadConfig,
  f: CutFeatures<FeatureRows>,
  onFit: () => void,
  onlyFolds?: readonly number[],
): TrainedCandidate {
  const { o } = c;
  const n = c.samples.count;
  const k = c.io.classes;
  const cf = crossFit(f.x, data.features.teacher, data.rows, f.dim, k, {
    kind: config.kind,
    hidden: config.hidden,
    foldOf: data.foldOf,
    seed: o.seed,
    temperature: o.temperature,
    fitFinal: false,
    onFit,
    ...(onlyFolds ? { onlyFolds } : {}),
  });
  const scores = exitScores(cf.oof.subarray(0, n * k), n, k, data.teacherPred);
  const rated = onlyFolds ? subsetScores(scores, heldOutSamples(c, data, onlyFolds)) : scores;
  return { config, scores, report: rate(c, data, i, config, rated, cf.ms) };
}

/** The samples (not their copies) of folds `folds`. */
function heldOutSamples(c: PrepareContext, data: HeadData, folds: readonly number[]): Int32Array {
  const n = c.samples.count;
  return Int32Array.from(
    (function* () {
      for (let r = 0; r < n; r++) if (folds.includes(data.foldOf[r]!)) yield r;
    })(),
  );
}

/** Report line of a head: agreement, coverage at the target and utility (coverage × cost after the cut − head cost). */
function rate(
  c: PrepareContext,
  data: HeadData,
  i: number,
  config: HeadConfig,
  scores: ExitScores,
  trainMs: number,
): CandidateHeadReport {
  const { costs } = headCosts(c, data, () => config, c.options.costTable);
  const after = (costs.fullCost - costs.backboneCostAt[i]!) / costs.fullCost;
  const coverage = coverageAt(scores, c.o.target);
  const head = costs.headCost[i]! / costs.fullCost;
  const { agreement, meanScore } = exitStatsOf(scores);
  const utility = headUtility(coverage, after, head);
  return { kind: config.kind, capacity: config.label, agreement, meanScore, coverage, utility, trainMs };
}

/**
 * The cheapest head on every candidate, every other head kind on the shortlist (cross-fitted): fixed capacity stops
 * there. Auto capacity then tries the ladder's configurations that the training rows allow on each shortlisted cut:
 * each is screened on one fold, rated on that fold's samples against the heads already trained there, and only the
 * best, when it beats them, is cross-fitted on every fold (about 1/folds of the work per configuration that loses).
 */
async function trainCandidates(
  c: PrepareContext,
  data: HeadData,
): Promise<{ trained: TrainedCandidates; screened: CandidateHeadReport[][] }> {
  const { o, options, progress } = c;
  const { cuts } = data;
  const kinds = fixedConfigs(o);
  const [first, ...others] = kinds;
  const auto = o.capacity === 'auto' && o.headKinds.includes('pool-mlp');
  const ladder = auto ? autoLadder(o.hidden).filter((r) => !kinds.some((k) => sameHead(r.config, k))) : [];
  const extras = (i: number): HeadConfig[] => autoConfigs(data.rows, data.features.cuts[i]!, ladder);
  const shortlistSize = Math.min(cuts.length, o.shortlist);
  const perShort = others.length * o.folds + (extras(0).length ? extras(0).length + o.folds : 0);
  const totalFits = cuts.length * o.folds + shortlistSize * perShort;
  let fitsDone = 0;
  const trained = cuts.map(() => new Map<string, TrainedCandidate>());
  const screened: CandidateHeadReport[][] = cuts.map(() => []);
  const train = async (i: number, config: HeadConfig, onlyFolds?: readonly number[]): Promise<TrainedCandidate> => {
    throwIfAborted(options.signal, 'head training');
    const detail = `${exitName(cuts[i]!.tensor)} ${config.label}${onlyFolds ? ' (screen)' : ''}`;
    const onFit = (): void => progress({ stage: 'heads', done: ++fitsDone, total: totalFits, detail });
    const f = configFeatures(data.features.cuts[i]!, config);
    const t = trainCandidate(c, data, i, config, f, onFit, onlyFolds);
    await yieldToEventLoop();
    return t;
  };
  for (let i = 0; i < cuts.length; i++) trained[i]!.set(first!.label, await train(i, first!));
  if (shortlistSize === 0 || (others.length === 0 && ladder.length === 0)) return { trained, screened };
  const short = shortlist(c, data, trained, first!, shortlistSize);
  for (const config of others) for (const i of short) trained[i]!.set(config.label, await train(i, config));
  if (ladder.length === 0) return { trained, screened };
  const screenFolds = [0];
  const held = heldOutSamples(c, data, screenFolds);
  for (const i of short) {
    const onFold = [...trained[i]!.values()].map((t) => ({
      config: t.config,
      utility: rate(c, data, i, t.config, subsetScores(t.scores, held), 0).utility,
    }));
    const rated = [];
    for (const config of extras(i)) {
      const s = await train(i, config, screenFolds);
      screened[i]!.push({ ...s.report, capacity: `${config.label} (screened on fold 0)` });
      rated.push({ config, utility: s.report.utility });
    }
    const best = chooseCapacity(chooseCapacity(onFold[0]!, onFold.slice(1)), rated);
    if (!trained[i]!.has(best.config.label)) trained[i]!.set(best.config.label, await train(i, best.config));
  }
  progress({ stage: 'heads', done: totalFits, total: totalFits });
  return { trained, screened };
}

/** Same kind, width and pooling. */
function sameHead(a: HeadConfig, b: HeadConfig): boolean {
  return a.kind === b.kind && a.hidden === b.hidden && a.coarse === b.coarse && a.max === b.max;
}

/**
 * Cuts worth a costlier head: the exits a selection with `first` heads picks, then the most useful cuts by the
 * `first` head, `size` in all (in cut order).
 */
function shortlist(
  c: PrepareContext,
  data: HeadData,
  trained: TrainedCandidates,
  first: HeadConfig,
  size: number,
): number[] {
  const prelim = selectExitsFor(c, data, trained, () => first);
  const utility = (i: number): number => trained[i]!.get(first.label)!.report.utility;
  const byUtility = data.cuts.map((_, i) => i).sort((a, b) => utility(b) - utility(a));
  return [...new Set([...prelim.selected, ...byUtility])].slice(0, size).sort((a, b) => a - b);
}

/** Per cut, the head with the highest out-of-fold utility (the first of equals). */
function bestConfigs(trained: TrainedCandidates): HeadConfig[] {
  return trained.map((byConfig) => {
    const [first, ...rest] = [...byConfig.values()].map((t) => ({ config: t.config, utility: t.report.utility }));
    return chooseCapacity(first!, rest).config;
  });
}

/** Exit selection and thresholds under the threshold rule, with the head `configOf(i)` at cut i. */
function selectExitsFor(
  c: PrepareContext,
  data: HeadData,
  trained: TrainedCandidates,
  configOf: (i: number) => HeadConfig,
): RuleSelection {
  const { o, options } = c;
  const { costs, overheadUnit } = headCosts(c, data, configOf, options.costTable);
  const overhead = options.costTable?.overhead ?? o.overheadFraction * overheadUnit;
  return selectExitsWithRule(
    data.cuts.map((_, i) => trained[i]!.get(configOf(i).label)!.scores),
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

/** Final heads on all rows (samples and copies) for the selected cuts, each on its configuration's features. */
async function trainFinalHeads(
  c: PrepareContext,
  data: HeadData,
  selected: readonly number[],
  configOf: readonly HeadConfig[],
): Promise<FinalHead[]> {
  const { o, options } = c;
  const out: FinalHead[] = [];
  for (const i of selected) {
    throwIfAborted(options.signal, 'final head training');
    const config = configOf[i]!;
    const f = configFeatures(data.features.cuts[i]!, config);
    out.push({
      i,
      f,
      head: trainHead(f.x, data.features.teacher, data.rows, f.dim, c.io.classes, {
        kind: config.kind,
        hidden: config.hidden,
        seed: o.seed,
        temperature: o.temperature,
      }),
    });
    await yieldToEventLoop();
  }
  return out;
}

/** A final head at cut i and the features it reads. */
interface FinalHead {
  readonly i: number;
  readonly f: CutFeatures<FeatureRows>;
  readonly head: TrainedHead;
}

/** The bundle's exits: each final head as a HeadSpec at its cut, with its threshold and (cost-calibrated) score map. */
function bundleExits(
  finals: readonly FinalHead[],
  configOf: readonly HeadConfig[],
  sel: RuleSelection,
  outcome: CascadeOutcome,
): BundleExit[] {
  return finals.map(({ head, i, f }, j) => {
    const map = sel.maps[j]!;
    return {
      ...bundleExit(f, head, configOf[i]!.kind, sel.thresholds[j]!, outcome.exitShares[j]!),
      ...(sel.rule === 'cost-calibrated'
        ? { scoreMap: { slope: map.slope, intercept: map.intercept, remaining: map.remaining } }
        : {}),
    };
  });
}

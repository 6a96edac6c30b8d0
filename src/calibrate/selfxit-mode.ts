// selfxit mode of prepare(): cross-fitted heads on every candidate cut (candidate-heads.ts: costlier ones on a shortlist, or
// with capacity 'auto' the configurations of head-capacity.ts screened on one fold), exit selection and target-driven
// thresholds on their out-of-fold outputs, final heads on all samples for the chosen exits.
import type { CalibrationSummary, CurvePoint, ExitStats } from '../bundle/manifest.js';
import type { BundleExit } from '../bundle/write-bundle.js';
import type { CutPoint } from '../graph/index.js';
import { maxDisagreements } from '../policy/bounds.js';
import { argmaxRows, type CascadeCosts, type CascadeOutcome, type ExitScores } from '../policy/cascade-sim.js';
import type { RuleSelection } from '../policy/exit-rule.js';
import { augmentedRows, type AugmentKind } from './augment.js';
import { candidateCuts, cutName, namedExitCuts } from './candidate-cuts.js';
import {
  bestConfigs,
  headCosts,
  loadTrainer,
  selectExitsFor,
  trainCandidates,
  type HeadData,
} from './candidate-heads.js';
import { macsOutcome } from './exit-costs.js';
import type { FeatureRows } from './feature-store.js';
import { featureMatrixBytes, type CutFeatures, type FeatureSet } from './features.js';
import { configFeatures, configGeometry, type HeadConfig } from './head-capacity.js';
import {
  backbonePass,
  bundleExit,
  noExitCurve,
  type CandidateReport,
  type ModeOutcome,
  type FitContext,
  type PrepareContext,
} from './prepare-context.js';
import { throwIfAborted } from './progress.js';
import { kFoldAssign } from './rng.js';
import type { SampleBatch, SampleRows } from './samples.js';
import { planFeatures, type FeaturePlan } from './prepare-features.js';
import { averageLogitHeads, MEMBER_SEED_STEP, membersOf } from './ensemble.js';
import { resolveTrainSettings, toTrainHeadResult, type TrainedHead } from './train-head.js';
import { mapLimit, settleAll } from './train-task.js';

/** The candidate cuts and their pooling that {@link fitSelfxitExits} fits heads on (a FeaturePlan's fields). */
export type FitPlan = Pick<FeaturePlan, 'cuts' | 'requests' | 'augment' | 'note'> &
  Partial<Pick<FeaturePlan, 'imageBytes' | 'probBytes'>>;

/** Runs selfxit mode on the context's samples (a model with at least one inner cut). */
export async function runSelfxitMode(c: PrepareContext): Promise<ModeOutcome> {
  const plan = planFeatures(c, selfxitCuts(c));
  // The augmented copies are made a batch at a time during the backbone pass (never all held).
  const features = await c.timer.time('features', () =>
    backbonePass(c, plan.requests, withAugmentedCopies(c, plan.augment), plan.storage, {
      shared: c.options.trainerPool?.sharedMemory === true,
    }),
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
  const { cuts } = plan;
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
    return { name: cutName(cut), agreement: r.agreement, meanScore: r.meanScore };
  });
  const few = sel.selected.length > 0 ? fewSamplesWarning(n, o.target) : undefined;
  if (few) c.warnings.push(few);
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
      name: cutName(cut),
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
      ...(plan.imageBytes !== undefined ? { imageBytes: plan.imageBytes } : {}),
      ...(plan.probBytes !== undefined ? { probBytes: plan.probBytes } : {}),
    },
    validation: sel.selected.map((i) => scores[i]!),
  };
}

/** Below this many disagreements allowed out of fold, the agreement promise rests on too few to survive the search. */
export const FEW_DISAGREEMENTS = 4;

/**
 * A warning when `n` samples let the one-sided bound certify `target` with fewer than {@link FEW_DISAGREEMENTS}
 * out-of-fold disagreements (0.99: under 888 samples). The exits and thresholds are the cheapest of many settings
 * tried on those samples, so one that shows (almost) no disagreement is found by luck as often as by merit: measured
 * on unseen images (Fashion-MNIST ResNet, 400 samples at 0.99, seed 0) the bundle agreed 97.0 %. Undefined otherwise.
 */
export function fewSamplesWarning(n: number, target: number): string | undefined {
  const allowed = maxDisagreements(n, target);
  if (target >= 1 || allowed >= FEW_DISAGREEMENTS) return undefined;
  const enough = Math.ceil(10 / (1 - target) - 1e-9);
  return `With ${n} samples, target ${target} is certified only when at most ${Math.max(0, allowed)} of them disagree out of fold: the exits and thresholds chosen among many tried on them are optimistic, and on unseen images agreement can fall a point or more short of the target. Use at least ${enough} samples (10 / (1 - target)).`;
}

/** The candidate cuts: spread over the MACs, or those named in `exits` that can hold an exit (warning for the rest). */
function selfxitCuts(c: PrepareContext): CutPoint[] {
  const { analysis, options, o } = c;
  if (!options.exits) return candidateCuts(analysis.cuts, o.maxCandidates);
  return namedExitCuts(analysis.cuts, options.exits, c.warnings);
}

/** The samples followed by their augmented copies, made a batch at a time (the samples alone without augmentation). */
function withAugmentedCopies(c: PrepareContext, augment: readonly AugmentKind[]): SampleBatch | SampleRows {
  const { o, io, samples } = c;
  if (!augment.length) return samples;
  const shape = { height: io.input.height, width: io.input.width, channels: io.input.channels };
  // cutmix partners from the image's own fold (the folds headData assigns)
  return augmentedRows(samples, shape, augment, o.seed, kFoldAssign(samples.count, o.folds, o.seed));
}

/** Folds of every feature row (an augmented copy shares its sample's fold) and the backbone's argmax. */
export function headData(
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

/**
 * Final heads on all rows (samples and copies) for the selected cuts, each on its configuration's features: one
 * training task per cut and ensemble member (the same fits as trainEnsembleHead), run on the trainer side by side.
 */
export async function trainFinalHeads(
  c: FitContext,
  data: HeadData,
  selected: readonly number[],
  configOf: readonly HeadConfig[],
): Promise<FinalHead[]> {
  const { o, options } = c;
  const { trainer, stop, done } = await loadTrainer(c, data);
  try {
    return await mapLimit(
      selected,
      trainer.concurrency,
      async (i) => {
        throwIfAborted(options.signal, 'final head training');
        const config = configOf[i]!;
        const train = { kind: config.kind, hidden: config.hidden, temperature: o.temperature };
        const { logitScale } = resolveTrainSettings(train);
        const M = membersOf(config.kind, o.ensemble);
        const members = await settleAll(
          Array.from({ length: M }, (_, m) => {
            const seed = o.seed + MEMBER_SEED_STEP * m;
            const heads = [{ holdOut: -1, seed }];
            return trainer.run({ cut: i, config, group: 'all', heads, train, shuffleSeed: seed }, stop.signal);
          }),
          stop,
        );
        const results = members.map((r) => toTrainHeadResult(r.stack, 0, logitScale, r.ms));
        const head: TrainedHead = M === 1 ? results[0]! : averageLogitHeads(results);
        return { i, f: configFeatures(data.features.cuts[i]!, config), head };
      },
      stop,
    );
  } finally {
    await done();
  }
}

/** A final head at cut i and the features it reads. */
export interface FinalHead {
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

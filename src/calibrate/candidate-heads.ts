// Candidate heads of selfxit mode: the cheapest head cross-fitted on every candidate cut, costlier heads on a shortlist
// (fixed kinds; with capacity 'auto' also the configurations of head-capacity.ts, screened on one fold), each rated by
// its out-of-fold saving net of its cost; the cost model and exit selection over the heads kept.
import type { CutPoint } from '../graph/index.js';
import { exitScores, exitStatsOf, type ExitScores } from '../policy/cascade-sim.js';
import type { CostTable } from '../policy/cost-table.js';
import { selectExitsWithRule, type RuleSelection } from '../policy/exit-rule.js';
import { cutName } from './candidate-cuts.js';
import { foldFits, memberStack, planCrossFit } from './crossfit.js';
import { membersOf } from './ensemble.js';
import { buildCosts, coverageAt, estimateHeadMacs } from './exit-costs.js';
import type { FeatureRows } from './feature-store.js';
import type { FeatureSet } from './features.js';
import {
  autoConfigs,
  autoLadder,
  chooseCapacity,
  configGeometry,
  fixedConfig,
  headUtility,
  subsetScores,
  type HeadConfig,
} from './head-capacity.js';
import type { CandidateHeadReport, FitContext } from './prepare-context.js';
import type { ResolvedPrepareOptions } from './prepare-options.js';
import { addMemberLogits } from './head-stack.js';
import { throwIfAborted } from './progress.js';
import { DEFAULT_HIDDEN } from './train-head.js';
import { inProcessTrainer, mapLimit, settleAll, type HeadTrainerPool, type TrainingData } from './train-task.js';

/** Out-of-fold scores of one head at one cut, and its report line. */
export interface TrainedCandidate {
  readonly config: HeadConfig;
  readonly scores: ExitScores;
  /** Out-of-fold probabilities `[n, k]` of the samples (not their copies); kept only when asked (`keepProbs`). */
  readonly probs?: Float32Array;
  readonly report: CandidateHeadReport;
}

/** The trained heads of every candidate cut, by configuration label. */
export type TrainedCandidates = readonly Map<string, TrainedCandidate>[];

/** What head training reads: the candidates' pooled features and the fold of every row. */
export interface HeadData {
  readonly cuts: readonly CutPoint[];
  /** Rows [0, n) are the samples; rows a*n + i the a-th augmented copy of sample i (training only, same fold as i). */
  readonly features: FeatureSet<FeatureRows>;
  readonly rows: number;
  readonly foldOf: Int32Array;
  /** The backbone's argmax on the n untransformed samples. */
  readonly teacherPred: Int32Array;
}

/** Fixed capacity: one configuration per head kind (pool-mlp at `o.hidden`), on the stored pooling. */
function fixedConfigs(o: ResolvedPrepareOptions): HeadConfig[] {
  return o.headKinds.map((kind) => fixedConfig(kind, kind === 'pool-mlp' ? o.hidden : DEFAULT_HIDDEN[kind]));
}

/** Cost model with the head `configOf(i)` at cut i (MACs, or `table`'s measured costs). */
export function headCosts(
  c: FitContext,
  data: HeadData,
  configOf: (i: number) => HeadConfig,
  table: CostTable | undefined,
): ReturnType<typeof buildCosts> {
  const headMacs = data.cuts.map((_, i) =>
    estimateHeadMacs(
      configOf(i).hidden * membersOf(configOf(i).kind, c.o.ensemble),
      configGeometry(data.features.cuts[i]!, configOf(i)),
      c.io.classes,
    ),
  );
  return buildCosts(c.analysis, data.cuts, headMacs, table);
}

/**
 * Cross-fits the `config` head at cut i (every fold, or only `onlyFolds`: screening) on the trainer, one task per
 * ensemble member, and rates it on the samples whose out-of-fold outputs it produced: agreement, coverage and utility
 * at the target. The same fits, in the same float order, as crossFit on that cut's features.
 */
async function trainCandidate(
  c: FitContext,
  data: HeadData,
  trainer: HeadTrainerPool,
  stop: AbortController,
  i: number,
  config: HeadConfig,
  onFit: () => void,
  onlyFolds: readonly number[] | undefined,
  keepProbs: boolean,
): Promise<TrainedCandidate> {
  const { o } = c;
  const n = c.samples.count;
  const k = c.io.classes;
  const plan = planCrossFit(data.rows, {
    kind: config.kind,
    hidden: config.hidden,
    foldOf: data.foldOf,
    seed: o.seed,
    temperature: o.temperature,
    members: membersOf(config.kind, o.ensemble),
    // the samples' out-of-fold outputs only: their augmented copies' are never read (n × k, not rows × k)
    predictRows: n,
    ...(onlyFolds ? { onlyFolds } : {}),
  });
  const M = plan.members;
  const train = { kind: config.kind, hidden: config.hidden, temperature: o.temperature, earlyStopping: 0 };
  // An ensemble's held-out outputs: the members' raw logits, summed into one buffer as they arrive, in member order
  // (member 0 + member 1 + …: crossFit's float order, so the same bytes), each dropped once added. A member that comes
  // before the ones ahead of it waits for them: at most the members in flight are held beside the sum.
  const sum = M > 1 ? new Float32Array(plan.predictRows * k) : undefined;
  const arrived: (Float32Array | undefined)[] = new Array<Float32Array | undefined>(M);
  let added = 0;
  const results = await settleAll(
    Array.from({ length: M }, (_, m) => {
      const member = memberStack(plan, m);
      const oof = { rows: plan.predictRows, logits: M > 1 };
      const task = { cut: i, config, group: 'folds' as const, heads: member.heads, train, oof };
      return trainer.run({ ...task, shuffleSeed: member.shuffleSeed }, stop.signal).then((r) => {
        if (!sum) return r;
        arrived[m] = r.oof!;
        for (; added < M && arrived[added]; added++) {
          addMemberLogits(sum, arrived[added]!, 1 / M, plan.settings.logitScale);
          arrived[added] = undefined;
        }
        return { stack: r.stack, ms: r.ms };
      });
    }),
    stop,
  );
  const oof = sum ?? results[0]!.oof!;
  const ms = results.reduce((a, r) => a + r.ms, 0);
  foldFits(
    plan,
    results.map((r) => r.stack),
    oof,
    k,
    ms,
    onFit,
  );
  const scores = exitScores(oof, n, k, data.teacherPred);
  const rated = onlyFolds ? subsetScores(scores, heldOutSamples(c, data, onlyFolds)) : scores;
  const report = rate(c, data, i, config, rated, ms);
  return { config, scores, report, ...(keepProbs ? { probs: oof } : {}) };
}

/**
 * The trainer of a heads phase, given its data: prepare's `trainerPool`, else a new in-process one. `stop` aborts with
 * the caller's signal, and on the first failure (so that no task still queued runs); `done` (in a finally) unloads the
 * data. A load that rejects is unloaded at once (a pool that took part of it keeps nothing), and its error rethrown.
 */
export async function loadTrainer(
  c: FitContext,
  data: TrainingData,
): Promise<{ trainer: HeadTrainerPool; stop: AbortController; done: () => Promise<void> }> {
  const trainer = c.options.trainerPool ?? inProcessTrainer();
  try {
    await trainer.load({ features: data.features, rows: data.rows, foldOf: data.foldOf });
  } catch (e) {
    // the load's error is the one to report, whatever unload() does (throws at once, rejects, returns no promise)
    await Promise.resolve()
      .then(() => trainer.unload?.())
      .catch(() => undefined);
    throw e;
  }
  const stop = new AbortController();
  const parent = c.options.signal;
  const onAbort = (): void => stop.abort(parent?.reason);
  if (parent?.aborted) onAbort();
  else parent?.addEventListener('abort', onAbort, { once: true });
  const done = async (): Promise<void> => {
    parent?.removeEventListener('abort', onAbort);
    await trainer.unload?.(); // the phase's features are not kept alive by a pool that outlives it
  };
  return { trainer, stop, done };
}

/** The samples (not their copies) of folds `folds`. */
function heldOutSamples(c: FitContext, data: HeadData, folds: readonly number[]): Int32Array {
  const n = c.samples.count;
  return Int32Array.from(
    (function* () {
      for (let r = 0; r < n; r++) if (folds.includes(data.foldOf[r]!)) yield r;
    })(),
  );
}

/** Report line of a head: agreement, coverage at the target and utility (coverage × cost after the cut − head cost). */
function rate(
  c: FitContext,
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
 * `keepProbs`: each head also keeps its out-of-fold probabilities (studies of scores built on them; n × k floats each).
 */
export async function trainCandidates(
  c: FitContext,
  data: HeadData,
  keepProbs = false,
): Promise<{ trained: TrainedCandidates; screened: CandidateHeadReport[][] }> {
  const { o, options, progress } = c;
  const { cuts } = data;
  const kinds = fixedConfigs(o);
  const [first, ...others] = kinds;
  const auto = o.capacity === 'auto' && o.headKinds.includes('pool-mlp');
  const ladder = auto ? autoLadder(o.hidden).filter((r) => !kinds.some((k) => sameHead(r.config, k))) : [];
  const extras = (i: number): HeadConfig[] => autoConfigs(data.rows, data.features.cuts[i]!, ladder);
  const shortlistSize = Math.min(cuts.length, o.shortlist);
  // Fits of cut i if shortlisted: the other kinds cross-fitted, each ladder configuration screened on one fold, and
  // the ladder's winner cross-fitted. The progress total is an upper bound until the shortlist and winners are known.
  const perShort = (i: number): number => others.length * o.folds + (extras(i).length ? extras(i).length + o.folds : 0);
  const firstFits = cuts.length * o.folds;
  let totalFits = firstFits + shortlistSize * Math.max(0, ...cuts.map((_, i) => perShort(i)));
  let fitsDone = 0;
  const trained = cuts.map(() => new Map<string, TrainedCandidate>());
  const screened: CandidateHeadReport[][] = cuts.map(() => []);
  const { trainer, stop, done } = await loadTrainer(c, data);
  const lanes = trainer.concurrency;
  const train = async (i: number, config: HeadConfig, onlyFolds?: readonly number[]): Promise<TrainedCandidate> => {
    throwIfAborted(options.signal, 'head training');
    const detail = `${cutName(cuts[i]!)} ${config.label}${onlyFolds ? ' (screen)' : ''}`;
    const onFit = (): void => progress({ stage: 'heads', done: ++fitsDone, total: totalFits, detail });
    return trainCandidate(c, data, trainer, stop, i, config, onFit, onlyFolds, keepProbs);
  };
  try {
    // independent trainings run `lanes` at a time (each cut's results are set in the order of the sequential loops)
    const firsts = await mapLimit(cuts, lanes, (_, i) => train(i, first!), stop);
    firsts.forEach((t, i) => trained[i]!.set(first!.label, t));
    if (shortlistSize === 0 || (others.length === 0 && ladder.length === 0)) return { trained, screened };
    const short = shortlist(c, data, trained, first!, shortlistSize);
    totalFits = firstFits + short.reduce((a, i) => a + perShort(i), 0);
    const screenFolds = [0];
    const held = heldOutSamples(c, data, screenFolds);
    // per shortlisted cut: the other kinds, then (auto) the ladder's screens and its winner; the cuts run side by side
    await mapLimit(
      short,
      lanes,
      async (i) => {
        const kinds = await settleAll(
          others.map((config) => train(i, config)),
          stop,
        );
        others.forEach((config, j) => trained[i]!.set(config.label, kinds[j]!));
        if (ladder.length === 0) return;
        const onFold = [...trained[i]!.values()].map((t) => ({
          config: t.config,
          utility: rate(c, data, i, t.config, subsetScores(t.scores, held), 0).utility,
        }));
        const configs = extras(i);
        const screens = await settleAll(
          configs.map((config) => train(i, config, screenFolds)),
          stop,
        );
        const rated = configs.map((config, j) => {
          const s = screens[j]!;
          screened[i]!.push({ ...s.report, capacity: `${config.label} (screened on fold 0)` });
          return { config, utility: s.report.utility };
        });
        const best = chooseCapacity(chooseCapacity(onFold[0]!, onFold.slice(1)), rated);
        if (!trained[i]!.has(best.config.label)) trained[i]!.set(best.config.label, await train(i, best.config));
        else if (rated.length > 0) totalFits -= o.folds; // no ladder winner to cross-fit
      },
      stop,
    );
  } finally {
    await done();
  }
  if (ladder.length > 0) progress({ stage: 'heads', done: totalFits, total: totalFits });
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
  c: FitContext,
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
export function bestConfigs(trained: TrainedCandidates): HeadConfig[] {
  return trained.map((byConfig) => {
    const [first, ...rest] = [...byConfig.values()].map((t) => ({ config: t.config, utility: t.report.utility }));
    return chooseCapacity(first!, rest).config;
  });
}

/** Exit selection and thresholds under the threshold rule, with the head `configOf(i)` at cut i. */
export function selectExitsFor(
  c: FitContext,
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

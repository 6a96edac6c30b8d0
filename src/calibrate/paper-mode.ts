// Paper mode of prepare() (the SelfXit paper's baseline): one MLP head per fixed exit reading the full flattened map,
// trained once on (folds-1)/folds of the samples and validated on the held-out fold (no cross-fitting, no selection),
// and one fixed max-softmax threshold for every exit. Each exit's head is a training task (train-task.ts) run on
// prepare's trainer (its `trainerPool`: the CLI's `--threads`), so the bundle is the same whatever trains them.
import type { CalibrationSummary } from '../bundle/manifest.js';
import type { CutPoint } from '../graph/index.js';
import { argmaxRows, exitScores, exitStatsOf, type ExitScores } from '../policy/cascade-sim.js';
import { paperCascade } from '../policy/select-exits.js';
import { loadTrainer } from './candidate-heads.js';
import { candidateCuts, cutName, namedExitCuts } from './candidate-cuts.js';
import { buildCosts, coverageAt, estimateHeadMacs, macsOutcome } from './exit-costs.js';
import { cutGeometry, type FeatureSet } from './features.js';
import type { HeadConfig } from './head-capacity.js';
import {
  backbonePass,
  bundleExit,
  type CandidateReport,
  type ModeOutcome,
  type PrepareContext,
} from './prepare-context.js';
import { throwIfAborted } from './progress.js';
import { foldIndices, kFoldAssign } from './rng.js';
import type { SampleBatch } from './samples.js';
import {
  DEFAULT_HIDDEN,
  predictHeadRows,
  resolveTrainSettings,
  toTrainHeadResult,
  type TrainedHead,
} from './train-head.js';
import { mapLimit, type StackTask } from './train-task.js';

/** Every paper head: an MLP of DEFAULT_HIDDEN.paper units on the whole map (the stored features, no max branch). */
const PAPER_CONFIG: HeadConfig = {
  label: 'paper',
  kind: 'paper',
  hidden: DEFAULT_HIDDEN.paper,
  coarse: false,
  max: false,
};

/**
 * How many samples fit `memoryBytes` of full float32 maps of sizes `dims` (per sample), capped at `n`.
 * Paper heads read whole maps (e.g. 16x32x32 = 64 KiB per sample per exit), so a large calibration set
 * cannot be held at once; the first samples of the (already shuffled) set are kept.
 */
function paperFeatureBudget(
  dims: readonly number[],
  n: number,
  memoryBytes: number,
): { samples: number; bytesPerSample: number } {
  const bytesPerSample = 4 * dims.reduce((a, b) => a + b, 0);
  return { samples: Math.max(0, Math.min(n, Math.floor(memoryBytes / Math.max(1, bytesPerSample)))), bytesPerSample };
}

/**
 * The training groups of paper mode's heads, from the fold of each sample: 0 trains (every fold but fold 0), -1 is left
 * out (fold 0, the held-out fold the heads are scored on).
 */
export function paperGroups(foldOf: Int32Array): Int32Array {
  return Int32Array.from(foldOf, (f) => (f === 0 ? -1 : 0));
}

/**
 * The task of the paper head at feature cut `cut`, on {@link paperGroups}'s rows: the fit of trainHeadOnRows(x, p, n,
 * d, k, the rows of group 0, { kind: 'paper', seed, temperature }) (one head, `seed` for its weights and its shuffle).
 */
export function paperTask(cut: number, seed: number, temperature: number): StackTask {
  return {
    cut,
    config: PAPER_CONFIG,
    group: 'folds',
    heads: [{ holdOut: -1, seed }],
    train: { kind: 'paper', temperature },
    shuffleSeed: seed,
  };
}

interface PaperHeads {
  /** One trained head per feature cut, in order. */
  readonly exits: readonly { readonly index: number; readonly head: TrainedHead; readonly ms: number }[];
  /** Held-out scores of each head (rows: the held-out fold), against the backbone's argmax. */
  readonly scores: readonly ExitScores[];
}

/**
 * Trains one paper head per cut on all folds but one (one task each, `trainer.concurrency` at a time: the same fit as
 * trainHeadOnRows on those rows); scores them on the held-out fold.
 */
async function runPaperHeads(c: PrepareContext, features: FeatureSet): Promise<PaperHeads> {
  const { o, options, progress } = c;
  const { n, k, teacher } = features;
  const foldOf = kFoldAssign(n, o.folds, o.seed);
  const holdout = foldIndices(foldOf, 0, true);
  const teacherPred = argmaxRows(teacher, n, k);
  const holdPred = Int32Array.from(holdout, (i) => teacherPred[i]!);
  const { logitScale } = resolveTrainSettings(paperTask(0, o.seed, o.temperature).train);
  const { trainer, stop, done } = await loadTrainer(c, { features, rows: n, foldOf: paperGroups(foldOf) });
  let trained = 0;
  try {
    const exits = await mapLimit(
      features.cuts,
      trainer.concurrency,
      async (f, i) => {
        throwIfAborted(options.signal, 'paper head training');
        const r = await trainer.run(paperTask(i, o.seed, o.temperature), stop.signal);
        const t0 = Date.now();
        const head = toTrainHeadResult(r.stack, 0, logitScale, r.ms);
        const probs = new Float32Array(holdout.length * k);
        predictHeadRows(head, f.x, holdout, holdout.length, probs, false);
        progress({ stage: 'heads', done: ++trained, total: features.cuts.length, detail: f.cut.tensor });
        return {
          index: i,
          head: { layers: head.layers, logitScale: head.logitScale },
          ms: r.ms + Date.now() - t0,
          scores: exitScores(probs, holdout.length, k, holdPred),
        };
      },
      stop,
    );
    return { exits, scores: exits.map((e) => e.scores) };
  } finally {
    await done();
  }
}

/** Runs paper mode on the context's samples (a model with at least one inner cut). */
export async function runPaperMode(c: PrepareContext): Promise<ModeOutcome> {
  const { o, analysis, io, timer, progress, options } = c;
  const k = io.classes;
  const cuts = paperCuts(c);
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
      'f32',
      { shared: options.trainerPool?.sharedMemory === true }, // a pool's threads read the maps in place
    ),
  );
  const heads = await timer.time('heads', () => runPaperHeads(c, features));
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
  const exits = heads.exits.map((e, j) =>
    bundleExit(features.cuts[e.index]!, e.head, 'paper', sel.thresholds[j]!, outcome.exitShares[j]!),
  );
  const stats = heads.scores.map((s) => exitStatsOf(s));
  const summary: CalibrationSummary = {
    samples: samples.count,
    validationSamples: heads.scores[0]?.n ?? 0,
    target: o.target,
    rule: 'max-softmax',
    mode: 'paper',
    folds: o.folds,
    seed: o.seed,
    validationAgreement: outcome.agreement,
    expectedMacsFraction: outcome.macsFraction,
    candidates: cuts.map((cut, i) => ({ name: cutName(cut), ...stats[i]! })),
    curve: sel.curve,
    costUnit: 'macs',
  };
  const candReports: CandidateReport[] = cuts.map((cut, i) => ({
    name: cutName(cut),
    cut: cut.tensor,
    macsFraction: cut.fraction,
    grid: [geoms[i]!.height, geoms[i]!.width],
    features: features.cuts[i]!.dim,
    heads: [
      {
        kind: 'paper',
        ...stats[i]!,
        coverage: coverageAt(heads.scores[i]!, o.target),
        utility: NaN,
        trainMs: heads.exits[i]!.ms,
      },
    ],
    kind: 'paper',
    selected: true,
  }));
  return {
    exits,
    summary,
    report: {
      candidates: candReports,
      selectionEvaluations: 0,
      agreementLowerBound: sel.agreementLowerBound,
      featureBytes: features.cuts.reduce((a, f) => a + f.x.byteLength, 0),
    },
  };
}

/** The exits: the cuts named in `exits`, or the candidate cuts nearest 25 %, 50 % and 75 % of the MACs. */
function paperCuts(c: PrepareContext): CutPoint[] {
  const { analysis, options } = c;
  if (options.exits) return namedExitCuts(analysis.cuts, options.exits, c.warnings);
  const inner = candidateCuts(analysis.cuts);
  return [
    ...new Set(
      [0.25, 0.5, 0.75].map((t) =>
        inner.reduce((a, b) => (Math.abs(b.fraction - t) < Math.abs(a.fraction - t) ? b : a)),
      ),
    ),
  ];
}

// Paper mode of prepare() (the SelfXit paper's baseline): one MLP head per fixed exit reading the full flattened map,
// trained once on (folds-1)/folds of the samples and validated on the held-out fold (no cross-fitting, no selection),
// and one fixed max-softmax threshold for every exit.
import type { CalibrationSummary } from '../bundle/manifest.js';
import type { CutPoint } from '../graph/index.js';
import { argmaxRows, exitScores, exitStatsOf, type ExitScores } from '../policy/cascade-sim.js';
import { paperCascade } from '../policy/select-exits.js';
import { candidateCuts, cutName, namedExitCuts } from './candidate-cuts.js';
import { buildCosts, coverageAt, estimateHeadMacs, macsOutcome } from './exit-costs.js';
import { cutGeometry, type FeatureSet } from './features.js';
import {
  backbonePass,
  bundleExit,
  type CandidateReport,
  type ModeOutcome,
  type PrepareContext,
} from './prepare-context.js';
import { throwIfAborted, yieldToEventLoop, type ProgressCallback } from './progress.js';
import { foldIndices, kFoldAssign } from './rng.js';
import type { SampleBatch } from './samples.js';
import { DEFAULT_HIDDEN, predictHeadRows, trainHeadOnRows, type TrainedHead } from './train-head.js';

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

interface PaperHeads {
  /** One trained head per feature cut, in order. */
  readonly exits: readonly { readonly index: number; readonly head: TrainedHead; readonly ms: number }[];
  /** Held-out scores of each head (rows: the held-out fold), against the backbone's argmax. */
  readonly scores: readonly ExitScores[];
}

/** Trains one paper head per cut on all folds but one; scores them on the held-out fold. */
async function runPaperHeads(
  features: FeatureSet,
  options: {
    folds: number;
    seed: number;
    temperature: number;
    onProgress?: ProgressCallback;
    signal?: AbortSignal;
  },
): Promise<PaperHeads> {
  const { n, k, teacher } = features;
  const foldOf = kFoldAssign(n, options.folds, options.seed);
  const holdout = foldIndices(foldOf, 0, true);
  const train = foldIndices(foldOf, 0, false);
  const teacherPred = argmaxRows(teacher, n, k);
  const holdPred = Int32Array.from(holdout, (i) => teacherPred[i]!);
  const exits: { index: number; head: TrainedHead; ms: number }[] = [];
  const scores: ExitScores[] = [];
  for (let i = 0; i < features.cuts.length; i++) {
    throwIfAborted(options.signal, 'paper head training');
    const f = features.cuts[i]!;
    const t0 = Date.now();
    const head = trainHeadOnRows(f.x, teacher, n, f.dim, k, train, {
      kind: 'paper',
      seed: options.seed,
      temperature: options.temperature,
    });
    const probs = new Float32Array(holdout.length * k);
    predictHeadRows(head, f.x, holdout, holdout.length, probs, false);
    exits.push({ index: i, head: { layers: head.layers, logitScale: head.logitScale }, ms: Date.now() - t0 });
    scores.push(exitScores(probs, holdout.length, k, holdPred));
    options.onProgress?.({ stage: 'heads', done: i + 1, total: features.cuts.length, detail: f.cut.tensor });
    await yieldToEventLoop();
  }
  return { exits, scores };
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

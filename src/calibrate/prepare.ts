// The calibration entry: model + unlabeled samples → bundle (segments with fused exit heads + manifest), in memory.
// Validates options, model and samples before heavy work, runs the mode (selfxit-mode.ts or paper-mode.ts), and
// assembles the bundle from its exits. Pure: onnxruntime is injected, nothing touches disk.
import type { CalibrationSummary, BundleManifest } from '../bundle/manifest.js';
import { assembleBundle } from '../bundle/write-bundle.js';
import { analyzeModel, decodeModel, encodeModel, resolveBatch } from '../graph/index.js';
import { checkCostTable } from '../policy/cost-table.js';
import { candidateCuts, layoutCutNotes, noExitCutsWarning, quantCutNotes, skippedQuantCuts } from './candidate-cuts.js';
import { imagesOverCapEarly, sizeHeadsForClasses } from './prepare-features.js';
import { runPaperMode } from './paper-mode.js';
import { noExitCurve, type ModeOutcome, type PrepareContext, type PrepareResult } from './prepare-context.js';
import {
  checkSampleCount,
  fitModelIO,
  minimumSamples,
  resolveLabels,
  resolveModelIO,
  resolvePrepareOptions,
  type PrepareOptions,
} from './prepare-options.js';
import { StepTimer, throwIfAborted } from './progress.js';
import { isSampleBatch, isSampleReader, selectSamples } from './samples.js';
import { runSelfxitMode } from './selfxit-mode.js';

export { minimumSamples, resolveModelIO, type PrepareOptions } from './prepare-options.js';
export type { CandidateHeadReport, CandidateReport, PrepareReport, PrepareResult } from './prepare-context.js';

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
  const o0 = resolvePrepareOptions(options);
  const { ort, signal } = options;
  const timer = new StepTimer(options.now);
  const warnings: string[] = [];
  const progress = options.onProgress ?? (() => undefined);

  const decoded = decodeModel(options.model);
  const given = fitModelIO(decoded, options.input, options.output);
  const batch = await timer.time('analyze', () => resolveBatch(given, ort));
  const model = batch.model;
  if (batch.mode !== 'dynamic')
    warnings.push(
      batch.mode === 'rewritten'
        ? `The model's batch was fixed: ${batch.note ?? 'made dynamic'}; the bundle's backbone.onnx is the rewritten model.`
        : `The model's batch is fixed at 1 and stays so (${batch.note ?? 'not rewritable'}): features are computed one image at a time and the runtime runs each segment image by image.`,
    );
  const analysis = await timer.time('analyze', () => analyzeModel(model, { ort }));
  if (options.costTable)
    checkCostTable(
      options.costTable,
      analysis.cuts.map((c) => c.tensor),
    );
  const io = resolveModelIO(model, analysis, options.input);
  const sized = sizeHeadsForClasses(o0, options, analysis.cuts, io.classes, analysis.params);
  const o = sized.o;
  if (sized.note) warnings.push(`Head sizes: ${sized.note}.`);
  const labels = resolveLabels(options.labels, io.classes);

  const shape = { height: io.input.height, width: io.input.width, channels: io.input.channels };
  // selfxit mode counts the images under its memory cap but never refuses them: warned at once when their count is
  // known and they alone exceed it (a run that then dies of memory has shown the hint), planFeatures warns again
  const count = isSampleReader(options.samples) || isSampleBatch(options.samples) ? options.samples.count : undefined;
  const early = count === undefined ? undefined : imagesOverCapEarly(o, { io }, analysis.cuts, count);
  if (early) {
    warnings.push(early);
    options.onWarning?.(early);
  }
  // with flip copies an image and its mirror are copies too: one's flip copy would train the head judging the other
  const mirrored = o.augment.includes('flip');
  const { batch: samples, copies } = await selectSamples(options.samples, shape, o.seed, o.limit, mirrored);
  if (copies > 0)
    warnings.push(
      `Samples: ${copies} exact copies of an earlier image${mirrored ? ' or of its mirror' : ''} left out (a copy in another fold than its original would make the agreement read high).`,
    );
  checkSampleCount(samples.count, o);
  throwIfAborted(signal, 'validation');

  const c: PrepareContext = {
    options,
    o,
    model,
    modelBytes: batch.mode === 'rewritten' || given !== decoded ? encodeModel(model) : options.model,
    batch: batch.mode,
    analysis,
    io,
    labels,
    samples,
    duplicates: copies,
    timer,
    warnings,
    progress,
  };
  let outcome: ModeOutcome;
  const skipped = skippedQuantCuts(analysis.cuts);
  for (const s of skipped) warnings.push(`Quantized cut "${s.tensor}" skipped as a candidate: ${s.reason}.`);
  if (candidateCuts(analysis.cuts).length === 0) {
    warnings.push(noExitCutsWarning(analysis.cuts));
    outcome = {
      exits: [],
      summary: noExitSummary(c),
      report: { candidates: [], selectionEvaluations: 0, agreementLowerBound: 1, featureBytes: 0 },
    };
  } else {
    outcome = o.mode === 'paper' ? await runPaperMode(c) : await runSelfxitMode(c);
  }
  return finish(c, outcome);
}

/** The summary of a bundle without exits. */
function noExitSummary(c: PrepareContext): CalibrationSummary {
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
    curve: noExitCurve(),
    costUnit: c.options.costTable ? 'ms' : 'macs',
  };
}

/** Assembles the bundle and result from the mode's exits. */
async function finish(c: PrepareContext, outcome: ModeOutcome): Promise<PrepareResult> {
  const { exits, summary, report, validation } = outcome;
  const { manifest: m0, files } = await c.timer.time('bundle', () =>
    assembleBundle({
      modelBytes: c.modelBytes,
      ...(c.batch !== 'dynamic' ? { batch: c.batch } : {}),
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
      ...report,
      cutNotes: [...quantCutNotes(c.analysis.cuts), ...layoutCutNotes(c.analysis.cuts)],
      samples: c.samples.count,
      duplicates: c.duplicates,
      minimumSamples: c.o.mode === 'paper' ? 0 : minimumSamples(c.o.target, c.o.folds),
      timings,
    },
  };
}

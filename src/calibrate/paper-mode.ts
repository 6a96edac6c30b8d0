// Paper-mode heads (the SelfXit paper's baseline): one MLP head per fixed exit reading the full flattened map,
// trained once on (folds-1)/folds of the samples and validated on the held-out fold (no cross-fitting, no selection).
import type { HeadKind } from '../bundle/manifest.js';
import { argmaxRows, exitScores, type ExitScores } from '../policy/cascade-sim.js';
import type { FeatureSet } from './features.js';
import { throwIfAborted, yieldToEventLoop, type ProgressCallback } from './progress.js';
import { foldIndices, kFoldAssign } from './rng.js';
import { predictHeadRows, trainHeadOnRows, type TrainedHead } from './train-head.js';

/**
 * How many samples fit `memoryBytes` of full float32 maps of sizes `dims` (per sample), capped at `n`.
 * Paper heads read whole maps (e.g. 16x32x32 = 64 KiB per sample per exit), so a large calibration set
 * cannot be held at once; the first samples of the (already shuffled) set are kept.
 */
export function paperFeatureBudget(
  dims: readonly number[],
  n: number,
  memoryBytes: number,
): { samples: number; bytesPerSample: number } {
  const bytesPerSample = 4 * dims.reduce((a, b) => a + b, 0);
  return { samples: Math.max(0, Math.min(n, Math.floor(memoryBytes / Math.max(1, bytesPerSample)))), bytesPerSample };
}

export interface PaperHeads {
  /** One trained head per feature cut, in order. */
  readonly exits: readonly { readonly index: number; readonly head: TrainedHead; readonly ms: number }[];
  /** Held-out scores of each head (rows = `holdout`), against the backbone's argmax. */
  readonly scores: readonly ExitScores[];
  /** Held-out sample indices. */
  readonly holdout: Int32Array;
}

/** Trains one `kind` head per cut on all folds but one; scores them on the held-out fold. */
export async function runPaperHeads(
  features: FeatureSet,
  options: {
    folds: number;
    seed: number;
    temperature: number;
    kind?: HeadKind;
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
      kind: options.kind ?? 'paper',
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
  return { exits, scores, holdout };
}

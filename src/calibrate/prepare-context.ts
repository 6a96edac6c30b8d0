// What a prepare mode (selfxit-mode.ts, paper-mode.ts) is given and gives back: the run context, the report types,
// the mode's outcome that prepare() turns into a bundle; and the steps both modes share (backbone pass, bundle exit).
import type { BundleExit } from '../bundle/write-bundle.js';
import type { BundleManifest, CalibrationSummary, CurvePoint, HeadKind } from '../bundle/manifest.js';
import type { BatchMode, ModelAnalysis, OnnxModel } from '../graph/index.js';
import type { ExitScores } from '../policy/cascade-sim.js';
import { NEVER_EXIT } from '../policy/thresholds.js';
import { cutName } from './candidate-cuts.js';
import {
  cutLayout,
  extractFeatures,
  type CutFeatures,
  type FeatureRequest,
  type FeatureSet,
  type FeatureStorage,
} from './features.js';
import type { FeatureRows } from './feature-store.js';
import type { ModelIO, PrepareOptions, ResolvedPrepareOptions } from './prepare-options.js';
import type { ProgressCallback, StepTimer } from './progress.js';
import type { SampleBatch, SampleRows } from './samples.js';
import { toHeadSpec, type TrainedHead } from './train-head.js';

/** One head trained at one candidate cut (out-of-fold statistics). */
export interface CandidateHeadReport {
  readonly kind: HeadKind;
  /** Head configuration (capacity 'auto': e.g. `mlp128`, `mlp64-coarse`; screened ones say so). */
  readonly capacity?: string;
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
  /** Configuration kept for this cut (its hidden width and pooling; `grid`/`features` are its). */
  readonly capacity?: string;
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
  /** Copies of an earlier image (the same pixels; with flip augmentation, or its mirror) met while the shuffle picked
   * the samples, and left out (a block, a stream or a reader alike; with `limit`, only among the images picked). */
  readonly duplicates: number;
  readonly minimumSamples: number;
  /** Bytes of the pooled feature matrices held in memory. */
  readonly featureBytes: number;
  /** How they were stored, the memory under the cap and what the cap cost, in words (selfxit mode). */
  readonly featureStorage?: string;
  /** Bytes held beside them under the same cap: the sample images (uint8) and one batch of augmented copies
   * (selfxit mode). */
  readonly imageBytes?: number;
  /** Bytes of float32 class probabilities held under the same cap: the teacher's of every row and a candidate head's
   * out-of-fold ones of the samples (selfxit mode). */
  readonly probBytes?: number;
  /** How candidates read a quantized model's cuts (QOperator and QDQ: the quantized tensor, dequantized) and
   * channels-last or untold layouts, in words. */
  readonly cutNotes: readonly string[];
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

/** Everything prepare() has resolved and read before a mode runs. Modes push warnings into `warnings`. */
export interface PrepareContext {
  readonly options: PrepareOptions;
  readonly o: ResolvedPrepareOptions;
  /** The model calibrated (the given one, or its batch made dynamic) and its bytes (the bundle's backbone.onnx). */
  readonly model: OnnxModel;
  readonly modelBytes: Uint8Array;
  /** How the backbone's batch runs ('one': one image per run). */
  readonly batch: BatchMode;
  readonly analysis: ModelAnalysis;
  readonly io: ModelIO;
  readonly labels: string[];
  /** The calibration samples, shuffled and limited. */
  readonly samples: SampleBatch;
  /** Copies of an earlier image (with flip, or of its mirror) the selection met and left out (selectSamples). */
  readonly duplicates: number;
  readonly timer: StepTimer;
  readonly warnings: string[];
  readonly progress: ProgressCallback;
}

/** What a mode hands back: the chosen exits and the calibration summary, for the bundle; report data. */
export interface ModeOutcome {
  readonly exits: readonly BundleExit[];
  readonly summary: CalibrationSummary;
  readonly report: Pick<
    PrepareReport,
    | 'candidates'
    | 'selectionEvaluations'
    | 'agreementLowerBound'
    | 'featureBytes'
    | 'featureStorage'
    | 'imageBytes'
    | 'probBytes'
  >;
  /** Out-of-fold scores of the selected exits (validation.bin); absent in paper mode. */
  readonly validation?: readonly ExitScores[];
}

/** The calibration curve of a bundle without exits: one point, the whole backbone for every sample. */
export function noExitCurve(): CurvePoint[] {
  return [{ knob: NEVER_EXIT, thresholds: [], agreement: 1, macsFraction: 1, exitShares: [1] }];
}

/** Activation bytes one feature-extraction run may hold: rows per run shrink to stay within it (large inputs). */
export const FEATURE_RUN_BYTES = 128 * 2 ** 20;

/**
 * Rows per backbone run of feature extraction: `batchSize`, fewer when a run's input, cut maps (all returned at once),
 * the NCHW scratch of the largest NHWC cut and twice the largest activation would pass {@link FEATURE_RUN_BYTES} (at least 1; 1 for a batch-1 backbone).
 */
export function featureBatchRows(
  c: Pick<PrepareContext, 'batch' | 'o' | 'analysis' | 'io'>,
  requests: readonly FeatureRequest[],
): number {
  if (c.batch === 'one') return 1;
  const size = (s: readonly (number | string)[]): number =>
    s.slice(1).reduce<number>((a, d) => a * (typeof d === 'number' ? d : 1), 1);
  let largest = 0;
  for (const s of c.analysis.shapes.values()) if (s.length === 4) largest = Math.max(largest, size(s));
  const { height, width, channels } = c.io.input;
  // extractFeatures transposes an NHWC cut to NCHW in one scratch, sized to the largest such cut
  const nhwc = Math.max(0, ...requests.map((r) => (cutLayout(r.cut) === 'NHWC' ? size(r.cut.shape) : 0)));
  const floats = height * width * channels + requests.reduce((a, r) => a + size(r.cut.shape), 0) + nhwc + 2 * largest;
  return Math.max(1, Math.min(c.o.batchSize, Math.floor(FEATURE_RUN_BYTES / (4 * floats))));
}

/** One backbone pass over `samples` pooling the requested cuts (extractFeatures with prepare's options; `alloc.shared`:
 * the matrices and teacher on SharedArrayBuffer, for a trainer pool's threads). */
export function backbonePass(
  c: PrepareContext,
  requests: readonly FeatureRequest[],
  samples: SampleBatch | SampleRows,
): Promise<FeatureSet>;
export function backbonePass(
  c: PrepareContext,
  requests: readonly FeatureRequest[],
  samples: SampleBatch | SampleRows,
  storage: 'f32',
  alloc?: { readonly shared: boolean },
): Promise<FeatureSet>;
export function backbonePass(
  c: PrepareContext,
  requests: readonly FeatureRequest[],
  samples: SampleBatch | SampleRows,
  storage: FeatureStorage,
  alloc?: { readonly shared: boolean },
): Promise<FeatureSet<FeatureRows>>;
export function backbonePass(
  c: PrepareContext,
  requests: readonly FeatureRequest[],
  samples: SampleBatch | SampleRows,
  storage: FeatureStorage = 'f32',
  alloc: { readonly shared: boolean } = { shared: false },
): Promise<FeatureSet<FeatureRows>> {
  const { options, io, progress } = c;
  return extractFeatures({
    storage,
    ...(alloc.shared ? { shared: true } : {}),
    model: c.model,
    requests,
    samples,
    input: io.input,
    output: io.output,
    outputKind: io.outputKind,
    classes: io.classes,
    ort: options.ort,
    batchSize: featureBatchRows(c, requests),
    ...(options.sessionOptions ? { sessionOptions: options.sessionOptions } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    onProgress: progress,
  });
}

/** A bundle exit: `head` (of `kind`) reading the features `f` of its cut with their pooling, leaving at `threshold`. */
export function bundleExit(
  f: CutFeatures<FeatureRows>,
  head: TrainedHead,
  kind: HeadKind,
  threshold: number,
  expectedShare: number,
): BundleExit {
  const spec = toHeadSpec(head, {
    kind,
    inChannels: f.channels,
    inHeight: f.height,
    inWidth: f.width,
    grid: f.grid,
    ...(f.maxGrid ? { maxGrid: f.maxGrid } : {}),
    ...(f.cut.dequant ? { dequant: f.cut.dequant } : {}),
    ...(f.cut.layout === 'NHWC' ? { layout: 'NHWC' as const } : {}),
  });
  return { name: cutName(f.cut), cut: f.cut.tensor, head: spec, threshold, expectedShare };
}

/**
 * What fitting exits on pooled features already in memory reads of the prepare context (prepare() passes its own;
 * on-device learning, src/learn/, a context over its reservoir): no model bytes, no samples beyond their count.
 */
export type FitContext = Pick<PrepareContext, 'o' | 'analysis' | 'io' | 'timer' | 'warnings' | 'progress'> & {
  readonly options: Pick<PrepareContext['options'], 'costTable' | 'signal' | 'trainerPool'>;
  readonly samples: Pick<SampleBatch, 'count'>;
};

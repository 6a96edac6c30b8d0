// The bundle manifest: the one contract between `prepare` (Node or browser) and the runtime.
// Plain JSON-serialisable types plus a validator; imported by both sides. Head kinds come from the graph toolkit.
import { SelfxitError } from '../errors.js';
import type { HeadKind } from '../graph/head-spec.js';
import { checkDequantization, type Dequantization } from '../graph/quant.js';

/** Current manifest schema version. Bump on any incompatible change; readers reject others. */
export const MANIFEST_VERSION = 1 as const;
/** The manifest's `format` field: marks the JSON as a selfxit bundle manifest. */
export const MANIFEST_FORMAT = 'selfxit-bundle' as const;
/** File name of the manifest inside a bundle (folder or URL prefix). */
export const MANIFEST_FILE = 'manifest.json';
/** An exit threshold above any probability: the exit never fires. The validator accepts thresholds in [0, NEVER_EXIT]. */
export const NEVER_EXIT = 1.0000001;

export type { HeadKind, Dequantization };

/** How an image becomes the model's input tensor. `x = (pixel / 255 - mean[c]) / std[c]`. */
export interface InputSpec {
  /** Input tensor name in segment 0. */
  readonly name: string;
  readonly height: number;
  readonly width: number;
  /** 1 (grayscale) or 3 (RGB). */
  readonly channels: 1 | 3;
  /** Tensor layout the model expects. */
  readonly layout: 'NCHW' | 'NHWC';
  /** Per-channel mean, in [0,1] pixel units; length = channels. */
  readonly mean: readonly number[];
  /** Per-channel std, in [0,1] pixel units; length = channels. */
  readonly std: readonly number[];
}

/** One runnable piece of the backbone, optionally with an exit head fused onto its end. */
export interface SegmentSpec {
  /** File name relative to the manifest. */
  readonly file: string;
  /** sha256 (hex) of the file. */
  readonly sha256: string;
  /** File size in bytes (download progress when the server sends no length). */
  readonly bytes: number;
  /** Backbone MACs per sample in this segment (heads excluded). */
  readonly macs: number;
  /** MACs per sample of the fused head (0 when no head). */
  readonly headMacs: number;
  /** Input tensor name (the previous cut, or the model input). */
  readonly input: string;
  /** Output tensor name that feeds the next segment (the cut), or the final logits/probabilities. */
  readonly output: string;
  /** Exit-head probability output name (fused head), when this segment ends at an exit. */
  readonly exitOutput?: string;
  /** Index into `exits` of the fused head, when any. */
  readonly exit?: number;
}

/** One early exit. Exits are ordered by depth; exit i is fused into segment `segment`. */
export interface ExitSpec {
  /** Display name, e.g. "stage2.block1". */
  readonly name: string;
  /** Cut tensor the head reads. */
  readonly cut: string;
  readonly segment: number;
  /** Architecture of the fused head. */
  readonly headKind: HeadKind;
  /**
   * The cut is a quantized (uint8/int8) tensor the fused head reads through a DequantizeLinear with this scale and
   * zero point (informational: the head's ONNX holds them). Absent: the cut is float32.
   */
  readonly dequant?: Dequantization;
  /** Leave here when the head's max-softmax >= threshold; {@link NEVER_EXIT} (above any probability) disables the exit. */
  readonly threshold: number;
  /** Cumulative MACs per sample to decide here (backbone up to the cut + every head passed), as a fraction of the backbone. */
  readonly macsFraction: number;
  /** Share of validation samples expected to leave here. */
  readonly expectedShare: number;
  /** How the calibration rule scored this exit (`thresholdRule: 'cost-calibrated'`); informational, the runtime only
   * compares the max-softmax with `threshold`. */
  readonly scoreMap?: ExitScoreMap;
  /** Parameters of the head. */
  readonly headParams: number;
  /** MACs per sample of the head (dense layers, plus one op per input element for each pooling). */
  readonly headMacs: number;
}

/**
 * The 'cost-calibrated' rule's view of one exit: estimated agreement `p = σ(slope · logit(maxSoftmax) + intercept)`
 * (fit on out-of-fold outputs) and `remaining`, the share of the backbone cost still ahead after this exit's cut;
 * the rule's score is `1 − (1 − p) / remaining`, thresholded by one knob for all exits.
 */
export interface ExitScoreMap {
  readonly slope: number;
  readonly intercept: number;
  readonly remaining: number;
}

/** One point of the calibration curve: the cascade at one setting of the global knob. */
export interface CurvePoint {
  /** Value of the global knob (e.g. the global max-softmax threshold). */
  readonly knob: number;
  /** Per-exit thresholds that this knob gives. */
  readonly thresholds: readonly number[];
  /** Cascade agreement with the backbone on out-of-fold validation outputs. */
  readonly agreement: number;
  /** Expected MACs fraction vs the backbone. */
  readonly macsFraction: number;
  /** Share of samples leaving at each exit; the last entry is the backbone (no exit). */
  readonly exitShares: readonly number[];
}

/** Per-exit validation statistics (out-of-fold), for reports and re-planning. */
export interface ExitStats {
  readonly name: string;
  /** Agreement of this head's argmax with the backbone over all validation samples. */
  readonly agreement: number;
  /** Mean score (confidence) over validation samples. */
  readonly meanScore: number;
}

/** A bundle file of per-exit validation outputs. */
export interface ValidationFileSpec {
  readonly file: string;
  readonly sha256: string;
  readonly bytes: number;
  /** Samples per exit (= calibration.samples). */
  readonly samples: number;
  /** Byte layout; readers reject others. */
  readonly encoding: 'u16-score,u8-agree';
}

/** How the exits and thresholds were calibrated, and what calibration expects of them (the manifest's `calibration`). */
export interface CalibrationSummary {
  /** Calibration samples (validation outputs are out-of-fold on all of them). */
  readonly samples: number;
  /** Agreement target the thresholds were chosen for (paper mode: recorded only; its threshold is fixed). */
  readonly target: number;
  /** Exit rule. */
  readonly rule: 'max-softmax';
  /** 'selfxit' (cross-fitted, selected exits) or 'paper' (fixed exits, one threshold). */
  readonly mode: 'selfxit' | 'paper';
  /** Cross-fitting folds. */
  readonly folds: number;
  /** Seed of the shuffle, folds, augmentation and head initialisation. */
  readonly seed: number;
  /** How the global knob sets the exits' thresholds: 'global' (one shared max-softmax threshold) or
   * 'cost-calibrated' (see ExitScoreMap). Absent in bundles written before it existed: 'global'. */
  readonly thresholdRule?: 'global' | 'cost-calibrated';
  /** Augmented copies used to train the heads (none when absent). */
  readonly augment?: readonly string[];
  /** Cascade agreement on held-out (out-of-fold) outputs at the chosen thresholds. */
  readonly validationAgreement: number;
  /** Expected MACs per sample / backbone MACs on the validation outputs (always MACs, even when `costUnit` is 'ms';
   * the per-exit overhead term that steers selection is not included). Curve points use the same measure. */
  readonly expectedMacsFraction: number;
  /** Candidate cuts considered, and their stats (for every candidate, selected or not). */
  readonly candidates: readonly ExitStats[];
  /** Agreement / cost curve over the global knob for the selected exits: re-choose thresholds for another target from it. */
  readonly curve: readonly CurvePoint[];
  /** Cost unit exit selection minimised: 'macs', or 'ms' from a measured cost table. */
  readonly costUnit: 'macs' | 'ms';
  /** Seconds spent per step, for the report. */
  readonly timings?: Readonly<Record<string, number>>;
  /** The exits' out-of-fold outputs on the calibration samples (see src/bundle/validation-file.ts), fetched only by a
   * device that re-plans its exits by measured time. Absent in bundles without exits or written before it existed. */
  readonly validation?: ValidationFileSpec;
}

/**
 * The bundle manifest (`manifest.json`, schema in docs/BUNDLE.md): what `prepare` wrote and the runtime reads. The
 * backbone split into segments (each run in turn, some ending in a fused exit head), the exits with their thresholds,
 * the input preprocessing, the labels, and the calibration summary whose curve re-chooses thresholds for other targets.
 * Checked by {@link validateManifest}; versioned by {@link MANIFEST_VERSION}.
 */
export interface BundleManifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly version: typeof MANIFEST_VERSION;
  /** Package that wrote it, e.g. "selfxit@0.1.0". */
  readonly generator: string;
  /** ISO 8601 time of writing. */
  readonly createdAt: string;
  readonly backbone: {
    /** sha256 (hex) of the original ONNX file (of the rewritten one with `batch` 'rewritten'). */
    readonly sha256: string;
    /** MACs per sample of the whole model (Conv, Gemm, MatMul and their quantized forms). */
    readonly macs: number;
    /** Parameters (initializer elements). */
    readonly params: number;
    /** Original model output name (logits). */
    readonly output: string;
    /** Whether the backbone output is logits (softmax applied by the runtime) or probabilities. */
    readonly outputKind: 'logits' | 'probabilities';
    /** Optional copy of the full model, for baselines (bench/demo). */
    readonly file?: string;
    /** Absent: the model's batch is dynamic. 'rewritten': it was fixed at 1 and prepare made it dynamic (checked by a
     * probe; `file` is the rewritten model). 'one': fixed at 1 and not rewritable: segments and `file` take one image
     * per run, and runtimes run a batch row by row. */
    readonly batch?: 'rewritten' | 'one';
  };
  readonly input: InputSpec;
  readonly labels: readonly string[];
  readonly segments: readonly SegmentSpec[];
  readonly exits: readonly ExitSpec[];
  readonly calibration: CalibrationSummary;
}

/** Files of a bundle in memory: manifest plus `file -> bytes`. */
export interface BundleFiles {
  readonly manifest: BundleManifest;
  readonly files: ReadonlyMap<string, Uint8Array>;
}

function fail(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_BUNDLE', `Invalid bundle manifest: ${msg}`, details);
}

/** Checks the shape of a parsed manifest and returns it typed; throws INVALID_BUNDLE naming the problem. */
export function validateManifest(value: unknown): BundleManifest {
  if (typeof value !== 'object' || value === null) fail('not a JSON object');
  const m = value as Partial<BundleManifest>;
  if (m.format !== MANIFEST_FORMAT) fail(`format is ${JSON.stringify(m.format)}, expected "${MANIFEST_FORMAT}"`);
  if (m.version !== MANIFEST_VERSION)
    fail(`version ${String(m.version)} is not supported (this selfxit reads version ${MANIFEST_VERSION})`, {
      version: m.version,
    });
  if (!m.input || typeof m.input.height !== 'number' || typeof m.input.width !== 'number') fail('input spec missing');
  if (m.input.mean?.length !== m.input.channels || m.input.std?.length !== m.input.channels)
    fail('input mean/std length must equal channels');
  if (!Array.isArray(m.labels)) fail('labels missing');
  if (!Array.isArray(m.segments) || m.segments.length === 0) fail('no segments');
  if (!Array.isArray(m.exits)) fail('exits missing');
  m.segments.forEach((s, i) => {
    if (typeof s.file !== 'string' || !/^[0-9a-f]{64}$/.test(s.sha256)) fail(`segment ${i} needs file and sha256`);
    if (s.exit !== undefined && (s.exit < 0 || s.exit >= m.exits!.length || !s.exitOutput))
      fail(`segment ${i} names exit ${s.exit} without a matching exit/exitOutput`);
  });
  m.exits.forEach((e, i) => {
    if (e.segment < 0 || e.segment >= m.segments!.length || m.segments![e.segment]!.exit !== i)
      fail(`exit ${i} is not fused into segment ${e.segment}`);
    if (!(e.threshold >= 0 && e.threshold <= NEVER_EXIT))
      fail(`exit ${i} threshold ${e.threshold} outside [0, ${NEVER_EXIT}] (${NEVER_EXIT} = never exit)`);
    if (e.dequant !== undefined) checkDequantization(e.dequant, `Invalid bundle manifest: exit ${i}`, 'INVALID_BUNDLE');
  });
  if (!m.calibration) fail('calibration summary missing');
  const batch = (m.backbone as { batch?: unknown } | undefined)?.batch;
  if (batch !== undefined && batch !== 'rewritten' && batch !== 'one')
    fail(`backbone.batch is ${JSON.stringify(batch)}, expected "rewritten" or "one"`);
  return m as BundleManifest;
}

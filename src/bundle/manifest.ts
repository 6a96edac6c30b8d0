// The bundle manifest: the one contract between `prepare` (Node or browser) and the runtime.
// Plain JSON-serialisable types plus a validator; imported by both sides. Head kinds come from the graph toolkit.
import { SelfxitError } from '../errors.js';
import type { HeadKind } from '../graph/head-spec.js';
import type { Dequantization } from '../graph/dequantization.js';
import type { MapLayout } from '../graph/map-layout.js';
import { checkDequantization } from '../graph/quant.js';

/** Current manifest schema version. Bump on any incompatible change; readers reject others. */
export const MANIFEST_VERSION = 1 as const;
/** The manifest's `format` field: marks the JSON as a selfxit bundle manifest. */
export const MANIFEST_FORMAT = 'selfxit-bundle' as const;
/** File name of the manifest inside a bundle (folder or URL prefix). */
export const MANIFEST_FILE = 'manifest.json';
/** An exit threshold above any probability: the exit never fires. The validator accepts thresholds in [0, NEVER_EXIT]. */
export const NEVER_EXIT = 1.0000001;

export type { HeadKind, Dequantization, MapLayout };

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
  /**
   * `'NHWC'`: the cut is a channels-last map `[N, H, W, C]` (as the graph tells it), which the fused head transposes to
   * NCHW before pooling (informational: the head's ONNX holds the Transpose). Absent (or `'NCHW'`): `[N, C, H, W]`.
   */
  readonly layout?: MapLayout;
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
  /** Calibration samples (selfxit mode: validation outputs are out-of-fold on all of them). */
  readonly samples: number;
  /** Samples behind `validationAgreement` and the curve, when fewer than `samples`: paper mode measures them on its
   * held-out fold only. Absent: `samples` (paper bundles written before it existed: see {@link curveSamples}). */
  readonly validationSamples?: number;
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
    /** Absent: the model's batch is dynamic. 'rewritten': it was fixed (at 1, or B > 1) and prepare made it dynamic
     * (checked by probes; `file` is the rewritten model). 'one': fixed at 1 and not rewritable: segments and `file`
     * take one image per run, and runtimes run a batch row by row. */
    readonly batch?: 'rewritten' | 'one';
    /** Whether the model holds quantized ops (QuantizeLinear, DequantizeLinear, QLinear*, …, graph/quant-ops.ts): the
     * runtime then runs it on WASM, never WebGPU (onnxruntime-web's WebGPU backend gets them wrong). Absent in bundles
     * written before it existed: the runtime then looks at each segment's bytes as it loads them on WebGPU. */
    readonly quantized?: boolean;
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

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isName = (v: unknown): v is string => typeof v === 'string' && v !== '';
const isSha = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const numbers = (v: unknown): v is number[] => Array.isArray(v) && v.every(isNum);

/** The input spec: a named tensor of positive integer size, 1 or 3 channels, a known layout, finite mean and std > 0. */
function checkInput(input: unknown): void {
  if (!isObject(input)) fail('input spec missing');
  const { name, height, width, channels, layout, mean, std } = input;
  const size = (v: unknown): boolean => Number.isInteger(v) && (v as number) > 0;
  if (!isName(name) || !size(height) || !size(width) || (channels !== 1 && channels !== 3))
    fail(
      `input spec ${JSON.stringify(input)} is not usable (name, positive integer height and width, 1 or 3 channels)`,
    );
  if (layout !== 'NCHW' && layout !== 'NHWC')
    fail(`input layout is ${JSON.stringify(layout)}, expected "NCHW" or "NHWC"`);
  if (!numbers(mean) || !numbers(std) || mean.length !== channels || std.length !== channels)
    fail('input mean/std must be numbers, as many as channels');
  if (!std.every((v) => v > 0)) fail(`input std must be > 0, got ${std.join(',')}`);
}

/** The backbone entry: output name and kind, MACs, sha256, optional file, batch mode and quantized flag. */
function checkBackbone(b: unknown): void {
  if (!isObject(b)) fail('backbone missing');
  if (!isName(b.output)) fail('backbone.output must name the model output');
  if (b.outputKind !== 'logits' && b.outputKind !== 'probabilities')
    fail(`backbone.outputKind is ${JSON.stringify(b.outputKind)}, expected "logits" or "probabilities"`);
  if (!isNum(b.macs) || b.macs < 0) fail('backbone.macs must be a number >= 0');
  if (typeof b.sha256 !== 'string') fail('backbone.sha256 missing');
  if (b.file !== undefined && !isName(b.file)) fail('backbone.file must be a file name');
  if (b.batch !== undefined && b.batch !== 'rewritten' && b.batch !== 'one')
    fail(`backbone.batch is ${JSON.stringify(b.batch)}, expected "rewritten" or "one"`);
  if (b.quantized !== undefined && typeof b.quantized !== 'boolean')
    fail(`backbone.quantized is ${JSON.stringify(b.quantized)}, expected true or false`);
}

/**
 * The samples a calibration's curve and validation agreement were measured on, the n of their confidence bound:
 * `validationSamples`, else `samples` in selfxit mode (out-of-fold outputs of all of them) and one fold of them,
 * rounded down, in paper mode (its held-out fold alone; bundles written before `validationSamples` existed).
 */
export function curveSamples(c: Pick<CalibrationSummary, 'samples' | 'validationSamples' | 'mode' | 'folds'>): number {
  if (c.validationSamples !== undefined) return c.validationSamples;
  return c.mode === 'paper' && c.folds >= 2 ? Math.floor(c.samples / c.folds) : c.samples;
}

/** The calibration summary's fields readers compute with: samples, target, and a curve of points over `exits` exits. */
function checkCalibration(c: unknown, exits: number): void {
  if (!isObject(c)) fail('calibration summary missing');
  if (!isNum(c.samples) || !isNum(c.target)) fail('calibration.samples and calibration.target must be numbers');
  if (c.validationSamples !== undefined && !(isNum(c.validationSamples) && c.validationSamples <= c.samples))
    fail('calibration.validationSamples must be a number of at most calibration.samples');
  if (!Array.isArray(c.curve)) fail('calibration.curve must be an array');
  c.curve.forEach((p: unknown, i) => {
    if (
      !isObject(p) ||
      !isNum(p.knob) ||
      !isNum(p.agreement) ||
      !isNum(p.macsFraction) ||
      !numbers(p.thresholds) ||
      p.thresholds.length !== exits ||
      !numbers(p.exitShares)
    )
      fail(`calibration.curve[${i}] needs numbers knob, agreement, macsFraction, exitShares and ${exits} thresholds`);
  });
}

/**
 * Checks a parsed manifest field by field (types and ranges of what readers compute with) and returns it typed;
 * throws INVALID_BUNDLE naming the problem. The one check of the browser runtime and of Node (readBundle).
 */
export function validateManifest(value: unknown): BundleManifest {
  if (!isObject(value)) fail('not a JSON object');
  const m = value as Partial<BundleManifest>;
  if (m.format !== MANIFEST_FORMAT) fail(`format is ${JSON.stringify(m.format)}, expected "${MANIFEST_FORMAT}"`);
  if (m.version !== MANIFEST_VERSION)
    fail(`version ${String(m.version)} is not supported (this selfxit reads version ${MANIFEST_VERSION})`, {
      version: m.version,
    });
  checkBackbone(m.backbone);
  checkInput(m.input);
  if (!Array.isArray(m.labels) || m.labels.length < 2 || !m.labels.every((l) => typeof l === 'string'))
    fail('labels must be an array of at least 2 class names (one per backbone output)');
  if (!Array.isArray(m.segments) || m.segments.length === 0) fail('no segments');
  if (!Array.isArray(m.exits)) fail('exits missing');
  const exits = m.exits;
  m.segments.forEach((s: unknown, i) => {
    if (!isObject(s) || !isName(s.file) || !isSha(s.sha256)) fail(`segment ${i} needs file and sha256`);
    if (!isName(s.input) || !isName(s.output)) fail(`segment ${i} (${s.file}) lacks input/output names`);
    if (!isNum(s.macs) || !isNum(s.headMacs)) fail(`segment ${i} needs numbers macs and headMacs`);
    if (
      s.exit !== undefined &&
      (!Number.isInteger(s.exit) ||
        (s.exit as number) < 0 ||
        (s.exit as number) >= exits.length ||
        !isName(s.exitOutput))
    )
      fail(`segment ${i} names exit ${String(s.exit)} without a matching exit/exitOutput`);
  });
  exits.forEach((e: unknown, i) => {
    if (!isObject(e) || !isName(e.name) || !isName(e.cut)) fail(`exit ${i} needs a name and a cut`);
    if (!Number.isInteger(e.segment) || m.segments![e.segment as number]?.exit !== i)
      fail(`exit ${i} is not fused into segment ${String(e.segment)}`);
    if (!isNum(e.threshold) || !(e.threshold >= 0 && e.threshold <= NEVER_EXIT))
      fail(
        `exit ${i} threshold ${JSON.stringify(e.threshold)} is not a number in [0, ${NEVER_EXIT}] (${NEVER_EXIT} = never exit)`,
      );
    if (!isNum(e.headMacs)) fail(`exit ${i} needs a number headMacs`);
    if (e.dequant !== undefined) checkDequantization(e.dequant, `Invalid bundle manifest: exit ${i}`, 'INVALID_BUNDLE');
    if (e.layout !== undefined && e.layout !== 'NCHW' && e.layout !== 'NHWC')
      fail(`exit ${i} layout is ${JSON.stringify(e.layout)}, expected "NCHW" or "NHWC"`);
  });
  checkCalibration(m.calibration, exits.length);
  return m as BundleManifest;
}

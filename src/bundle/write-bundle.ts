// Assembles a bundle in memory: splits the backbone at the exits' cuts, fuses each exit head into the
// segment ending at its cut (one run per stage, two outputs), hashes every file and fills the manifest.
// Pure: writing the files somewhere (disk, IndexedDB, a zip) is the caller's job.
import { SelfxitError } from '../errors.js';
import {
  encodeModel,
  fuseHead,
  quantizedOps,
  segmentMacs,
  sha256Hex,
  splitModel,
  type ModelAnalysis,
  type OnnxModel,
} from '../graph/index.js';
import { headCost, type HeadSpec } from '../graph/head-spec.js';
import { encodeValidation, VALIDATION_ENCODING, VALIDATION_FILE, type ValidationExit } from './validation-file.js';
import {
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  type BundleManifest,
  type CalibrationSummary,
  type ExitScoreMap,
  type ExitSpec,
  type InputSpec,
  type SegmentSpec,
} from './manifest.js';

/** One exit to write, ordered by depth. */
export interface BundleExit {
  readonly name: string;
  /** Cut tensor (must be a cut of the model). */
  readonly cut: string;
  readonly head: HeadSpec;
  readonly threshold: number;
  /** Share of validation samples expected to leave here. */
  readonly expectedShare: number;
  /** The exit rule's score map, when the rule is not a plain shared threshold. */
  readonly scoreMap?: ExitScoreMap;
}

export interface AssembleOptions {
  /** Original model bytes (hashed, and copied as backbone.onnx). */
  readonly modelBytes: Uint8Array;
  readonly model: OnnxModel;
  readonly analysis: Pick<ModelAnalysis, 'macs' | 'params' | 'cuts' | 'shapes' | 'dtypes'>;
  readonly input: InputSpec;
  readonly labels: readonly string[];
  readonly output: string;
  readonly outputKind: 'logits' | 'probabilities';
  readonly exits: readonly BundleExit[];
  readonly calibration: CalibrationSummary;
  /** Default "selfxit". */
  readonly generator?: string;
  /** ISO date. Default now. */
  readonly createdAt?: string;
  /** Include `backbone.onnx` (full model, for baselines and `selfxit eval`). Default true. */
  readonly includeBackbone?: boolean;
  /** Out-of-fold outputs of each exit (same order as `exits`) on the calibration samples: written as validation.bin. */
  readonly validation?: readonly ValidationExit[];
  /** How the backbone's batch is run (manifest `backbone.batch`; absent: dynamic). */
  readonly batch?: 'rewritten' | 'one';
  /** Called after each file is produced. */
  readonly onFile?: (done: number, total: number, file: string) => void;
}

/** Bundle file names. */
export const BACKBONE_FILE = 'backbone.onnx';
export const segmentFileName = (i: number): string => `segment-${i}.onnx`;
/** Name of the fused head's probability output in segment `i`. */
export const exitOutputName = (i: number): string => `selfxit_exit${i}_probs`;

/** Builds the bundle files and manifest. Exits must be in depth order and on distinct cuts. */
export async function assembleBundle(
  o: AssembleOptions,
): Promise<{ manifest: BundleManifest; files: Map<string, Uint8Array> }> {
  const cuts = o.exits.map((e) => e.cut);
  const segMacs = segmentMacs(o.analysis, cuts);
  const models = splitModel(o.model, cuts, { shapes: o.analysis.shapes, dtypes: o.analysis.dtypes });
  if (models.length !== cuts.length + 1)
    throw new SelfxitError('INTERNAL', `splitModel returned ${models.length} segments for ${cuts.length} cuts`);
  const files = new Map<string, Uint8Array>();
  const segments: SegmentSpec[] = [];
  const exits: ExitSpec[] = [];
  const total = models.length + (o.includeBackbone === false ? 0 : 1);
  const bbMacs = o.analysis.macs;
  let cumulative = 0;
  for (let i = 0; i < models.length; i++) {
    const exit = o.exits[i];
    const file = segmentFileName(i);
    const seg = exit ? fuseHead(models[i]!, exit.head, { outputName: exitOutputName(i) }) : models[i]!;
    const bytes = encodeModel(seg);
    files.set(file, bytes);
    const cost = exit ? headCost(exit.head) : { params: 0, macs: 0 };
    cumulative += segMacs[i]! + cost.macs;
    segments.push({
      file,
      sha256: await sha256Hex(bytes),
      bytes: bytes.length,
      macs: segMacs[i]!,
      headMacs: cost.macs,
      input: i === 0 ? o.input.name : cuts[i - 1]!,
      output: exit ? exit.cut : o.output,
      ...(exit ? { exitOutput: exitOutputName(i), exit: i } : {}),
    });
    if (exit) {
      exits.push({
        name: exit.name,
        cut: exit.cut,
        segment: i,
        headKind: exit.head.kind,
        ...(exit.head.dequant ? { dequant: exit.head.dequant } : {}),
        ...(exit.head.layout === 'NHWC' ? { layout: 'NHWC' as const } : {}),
        threshold: exit.threshold,
        macsFraction: bbMacs > 0 ? cumulative / bbMacs : 0,
        expectedShare: exit.expectedShare,
        ...(exit.scoreMap ? { scoreMap: exit.scoreMap } : {}),
        headParams: cost.params,
        headMacs: cost.macs,
      });
    }
    o.onFile?.(i + 1, total, file);
  }
  if (o.includeBackbone !== false) {
    files.set(BACKBONE_FILE, o.modelBytes);
    o.onFile?.(total, total, BACKBONE_FILE);
  }
  let calibration = o.calibration;
  if (o.validation && o.validation.length > 0) {
    if (o.validation.length !== o.exits.length)
      throw new SelfxitError('INTERNAL', `${o.validation.length} validation exits for ${o.exits.length} exits`);
    const bytes = encodeValidation(o.validation);
    files.set(VALIDATION_FILE, bytes);
    calibration = {
      ...calibration,
      validation: {
        file: VALIDATION_FILE,
        sha256: await sha256Hex(bytes),
        bytes: bytes.length,
        samples: o.validation[0]!.score.length,
        encoding: VALIDATION_ENCODING,
      },
    };
  }
  const manifest: BundleManifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    generator: o.generator ?? 'selfxit',
    createdAt: o.createdAt ?? new Date().toISOString(),
    backbone: {
      sha256: await sha256Hex(o.modelBytes),
      macs: bbMacs,
      params: o.analysis.params,
      output: o.output,
      outputKind: o.outputKind,
      ...(o.includeBackbone === false ? {} : { file: BACKBONE_FILE }),
      ...(o.batch ? { batch: o.batch } : {}),
      quantized: quantizedOps(o.modelBytes).length > 0,
    },
    input: o.input,
    labels: [...o.labels],
    segments,
    exits,
    calibration,
  };
  return { manifest, files };
}

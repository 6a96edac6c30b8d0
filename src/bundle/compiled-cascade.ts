// A bundle's segments as the compiled cascade's parts (src/graph/compile-cascade.ts): which outputs, which exits, how
// the last part ends; or as the exit-free model's (src/graph/compile-chain.ts). The runtime compiles the segments it
// has loaded (a prefix continues with the stage engine).
import { compileChain } from '../graph/compile-chain.js';
import { compileBatchCascade } from '../graph/compile-batch-cascade.js';
import { compileCascade, type CascadePart, type CompileCascadeOptions } from '../graph/compile-cascade.js';
import { decodeModel, type OnnxModel } from '../graph/model.js';
import { SelfxitError } from '../errors.js';
import type { BundleFiles, BundleManifest, SegmentSpec } from './manifest.js';

/**
 * Compiles segments `first .. first + models.length - 1` of the bundle (`models[k]` is segment `first + k`, decoded)
 * into one batch-1 model. It ends the backbone when the last of them is the bundle's last segment, else it is a prefix
 * whose exit index -2 says "continue with segment first + models.length from `continue_activation`".
 * `layout`, `gateHeads`: compileCascade's options (defaults: nested, gated). `dropped`: exits (manifest indices) left
 * out, their heads removed (CascadePart.droppedExitOutput): the model decides as one with those exits' thresholds
 * above 1 and runs neither their heads nor a gate (its thresholds input keeps one entry per exit of the bundle). For
 * the model with no exit see {@link compileBundleChain}. @throws SelfxitError as compileCascade; `INVALID_ARGUMENT`
 * when the range is not within the bundle.
 */
export function compileBundleCascade(
  manifest: BundleManifest,
  models: readonly OnnxModel[],
  first = 0,
  layout?: CompileCascadeOptions['layout'],
  gateHeads?: boolean,
  dropped?: ReadonlySet<number>,
): OnnxModel {
  return compileCascade(cascadeParts(manifest, models, first, dropped), {
    ...cascadeEnd(manifest, models, first),
    ...(layout ? { layout } : {}),
    ...(gateHeads !== undefined ? { gateHeads } : {}),
  });
}

/**
 * Segments `first .. first + models.length - 1` of the bundle as ONE model for batches of any size (compileBatchCascade:
 * `Compress` keeps the rows that go on at each exit; results in exit order with their input row), heads gated unless
 * `gateHeads` is false. A prefix (not up to the last segment) returns the rows no exit took with their cut activation.
 * @throws SelfxitError as compileBatchCascade; `INVALID_ARGUMENT` when the range is not within the bundle.
 */
export function compileBundleBatchCascade(
  manifest: BundleManifest,
  models: readonly OnnxModel[],
  first = 0,
  gateHeads?: boolean,
): OnnxModel {
  return compileBatchCascade(cascadeParts(manifest, models, first), {
    ...cascadeEnd(manifest, models, first),
    ...(gateHeads !== undefined ? { gateHeads } : {}),
  });
}

function cascadeParts(
  manifest: BundleManifest,
  models: readonly OnnxModel[],
  first: number,
  dropped?: ReadonlySet<number>,
): CascadePart[] {
  return segmentRange(manifest, models, first).map((s, k) => ({
    model: models[k]!,
    output: s.output,
    ...(s.exitOutput !== undefined && s.exit !== undefined
      ? dropped?.has(s.exit)
        ? { droppedExitOutput: s.exitOutput }
        : { exitOutput: s.exitOutput, exit: s.exit }
      : {}),
  }));
}

function cascadeEnd(
  manifest: BundleManifest,
  models: readonly OnnxModel[],
  first: number,
): { end: CompileCascadeOptions['end']; exitCount: number } {
  const complete = first + models.length === manifest.segments.length;
  return { end: complete ? manifest.backbone.outputKind : 'continue', exitCount: manifest.exits.length };
}

/**
 * The exit-free model of segments `first .. first + models.length - 1` (compileChain): the segments joined with no
 * head, no `If`, no thresholds input; for a bundle made by prepare, the backbone's own graph again. Its one input is
 * segment `first`'s input, its one output the last segment's `output` (the backbone's output, logits or probabilities
 * as `backbone.outputKind` says, when that is the bundle's last segment; else the cut activation to continue from).
 * @throws SelfxitError as compileChain; `INVALID_ARGUMENT` when the range is not within the bundle.
 */
export function compileBundleChain(manifest: BundleManifest, models: readonly OnnxModel[], first = 0): OnnxModel {
  const segs = segmentRange(manifest, models, first);
  return compileChain(
    segs.map((s, k) => ({
      model: models[k]!,
      output: s.output,
      ...(s.exitOutput !== undefined ? { exitOutput: s.exitOutput } : {}),
    })),
  );
}

function segmentRange(manifest: BundleManifest, models: readonly OnnxModel[], first: number): readonly SegmentSpec[] {
  const segs = manifest.segments.slice(first, first + models.length);
  if (models.length === 0 || first < 0 || segs.length !== models.length)
    throw new SelfxitError('INVALID_ARGUMENT', `segments ${first}..${first + models.length - 1} are not in the bundle`);
  return segs;
}

/** The decoded models of segments `first .. first + count - 1` of bundle files in memory. */
export function segmentModels(bundle: BundleFiles, first: number, count: number): OnnxModel[] {
  return bundle.manifest.segments.slice(first, first + count).map((s) => {
    const bytes = bundle.files.get(s.file);
    if (!bytes) throw new SelfxitError('INVALID_BUNDLE', `bundle file ${s.file} is missing`, { file: s.file });
    return decodeModel(bytes);
  });
}

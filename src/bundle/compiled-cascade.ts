// A bundle's segments as the compiled cascade's parts (src/graph/compile-cascade.ts): which outputs, which exits, how
// the last part ends. The runtime compiles the segments it has loaded (a prefix continues with the stage engine).
import { compileCascade, type CascadePart, type CompileCascadeOptions } from '../graph/compile-cascade.js';
import { decodeModel, type OnnxModel } from '../graph/model.js';
import { SelfxitError } from '../errors.js';
import type { BundleFiles, BundleManifest } from './manifest.js';

/**
 * Compiles segments `first .. first + models.length - 1` of the bundle (`models[k]` is segment `first + k`, decoded)
 * into one batch-1 model. It ends the backbone when the last of them is the bundle's last segment, else it is a prefix
 * whose exit index -2 says "continue with segment first + models.length from `continue_activation`".
 * `layout`, `gateHeads`, `heads`: compileCascade's options (defaults: nested, gated, with heads; `heads` false: the
 * exit-free model, segments re-joined with no head or `If`). @throws SelfxitError as compileCascade; `INVALID_ARGUMENT` when the range is not within the bundle.
 */
export function compileBundleCascade(
  manifest: BundleManifest,
  models: readonly OnnxModel[],
  first = 0,
  layout?: CompileCascadeOptions['layout'],
  gateHeads?: boolean,
  heads?: boolean,
): OnnxModel {
  const segs = manifest.segments.slice(first, first + models.length);
  if (models.length === 0 || first < 0 || segs.length !== models.length)
    throw new SelfxitError('INVALID_ARGUMENT', `segments ${first}..${first + models.length - 1} are not in the bundle`);
  const parts: CascadePart[] = segs.map((s, k) => ({
    model: models[k]!,
    output: s.output,
    ...(s.exitOutput !== undefined && s.exit !== undefined ? { exitOutput: s.exitOutput, exit: s.exit } : {}),
  }));
  const complete = first + models.length === manifest.segments.length;
  return compileCascade(parts, {
    end: complete ? manifest.backbone.outputKind : 'continue',
    exitCount: manifest.exits.length,
    ...(layout ? { layout } : {}),
    ...(gateHeads !== undefined ? { gateHeads } : {}),
    ...(heads !== undefined ? { heads } : {}),
  });
}

/** The decoded models of segments `first .. first + count - 1` of bundle files in memory. */
export function segmentModels(bundle: BundleFiles, first: number, count: number): OnnxModel[] {
  return bundle.manifest.segments.slice(first, first + count).map((s) => {
    const bytes = bundle.files.get(s.file);
    if (!bytes) throw new SelfxitError('INVALID_BUNDLE', `bundle file ${s.file} is missing`, { file: s.file });
    return decodeModel(bytes);
  });
}

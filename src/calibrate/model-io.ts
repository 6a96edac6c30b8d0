// The backbone's input/output as calibration feeds and reads them (resolveModelIO), the model prepare() calibrates
// (fitModelIO: only the chosen output, symbolic image dims fixed from the caller's geometry), and the teacher guard.
import { SelfxitError } from '../errors.js';
import type { InputSpec } from '../bundle/manifest.js';
import {
  graphInputs,
  graphOutputs,
  withInputShape,
  withOutputs,
  type ModelAnalysis,
  type OnnxModel,
  type TensorInfo,
} from '../graph/index.js';

/** The caller's input geometry and normalisation (prepare's `input` option). */
export type InputOverrides = Partial<Pick<InputSpec, 'height' | 'width' | 'channels' | 'mean' | 'std' | 'layout'>>;

/** The backbone's input spec, output tensor and class count, as calibration feeds and reads them. */
export interface ModelIO {
  readonly input: InputSpec;
  readonly output: string;
  readonly outputKind: 'logits' | 'probabilities';
  readonly classes: number;
}

const shapeText = (t: TensorInfo): string => `"${t.name}" [${t.shape.join(', ')}]`;

/** The output holding the class scores: `wanted`, or the only one (UNSUPPORTED_MODEL naming them when several). */
function chooseOutput(outputs: readonly TensorInfo[], wanted: string | undefined): TensorInfo {
  if (outputs.length === 0) throw new SelfxitError('UNSUPPORTED_MODEL', 'the model has no output');
  const list = outputs.map(shapeText).join(', ');
  if (wanted !== undefined) {
    const out = outputs.find((o) => o.name === wanted);
    if (!out)
      throw new SelfxitError('INVALID_ARGUMENT', `"${wanted}" is not an output of the model (outputs: ${list})`, {
        output: wanted,
      });
    return out;
  }
  if (outputs.length > 1)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `the model has ${outputs.length} outputs (${list}): say which one holds the class scores (output / --output); the others are dropped`,
      { outputs: outputs.map((o) => o.name) },
    );
  return outputs[0]!;
}

/** Ops that pass a tensor's values through unchanged (up to shape or type): a Softmax before them still ends the model. */
const PASS_THROUGH = new Set(['Identity', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Cast', 'Dropout']);

/** 'probabilities' when `name` is a Softmax's output, possibly behind shape-only ops; else 'logits'. */
function outputKindOf(model: OnnxModel, name: string): 'logits' | 'probabilities' {
  const nodes = model.proto.graph?.node ?? [];
  let tensor = name;
  for (let hops = 0; hops <= nodes.length; hops++) {
    const producer = nodes.find((n) => (n.output ?? []).includes(tensor));
    if (producer?.opType === 'Softmax' && !producer.domain) return 'probabilities';
    if (!producer || !PASS_THROUGH.has(producer.opType ?? '') || producer.domain || !producer.input?.[0]) break;
    tensor = producer.input[0];
  }
  return 'logits';
}

/** Axes of channels, height and width in the input for `layout`. */
const imageAxes = (layout: 'NCHW' | 'NHWC'): readonly [number, number, number] =>
  layout === 'NCHW' ? [1, 2, 3] : [3, 1, 2];

/**
 * The model's input spec and output, with `overrides` applied (INVALID_SAMPLES / UNSUPPORTED_MODEL when they cannot
 * fit). `output` names the class-score output; required when the model has several.
 */
export function resolveModelIO(
  model: OnnxModel,
  analysis: Pick<ModelAnalysis, 'inputs' | 'outputs'>,
  overrides: InputOverrides = {},
  output?: string,
): ModelIO {
  const inp = analysis.inputs[0];
  if (!inp || analysis.inputs.length !== 1)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `the model must have exactly one input, it has ${analysis.inputs.length}`,
    );
  if (inp.dtype !== 'float32')
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `model input "${inp.name}" is ${inp.dtype}; selfxit feeds float32 images`,
    );
  if (inp.shape.length !== 4)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `model input "${inp.name}" has rank ${inp.shape.length}; expected an image batch [N, C, H, W]`,
    );
  const dim = (i: number): number | undefined =>
    typeof inp.shape[i] === 'number' ? (inp.shape[i] as number) : undefined;
  if (overrides.layout === undefined && dim(1) === undefined && dim(3) === undefined)
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `model input "${inp.name}" [${inp.shape.join(', ')}] fixes neither axis 1 nor axis 3: give its layout (input.layout / --layout NCHW|NHWC)`,
      { tensor: inp.name },
    );
  if (overrides.layout !== undefined && overrides.layout !== 'NCHW' && overrides.layout !== 'NHWC')
    throw new SelfxitError('INVALID_ARGUMENT', `layout must be NCHW or NHWC, got "${String(overrides.layout)}"`);
  const layout =
    overrides.layout ??
    (dim(1) === 1 || dim(1) === 3 || dim(3) === undefined || (dim(3) !== 1 && dim(3) !== 3) ? 'NCHW' : 'NHWC');
  const [ci, hi, wi] = imageAxes(layout);
  const pick = (override: number | undefined, i: number, what: string): number => {
    const m = dim(i);
    if (override !== undefined && m !== undefined && override !== m) {
      throw new SelfxitError(
        'INVALID_SAMPLES',
        `samples are ${what} ${override} but the model input "${inp.name}" fixes ${what} ${m}`,
        { [what]: override, model: m },
      );
    }
    const v = override ?? m;
    if (v === undefined)
      throw new SelfxitError(
        'INVALID_SAMPLES',
        `the model input's ${what} is dynamic: give the sample ${what} (input.${what} / --shape)`,
      );
    return v;
  };
  const channels = pick(overrides.channels, ci, 'channels');
  if (channels !== 1 && channels !== 3)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `the model input has ${channels} channels; selfxit handles 1 (grayscale) or 3 (RGB)`,
    );
  const height = pick(overrides.height, hi, 'height');
  const width = pick(overrides.width, wi, 'width');
  const mean = overrides.mean ? [...overrides.mean] : new Array<number>(channels).fill(0);
  const std = overrides.std ? [...overrides.std] : new Array<number>(channels).fill(1);
  if (mean.length === 1 && channels === 3) mean.push(mean[0]!, mean[0]!);
  if (std.length === 1 && channels === 3) std.push(std[0]!, std[0]!);
  if (mean.length !== channels || std.length !== channels)
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `mean and std need ${channels} values, got ${mean.length} and ${std.length}`,
    );
  if (std.some((s) => !(s > 0)))
    throw new SelfxitError('INVALID_ARGUMENT', `std values must be > 0, got ${std.join(',')}`);
  const out = chooseOutput(analysis.outputs, output);
  // [N, classes], or a batch-1 model's [classes] (read as [1, classes]).
  const last = out.shape[out.shape.length - 1];
  const batchFree = out.shape.length === 1 && inp.shape[0] === 1;
  const classes = (out.shape.length === 2 || batchFree) && typeof last === 'number' ? last : undefined;
  if (classes === undefined || classes < 2)
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `output "${out.name}" must be [N, classes] (or [classes] with a batch-1 input), got [${out.shape.join(', ')}]`,
    );
  return {
    input: { name: inp.name, height, width, channels: channels as 1 | 3, layout, mean, std },
    output: out.name,
    outputKind: outputKindOf(model, out.name),
    classes,
  };
}

/**
 * The model prepare() calibrates: checked by {@link resolveModelIO}, with only the class-score output (`output`;
 * the others and what only they need are dropped, so they neither hide cuts nor cost MACs) and the input's symbolic
 * channel/height/width dims fixed from `overrides` (the batch stays as it is). `model` itself when nothing changes.
 */
export function fitModelIO(model: OnnxModel, overrides: InputOverrides = {}, output?: string): OnnxModel {
  const inputs = graphInputs(model);
  const outputs = graphOutputs(model);
  const io = resolveModelIO(model, { inputs, outputs }, overrides, output);
  let fitted = outputs.length > 1 ? withOutputs(model, [io.output]) : model;
  const inp = inputs[0]!;
  const [ci, hi, wi] = imageAxes(io.input.layout);
  const fixed = inp.shape.map((d, i) =>
    i === ci ? io.input.channels : i === hi ? io.input.height : i === wi ? io.input.width : d,
  );
  if (fixed.some((d, i) => d !== inp.shape[i])) fitted = withInputShape(fitted, inp.name, fixed);
  return fitted;
}

const DISTRIBUTION_TOLERANCE = 1e-3;
/** The fewest rows in a batch on which a 'logits' output whose rows all are distributions is refused. */
export const LOGITS_CHECK_ROWS = 16;

/** True when row r of `out [rows, k]` is non-negative and sums to 1 (within float rounding). */
function isDistribution(out: Float32Array, r: number, k: number): boolean {
  let sum = 0;
  for (let j = 0; j < k; j++) {
    const v = out[r * k + j]!;
    if (!(v >= 0)) return false;
    sum += v;
  }
  return Math.abs(sum - 1) <= DISTRIBUTION_TOLERANCE;
}

/**
 * Guard on the backbone's outputs `out [rows, k]` against the kind read from the graph (UNSUPPORTED_MODEL): a
 * 'probabilities' output must hold distributions; a 'logits' output whose every row is one (in a batch of {@link LOGITS_CHECK_ROWS} rows or more) is most likely
 * probabilities made by ops the graph reading does not follow, and softmax over it would flatten the teacher.
 */
export function checkOutputRows(
  out: Float32Array,
  rows: number,
  k: number,
  kind: ModelIO['outputKind'],
  name: string,
): void {
  if (kind === 'probabilities') {
    for (let r = 0; r < rows; r++)
      if (!isDistribution(out, r, k))
        throw new SelfxitError(
          'UNSUPPORTED_MODEL',
          `output "${name}" comes from a Softmax but a row is not a distribution over its ${k} classes (negative, or not summing to 1): is the Softmax over the class axis?`,
          { tensor: name },
        );
    return;
  }
  // decided on batches of LOGITS_CHECK_ROWS rows or more: on a few rows, logits can all look like distributions by
  // chance (e.g. a quantized softmax read as logits: about half its rows sum to 1 within the tolerance), and the same
  // model would then fail or pass by the sample count
  if (rows < LOGITS_CHECK_ROWS) return;
  for (let r = 0; r < rows; r++) if (!isDistribution(out, r, k)) return;
  throw new SelfxitError(
    'UNSUPPORTED_MODEL',
    `output "${name}" looks like probabilities (every row non-negative, summing to 1) though no Softmax ends the model: end it with a Softmax over the classes, or with the logits`,
    { tensor: name },
  );
}

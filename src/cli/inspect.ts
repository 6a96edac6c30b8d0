// `selfxit inspect <model.onnx> [--json] [--shape H,W,C]`: inputs, outputs, MACs, params and every cut point.
import { SelfxitError } from '../errors.js';
import {
  decodeModel,
  graphInputs,
  withInputShape,
  type CutPoint,
  type ModelAnalysis,
  type OnnxModel,
} from '../graph/index.js';
import { parseOneArgCommand } from './args.js';
import type { CliCommand, CliIo } from './dispatch.js';
import { formatBytes, formatCount, formatShape, formatTable } from './format.js';
import { parseShape } from './images.js';
import { analyzeModelNode, readFileBytes } from './node-io.js';

const help = `Usage: selfxit inspect <model.onnx> [--json] [--shape H,W,C] [--layout NCHW|NHWC]

Lists the model's input and output, its cost and every cut point: a tensor where the
model can be split so that exactly one activation crosses. MACs count the
multiply-accumulates of conv/matmul-type ops only (elementwise ops count 0).

Options:
  --json              print one JSON object:
                      { inputs, outputs, macs, params, cuts: [{ tensor, shape, dtype, macs, fraction, layout }] }
                      (layout, on 4-D cuts: "NCHW", "NHWC" (channels-last) or "unknown": read as NCHW)
  --shape H,W,C       the image size, for a model whose input leaves height, width or channels
                      symbolic (as prepare's --shape; the batch may stay dynamic)
  --layout NCHW|NHWC  the input's layout with --shape (default: NHWC when only axis 3 is fixed, else NCHW)
  -h, --help          show this help
`;

/** The model with its image input's height, width and channels fixed from `--shape` (and `--layout`). */
export function withImageShape(model: OnnxModel, shapeText: string, layoutText: string | undefined): OnnxModel {
  const { height, width, channels } = parseShape(shapeText);
  if (layoutText !== undefined && layoutText !== 'NCHW' && layoutText !== 'NHWC')
    throw new SelfxitError('INVALID_ARGUMENT', `--layout must be NCHW or NHWC, got "${layoutText}"`);
  const inp = graphInputs(model)[0]!;
  if (inp.shape.length !== 4)
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `--shape needs an image input [N, C, H, W] or [N, H, W, C]; "${inp.name}" is [${inp.shape.join(', ')}]`,
    );
  const layout = layoutText ?? (typeof inp.shape[3] === 'number' && typeof inp.shape[1] !== 'number' ? 'NHWC' : 'NCHW');
  const want = layout === 'NCHW' ? [inp.shape[0]!, channels, height, width] : [inp.shape[0]!, height, width, channels];
  want.forEach((d, i) => {
    const m = inp.shape[i];
    if (i > 0 && typeof m === 'number' && m !== d)
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `--shape ${shapeText} (${layout}) gives axis ${i} the size ${d}, but the model input "${inp.name}" fixes it at ${m}`,
      );
  });
  return withInputShape(model, inp.name, want);
}

/** A cut's layout as inspect shows it: the graph's, `'unknown'` for a 4-D cut it does not tell (read as NCHW). */
function layoutOf(c: CutPoint): 'NCHW' | 'NHWC' | 'unknown' | undefined {
  return c.layout ?? (c.shape.length === 4 ? 'unknown' : undefined);
}

/** The JSON `inspect --json` prints. */
export function inspectJson(a: ModelAnalysis): Record<string, unknown> {
  return {
    inputs: a.inputs,
    outputs: a.outputs,
    macs: a.macs,
    params: a.params,
    cuts: a.cuts.map((c) => {
      const layout = layoutOf(c);
      return {
        tensor: c.tensor,
        shape: c.shape,
        dtype: c.dtype,
        macs: c.macs,
        fraction: c.fraction,
        ...(layout ? { layout } : {}),
      };
    }),
  };
}

function inspectText(file: string, bytes: number, a: ModelAnalysis): string {
  const head = formatTable([
    ['model', `${file} (${formatBytes(bytes)})`],
    ...a.inputs.map((t) => ['input', `${t.name}  ${t.dtype}  ${formatShape(t.shape)}`]),
    ...a.outputs.map((t) => ['output', `${t.name}  ${t.dtype}  ${formatShape(t.shape)}`]),
    ['MACs', `${formatCount(a.macs)} per sample (conv/matmul-type ops)`],
    ['params', `${formatCount(a.params)} (${formatBytes(a.paramBytes)})`],
    ['cuts', String(a.cuts.length)],
  ]);
  if (a.cuts.length === 0) return `${head}\n\nNo inner cut point: the model cannot be split.\n`;
  const rows = [
    ['#', 'tensor', 'shape', 'layout', 'dtype', 'MACs before', 'fraction'],
    ...a.cuts.map((c, i) => [
      String(i + 1),
      c.tensor,
      formatShape(c.shape),
      layoutOf(c) === 'unknown' ? 'NCHW?' : (c.layout ?? ''),
      c.dtype,
      formatCount(c.macs),
      `${(c.fraction * 100).toFixed(1)} %`,
    ]),
  ];
  const unknown = a.cuts.some((c) => layoutOf(c) === 'unknown')
    ? '\nNCHW?: the graph does not tell the layout of this 4-D cut (no Conv, pool or normalization on a path to it, or paths that tell it different layouts); read as NCHW.\n'
    : '';
  return `${head}\n\n${formatTable(rows, new Set([0, 5, 6]))}\n${unknown}`;
}

export const inspectCommand: CliCommand = {
  name: 'inspect',
  summary: 'show inputs, outputs, MACs, params and cut points of an ONNX model',
  help,
  async run(argv: readonly string[], io: CliIo) {
    const { values, arg: file } = parseOneArgCommand(
      argv,
      { json: { type: 'boolean' }, shape: { type: 'string' }, layout: { type: 'string' } },
      '<model.onnx>',
    );
    if (values.layout !== undefined && values.shape === undefined)
      throw new SelfxitError('INVALID_ARGUMENT', '--layout goes with --shape');
    const bytes = await readFileBytes(file);
    const decoded = decodeModel(bytes);
    const model = values.shape !== undefined ? withImageShape(decoded, values.shape, values.layout) : decoded;
    const analysis = await analyzeModelNode(model);
    io.stdout(
      values.json ? `${JSON.stringify(inspectJson(analysis))}\n` : inspectText(file, bytes.byteLength, analysis),
    );
    return 0;
  },
};

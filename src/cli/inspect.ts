// `selfxit inspect <model.onnx> [--json]`: inputs, outputs, MACs, params and every cut point.
import { decodeModel, type ModelAnalysis } from '../graph/index.js';
import { parseOneArgCommand } from './args.js';
import type { CliCommand, CliIo } from './dispatch.js';
import { formatBytes, formatCount, formatShape, formatTable } from './format.js';
import { analyzeModelNode, readFileBytes } from './node-io.js';

const help = `Usage: selfxit inspect <model.onnx> [--json]

Lists the model's input and output, its cost and every cut point: a tensor where the
model can be split so that exactly one activation crosses. MACs count the
multiply-accumulates of conv/matmul-type ops only (elementwise ops count 0).

Options:
  --json      print one JSON object:
              { inputs, outputs, macs, params, cuts: [{ tensor, shape, dtype, macs, fraction }] }
  -h, --help  show this help
`;

/** The JSON `inspect --json` prints. */
export function inspectJson(a: ModelAnalysis): Record<string, unknown> {
  return {
    inputs: a.inputs,
    outputs: a.outputs,
    macs: a.macs,
    params: a.params,
    cuts: a.cuts.map((c) => ({ tensor: c.tensor, shape: c.shape, dtype: c.dtype, macs: c.macs, fraction: c.fraction })),
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
    ['#', 'tensor', 'shape', 'dtype', 'MACs before', 'fraction'],
    ...a.cuts.map((c, i) => [
      String(i + 1),
      c.tensor,
      formatShape(c.shape),
      c.dtype,
      formatCount(c.macs),
      `${(c.fraction * 100).toFixed(1)} %`,
    ]),
  ];
  return `${head}\n\n${formatTable(rows, new Set([0, 4, 5]))}\n`;
}

export const inspectCommand: CliCommand = {
  name: 'inspect',
  summary: 'show inputs, outputs, MACs, params and cut points of an ONNX model',
  help,
  async run(argv: readonly string[], io: CliIo) {
    const { values, arg: file } = parseOneArgCommand(argv, { json: { type: 'boolean' } }, '<model.onnx>');
    const bytes = await readFileBytes(file);
    const model = decodeModel(bytes);
    const analysis = await analyzeModelNode(model);
    io.stdout(
      values.json ? `${JSON.stringify(inspectJson(analysis))}\n` : inspectText(file, bytes.byteLength, analysis),
    );
    return 0;
  },
};

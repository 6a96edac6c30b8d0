// `selfxit split <model.onnx> --cuts <names|all> --out <dir>`: writes one ONNX model per segment plus index.json.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SelfxitError } from '../errors.js';
import { decodeModel, encodeModel, graphInputs, splitModel } from '../graph/index.js';
import { sortCuts } from '../graph/cuts.js';
import { nameList, parseOneArgCommand, requireOption } from './args.js';
import { UsageError, type CliCommand, type CliIo } from './dispatch.js';
import { formatBytes } from './format.js';
import { analyzeModelNode, readFileBytes, writeDirAtomic } from './node-io.js';

const help = `Usage: selfxit split <model.onnx> (--cuts <name,name,...|all> | --cut <name> ...) --out <dir>

Splits the model at the given cut tensors (see \`selfxit inspect\`) into standalone
ONNX models <dir>/segment-000.onnx, segment-001.onnx, ... (input -> cut 1 -> ... -> output),
each with a dynamic batch dimension, and writes <dir>/index.json:
  { "segments": [{ "file": "segment-000.onnx", "input": "...", "output": "..." }, ...] }
Cuts may be given in any order; they are applied in graph order. Nothing is written
when any cut is invalid or the folder cannot be written.

Options:
  --cuts <list>  comma-separated cut tensor names, or "all"
  --cut <name>   one cut tensor name, taken whole (for a name holding a comma); may be
                 given more than once, and with --cuts
  --out <dir>    output folder (created if missing; the segment files an earlier split's
                 index.json there names are replaced, every other file is kept)
  -h, --help     show this help
`;

export interface SplitIndex {
  segments: { file: string; input: string; output: string }[];
}

export const segmentFileName = (i: number): string => `segment-${String(i).padStart(3, '0')}.onnx`;

/**
 * The segment files of an earlier split in `dir`: those its index.json names that split writes (segment-NNN.onnx);
 * none without a readable index.json, so a user's own files there, segment-NNN.onnx included, are kept.
 */
export async function oldSegmentFiles(dir: string): Promise<Set<string>> {
  let index: unknown;
  try {
    index = JSON.parse(await fs.readFile(path.join(dir, 'index.json'), 'utf8'));
  } catch {
    return new Set();
  }
  const segments = (index as { segments?: unknown } | null)?.segments;
  if (!Array.isArray(segments)) return new Set();
  const named = segments.map((s: { file?: unknown } | null) => s?.file);
  return new Set(named.filter((f): f is string => typeof f === 'string' && /^segment-\d{3,}\.onnx$/.test(f)));
}

export const splitCommand: CliCommand = {
  name: 'split',
  summary: 'split an ONNX model at cut points into segment models',
  help,
  async run(argv: readonly string[], io: CliIo) {
    const { values, arg: file } = parseOneArgCommand(
      argv,
      { cuts: { type: 'string' }, cut: { type: 'string', multiple: true }, out: { type: 'string' } },
      '<model.onnx>',
    );
    const all = values.cuts === 'all';
    if (all && values.cut?.length) throw new UsageError('--cuts all cannot be combined with --cut');
    const names = all ? [] : nameList(values.cuts, values.cut, '--cuts --cut');
    if (!all && names === undefined) throw new UsageError('missing required option --cuts (or --cut)');
    const out = requireOption(values.out, '--out');

    const model = decodeModel(await readFileBytes(file));
    const analysis = await analyzeModelNode(model);
    const cuts = all ? analysis.cuts.map((c) => c.tensor) : sortCuts(model, names!);
    for (let i = 1; i < cuts.length; i++) {
      if (cuts[i] === cuts[i - 1])
        throw new SelfxitError('INVALID_ARGUMENT', `Cut "${cuts[i]}" is listed twice`, { tensor: cuts[i] });
    }
    const segments = splitModel(model, cuts, analysis);

    const input = graphInputs(model)[0]!.name;
    const finalOutput = analysis.outputs[0]!.name;
    const files = new Map<string, Uint8Array | string>();
    const index: SplitIndex = { segments: [] };
    segments.forEach((seg, i) => {
      const name = segmentFileName(i);
      files.set(name, encodeModel(seg));
      index.segments.push({
        file: name,
        input: i === 0 ? input : cuts[i - 1]!,
        output: i < cuts.length ? cuts[i]! : finalOutput,
      });
    });
    files.set('index.json', `${JSON.stringify(index, null, 2)}\n`);
    const stale = await oldSegmentFiles(out);
    await writeDirAtomic(out, files, { removeStale: (n) => stale.has(n) });
    let total = 0;
    for (const [n, c] of files) if (n.endsWith('.onnx')) total += (c as Uint8Array).byteLength;
    io.stdout(`Wrote ${segments.length} segments (${formatBytes(total)}) and index.json to ${out}\n`);
    return 0;
  },
};

// The exit-free model: a bundle's consecutive segments joined back into one graph with no exit head, no `If` and no
// extra input or output. For segments split from one backbone (prepare) this is the backbone's own graph again: the
// same nodes in the same order under the same names, so onnxruntime runs it at the full model's cost (the compiled
// engine serves it while every exit is off: live pruning's worst case).
import { SelfxitError } from '../errors.js';
import { composedModel, mergeModelHeaders, renameGraph } from './compose.js';
import { splitHead, type GraphContent } from './head-gate.js';
import { realInputProtos, type OnnxModel } from './model.js';
import { pb, readValueInfo, type onnx } from './proto.js';

/** One segment: its model (one real input: the model input, or the previous part's `output`) and what it outputs. */
export interface ChainPart {
  readonly model: OnnxModel;
  /** The main output: the cut the next part reads, or the backbone output on the bundle's last segment. */
  readonly output: string;
  /** The fused exit head's output, when the segment ends at an exit: its head is dropped. */
  readonly exitOutput?: string;
}

function invalid(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_BUNDLE', `Cannot join the segments: ${msg}`, details);
}

/** Every name a part's content defines: node outputs, initializers, node names (prefixed `node:`). */
function definedNames(c: GraphContent, sparse: readonly onnx.ISparseTensorProto[]): string[] {
  const out: string[] = [];
  for (const n of c.nodes) {
    for (const o of n.output ?? []) if (o !== '') out.push(o);
    if (n.name) out.push(`node:${n.name}`);
  }
  for (const t of c.initializers) out.push(t.name ?? '');
  for (const s of sparse) out.push(s.values?.name ?? '');
  return out;
}

/**
 * One model running `parts` (consecutive segments) one after the other with no exit: each part's fused head is split
 * off and dropped (head-gate.ts splitHead; a head that cannot be split stays, computed and unread).
 *
 * Inputs: part 0's input, as that segment declares it (the batch dim too). Outputs: the last part's `output` under its
 * own name, as that segment declares it: the backbone's logits or probabilities (the caller applies the softmax, as
 * the stage engine does), or the cut activation of a prefix. Names are kept: part i's input must be part i-1's output
 * (else it is renamed to it), and when no tensor, initializer or node name is defined by two parts (always so for
 * segments split from one model) the graph is the source's with the heads removed; otherwise every part's own names
 * are put in a namespace `s<i>/` (the input and the final output keep theirs).
 * @throws SelfxitError `INVALID_ARGUMENT` for no parts; `INVALID_BUNDLE` when the parts cannot be joined (not one
 *   input, a missing output, a part whose input does not match the previous output's element type or rank, differing
 *   opsets or functions).
 */
export function compileChain(parts: readonly ChainPart[]): OnnxModel {
  if (parts.length === 0) throw new SelfxitError('INVALID_ARGUMENT', 'compileChain needs at least one segment');
  const merged = mergeModelHeaders(parts.map((p) => p.model));
  const last = parts.length - 1;
  const inputs = parts.map((p, i) => {
    const ins = realInputProtos(p.model);
    if (ins.length !== 1)
      invalid(`segment ${i} has ${ins.length} inputs, expected 1`, { segment: i, inputs: ins.map((x) => x.name) });
    return ins[0]!;
  });
  const outputs = parts.map((p, i) => {
    const o = (p.model.proto.graph!.output ?? []).find((x) => x.name === p.output);
    if (!o) invalid(`segment ${i} has no output "${p.output}"`, { segment: i, tensor: p.output });
    return o;
  });
  parts.forEach((_, i) => {
    if (i === 0) return;
    const want = readValueInfo(inputs[i]!);
    const have = readValueInfo(outputs[i - 1]!);
    if (
      (want.dtype && have.dtype && want.dtype !== have.dtype) ||
      (want.shape && have.shape && want.shape.length !== have.shape.length)
    )
      invalid(`segment ${i}'s input does not match segment ${i - 1}'s output "${parts[i - 1]!.output}"`, {
        segment: i,
      });
  });

  // Each part's content with its head dropped, its input bound to the previous output; names namespaced when `ns`.
  const contents = (ns: boolean): { content: GraphContent; sparse: onnx.ISparseTensorProto[] }[] =>
    parts.map((p, i) => {
      const g = p.model.proto.graph!;
      const own = inputs[i]!.name ?? '';
      const bound = i === 0 ? own : parts[i - 1]!.output;
      const rn = (n: string): string =>
        n === ''
          ? ''
          : n === own
            ? i === 0 || !ns
              ? bound
              : `s${i - 1}/${bound}`
            : !ns || (i === last && n === p.output)
              ? n
              : `s${i}/${n}`;
      const r = renameGraph(g, rn, ns ? `s${i}/` : '');
      let content: GraphContent = { nodes: r.node, initializers: r.initializer, valueInfo: r.valueInfo };
      if (p.exitOutput !== undefined && r.sparseInitializer.length === 0) {
        const keep = new Set(r.output.map((o) => o.name ?? ''));
        const split = splitHead(content, rn(p.output), rn(p.exitOutput), keep);
        if (split) content = split.rest;
      }
      // the input is a value of the previous part (or the graph input): not a value info of this one
      content = { ...content, valueInfo: content.valueInfo.filter((v) => v.name !== rn(own)) };
      return { content, sparse: r.sparseInitializer };
    });
  let joined = contents(false);
  const seen = new Set<string>([inputs[0]!.name ?? '']);
  const clash = joined.some(({ content, sparse }) =>
    definedNames(content, sparse).some((n) => (seen.has(n) ? true : (seen.add(n), false))),
  );
  if (clash) joined = contents(true);

  const graph = pb.GraphProto.create({
    name: parts[0]!.model.proto.graph!.name ?? 'selfxit_exit_free',
    node: joined.flatMap((j) => j.content.nodes),
    initializer: joined.flatMap((j) => j.content.initializers),
    sparseInitializer: joined.flatMap((j) => j.sparse),
    valueInfo: joined.flatMap((j) => j.content.valueInfo),
    input: [pb.ValueInfoProto.create({ ...inputs[0]! })],
    output: [pb.ValueInfoProto.create({ ...outputs[last]! })],
  });
  return composedModel(merged, graph);
}

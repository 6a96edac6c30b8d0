// Graph variants of a bundle's cascade for the exit-cost benchmarks (bench/exit-cost.ts, bench/exit-cost-browser.ts):
// the segments re-joined with or without their heads, and the compiled cascade with its heads replaced by constants.
import { segmentModels } from '../src/bundle/compiled-cascade.js';
import type { BundleFiles } from '../src/bundle/manifest.js';
import { compileCascade, type CascadePart } from '../src/graph/compile-cascade.js';
import type { OnnxModel } from '../src/graph/index.js';
import { makeNode, makeTensor, makeValueInfo, type onnx } from '../src/graph/proto.js';

/** Segments inlined, only the exits in `keep` decided; `heads`: every fused head's probabilities become extra graph
 * outputs. */
export function chainModel(
  bundle: BundleFiles,
  heads: boolean,
  keep: readonly number[] = [],
  headOps?: readonly string[],
): OnnxModel {
  const m = bundle.manifest;
  const parts: CascadePart[] = m.segments.map((s, k) => ({
    model: segmentModels(bundle, k, 1)[0]!,
    output: s.output,
    ...(s.exit !== undefined && keep.includes(s.exit) ? { exit: s.exit, exitOutput: s.exitOutput! } : {}),
  }));
  const model = compileCascade(parts, { end: m.backbone.outputKind, exitCount: m.exits.length });
  const g = model.proto.graph!;
  if (headOps) {
    const isHead = (n: onnx.INodeProto): boolean => /^s\d+\/selfxit_exit\d+_probs\//.test(n.name ?? '');
    g.node = (g.node ?? []).filter((n) => !isHead(n) || headOps.includes(n.opType ?? ''));
  }
  if (heads) {
    m.segments.forEach((s, k) => {
      if (s.exitOutput !== undefined && k < m.segments.length - 1)
        g.output!.push(makeValueInfo(`s${k}/${s.exitOutput}`, 'float32', [1, m.labels.length]));
    });
  } else if (keep.length === 0) {
    // onnxruntime keeps nodes nobody reads: drop the heads' nodes (those the outputs do not need).
    const need = new Set((g.output ?? []).map((o) => o.name ?? ''));
    const nodes = [...(g.node ?? [])].reverse().filter((n) => {
      if (!(n.output ?? []).some((o) => need.has(o))) return false;
      for (const i of n.input ?? []) need.add(i);
      return true;
    });
    g.node = nodes.reverse();
  }
  return model;
}

/** The compiled cascade with every head replaced by a Constant [1, classes] of zeros: what the nested `If`s and
 * decisions cost in the real network without the heads' work. */
export function ifOnlyModel(bundle: BundleFiles): OnnxModel {
  const m = bundle.manifest;
  const parts: CascadePart[] = m.segments.map((s, k) => {
    const model = segmentModels(bundle, k, 1)[0]!;
    if (s.exitOutput === undefined) return { model, output: s.output };
    const g = model.proto.graph!;
    g.node = (g.node ?? []).filter((n) => !(n.name ?? '').startsWith(`${s.exitOutput}/`));
    const zeros = makeTensor('', 'float32', [1, m.labels.length], new Float32Array(m.labels.length));
    g.node.push(makeNode('Constant', [], [s.exitOutput], { value: zeros }));
    g.initializer = (g.initializer ?? []).filter((t) => !(t.name ?? '').startsWith(`${s.exitOutput}/`));
    return { model, output: s.output, exit: s.exit!, exitOutput: s.exitOutput };
  });
  return compileCascade(parts, { end: m.backbone.outputKind, exitCount: m.exits.length });
}

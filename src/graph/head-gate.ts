// Exit heads gated in the compiled cascade: a fused head split off its segment and run inside If(threshold > 1), so an
// exit that cannot fire (device plans, per-exit curves: NEVER_EXIT) skips its head; a head costs ~40 µs in the graph.
import { makeNode, makeTensor, pb, type onnx } from './proto.js';

/** Graph content (nodes and what only they use) as compileCascade moves it between scopes. */
export interface GraphContent {
  readonly nodes: onnx.INodeProto[];
  readonly initializers: onnx.ITensorProto[];
  readonly valueInfo: onnx.IValueInfoProto[];
}

const GRAPH_ATTR = 5;

/**
 * Splits a segment's content into what only its exit output needs (the fused head: nodes, the initializers no other
 * node reads, their value infos) and the rest. Undefined when the head cannot be moved into a branch: a node with a
 * subgraph (its outer reads are not followed), a head value read outside the head or listed in `keep`, no head node.
 */
export function splitHead(
  content: GraphContent,
  output: string,
  exitOutput: string,
  keep: ReadonlySet<string>,
): { head: GraphContent; rest: GraphContent } | undefined {
  const { nodes } = content;
  if (nodes.some((n) => (n.attribute ?? []).some((a) => a.g || a.graphs?.length))) return undefined;
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => (n.output ?? []).forEach((o) => producer.set(o, i)));
  const ancestors = (target: string): Set<number> => {
    const seen = new Set<number>();
    const stack = [target];
    while (stack.length > 0) {
      const i = producer.get(stack.pop()!);
      if (i === undefined || seen.has(i)) continue;
      seen.add(i);
      stack.push(...(nodes[i]!.input ?? []));
    }
    return seen;
  };
  const main = ancestors(output);
  const isHead = new Set([...ancestors(exitOutput)].filter((i) => !main.has(i)));
  if (isHead.size === 0) return undefined;
  const headValues = new Set([...isHead].flatMap((i) => nodes[i]!.output ?? []));
  const restReads = new Set(nodes.flatMap((n, i) => (isHead.has(i) ? [] : (n.input ?? []))));
  if ([...headValues].some((v) => v !== '' && (restReads.has(v) || (keep.has(v) && v !== exitOutput))))
    return undefined;
  const headReads = new Set([...isHead].flatMap((i) => nodes[i]!.input ?? []));
  const headOnly = (name: string): boolean => headReads.has(name) && !restReads.has(name) && !keep.has(name);
  const part = (inHead: boolean): GraphContent => ({
    nodes: nodes.filter((_, i) => isHead.has(i) === inHead),
    initializers: content.initializers.filter((t) => headOnly(t.name ?? '') === inHead),
    valueInfo: content.valueInfo.filter((v) => headValues.has(v.name ?? '') === inHead),
  });
  return { head: part(true), rest: part(false) };
}

/** What {@link gatedExit} builds on: names in the enclosing scope and the compiler's own pieces. */
export interface GateSpec {
  /** Node and value name prefix of this exit (e.g. `cascade/exit0/`). */
  readonly prefix: string;
  /** float32 `[1]` threshold of this exit, visible in the enclosing scope. */
  readonly threshold: string;
  /** float32 scalar 1 (an initializer of the top graph). */
  readonly one: string;
  /** The head, split off by {@link splitHead}, writing `probs`. */
  readonly head: GraphContent;
  /** The head's probabilities: produced inside the gate, output by it under the same name. */
  readonly probs: string;
  /** The fire flag (bool `[1]`) the gate outputs. */
  readonly fire: string;
  /** Nodes deciding `fire` from probabilities `probs` (ReduceMax and the comparison). */
  readonly decide: (probs: string, fire: string) => onnx.INodeProto[];
  /** The value infos of the gate's outputs, given their names (probabilities `[1, classes]`, fire bool `[1]`). */
  readonly outputInfos: (probs: string, fire: string) => onnx.ValueInfoProto[];
  /** A Constant of zero probabilities `[1, classes]` named as given (a disabled exit's, never read). */
  readonly noProbs: (name: string) => onnx.NodeProto;
}

/**
 * `Greater(threshold, 1)` and `If(disabled, then: no probabilities and fire false, else: the head and its decision)`:
 * outputs `probs` and `fire` as the ungated head and decision would, except that a disabled exit runs nothing.
 */
export function gatedExit(g: GateSpec): onnx.NodeProto[] {
  const t = g.prefix;
  const inner = `${t}gate/probs`;
  const rename = (s: string): string => (s === g.probs ? inner : s);
  const headNodes = g.head.nodes.map((n) =>
    pb.NodeProto.create({ ...n, input: (n.input ?? []).map(rename), output: (n.output ?? []).map(rename) }),
  );
  const on = pb.GraphProto.create({
    name: `${t}on`.replace(/\W/g, '_'),
    node: [...headNodes, ...g.decide(inner, `${t}gate/fire`)],
    initializer: g.head.initializers,
    valueInfo: g.head.valueInfo.filter((v) => v.name !== g.probs),
    output: g.outputInfos(inner, `${t}gate/fire`),
  });
  const off = pb.GraphProto.create({
    name: `${t}off`.replace(/\W/g, '_'),
    node: [
      g.noProbs(`${t}gate/none`),
      makeNode('Constant', [], [`${t}gate/never`], { value: makeTensor('', 'bool', [1], [0]) }, `${t}gate/never`),
    ],
    output: g.outputInfos(`${t}gate/none`, `${t}gate/never`),
  });
  const gate = makeNode('If', [`${t}disabled`], [g.probs, g.fire], {}, `${t}gate`);
  gate.attribute = [
    pb.AttributeProto.create({ name: 'then_branch', type: GRAPH_ATTR, g: off }),
    pb.AttributeProto.create({ name: 'else_branch', type: GRAPH_ATTR, g: on }),
  ];
  return [makeNode('Greater', [g.threshold, g.one], [`${t}disabled`], {}, `${t}Greater`), gate];
}

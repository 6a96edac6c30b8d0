// Which axis of each 4-D tensor holds the channels, told by the graph itself: ops whose ONNX definition fixes the
// layout (Conv, pools, BatchNormalization, …: NCHW; com.microsoft NhwcConv, channels_last forms: NHWC) set it, a
// Transpose maps it through its perm, and layout-keeping ops (elementwise, activations, Q/DQ, Concat, Pad, …) give it to
// all their 4-D operands that are maps (a constant operand — an initializer, a Constant's output or a value computed from
// them only — is broadcast and tells nothing). Propagated forward and backward to a fixed point; a tensor that two paths
// tell differently is not told, unless an op's definition fixes its layout: that one it keeps. Pure: needs the graph,
// the tensors' ranks and which values are constant.
import type { MapLayout } from './map-layout.js';
import { attrInt, attrInts, type onnx } from './proto.js';

export type { MapLayout };

/** Ops whose ONNX (or onnxruntime contrib) definition fixes the layout of their data input 0 and output 0. */
const LAYOUT_OPS = new Set([
  'Conv',
  'ConvInteger',
  'QLinearConv',
  'ConvTranspose',
  'MaxPool',
  'AveragePool',
  'GlobalAveragePool',
  'GlobalMaxPool',
  'LpPool',
  'GlobalLpPool',
  'BatchNormalization',
  'InstanceNormalization',
  'LRN',
  'MaxUnpool',
  'DepthToSpace',
  'SpaceToDepth',
  // com.microsoft
  'FusedConv',
  'QLinearAveragePool',
  'QLinearGlobalAveragePool',
  'NhwcConv',
  'NhwcFusedConv',
  'NhwcMaxPool',
]);

/** Ops that keep the layout: every 4-D input and output of one node has the same one. */
const KEEP_OPS = new Set([
  'Identity',
  'Dropout',
  'Cast',
  'Relu',
  'LeakyRelu',
  'PRelu',
  'Elu',
  'Selu',
  'Celu',
  'ThresholdedRelu',
  'Clip',
  'Sigmoid',
  'HardSigmoid',
  'HardSwish',
  'Tanh',
  'Softplus',
  'Softsign',
  'Mish',
  'Gelu',
  'Erf',
  'Exp',
  'Log',
  'Neg',
  'Abs',
  'Sqrt',
  'Reciprocal',
  'Floor',
  'Ceil',
  'Round',
  'Sign',
  'Add',
  'Sub',
  'Mul',
  'Div',
  'Pow',
  'Max',
  'Min',
  'Sum',
  'Mean',
  'Where',
  'Concat',
  'Split',
  'Slice',
  'Pad',
  'Resize',
  'Upsample',
  'Tile',
  'Expand',
  'QuantizeLinear',
  'DequantizeLinear',
  // com.microsoft
  'QLinearAdd',
  'QLinearMul',
  'QLinearLeakyRelu',
  'QLinearSigmoid',
  'QLinearConcat',
  'BiasGelu',
  'FastGelu',
  'QuickGelu',
]);

/** Reductions keep the layout of a 4-D output (keepdims = 1). */
const REDUCE_OPS = new Set(['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceSum', 'ReduceL2', 'ReduceProd']);

const MS_DOMAIN = 'com.microsoft';
const NHWC_DOMAIN = 'com.ms.internal.nhwc';

/** A node's domain, the default one as '' (also when written out as `ai.onnx`, as GraphIndex reads it). */
function domainOf(n: onnx.INodeProto): string {
  const d = n.domain ?? '';
  return d === 'ai.onnx' ? '' : d;
}

/** Channel axis a layout op fixes: 3 for channels-last forms (Nhwc* ops, `channels_last` = 1, the NHWC domain), else 1. */
function fixedAxis(n: onnx.INodeProto): number {
  const domain = domainOf(n);
  const op = n.opType ?? '';
  if (domain === NHWC_DOMAIN) return 3;
  if (domain === MS_DOMAIN && (op.startsWith('Nhwc') || attrInt(n, 'channels_last', 0) === 1)) return 3;
  return 1;
}

/** What ties the channel axes of 4-D tensors together, read once from the graph. */
interface Constraints {
  readonly fixed: [string, number][];
  readonly groups: string[][];
  readonly transposes: { readonly input: string; readonly output: string; readonly perm: readonly number[] }[];
}

function constraints(
  nodes: readonly onnx.INodeProto[],
  rankOf: (name: string) => number | undefined,
  isConstant: (name: string) => boolean,
): Constraints {
  const is4 = (v: string | null | undefined): v is string => !!v && rankOf(v) === 4;
  const constants = new Set<string>();
  for (const n of nodes)
    if (n.opType === 'Constant' && domainOf(n) === '') for (const o of n.output ?? []) if (o) constants.add(o);
  // a broadcast operand (a [1, 1, 1, 1] scale shared by two regions, say) would tie unrelated maps together
  const isMap = (v: string | null | undefined): v is string => is4(v) && !constants.has(v) && !isConstant(v);
  const out: Constraints = { fixed: [], groups: [], transposes: [] };
  for (const n of nodes) {
    const op = n.opType ?? '';
    const domain = domainOf(n);
    const ins = n.input ?? [];
    const outs = n.output ?? [];
    if (domain !== '' && domain !== MS_DOMAIN && domain !== NHWC_DOMAIN) continue;
    if (LAYOUT_OPS.has(op)) {
      const axis = fixedAxis(n);
      if (is4(ins[0])) out.fixed.push([ins[0], axis]);
      if (is4(outs[0])) out.fixed.push([outs[0], axis]);
    } else if (op === 'Transpose' && domain === '') {
      if (!is4(ins[0]) || !is4(outs[0])) continue;
      const perm = attrInts(n, 'perm') ?? [3, 2, 1, 0];
      // a perm that moves the batch leaves no map behind it
      if (perm.length === 4 && perm[0] === 0) out.transposes.push({ input: ins[0], output: outs[0], perm });
    } else if (KEEP_OPS.has(op) || (REDUCE_OPS.has(op) && domain === '')) {
      const group = [...ins, ...outs].filter(isMap);
      if (group.length > 1) out.groups.push(group);
    }
  }
  return out;
}

/**
 * The layout of every 4-D tensor that `nodes` (a graph's, e.g. GraphIndex.nodes) tell (`rankOf` gives a tensor's rank,
 * undefined when unknown; `isConstant` tells the values computed from initializers and Constants only, e.g.
 * `GraphIndex.kind` 'const'; Constant outputs are recognised anyway): from the ops that fix it, through Transposes and
 * layout-keeping ops, forward and backward to a fixed point. Constant operands tie nothing together. A tensor an op's
 * definition fixes keeps that layout whatever else reaches it. Any other tensor absent from the result is not told: no
 * op fixes a layout on any path to it, two paths tell it different ones, or a Transpose puts its channels on axis 2
 * (between H and W); a Transpose that moves the batch tells nothing.
 */
export function inferMapLayouts(
  nodes: readonly onnx.INodeProto[],
  rankOf: (name: string) => number | undefined,
  isConstant: (name: string) => boolean,
): Map<string, MapLayout> {
  const { fixed, groups, transposes } = constraints(nodes, rankOf, isConstant);
  // Channel axis: 0..3, or -1 where two paths disagree (sticky, and spread to all it is tied to). What an op's
  // definition fixes is final (-1 only where two definitions disagree) and ties nothing: it only tells what it is tied
  // to. Every other tensor is in a class of tensors a layout-keeping op makes equal (union-find), which holds one axis;
  // a Transpose carries an axis between two classes, relaxed again (worklist) when either class's axis changes. An
  // axis changes at most twice (unknown → told → -1), so the whole is close to linear in the graph.
  const byDefinition = new Map<string, number>();
  for (const [t, a] of fixed) {
    const cur = byDefinition.get(t);
    byDefinition.set(t, cur === undefined || cur === a ? a : -1);
  }
  const ids = new Map<string, number>();
  const parent: number[] = [];
  const id = (t: string): number => {
    let i = ids.get(t);
    if (i === undefined) {
      i = parent.length;
      ids.set(t, i);
      parent.push(i);
    }
    return i;
  };
  const find = (i: number): number => {
    while (parent[i] !== i) {
      const up = parent[parent[i]!]!;
      parent[i] = up;
      i = up;
    }
    return i;
  };
  /** Axes told by definition to the class of tensor id: [id, axis]. */
  const seeds: [number, number][] = [];
  for (const g of groups) {
    let first: number | undefined;
    for (const t of g) {
      if (byDefinition.has(t)) continue;
      const i = id(t);
      if (first === undefined) first = i;
      else {
        const [a, b] = [find(first), find(i)];
        if (a !== b) parent[b] = a;
      }
    }
    if (first === undefined) continue;
    for (const t of g) {
      const a = byDefinition.get(t);
      if (a !== undefined) seeds.push([first, a]);
    }
  }
  for (const { input, output } of transposes) for (const t of [input, output]) if (!byDefinition.has(t)) id(t);
  const axis: (number | undefined)[] = [];
  const touching = new Map<number, number[]>(); // class → the transposes that read or write it
  transposes.forEach(({ input, output }, k) => {
    for (const t of [input, output]) {
      const i = ids.get(t);
      if (i === undefined) continue;
      const r = find(i);
      const list = touching.get(r);
      if (list) list.push(k);
      else touching.set(r, [k]);
    }
  });
  const work: number[] = [];
  const tell = (i: number, a: number): void => {
    const r = find(i);
    const cur = axis[r];
    if (cur === a || cur === -1) return;
    axis[r] = cur === undefined ? a : -1;
    work.push(r);
  };
  const axisOf = (t: string): number | undefined => {
    const a = byDefinition.get(t);
    if (a !== undefined) return a;
    const i = ids.get(t);
    return i === undefined ? undefined : axis[find(i)];
  };
  const relax = (k: number): void => {
    const { input, output, perm } = transposes[k]!;
    const ai = axisOf(input);
    const ao = axisOf(output);
    const [ii, io] = [ids.get(input), ids.get(output)];
    // output axis k holds input axis perm[k]
    if (ai !== undefined && io !== undefined) tell(io, ai === -1 ? -1 : perm.indexOf(ai));
    if (ao !== undefined && ii !== undefined) tell(ii, ao === -1 ? -1 : (perm[ao] ?? -1));
  };
  for (const [i, a] of seeds) tell(i, a);
  for (let k = 0; k < transposes.length; k++) relax(k);
  for (let r = work.pop(); r !== undefined; r = work.pop()) for (const k of touching.get(r) ?? []) relax(k);
  const layouts = new Map<string, MapLayout>();
  for (const t of new Set([...byDefinition.keys(), ...ids.keys()])) {
    const a = axisOf(t);
    if (a === 1) layouts.set(t, 'NCHW');
    else if (a === 3) layouts.set(t, 'NHWC');
  }
  return layouts;
}

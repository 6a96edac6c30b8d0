// Static element-type inference: value_info and initializers first, then per-op rules (first input by default;
// If/Loop/Scan from their bodies' outputs).
import type { GraphIndex } from './graph-index.js';
import { attrInt, dtypeFromElemType, findAttr, readValueInfo, type DType, type onnx } from './proto.js';
import { PRODUCER_QPARAMS } from './quant.js';

const TO_INT64 = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin', 'NonMaxSuppression']);
const TO_BOOL = new Set([
  'Equal',
  'Less',
  'Greater',
  'LessOrEqual',
  'GreaterOrEqual',
  'Not',
  'And',
  'Or',
  'Xor',
  'IsNaN',
  'IsInf',
]);
const TO_INT32 = new Set(['ConvInteger', 'MatMulInteger']);

/** Element type of every value the graph index knows, where it can be told without running the model. */
export function inferDtypes(index: GraphIndex): Map<string, DType> {
  const g = index.graph;
  const out = new Map<string, DType>();
  declare(out, [...(g.input ?? []), ...(g.valueInfo ?? []), ...(g.output ?? [])]);
  for (const [name, t] of index.initializers) {
    const d = dtypeFromElemType(t.dataType);
    if (d) out.set(name, d);
  }
  inferNodes(index.nodes, out);
  return out;
}

function declare(out: Map<string, DType>, infos: readonly onnx.IValueInfoProto[]): void {
  for (const vi of infos) {
    const d = readValueInfo(vi).dtype;
    if (d && vi.name) out.set(vi.name, d);
  }
}

/** Element types of a subgraph's outputs (its declarations, else inferred inside it; outer-scope types in `outer`). */
function subgraphOutputs(
  sub: onnx.IGraphProto | null | undefined,
  outer: ReadonlyMap<string, DType>,
): (DType | undefined)[] {
  if (!sub) return [];
  const inner = new Map(outer);
  declare(inner, [...(sub.input ?? []), ...(sub.valueInfo ?? []), ...(sub.output ?? [])]);
  for (const t of sub.initializer ?? []) {
    const d = dtypeFromElemType(t.dataType);
    if (d && t.name) inner.set(t.name, d);
  }
  inferNodes(sub.node ?? [], inner);
  return (sub.output ?? []).map((o) => inner.get(o.name ?? ''));
}

/** Types of a control-flow node's outputs from its bodies: If (a branch's outputs), Loop (the body's outputs after
 * the condition; a loop-carried value's initial input as fallback), Scan (the body's outputs). Unknown: undefined. */
function controlFlowTypes(n: onnx.INodeProto, out: ReadonlyMap<string, DType>): (DType | undefined)[] {
  const op = n.opType ?? '';
  const count = (n.output ?? []).length;
  const body = (name: string): (DType | undefined)[] => subgraphOutputs(findAttr(n, name)?.g, out);
  const ins = n.input ?? [];
  if (op === 'If') {
    const [a, b] = [body('then_branch'), body('else_branch')];
    return Array.from({ length: count }, (_, i) => a[i] ?? b[i]);
  }
  if (op === 'Loop') {
    const b = body('body');
    return Array.from({ length: count }, (_, i) => b[i + 1] ?? (ins[i + 2] ? out.get(ins[i + 2]!) : undefined));
  }
  const b = body('body');
  return Array.from({ length: count }, (_, i) => b[i]);
}

const CONTROL_FLOW = new Set(['If', 'Loop', 'Scan']);

/** Per-op rules over `nodes` (in topological order), adding to `out` the outputs' types it can tell. */
function inferNodes(nodes: readonly onnx.INodeProto[], out: Map<string, DType>): void {
  for (const n of nodes) {
    const ins = n.input ?? [];
    const inType = (i: number): DType | undefined => (ins[i] ? out.get(ins[i]!) : undefined);
    const op = n.opType ?? '';
    let types: (DType | undefined)[];
    if (CONTROL_FLOW.has(op) && (n.domain ?? '') === '') types = controlFlowTypes(n, out);
    else if (op === 'Constant') {
      const t = findAttr(n, 'value')?.t;
      types = [
        t
          ? dtypeFromElemType(t.dataType)
          : findAttr(n, 'value_float') || findAttr(n, 'value_floats')
            ? 'float32'
            : 'int64',
      ];
    } else if (TO_INT64.has(op)) types = ['int64'];
    else if (TO_BOOL.has(op)) types = ['bool'];
    else if (TO_INT32.has(op)) types = ['int32'];
    else if (op === 'Cast') types = [dtypeFromElemType(attrInt(n, 'to', 1))];
    else if (op === 'CastLike') types = [inType(1)];
    else if (op === 'DequantizeLinear') types = [inType(1) ?? 'float32'];
    else if (op === 'DynamicQuantizeLinear') types = ['uint8', 'float32', 'uint8'];
    else if (op === 'QGemm' && !ins[PRODUCER_QPARAMS.QGemm![0]])
      types = ['float32']; // no y_scale: float output
    else if (op in PRODUCER_QPARAMS)
      types = [inType(PRODUCER_QPARAMS[op]![1]) ?? 'uint8']; // the zero point's type
    else if (op === 'ConstantOfShape') {
      const t = findAttr(n, 'value')?.t;
      types = [t ? dtypeFromElemType(t.dataType) : 'float32'];
    } else if (op === 'Where') types = [inType(1)];
    else if (op === 'TopK') types = [inType(0), 'int64'];
    else if (op === 'MaxPool') types = [inType(0), 'int64'];
    else if (/^Random(Normal|Uniform)$/.test(op) || op === 'EyeLike' || /^Random(Normal|Uniform)Like$/.test(op)) {
      const d = findAttr(n, 'dtype');
      types = [
        d ? dtypeFromElemType(attrInt(n, 'dtype', 1)) : op.endsWith('Like') || op === 'EyeLike' ? inType(0) : 'float32',
      ];
    } else types = [inType(0)];
    (n.output ?? []).forEach((o, i) => {
      if (!o || out.has(o)) return;
      const d = types[Math.min(i, types.length - 1)];
      if (d) out.set(o, d);
    });
  }
}

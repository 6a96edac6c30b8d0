// Cost model: multiply-accumulates (MACs) per node and parameter counts.
//
// MACs count only the multiply-accumulates of convolution- and matmul-type ops (Conv, ConvTranspose, Gemm, MatMul,
// their integer/quantized forms). Elementwise and reduction ops (Relu, Add, BatchNormalization, pooling, Softmax, ...)
// count 0; If/Loop/Scan count their bodies (the larger If branch; a loop body once). That is the convention behind
// the published ResNet-20/56 figures (40.6 M / 125.5 M MACs per image).
import { SelfxitError } from '../errors.js';
import type { GraphIndex } from './graph-index.js';
import { attrInt, findAttr, readValueInfo, tensorBytes, tensorSize, toNum, type onnx } from './proto.js';

/** Returns a concrete shape (batch 1) or undefined when unknown. */
export type ShapeLookup = (name: string) => readonly number[] | undefined;

const CONV = new Set(['Conv', 'ConvInteger', 'FusedConv', 'NhwcConv']);
const MATMUL = new Set(['MatMul', 'MatMulInteger', 'FusedMatMul', 'QLinearMatMul', 'MatMulIntegerToFloat']);

function prod(s: readonly number[]): number {
  let p = 1;
  for (const d of s) p *= d;
  return p;
}

/** Tensor names whose shapes {@link nodeMacs} reads for this node (empty for 0-MAC ops). */
export function macOperands(node: onnx.INodeProto): string[] {
  const op = node.opType ?? '';
  const ins = node.input ?? [];
  const out = node.output?.[0] ?? '';
  if (CONV.has(op)) return [ins[1] ?? '', out];
  if (op === 'QLinearConv') return [ins[3] ?? '', out];
  if (op === 'ConvTranspose') return [ins[0] ?? '', ins[1] ?? ''];
  if (op === 'Gemm' || MATMUL.has(op)) return [ins[0] ?? '', out];
  return [];
}

/**
 * MACs of one node at batch 1:
 * - Conv / ConvInteger / QLinearConv (incl. grouped and depthwise): `outElems * (Cin / group) * prod(kernel)`, read
 *   from the weight `[Cout, Cin/group, k...]`.
 * - ConvTranspose: `inElems * (Cout / group) * prod(kernel)`, weight `[Cin, Cout/group, k...]`.
 * - Gemm: `outElems * K` (K from A, honouring transA). MatMul / QLinearMatMul / MatMulInteger: `outElems * K`, K = last dim of A.
 * - If: the larger branch's MACs; Loop, Scan: one run of the body (the trip count is data: not multiplied). A body's
 *   shapes come from its own declarations (value_info, initializers; a symbolic dim 0 read as 1) and the outer
 *   graph's; a body node whose shapes are unknown counts 0.
 * - Anything else: 0.
 * @throws SelfxitError `SHAPE_UNKNOWN` when a needed shape is missing.
 */
export function nodeMacs(node: onnx.INodeProto, shapeOf: ShapeLookup): number {
  const op = node.opType ?? '';
  if (BODY_ATTRS[op] && (node.domain ?? '') === '') return controlFlowMacs(node, op, shapeOf);
  const operands = macOperands(node);
  if (operands.length === 0) return 0;
  const shapes = operands.map((name) => {
    const s = name ? shapeOf(name) : undefined;
    if (!s) {
      throw new SelfxitError(
        'SHAPE_UNKNOWN',
        `Shape of "${name}" (operand of ${op} node "${node.name ?? ''}") is unknown; cannot count its MACs`,
        { tensor: name, node: node.name },
      );
    }
    return s;
  });
  const [a, b] = shapes as [readonly number[], readonly number[]];
  if (CONV.has(op) || op === 'QLinearConv') return prod(b) * (a[1] ?? 1) * prod(a.slice(2));
  if (op === 'ConvTranspose') return prod(a) * (b[1] ?? 1) * prod(b.slice(2));
  if (op === 'Gemm') {
    const k = attrInt(node, 'transA', 0) ? a[0] : a[1];
    return prod(b) * (k ?? 1);
  }
  return prod(b) * (a[a.length - 1] ?? 1);
}

const BODY_ATTRS: Readonly<Record<string, readonly string[]>> = {
  If: ['then_branch', 'else_branch'],
  Loop: ['body'],
  Scan: ['body'],
};

/** MACs of an If (its larger branch), Loop or Scan (its body once), see {@link nodeMacs}. */
function controlFlowMacs(node: onnx.INodeProto, op: string, shapeOf: ShapeLookup): number {
  return Math.max(0, ...BODY_ATTRS[op]!.map((name) => bodyMacs(findAttr(node, name)?.g, shapeOf)));
}

function bodyMacs(g: onnx.IGraphProto | null | undefined, outer: ShapeLookup): number {
  if (!g) return 0;
  const own = new Map<string, readonly number[]>();
  for (const vi of [...(g.input ?? []), ...(g.valueInfo ?? []), ...(g.output ?? [])]) {
    const s = readValueInfo(vi).shape?.map((d, i) => (i === 0 && typeof d === 'string' ? 1 : d));
    if (s && vi.name && s.every((d): d is number => typeof d === 'number')) own.set(vi.name, s);
  }
  for (const t of g.initializer ?? []) if (t.name) own.set(t.name, (t.dims ?? []).map(toNum));
  const shapeOf: ShapeLookup = (name) => own.get(name) ?? outer(name);
  let total = 0;
  for (const n of g.node ?? []) {
    try {
      total += nodeMacs(n, shapeOf);
    } catch (e) {
      if (!(e instanceof SelfxitError) || e.code !== 'SHAPE_UNKNOWN') throw e;
    }
  }
  return total;
}

/** Parameter count and bytes: the initializers that live nodes read. Constant-node values are not counted. */
export function paramStats(index: GraphIndex): { params: number; paramBytes: number } {
  let params = 0;
  let paramBytes = 0;
  for (const [name, t] of index.initializers) {
    if (!index.consumers.has(name)) continue;
    params += tensorSize(t);
    paramBytes += tensorBytes(t);
  }
  return { params, paramBytes };
}

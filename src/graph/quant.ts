// Quantized (uint8/int8) tensors: the per-tensor scale and zero point a graph gives one (from the QLinear op or
// QuantizeLinear that produces it, or a DequantizeLinear / QLinear op that reads it), and their JS dequantization.
import { SelfxitError } from '../errors.js';
import { constTensorOf, type GraphIndex } from './graph-index.js';
import type { Dequantization, QuantDType } from './dequantization.js';
import { dtypeFromElemType, tensorNumbers, type DType } from './proto.js';

export type { Dequantization, QuantDType } from './dequantization.js';

export function isQuantDType(d: DType | string | undefined): d is QuantDType {
  return d === 'uint8' || d === 'int8';
}

/**
 * Where producers keep the output's scale and zero point: op type → [scale input, zero-point input]. QOperator ops
 * (onnxruntime's `com.microsoft` ones included) and QuantizeLinear.
 */
export const PRODUCER_QPARAMS: Readonly<Record<string, readonly [number, number]>> = Object.fromEntries(
  (
    [
      [[1, 2], ['QuantizeLinear']],
      [
        [6, 7],
        ['QLinearConv', 'QLinearMatMul', 'QLinearAdd', 'QLinearMul'],
      ],
      [
        [3, 4],
        ['QLinearGlobalAveragePool', 'QLinearAveragePool', 'QLinearLeakyRelu', 'QLinearSigmoid', 'QLinearSoftmax'],
      ],
      [[0, 1], ['QLinearConcat']],
      [[7, 8], ['QGemm']],
    ] as const
  ).flatMap(([qparams, ops]) => ops.map((op) => [op, qparams])),
);

/** Ops whose output keeps the input's quantization (data movement, max): follow them to their first input. */
const PASS_THROUGH = new Set([
  'MaxPool',
  'GlobalMaxPool',
  'Reshape',
  'Flatten',
  'Transpose',
  'Squeeze',
  'Unsqueeze',
  'Identity',
  'Slice',
  'DepthToSpace',
  'SpaceToDepth',
]);

/** Where consumers read an input's scale and zero point: op type → per input position [scale, zero point]. */
const CONSUMER_QPARAMS: Readonly<Record<string, Readonly<Record<number, readonly [number, number]>>>> = {
  DequantizeLinear: { 0: [1, 2] },
  QLinearConv: { 0: [1, 2] },
  QLinearMatMul: { 0: [1, 2] },
  QLinearAdd: { 0: [1, 2], 3: [4, 5] },
  QLinearMul: { 0: [1, 2], 3: [4, 5] },
  QLinearGlobalAveragePool: { 0: [1, 2] },
  QLinearAveragePool: { 0: [1, 2] },
  QLinearLeakyRelu: { 0: [1, 2] },
  QLinearSigmoid: { 0: [1, 2] },
  QLinearSoftmax: { 0: [1, 2] },
  QGemm: { 0: [1, 2] },
};

type Found = Dequantization | { readonly missing: string };

/** Scale and zero point from the constant inputs `scaleName`, `zpName` (zero point optional: 0, uint8). */
function fromConstants(
  index: GraphIndex,
  dtype: QuantDType,
  scaleName: string | undefined,
  zpName: string | undefined,
  where: string,
): Found {
  if (!scaleName) return { missing: `${where} has no scale input` };
  const st = constTensorOf(index, scaleName);
  const scale = st ? tensorNumbers(st) : undefined;
  if (!scale) return { missing: `${where}'s scale "${scaleName}" is not a constant` };
  if (scale.length !== 1) return { missing: `${where}'s scale has ${scale.length} values (per-channel), not one` };
  let zeroPoint = 0;
  if (zpName) {
    const zt = constTensorOf(index, zpName);
    const zp = zt ? tensorNumbers(zt) : undefined;
    if (!zp || zp.length !== 1) return { missing: `${where}'s zero point "${zpName}" is not one constant value` };
    const zdt = dtypeFromElemType(zt!.dataType);
    if (zdt !== dtype) return { missing: `${where}'s zero point is ${zdt ?? 'untyped'}, the tensor is ${dtype}` };
    zeroPoint = zp[0]!;
  }
  const s = scale[0]!;
  if (!(Number.isFinite(s) && s > 0)) return { missing: `${where}'s scale ${s} is not a positive number` };
  return { scale: s, zeroPoint, dtype };
}

/**
 * The dequantization of the `dtype` activation `tensor`: from the op that produces it (QLinear*, QuantizeLinear,
 * through data-movement ops), else from a DequantizeLinear or QLinear op that reads it. Per-tensor (scalar) constant
 * scale and zero point only; otherwise `{ missing }` says why.
 */
export function findDequantization(index: GraphIndex, tensor: string, dtype: QuantDType): Found {
  const name = (p: number): string => index.nodes[p]!.name || index.nodes[p]!.opType || `node ${p}`;
  let t = tensor;
  for (let hops = 0; hops < 16; hops++) {
    const p = index.producer.get(t);
    if (p === undefined) break;
    const node = index.nodes[p]!;
    const op = node.opType ?? '';
    const at = PRODUCER_QPARAMS[op];
    if (at) return fromConstants(index, dtype, node.input?.[at[0]], node.input?.[at[1]], `${op} "${name(p)}"`);
    if (!PASS_THROUGH.has(op) || !node.input?.[0]) break;
    t = node.input[0];
  }
  for (const c of index.consumers.get(tensor) ?? []) {
    const node = index.nodes[c]!;
    const by = CONSUMER_QPARAMS[node.opType ?? ''];
    if (!by) continue;
    const pos = (node.input ?? []).indexOf(tensor);
    const at = by[pos];
    if (at) return fromConstants(index, dtype, node.input?.[at[0]], node.input?.[at[1]], `${node.opType} "${name(c)}"`);
  }
  return {
    missing: `no QuantizeLinear, DequantizeLinear or QLinear op next to "${tensor}" gives its scale and zero point`,
  };
}

/** `out[i] = (q[i] - zeroPoint) * scale` in float32, as onnxruntime's DequantizeLinear computes it. */
export function dequantizeInto(q: ArrayLike<number>, d: Dequantization, out: Float32Array, count = q.length): void {
  const { scale, zeroPoint } = d;
  const s = Math.fround(scale);
  for (let i = 0; i < count; i++) out[i] = (q[i]! - zeroPoint) * s;
}

/** Checks a dequantization record (manifest, head spec). @throws SelfxitError with `code` naming `what`. */
export function checkDequantization(d: unknown, what: string, code: 'INVALID_BUNDLE' | 'INVALID_ARGUMENT'): void {
  const v = d as Partial<Dequantization> | null;
  const range = v?.dtype === 'uint8' ? [0, 255] : [-128, 127];
  const ok =
    typeof v === 'object' &&
    v !== null &&
    isQuantDType(v.dtype) &&
    typeof v.scale === 'number' &&
    Number.isFinite(v.scale) &&
    v.scale > 0 &&
    Number.isInteger(v.zeroPoint) &&
    v.zeroPoint! >= range[0]! &&
    v.zeroPoint! <= range[1]!;
  if (!ok)
    throw new SelfxitError(
      code,
      `${what}: dequant must be { scale > 0, zeroPoint in the dtype's range, dtype uint8|int8 }`,
      {
        dequant: d,
      },
    );
}

/** The CutPoint fields of a cut of element type `dtype`: none for float, else `dequant` or `dequantMissing`. */
export function cutDequantization(
  index: GraphIndex,
  tensor: string,
  dtype: DType,
): { dequant?: Dequantization; dequantMissing?: string } {
  if (!isQuantDType(dtype)) return {};
  const f = findDequantization(index, tensor, dtype);
  return 'missing' in f ? { dequantMissing: f.missing } : { dequant: f };
}

// Low-level ONNX protobuf helpers: the onnx-proto namespace, int64 handling, dtypes, tensors, attributes, value infos.
import onnxProto from 'onnx-proto';
import type { onnx } from 'onnx-proto';

/** The generated onnx-proto message classes at runtime (protobufjs, ONNX 1.10 schema); `onnx` is its type namespace. */
export const pb: typeof onnx = onnxProto.onnx;
export type { onnx };

/** Element types selfxit knows by name (onnxruntime's tensor type names). */
export type DType =
  | 'float32'
  | 'float16'
  | 'float64'
  | 'bfloat16'
  | 'int8'
  | 'uint8'
  | 'int16'
  | 'uint16'
  | 'int32'
  | 'uint32'
  | 'int64'
  | 'uint64'
  | 'bool'
  | 'string';

const ELEM_TO_DTYPE: Readonly<Record<number, DType>> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  16: 'bfloat16',
};

const DTYPE_TO_ELEM: Readonly<Record<DType, number>> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  uint16: 4,
  int16: 5,
  int32: 6,
  int64: 7,
  string: 8,
  bool: 9,
  float16: 10,
  float64: 11,
  uint32: 12,
  uint64: 13,
  bfloat16: 16,
};

const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  float32: 4,
  float16: 2,
  float64: 8,
  bfloat16: 2,
  int8: 1,
  uint8: 1,
  int16: 2,
  uint16: 2,
  int32: 4,
  uint32: 4,
  int64: 8,
  uint64: 8,
  bool: 1,
  string: 0,
};

/** ONNX `TensorProto.DataType` number → {@link DType}; undefined for types selfxit does not name (complex). */
export function dtypeFromElemType(t: number | null | undefined): DType | undefined {
  return t == null ? undefined : ELEM_TO_DTYPE[t];
}

/** {@link DType} → ONNX `TensorProto.DataType` number. */
export function elemTypeFromDtype(d: DType): number {
  return DTYPE_TO_ELEM[d];
}

/** Bytes per element (0 for strings). */
export function dtypeBytes(d: DType): number {
  return DTYPE_BYTES[d];
}

/** protobufjs int64 (number or Long, depending on whether `long` loaded) → number. */
export function toNum(v: number | { toNumber(): number } | null | undefined): number {
  if (v == null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

// ---------------------------------------------------------------------------------------------
// Attributes

export function findAttr(node: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}

export function attrInt(node: onnx.INodeProto, name: string, dflt: number): number {
  const a = findAttr(node, name);
  return a && a.i != null ? toNum(a.i) : dflt;
}

export function attrInts(node: onnx.INodeProto, name: string): number[] | undefined {
  const a = findAttr(node, name);
  return a?.ints ? a.ints.map(toNum) : undefined;
}

const AT = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  FLOATS: 6,
  INTS: 7,
} as const;

/** Attribute value for {@link makeNode}: number → INT (use `{ f }` for floats), number[] → INTS. */
export type AttrValue = number | number[] | string | { f: number } | { floats: number[] } | onnx.ITensorProto;

function makeAttr(name: string, v: AttrValue): onnx.IAttributeProto {
  if (typeof v === 'number') return { name, type: AT.INT, i: v };
  if (typeof v === 'string') return { name, type: AT.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AT.INTS, ints: v };
  if ('f' in v && typeof v.f === 'number') return { name, type: AT.FLOAT, f: v.f };
  if ('floats' in v && Array.isArray(v.floats)) return { name, type: AT.FLOATS, floats: v.floats };
  return { name, type: AT.TENSOR, t: v as onnx.ITensorProto };
}

/** A NodeProto. `attrs`: plain numbers are INT attributes; `{ f: x }` is a FLOAT. */
export function makeNode(
  opType: string,
  inputs: readonly string[],
  outputs: readonly string[],
  attrs: Readonly<Record<string, AttrValue>> = {},
  name?: string,
  domain?: string,
): onnx.NodeProto {
  return pb.NodeProto.create({
    opType,
    input: [...inputs],
    output: [...outputs],
    attribute: Object.entries(attrs).map(([k, v]) => makeAttr(k, v)),
    ...(name ? { name } : {}),
    ...(domain ? { domain } : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// Tensors

/** Element arrays of tensor data: float16 as raw uint16 bits, bool as bytes, 64-bit integers as bigints. */
export type TypedData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

type NumberArrayConstructor =
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | Int8ArrayConstructor
  | Uint8ArrayConstructor
  | Int16ArrayConstructor
  | Uint16ArrayConstructor
  | Int32ArrayConstructor
  | Uint32ArrayConstructor;

const NUMBER_ARRAYS: Partial<Record<DType, NumberArrayConstructor>> = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  bool: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
};

/** `buffer` viewed as the typed array of `dtype` elements (see {@link typedArrayOf}). */
function viewBytes(dtype: DType, buffer: ArrayBuffer): TypedData | undefined {
  if (dtype === 'int64') return new BigInt64Array(buffer);
  if (dtype === 'uint64') return new BigUint64Array(buffer);
  const C = NUMBER_ARRAYS[dtype];
  return C ? new C(buffer) : undefined;
}

/**
 * The typed array that holds `dtype` elements: `n` zeros, or a copy of `values`. Undefined for types without one
 * (string, bfloat16, ...).
 */
export function typedArrayOf(dtype: DType, source: number | readonly number[]): TypedData | undefined {
  if (dtype === 'int64' || dtype === 'uint64') {
    const C = dtype === 'int64' ? BigInt64Array : BigUint64Array;
    return typeof source === 'number' ? new C(source) : C.from(source.map((x) => BigInt(x)));
  }
  const C = NUMBER_ARRAYS[dtype];
  if (!C) return undefined;
  return typeof source === 'number' ? new C(source) : C.from(source);
}

/** An initializer / constant tensor from typed data, stored as little-endian raw bytes. */
export function makeTensor(
  name: string,
  dtype: DType,
  dims: readonly number[],
  data: TypedData | readonly number[],
): onnx.TensorProto {
  let typed: TypedData;
  if (!Array.isArray(data) && ArrayBuffer.isView(data)) typed = data as TypedData;
  else {
    const made = typedArrayOf(dtype, data as readonly number[]);
    if (!made) throw new Error(`makeTensor: unsupported dtype ${dtype}`);
    typed = made;
  }
  const raw = new Uint8Array(typed.buffer.slice(typed.byteOffset, typed.byteOffset + typed.byteLength));
  return pb.TensorProto.create({ name, dataType: elemTypeFromDtype(dtype), dims: [...dims], rawData: raw });
}

/** Element count of a tensor proto (product of dims; 1 for scalars). */
export function tensorSize(t: onnx.ITensorProto): number {
  let n = 1;
  for (const d of t.dims ?? []) n *= toNum(d);
  return n;
}

/**
 * Numeric contents of a small integer/float tensor (for constants such as Gather indices or Slice bounds).
 * Returns undefined for external data or types it cannot read.
 */
export function tensorNumbers(t: onnx.ITensorProto): number[] | undefined {
  const dtype = dtypeFromElemType(t.dataType);
  if (!dtype) return undefined;
  const raw = t.rawData;
  if (raw && raw.length > 0) {
    const bytes = dtypeBytes(dtype);
    if (bytes === 0 || dtype === 'float16') return undefined;
    // An aligned copy of whole elements, viewed as the dtype's typed array (ONNX raw data is little-endian, as is
    // every platform onnxruntime runs on).
    // (A fresh array: a Node Buffer's slice() would be a view into a shared pool.)
    const aligned = new Uint8Array(Math.floor(raw.byteLength / bytes) * bytes);
    aligned.set(raw.subarray(0, aligned.length));
    const view = viewBytes(dtype, aligned.buffer);
    return view ? Array.from(view as ArrayLike<number | bigint>, (x) => Number(x)) : undefined;
  }
  if (t.floatData?.length) return [...t.floatData];
  if (t.int32Data?.length) return [...t.int32Data];
  if (t.int64Data?.length) return t.int64Data.map(toNum);
  if (t.doubleData?.length) return [...t.doubleData];
  if (t.uint64Data?.length) return t.uint64Data.map(toNum);
  return tensorSize(t) === 0 ? [] : undefined;
}

/** Byte size of a tensor's payload (raw or typed fields). */
export function tensorBytes(t: onnx.ITensorProto): number {
  if (t.rawData && t.rawData.length > 0) return t.rawData.length;
  const dtype = dtypeFromElemType(t.dataType);
  return dtype ? tensorSize(t) * dtypeBytes(dtype) : 0;
}

// ---------------------------------------------------------------------------------------------
// Value infos

/** A tensor ValueInfoProto; string dims are symbolic (`dim_param`), numbers fixed. `shape` undefined = unknown rank. */
export function makeValueInfo(
  name: string,
  dtype: DType | undefined,
  shape?: readonly (number | string)[],
): onnx.ValueInfoProto {
  if (!dtype) return pb.ValueInfoProto.create({ name });
  const tensorType: onnx.TypeProto.ITensor = { elemType: elemTypeFromDtype(dtype) };
  if (shape) tensorType.shape = { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  return pb.ValueInfoProto.create({ name, type: { tensorType } });
}

/** Dtype and shape stored in a ValueInfoProto (shape undefined when the rank is unknown; unnamed unknown dims become '?'). */
export function readValueInfo(vi: onnx.IValueInfoProto): {
  dtype: DType | undefined;
  shape: (number | string)[] | undefined;
} {
  const tt = vi.type?.tensorType;
  const dtype = dtypeFromElemType(tt?.elemType);
  const dims = tt?.shape?.dim;
  const shape = tt?.shape
    ? (dims ?? []).map((d) => (d.dimValue != null ? toNum(d.dimValue) : d.dimParam || '?'))
    : undefined;
  return { dtype, shape };
}

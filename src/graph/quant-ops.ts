// Which quantized ops (QuantizeLinear, DequantizeLinear, QLinear*, ConvInteger, …) an ONNX model holds, read from its
// bytes' protobuf wire format without decoding the model: node op types only, initializers skipped by their length.

/**
 * Op types that compute on int8/uint8 tensors or convert to and from them (besides every `QLinear*` op). Not listed:
 * com.microsoft MatMulNBits and GatherBlockQuantized (weight-only 4/8-bit blocks of language models; onnxruntime-web runs
 * them on WebGPU with its own kernels, and image classifiers of this SDK do not use them).
 */
const QUANTIZED_OPS: ReadonlySet<string> = new Set([
  'QuantizeLinear',
  'DequantizeLinear',
  'DynamicQuantizeLinear',
  'ConvInteger',
  'MatMulInteger',
  // onnxruntime's com.microsoft ops
  'QGemm',
  'QAttention',
  'DynamicQuantizeMatMul',
  'MatMulIntegerToFloat',
  'DynamicQuantizeLSTM',
  'QEmbedLayerNormalization',
]);

/** Whether `op` is an op type of quantized arithmetic ({@link QUANTIZED_OPS}, `QLinear*`). */
export const isQuantizedOp = (op: string): boolean => QUANTIZED_OPS.has(op) || op.startsWith('QLinear');

/**
 * Deepest nesting of subgraphs (If/Loop/Scan bodies) read; a model nested deeper is reported as quantized
 * ({@link UNKNOWN_DEPTH}) rather than read on: the conservative verdict (WASM), and no stack overflow.
 */
export const MAX_SUBGRAPH_DEPTH = 64;
/** The op type reported for a model whose subgraphs nest deeper than {@link MAX_SUBGRAPH_DEPTH}. */
export const UNKNOWN_DEPTH = `(subgraphs nested over ${MAX_SUBGRAPH_DEPTH} deep)`;

/** Field numbers of onnx.proto that lead to node op types (AttributeProto g/graphs: If/Loop/Scan bodies). */
const FIELD = {
  modelGraph: 7,
  modelFunctions: 25,
  functionNode: 7,
  graphNode: 1,
  nodeOpType: 4,
  nodeAttribute: 5,
  attrGraph: 6,
  attrGraphs: 11,
} as const;

/**
 * Calls `each(field, start, end)` for every length-delimited field of the message in `b[start, end)`, skipping the
 * others. Stops at the first malformed field (a truncated value or a wire type ONNX does not use).
 */
function lengthDelimited(
  b: Uint8Array,
  start: number,
  end: number,
  each: (field: number, start: number, end: number) => void,
): void {
  let p = start;
  /** The varint at `p` (advancing it), or -1 when it runs past `end` or over 10 bytes. */
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (let n = 0; n < 10 && p < end; n++) {
      const byte = b[p++]!;
      v += (byte & 0x7f) * mul;
      if (byte < 0x80) return v;
      mul *= 128;
    }
    return -1;
  };
  while (p < end) {
    const key = varint();
    if (key < 0) return;
    const wire = key % 8;
    if (wire === 0) {
      if (varint() < 0) return;
    } else if (wire === 1 || wire === 5) p += wire === 1 ? 8 : 4;
    else if (wire === 2) {
      const len = varint();
      if (len < 0 || p + len > end) return;
      each(Math.floor(key / 8), p, p + len);
      p += len;
    } else return;
  }
}

/**
 * The quantized op types ({@link isQuantizedOp}) of the ONNX model `bytes`, sorted: the main graph's nodes, those of
 * subgraphs (If/Loop/Scan bodies, at any depth) and of model-local functions. Empty for a float model. Reads only the
 * node structure (no decode: a few microseconds per node); never throws (a malformed model reads as far as it goes;
 * subgraphs nested deeper than {@link MAX_SUBGRAPH_DEPTH} give {@link UNKNOWN_DEPTH}: treated as quantized).
 */
export function quantizedOps(bytes: Uint8Array): string[] {
  const found = new Set<string>();
  const text = new TextDecoder();
  const graph = (start: number, end: number, depth: number): void => {
    if (depth > MAX_SUBGRAPH_DEPTH) found.add(UNKNOWN_DEPTH);
    else
      lengthDelimited(bytes, start, end, (f, s, e) => {
        if (f === FIELD.graphNode) node(s, e, depth);
      });
  };
  const node = (start: number, end: number, depth: number): void =>
    lengthDelimited(bytes, start, end, (f, s, e) => {
      if (f === FIELD.nodeOpType) {
        const op = text.decode(bytes.subarray(s, e));
        if (isQuantizedOp(op)) found.add(op);
      } else if (f === FIELD.nodeAttribute)
        lengthDelimited(bytes, s, e, (af, as, ae) => {
          if (af === FIELD.attrGraph || af === FIELD.attrGraphs) graph(as, ae, depth + 1);
        });
    });
  lengthDelimited(bytes, 0, bytes.length, (f, s, e) => {
    if (f === FIELD.modelGraph) graph(s, e, 0);
    else if (f === FIELD.modelFunctions)
      lengthDelimited(bytes, s, e, (ff, fs, fe) => {
        if (ff === FIELD.functionNode) node(fs, fe, 0);
      });
  });
  return [...found].sort();
}

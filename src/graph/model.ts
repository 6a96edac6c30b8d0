// The OnnxModel wrapper: decode/encode ONNX bytes with sanity checks, and the graph's real inputs and outputs.
import { SelfxitError } from '../errors.js';
import { makeValueInfo, pb, readValueInfo, type DType, type onnx } from './proto.js';

/** A decoded ONNX model. Treat `proto` as read-only: graph functions return new models and share unchanged parts. */
export interface OnnxModel {
  readonly proto: onnx.ModelProto;
}

/** Name, element type and shape of a tensor. Symbolic dims are strings (e.g. `'batch'`). */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: (number | string)[];
}

/**
 * Decodes ONNX protobuf bytes.
 * @throws SelfxitError `INVALID_MODEL` when the bytes are not a protobuf ModelProto, are truncated, or hold no graph,
 *   no node, no output or no opset import; `UNSUPPORTED_MODEL` when a tensor (initializer, Constant attribute, in a
 *   subgraph too) keeps its data in an external file.
 */
export function decodeModel(bytes: Uint8Array): OnnxModel {
  let proto: onnx.ModelProto;
  try {
    proto = pb.ModelProto.decode(bytes);
  } catch (e) {
    throw new SelfxitError(
      'INVALID_MODEL',
      `Not a valid ONNX model: the protobuf could not be decoded (${e instanceof Error ? e.message : String(e)}); the file may be truncated or not ONNX`,
      { bytes: bytes.byteLength },
      { cause: e },
    );
  }
  const g = proto.graph;
  if (!g)
    throw new SelfxitError('INVALID_MODEL', 'Not a valid ONNX model: it has no graph', { bytes: bytes.byteLength });
  if (!g.node || g.node.length === 0)
    throw new SelfxitError('INVALID_MODEL', 'Not a valid ONNX model: the graph has no nodes');
  if (!g.output || g.output.length === 0)
    throw new SelfxitError('INVALID_MODEL', 'Not a valid ONNX model: the graph has no outputs');
  if (!proto.opsetImport || proto.opsetImport.length === 0) {
    throw new SelfxitError('INVALID_MODEL', 'Not a valid ONNX model: it imports no opset (truncated or not ONNX?)');
  }
  for (const n of g.node) {
    if (typeof n.opType !== 'string' || n.opType === '' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(n.opType)) {
      throw new SelfxitError(
        'INVALID_MODEL',
        `Not a valid ONNX model: a node has the invalid op type ${JSON.stringify(n.opType)}`,
      );
    }
  }
  for (const { tensor, where } of graphTensors(g)) {
    if (tensor.dataLocation === pb.TensorProto.DataLocation.EXTERNAL || (tensor.externalData ?? []).length > 0) {
      const file = tensor.externalData?.find((e) => e.key === 'location')?.value;
      throw new SelfxitError(
        'UNSUPPORTED_MODEL',
        `Tensor "${tensor.name ?? ''}" (${where}) keeps its data in an external file${file ? ` ("${file}")` : ''}: selfxit reads one self-contained .onnx file. Re-save the model with the data inline (Python: onnx.save_model(onnx.load("model.onnx"), "inline.onnx", save_as_external_data=False); models up to 2 GB)`,
        { tensor: tensor.name ?? '', ...(file ? { location: file } : {}) },
      );
    }
  }
  return { proto };
}

/** A tensor held in a graph, and where (for messages). */
export interface GraphTensor {
  readonly tensor: onnx.ITensorProto;
  readonly where: string;
  /** True for a sparse tensor's values or indices. */
  readonly sparse: boolean;
}

/**
 * Every tensor a graph holds: initializers, sparse initializers (values and indices), Constant-style node attributes
 * (`t`, `tensors`, `sparse_tensor`), recursively in subgraphs (If/Loop/Scan bodies).
 */
export function* graphTensors(g: onnx.IGraphProto, path = 'graph'): Generator<GraphTensor> {
  for (const t of g.initializer ?? []) yield { tensor: t, where: `initializer of ${path}`, sparse: false };
  for (const sp of g.sparseInitializer ?? [])
    for (const t of [sp.values, sp.indices])
      if (t) yield { tensor: t, where: `sparse_initializer of ${path}`, sparse: true };
  for (const n of g.node ?? []) {
    const node = `node "${n.name || n.opType}" in ${path}`;
    for (const a of n.attribute ?? []) {
      const at = `attribute "${a.name}" of ${node}`;
      if (a.t) yield { tensor: a.t, where: at, sparse: false };
      for (const t of a.tensors ?? []) yield { tensor: t, where: at, sparse: false };
      for (const sp of [a.sparseTensor, ...(a.sparseTensors ?? [])])
        for (const t of sp ? [sp.values, sp.indices] : []) if (t) yield { tensor: t, where: at, sparse: true };
      for (const sub of [a.g, ...(a.graphs ?? [])])
        if (sub) yield* graphTensors(sub, `subgraph "${a.name}" of ${node}`);
    }
  }
}

/** Encodes a model to ONNX protobuf bytes. */
export function encodeModel(model: OnnxModel): Uint8Array {
  return pb.ModelProto.encode(model.proto).finish();
}

/** Graph input value infos that are not initializers (older IR versions list initializers as inputs too). */
export function realInputProtos(m: OnnxModel): onnx.IValueInfoProto[] {
  const g = m.proto.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name ?? ''));
  return (g.input ?? []).filter((i) => !inits.has(i.name ?? ''));
}

function toInfo(vi: onnx.IValueInfoProto, what: string): TensorInfo {
  const { dtype, shape } = readValueInfo(vi);
  if (!dtype) {
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `Graph ${what} "${vi.name}" is not a tensor of a supported element type`,
      { tensor: vi.name },
    );
  }
  return { name: vi.name ?? '', dtype, shape: shape ?? [] };
}

/** The model's real inputs (initializers excluded), with symbolic dims as strings. */
export function graphInputs(m: OnnxModel): TensorInfo[] {
  return realInputProtos(m).map((vi) => toInfo(vi, 'input'));
}

/** The model's outputs, with symbolic dims as strings. */
export function graphOutputs(m: OnnxModel): TensorInfo[] {
  return (m.proto.graph!.output ?? []).map((vi) => toInfo(vi, 'output'));
}

/** A new model sharing `base`'s metadata, opsets and IR version, with the given graph. */
export function withGraph(base: OnnxModel, graph: onnx.IGraphProto): OnnxModel {
  const p = base.proto;
  return {
    proto: pb.ModelProto.create({
      irVersion: p.irVersion,
      opsetImport: p.opsetImport,
      producerName: p.producerName,
      producerVersion: p.producerVersion,
      domain: p.domain,
      modelVersion: p.modelVersion,
      docString: p.docString,
      metadataProps: p.metadataProps,
      functions: p.functions,
      graph,
    }),
  };
}

/** A model whose graph outputs are only `names` (in that order); nodes only the dropped outputs needed become dead. */
export function withOutputs(m: OnnxModel, names: readonly string[]): OnnxModel {
  const g = m.proto.graph!;
  const byName = new Map((g.output ?? []).map((o) => [o.name ?? '', o]));
  const output = names.map((n) => {
    const o = byName.get(n);
    if (!o) throw new SelfxitError('INVALID_ARGUMENT', `"${n}" is not an output of the model`, { tensor: n });
    return o;
  });
  return withGraph(m, { ...g, output });
}

/**
 * A model whose input `name` has the dims `shape` (same rank; a number fixes that axis, a string keeps or names it
 * symbolic). Value infos of other tensors are left as they are.
 */
export function withInputShape(m: OnnxModel, name: string, shape: readonly (number | string)[]): OnnxModel {
  const g = m.proto.graph!;
  let found = false;
  const input = (g.input ?? []).map((vi) => {
    if (vi.name !== name) return vi;
    const { dtype, shape: old } = readValueInfo(vi);
    if (!dtype || old?.length !== shape.length)
      throw new SelfxitError('INVALID_ARGUMENT', `cannot give input "${name}" the shape [${shape.join(', ')}]`, {
        tensor: name,
      });
    found = true;
    return makeValueInfo(name, dtype, shape);
  });
  if (!found) throw new SelfxitError('INVALID_ARGUMENT', `"${name}" is not an input of the model`, { tensor: name });
  return withGraph(m, { ...g, input });
}

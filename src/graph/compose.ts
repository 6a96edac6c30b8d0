// Composing separate ONNX models into one graph: renaming a (sub)graph's tensors and nodes into a namespace, and
// merging the models' opsets, local functions and IR versions (differences that cannot be unified throw).
import { SelfxitError } from '../errors.js';
import type { OnnxModel } from './model.js';
import { pb, toNum, type onnx } from './proto.js';

function invalid(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_BUNDLE', `Cannot compose the segments: ${msg}`, details);
}

/** Renames every tensor and node of a (sub)graph, recursing into If/Loop/Scan bodies. */
export function renameGraph(g: onnx.IGraphProto, rn: (n: string) => string, nodePrefix: string): onnx.GraphProto {
  const vi = (v: onnx.IValueInfoProto): onnx.ValueInfoProto =>
    pb.ValueInfoProto.create({ ...v, name: rn(v.name ?? '') });
  const tensor = (t: onnx.ITensorProto): onnx.TensorProto => pb.TensorProto.create({ ...t, name: rn(t.name ?? '') });
  return pb.GraphProto.create({
    ...g,
    node: (g.node ?? []).map((n) => renameNode(n, rn, nodePrefix)),
    input: (g.input ?? []).map(vi),
    output: (g.output ?? []).map(vi),
    valueInfo: (g.valueInfo ?? []).map(vi),
    initializer: (g.initializer ?? []).map(tensor),
    sparseInitializer: (g.sparseInitializer ?? []).map((s) =>
      pb.SparseTensorProto.create({ ...s, values: s.values ? tensor(s.values) : s.values }),
    ),
    quantizationAnnotation: (g.quantizationAnnotation ?? []).map((q) =>
      pb.TensorAnnotation.create({ ...q, tensorName: rn(q.tensorName ?? '') }),
    ),
  });
}

function renameNode(n: onnx.INodeProto, rn: (n: string) => string, nodePrefix: string): onnx.NodeProto {
  return pb.NodeProto.create({
    ...n,
    name: n.name ? `${nodePrefix}${n.name}` : n.name,
    input: (n.input ?? []).map(rn),
    output: (n.output ?? []).map(rn),
    attribute: (n.attribute ?? []).map((a) =>
      a.g || a.graphs?.length
        ? pb.AttributeProto.create({
            ...a,
            g: a.g ? renameGraph(a.g, rn, nodePrefix) : a.g,
            graphs: (a.graphs ?? []).map((sg) => renameGraph(sg, rn, nodePrefix)),
          })
        : a,
    ),
  });
}

/**
 * Opsets, model-local functions and IR version (at least 4) of models to be composed into one.
 * @throws SelfxitError `INVALID_BUNDLE` for an opset imported at two versions, a function defined two ways, or no
 *   default-domain opset.
 */
export function mergeModelHeaders(models: readonly OnnxModel[]): {
  opsets: onnx.IOperatorSetIdProto[];
  functions: onnx.IFunctionProto[];
  irVersion: number;
} {
  const opsets = new Map<string, number>();
  const functions = new Map<string, { f: onnx.IFunctionProto; bytes: string }>();
  let irVersion = 4;
  models.forEach((m, i) => {
    irVersion = Math.max(irVersion, toNum(m.proto.irVersion));
    for (const o of m.proto.opsetImport ?? []) {
      const domain = o.domain === 'ai.onnx' ? '' : (o.domain ?? '');
      const v = toNum(o.version);
      const had = opsets.get(domain);
      if (had !== undefined && had !== v)
        invalid(`segment ${i} imports opset ${domain || 'ai.onnx'} ${v}, an earlier segment ${had}`, { segment: i });
      opsets.set(domain, v);
    }
    for (const f of m.proto.functions ?? []) {
      const key = `${f.domain ?? ''}:${f.name ?? ''}`;
      const bytes = pb.FunctionProto.encode(f).finish().join(',');
      const had = functions.get(key);
      if (had && had.bytes !== bytes)
        invalid(`segment ${i} defines function ${key} unlike an earlier segment`, { segment: i, function: key });
      functions.set(key, { f, bytes });
    }
  });
  if (!opsets.has('')) invalid('the segments import no default (ai.onnx) opset');
  return {
    opsets: [...opsets].map(([domain, version]) => ({ domain, version })),
    functions: [...functions.values()].map((x) => x.f),
    irVersion,
  };
}

/** A model of `graph` with the composed models' headers ({@link mergeModelHeaders}), produced by selfxit. */
export function composedModel(headers: ReturnType<typeof mergeModelHeaders>, graph: onnx.IGraphProto): OnnxModel {
  return {
    proto: pb.ModelProto.create({
      irVersion: headers.irVersion,
      opsetImport: headers.opsets,
      producerName: 'selfxit',
      functions: headers.functions,
      graph,
    }),
  };
}

// Splits a model at cut tensors into standalone segment models, and adds extra graph outputs (feature extraction).
import { SelfxitError } from '../errors.js';
import { sweepCuts, validateCuts } from './cuts.js';
import { inferDtypes } from './dtypes.js';
import { indexGraph, type GraphIndex } from './graph-index.js';
import { withGraph, type OnnxModel } from './model.js';
import { makeValueInfo, pb, readValueInfo, type DType, type onnx } from './proto.js';

/** Symbolic name of the batch dimension in every segment's inputs and outputs. */
export const BATCH_DIM = 'batch';

/** Shapes and element types to write on segment inputs/outputs (e.g. from {@link analyzeModel}). */
export interface TensorTypes {
  /** Concrete shapes (any batch; dim 0 is replaced by the symbolic `'batch'`). */
  readonly shapes?: ReadonlyMap<string, readonly number[]>;
  readonly dtypes?: ReadonlyMap<string, DType>;
}

/** `[batch, ...]`; a scalar or rank-1 shape (a batch-1 model's `[classes]` output) is kept as it is. */
function withBatch(shape: readonly (number | string)[] | undefined): (number | string)[] | undefined {
  if (!shape) return undefined;
  return shape.length <= 1 ? [...shape] : [BATCH_DIM, ...shape.slice(1)];
}

/** Typed value info for a boundary tensor: explicit types first, then the model's value_info, then static inference. */
function boundaryInfo(
  name: string,
  types: TensorTypes | undefined,
  inferred: Map<string, DType>,
  declared: Map<string, onnx.IValueInfoProto>,
): onnx.ValueInfoProto {
  const vi = declared.get(name);
  const fromVi = vi ? readValueInfo(vi) : undefined;
  const dtype = types?.dtypes?.get(name) ?? fromVi?.dtype ?? inferred.get(name);
  if (!dtype) {
    throw new SelfxitError(
      'SHAPE_UNKNOWN',
      `Element type of tensor "${name}" could not be determined; pass shapes/dtypes from analyzeModel()`,
      { tensor: name },
    );
  }
  // A rank-1 tensor has no batch axis to make symbolic: the model's own declaration (e.g. `[classes]`) comes first.
  const shape = fromVi?.shape?.length === 1 ? fromVi.shape : (types?.shapes?.get(name) ?? fromVi?.shape);
  return makeValueInfo(name, dtype, withBatch(shape));
}

/** Per-model lookups shared by all segments (keeps splitting linear in graph size per segment). */
interface GraphLookup {
  readonly inferred: Map<string, DType>;
  readonly declared: Map<string, onnx.IValueInfoProto>;
  readonly initOrder: Map<string, number>;
  readonly valueInfo: Map<string, onnx.IValueInfoProto>;
}

function declaredInfos(g: onnx.IGraphProto): Map<string, onnx.IValueInfoProto> {
  const m = new Map<string, onnx.IValueInfoProto>();
  for (const vi of [...(g.valueInfo ?? []), ...(g.input ?? []), ...(g.output ?? [])]) if (vi.name) m.set(vi.name, vi);
  return m;
}

/**
 * Splits the model at `cuts` (in topological order) into `cuts.length + 1` standalone models:
 * graph input → cut 1, cut 1 → cut 2, …, last cut → graph outputs. Each segment has one input and (except the
 * last) one output, first dim symbolic `'batch'`, typed from `types` (else value_info, else static inference;
 * shapes may then be left rank-unknown), only the initializers it reads, and the original opsets and metadata.
 * Constant and batch-size shape side paths are recomputed inside each segment that needs them; a
 * `Shape(x) → Gather(0)` path whose `x` lies before the segment is rewritten to read `Shape(<segment input>)`.
 * @throws SelfxitError `INVALID_CUT` naming a tensor that is not a cut; `INVALID_ARGUMENT` when cuts repeat or are
 *   out of order.
 */
export function splitModel(m: OnnxModel, cuts: readonly string[], types?: TensorTypes): OnnxModel[] {
  const sweep = sweepCuts(m);
  const index = sweep.index;
  const positions = validateCuts(sweep, cuts);
  const inferred = inferDtypes(index);
  const declared = declaredInfos(index.graph);
  const lookup: GraphLookup = { inferred, declared, initOrder: new Map(), valueInfo: new Map() };
  (index.graph.initializer ?? []).forEach((t, i) => lookup.initOrder.set(t.name ?? '', i));
  for (const vi of index.graph.valueInfo ?? []) if (vi.name) lookup.valueInfo.set(vi.name, vi);
  const segments: OnnxModel[] = [];
  for (let k = 0; k <= cuts.length; k++) {
    const inputName = k === 0 ? index.input : cuts[k - 1]!;
    const inPos = k === 0 ? -1 : positions[k - 1]!;
    const outputs = k === cuts.length ? [...index.outputs] : [cuts[k]!];
    segments.push(buildSegment(m, index, k, inputName, inPos, outputs, types, lookup));
  }
  return segments;
}

function buildSegment(
  m: OnnxModel,
  index: GraphIndex,
  k: number,
  inputName: string,
  inPos: number,
  outputs: readonly string[],
  types: TensorTypes | undefined,
  lookup: GraphLookup,
): OnnxModel {
  const { inferred, declared } = lookup;
  const { nodes, nodeInputs, producer, initializers, kind, batchShapeNodes } = index;
  const take = new Set<number>();
  const inits = new Set<string>();
  const rewrite = new Set<number>();
  const seen = new Set<string>();
  const stack: string[] = [...outputs];
  const beforeSegment = (x: string): boolean =>
    x !== inputName && (x === index.input || (producer.get(x) ?? Infinity) <= inPos);
  while (stack.length) {
    const name = stack.pop()!;
    if (seen.has(name) || name === inputName) continue;
    seen.add(name);
    if (initializers.has(name)) {
      inits.add(name);
      continue;
    }
    const p = producer.get(name);
    if (p === undefined || (kind.get(name) === 'act' && p <= inPos)) {
      throw new SelfxitError(
        'INTERNAL',
        `Segment ${k} needs activation "${name}" from before its input "${inputName}" (cut detection bug)`,
        { tensor: name, segment: k },
      );
    }
    if (take.has(p)) continue;
    take.add(p);
    if (batchShapeNodes.has(p)) {
      const x = nodeInputs[p]![0]!;
      if (beforeSegment(x)) {
        rewrite.add(p);
        continue;
      }
    }
    for (const i of nodeInputs[p]!) stack.push(i);
  }
  const order = [...take].sort((a, b) => a - b);
  const segNodes = order.map((p) => {
    const n = nodes[p]!;
    if (!rewrite.has(p)) return n;
    return pb.NodeProto.create({ ...n, input: [inputName, ...(n.input ?? []).slice(1)] });
  });
  const produced = new Set<string>();
  for (const n of segNodes) for (const o of n.output ?? []) produced.add(o);
  const boundary = new Set([inputName, ...outputs]);
  const g = index.graph;
  const graph: onnx.IGraphProto = {
    name: `${g.name || 'graph'}_segment_${String(k).padStart(3, '0')}`,
    docString: g.docString ?? '',
    node: segNodes,
    input: [boundaryInfo(inputName, types, inferred, declared)],
    output: outputs.map((o) => boundaryInfo(o, types, inferred, declared)),
    initializer: [...inits]
      .sort((a, b) => lookup.initOrder.get(a)! - lookup.initOrder.get(b)!)
      .map((name) => initializers.get(name)!),
    valueInfo: [...produced]
      .filter((name) => !boundary.has(name) && lookup.valueInfo.has(name))
      .map((name) => lookup.valueInfo.get(name)!),
  };
  return withGraph(m, graph);
}

/**
 * A copy of the model with `tensors` added as graph outputs (after the existing ones; names already output are
 * skipped). With `shapes`, outputs are typed `[batch, ...]` using `dtypes` or static inference; without, they are
 * left untyped (onnxruntime infers them).
 * @throws SelfxitError `INVALID_ARGUMENT` when a tensor is not produced in the graph.
 */
export function withExtraOutputs(
  m: OnnxModel,
  tensors: readonly string[],
  shapes?: ReadonlyMap<string, readonly number[]>,
  dtypes?: ReadonlyMap<string, DType>,
): OnnxModel {
  const index = indexGraph(m);
  const g = index.graph;
  const have = new Set((g.output ?? []).map((o) => o.name ?? ''));
  const inferred = shapes ? inferDtypes(index) : undefined;
  const extra: onnx.IValueInfoProto[] = [];
  for (const t of tensors) {
    if (have.has(t)) continue;
    if (!index.producer.has(t) && t !== index.input && !index.initializers.has(t)) {
      throw new SelfxitError('INVALID_ARGUMENT', `Cannot output tensor "${t}": it is not produced by the graph`, {
        tensor: t,
      });
    }
    have.add(t);
    const shape = shapes?.get(t);
    const dtype = dtypes?.get(t) ?? inferred?.get(t);
    extra.push(shape && dtype ? makeValueInfo(t, dtype, withBatch(shape)) : pb.ValueInfoProto.create({ name: t }));
  }
  return withGraph(m, { ...g, output: [...(g.output ?? []), ...extra] });
}

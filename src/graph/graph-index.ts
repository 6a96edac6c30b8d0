// Indexes a model's graph once: live nodes in topological order, producers/consumers, constants, and the kind
// of every value (constant, batch-only shape value, or activation). Everything else in src/graph builds on it.
import { SelfxitError } from '../errors.js';
import type { OnnxModel } from './model.js';
import { graphTensors, realInputProtos } from './model.js';
import { attrInt, attrInts, findAttr, tensorNumbers, type onnx } from './proto.js';

/**
 * Kind of a value, which decides whether it counts when looking for cuts:
 * - `const`: computed from initializers and Constant nodes only. A segment recomputes it; never crosses a cut.
 * - `batch`: computed from constants and the *batch dimension* of activations only (e.g. torch's flatten:
 *   `Shape(x) → Gather(0) → Unsqueeze → Concat → Reshape`). Every activation of an image classifier carries the
 *   batch as dim 0, so a segment recomputes it from `Shape(<segment input>)`; never crosses a cut.
 * - `act`: anything else (depends on activation values, or on a full shape of one). Counts as crossing a cut.
 */
export type ValueKind = 'const' | 'batch' | 'act';

export interface GraphIndex {
  readonly model: OnnxModel;
  readonly graph: onnx.IGraphProto;
  /** The single real graph input. */
  readonly input: string;
  readonly outputs: readonly string[];
  /** Nodes that contribute to an output, in topological order. Indices below refer to this array. */
  readonly nodes: readonly onnx.INodeProto[];
  /** Inputs of each node: explicit (non-empty) plus outer-scope names its subgraphs read. */
  readonly nodeInputs: readonly (readonly string[])[];
  /** Value → index of its producing node (absent for the graph input and initializers). */
  readonly producer: ReadonlyMap<string, number>;
  /** Value → indices of nodes that read it. */
  readonly consumers: ReadonlyMap<string, readonly number[]>;
  readonly initializers: ReadonlyMap<string, onnx.ITensorProto>;
  readonly kind: ReadonlyMap<string, ValueKind>;
  /** Shape nodes of activations whose output is `batch`: they may read any activation (segments rewrite them). */
  readonly batchShapeNodes: ReadonlySet<number>;
  /** Default-domain opset version. */
  readonly opset: number;
}

/** Outer-scope names a subgraph reads (used by If/Loop/Scan bodies). */
function outerRefs(g: onnx.IGraphProto, out: Set<string>): void {
  const local = new Set<string>();
  for (const i of g.input ?? []) local.add(i.name ?? '');
  for (const t of g.initializer ?? []) local.add(t.name ?? '');
  for (const n of g.node ?? []) for (const o of n.output ?? []) local.add(o);
  const inner = new Set<string>();
  for (const n of g.node ?? []) {
    for (const i of n.input ?? []) if (i) inner.add(i);
    for (const a of n.attribute ?? []) {
      if (a.g) outerRefs(a.g, inner);
      for (const sg of a.graphs ?? []) outerRefs(sg, inner);
    }
  }
  for (const o of g.output ?? []) if (o.name) inner.add(o.name);
  for (const name of inner) if (!local.has(name)) out.add(name);
}

function inputsOf(n: onnx.INodeProto): string[] {
  const names = (n.input ?? []).filter((s) => s !== '');
  const sub = new Set<string>();
  for (const a of n.attribute ?? []) {
    if (a.g) outerRefs(a.g, sub);
    for (const g of a.graphs ?? []) outerRefs(g, sub);
  }
  for (const s of sub) if (!names.includes(s)) names.push(s);
  return names;
}

/** Min-heap of numbers (node indices), for a stable Kahn topological sort. */
class MinHeap {
  private readonly a: number[] = [];
  get size(): number {
    return this.a.length;
  }
  push(v: number): void {
    const a = this.a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= v) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = v;
  }
  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && a[r]! < a[l]! ? r : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

const cache = new WeakMap<onnx.ModelProto, GraphIndex>();

/**
 * Indexes the model (cached per model object). Linear in graph size, plus a heap sort when the stored node
 * order is not topological.
 * @throws SelfxitError `UNSUPPORTED_MODEL` unless the model has exactly one real input, or when it holds a sparse
 *   tensor (sparse_initializer, a Constant's `sparse_value`; in subgraphs too);
 *   `INVALID_MODEL` when a node reads a tensor nothing produces, a tensor has two producers, or the graph has a cycle.
 */
export function indexGraph(model: OnnxModel): GraphIndex {
  const hit = cache.get(model.proto);
  if (hit) return hit;
  const g = model.proto.graph;
  if (!g) throw new SelfxitError('INVALID_MODEL', 'Not a valid ONNX model: it has no graph');
  const realInputs = realInputProtos(model);
  if (realInputs.length !== 1) {
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `selfxit supports models with exactly one input; this model has ${realInputs.length} (${realInputs.map((i) => i.name).join(', ') || 'none'})`,
      { inputs: realInputs.map((i) => i.name) },
    );
  }
  const input = realInputs[0]!.name ?? '';
  for (const { tensor, where, sparse } of graphTensors(g)) {
    if (!sparse) continue;
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `The model holds a sparse tensor (${where}${tensor.name ? `, "${tensor.name}"` : ''}): selfxit reads dense tensors only. Store it as a dense initializer (Python: onnx.numpy_helper.from_array of its dense values)`,
      { where },
    );
  }
  const outputs = (g.output ?? []).map((o) => o.name ?? '');
  const initializers = new Map<string, onnx.ITensorProto>();
  for (const t of g.initializer ?? []) initializers.set(t.name ?? '', t);
  const all = g.node ?? [];

  // Producers over all nodes (original order).
  const prodAll = new Map<string, number>();
  all.forEach((n, i) => {
    for (const o of n.output ?? []) {
      if (!o) continue;
      if (prodAll.has(o) || o === input) {
        throw new SelfxitError('INVALID_MODEL', `Invalid ONNX graph: tensor "${o}" is produced twice`, { tensor: o });
      }
      prodAll.set(o, i);
    }
  });
  const inAll = all.map(inputsOf);
  const available = (name: string): boolean => name === input || initializers.has(name) || prodAll.has(name);
  inAll.forEach((ins, i) => {
    for (const name of ins) {
      if (!available(name)) {
        const n = all[i]!;
        throw new SelfxitError(
          'INVALID_MODEL',
          `Invalid ONNX graph: node "${n.name || n.opType}" reads tensor "${name}" that nothing produces`,
          { tensor: name, node: n.name },
        );
      }
    }
  });
  for (const o of outputs) {
    if (!available(o))
      throw new SelfxitError('INVALID_MODEL', `Invalid ONNX graph: output "${o}" is not produced by any node`, {
        tensor: o,
      });
  }

  // Live nodes: those an output depends on.
  const live = new Uint8Array(all.length);
  const stack: number[] = [];
  const visitValue = (name: string): void => {
    const p = prodAll.get(name);
    if (p !== undefined && !live[p]) {
      live[p] = 1;
      stack.push(p);
    }
  };
  for (const o of outputs) visitValue(o);
  while (stack.length) for (const name of inAll[stack.pop()!]!) visitValue(name);

  // Topological order: stored order when valid, else Kahn's algorithm preferring stored order.
  let orderAll: number[] = [];
  let stored = true;
  {
    const seen = new Set<string>();
    for (let i = 0; i < all.length && stored; i++) {
      if (!live[i]) continue;
      for (const name of inAll[i]!)
        if (prodAll.has(name) && !seen.has(name)) {
          stored = false;
          break;
        }
      for (const o of all[i]!.output ?? []) seen.add(o);
      orderAll.push(i);
    }
  }
  if (!stored) {
    orderAll = [];
    const indeg = new Int32Array(all.length);
    const users = new Map<number, number[]>();
    for (let i = 0; i < all.length; i++) {
      if (!live[i]) continue;
      for (const name of new Set(inAll[i])) {
        const p = prodAll.get(name);
        if (p === undefined) continue;
        indeg[i]!++;
        let u = users.get(p);
        if (!u) users.set(p, (u = []));
        u.push(i);
      }
    }
    const heap = new MinHeap();
    for (let i = 0; i < all.length; i++) if (live[i] && indeg[i] === 0) heap.push(i);
    while (heap.size) {
      const i = heap.pop();
      orderAll.push(i);
      for (const u of users.get(i) ?? []) if (--indeg[u]! === 0) heap.push(u);
    }
    let liveCount = 0;
    for (let i = 0; i < all.length; i++) liveCount += live[i]!;
    if (orderAll.length !== liveCount)
      throw new SelfxitError('INVALID_MODEL', 'Invalid ONNX graph: it contains a cycle');
  }

  const nodes = orderAll.map((i) => all[i]!);
  const nodeInputs = orderAll.map((i) => inAll[i]!);
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => {
    for (const o of n.output ?? []) if (o) producer.set(o, i);
  });
  const consumers = new Map<string, number[]>();
  nodeInputs.forEach((ins, i) => {
    for (const name of ins) {
      let c = consumers.get(name);
      if (!c) consumers.set(name, (c = []));
      if (c[c.length - 1] !== i) c.push(i);
    }
  });

  const opset = toOpset(model);
  const constTensor = (name: string): onnx.ITensorProto | undefined =>
    constantTensor(initializers, producer, nodes, name);
  const constNums = (name: string | undefined): number[] | undefined => {
    if (!name) return undefined;
    const t = constTensor(name);
    return t ? tensorNumbers(t) : undefined;
  };
  const isZeroList = (v: number[] | undefined): boolean => v !== undefined && v.length === 1 && v[0] === 0;

  /** True when every use of a Shape output only takes element 0 (the batch size). */
  const extractsBatchOnly = (shapeNode: onnx.INodeProto): boolean => {
    const start = attrInt(shapeNode, 'start', 0);
    const endAttr = findAttr(shapeNode, 'end');
    if (start === 0 && endAttr && attrInt(shapeNode, 'end', 0) === 1) return true;
    if (start !== 0) return false;
    const out = shapeNode.output?.[0];
    if (!out || outputs.includes(out)) return false;
    const uses = consumers.get(out) ?? [];
    if (uses.length === 0) return false;
    return uses.every((ci) => {
      const c = nodes[ci]!;
      if ((c.domain ?? '') !== '') return false;
      const ins = c.input ?? [];
      if (ins[0] !== out || ins.slice(1).includes(out)) return false;
      if (c.opType === 'Gather') return attrInt(c, 'axis', 0) === 0 && isZeroList(constNums(ins[1]));
      if (c.opType === 'Slice') {
        if (opset < 10) {
          const axes = attrInts(c, 'axes');
          return (
            isZeroList(attrInts(c, 'starts')) && (attrInts(c, 'ends') ?? [])[0] === 1 && (!axes || isZeroList(axes))
          );
        }
        const ends = constNums(ins[2]);
        const axes = ins[3] ? constNums(ins[3]) : [0];
        const steps = ins[4] ? constNums(ins[4]) : [1];
        return (
          isZeroList(constNums(ins[1])) &&
          ends?.length === 1 &&
          ends[0] === 1 &&
          isZeroList(axes) &&
          steps?.length === 1 &&
          steps[0] === 1
        );
      }
      return false;
    });
  };

  const kind = new Map<string, ValueKind>();
  kind.set(input, 'act');
  for (const name of initializers.keys()) if (name !== input) kind.set(name, 'const');
  const batchShapeNodes = new Set<number>();
  nodes.forEach((n, i) => {
    let k: ValueKind;
    const defaultDomain = (n.domain ?? '') === '' || n.domain === 'ai.onnx';
    if (n.opType === 'Constant' && defaultDomain) k = 'const';
    else {
      let anyAct = false;
      let anyBatch = false;
      for (const name of nodeInputs[i]!) {
        const ki = kind.get(name) ?? 'act';
        if (ki === 'act') anyAct = true;
        else if (ki === 'batch') anyBatch = true;
      }
      if (n.opType === 'Shape' && defaultDomain && anyAct) {
        k = extractsBatchOnly(n) ? 'batch' : 'act';
        if (k === 'batch') batchShapeNodes.add(i);
      } else k = anyAct ? 'act' : anyBatch ? 'batch' : 'const';
    }
    for (const o of n.output ?? []) if (o) kind.set(o, k);
  });

  const index: GraphIndex = {
    model,
    graph: g,
    input,
    outputs,
    nodes,
    nodeInputs,
    producer,
    consumers,
    initializers,
    kind,
    batchShapeNodes,
    opset,
  };
  cache.set(model.proto, index);
  return index;
}

/** Default-domain ("" or "ai.onnx") opset version of a model (0 when absent). */
export function toOpset(model: OnnxModel): number {
  const imp = (model.proto.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  if (!imp || imp.version == null) return 0;
  return typeof imp.version === 'number' ? imp.version : imp.version.toNumber();
}

function constantTensor(
  initializers: ReadonlyMap<string, onnx.ITensorProto>,
  producer: ReadonlyMap<string, number>,
  nodes: readonly onnx.INodeProto[],
  name: string,
): onnx.ITensorProto | undefined {
  const init = initializers.get(name);
  if (init) return init;
  const p = producer.get(name);
  const n = p === undefined ? undefined : nodes[p];
  if (!n || n.opType !== 'Constant' || ((n.domain ?? '') !== '' && n.domain !== 'ai.onnx')) return undefined;
  const v = findAttr(n, 'value');
  if (v?.t) return v.t;
  const ints = attrInts(n, 'value_ints');
  if (ints) return { dataType: 7, dims: [ints.length], int64Data: ints };
  if (findAttr(n, 'value_int')) return { dataType: 7, dims: [], int64Data: [attrInt(n, 'value_int', 0)] };
  return undefined;
}

/** The tensor of a constant value: an initializer or a Constant node's `value` / `value_int(s)`. */
export function constTensorOf(index: GraphIndex, name: string): onnx.ITensorProto | undefined {
  return constantTensor(index.initializers, index.producer, index.nodes, name);
}

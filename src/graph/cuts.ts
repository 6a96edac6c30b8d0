// Finds cut points with one linear sweep over the topological order, counting live activation tensors.
import { SelfxitError } from '../errors.js';
import { indexGraph, type GraphIndex } from './graph-index.js';
import type { OnnxModel } from './model.js';

export interface CutSweep {
  readonly index: GraphIndex;
  /** Number of live activation tensors right after node p (topological index). */
  readonly liveAfter: Int32Array;
  /** Cut tensors in topological order. */
  readonly cuts: readonly string[];
  /** Cut tensor → topological index of its producer. */
  readonly position: ReadonlyMap<string, number>;
}

const sweeps = new WeakMap<GraphIndex, CutSweep>();

/**
 * The sweep: an activation value is live from its producer (the graph input: from the start) to its last
 * counting use (graph outputs: to the end). Uses by batch-only Shape nodes do not count (a segment reads the batch
 * size from its own input). A cut is a position where exactly one activation is live and it is an output of
 * the node just before. O(nodes + edges).
 */
export function sweepCuts(model: OnnxModel): CutSweep {
  const index = indexGraph(model);
  const hit = sweeps.get(index);
  if (hit) return hit;
  const { nodes, kind, consumers, batchShapeNodes, outputs, input } = index;
  const n = nodes.length;
  const diff = new Int32Array(n + 1);
  const outSet = new Set(outputs);
  const end = (v: string): number => {
    if (outSet.has(v)) return n;
    let last = -1;
    for (const c of consumers.get(v) ?? []) if (!batchShapeNodes.has(c) && c > last) last = c;
    return last;
  };
  const addLive = (start: number, stop: number): void => {
    if (stop <= start) return;
    diff[Math.max(0, start)]! += 1;
    diff[stop]! -= 1;
  };
  addLive(-1, end(input));
  const ends = new Map<string, number>();
  nodes.forEach((nd, p) => {
    for (const o of nd.output ?? []) {
      if (!o || kind.get(o) !== 'act') continue;
      const e = end(o);
      ends.set(o, e);
      addLive(p, e);
    }
  });
  const liveAfter = new Int32Array(n);
  let run = 0;
  for (let p = 0; p < n; p++) {
    run += diff[p]!;
    liveAfter[p] = run;
  }
  const cuts: string[] = [];
  const position = new Map<string, number>();
  nodes.forEach((nd, p) => {
    if (liveAfter[p] !== 1) return;
    for (const o of nd.output ?? []) {
      if (!o || kind.get(o) !== 'act' || outSet.has(o) || (ends.get(o) ?? -1) <= p) continue;
      cuts.push(o);
      position.set(o, p);
    }
  });
  const sweep: CutSweep = { index, liveAfter, cuts, position };
  sweeps.set(index, sweep);
  return sweep;
}

/**
 * Cut tensors in topological order: tensors such that the model splits into "before" and "after" with only that
 * activation crossing. Initializers, Constant outputs, values computed from constants only, and batch-size shape
 * values (see {@link ValueKind}) never count as crossing. The graph input and the final outputs are not listed.
 * Pure: needs no shapes.
 * @throws SelfxitError `UNSUPPORTED_MODEL` (not exactly one input), `INVALID_MODEL` (broken graph).
 */
export function findCuts(model: OnnxModel): string[] {
  return [...sweepCuts(model).cuts];
}

/** Why `tensor` is not a cut (undefined when it is one). Error path only: may scan the graph. */
export function whyNotCut(sweep: CutSweep, tensor: string): string | undefined {
  if (sweep.position.has(tensor)) return undefined;
  const { index } = sweep;
  if (tensor === index.input) return `"${tensor}" is the graph input, not a cut point`;
  if (index.outputs.includes(tensor)) return `"${tensor}" is a final graph output, not a cut point`;
  const p = index.producer.get(tensor);
  if (p === undefined) {
    return index.initializers.has(tensor)
      ? `"${tensor}" is an initializer, not a cut point`
      : `"${tensor}" is not a tensor of this graph (or does not contribute to its outputs)`;
  }
  const k = index.kind.get(tensor);
  if (k === 'const') return `"${tensor}" is computed from constants only, not a cut point`;
  if (k === 'batch') return `"${tensor}" is a batch-size shape value, not a cut point`;
  const live = liveAt(sweep, p).filter((v) => v !== tensor);
  const node = index.nodes[p]!;
  const shown =
    live
      .slice(0, 3)
      .map((v) => `"${v}"`)
      .join(', ') + (live.length > 3 ? `, … (${live.length} in all)` : '');
  return `"${tensor}" is not a cut point: ${sweep.liveAfter[p]} activation tensors are live after its producer "${node.name || node.opType}"${shown ? ` (also live: ${shown})` : ''}`;
}

/** Activation values live right after node p (scans the graph once). */
function liveAt(sweep: CutSweep, p: number): string[] {
  const { index } = sweep;
  const { nodes, kind, consumers, batchShapeNodes, outputs, input } = index;
  const out: string[] = [];
  const lastUse = (v: string): number => {
    if (outputs.includes(v)) return nodes.length;
    let last = -1;
    for (const c of consumers.get(v) ?? []) if (!batchShapeNodes.has(c) && c > last) last = c;
    return last;
  };
  if (lastUse(input) > p) out.push(input);
  for (let i = 0; i <= p; i++)
    for (const o of nodes[i]!.output ?? []) if (o && kind.get(o) === 'act' && lastUse(o) > p) out.push(o);
  return out;
}

/**
 * Checks cut names and returns their topological positions.
 * @throws SelfxitError `INVALID_CUT` naming the first tensor that is not a cut; `INVALID_ARGUMENT` for duplicates
 *   or cuts out of topological order.
 */
export function validateCuts(sweep: CutSweep, cuts: readonly string[]): number[] {
  const positions: number[] = [];
  for (const c of cuts) {
    const why = whyNotCut(sweep, c);
    if (why !== undefined) throw new SelfxitError('INVALID_CUT', `Invalid cut: ${why}`, { tensor: c });
    positions.push(sweep.position.get(c)!);
  }
  for (let i = 1; i < positions.length; i++) {
    if (positions[i]! === positions[i - 1]!) {
      throw new SelfxitError('INVALID_ARGUMENT', `Cut "${cuts[i]}" is listed twice`, { tensor: cuts[i] });
    }
    if (positions[i]! <= positions[i - 1]!) {
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `Cuts must be in topological order: "${cuts[i]}" comes before "${cuts[i - 1]}" in the graph`,
        { tensor: cuts[i] },
      );
    }
  }
  return positions;
}

/** Sorts cut names into topological order (unknown names keep their place at the end). */
export function sortCuts(model: OnnxModel, cuts: readonly string[]): string[] {
  const pos = sweepCuts(model).position;
  return [...cuts].sort((a, b) => (pos.get(a) ?? Infinity) - (pos.get(b) ?? Infinity));
}

/** Short display name of a cut tensor, e.g. "/layer2/layer2.1/Relu_1_output_0" → "layer2.1". */
export function exitName(tensor: string): string {
  const bare = tensor.replace(/^\//, '');
  const parts = bare.split('/');
  if (parts.length > 1) return parts[parts.length - 2]!;
  return bare.replace(/_output_\d+$/, '') || tensor;
}

/** {@link exitName} lengthened by `level` - 1 more parent path segments (past the path: the tensor name itself). */
function longerName(tensor: string, level: number): string {
  if (level <= 1) return exitName(tensor);
  const parts = tensor.replace(/^\//, '').split('/');
  return level < parts.length ? parts.slice(parts.length - 1 - level, -1).join('/') : tensor;
}

/**
 * Display names of cuts, one per place: {@link exitName}, lengthened by parent path segments where cuts at different
 * MACs would share one (e.g. torchvision's ".../relu/Relu_output_0" all under "relu"). Cuts at the same MACs (an Add
 * and its Relu) may share a name: they are one place.
 */
export function cutDisplayNames(cuts: readonly { tensor: string; macs: number }[]): Map<string, string> {
  const level = new Map(cuts.map((c) => [c.tensor, 1]));
  const names = new Map(cuts.map((c) => [c.tensor, exitName(c.tensor)]));
  for (let changed = true; changed;) {
    changed = false;
    const byName = new Map<string, { tensor: string; macs: number }[]>();
    for (const c of cuts) {
      const n = names.get(c.tensor)!;
      byName.set(n, [...(byName.get(n) ?? []), c]);
    }
    for (const group of byName.values()) {
      if (group.every((c) => c.macs === group[0]!.macs)) continue;
      for (const c of group) {
        if (names.get(c.tensor) === c.tensor) continue;
        level.set(c.tensor, level.get(c.tensor)! + 1);
        names.set(c.tensor, longerName(c.tensor, level.get(c.tensor)!));
        changed = true;
      }
    }
  }
  return names;
}

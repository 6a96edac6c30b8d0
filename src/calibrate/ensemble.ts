// Head ensembles at one exit: M heads of one kind trained with different seeds, deployed as ONE head whose logits are
// the mean of the members' logits. A pool-linear ensemble is a linear head with the mean weights; a pool-mlp ensemble
// is one wider MLP: the members' first layers side by side (M·h hidden units), their second layers side by side with
// weight 1/M each. The graph, the manifest and the cost model need nothing new: the head is an ordinary HeadSpec whose
// cost (headCost, estimateHeadMacs with M·h hidden units) already charges the M members.
import { SelfxitError } from '../errors.js';
import type { DenseLayer } from '../graph/head-spec.js';
import type { HeadKind } from '../bundle/manifest.js';
import { trainHead, type TrainedHead, type TrainHeadOptions } from './train-head.js';
import type { FeatureRows } from './feature-store.js';

function bad(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_ARGUMENT', msg, details);
}

/**
 * The head whose logits are the mean of `members`' logits (same kind: 1 or 2 dense layers, same input width, class
 * count and logit scale). One member is returned as it is.
 */
export function averageLogitHeads(members: readonly TrainedHead[]): TrainedHead {
  const M = members.length;
  if (M < 1) bad('a head ensemble needs at least one member');
  const first = members[0]!;
  if (M === 1) return first;
  const depth = first.layers.length;
  if (depth !== 1 && depth !== 2) bad(`head ensembles average linear or one-hidden-layer heads, got ${depth} layers`);
  for (const m of members) {
    if (m.layers.length !== depth) bad('head ensemble members differ in depth');
    if (m.logitScale !== first.logitScale) bad('head ensemble members differ in logit scale');
    if (m.layers[0]!.in !== first.layers[0]!.in) bad('head ensemble members read different feature widths');
    if (m.layers[depth - 1]!.out !== first.layers[depth - 1]!.out) bad('head ensemble members differ in classes');
  }
  const inv = 1 / M;
  if (depth === 1) {
    const L0 = first.layers[0]!;
    const weight = new Float32Array(L0.weight.length);
    const bias = new Float32Array(L0.out);
    for (const m of members) {
      const L = m.layers[0]!;
      for (let i = 0; i < weight.length; i++) weight[i]! += L.weight[i]! * inv;
      for (let o = 0; o < bias.length; o++) bias[o]! += L.bias[o]! * inv;
    }
    return { layers: [{ in: L0.in, out: L0.out, weight, bias }], logitScale: first.logitScale };
  }
  const d = first.layers[0]!.in;
  const k = first.layers[1]!.out;
  const hidden = members.reduce((a, m) => a + m.layers[0]!.out, 0);
  const w0 = new Float32Array(hidden * d);
  const b0 = new Float32Array(hidden);
  const w1 = new Float32Array(k * hidden);
  const b1 = new Float32Array(k);
  let at = 0;
  for (const m of members) {
    const [A, B] = m.layers as readonly [DenseLayer, DenseLayer];
    const h = A.out;
    if (B.in !== h) bad('head ensemble member has inconsistent layers');
    w0.set(A.weight, at * d);
    b0.set(A.bias, at);
    for (let o = 0; o < k; o++) {
      for (let u = 0; u < h; u++) w1[o * hidden + at + u] = B.weight[o * h + u]! * inv;
      b1[o]! += B.bias[o]! * inv;
    }
    at += h;
  }
  return {
    layers: [
      { in: d, out: hidden, weight: w0, bias: b0 },
      { in: hidden, out: k, weight: w1, bias: b1 },
    ],
    logitScale: first.logitScale,
  };
}

/** Seed distance between ensemble members: member m trains with seeds `seed + MEMBER_SEED_STEP·m` (member 0: today's). */
export const MEMBER_SEED_STEP = 1000;

/** Members of a head of `kind` under prepare's `ensemble` option: pool-mlp heads get `ensemble`, others one. */
export function membersOf(kind: HeadKind, ensemble: number): number {
  return kind === 'pool-mlp' ? ensemble : 1;
}

/**
 * A head on all `n` rows as an ensemble of `members` heads (member m: seed + {@link MEMBER_SEED_STEP}·m), deployed as
 * their logit-averaged head; one member is {@link trainHead} itself.
 */
export function trainEnsembleHead(
  x: FeatureRows,
  p: Float32Array,
  n: number,
  d: number,
  k: number,
  members: number,
  options: TrainHeadOptions = {},
): TrainedHead {
  const seed = options.seed ?? 0;
  const heads = Array.from({ length: members }, (_, m) =>
    trainHead(x, p, n, d, k, { ...options, seed: seed + MEMBER_SEED_STEP * m }),
  );
  return members === 1 ? heads[0]! : averageLogitHeads(heads);
}

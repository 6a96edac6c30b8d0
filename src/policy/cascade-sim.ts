// Cascade simulator: agreement, expected cost and exit shares of a set of exits at given thresholds, on precomputed scores.
import { SelfxitError } from '../errors.js';

/** One candidate exit's validation outputs, precomputed once: per-sample score, argmax and agreement with the backbone. */
export interface ExitScores {
  readonly n: number;
  /** Max probability per sample. */
  readonly score: Float32Array;
  /** Argmax per sample. */
  readonly pred: Int32Array;
  /** 1 when pred equals the backbone's argmax. */
  readonly agree: Uint8Array;
}

/**
 * Cost model of the candidates (any unit: MACs or ms). Exit positions are candidate indices.
 * A sample leaving at selected exit j pays `backboneCostAt[j] + Σ headCost of selected exits passed (incl. j) + overhead × exits passed`;
 * a sample that never leaves pays `fullCost + Σ headCost of all selected + overhead × |S|`.
 */
export interface CascadeCosts {
  /** Cumulative backbone cost up to each candidate cut (non-decreasing with depth). */
  readonly backboneCostAt: ArrayLike<number>;
  /** Cost of each candidate's head. */
  readonly headCost: ArrayLike<number>;
  /** Cost of the full backbone. */
  readonly fullCost: number;
  /** Extra cost per selected exit passed (dispatch, sync, readback). Default 0 here; selectExits defaults it to 1 % of fullCost. */
  readonly overhead?: number;
}

/** What the cascade does on the validation samples. */
export interface CascadeOutcome {
  /** Fraction of samples whose cascade answer equals the backbone's (non-exiting samples agree). */
  readonly agreement: number;
  readonly disagreements: number;
  readonly n: number;
  /** Expected cost per sample / fullCost (named after MACs, also used for ms). */
  readonly macsFraction: number;
  /** Share leaving at each selected exit, then the backbone share as the last entry. */
  readonly exitShares: number[];
}

/** Argmax per row of `[n, k]` (first index on ties). */
export function argmaxRows(p: Float32Array, n: number, k: number): Int32Array {
  if (p.length < n * k)
    throw new SelfxitError('INVALID_ARGUMENT', `probabilities hold ${p.length} values, expected ${n}x${k}`);
  const out = new Int32Array(n);
  for (let r = 0; r < n; r++) out[r] = argmaxAt(p, r, k);
  return out;
}

/** Precomputes score (max probability), argmax and agreement of an exit's probabilities `[n, k]` against the backbone's argmax. */
export function exitScores(probs: Float32Array, n: number, k: number, teacherPred: Int32Array): ExitScores {
  if (probs.length < n * k)
    throw new SelfxitError('INVALID_ARGUMENT', `exit probabilities hold ${probs.length} values, expected ${n}x${k}`);
  if (teacherPred.length !== n)
    throw new SelfxitError('INVALID_ARGUMENT', `teacher argmax has ${teacherPred.length} entries, expected ${n}`);
  const score = new Float32Array(n);
  const pred = new Int32Array(n);
  const agree = new Uint8Array(n);
  for (let r = 0; r < n; r++) {
    const j = argmaxAt(probs, r, k);
    pred[r] = j;
    score[r] = probs[r * k + j]!;
    agree[r] = j === teacherPred[r] ? 1 : 0;
  }
  return { n, score, pred, agree };
}

/** Per-exit statistics over all samples: argmax agreement with the backbone and mean score. */
export function exitStatsOf(e: ExitScores): { agreement: number; meanScore: number } {
  let a = 0;
  let s = 0;
  for (let i = 0; i < e.n; i++) {
    a += e.agree[i]!;
    s += e.score[i]!;
  }
  return { agreement: e.n ? a / e.n : 1, meanScore: e.n ? s / e.n : 0 };
}

/** Checks the candidates share one sample count and the cost table covers them; returns n. */
export function checkCandidates(exits: readonly ExitScores[], costs: CascadeCosts): number {
  const n = exits.length ? exits[0]!.n : 0;
  exits.forEach((e, i) => {
    if (e.n !== n || e.score.length !== n || e.pred.length !== n || e.agree.length !== n) {
      throw new SelfxitError('INVALID_ARGUMENT', `candidate exit ${i} has ${e.n} samples, expected ${n}`);
    }
  });
  if (costs.backboneCostAt.length < exits.length || costs.headCost.length < exits.length) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `cost table covers ${Math.min(costs.backboneCostAt.length, costs.headCost.length)} candidates, expected ${exits.length}`,
    );
  }
  if (!(costs.fullCost > 0)) throw new SelfxitError('INVALID_ARGUMENT', `fullCost must be > 0, got ${costs.fullCost}`);
  return n;
}

/** Checks a selected subset: valid, distinct candidate indices in depth (ascending) order. */
export function checkSelected(selected: readonly number[], candidates: number): void {
  for (let j = 0; j < selected.length; j++) {
    const e = selected[j]!;
    if (!(Number.isInteger(e) && e >= 0 && e < candidates))
      throw new SelfxitError('INVALID_ARGUMENT', `selected exit ${e} is not a candidate index in [0, ${candidates})`);
    if (j > 0 && e <= selected[j - 1]!)
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `selected exits must be strictly increasing (by depth), got ${selected.join(',')}`,
      );
  }
}

/**
 * Cost of leaving at each position of `selected` (entry j), and of running the whole backbone (last entry),
 * under the cost model of {@link CascadeCosts}.
 */
export function pathCosts(selected: readonly number[], costs: CascadeCosts): Float64Array {
  const s = selected.length;
  const overhead = costs.overhead ?? 0;
  const out = new Float64Array(s + 1);
  let heads = 0;
  for (let j = 0; j < s; j++) {
    const e = selected[j]!;
    heads += costs.headCost[e]!;
    out[j] = costs.backboneCostAt[e]! + heads + overhead * (j + 1);
  }
  out[s] = costs.fullCost + heads + overhead * s;
  return out;
}

/**
 * Simulates the cascade on `selected` (candidate indices, by depth) with one threshold per selected exit: a sample
 * leaves at the first exit whose score is >= its threshold, else the backbone answers (and agrees with itself).
 * O(n·|S|).
 */
export function simulateCascade(
  exits: readonly ExitScores[],
  selected: readonly number[],
  thresholds: readonly number[],
  costs: CascadeCosts,
): CascadeOutcome {
  const n = checkCandidates(exits, costs);
  checkSelected(selected, exits.length);
  if (thresholds.length !== selected.length)
    throw new SelfxitError('INVALID_ARGUMENT', `${thresholds.length} thresholds for ${selected.length} selected exits`);
  const s = selected.length;
  const cost = pathCosts(selected, costs);
  const exitAt = new Int32Array(n).fill(s);
  const left = new Uint8Array(n);
  const counts = new Float64Array(s + 1);
  let disagreements = 0;
  for (let j = 0; j < s; j++) {
    const e = exits[selected[j]!]!;
    const t = thresholds[j]!;
    const sc = e.score;
    const ag = e.agree;
    for (let i = 0; i < n; i++) {
      if (left[i] === 0 && sc[i]! >= t) {
        left[i] = 1;
        exitAt[i] = j;
        if (ag[i] === 0) disagreements++;
      }
    }
  }
  let total = 0;
  for (let i = 0; i < n; i++) counts[exitAt[i]!]!++;
  for (let j = 0; j <= s; j++) total += counts[j]! * cost[j]!;
  return {
    agreement: n ? (n - disagreements) / n : 1,
    disagreements,
    n,
    macsFraction: n ? total / n / costs.fullCost : cost[s]! / costs.fullCost,
    exitShares: Array.from(counts, (c, j) => (n ? c / n : j === s ? 1 : 0)),
  };
}

/** Argmax and max of one row of `k` values starting at `offset` (first index on ties). */
export function argmaxRow(src: Float32Array, offset: number, k: number): { index: number; value: number } {
  let index = 0;
  let value = src[offset]!;
  for (let j = 1; j < k; j++) {
    const v = src[offset + j]!;
    if (v > value) {
      value = v;
      index = j;
    }
  }
  return { index, value };
}

/** Index of the largest entry of row `r` of `[*, k]` (first on ties). */
export function argmaxAt(a: Float32Array, r: number, k: number): number {
  return argmaxRow(a, r * k, k).index;
}

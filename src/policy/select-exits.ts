// Exit selection: the subset of candidate exits with the lowest expected cost at the agreement target
// (threshold re-chosen per subset), by deterministic local search (forward, backward, swap).
import { SelfxitError } from '../errors.js';
import type { CurvePoint } from '../bundle/manifest.js';
import {
  checkCandidates,
  checkSelected,
  pathCosts,
  simulateCascade,
  type CascadeCosts,
  type ExitScores,
} from './cascade-sim.js';
import {
  GlobalSweep,
  NEVER_EXIT,
  agreementLowerBound,
  chooseThresholds,
  checkTarget,
  maxDisagreements,
  thresholdCurve,
  type MarginOptions,
} from './thresholds.js';

export interface SelectExitsOptions extends MarginOptions {
  /** Agreement target in (0, 1]. */
  readonly target: number;
  /** Per-exit overhead in cost units (dispatch, sync, readback per exit passed); default 1 % of costs.fullCost. Overrides costs.overhead. */
  readonly overhead?: number;
  /** At most this many exits. Default: no limit. */
  readonly maxExits?: number;
  /** Refine per-exit thresholds on the chosen subset (the search itself uses one shared threshold). Default false. */
  readonly perExit?: boolean;
  /** Knob values of the returned curve. Default 100. */
  readonly curvePoints?: number;
}

export interface SelectionResult {
  /** Chosen candidate indices, by depth. */
  readonly selected: number[];
  /** One threshold per selected exit. */
  readonly thresholds: number[];
  /** Global knob value (the shared threshold). */
  readonly knob: number;
  /** Cascade agreement on the validation (out-of-fold) outputs. */
  readonly agreement: number;
  /** Its one-sided lower confidence bound (1 when no sample exits). */
  readonly agreementLowerBound: number;
  /** Expected cost per sample / fullCost (MACs or ms, whatever the cost table holds), overhead included. */
  readonly macsFraction: number;
  /** Share leaving at each selected exit, then the backbone. */
  readonly exitShares: number[];
  /** Curve over the global knob for the selected exits (includes the chosen knob). */
  readonly curve: CurvePoint[];
  /** Subsets evaluated by the search. */
  readonly evaluations: number;
  /** Per-exit overhead used, in cost units. */
  readonly overhead: number;
}

interface Scored {
  readonly set: number[];
  readonly cost: number;
}

/**
 * Chooses which candidate exits to keep. Objective: expected cost per sample (backbone up to the exit, every head
 * passed, `overhead` per exit passed) at the cheapest shared threshold whose validation agreement meets `target`
 * with the confidence margin (see MarginOptions). Search: greedy forward addition from the empty set, then best-
 * improvement local search over removals, additions and swaps until no move lowers the cost; a move that leaves the
 * cost unchanged (within 1e-9 relative) is taken only when it removes an exit, so ties prefer fewer exits.
 * Deterministic. The empty set (backbone only) is always allowed, so the result is never worse than it, nor than the
 * all-candidates set under the same cost model (checked explicitly).
 */
export function selectExits(
  exits: readonly ExitScores[],
  costs: CascadeCosts,
  options: SelectExitsOptions,
): SelectionResult {
  checkTarget(options.target);
  const n = checkCandidates(exits, costs);
  const E = exits.length;
  const overhead = options.overhead ?? 0.01 * costs.fullCost;
  if (!(overhead >= 0)) throw new SelfxitError('INVALID_ARGUMENT', `overhead must be >= 0, got ${overhead}`);
  const maxExits = options.maxExits ?? E;
  if (!(Number.isInteger(maxExits) && maxExits >= 0))
    throw new SelfxitError('INVALID_ARGUMENT', `maxExits must be a non-negative integer, got ${maxExits}`);
  const c: CascadeCosts = { ...costs, overhead };
  const dMax = maxDisagreements(n, options.target, options);
  const sweep = new GlobalSweep(exits);
  const memo = new Map<string, number>();
  let evaluations = 0;
  const costOf = (set: number[]): number => {
    const key = set.join(',');
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    evaluations++;
    const v = sweep.best(set, pathCosts(set, c), dMax).cost;
    memo.set(key, v);
    return v;
  };
  const eps = 1e-9 * Math.max(1, n) * costs.fullCost;
  const better = (a: Scored, b: Scored): boolean =>
    a.cost < b.cost - eps || (a.cost <= b.cost + eps && a.set.length < b.set.length);
  const score = (set: number[]): Scored => ({ set, cost: costOf(set) });
  const withAdd = (set: number[], e: number): number[] => [...set, e].sort((a, b) => a - b);

  let cur = score([]);
  if (E > 0 && n > 0 && dMax >= 0 && maxExits > 0) {
    // Greedy forward addition.
    for (;;) {
      let best: Scored | undefined;
      if (cur.set.length < maxExits) {
        for (let e = 0; e < E; e++) {
          if (cur.set.includes(e)) continue;
          const cand = score(withAdd(cur.set, e));
          if (!best || better(cand, best)) best = cand;
        }
      }
      if (best && better(best, cur)) cur = best;
      else break;
    }
    // Local search: removals, additions, swaps; best improvement first.
    for (let iter = 0; iter < 10 * E + 10; iter++) {
      let best: Scored | undefined;
      const consider = (set: number[]): void => {
        const cand = score(set);
        if (!best || better(cand, best)) best = cand;
      };
      for (const e of cur.set) consider(cur.set.filter((x) => x !== e));
      for (let e = 0; e < E; e++) {
        if (cur.set.includes(e)) continue;
        if (cur.set.length < maxExits) consider(withAdd(cur.set, e));
        for (const r of cur.set)
          consider(
            withAdd(
              cur.set.filter((x) => x !== r),
              e,
            ),
          );
      }
      if (best && better(best, cur)) cur = best;
      else break;
    }
    // Never worse than keeping every candidate (when allowed).
    if (E <= maxExits) {
      const all = score(Array.from({ length: E }, (_, i) => i));
      if (better(all, cur)) cur = all;
    }
  }
  const choice = chooseThresholds(exits, cur.set, c, { ...options, perExit: options.perExit ?? false });
  const curve = thresholdCurve(exits, cur.set, c, { points: options.curvePoints ?? 100, extraKnobs: [choice.knob] });
  return {
    selected: cur.set,
    thresholds: choice.thresholds,
    knob: choice.knob,
    agreement: choice.agreement,
    agreementLowerBound: choice.agreementLowerBound,
    macsFraction: choice.macsFraction,
    exitShares: choice.exitShares,
    curve,
    evaluations,
    overhead,
  };
}

/**
 * Paper mode: fixed exits (default every candidate), one given threshold (default 0.9) for all, no selection and no
 * margin; same result structure as {@link selectExits}. Overhead defaults to 0 here (the paper counts MACs only).
 */
export function paperCascade(
  exits: readonly ExitScores[],
  costs: CascadeCosts,
  options: {
    threshold?: number;
    selected?: readonly number[];
    curvePoints?: number;
    overhead?: number;
  } & MarginOptions = {},
): SelectionResult {
  checkCandidates(exits, costs);
  const selected = options.selected ? [...options.selected] : Array.from({ length: exits.length }, (_, i) => i);
  checkSelected(selected, exits.length);
  const t = options.threshold ?? 0.9;
  if (!(t >= 0 && t <= NEVER_EXIT)) throw new SelfxitError('INVALID_ARGUMENT', `threshold must be in [0, 1], got ${t}`);
  const overhead = options.overhead ?? 0;
  const c: CascadeCosts = { ...costs, overhead };
  const thresholds = selected.map(() => t);
  const o = simulateCascade(exits, selected, thresholds, c);
  return {
    selected,
    thresholds,
    knob: t,
    agreement: o.agreement,
    agreementLowerBound:
      o.exitShares[o.exitShares.length - 1] === 1 ? 1 : agreementLowerBound(o.n - o.disagreements, o.n, options),
    macsFraction: o.macsFraction,
    exitShares: o.exitShares,
    curve: thresholdCurve(exits, selected, c, { points: options.curvePoints ?? 100, extraKnobs: [t] }),
    evaluations: 1,
    overhead,
  };
}

// Threshold choice for the whole cascade: one global max-softmax threshold (or per-exit) meeting the
// agreement target with a one-sided confidence margin, plus the agreement/cost curve over the knob.
import { SelfxitError } from '../errors.js';
import { NEVER_EXIT, type CurvePoint } from '../bundle/manifest.js';
import { agreementLowerBound, checkTarget, maxDisagreements, type MarginOptions } from './bounds.js';
import {
  checkCandidates,
  checkSelected,
  pathCosts,
  simulateCascade,
  type CascadeCosts,
  type CascadeOutcome,
  type ExitScores,
} from './cascade-sim.js';

export { agreementLowerBound, checkTarget, maxDisagreements, normalQuantile, type MarginOptions } from './bounds.js';

export { NEVER_EXIT };

export interface ThresholdOptions extends MarginOptions {
  /** Agreement target in (0, 1]. */
  readonly target: number;
  /** Tune one threshold per exit (coordinate descent from the global solution) instead of one shared threshold. Default false. */
  readonly perExit?: boolean;
}

export interface ThresholdChoice extends CascadeOutcome {
  /** Global knob: the shared threshold (perExit: the global solution it started from). */
  readonly knob: number;
  /** One threshold per selected exit. */
  readonly thresholds: number[];
  /** Lower confidence bound of the agreement (1 when no sample exits). */
  readonly agreementLowerBound: number;
  /** False when no threshold below NEVER_EXIT meets the target: every threshold is NEVER_EXIT and the backbone answers all. */
  readonly feasible: boolean;
}

// ---------- global-threshold sweep ----------

/**
 * Exact sweep over every distinct score of the candidates: for a selected subset and one shared threshold t, each
 * sample leaves at the first selected exit whose score >= t. Built once per candidate set (ranks of all scores);
 * each evaluation is O(n·|S| + R) with R the number of distinct scores.
 */
export class GlobalSweep {
  readonly n: number;
  /** Distinct scores of all candidates, ascending. */
  readonly values: Float64Array;
  private readonly ranks: Uint32Array[];
  private readonly exits: readonly ExitScores[];
  private readonly dCost: Float64Array;
  private readonly dDis: Int32Array;

  constructor(exits: readonly ExitScores[]) {
    this.exits = exits;
    const n = exits.length ? exits[0]!.n : 0;
    this.n = n;
    const all = new Float32Array(n * exits.length);
    exits.forEach((e, j) => all.set(e.score.subarray(0, n), j * n));
    all.sort();
    let r = 0;
    const vals = new Float64Array(all.length);
    for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[i - 1]) vals[r++] = all[i]!;
    this.values = vals.slice(0, r);
    const values32 = Float32Array.from(this.values);
    this.ranks = exits.map((e) => {
      const rk = new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        const v = e.score[i]!;
        let lo = 0;
        let hi = values32.length - 1;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (values32[mid]! < v) lo = mid + 1;
          else hi = mid;
        }
        rk[i] = lo;
      }
      return rk;
    });
    this.dCost = new Float64Array(r);
    this.dDis = new Int32Array(r);
  }

  /** Threshold that realises rank q (samples with rank >= q leave): midway to the next lower distinct score. */
  thresholdAt(q: number): number {
    if (q >= this.values.length) return NEVER_EXIT;
    if (q <= 0) return this.values[0]!;
    return (this.values[q]! + this.values[q - 1]!) / 2;
  }

  /**
   * For `selected` with path costs `pc` (from pathCosts), the lowest-cost shared threshold whose disagreements are
   * <= dMax. Returns its rank (values.length = never exit), the total cost over samples and the disagreements.
   */
  best(
    selected: readonly number[],
    pc: Float64Array,
    dMax: number,
  ): { rank: number; cost: number; disagreements: number } {
    const { n, dCost, dDis } = this;
    const s = selected.length;
    const R = this.values.length;
    const never = n * pc[s]!;
    if (s === 0 || dMax < 0 || R === 0) return { rank: R, cost: never, disagreements: 0 };
    const rk = selected.map((e) => this.ranks[e]!);
    const ag = selected.map((e) => this.exits[e]!.agree);
    const recJ = new Int32Array(s);
    const recR = new Int32Array(s);
    for (let i = 0; i < n; i++) {
      let cnt = 0;
      let runMax = -1;
      for (let j = 0; j < s; j++) {
        const r = rk[j]![i]!;
        if (r > runMax) {
          runMax = r;
          recJ[cnt] = j;
          recR[cnt] = r;
          cnt++;
        }
      }
      let nextCost = pc[s]!;
      let nextDis = 0;
      for (let m = cnt - 1; m >= 0; m--) {
        const j = recJ[m]!;
        const c = pc[j]!;
        const dd = 1 - ag[j]![i]!;
        const q = recR[m]!;
        dCost[q]! += c - nextCost;
        dDis[q]! += dd - nextDis;
        nextCost = c;
        nextDis = dd;
      }
    }
    let cost = never;
    let dis = 0;
    let bestRank = R;
    let bestCost = never;
    let bestDis = 0;
    const eps = 1e-12 * Math.abs(never);
    for (let q = R - 1; q >= 0; q--) {
      cost += dCost[q]!;
      dis += dDis[q]!;
      if (dis <= dMax && cost < bestCost - eps) {
        bestCost = cost;
        bestRank = q;
        bestDis = dis;
      }
    }
    dCost.fill(0);
    dDis.fill(0);
    return { rank: bestRank, cost: bestCost, disagreements: bestDis };
  }
}

// ---------- public API ----------

function outcomeBound(o: CascadeOutcome, options: MarginOptions): number {
  return o.exitShares[o.exitShares.length - 1] === 1 ? 1 : agreementLowerBound(o.n - o.disagreements, o.n, options);
}

/**
 * Per-exit refinement: starting from `thresholds`, lowers each exit's threshold in turn (depth order, repeated
 * until nothing changes) to the lowest value that keeps disagreements <= dMax, given the others.
 */
function refinePerExit(
  exits: readonly ExitScores[],
  selected: readonly number[],
  costs: CascadeCosts,
  start: readonly number[],
  dMax: number,
): number[] {
  const n = exits[0]!.n;
  const s = selected.length;
  const pc = pathCosts(selected, costs);
  const th = start.slice();
  const sc = selected.map((e) => exits[e]!.score);
  const ag = selected.map((e) => exits[e]!.agree);
  const contCost = new Float64Array(n);
  const contDis = new Int32Array(n);
  const arrive = new Uint8Array(n);
  for (let pass = 0; pass < 20; pass++) {
    let changed = false;
    for (let j = 0; j < s; j++) {
      // Fixed part: samples leaving before j, and what samples passing j would do after it.
      let fixedDis = 0;
      let arrivals = 0;
      for (let i = 0; i < n; i++) {
        let l = 0;
        while (l < j && sc[l]![i]! < th[l]!) l++;
        if (l < j) {
          arrive[i] = 0;
          fixedDis += 1 - ag[l]![i]!;
          continue;
        }
        arrive[i] = 1;
        arrivals++;
        let m = j + 1;
        while (m < s && sc[m]![i]! < th[m]!) m++;
        contCost[i] = pc[m]!;
        contDis[i] = m < s ? 1 - ag[m]![i]! : 0;
      }
      const idx = new Int32Array(arrivals);
      let w = 0;
      let dis = fixedDis;
      for (let i = 0; i < n; i++) {
        if (arrive[i]) {
          idx[w++] = i;
          dis += contDis[i]!;
        }
      }
      const scj = sc[j]!;
      const sorted = Array.from(idx).sort((a, b) => scj[b]! - scj[a]!);
      // Lower t_j through the arrivals' scores (descending); cost only falls, so the lowest feasible t_j wins.
      let bestT = dis <= dMax ? NEVER_EXIT : th[j]!;
      for (let r = 0; r < sorted.length; r++) {
        const i = sorted[r]!;
        dis += 1 - ag[j]![i]! - contDis[i]!;
        const v = scj[i]!;
        const nextV = r + 1 < sorted.length ? scj[sorted[r + 1]!]! : -Infinity;
        if (nextV === v) continue;
        if (dis <= dMax) bestT = nextV === -Infinity ? v : (v + nextV) / 2;
      }
      if (bestT !== th[j]) {
        th[j] = bestT;
        changed = true;
      }
    }
    if (!changed) break;
  }
  return th;
}

/**
 * Chooses the cascade's thresholds on validation (out-of-fold) outputs: the lowest-cost setting whose agreement with
 * the backbone meets `target` with the margin of {@link MarginOptions} (default: one shared threshold for every
 * selected exit, exact over all distinct scores; `perExit: true` then lowers each exit's threshold in turn).
 */
export function chooseThresholds(
  exits: readonly ExitScores[],
  selected: readonly number[],
  costs: CascadeCosts,
  options: ThresholdOptions,
): ThresholdChoice {
  checkTarget(options.target);
  const n = checkCandidates(exits, costs);
  checkSelected(selected, exits.length);
  const dMax = maxDisagreements(n, options.target, options);
  const sweep = new GlobalSweep(exits);
  const pc = pathCosts(selected, costs);
  const best = sweep.best(selected, pc, dMax);
  const knob = sweep.thresholdAt(best.rank);
  let thresholds = selected.map(() => knob);
  if (options.perExit && selected.length > 0 && dMax >= 0)
    thresholds = refinePerExit(exits, selected, costs, thresholds, dMax);
  const o = simulateCascade(exits, selected, thresholds, costs);
  return {
    ...o,
    knob,
    thresholds,
    agreementLowerBound: outcomeBound(o, options),
    feasible: thresholds.some((t) => t < NEVER_EXIT),
  };
}

/**
 * The cascade's agreement/cost curve over the global knob (one shared threshold): `points` knob values (default 100)
 * at evenly spaced quantiles of the selected exits' scores, plus NEVER_EXIT (backbone only) and any `extraKnobs`,
 * ascending. Lets the runtime re-choose a threshold for another target without the samples ({@link pickFromCurve}).
 */
export function thresholdCurve(
  exits: readonly ExitScores[],
  selected: readonly number[],
  costs: CascadeCosts,
  options: { points?: number; extraKnobs?: readonly number[] } = {},
): CurvePoint[] {
  const n = checkCandidates(exits, costs);
  checkSelected(selected, exits.length);
  const points = options.points ?? 100;
  if (!(Number.isInteger(points) && points >= 2))
    throw new SelfxitError('INVALID_ARGUMENT', `curve points must be an integer >= 2, got ${points}`);
  const knobs = new Set<number>([NEVER_EXIT, ...(options.extraKnobs ?? [])]);
  if (selected.length > 0 && n > 0) {
    const pooled = new Float32Array(n * selected.length);
    selected.forEach((e, j) => pooled.set(exits[e]!.score.subarray(0, n), j * n));
    pooled.sort();
    for (let p = 0; p < points - 1; p++)
      knobs.add(pooled[Math.min(pooled.length - 1, Math.round((p / (points - 2)) * (pooled.length - 1)))]!);
  }
  return [...knobs]
    .sort((a, b) => a - b)
    .map((knob) => {
      const thresholds = selected.map(() => knob);
      const o = simulateCascade(exits, selected, thresholds, costs);
      return { knob, thresholds, agreement: o.agreement, macsFraction: o.macsFraction, exitShares: o.exitShares };
    });
}

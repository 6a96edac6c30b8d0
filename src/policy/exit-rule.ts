// Exit rules: how each exit's max-softmax becomes the score that one global knob thresholds, and the mapping of a
// knob back to per-exit max-softmax thresholds (all the runtime ever compares).
import type { CurvePoint } from '../bundle/manifest.js';
import { SelfxitError } from '../errors.js';
import { simulateCascade, type CascadeCosts, type ExitScores } from './cascade-sim.js';
import { selectExits, type SelectExitsOptions, type SelectionResult } from './select-exits.js';
import { NEVER_EXIT, agreementLowerBound, type MarginOptions } from './thresholds.js';

/**
 * - `'global'`: one max-softmax threshold shared by every exit (the SelfXit paper's rule).
 * - `'cost-calibrated'` (default): each exit's max-softmax `s` is mapped to its estimated probability of agreeing
 *   with the backbone, `p = σ(slope · logit(s) + intercept)` (a logistic fit on out-of-fold outputs, 2 parameters per
 *   exit), and a sample leaves at exit j when `(1 − p) / remaining_j <= λ`: the estimated disagreement per unit of
 *   backbone cost still ahead of it. One knob λ for the whole cascade, so it cannot overfit per exit; every λ is one
 *   max-softmax threshold per exit, because the map is increasing in `s`.
 */
export type ThresholdRule = 'global' | 'cost-calibrated';

export const THRESHOLD_RULES: readonly ThresholdRule[] = ['global', 'cost-calibrated'];

/** The increasing map of one exit's max-softmax onto the rule's score: `1 − (1 − σ(slope·logit(s) + intercept)) / remaining`. */
export interface ScoreMap {
  /** Logistic slope on logit(max-softmax); > 0. */
  readonly slope: number;
  readonly intercept: number;
  /** Share of the backbone cost left after this exit's cut, in (0, 1]. */
  readonly remaining: number;
}

/** The identity map (`'global'` rule): the score is the max-softmax itself. */
const IDENTITY: ScoreMap = { slope: 1, intercept: 0, remaining: 1 };
const EPS = 1e-6;
const MIN_SLOPE = 1e-3;
const MIN_REMAINING = 1e-4;

function logit(s: number): number {
  const c = Math.min(1 - EPS, Math.max(EPS, s));
  return Math.log(c / (1 - c));
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

/**
 * Fits `P(agree | s) = σ(slope · logit(s) + intercept)` on one exit's out-of-fold outputs by Newton's method with a
 * small ridge (so all-agree or all-disagree samples still give finite parameters). The slope is kept > 0.
 */
export function fitAgreementLogit(e: ExitScores, ridge = 1e-3): { slope: number; intercept: number } {
  let a = 1;
  let b = 0;
  const z = Float64Array.from(e.score.subarray(0, e.n), logit);
  for (let it = 0; it < 100; it++) {
    let ga = ridge * a;
    let gb = ridge * b;
    let haa = ridge;
    let hab = 0;
    let hbb = ridge;
    for (let i = 0; i < e.n; i++) {
      const zi = z[i]!;
      const p = sigmoid(a * zi + b);
      const r = p - e.agree[i]!;
      const w = p * (1 - p);
      ga += r * zi;
      gb += r;
      haa += w * zi * zi;
      hab += w * zi;
      hbb += w;
    }
    const det = haa * hbb - hab * hab;
    if (!(det > 0)) break;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    a -= da;
    b -= db;
    if (Math.abs(da) + Math.abs(db) < 1e-10) break;
  }
  if (!(Number.isFinite(a) && Number.isFinite(b))) return { slope: 1, intercept: 0 };
  return { slope: Math.max(MIN_SLOPE, a), intercept: b };
}

/** The rule's score of a max-softmax `s` under `map`. */
export function ruleScore(map: ScoreMap, s: number): number {
  const p = sigmoid(map.slope * logit(s) + map.intercept);
  return 1 - (1 - p) / map.remaining;
}

/** Closed-form inverse of {@link ruleScore}: the max-softmax where the rule score reaches `knob` (0 = always, NEVER_EXIT = never). */
export function rawThresholdFor(map: ScoreMap, knob: number): number {
  if (knob >= NEVER_EXIT) return NEVER_EXIT;
  const p = 1 - (1 - knob) * map.remaining;
  if (p <= sigmoid(map.slope * logit(0) + map.intercept)) return 0;
  if (p >= sigmoid(map.slope * logit(1) + map.intercept)) return NEVER_EXIT;
  return sigmoid((logit(p) - map.intercept) / map.slope);
}

/** Score maps of the candidates under a rule; `remainingAt[j]` is the cost share left after candidate j's cut. */
export function scoreMaps(
  rule: ThresholdRule,
  exits: readonly ExitScores[],
  remainingAt: readonly number[],
): ScoreMap[] {
  if (!THRESHOLD_RULES.includes(rule))
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `unknown threshold rule "${String(rule)}" (${THRESHOLD_RULES.join(', ')})`,
    );
  if (rule === 'global') return exits.map(() => IDENTITY);
  return exits.map((e, j) => ({
    ...fitAgreementLogit(e),
    remaining: Math.min(1, Math.max(MIN_REMAINING, remainingAt[j]!)),
  }));
}

/** A candidate's outputs with the score replaced by the rule's score. */
export function mapExitScores(e: ExitScores, map: ScoreMap): ExitScores {
  if (map === IDENTITY) return e;
  return { ...e, score: Float32Array.from(e.score.subarray(0, e.n), (s) => ruleScore(map, s)) };
}

/**
 * The max-softmax threshold of one exit that reproduces `knob` on the validation samples exactly: midway between the
 * highest raw score whose rule score is below the knob and the lowest one at or above it (the map is increasing);
 * the closed-form inverse when every sample falls on one side.
 */
export function rawThresholdOnSamples(raw: ExitScores, mapped: ExitScores, map: ScoreMap, knob: number): number {
  if (knob >= NEVER_EXIT) return NEVER_EXIT;
  if (map === IDENTITY) return knob;
  let below = -Infinity;
  let above = Infinity;
  for (let i = 0; i < raw.n; i++) {
    const s = raw.score[i]!;
    if (mapped.score[i]! >= knob) above = Math.min(above, s);
    else below = Math.max(below, s);
  }
  if (above === Infinity) {
    // No sample reaches the knob: any threshold above every raw score does; prefer the closed form.
    const t = rawThresholdFor(map, knob);
    return t > below ? t : (below + NEVER_EXIT) / 2;
  }
  if (below === -Infinity) return Math.min(rawThresholdFor(map, knob), above);
  return (below + above) / 2;
}

/** A selection whose thresholds, curve and outcome are in max-softmax terms, whatever the rule. */
export interface RuleSelection extends SelectionResult {
  readonly rule: ThresholdRule;
  /** Score map of each selected exit (identity for `'global'`). */
  readonly maps: ScoreMap[];
}

/**
 * Exit selection and thresholds under `rule`: selects on the rule's scores ({@link selectExits}: lowest expected cost
 * whose validation agreement meets the target with the confidence margin), then turns the chosen knob and every
 * curve knob into per-exit max-softmax thresholds and re-simulates them on the raw scores, so what is reported is
 * exactly what the runtime will do on these samples.
 */
export function selectExitsWithRule(
  exits: readonly ExitScores[],
  costs: CascadeCosts,
  options: SelectExitsOptions & { readonly rule?: ThresholdRule },
): RuleSelection {
  const rule = options.rule ?? 'cost-calibrated';
  const remaining = exits.map((_, j) => (costs.fullCost - costs.backboneCostAt[j]!) / costs.fullCost);
  const maps = scoreMaps(rule, exits, remaining);
  const mapped = exits.map((e, j) => mapExitScores(e, maps[j]!));
  const sel = selectExits(mapped, costs, options);
  const toRaw = (knob: number): number[] =>
    sel.selected.map((j) => rawThresholdOnSamples(exits[j]!, mapped[j]!, maps[j]!, knob));
  const selMaps = sel.selected.map((j) => maps[j]!);
  const thresholds = toRaw(sel.knob);
  const o = simulateCascade(exits, sel.selected, thresholds, { ...costs, overhead: sel.overhead });
  const margin: MarginOptions = {
    ...(options.confidence !== undefined ? { confidence: options.confidence } : {}),
    ...(options.bound ? { bound: options.bound } : {}),
  };
  // The curve reports MACs without the per-exit overhead (that term only steers selection), like the manifest.
  const all: CurvePoint[] = sel.curve.map((p) => {
    const th = toRaw(p.knob);
    const c = simulateCascade(exits, sel.selected, th, { ...costs, overhead: 0 });
    return {
      knob: p.knob,
      thresholds: th,
      agreement: c.agreement,
      macsFraction: c.macsFraction,
      exitShares: c.exitShares,
    };
  });
  // Knobs that decide every validation sample as the chosen one does are dropped, so that re-choosing the calibration
  // target from the curve (pickCurvePoint) returns the chosen thresholds themselves.
  const same = (p: CurvePoint): boolean =>
    p.knob !== sel.knob && p.agreement === o.agreement && p.exitShares.every((x, j) => x === o.exitShares[j]);
  const curve = all.filter((p) => !same(p));
  return {
    ...sel,
    rule,
    maps: selMaps,
    thresholds,
    agreement: o.agreement,
    agreementLowerBound:
      o.exitShares[o.exitShares.length - 1] === 1 ? 1 : agreementLowerBound(o.n - o.disagreements, o.n, margin),
    macsFraction: o.macsFraction,
    exitShares: o.exitShares,
    curve,
  };
}

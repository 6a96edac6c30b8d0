// A device's exit plan: exits and thresholds chosen again from the bundle's validation outputs with the stage times
// measured on this device and backend (instead of MACs), for one agreement target. Pure; the worker measures, caches.
import type { BundleManifest, CurvePoint } from '../bundle/manifest.js';
import type { CostTable } from './cost-table.js';
import type { ValidationExit } from '../bundle/validation-file.js';
import { SelfxitError } from '../errors.js';
import { simulateCascade, type CascadeCosts, type ExitScores } from './cascade-sim.js';
import { selectExitsWithRule } from './exit-rule.js';
import { NEVER_EXIT } from './thresholds.js';

/** What a device measured, per sample at batch 1, in ms. */
export interface StageTimings {
  /** Per segment: one run of the segment (with its fused head) without reading the exit output. */
  readonly stageMs: readonly number[];
  /** Per segment: what reading the exit output and deciding adds (0 for a segment without an exit). */
  readonly decisionMs: readonly number[];
  /**
   * Per segment: what using its exit costs a sample that passes it without leaving, measured (the compiled engine:
   * its gated head, decision and `If`; 0 for a segment without an exit). When present, `stageMs` holds no head time
   * (a disabled exit skips its head) and exit selection charges this per exit passed. Absent (the stage engine, whose
   * fused heads run whether used or not, and plans made before it existed): heads are inside `stageMs`.
   */
  readonly exitMs?: readonly number[];
}

/** The plan for one bundle on one device, backend, thread count (and engine). Plain data: cached in IndexedDB. */
export interface DevicePlan {
  readonly version: 1;
  /** sha256 of the manifest text the plan was made for. */
  readonly manifestHash: string;
  readonly backend: string;
  readonly threads: number;
  /**
   * The engine of single-input calls the times were measured on (the browser runtime sets it; absent: not known, e.g.
   * a plan made by `planExits()` directly). The page drops a plan whose engine is no longer the one running.
   */
  readonly engine?: 'compiled' | 'stages';
  /** ISO time of the measurement. */
  readonly measuredAt: string;
  readonly timings: StageTimings;
  /** Agreement target the thresholds were chosen for. */
  readonly target: number;
  /** Per bundle exit: used (false: its output is never read, its threshold is NEVER_EXIT). */
  readonly enabled: readonly boolean[];
  /** Per bundle exit. */
  readonly thresholds: readonly number[];
  /** Validation agreement and MACs fraction at these thresholds. */
  readonly expectedAgreement: number;
  readonly expectedMacsFraction: number;
  /** Expected ms per sample at these thresholds / ms of every segment without any exit decision. */
  readonly expectedMsFraction: number;
  /** Knob curve with thresholds for every bundle exit (MACs fractions), for setTarget() under this plan. */
  readonly curve: readonly CurvePoint[];
}

export interface PlanOptions {
  readonly target: number;
  readonly manifestHash: string;
  readonly backend: string;
  readonly threads: number;
  /** Default now. */
  readonly measuredAt?: string;
}

function toScores(v: ValidationExit): ExitScores {
  return { n: v.score.length, score: v.score, pred: new Int32Array(v.score.length), agree: v.agree };
}

/**
 * Checks that `timings` cover the manifest's segments with finite times >= 0 (`exitMs` too, when present).
 * @throws SelfxitError INVALID_ARGUMENT otherwise.
 */
function checkTimings(manifest: Pick<BundleManifest, 'segments'>, timings: StageTimings): void {
  const n = manifest.segments.length;
  const { stageMs, decisionMs, exitMs } = timings;
  if (stageMs.length !== n || decisionMs.length !== n || (exitMs !== undefined && exitMs.length !== n))
    throw new SelfxitError('INVALID_ARGUMENT', `timings cover ${stageMs.length} segments, the bundle has ${n}`);
  if (![...stageMs, ...decisionMs, ...(exitMs ?? [])].every((t) => Number.isFinite(t) && t >= 0))
    throw new SelfxitError('INVALID_ARGUMENT', 'timings must be finite and >= 0');
}

/**
 * Chooses which of the bundle's exits to use and their thresholds by measured time: the same selection and rule as
 * calibration (exit-rule.ts, the manifest's `thresholdRule`), on the bundle's validation outputs, with the cost of
 * leaving at exit j = the stages up to its segment + what the exits used before it and at it cost (`decisionMs`, plus
 * `exitMs` when measured). An exit whose cost for the samples that pass it exceeds the time it saves the samples that
 * leave there is dropped.
 * @throws SelfxitError INVALID_ARGUMENT when the timings or validation data do not fit the manifest.
 */
export function planExits(
  manifest: BundleManifest,
  validation: readonly ValidationExit[],
  timings: StageTimings,
  options: PlanOptions,
): DevicePlan {
  const { segments, exits } = manifest;
  checkTimings(manifest, timings);
  if (validation.length !== exits.length)
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `validation data for ${validation.length} exits, the bundle has ${exits.length}`,
    );
  const scores = validation.map(toScores);
  const upTo = (s: number, per: (i: number) => number): number => {
    let t = 0;
    for (let i = 0; i <= s; i++) t += per(i);
    return t;
  };
  const fullMs = upTo(segments.length - 1, (i) => timings.stageMs[i]!);
  const msCosts: CascadeCosts = {
    backboneCostAt: exits.map((e) => upTo(e.segment, (i) => timings.stageMs[i]!)),
    headCost: exits.map((e) => timings.decisionMs[e.segment]! + (timings.exitMs?.[e.segment] ?? 0)),
    fullCost: Math.max(fullMs, 1e-9),
  };
  const sel = selectExitsWithRule(scores, msCosts, {
    target: options.target,
    overhead: 0,
    rule: manifest.calibration.thresholdRule ?? 'global',
  });
  const full = (th: readonly number[]): number[] => {
    const out = exits.map(() => NEVER_EXIT);
    sel.selected.forEach((j, k) => (out[j] = th[k]!));
    return out;
  };
  // MACs as the manifest counts them: every fused head up to the segment where a sample leaves runs, used or not.
  const noExitFraction = segments.reduce((a, g) => a + g.macs + g.headMacs, 0) / manifest.backbone.macs;
  const macsOf = (th: readonly number[]): { agreement: number; macsFraction: number; exitShares: number[] } => {
    const o = simulateCascade(scores, sel.selected, th, { ...msCosts, overhead: 0 });
    const shares = expandShares(o.exitShares, sel.selected, exits.length);
    const macsFraction = shares.reduce(
      (a, sh, j) => a + sh * (j < exits.length ? exits[j]!.macsFraction : noExitFraction),
      0,
    );
    return { agreement: o.agreement, macsFraction, exitShares: shares };
  };
  const chosen = macsOf(sel.thresholds);
  const curve = sel.curve.map((p) => ({ knob: p.knob, thresholds: full(p.thresholds), ...macsOf(p.thresholds) }));
  return {
    version: 1,
    manifestHash: options.manifestHash,
    backend: options.backend,
    threads: options.threads,
    measuredAt: options.measuredAt ?? new Date().toISOString(),
    timings: {
      stageMs: [...timings.stageMs],
      decisionMs: [...timings.decisionMs],
      ...(timings.exitMs ? { exitMs: [...timings.exitMs] } : {}),
    },
    target: options.target,
    enabled: exits.map((_, j) => sel.selected.includes(j)),
    thresholds: full(sel.thresholds),
    expectedAgreement: chosen.agreement,
    expectedMacsFraction: chosen.macsFraction,
    expectedMsFraction: simulateCascade(scores, sel.selected, sel.thresholds, msCosts).macsFraction,
    curve,
  };
}

/** Shares over the selected exits (+ backbone) spread onto every bundle exit (+ backbone), 0 for unused exits. */
function expandShares(shares: readonly number[], selected: readonly number[], exits: number): number[] {
  const out = new Array<number>(exits + 1).fill(0);
  selected.forEach((j, k) => (out[j] = shares[k]!));
  out[exits] = shares[shares.length - 1]!;
  return out;
}

/**
 * The cost table (`selfxit prepare --cost-table <json>`, {@link CostTable}) that a device plan's measured times give,
 * so that a bundle can be prepared again for that device's timings. Per sample, in ms:
 * - with `exitMs` measured (the compiled engine): `stageMs` are the backbone parts and `heads[exit.cut]` = the exit's
 *   `exitMs` (what passing it costs: head, decision, `If`);
 * - without (the stage engine): each segment's `stageMs` is split between its backbone part and its fused head in
 *   proportion to their MACs (the plan times them as one run), `heads[exit.cut]` = the head part of that segment;
 * - `backbone` = the backbone parts of every segment; `cuts[exit.cut]` = those up to and including the exit's segment;
 * - `overhead` = the mean `decisionMs` of the exits (reading the exit output back and deciding), per exit passed.
 * The session boundaries' own cost is measured inside the segments, so it lands in the backbone and cut costs.
 * Cuts the bundle has no exit at are left to `prepare`'s default (backbone × MACs fraction). Pure.
 * @throws SelfxitError INVALID_ARGUMENT when the timings do not fit the manifest or give no positive backbone time.
 */
export function costTableFromPlan(manifest: BundleManifest, plan: { readonly timings: StageTimings }): CostTable {
  const { segments, exits } = manifest;
  const { stageMs, decisionMs, exitMs } = plan.timings;
  checkTimings(manifest, plan.timings);
  const backboneShare = segments.map((g) =>
    exitMs || !(g.macs + g.headMacs > 0) ? 1 : g.macs / (g.macs + g.headMacs),
  );
  const backboneMs = segments.map((_, s) => stageMs[s]! * backboneShare[s]!);
  const backbone = backboneMs.reduce((a, b) => a + b, 0);
  if (!(backbone > 0)) throw new SelfxitError('INVALID_ARGUMENT', 'the timings give no positive backbone time');
  const cuts: Record<string, number> = {};
  const heads: Record<string, number> = {};
  for (const e of exits) {
    cuts[e.cut] = backboneMs.slice(0, e.segment + 1).reduce((a, b) => a + b, 0);
    heads[e.cut] = exitMs ? exitMs[e.segment]! : stageMs[e.segment]! * (1 - backboneShare[e.segment]!);
  }
  const decisions = exits.map((e) => decisionMs[e.segment]!);
  return {
    unit: 'ms',
    backbone,
    ...(exits.length ? { cuts, heads, overhead: decisions.reduce((a, b) => a + b, 0) / decisions.length } : {}),
  };
}

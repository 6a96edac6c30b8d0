import { describe, expect, it } from 'vitest';
import { simulateCascade, type ExitScores } from '../src/policy/cascade-sim.js';
import {
  fitAgreementLogit,
  mapExitScores,
  rawThresholdFor,
  ruleScore,
  scoreMaps,
  selectExitsWithRule,
} from '../src/policy/exit-rule.js';
import { pickCurvePoint } from '../src/policy/curve.js';
import { createRng } from '../src/calibrate/rng.js';
import { selectExits } from '../src/policy/select-exits.js';
import { agreementLowerBound, NEVER_EXIT } from '../src/policy/thresholds.js';
import { candidateTable, evenCosts } from './calibrate-fixtures.js';

/** An exit whose agreement follows σ(slope·logit(s) + intercept) exactly in expectation. */
function logisticExit(n: number, slope: number, intercept: number, seed: number, scoreShift = 0): ExitScores {
  const rng = createRng(seed);
  const score = new Float32Array(n);
  const agree = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const z = 3 * rng.normal() + scoreShift;
    const s = 1 / (1 + Math.exp(-z));
    score[i] = Math.min(0.999999, Math.max(0.1, s));
    const p = 1 / (1 + Math.exp(-(slope * Math.log(score[i]! / (1 - score[i]!)) + intercept)));
    agree[i] = rng.next() < p ? 1 : 0;
  }
  return { n, score, pred: Int32Array.from(agree, (a) => (a ? 0 : 1)), agree };
}

describe('cost-calibrated exit rule', () => {
  it('fitAgreementLogit recovers the parameters of a logistic agreement curve', () => {
    const f = fitAgreementLogit(logisticExit(20000, 0.8, 1.5, 1));
    expect(f.slope).toBeCloseTo(0.8, 1);
    expect(f.intercept).toBeCloseTo(1.5, 1);
  });

  it('stays finite and increasing when every sample agrees', () => {
    const e = logisticExit(500, 1, 0, 2);
    const f = fitAgreementLogit({ ...e, agree: new Uint8Array(e.n).fill(1) });
    expect(Number.isFinite(f.intercept)).toBe(true);
    expect(f.slope).toBeGreaterThan(0);
  });

  it('rawThresholdFor inverts ruleScore', () => {
    const map = { slope: 0.7, intercept: 0.4, remaining: 0.35 };
    for (const s of [0.3, 0.6, 0.9, 0.97, 0.995]) expect(rawThresholdFor(map, ruleScore(map, s))).toBeCloseTo(s, 6);
    expect(rawThresholdFor(map, NEVER_EXIT)).toBe(NEVER_EXIT);
  });

  it('the max-softmax thresholds reproduce the knob on the validation samples exactly, and meet the target with margin', () => {
    const exits = candidateTable(5000, 6, 3);
    const costs = evenCosts(6);
    for (const target of [0.9, 0.97]) {
      const r = selectExitsWithRule(exits, costs, { target, rule: 'cost-calibrated', overhead: 0.01 });
      expect(r.selected.length).toBeGreaterThan(0);
      const maps = scoreMaps(
        'cost-calibrated',
        exits,
        exits.map((_, j) => (costs.fullCost - costs.backboneCostAt[j]!) / costs.fullCost),
      );
      const mapped = exits.map((e, j) => mapExitScores(e, maps[j]!));
      const byKnob = simulateCascade(
        mapped,
        r.selected,
        r.selected.map(() => r.knob),
        { ...costs, overhead: 0.01 },
      );
      const byRaw = simulateCascade(exits, r.selected, r.thresholds, { ...costs, overhead: 0.01 });
      expect(byRaw.exitShares).toEqual(byKnob.exitShares);
      expect(byRaw.disagreements).toBe(byKnob.disagreements);
      expect(agreementLowerBound(byRaw.n - byRaw.disagreements, byRaw.n)).toBeGreaterThanOrEqual(target);
      expect(r.agreementLowerBound).toBeGreaterThanOrEqual(target);
      // every curve point is stated in max-softmax thresholds and re-simulates to its own numbers
      for (const p of r.curve) {
        const o = simulateCascade(exits, r.selected, p.thresholds, { ...costs, overhead: 0 });
        expect(o.agreement).toBe(p.agreement);
        expect(o.macsFraction).toBeCloseTo(p.macsFraction, 12);
      }
      expect(r.curve.some((p) => p.knob === r.knob)).toBe(true);
      // the calibration target, re-chosen from the curve with the same margin, gives back the chosen thresholds
      expect(pickCurvePoint(r.curve, target, { samples: exits[0]!.n }).point.thresholds).toEqual(r.thresholds);
    }
  });

  it("'global' is plain selectExits with one shared threshold", () => {
    const exits = candidateTable(3000, 5, 4);
    const costs = evenCosts(5);
    const a = selectExitsWithRule(exits, costs, { target: 0.95, rule: 'global', overhead: 0.01 });
    const b = selectExits(exits, costs, { target: 0.95, overhead: 0.01 });
    expect(a.selected).toEqual(b.selected);
    expect(a.thresholds).toEqual(b.thresholds);
    expect(new Set(a.thresholds).size).toBeLessThanOrEqual(1);
  });

  // Thresholds are chosen on out-of-fold outputs of the calibration samples; the target is a promise about new inputs.
  // Fit on one half of simulated outputs, measure the cascade at the chosen thresholds on the other half: the held-out
  // agreement must reach the target within one binomial standard deviation of a held-out estimate,
  // sqrt(t (1 - t) / n) (0.001 at t = 0.99, n = 10,000); the fit half's margin (~1.6 sd) is what makes that hold.
  const splitHalves = (both: readonly ExitScores[], n: number): [ExitScores[], ExitScores[]] => {
    const half = (lo: number): ExitScores[] =>
      both.map((e) => ({
        n,
        score: e.score.slice(lo, lo + n),
        pred: e.pred.slice(lo, lo + n),
        agree: e.agree.slice(lo, lo + n),
      }));
    return [half(0), half(n)];
  };
  const heldOutTolerance = (target: number, n: number): number => Math.sqrt((target * (1 - target)) / n);

  it('holds the target on unseen samples (fit on one half, evaluate on the other): graded candidate exits', () => {
    const n = 10000;
    const E = 6;
    const costs = evenCosts(E);
    const [fit, held] = splitHalves(candidateTable(2 * n, E, 9), n);
    for (const target of [0.95, 0.97, 0.99]) {
      const r = selectExitsWithRule(fit, costs, { target, rule: 'cost-calibrated', overhead: 1 });
      expect(r.rule).toBe('cost-calibrated');
      expect(r.selected.length).toBeGreaterThan(0);
      expect(r.agreement).toBeGreaterThan(target + 0.001);
      const o = simulateCascade(held, r.selected, r.thresholds, { ...costs, overhead: r.overhead });
      expect(o.agreement, `target ${target}`).toBeGreaterThanOrEqual(target - heldOutTolerance(target, n));
      // and the saving carries over too
      expect(Math.abs(o.macsFraction - r.macsFraction)).toBeLessThan(0.02);
    }
  });

  it('holds the target on unseen samples when the exits are calibrated differently (per-exit maps fit on the fit half only)', () => {
    const n = 10000;
    // Exit 0 over-confident, exit 1 under-confident: the rule's thresholds differ per exit, from the fitted maps.
    const [fit, held] = splitHalves([logisticExit(2 * n, 0.6, -0.8, 5), logisticExit(2 * n, 1.5, 2.5, 6, 1)], n);
    const costs = { backboneCostAt: [0.3, 0.7], headCost: [0.01, 0.01], fullCost: 1 };
    for (const target of [0.9, 0.95, 0.98]) {
      const r = selectExitsWithRule(fit, costs, { target, rule: 'cost-calibrated', overhead: 0 });
      expect(r.selected).toEqual([0, 1]);
      expect(r.thresholds[0]).toBeGreaterThan(r.thresholds[1]! + 0.1);
      expect(r.agreement).toBeGreaterThan(target);
      const o = simulateCascade(held, r.selected, r.thresholds, { ...costs, overhead: 0 });
      expect(o.agreement, `target ${target}`).toBeGreaterThanOrEqual(target - heldOutTolerance(target, n));
      expect(Math.abs(o.macsFraction - r.macsFraction)).toBeLessThan(0.02);
    }
  });

  it('is cheaper than one shared threshold when the exits are calibrated differently', () => {
    // Exit 0 (cheap) is over-confident, exit 1 (deep) under-confident: a shared max-softmax threshold cannot suit both.
    const n = 8000;
    const exits = [logisticExit(n, 0.6, -0.8, 5), logisticExit(n, 1.5, 2.5, 6, 1)];
    const costs = { backboneCostAt: [0.3, 0.7], headCost: [0.01, 0.01], fullCost: 1 };
    const g = selectExitsWithRule(exits, costs, { target: 0.95, rule: 'global', overhead: 0 });
    const c = selectExitsWithRule(exits, costs, { target: 0.95, rule: 'cost-calibrated', overhead: 0 });
    expect(c.agreementLowerBound).toBeGreaterThanOrEqual(0.95);
    expect(c.macsFraction).toBeLessThan(g.macsFraction - 0.01);
  });
});

import { describe, expect, it } from 'vitest';
import { simulateCascade } from '../src/policy/cascade-sim.js';
import {
  NEVER_EXIT,
  agreementLowerBound,
  chooseThresholds,
  maxDisagreements,
  normalQuantile,
  thresholdCurve,
} from '../src/policy/thresholds.js';
import { pickCurvePoint } from '../src/policy/curve.js';
import { isSelfxitError } from '../src/errors.js';
import { FEW_DISAGREEMENTS, fewSamplesWarning } from '../src/calibrate/selfxit-mode.js';
import { candidateTable, evenCosts } from './calibrate-fixtures.js';

describe('agreement bounds', () => {
  it('normal quantile', () => {
    expect(normalQuantile(0.975)).toBeCloseTo(1.959963984540054, 7);
    expect(normalQuantile(0.001)).toBeCloseTo(-3.090232306167813, 7);
  });
  it('Wilson and Clopper-Pearson match reference values (scipy)', () => {
    const ref: [number, number, number, number][] = [
      [95, 100, 0.9008389147209472, 0.8977466223567255],
      [990, 1000, 0.9833430074776348, 0.9830968248794375],
      [9900, 10000, 0.9882257184295474, 0.9882027660286524],
      [10, 10, 0.7870580299165931, 0.7411344491069477],
    ];
    for (const [a, n, w, cp] of ref) {
      expect(agreementLowerBound(a, n)).toBeCloseTo(w, 9);
      expect(agreementLowerBound(a, n, { bound: 'clopper-pearson' })).toBeCloseTo(cp, 8);
    }
    expect(agreementLowerBound(95, 100, { confidence: 0 })).toBe(0.95);
  });
  it('maxDisagreements is the largest count whose bound meets the target', () => {
    const d = maxDisagreements(10000, 0.99);
    expect(agreementLowerBound(10000 - d, 10000)).toBeGreaterThanOrEqual(0.99);
    expect(agreementLowerBound(10000 - d - 1, 10000)).toBeLessThan(0.99);
    expect(maxDisagreements(100, 1)).toBe(-1);
    expect(maxDisagreements(100, 0.9, { confidence: 0 })).toBe(10);
  });
});

const n = 4000;
const exits = candidateTable(n, 5, 2);
const costs = evenCosts(5, 1);
const sel = [1, 3];

describe('chooseThresholds (global)', () => {
  it('is the cheapest shared threshold meeting the target with margin (vs a brute-force scan)', () => {
    for (const target of [0.9, 0.95, 0.98]) {
      const c = chooseThresholds(exits, sel, costs, { target });
      expect(c.agreement).toBeGreaterThanOrEqual(target);
      expect(c.agreementLowerBound).toBeGreaterThanOrEqual(target);
      expect(c.thresholds).toEqual([c.knob, c.knob]);
      let bestCost = simulateCascade(exits, sel, [NEVER_EXIT, NEVER_EXIT], costs).macsFraction;
      const values = new Set<number>();
      for (const e of sel) for (const v of exits[e]!.score) values.add(v);
      for (const t of values) {
        const o = simulateCascade(exits, sel, [t, t], costs);
        if (agreementLowerBound(n - o.disagreements, n) >= target) bestCost = Math.min(bestCost, o.macsFraction);
      }
      expect(c.macsFraction).toBeCloseTo(bestCost, 12);
      expect(c.feasible).toBe(true);
    }
  });
  it('is monotone in the target', () => {
    let prev = { knob: -1, macsFraction: -1 };
    for (const target of [0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 1]) {
      const c = chooseThresholds(exits, sel, costs, { target });
      expect(c.knob).toBeGreaterThanOrEqual(prev.knob);
      expect(c.macsFraction).toBeGreaterThanOrEqual(prev.macsFraction - 1e-12);
      prev = c;
    }
    expect(prev.knob).toBe(NEVER_EXIT);
    expect(chooseThresholds(exits, sel, costs, { target: 1 }).feasible).toBe(false);
  });
  it('the margin costs something: without it the threshold is lower or equal', () => {
    const withM = chooseThresholds(exits, sel, costs, { target: 0.95 });
    const noM = chooseThresholds(exits, sel, costs, { target: 0.95, confidence: 0 });
    const cp = chooseThresholds(exits, sel, costs, { target: 0.95, bound: 'clopper-pearson' });
    expect(noM.knob).toBeLessThanOrEqual(withM.knob);
    expect(noM.agreement).toBeGreaterThanOrEqual(0.95);
    expect(cp.knob).toBeGreaterThanOrEqual(withM.knob);
  });
  it('per-exit thresholds meet the target and cost no more than the global one', () => {
    const g = chooseThresholds(exits, sel, costs, { target: 0.95 });
    const p = chooseThresholds(exits, sel, costs, { target: 0.95, perExit: true });
    expect(p.agreementLowerBound).toBeGreaterThanOrEqual(0.95);
    expect(p.macsFraction).toBeLessThanOrEqual(g.macsFraction + 1e-12);
  });
  it('rejects targets outside (0, 1] with INVALID_TARGET', () => {
    for (const target of [0, 1.01, NaN]) {
      try {
        chooseThresholds(exits, sel, costs, { target });
        expect.unreachable();
      } catch (e) {
        expect(isSelfxitError(e, 'INVALID_TARGET')).toBe(true);
      }
    }
  });
});

describe('thresholdCurve / pickCurvePoint', () => {
  const choice = chooseThresholds(exits, sel, costs, { target: 0.95 });
  const curve = thresholdCurve(exits, sel, costs, { points: 50, extraKnobs: [choice.knob] });
  it('is ascending in the knob, consistent with the simulator, and ends at the backbone', () => {
    expect(curve.length).toBeGreaterThan(30);
    for (let i = 1; i < curve.length; i++) expect(curve[i]!.knob).toBeGreaterThan(curve[i - 1]!.knob);
    const last = curve[curve.length - 1]!;
    expect(last.knob).toBe(NEVER_EXIT);
    expect(last.agreement).toBe(1);
    expect(last.exitShares).toEqual([0, 0, 1]);
    const mid = curve[20]!;
    const o = simulateCascade(exits, sel, mid.thresholds, costs);
    expect(mid.agreement).toBe(o.agreement);
    expect(mid.macsFraction).toBe(o.macsFraction);
  });
  it('re-choosing the calibration target from the curve (with the sample count) finds the chosen setting', () => {
    const p = pickCurvePoint(curve, 0.95, { samples: n }).point;
    expect(p.knob).toBe(choice.knob);
    expect(p.macsFraction).toBeCloseTo(choice.macsFraction, 12);
  });
  it('another target picks the cheapest qualifying point; unreachable targets fall back to the backbone', () => {
    const p = pickCurvePoint(curve, 0.9).point;
    expect(p.agreement).toBeGreaterThanOrEqual(0.9);
    for (const q of curve)
      if (q.agreement >= 0.9) expect(q.macsFraction).toBeGreaterThanOrEqual(p.macsFraction - 1e-12);
    expect(pickCurvePoint(curve, 1, { samples: n }).point.knob).toBe(NEVER_EXIT);
  });
});

describe('fewSamplesWarning (prepare warns when the promise rests on too few disagreements)', () => {
  it('warns at 0.99 below 888 samples, where the bound allows fewer than 4 disagreements out of fold', () => {
    expect(maxDisagreements(887, 0.99)).toBeLessThan(FEW_DISAGREEMENTS);
    expect(maxDisagreements(888, 0.99)).toBe(FEW_DISAGREEMENTS);
    expect(fewSamplesWarning(887, 0.99)).toMatch(/at most 3 of them/);
    expect(fewSamplesWarning(400, 0.99)).toMatch(
      /With 400 samples, target 0.99 .* at most 0 of them .* at least 1000 samples/,
    );
    expect(fewSamplesWarning(800, 0.99)).toMatch(/at most 3 of them/);
    expect(fewSamplesWarning(888, 0.99)).toBeUndefined();
    expect(fewSamplesWarning(10000, 0.99)).toBeUndefined();
  });
  it('scales with the target and says nothing at target 1', () => {
    expect(fewSamplesWarning(175, 0.95)).toBeUndefined();
    expect(fewSamplesWarning(60, 0.95)).toMatch(/at least 200 samples/);
    expect(fewSamplesWarning(100, 1)).toBeUndefined();
  });
});

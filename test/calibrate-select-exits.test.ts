import { describe, expect, it } from 'vitest';
import { simulateCascade } from '../src/policy/cascade-sim.js';
import { chooseThresholds } from '../src/policy/thresholds.js';
import { paperCascade, selectExits } from '../src/policy/select-exits.js';
import { candidateTable, evenCosts } from './calibrate-fixtures.js';

const n = 4000;
const E = 6;
const exits = candidateTable(n, E, 5);
const costs = evenCosts(E);
const overhead = 1; // 1 % of fullCost = 100

describe('selectExits', () => {
  for (const target of [0.9, 0.98]) {
    it(`target ${target}: never worse than all exits or no exits, and optimal among all ${2 ** E} subsets`, () => {
      const r = selectExits(exits, costs, { target });
      expect(r.overhead).toBe(overhead);
      expect(r.agreementLowerBound).toBeGreaterThanOrEqual(target);
      expect(r.macsFraction).toBeLessThanOrEqual(1);
      const c = { ...costs, overhead };
      const all = chooseThresholds(exits, [...Array(E).keys()], c, { target });
      expect(r.macsFraction).toBeLessThanOrEqual(all.macsFraction + 1e-12);
      let best = Infinity;
      for (let mask = 0; mask < 2 ** E; mask++) {
        const s = [...Array(E).keys()].filter((e) => mask & (1 << e));
        best = Math.min(best, chooseThresholds(exits, s, c, { target }).macsFraction);
      }
      expect(r.macsFraction).toBeLessThanOrEqual(best + 1e-9);
      const again = simulateCascade(exits, r.selected, r.thresholds, c);
      expect(again.macsFraction).toBeCloseTo(r.macsFraction, 12);
      expect(r.exitShares).toEqual(again.exitShares);
      expect(r.selected).toEqual([...r.selected].sort((a, b) => a - b));
      expect(r.curve.some((p) => p.knob === r.knob)).toBe(true);
    });
  }
  it('is deterministic', () => {
    const a = selectExits(exits, costs, { target: 0.95 });
    const b = selectExits(exits, costs, { target: 0.95 });
    expect(b.selected).toEqual(a.selected);
    expect(b.thresholds).toEqual(a.thresholds);
  });
  it('respects maxExits', () => {
    const r = selectExits(exits, costs, { target: 0.9, maxExits: 1 });
    expect(r.selected.length).toBeLessThanOrEqual(1);
  });
  it('large overhead or an unreachable target selects no exits', () => {
    expect(selectExits(exits, costs, { target: 0.95, overhead: 60 }).selected).toEqual([]);
    const r = selectExits(exits, costs, { target: 1 });
    expect(r).toMatchObject({ selected: [], thresholds: [], agreement: 1, macsFraction: 1, exitShares: [1] });
  });
  it('no candidates: no exits, full cost', () => {
    const r = selectExits([], { backboneCostAt: [], headCost: [], fullCost: 5 }, { target: 0.99 });
    expect(r).toMatchObject({ selected: [], thresholds: [], agreement: 1, macsFraction: 1, exitShares: [1] });
    expect(r.curve.length).toBe(1);
  });
  it('holds the target on unseen samples (fit on one half, evaluate on the other)', () => {
    const both = candidateTable(20000, E, 9);
    const half = (lo: number) =>
      both.map((e) => ({
        n: 10000,
        score: e.score.slice(lo, lo + 10000),
        pred: e.pred.slice(lo, lo + 10000),
        agree: e.agree.slice(lo, lo + 10000),
      }));
    const fit = half(0);
    const held = half(10000);
    for (const target of [0.95, 0.97, 0.99]) {
      const r = selectExits(fit, costs, { target });
      expect(r.selected.length).toBeGreaterThan(0);
      const o = simulateCascade(held, r.selected, r.thresholds, { ...costs, overhead: r.overhead });
      // The margin puts the fit-half agreement ~1.6 sd above the target; the held-out half stays above it.
      expect(r.agreement).toBeGreaterThan(target + 0.001);
      expect(o.agreement).toBeGreaterThanOrEqual(target - 0.001);
    }
  });
});

describe('paperCascade', () => {
  it('fixed exits, one threshold, same structure', () => {
    const r = paperCascade(exits, costs, { threshold: 0.9, selected: [0, 2, 4] });
    expect(r.thresholds).toEqual([0.9, 0.9, 0.9]);
    const o = simulateCascade(exits, [0, 2, 4], [0.9, 0.9, 0.9], { ...costs, overhead: 0 });
    expect(r.agreement).toBe(o.agreement);
    expect(r.macsFraction).toBe(o.macsFraction);
    expect(paperCascade(exits, costs).selected).toEqual([...Array(E).keys()]);
  });
});

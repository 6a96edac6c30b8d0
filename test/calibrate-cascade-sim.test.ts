import { describe, expect, it } from 'vitest';
import {
  argmaxRows,
  exitScores,
  exitStatsOf,
  pathCosts,
  simulateCascade,
  type CascadeCosts,
  type ExitScores,
} from '../src/policy/cascade-sim.js';
import { createRng } from '../src/calibrate/rng.js';
import { candidateTable, evenCosts } from './calibrate-fixtures.js';

/** Per-sample brute force of the cost model, written independently of the simulator. */
function bruteForce(exits: ExitScores[], sel: number[], th: number[], c: CascadeCosts) {
  const n = exits[0]!.n;
  let agree = 0;
  let cost = 0;
  const shares = new Array(sel.length + 1).fill(0);
  for (let i = 0; i < n; i++) {
    let paid = 0;
    let left = -1;
    for (let j = 0; j < sel.length; j++) {
      const e = sel[j]!;
      paid += c.headCost[e]! + (c.overhead ?? 0);
      if (exits[e]!.score[i]! >= th[j]!) {
        left = j;
        paid += c.backboneCostAt[e]!;
        break;
      }
    }
    if (left < 0) paid += c.fullCost;
    cost += paid;
    shares[left < 0 ? sel.length : left]++;
    agree += left < 0 ? 1 : exits[sel[left]!]!.agree[i]!;
  }
  return { agreement: agree / n, macsFraction: cost / n / c.fullCost, exitShares: shares.map((s) => s / n) };
}

describe('simulateCascade', () => {
  const exits = candidateTable(3000, 6, 1);
  const costs = evenCosts(6, 0.7);
  const rng = createRng(4);
  for (let trial = 0; trial < 6; trial++) {
    const sel = [0, 1, 2, 3, 4, 5].filter(() => rng.next() < 0.6);
    const th = sel.map(() => 0.3 + 0.7 * rng.next());
    it(`matches a per-sample brute force (exits ${sel.join(',') || 'none'})`, () => {
      const got = simulateCascade(exits, sel, th, costs);
      const want = bruteForce(exits, sel, th, costs);
      expect(got.agreement).toBeCloseTo(want.agreement, 12);
      expect(got.macsFraction).toBeCloseTo(want.macsFraction, 10);
      got.exitShares.forEach((s, j) => expect(s).toBeCloseTo(want.exitShares[j]!, 12));
      expect(got.disagreements).toBe(Math.round((1 - want.agreement) * 3000));
    });
  }
  it('no exits: agreement 1, cost 1', () => {
    const o = simulateCascade(exits, [], [], costs);
    expect(o).toMatchObject({ agreement: 1, macsFraction: 1, exitShares: [1] });
  });
  it('path costs follow the cost model', () => {
    const c = { backboneCostAt: [10, 30, 60], headCost: [1, 2, 3], fullCost: 100, overhead: 0.5 };
    expect(Array.from(pathCosts([0, 2], c))).toEqual([10 + 1 + 0.5, 60 + 1 + 3 + 1, 100 + 4 + 1]);
  });
  it('rejects unsorted or unknown exits', () => {
    expect(() => simulateCascade(exits, [2, 1], [0.5, 0.5], costs)).toThrow(/increasing/);
    expect(() => simulateCascade(exits, [9], [0.5], costs)).toThrow(/candidate/);
    expect(() => simulateCascade(exits, [1], [], costs)).toThrow(/thresholds/);
  });
});

describe('exitScores', () => {
  it('precomputes max prob, argmax and agreement', () => {
    const probs = Float32Array.from([0.1, 0.7, 0.2, 0.5, 0.2, 0.3, 0.3, 0.3, 0.4]);
    const teacher = argmaxRows(Float32Array.from([0, 1, 0, 0, 0, 1, 0, 0, 1]), 3, 3);
    const s = exitScores(probs, 3, 3, teacher);
    expect(Array.from(s.pred)).toEqual([1, 0, 2]);
    expect(Array.from(s.agree)).toEqual([1, 0, 1]);
    expect(s.score[0]).toBeCloseTo(0.7);
    const st = exitStatsOf(s);
    expect(st.agreement).toBeCloseTo(2 / 3);
    expect(st.meanScore).toBeCloseTo((0.7 + 0.5 + 0.4) / 3, 6);
  });
});

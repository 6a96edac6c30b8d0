import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { decodeValidation, encodeValidation } from '../src/bundle/validation-file.js';
import { simulateCascade } from '../src/policy/cascade-sim.js';
import { planExits, type StageTimings } from '../src/policy/device-plan.js';
import { selectExitsWithRule } from '../src/policy/exit-rule.js';
import { agreementLowerBound, NEVER_EXIT } from '../src/policy/thresholds.js';
import { candidateTable } from './calibrate-fixtures.js';

// A bundle of 4 segments with exits after segments 0, 1, 2 (MACs 25 each, heads 1), and validation outputs.
const n = 6000;
const table = candidateTable(n, 3, 11);
const validation = table.map((e) => ({ score: e.score, agree: e.agree }));
const manifest = {
  backbone: { macs: 100 },
  segments: [0, 1, 2, 3].map((i) => ({ macs: 25, headMacs: i < 3 ? 1 : 0, ...(i < 3 ? { exit: i } : {}) })),
  exits: [0, 1, 2].map((j) => ({
    name: `e${j}`,
    segment: j,
    threshold: 0.9,
    macsFraction: (25 * (j + 1) + (j + 1)) / 100,
  })),
  calibration: { samples: n, thresholdRule: 'cost-calibrated' },
} as unknown as BundleManifest;
const opts = { target: 0.95, manifestHash: 'h', backend: 'wasm', threads: 1, measuredAt: '2026-01-01T00:00:00Z' };

/** ms cost per sample of given full-length thresholds under timings t (decisions only for exits in use). */
function msCost(th: readonly number[], t: StageTimings): number {
  const used = [0, 1, 2].filter((j) => th[j]! < NEVER_EXIT);
  const up = (s: number) => t.stageMs.slice(0, s + 1).reduce((a, b) => a + b, 0);
  const o = simulateCascade(
    table,
    used,
    used.map((j) => th[j]!),
    { backboneCostAt: [0, 1, 2].map(up), headCost: t.decisionMs.slice(0, 3), fullCost: up(3) },
  );
  return o.macsFraction;
}

describe('device plans by measured time', () => {
  it('validation.bin round-trips within the 16-bit score resolution', () => {
    const back = decodeValidation(encodeValidation(validation), 3, n);
    back.forEach((v, j) => {
      expect(v.agree).toEqual(validation[j]!.agree);
      for (let i = 0; i < n; i += 97)
        expect(Math.abs(v.score[i]! - validation[j]!.score[i]!)).toBeLessThanOrEqual(0.5 / 65535 + 1e-7);
    });
    expect(() => decodeValidation(new Uint8Array(10), 3, n)).toThrow(
      expect.objectContaining({ code: 'INVALID_BUNDLE' }),
    );
  });

  it('meets the target with margin, and unused exits never fire', () => {
    const t: StageTimings = { stageMs: [1, 1, 1, 1], decisionMs: [0.01, 0.01, 0.01, 0] };
    const p = planExits(manifest, validation, t, opts);
    expect(p.thresholds).toHaveLength(3);
    p.enabled.forEach((on, j) => on || expect(p.thresholds[j]).toBe(NEVER_EXIT));
    const used = [0, 1, 2].filter((j) => p.enabled[j]);
    const o = simulateCascade(
      table,
      used,
      used.map((j) => p.thresholds[j]!),
      { backboneCostAt: [1, 2, 3], headCost: [0, 0, 0], fullCost: 4 },
    );
    expect(agreementLowerBound(n - o.disagreements, n)).toBeGreaterThanOrEqual(0.95);
    expect(p.expectedAgreement).toBeCloseTo(o.agreement, 12);
    expect(p.curve.every((c) => c.thresholds.length === 3)).toBe(true);
  });

  it('costs this device no more time than the MACs-based choice, and adapts when the timings differ', () => {
    // Calibration's view: cost proportional to MACs.
    const macsChoice = selectExitsWithRule(
      table,
      { backboneCostAt: [26, 52, 78], headCost: [1, 1, 1], fullCost: 100 },
      { target: 0.95, rule: 'cost-calibrated', overhead: 0 },
    );
    const shipped = [0, 1, 2].map((j) => {
      const k = macsChoice.selected.indexOf(j);
      return k < 0 ? NEVER_EXIT : macsChoice.thresholds[k]!;
    });
    // A device where the last segment is 10x slower than its MACs say, and reading exit 1 is expensive.
    const device: StageTimings = { stageMs: [1, 1, 1, 10], decisionMs: [0.02, 3, 0.02, 0] };
    const p = planExits(manifest, validation, device, opts);
    expect(msCost(p.thresholds, device)).toBeLessThanOrEqual(msCost(shipped, device) + 1e-12);
    expect(p.expectedMsFraction).toBeCloseTo(msCost(p.thresholds, device), 9);
    expect(p.enabled[1]).toBe(false);
  });

  it("measured exit costs: an exit costing more than it saves is dropped, a cheap one kept (the compiled engine's exitMs)", () => {
    // Stages without heads; exits used add exitMs to every sample that reaches them (decisions inside exitMs).
    const stageMs = [1, 1, 1, 1];
    const free = planExits(manifest, validation, { stageMs, decisionMs: [0, 0, 0, 0] }, opts);
    expect(free.enabled).toEqual([true, true, true]);
    const cheap: StageTimings = { stageMs, decisionMs: [0, 0, 0, 0], exitMs: [0.01, 0.01, 0.01, 0] };
    const kept = planExits(manifest, validation, cheap, opts);
    expect(kept.enabled).toEqual([true, true, true]);
    expect(kept.timings.exitMs).toEqual([0.01, 0.01, 0.01, 0]);
    // Exit 2 (the last, 75 % of the stages): what it costs every sample that reaches it exceeds what leaving there saves.
    const sim = simulateCascade(
      table,
      [0, 1, 2],
      [0, 1, 2].map((j) => kept.thresholds[j]!),
      {
        backboneCostAt: [1, 2, 3],
        headCost: [0, 0, 0],
        fullCost: 4,
      },
    );
    const [leave2, reach2] = [sim.exitShares[2]!, sim.exitShares[2]! + sim.exitShares[3]!];
    const saving = leave2 * 1; // a sample leaving at exit 2 skips the last 1 ms stage
    const dear = saving / reach2 + 0.05; // per sample that reaches exit 2: more than the saving spread over them
    const costly: StageTimings = { stageMs, decisionMs: [0, 0, 0, 0], exitMs: [0.01, 0.01, dear, 0] };
    const dropped = planExits(manifest, validation, costly, opts);
    expect(dropped.enabled[2]).toBe(false);
    expect(dropped.thresholds[2]).toBe(NEVER_EXIT);
    expect(dropped.enabled[0] || dropped.enabled[1]).toBe(true);
    // its expected time is the cascade's with the measured exit costs, and below keeping every exit at that cost
    const used = [0, 1, 2].filter((j) => dropped.enabled[j]);
    const costs = { backboneCostAt: [1, 2, 3], headCost: [0.01, 0.01, dear], fullCost: 4 };
    const thr = (p: { thresholds: readonly number[] }, sel: number[]) => sel.map((j) => p.thresholds[j]!);
    expect(dropped.expectedMsFraction).toBeCloseTo(
      simulateCascade(table, used, thr(dropped, used), costs).macsFraction,
      9,
    );
    expect(dropped.expectedMsFraction).toBeLessThan(
      simulateCascade(table, [0, 1, 2], thr(kept, [0, 1, 2]), costs).macsFraction,
    );
    expect(() =>
      planExits(manifest, validation, { stageMs, decisionMs: [0, 0, 0, 0], exitMs: [0, 0, 0] }, opts),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() =>
      planExits(manifest, validation, { stageMs, decisionMs: [0, 0, 0, 0], exitMs: [0, -1, 0, 0] }, opts),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('rejects timings that do not fit the bundle', () => {
    expect(() => planExits(manifest, validation, { stageMs: [1, 1], decisionMs: [0, 0] }, opts)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() =>
      planExits(manifest, validation.slice(0, 2), { stageMs: [1, 1, 1, 1], decisionMs: [0, 0, 0, 0] }, opts),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

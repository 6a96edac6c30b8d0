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

  it('rejects timings that do not fit the bundle', () => {
    expect(() => planExits(manifest, validation, { stageMs: [1, 1], decisionMs: [0, 0] }, opts)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() =>
      planExits(manifest, validation.slice(0, 2), { stageMs: [1, 1, 1, 1], decisionMs: [0, 0, 0, 0] }, opts),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

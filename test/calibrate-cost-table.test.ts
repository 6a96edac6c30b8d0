// costTableFromPlan: a device plan's measured stage times as `selfxit prepare --cost-table` JSON — the split of each
// stage between backbone and fused head, and a round trip: a plan made from a real bundle's validation outputs gives a
// table that `prepare --cost-table` accepts and minimises (costUnit 'ms').
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { decodeValidation } from '../src/bundle/validation-file.js';
import { costTableFromPlan, planExits, type StageTimings } from '../src/policy/device-plan.js';
import { costTableFromPlan as fromCore } from '../src/core.js';
import { runCli, type CliCommand } from '../src/cli/dispatch.js';
import { prepareCommand } from '../src/cli/prepare.js';
import { writePrepareInputs } from './fixtures/cli-helpers.js';

const commands: Record<string, CliCommand> = { prepare: prepareCommand };
async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, commands, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

// 4 segments of 25 MACs; segments 0-2 end at exits c0-c2 with heads of 1 MAC (fused: 26 MACs per run).
const manifest = {
  backbone: { macs: 100 },
  segments: [0, 1, 2, 3].map((i) => ({ macs: 25, headMacs: i < 3 ? 1 : 0, ...(i < 3 ? { exit: i } : {}) })),
  exits: [0, 1, 2].map((j) => ({ name: `e${j}`, cut: `c${j}`, segment: j })),
} as unknown as BundleManifest;

describe('costTableFromPlan', () => {
  it('splits each stage between backbone and head by MACs; cuts are cumulative; overhead is the mean decision', () => {
    const timings: StageTimings = { stageMs: [2.6, 5.2, 2.6, 2.5], decisionMs: [0.1, 0.2, 0.3, 0] };
    const t = costTableFromPlan(manifest, { timings });
    expect(t.unit).toBe('ms');
    expect(t.backbone).toBeCloseTo(2.5 + 5 + 2.5 + 2.5, 12);
    expect(t.cuts).toEqual({ c0: expect.closeTo(2.5, 12), c1: expect.closeTo(7.5, 12), c2: expect.closeTo(10, 12) });
    expect(t.heads).toEqual({ c0: expect.closeTo(0.1, 12), c1: expect.closeTo(0.2, 12), c2: expect.closeTo(0.1, 12) });
    expect(t.overhead).toBeCloseTo(0.2, 12);
    expect(fromCore).toBe(costTableFromPlan);
  });

  it("with measured exit costs (the compiled engine's exitMs): stages are backbone only, heads the exit costs", () => {
    const timings: StageTimings = {
      stageMs: [2.5, 5, 2.5, 2.5],
      decisionMs: [0, 0, 0, 0],
      exitMs: [0.09, 0.1, 0.08, 0],
    };
    const t = costTableFromPlan(manifest, { timings });
    expect(t.backbone).toBeCloseTo(12.5, 12);
    expect(t.cuts).toEqual({ c0: expect.closeTo(2.5, 12), c1: expect.closeTo(7.5, 12), c2: expect.closeTo(10, 12) });
    expect(t.heads).toEqual({ c0: 0.09, c1: 0.1, c2: 0.08 });
    expect(t.overhead).toBe(0);
    expect(() => costTableFromPlan(manifest, { timings: { ...timings, exitMs: [0, 0] } })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });

  it('a bundle without exits gives the backbone time only; bad timings are typed errors', () => {
    const single = {
      backbone: { macs: 10 },
      segments: [{ macs: 10, headMacs: 0 }],
      exits: [],
    } as unknown as BundleManifest;
    expect(costTableFromPlan(single, { timings: { stageMs: [3], decisionMs: [0] } })).toEqual({
      unit: 'ms',
      backbone: 3,
    });
    const bad = (timings: StageTimings) => () => costTableFromPlan(manifest, { timings });
    expect(bad({ stageMs: [1, 1], decisionMs: [0, 0] })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(bad({ stageMs: [1, 1, Number.NaN, 1], decisionMs: [0, 0, 0, 0] })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(bad({ stageMs: [0, 0, 0, 0], decisionMs: [0, 0, 0, 0] })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });

  it(
    'round trip: the table of a plan made from a real bundle is accepted by prepare --cost-table',
    { timeout: 300_000 },
    async () => {
      const { dir, model, samples } = writePrepareInputs('selfxit-cost-table-');
      const first = path.join(dir, 'bundle');
      const quick = ['--heads', 'pool-linear', '--augment', 'none']; // the cheapest prepare: the table is what is tested
      let r = await cli('prepare', model, '--samples', samples, '--target', '0.9', ...quick, '--out', first);
      expect(r.code, r.stderr).toBe(0);
      const m = JSON.parse(fs.readFileSync(path.join(first, 'manifest.json'), 'utf8')) as BundleManifest;
      expect(m.calibration.costUnit).toBe('macs');
      expect(m.exits.length).toBeGreaterThan(0);
      const validation = decodeValidation(
        new Uint8Array(fs.readFileSync(path.join(first, m.calibration.validation!.file))),
        m.exits.length,
        m.calibration.samples,
      );
      // "Measured" times: proportional to MACs plus a fixed cost per run; reading an exit adds a little.
      const timings: StageTimings = {
        stageMs: m.segments.map((g) => 0.05 + (g.macs + g.headMacs) / 1e5),
        decisionMs: m.segments.map((g) => (g.exit === undefined ? 0 : 0.01)),
      };
      const plan = planExits(m, validation, timings, { target: 0.9, manifestHash: 'h', backend: 'wasm', threads: 1 });
      const table = costTableFromPlan(m, plan);
      expect(Object.keys(table.cuts ?? {}).sort()).toEqual(m.exits.map((e) => e.cut).sort());
      const file = path.join(dir, 'cost-table.json');
      fs.writeFileSync(file, JSON.stringify(table, null, 2));

      const again = path.join(dir, 'bundle-ms');
      r = await cli(
        'prepare',
        model,
        '--samples',
        samples,
        '--target',
        '0.9',
        ...quick,
        '--cost-table',
        file,
        '--out',
        again,
      );
      expect(r.code, r.stderr).toBe(0);
      const m2 = JSON.parse(fs.readFileSync(path.join(again, 'manifest.json'), 'utf8')) as BundleManifest;
      expect(m2.calibration.costUnit).toBe('ms');

      // The parser rejects what is not such a table (the same file with the backbone time left out).
      const broken = path.join(dir, 'broken.json');
      fs.writeFileSync(broken, JSON.stringify({ ...table, backbone: undefined }));
      r = await cli('prepare', model, '--samples', samples, '--cost-table', broken, '--out', path.join(dir, 'never'));
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/INVALID_ARGUMENT.*cost-table/);
    },
  );
});

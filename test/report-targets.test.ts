// The calibration report's threshold-rule wording (from the manifest), and its target → achieved agreement → MACs
// chart and table (`selfxit report --targets`), with other bundles measured on the same samples (`--compare`):
// pure renderReport on hand-made inputs, then the CLI on the tiny fixture classifier.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import type { EvaluationResult, TargetMeasurement } from '../src/calibrate/evaluate.js';
import { runCli, type CliCommand } from '../src/cli/dispatch.js';
import { prepareCommand } from '../src/cli/prepare.js';
import { reportCommand } from '../src/cli/report.js';
import { renderReport } from '../src/report/html.js';
import { writePrepareInputs } from './fixtures/cli-helpers.js';
import { blobImages } from './fixtures/prepare-fixtures.js';

const commands: Record<string, CliCommand> = { prepare: prepareCommand, report: reportCommand };
async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, commands, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

const svgCount = (html: string): number => html.match(/<svg /g)?.length ?? 0;
/** Body rows of the table inside `<div class="<cls>">`, or -1 when there is none. */
function tableRows(html: string, cls: string): number {
  const m = new RegExp(`<div class="${cls}"><table>(.*?)</table></div>`, 's').exec(html);
  if (!m) return -1;
  return (m[1]!.split('<tbody>')[1]!.match(/<tr>/g) ?? []).length;
}
/** Self-contained: no scripts, no links out (the SVG namespace is not a link). */
function expectOffline(html: string): void {
  expect(html).not.toMatch(/<script/i);
  expect(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, '')).not.toMatch(/https?:\/\//);
}

function manifest(rule: 'global' | 'cost-calibrated', mode: 'selfxit' | 'paper' = 'selfxit'): BundleManifest {
  const curve = [0.5, 0.7, 0.9].map((k, i) => ({
    knob: k,
    thresholds: [k, k],
    agreement: 0.9 + 0.04 * i,
    macsFraction: 0.5 + 0.2 * i,
    exitShares: [0.3, 0.2, 0.5],
  }));
  return {
    format: 'selfxit-bundle',
    version: 1,
    generator: 'test',
    createdAt: '2026-01-01T00:00:00Z',
    backbone: { sha256: '0'.repeat(64), macs: 1000, params: 10, output: 'y', outputKind: 'logits' },
    input: { name: 'x', height: 8, width: 8, channels: 3, layout: 'NCHW', mean: [0, 0, 0], std: [1, 1, 1] },
    labels: ['a', 'b'],
    segments: [],
    exits: ['e0', 'e1'].map((name, i) => ({
      name,
      cut: `c${i}`,
      segment: i,
      headKind: 'pool-linear',
      threshold: 0.9,
      macsFraction: 0.4 + 0.3 * i,
      expectedShare: 0.3,
      headParams: 10,
      headMacs: 10,
    })),
    calibration: {
      samples: 1000,
      target: 0.95,
      rule: 'max-softmax',
      mode,
      folds: 5,
      seed: 0,
      thresholdRule: rule,
      validationAgreement: 0.96,
      expectedMacsFraction: 0.7,
      candidates: [],
      curve,
      costUnit: 'macs',
      timings: { features: 1 },
    },
  } as BundleManifest;
}

function evaluation(targets: readonly number[], shift = 0): EvaluationResult {
  const targetCurve: TargetMeasurement[] = targets.map((t, i) => ({
    target: t,
    thresholds: [0.9, 0.9],
    reached: true,
    expectedAgreement: t + 0.002,
    expectedMacsFraction: 0.5 + 0.1 * i,
    agreement: t - 0.001 + shift,
    accuracy: 0.8,
    macsFraction: 0.52 + 0.1 * i + shift,
    exitShares: [0.3, 0.2, 0.5],
  }));
  return {
    samples: 200,
    agreement: 0.95,
    accuracy: 0.8,
    backboneAccuracy: 0.81,
    macsFraction: 0.7,
    oracleMacsFraction: 0.3,
    exitShares: [0.3, 0.2, 0.5],
    exitAgreement: [0.99, 0.95, 1],
    exitNames: ['e0', 'e1'],
    thresholds: [0.9, 0.9],
    replayMismatches: 0,
    timingsMs: { cascade: 1, allHeads: 1, backbone: 1 },
    ...(targets.length ? { targetCurve } : {}),
  };
}

describe('calibration report', () => {
  it('words the threshold knob from the manifest’s rule', () => {
    const cost = renderReport({ manifest: manifest('cost-calibrated') });
    expect(cost).toContain('cost-calibrated knob');
    expect(cost).not.toMatch(/global threshold|global max-softmax threshold/);
    const global = renderReport({ manifest: manifest('global') });
    expect(global).toContain('one setting of the global max-softmax threshold shared by every exit');
    expect(global).not.toContain('cost-calibrated');
    expect(renderReport({ manifest: manifest('global', 'paper') })).toContain(
      'paper: one fixed max-softmax threshold shared by every exit (0.9000)',
    );
  });

  it('draws the target curve as one more chart and a table of one row per bundle and target', () => {
    const m = manifest('cost-calibrated');
    const plain = renderReport({ manifest: m, evaluation: evaluation([]) });
    expect(tableRows(plain, 'target-curve')).toBe(-1);
    const targets = [0.9, 0.95, 0.99];
    const one = renderReport({ manifest: m, evaluation: evaluation(targets) });
    expect(svgCount(one)).toBe(svgCount(plain) + 1);
    expect(tableRows(one, 'target-curve')).toBe(3);
    expect(one).toContain('<td>0.990</td><td>99.20 %</td><td>98.90 %</td><td>no (-0.10 points)</td>');
    const both = renderReport({
      manifest: m,
      evaluation: evaluation(targets),
      label: 'selfxit',
      compare: [{ label: 'paper', manifest: manifest('global', 'paper'), evaluation: evaluation(targets, 0.002) }],
    });
    expect(svgCount(both)).toBe(svgCount(plain) + 1);
    expect(tableRows(both, 'target-curve')).toBe(6);
    expect(tableRows(both, 'compared')).toBe(2);
    expect(both).toContain('<td>paper</td><td>0.990</td><td>99.20 %</td><td>99.10 %</td><td>yes</td>');
    for (const html of [plain, one, both]) expectOffline(html);
  });

  it('selfxit report --targets --compare on the tiny classifier', { timeout: 300_000 }, async () => {
    const { dir, model, samples: calib } = writePrepareInputs('selfxit-report-');
    const test = path.join(dir, 'test.u8');
    fs.writeFileSync(test, blobImages(120, 8, 8, 3, 77));
    const labels = path.join(dir, 'test-labels.u8');
    fs.writeFileSync(
      labels,
      Uint8Array.from({ length: 120 }, (_, i) => i % 4),
    );
    const quick = ['--samples', calib, '--target', '0.9', '--heads', 'pool-linear', '--augment', 'none'];
    const a = path.join(dir, 'selfxit');
    const b = path.join(dir, 'maxsoftmax');
    expect((await cli('prepare', model, ...quick, '--out', a)).code).toBe(0);
    expect((await cli('prepare', model, ...quick, '--threshold-rule', 'global', '--out', b)).code).toBe(0);

    const out = path.join(dir, 'r.html');
    const r = await cli(
      'report',
      a,
      '--samples',
      test,
      '--labels-file',
      labels,
      '--targets',
      '0.8,0.9,0.95,0.99',
      '--compare',
      b,
      '--out',
      out,
    );
    expect(r.code, r.stderr).toBe(0);
    const html = fs.readFileSync(out, 'utf8');
    expect(tableRows(html, 'target-curve')).toBe(8);
    expect(tableRows(html, 'compared')).toBe(2);
    expect(html).toContain('<td>maxsoftmax</td><td>selfxit, global</td>');
    expect(html).toContain('<td>selfxit</td><td>selfxit, cost-calibrated</td>');
    expectOffline(html);
    const base = path.join(dir, 'base.html');
    expect((await cli('report', a, '--samples', test, '--out', base)).code).toBe(0);
    expect(svgCount(html)).toBe(svgCount(fs.readFileSync(base, 'utf8')) + 1);

    const usage = await cli('report', a, '--targets', '0.9');
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--targets needs --samples/);
    expect((await cli('report', a, '--samples', test, '--targets', '1.5')).stderr).toMatch(/INVALID_TARGET/);
  });
});

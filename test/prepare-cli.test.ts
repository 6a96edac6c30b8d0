// `selfxit prepare` / `eval` / `report` in-process: a bundle folder from a raw sample file, eval --json, the HTML
// report, and that errors leave no bundle (nor a temp folder) behind.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, type CliCommand } from '../src/cli/dispatch.js';
import { prepareCommand } from '../src/cli/prepare.js';
import { evalCommand } from '../src/cli/eval.js';
import { reportCommand } from '../src/cli/report.js';
import { encodeModel } from '../src/graph/index.js';
import { tempDir } from './fixtures/cli-helpers.js';
import { blobImages, noCutClassifier, tinyClassifier } from './fixtures/prepare-fixtures.js';

const commands: Record<string, CliCommand> = { prepare: prepareCommand, eval: evalCommand, report: reportCommand };

async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, commands, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

function setup(): { dir: string; model: string; samples: string; labels: string } {
  const dir = tempDir('selfxit-prepare-');
  const model = path.join(dir, 'tiny.onnx');
  fs.writeFileSync(model, encodeModel(tinyClassifier()));
  const samples = path.join(dir, 'calib.u8');
  fs.writeFileSync(samples, blobImages(400, 8, 8, 3));
  const labels = path.join(dir, 'names.txt');
  fs.writeFileSync(labels, 'a\nb\nc\nd\n');
  return { dir, model, samples, labels };
}

/** Entries of `dir` other than the inputs (bundles, temp folders). */
const leftovers = (dir: string): string[] => fs.readdirSync(dir).filter((f) => !['tiny.onnx', 'calib.u8', 'names.txt', 'nocut.onnx', 'small.u8'].includes(f));

describe('selfxit prepare / eval / report', () => {
  it('writes a bundle folder with a report, and eval --json prints one object', { timeout: 60_000 }, async () => {
    const { dir, model, samples, labels } = setup();
    const out = path.join(dir, 'bundle');
    const r = await cli('prepare', model, '--samples', samples, '--labels', labels, '--target', '0.9', '--report', '--out', out);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/validation agreement/);
    expect(r.stderr).toMatch(/\[features\]/);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    const files = fs.readdirSync(out).sort();
    expect(manifest.calibration.validation?.file).toBe('validation.bin'); // selfxit mode with exits: per-exit validation outputs
    expect(files).toEqual(['backbone.onnx', 'manifest.json', 'report.html', 'validation.bin', ...manifest.segments.map((s: { file: string }) => s.file)].sort());
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(html).toMatch(/<svg/);
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);

    const testFile = path.join(dir, 'test.u8');
    fs.writeFileSync(testFile, blobImages(100, 8, 8, 3, 77));
    const labelFile = path.join(dir, 'test-labels.u8');
    fs.writeFileSync(labelFile, Uint8Array.from({ length: 100 }, (_, i) => i % 4));
    const e = await cli('eval', out, '--samples', testFile, '--labels-file', labelFile, '--json');
    expect(e.code).toBe(0);
    const lines = e.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!);
    for (const key of ['samples', 'agreement', 'macsFraction', 'oracleMacsFraction', 'accuracy', 'backboneAccuracy', 'exitShares']) expect(j).toHaveProperty(key);
    expect(j.samples).toBe(100);
    expect(j.exitShares).toHaveLength(manifest.exits.length + 1);

    const limited = await cli('eval', out, '--samples', testFile, '--limit', '30', '--target', '0.95', '--json');
    expect(limited.code).toBe(0);
    expect(JSON.parse(limited.stdout).samples).toBe(30);

    const rep = await cli('report', out, '--samples', testFile, '--labels-file', labelFile, '--out', path.join(dir, 'r.html'));
    expect(rep.code).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'r.html'), 'utf8')).toMatch(/measured/);
  });

  it('leaves nothing behind on errors, with typed codes', { timeout: 30_000 }, async () => {
    const { dir, model, samples } = setup();
    const out = path.join(dir, 'bundle');
    // wrong sample shape: 400 images of 8x8x3 read as 4x4x3 fits the byte count, but contradicts the model input
    let r = await cli('prepare', model, '--samples', samples, '--shape', '4,4,3', '--out', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/INVALID_SAMPLES/);
    const odd = path.join(dir, 'small.u8');
    fs.writeFileSync(odd, new Uint8Array(1000));
    r = await cli('prepare', model, '--samples', odd, '--out', out);
    expect(r.stderr).toMatch(/INVALID_SAMPLES/);
    r = await cli('prepare', model, '--samples', samples, '--limit', '150', '--out', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/TOO_FEW_SAMPLES.*at least 300/);
    r = await cli('prepare', model, '--samples', samples, '--target', '1.5', '--out', out);
    expect(r.stderr).toMatch(/INVALID_TARGET/);
    r = await cli('prepare', model, '--samples', samples, '--target', '0', '--out', out);
    expect(r.stderr).toMatch(/INVALID_TARGET/);
    expect(leftovers(dir)).toEqual([]);
  });

  it('a model without an inner cut gives a one-segment bundle and a warning', { timeout: 30_000 }, async () => {
    const { dir } = setup();
    const model = path.join(dir, 'nocut.onnx');
    fs.writeFileSync(model, encodeModel(noCutClassifier()));
    const samples = path.join(dir, 'small.u8');
    fs.writeFileSync(samples, blobImages(150, 4, 4, 3));
    const out = path.join(dir, 'bundle');
    const r = await cli('prepare', model, '--samples', samples, '--target', '0.9', '--out', out);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: .*no inner cut/);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.exits).toEqual([]);
    expect(manifest.segments).toHaveLength(1);
  });
});

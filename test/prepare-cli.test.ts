// `selfxit prepare` / `eval` / `report` in-process: a bundle folder from a raw sample file, eval --json, the HTML
// report, and that errors leave no bundle (nor a temp folder) behind; paper mode as the issue spells it, --cost-table,
// --temperature, and a second prepare replacing an older bundle folder whole.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { runCli, type CliCommand } from '../src/cli/dispatch.js';
import { prepareCommand } from '../src/cli/prepare.js';
import { evalCommand } from '../src/cli/eval.js';
import { reportCommand } from '../src/cli/report.js';
import { encodeModel } from '../src/graph/index.js';
import { writePrepareInputs } from './fixtures/cli-helpers.js';
import { blobImages, noCutClassifier } from './fixtures/prepare-fixtures.js';

const commands: Record<string, CliCommand> = { prepare: prepareCommand, eval: evalCommand, report: reportCommand };

async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, commands, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

function setup(): { dir: string; model: string; samples: string; labels: string } {
  const { dir, model, samples } = writePrepareInputs('selfxit-prepare-');
  const labels = path.join(dir, 'names.txt');
  fs.writeFileSync(labels, 'a\nb\nc\nd\n');
  return { dir, model, samples, labels };
}

/** Entries of `dir` other than the inputs (bundles, temp folders). */
const leftovers = (dir: string): string[] =>
  fs.readdirSync(dir).filter((f) => !['tiny.onnx', 'calib.u8', 'names.txt', 'nocut.onnx', 'small.u8'].includes(f));

describe('selfxit prepare / eval / report', () => {
  it('writes a bundle folder with a report, and eval --json prints one object', { timeout: 180_000 }, async () => {
    const { dir, model, samples, labels } = setup();
    const out = path.join(dir, 'bundle');
    const r = await cli(
      'prepare',
      model,
      '--samples',
      samples,
      '--labels',
      labels,
      '--target',
      '0.9',
      '--report',
      '--out',
      out,
    );
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/validation agreement/);
    expect(r.stderr).toMatch(/\[features\]/);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    const files = fs.readdirSync(out).sort();
    expect(manifest.calibration.validation?.file).toBe('validation.bin'); // selfxit mode with exits: per-exit validation outputs
    expect(files).toEqual(
      [
        'backbone.onnx',
        'manifest.json',
        'report.html',
        'validation.bin',
        ...manifest.segments.map((s: { file: string }) => s.file),
      ].sort(),
    );
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(html).toMatch(/<svg/);
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);

    const testFile = path.join(dir, 'test.u8');
    fs.writeFileSync(testFile, blobImages(100, 8, 8, 3, 77));
    const labelFile = path.join(dir, 'test-labels.u8');
    fs.writeFileSync(
      labelFile,
      Uint8Array.from({ length: 100 }, (_, i) => i % 4),
    );
    const e = await cli('eval', out, '--samples', testFile, '--labels-file', labelFile, '--json');
    expect(e.code).toBe(0);
    const lines = e.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!);
    for (const key of [
      'samples',
      'agreement',
      'macsFraction',
      'oracleMacsFraction',
      'accuracy',
      'backboneAccuracy',
      'exitShares',
    ])
      expect(j).toHaveProperty(key);
    expect(j.samples).toBe(100);
    expect(j.exitShares).toHaveLength(manifest.exits.length + 1);

    const limited = await cli('eval', out, '--samples', testFile, '--limit', '30', '--target', '0.95', '--json');
    expect(limited.code).toBe(0);
    expect(JSON.parse(limited.stdout).samples).toBe(30);

    // flags that must be whole numbers; a bad one is refused before any work (batch size 0 would never finish)
    for (const args of [
      ['--batch-size', '0'],
      ['--batch-size', '2.5'],
      ['--limit', '0'],
      ['--seed', '1.5'],
    ]) {
      const bad = await cli('eval', out, '--samples', testFile, ...args, '--json');
      expect(bad.code, args.join(' ')).toBe(1);
      expect(bad.stderr).toMatch(new RegExp(`^error \\[INVALID_ARGUMENT\\]: ${args[0]} must be an integer`));
    }
    const small = await cli(
      'eval',
      out,
      '--samples',
      testFile,
      '--labels-file',
      labelFile,
      '--batch-size',
      '7',
      '--json',
    );
    expect(small.code).toBe(0);
    const js = JSON.parse(small.stdout);
    expect([js.samples, js.agreement, js.accuracy, js.exitShares]).toEqual([
      j.samples,
      j.agreement,
      j.accuracy,
      j.exitShares,
    ]);

    const rep = await cli(
      'report',
      out,
      '--samples',
      testFile,
      '--labels-file',
      labelFile,
      '--out',
      path.join(dir, 'r.html'),
    );
    expect(rep.code).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'r.html'), 'utf8')).toMatch(/measured/);
  });

  it('leaves nothing behind on errors, with typed codes', { timeout: 120_000 }, async () => {
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

  it('a run that fails on a terminal ends the progress line before the error', { timeout: 120_000 }, async () => {
    const { dir, model, samples } = setup();
    let stderr = '';
    const io = { stdout: () => {}, stderr: (t: string) => (stderr += t), tty: true };
    // a head too wide to allocate: fails in head training, after the features' progress
    const argv = ['prepare', model, '--samples', samples, '--target', '0.9', '--out', path.join(dir, 'bundle')];
    const wide = [
      '--heads',
      'pool-linear,pool-mlp',
      '--hidden',
      '4000000000',
      '--capacity',
      'fixed',
      '--augment',
      'none',
    ];
    const code = await runCli([...argv, ...wide], commands, io);
    expect(code).not.toBe(0);
    expect(stderr).toContain('\r\x1b[2K[heads]'); // the updating line was in use
    expect(stderr).toMatch(/\nerror \[/); // the error on a line of its own
    expect(leftovers(dir)).toEqual([]);
  });

  it('a model without an inner cut gives a one-segment bundle and a warning', { timeout: 120_000 }, async () => {
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

interface ManifestJson {
  calibration: {
    mode: string;
    costUnit: string;
    folds: number;
    validationSamples?: number;
    samples: number;
    candidates: { name: string; agreement: number; meanScore: number }[];
  };
  exits: { name: string; cut: string; headKind: string; threshold: number }[];
  segments: { file: string; sha256: string }[];
  backbone: { file: string; sha256: string };
}
const readManifest = (out: string): ManifestJson =>
  JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as ManifestJson;

/** Every file under `dir` (name → bytes as latin1), for byte-for-byte comparisons. */
function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .map((f) => [f, fs.readFileSync(path.join(dir, f), 'latin1')]),
  );
}

/** An older bundle in `out`: more segments than any new one (named by its manifest), a report, and a file of the user's. */
function oldBundle(out: string): void {
  fs.mkdirSync(out);
  const segments = Array.from({ length: 6 }, (_, i) => ({ file: `segment-${i}.onnx` }));
  const old = { format: 'selfxit-bundle', old: true, segments, backbone: { file: 'backbone.onnx' } };
  fs.writeFileSync(path.join(out, 'manifest.json'), `${JSON.stringify(old)}\n`);
  for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(out, `segment-${i}.onnx`), `old segment ${i}`);
  fs.writeFileSync(path.join(out, 'backbone.onnx'), 'old backbone');
  fs.writeFileSync(path.join(out, 'report.html'), '<p>old</p>');
  fs.writeFileSync(path.join(out, 'notes.txt'), 'my notes');
}

// Fast calibration settings for the tests that only need some bundle: the cheapest head kind.
const FAST = ['--heads', 'pool-linear', '--target', '0.9'];

describe('selfxit prepare --heads paper (the paper setup)', () => {
  it(
    '--heads paper --exits <cut> --exit <cut> --threshold 0.9: exactly those exits, in order, paper heads, threshold 0.9',
    { timeout: 180_000 },
    async () => {
      const { dir, model, samples } = setup();
      const out = path.join(dir, 'paper');
      const r = await cli(
        'prepare',
        model,
        '--samples',
        samples,
        '--limit',
        '200',
        '--heads',
        'paper',
        '--exits',
        'block1',
        '--exit',
        'block3',
        '--threshold',
        '0.9',
        '--out',
        out,
      );
      expect(r.stderr).not.toMatch(/error/);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/2 exits, mode paper/);
      expect(r.stdout).toMatch(/head training: 1 thread\b/); // paper mode's default (whatever the cores)
      const m = readManifest(out);
      expect(m.calibration.mode).toBe('paper');
      expect(m.calibration.samples).toBe(200);
      expect(m.calibration.validationSamples).toBe(200 / m.calibration.folds); // the held-out fold the curve is measured on
      expect(m.exits.map((e) => e.name)).toEqual(['block1', 'block3']);
      expect(m.exits.map((e) => e.cut)).toEqual(['block1', 'block3']);
      expect(m.exits.map((e) => e.threshold)).toEqual([0.9, 0.9]);
      expect(m.exits.map((e) => e.headKind)).toEqual(['paper', 'paper']);
      expect(m.segments).toHaveLength(3);
      // the bundle runs, with the same exits
      const testFile = path.join(dir, 'test.u8');
      fs.writeFileSync(testFile, blobImages(40, 8, 8, 3, 77));
      const e = await cli('eval', out, '--samples', testFile, '--json');
      expect(e.code).toBe(0);
      const j = JSON.parse(e.stdout) as { exitNames: string[]; thresholds: number[]; exitShares: number[] };
      expect(j.exitNames).toEqual(['block1', 'block3']);
      expect(j.thresholds).toEqual([0.9, 0.9]);
      expect(j.exitShares).toHaveLength(3);
    },
  );

  it(
    'paper mode trains on 1 thread by default whatever the cores, and on the pool when --threads is given (as many threads as exits at most)',
    { timeout: 180_000 },
    async () => {
      const { dir, model, samples } = setup();
      const cores = vi.spyOn(os, 'availableParallelism').mockReturnValue(4); // selfxit mode's default would be 4
      try {
        const args = ['--samples', samples, '--limit', '200', '--mode', 'paper', '--exits', 'block1,block3'];
        const one = await cli('prepare', model, ...args, '--out', path.join(dir, 'one'));
        expect(one.stderr).not.toMatch(/error/);
        expect(one.code).toBe(0);
        expect(one.stdout).toMatch(/head training: 1 thread\b/);
        const three = await cli('prepare', model, ...args, '--threads', '3', '--out', path.join(dir, 'three'));
        expect(three.code).toBe(0);
        expect(three.stderr).not.toMatch(/more than the \d+ cores/); // the 4 cores above are the ones the CLI sees
        expect(three.stdout).toMatch(/head training: 2 threads/); // 2 exits: 2 tasks, so 2 of the 3 threads trained
        // the same heads whatever trained them
        const heads = (out: string): string =>
          JSON.stringify(readManifest(path.join(dir, out)).exits.map((e) => [e.name, e.cut, e.headKind, e.threshold]));
        expect(heads('three')).toBe(heads('one'));
        for (const f of fs.readdirSync(path.join(dir, 'one')).filter((f) => f.endsWith('.onnx')))
          expect(fs.readFileSync(path.join(dir, 'three', f)).equals(fs.readFileSync(path.join(dir, 'one', f))), f).toBe(
            true,
          );
      } finally {
        cores.mockRestore();
      }
    },
  );

  it(
    '--threshold outside paper mode, an --exits name that is not a cut, a bad --max-features, --hidden or --ensemble: typed errors, nothing written',
    { timeout: 180_000 },
    async () => {
      const { dir, model, samples } = setup();
      const out = path.join(dir, 'bundle');
      const kept = path.join(dir, 'kept');
      oldBundle(kept);
      const before = snapshot(kept);
      const cases: [string[], string, RegExp][] = [
        [['--threshold', '0.9'], 'INVALID_ARGUMENT', /paper mode only/],
        [['--heads', 'pool-linear', '--threshold', '0.9'], 'INVALID_ARGUMENT', /paper mode only/],
        [['--mode', 'selfxit', '--heads', 'paper'], 'INVALID_ARGUMENT', /needs mode "paper"/],
        [['--heads', 'paper', '--threshold', '1.5'], 'INVALID_ARGUMENT', /threshold must be in \[0, 1\]/],
        [
          ['--heads', 'paper', '--exits', 'block1,nope', '--threshold', '0.9'],
          'INVALID_CUT',
          /"nope" is not a cut of this model; cuts: .*block1, conv_7, block2/,
        ],
        [['--target', '0.9', '--exits', 'block2,nope'], 'INVALID_CUT', /"nope" is not a cut/],
        [['--max-features', '0'], 'INVALID_ARGUMENT', /maxFeatures must be an integer >= 1, got 0/],
        [['--hidden', '0'], 'INVALID_ARGUMENT', /hidden must be an integer >= 1, got 0/],
        [['--ensemble', '0'], 'INVALID_ARGUMENT', /ensemble must be an integer >= 1, got 0/],
        [['--ensemble', '2.5'], 'INVALID_ARGUMENT', /ensemble must be an integer >= 1, got 2.5/],
      ];
      for (const [args, code, msg] of cases) {
        for (const o of [out, kept]) {
          const r = await cli('prepare', model, '--samples', samples, '--limit', '200', ...args, '--out', o);
          expect(r.code, args.join(' ')).toBe(1);
          expect(r.stderr).toMatch(new RegExp(`^error \\[${code}\\]: `));
          expect(r.stderr).toMatch(msg);
        }
      }
      expect(leftovers(dir)).toEqual(['kept']);
      expect(snapshot(kept)).toEqual(before);
    },
  );
});

describe('selfxit prepare --cost-table', () => {
  it(
    "a measured table where the first exit's head is slow moves the exit elsewhere; the manifest records ms",
    { timeout: 120_000 },
    async () => {
      const { dir, model, samples } = setup();
      const byMacs = path.join(dir, 'macs');
      const r1 = await cli('prepare', model, '--samples', samples, ...FAST, '--out', byMacs);
      expect(r1.code, r1.stderr).toBe(0);
      const m1 = readManifest(byMacs);
      expect(m1.calibration.costUnit).toBe('macs');
      // The premise: by MACs, block1's exit pays off (its head is cheap).
      expect(m1.exits.map((e) => e.name)).toContain('block1');

      // Measured: block1's head costs 5× the whole backbone (e.g. an op that is slow on the device): it can never pay off.
      const table = path.join(dir, 'costs.json');
      fs.writeFileSync(table, JSON.stringify({ unit: 'ms', backbone: 1, heads: { block1: 5 } }));
      const byTable = path.join(dir, 'measured');
      const r2 = await cli('prepare', model, '--samples', samples, ...FAST, '--cost-table', table, '--out', byTable);
      expect(r2.code, r2.stderr).toBe(0);
      const m2 = readManifest(byTable);
      expect(m2.calibration.costUnit).toBe('ms');
      const names = m2.exits.map((e) => e.name);
      expect(names.length).toBeGreaterThan(0);
      expect(names).not.toContain('block1');
      expect(names).not.toEqual(m1.exits.map((e) => e.name));
    },
  );

  it('malformed tables: INVALID_ARGUMENT naming the problem, nothing written', { timeout: 180_000 }, async () => {
    const { dir, model, samples } = setup();
    const out = path.join(dir, 'bundle');
    const table = path.join(dir, 'costs.json');
    const cases: [string, RegExp][] = [
      ['{ backbone: 1 }', /costs\.json: not JSON/],
      ['[1, 2]', /needs an object/],
      ['{ "cuts": { "block1": 0.2 } }', /backbone must be a number > 0/],
      ['{ "backbone": 0 }', /backbone must be a number > 0/],
      ['{ "backbone": 1, "cuts": { "block1": "fast" } }', /cuts\["block1"\] must be a number >= 0/],
      ['{ "backbone": 1, "heads": { "block1": -1 } }', /heads\["block1"\] must be a number >= 0/],
      ['{ "backbone": 1, "overhead": "none" }', /overhead must be a number >= 0/],
      ['{ "backbone": 1, "unit": "us" }', /unit must be "ms"/],
      ['{ "backbone": 1, "overheads": 0.1 }', /unknown key "overheads"/],
      [
        '{ "backbone": 1, "cuts": { "/no/such/Relu_output_0": 0.2 } }',
        /"\/no\/such\/Relu_output_0"\]: not a cut tensor of this model/,
      ],
    ];
    for (const [text, msg] of cases) {
      fs.writeFileSync(table, text);
      const r = await cli('prepare', model, '--samples', samples, ...FAST, '--cost-table', table, '--out', out);
      expect(r.code, text).toBe(1);
      expect(r.stderr, text).toMatch(/^error \[INVALID_ARGUMENT\]: .*cost/);
      expect(r.stderr, text).toMatch(msg);
    }
    // a valid table in paper mode, which has no selection to steer
    fs.writeFileSync(table, '{ "backbone": 1 }');
    const p = await cli(
      'prepare',
      model,
      '--samples',
      samples,
      '--heads',
      'paper',
      '--cost-table',
      table,
      '--out',
      out,
    );
    expect(p.stderr).toMatch(/^error \[INVALID_ARGUMENT\]: .*paper mode/);
    const missing = await cli(
      'prepare',
      model,
      '--samples',
      samples,
      '--cost-table',
      path.join(dir, 'nope.json'),
      '--out',
      out,
    );
    expect(missing.stderr).toMatch(/^error \[IO_ERROR\]: .*nope\.json/);
    expect(leftovers(dir)).toEqual(['costs.json']);
  });
});

describe('selfxit prepare --temperature', () => {
  it('rejects a value that is not finite and > 0 (INVALID_ARGUMENT), and a non-number (usage error); writes nothing', async () => {
    const { dir, model, samples } = setup();
    const out = path.join(dir, 'bundle');
    for (const t of ['0', '-1', 'Infinity', '-Infinity']) {
      const r = await cli('prepare', model, '--samples', samples, `--temperature=${t}`, '--out', out);
      expect(r.code, t).toBe(1);
      expect(r.stderr).toMatch(/^error \[INVALID_ARGUMENT\]: --temperature must be a finite number > 0/);
    }
    for (const t of ['warm', '']) {
      const r = await cli('prepare', model, '--samples', samples, `--temperature=${t}`, '--out', out);
      expect(r.code, t).toBe(2);
      expect(r.stderr).toMatch(/--temperature needs a number/);
    }
    expect(leftovers(dir)).toEqual([]);
    const h = await cli('prepare', '--help');
    expect(h.stdout).toMatch(/--temperature T/);
  });

  it('reaches head training: the same run at another temperature gives other heads', { timeout: 120_000 }, async () => {
    const { dir, model, samples } = setup();
    const runAt = async (t: string | undefined): Promise<ManifestJson> => {
      const out = path.join(dir, `t-${t ?? 'default'}`);
      const r = await cli(
        'prepare',
        model,
        '--samples',
        samples,
        ...FAST,
        ...(t ? ['--temperature', t] : []),
        '--out',
        out,
      );
      expect(r.code, r.stderr).toBe(0);
      return readManifest(out);
    };
    const base = await runAt(undefined);
    const same = await runAt('1');
    const hot = await runAt('4');
    // T = 1 is the default (and runs are deterministic); T = 4 changes what every candidate head learned.
    expect(same.calibration.candidates).toEqual(base.calibration.candidates);
    for (let i = 0; i < base.calibration.candidates.length; i++) {
      expect(hot.calibration.candidates[i]!.meanScore).not.toBe(base.calibration.candidates[i]!.meanScore);
    }
  });
});

describe('selfxit prepare into an existing bundle folder', () => {
  it(
    "replaces an older bundle completely (no stale files), keeps the user's files, and a failing run changes nothing",
    { timeout: 120_000 },
    async () => {
      const { dir, model, samples } = setup();
      const out = path.join(dir, 'bundle');
      oldBundle(out);
      const r = await cli('prepare', model, '--samples', samples, ...FAST, '--out', out);
      expect(r.code, r.stderr).toBe(0);
      const m = readManifest(out);
      expect(fs.readdirSync(out).sort()).toEqual(
        ['backbone.onnx', 'manifest.json', 'notes.txt', 'validation.bin', ...m.segments.map((s) => s.file)].sort(),
      );
      expect(m.segments.length).toBeLessThan(6);
      expect(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8')).toBe('my notes');
      const sha = (f: string): string =>
        createHash('sha256')
          .update(fs.readFileSync(path.join(out, f)))
          .digest('hex');
      for (const s of [...m.segments, m.backbone]) expect(sha(s.file)).toBe(s.sha256);
      expect(leftovers(dir)).toEqual(['bundle']); // no temp or old folder beside it

      // a later run that fails leaves this bundle byte for byte
      const before = snapshot(out);
      const bad = await cli('prepare', model, '--samples', samples, ...FAST, '--exits', 'nope', '--out', out);
      expect(bad.code).toBe(1);
      expect(snapshot(out)).toEqual(before);
      expect(leftovers(dir)).toEqual(['bundle']);
    },
  );

  it(
    'into the folder of its own inputs: only files an older manifest names are replaced, your .onnx files are kept',
    { timeout: 120_000 },
    async () => {
      const { dir, model, samples } = setup();
      const mine = { 'my-other-model.onnx': 'another model', 'notes.txt': 'my notes', 'segment-extra.onnx': 'mine' };
      for (const [f, text] of Object.entries(mine)) fs.writeFileSync(path.join(dir, f), text);
      const modelBytes = fs.readFileSync(model);
      const samplesBytes = fs.readFileSync(samples);
      const r = await cli('prepare', model, '--samples', samples, ...FAST, '--out', dir);
      expect(r.code, r.stderr).toBe(0);
      expect(fs.readFileSync(model)).toEqual(modelBytes);
      expect(fs.readFileSync(samples)).toEqual(samplesBytes);
      for (const [f, text] of Object.entries(mine)) expect(fs.readFileSync(path.join(dir, f), 'utf8')).toBe(text);
      const m = readManifest(dir);
      // a second run replaces the first bundle (adding a report), still keeping every file its manifest does not name
      fs.writeFileSync(path.join(dir, 'segment-9.onnx'), 'not named by the manifest');
      const again = await cli('prepare', model, '--samples', samples, ...FAST, '--report', '--out', dir);
      expect(again.code, again.stderr).toBe(0);
      const m2 = readManifest(dir);
      expect(m2.segments.map((s) => s.file)).toEqual(m.segments.map((s) => s.file));
      expect(fs.readdirSync(dir).sort()).toEqual(
        [
          ...new Set([
            ...Object.keys(mine),
            'segment-9.onnx',
            path.basename(model),
            path.basename(samples),
            'names.txt',
            'manifest.json',
            'report.html',
            'backbone.onnx',
            'validation.bin',
            ...m2.segments.map((s) => s.file),
          ]),
        ].sort(),
      );
    },
  );
});

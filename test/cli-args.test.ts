// Command-line parsing shared by the commands: an option that takes one value given twice is INVALID_ARGUMENT naming
// it (not last-wins), `--samples` repeatable in prepare, eval and report (eval measures every source, in order).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { nameList, parseCommandArgs } from '../src/cli/args.js';
import { UsageError } from '../src/cli/dispatch.js';
import { evalCommand } from '../src/cli/eval.js';
import { prepareCommand } from '../src/cli/prepare.js';
import { reportCommand } from '../src/cli/report.js';
import { isSelfxitError } from '../src/errors.js';
import { cliWith, writePrepareInputs } from './fixtures/cli-helpers.js';

/** The cheapest calibration that gives some bundle. */
const QUICK = ['--heads', 'pool-linear', '--target', '0.9'];
const cli = cliWith({ prepare: prepareCommand, eval: evalCommand, report: reportCommand });
const options = {
  samples: { type: 'string', multiple: true },
  target: { type: 'string' },
  json: { type: 'boolean' },
} as const;

describe('repeated options', () => {
  it('a one-value option given twice is INVALID_ARGUMENT naming it and both values; multiple ones add up', () => {
    let err: unknown;
    try {
      parseCommandArgs(['m', '--target', '0.9', '--samples', 'a', '--target=0.95'], options, {
        min: 1,
        max: 1,
        names: '<m>',
      });
    } catch (e) {
      err = e;
    }
    expect(isSelfxitError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
    expect((err as Error).message).toBe('--target was given more than once ("0.9", "0.95"): it takes one value');
    const ok = parseCommandArgs(['m', '--samples', 'a', '--samples', 'b', '--json', '--json'], options, {
      min: 1,
      max: 1,
      names: '<m>',
    });
    expect(ok.values.samples).toEqual(['a', 'b']);
  });

  it('prepare and eval refuse it before any work, and write nothing', async () => {
    const { dir, model, samples } = writePrepareInputs('selfxit-args-');
    const out = path.join(dir, 'bundle');
    const r = await cli('prepare', model, '--samples', samples, '--target', '0.9', '--target', '0.95', '--out', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error \[INVALID_ARGUMENT\]: --target was given more than once/);
    expect(fs.existsSync(out)).toBe(false);
    const o2 = await cli('prepare', model, '--samples', samples, '--out', out, '--out', `${out}2`);
    expect(o2.stderr).toMatch(/--out was given more than once/);
    const e = await cli('eval', out, '--samples', samples, '--limit', '5', '--limit', '9');
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/--limit was given more than once \("5", "9"\)/);
  });

  it(
    'eval --samples a --samples b measures both, in order, with one labels file for all',
    { timeout: 120_000 },
    async () => {
      const { dir, model, samples } = writePrepareInputs('selfxit-args-');
      const out = path.join(dir, 'bundle');
      const p = await cli('prepare', model, '--samples', samples, ...QUICK, '--out', out);
      expect(p.code, p.stderr).toBe(0);
      const bytes = fs.readFileSync(samples);
      const a = path.join(dir, 'a.u8');
      const b = path.join(dir, 'b.u8');
      fs.writeFileSync(a, bytes.subarray(0, 100 * 192));
      fs.writeFileSync(b, bytes.subarray(100 * 192));
      const labels = path.join(dir, 'labels.txt');
      fs.writeFileSync(labels, `${Array.from({ length: 400 }, (_, i) => i % 4).join('\n')}\n`);
      const json = async (...argv: string[]): Promise<Record<string, unknown>> => {
        const r = await cli('eval', out, ...argv, '--labels-file', labels, '--json');
        expect(r.code, r.stderr).toBe(0);
        return JSON.parse(r.stdout) as Record<string, unknown>;
      };
      const whole = await json('--samples', samples);
      const two = await json('--samples', a, '--samples', b);
      expect(two.samples).toBe(400);
      for (const k of ['agreement', 'accuracy', 'macsFraction', 'exitShares']) expect(two[k]).toEqual(whole[k]);
      const onlyB = await cli('eval', out, '--samples', b, '--json');
      expect(JSON.parse(onlyB.stdout).samples).toBe(300);
    },
  );
});

describe('prepare --threads', () => {
  it('is a usage error above 64 or not in decimal digits, before any work', async () => {
    const { dir, model, samples } = writePrepareInputs('selfxit-args-');
    const out = path.join(dir, 'bundle');
    for (const n of ['65', '10000', '1e3', '0x4', '0', '2.5']) {
      const r = await cli('prepare', model, '--samples', samples, ...QUICK, '--threads', n, '--out', out);
      expect(r.code, n).toBe(2);
      expect(r.stderr).toContain(`--threads must be an integer from 1 to 64, got "${n}"`);
    }
    expect(fs.existsSync(out)).toBe(false);
  });

  it('warns above the cores Node may use, and still gives the bundle', { timeout: 120_000 }, async () => {
    const { dir, model, samples } = writePrepareInputs('selfxit-args-');
    const spy = vi.spyOn(os, 'availableParallelism').mockReturnValue(2);
    try {
      const r = await cli('prepare', model, '--samples', samples, ...QUICK, '--threads', '3', '--out', `${dir}/b`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/warning: --threads 3 is more than the 2 cores Node may use/);
      expect(r.stdout).toMatch(/head training: 3 threads/);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('nameList (--cuts/--cut, --exits/--exit)', () => {
  it('splits and trims the list, takes each single name whole, list first', () => {
    expect(nameList(undefined, undefined, '--cuts --cut')).toBeUndefined();
    expect(nameList(undefined, [], '--cuts --cut')).toBeUndefined();
    expect(nameList(' a, b ', undefined, '--cuts --cut')).toEqual(['a', 'b']);
    expect(nameList('a', ['x,y', ' z '], '--cuts --cut')).toEqual(['a', 'x,y', ' z ']);
  });
  it('an empty name is a usage error naming the option', () => {
    expect(() => nameList('a,,b', undefined, '--cuts --cut')).toThrow(UsageError);
    expect(() => nameList('a,,b', undefined, '--cuts --cut')).toThrow(/--cuts has an empty name/);
    expect(() => nameList(undefined, [''], '--exits --exit')).toThrow(/--exit was given an empty name/);
  });
});

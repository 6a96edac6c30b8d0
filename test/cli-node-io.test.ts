// writeDirAtomic (src/cli/node-io.ts): a folder is created or replaced whole; an existing folder survives byte for
// byte when any step of a later write fails (failures injected through its fs option); user files are carried over.
import fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeDirAtomic, type DirFs } from '../src/cli/node-io.js';
import { isSelfxitError } from '../src/errors.js';
import { tempDir } from './fixtures/cli-helpers.js';

const root = tempDir('selfxit-node-io-');
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let serial = 0;

const STALE = /^(manifest\.json|report\.html|.*\.onnx)$/;
const removeStale = (n: string): boolean => STALE.test(n);

/** Every file under `dir` (relative path → content), recursively. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.readFileSync(p, 'latin1');
    }
  };
  walk(dir);
  return out;
}

/** A parent folder holding an "old bundle" folder `bundle` (4 segments, a report, the user's notes and a subfolder). */
function oldBundle(): { parent: string; dir: string; before: Record<string, string> } {
  const parent = path.join(root, `case-${serial++}`);
  const dir = path.join(parent, 'bundle');
  fs.mkdirSync(path.join(dir, 'extra'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'manifest.json'), '{"old":true}');
  for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(dir, `segment-${i}.onnx`), Buffer.from([0, 1, 2, 250 + i]));
  fs.writeFileSync(path.join(dir, 'report.html'), '<p>old</p>');
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
  fs.writeFileSync(path.join(dir, 'extra', 'data.bin'), Buffer.from([9, 8, 7]));
  return { parent, dir, before: snapshot(dir) };
}

/** A new bundle with fewer segments and no report. */
const newFiles = (): Map<string, Uint8Array | string> =>
  new Map<string, Uint8Array | string>([
    ['segment-0.onnx', Uint8Array.from([5, 5])],
    ['segment-1.onnx', Uint8Array.from([6, 6, 6])],
    ['manifest.json', '{"new":true}'],
  ]);

async function expectIoError(p: Promise<unknown>, message?: RegExp): Promise<Error> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isSelfxitError(e, 'IO_ERROR'), String(e)).toBe(true);
  if (message) expect((e as Error).message).toMatch(message);
  return e as Error;
}

const fail = (code: string): Error => Object.assign(new Error(`injected ${code}`), { code });

describe('writeDirAtomic', () => {
  it('creates a missing folder (and its parents) with exactly the files', async () => {
    const parent = path.join(root, `case-${serial++}`);
    const dir = path.join(parent, 'a', 'b');
    await writeDirAtomic(dir, newFiles());
    expect(snapshot(dir)).toEqual({
      'segment-0.onnx': '\x05\x05',
      'segment-1.onnx': '\x06\x06\x06',
      'manifest.json': '{"new":true}',
    });
    expect(fs.readdirSync(path.join(parent, 'a'))).toEqual(['b']);
  });

  it('replaces an existing folder completely: no stale files, user files kept, no temp folders left', async () => {
    const { parent, dir, before } = oldBundle();
    fs.chmodSync(dir, 0o750);
    await writeDirAtomic(dir, newFiles(), { removeStale, last: 'manifest.json' });
    expect(snapshot(dir)).toEqual({
      'segment-0.onnx': '\x05\x05',
      'segment-1.onnx': '\x06\x06\x06',
      'manifest.json': '{"new":true}',
      'notes.txt': before['notes.txt'],
      [path.join('extra', 'data.bin')]: before[path.join('extra', 'data.bin')],
    });
    expect(fs.statSync(dir).mode & 0o777).toBe(0o750);
    expect(fs.readdirSync(parent)).toEqual(['bundle']);
  });

  it('replaces the folder a symlink points to, keeping the link', async () => {
    const { parent, dir } = oldBundle();
    const link = path.join(parent, 'link');
    fs.symlinkSync(dir, link);
    await writeDirAtomic(link, newFiles(), { removeStale });
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')).toBe('{"new":true}');
    expect(fs.existsSync(path.join(dir, 'segment-3.onnx'))).toBe(false);
    expect(fs.readdirSync(parent).sort()).toEqual(['bundle', 'link']);
  });

  // Each case fails one step of the replacement; the old folder must come back byte for byte, nothing else left.
  const steps: { name: string; fs: (dir: string) => Partial<DirFs> }[] = [
    {
      name: 'writing the second file',
      fs: () => {
        let n = 0;
        return {
          writeFile: (async (p: string, d: string | Uint8Array) =>
            ++n === 2 ? Promise.reject(fail('ENOSPC')) : fsp.writeFile(p, d)) as DirFs['writeFile'],
        };
      },
    },
    {
      name: 'carrying a user file over',
      fs: () => ({ link: async () => Promise.reject(fail('EPERM')), cp: async () => Promise.reject(fail('ENOSPC')) }),
    },
    {
      name: 'moving the old folder aside',
      fs: (dir) => ({
        rename: (async (a: string, b: string) =>
          a === dir ? Promise.reject(fail('EACCES')) : fsp.rename(a, b)) as DirFs['rename'],
      }),
    },
    {
      name: 'moving the new folder into place (after the old one was moved aside)',
      fs: (dir) => ({
        rename: (async (a: string, b: string) =>
          b === dir && path.basename(a).includes('.tmp-')
            ? Promise.reject(fail('EIO'))
            : fsp.rename(a, b)) as DirFs['rename'],
      }),
    },
  ];
  for (const step of steps) {
    it(`keeps the old folder byte for byte when ${step.name} fails (IO_ERROR)`, async () => {
      const { parent, dir, before } = oldBundle();
      const calls: string[] = [];
      const inject = step.fs(dir);
      const spy: Partial<DirFs> = {
        ...inject,
        rename: (async (a: string, b: string) => {
          calls.push(`${path.basename(a)} -> ${path.basename(b)}`);
          return (inject.rename ?? fsp.rename)(a, b);
        }) as DirFs['rename'],
      };
      await expectIoError(
        writeDirAtomic(dir, newFiles(), { removeStale, last: 'manifest.json', fs: spy }),
        /: (ENOSPC|EACCES|EIO)$/,
      );
      expect(snapshot(dir)).toEqual(before);
      expect(fs.readdirSync(parent)).toEqual(['bundle']);
      if (step.name.startsWith('moving the new'))
        expect(calls.filter((c) => c.startsWith('.bundle.old-'))).toHaveLength(1); // it was put back
    });
  }

  it('names where the old folder is when it cannot be put back', async () => {
    const { parent, dir, before } = oldBundle();
    const rename = (async (a: string, b: string) =>
      b === dir ? Promise.reject(fail('EIO')) : fsp.rename(a, b)) as DirFs['rename'];
    const e = await expectIoError(
      writeDirAtomic(dir, newFiles(), { removeStale, fs: { rename } }),
      /: EIO; the previous folder could not be put back and is at /,
    );
    const old = (e as { details?: { previous?: string } }).details?.previous;
    expect(old).toBeDefined();
    expect(snapshot(old!)).toEqual(before);
    expect(fs.readdirSync(parent)).toEqual([path.basename(old!)]);
  });

  it('a folder that cannot be renamed (a mount point) gets the files moved in one by one, the last one last', async () => {
    const { parent, dir } = oldBundle();
    const moved: string[] = [];
    const rename = (async (a: string, b: string) => {
      if (a === dir) return Promise.reject(fail('EBUSY'));
      if (path.dirname(b) === dir) moved.push(path.basename(b));
      return fsp.rename(a, b);
    }) as DirFs['rename'];
    await writeDirAtomic(dir, newFiles(), { removeStale, last: 'manifest.json', fs: { rename } });
    expect(moved).toEqual(['segment-0.onnx', 'segment-1.onnx', 'manifest.json']);
    expect(Object.keys(snapshot(dir)).sort()).toEqual([
      path.join('extra', 'data.bin'),
      'manifest.json',
      'notes.txt',
      'segment-0.onnx',
      'segment-1.onnx',
    ]);
    expect(fs.readdirSync(parent)).toEqual(['bundle']);
  });

  it('IO_ERROR when the path is a file, or under one', async () => {
    const parent = path.join(root, `case-${serial++}`);
    fs.mkdirSync(parent);
    const file = path.join(parent, 'f');
    fs.writeFileSync(file, 'x');
    await expectIoError(writeDirAtomic(file, newFiles()), /not a folder/);
    await expectIoError(writeDirAtomic(path.join(file, 'sub'), newFiles()));
    expect(fs.readdirSync(parent)).toEqual(['f']);
  });
});

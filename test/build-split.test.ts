// The published worker without its learning code: the ESM build (vite.config.ts --mode esm, into a temporary folder)
// emits selfxit.worker.js, a tiny entry that imports the worker's code from selfxit.shared-<hash>.js, which imports
// selfxit.learn-<hash>.js only dynamically; the learning chunk imports the shared chunk, never the entry (a dev server
// serves the entry under another URL than the one it rewrites imports of it to), and the learner's code (marked by
// strings only its modules have) is in that chunk alone. The chunk working in Chromium (fetched by a `learn` load only,
// by both workers) is e2e/learn-chunk.spec.ts's, after a consumer's bundler (builds, Vite's dev server) bundlers.spec.ts's.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build } from 'vite';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'selfxit-split-'));
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

/** A string only the learning code has, per module: present in the source, so a reworded one fails here first. */
const MARKERS: Record<string, string> = {
  'runtime/learn-runtime.ts': 'LearnRuntime.open() without learn options',
  'runtime/learn-store.ts': 'storage quota exceeded',
  'runtime/learn-bundle.ts': 'which learning needs: prepare it with the backbone included',
  'learn/fit.ts': 'the model has no inner cut where an exit head can read a 4-D map',
  'calibrate/train-head.ts': 'head training needs at least one sample',
  'calibrate/head-stack.ts': 'a head of the stack has no samples to train on',
};

let entry = '';
let worker = '';
let learn = '';
let names = { shared: '', learn: '' };

/** Each file's content-hashed name, `<prefix>-<hash>.js`, as emitted into `out` (exactly one each). */
function hashedName(prefix: string): string {
  const found = fs.readdirSync(out).filter((f) => f.startsWith(`${prefix}-`) && f.endsWith('.js'));
  expect(found, `${prefix}-<hash>.js in the build`).toHaveLength(1);
  return found[0]!;
}

beforeAll(async () => {
  await build({
    configFile: path.join(root, 'vite.config.ts'),
    mode: 'esm',
    logLevel: 'silent',
    build: { outDir: out, sourcemap: false },
  });
  names = { shared: hashedName('selfxit.shared'), learn: hashedName('selfxit.learn') };
  entry = fs.readFileSync(path.join(out, 'selfxit.worker.js'), 'utf8');
  // the worker's code as a page that only classifies fetches it: the entry and its shared chunk
  worker = entry + fs.readFileSync(path.join(out, names.shared), 'utf8');
  learn = fs.readFileSync(path.join(out, names.learn), 'utf8');
}, 120_000);

/** The local modules a built file imports statically (`from "./x.js"`, `import "./x.js"`) and dynamically. */
function imports(code: string): { static: string[]; dynamic: string[] } {
  const unique = (xs: string[]): string[] => [...new Set(xs)].sort();
  return {
    static: unique([...code.matchAll(/(?:\bfrom|\bimport)\s*["'`](\.{1,2}\/[^"'`]+)["'`]/g)].map((m) => m[1]!)),
    dynamic: unique([...code.matchAll(/\bimport\(\s*["'`](\.{1,2}\/[^"'`]+)["'`]\s*\)/g)].map((m) => m[1]!)),
  };
}

describe('the built worker and its learning chunk', () => {
  it('the entry imports only the shared chunk, which imports the learning chunk dynamically; that imports it back', () => {
    expect(imports(entry)).toEqual({ static: [`./${names.shared}`], dynamic: [] });
    expect(entry.length).toBeLessThan(2048); // the entry is a stub: the code is in the shared chunk
    expect(imports(fs.readFileSync(path.join(out, names.shared), 'utf8'))).toEqual({
      static: [],
      dynamic: ['./ort/ort.min.mjs', './ort/ort.wasm.min.mjs', `./${names.learn}`],
    });
    // never `./selfxit.worker.js`: a second copy of the entry where a dev server rewrites its URL
    expect(imports(learn)).toEqual({ static: [`./${names.shared}`], dynamic: [] });
    // nothing else was emitted beside them that either could need
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.js') && f !== 'selfxit.js')).toEqual(
      [names.learn, names.shared, 'selfxit.worker.js'].sort(),
    );
  });

  it('the chunks carry a hash in their names, which the entry and the shared chunk import (no skew between builds)', () => {
    expect(names.shared).toMatch(/^selfxit\.shared-[\w-]{6,}\.js$/);
    expect(names.learn).toMatch(/^selfxit\.learn-[\w-]{6,}\.js$/);
  });

  it.each(Object.entries(MARKERS))('%s is in the learning chunk, not in the worker', (file, marker) => {
    expect(fs.readFileSync(path.join(root, 'src', file), 'utf8')).toContain(marker);
    expect(learn).toContain(marker);
    expect(worker).not.toContain(marker);
  });

  it('the worker is at most two thirds of worker + chunk (gzip): the learning code is not a sliver', async () => {
    const { gzipSync } = await import('node:zlib');
    const gz = (s: string): number => gzipSync(s, { level: 9 }).length;
    expect(gz(worker) / (gz(worker) + gz(learn))).toBeLessThan(2 / 3);
  });

  it('the built files import no package by name but runtime dependencies: never onnxruntime-web (a devDependency)', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    const bare = new Set<string>();
    for (const f of fs.readdirSync(out).filter((x) => x.endsWith('.js'))) {
      const code = fs.readFileSync(path.join(out, f), 'utf8');
      for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'`])([\w@][\w@$.\-/]*)\1/g)) {
        const spec = m[2]!;
        bare.add(
          spec
            .split('/')
            .slice(0, spec.startsWith('@') ? 2 : 1)
            .join('/'),
        );
      }
    }
    for (const name of bare) expect(pkg.dependencies, `${name} imported by the build`).toHaveProperty([name]);
    expect(bare.has('onnxruntime-web')).toBe(false);
    expect(pkg.dependencies).not.toHaveProperty(['onnxruntime-web']);
  });

  it('the package publishes the chunk (package.json "files")', () => {
    const files = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { files: string[] }).files;
    expect(files.some((f) => f === 'dist' || f === 'dist/*.js')).toBe(true);
  });
});

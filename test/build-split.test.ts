// The published worker without its learning code: the ESM build (vite.config.ts --mode esm, into a temporary folder)
// emits selfxit.worker.js, which imports dist/selfxit.learn.js only dynamically, and the learner's code (marked by
// strings only its modules have) is in that chunk, not in the worker. The chunk working in Chromium (fetched by a
// `learn` load only, by both workers) is e2e/learn-chunk.spec.ts's, after a consumer's bundler e2e/bundlers.spec.ts's.
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

let worker = '';
let learn = '';

beforeAll(async () => {
  await build({
    configFile: path.join(root, 'vite.config.ts'),
    mode: 'esm',
    logLevel: 'silent',
    build: { outDir: out, sourcemap: false },
  });
  worker = fs.readFileSync(path.join(out, 'selfxit.worker.js'), 'utf8');
  learn = fs.readFileSync(path.join(out, 'selfxit.learn.js'), 'utf8');
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
  it('the worker imports the learning chunk only dynamically, and the chunk needs nothing but the worker', () => {
    expect(imports(worker)).toEqual({
      static: [],
      dynamic: ['./ort/ort.min.mjs', './ort/ort.wasm.min.mjs', './selfxit.learn.js'],
    });
    expect(imports(learn)).toEqual({ static: ['./selfxit.worker.js'], dynamic: [] });
    // nothing else was emitted beside them that either could need
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.js') && f !== 'selfxit.js')).toEqual([
      'selfxit.learn.js',
      'selfxit.worker.js',
    ]);
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

  it('the package publishes the chunk (package.json "files")', () => {
    const files = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { files: string[] }).files;
    expect(files.some((f) => f === 'dist' || f === 'dist/selfxit.learn.js' || f === 'dist/*.js')).toBe(true);
  });
});

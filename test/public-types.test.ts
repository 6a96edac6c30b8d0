// The page entry's declarations (dist/types/index.d.ts and every file it imports) stay free of the graph toolkit's
// onnx-proto and of onnxruntime-node: a consumer with `skipLibCheck: false` and `types: []` type-checks them (onnx-proto's
// .d.ts need a global `Long`: TS2304 there; onnxruntime-node is an optional peer). The core entry's do reach onnx-proto:
// they type-check for such a consumer that lists "long" (@types/long) in `types`.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Every declaration file `entry` reaches through its imports, and the packages they import. */
function reach(entry: string): { files: string[]; packages: string[] } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (files.has(file) || !fs.existsSync(file)) continue;
    files.add(file);
    const text = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
    for (const m of text.matchAll(
      /(?:^|\s)(?:import|export)[^'";]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]/g,
    )) {
      const spec = (m[1] ?? m[2])!;
      if (spec.startsWith('.')) queue.push(path.resolve(path.dirname(file), spec.replace(/\.js$/, '.d.ts')));
      else packages.add(spec);
    }
  }
  return { files: [...files].map((f) => path.relative(path.dirname(entry), f)), packages: [...packages] };
}

describe('public declarations of the page entry', () => {
  it(
    'reach neither onnx-proto, onnxruntime nor the graph toolkit beyond its plain types (the core entry: with "long")',
    { timeout: 120_000 },
    () => {
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'selfxit-dts-'));
      try {
        execFileSync(
          process.execPath,
          [
            path.join(root, 'node_modules/typescript/bin/tsc'),
            '-p',
            path.join(root, 'tsconfig.build.json'),
            '--outDir',
            out,
          ],
          { stdio: 'pipe' },
        );
        const { files, packages } = reach(path.join(out, 'index.d.ts'));
        expect(files).toContain('types.d.ts');
        expect(packages.filter((p) => /onnx|protobuf/.test(p))).toEqual([]);
        expect(files.filter((f) => /^(graph\/(proto|index|quant)\.d\.ts|learn\/learner\.d\.ts|ort\/)/.test(f))).toEqual(
          [],
        );
        // The core entry's declarations do reach onnx-proto, whose own name the global `Long` of @types/long (installed
        // with it, as README says): a consumer that checks libraries and lists `types` must list "long".
        fs.symlinkSync(path.join(root, 'node_modules'), path.join(out, 'node_modules'), 'dir');
        fs.writeFileSync(
          path.join(out, 'consumer.ts'),
          "import { prepare } from './core.js';\nexport const p = prepare;\n",
        );
        const consumer = (types: string[]): string => {
          const config = path.join(out, `tsconfig.consumer-${types.length}.json`);
          const compilerOptions = { strict: true, skipLibCheck: false, noEmit: true, types };
          const options = { ...compilerOptions, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022' };
          fs.writeFileSync(config, JSON.stringify({ compilerOptions: options, files: ['consumer.ts'] }));
          try {
            execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', config], {
              stdio: 'pipe',
            });
            return '';
          } catch (e) {
            return String((e as { stdout?: Buffer }).stdout ?? e);
          }
        };
        expect(consumer(['long'])).toBe('');
        expect(consumer([])).toMatch(/onnx-proto.*TS2304: Cannot find name 'Long'/);
      } finally {
        // the link first, on its own: the recursive removal must never reach the repository's node_modules
        fs.rmSync(path.join(out, 'node_modules'), { force: true });
        fs.rmSync(out, { recursive: true, force: true });
      }
    },
  );
});

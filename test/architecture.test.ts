// The dependency rule of src/, checked on every import: the folder layout is the architecture, and this keeps it so.
//   graph/   ONNX toolkit           → errors, ort/types
//   bundle/  prepare ↔ run contract → graph
//   policy/  exit policy            → bundle
//   engine/  exit cascade           → bundle, policy
//   calibrate/, report/             → graph, bundle, policy, engine
//   learn/   on-device learning     → graph, bundle, policy, engine, calibrate
//   runtime/ (worker), page/, cli/  → anything below them; never each other, except the wire types in protocol.ts and
//                                     the shared-memory lane of classify() in shared-lane.ts (its encoding and waits;
//                                     not pure core: it reads the browser's user agent)
//   index.ts + types.ts, core.ts + core-types.ts: the two public entries and their types-only lists
// The pure core (everything but runtime/, page/, cli/) uses neither Node (`node:` modules, `process`, Buffer) nor the
// DOM (window, document, navigator, indexedDB, Worker, OffscreenCanvas, createImageBitmap).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = new URL('../src/', import.meta.url).pathname;

interface Module {
  /** Path relative to src/, e.g. 'graph/split.ts'. */
  readonly file: string;
  readonly text: string;
  /** Resolved import targets relative to src/ ('graph/proto.ts'), or a package as 'pkg:comlink', 'pkg:node:fs'. */
  readonly imports: readonly string[];
}

function listTs(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? listTs(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Strips comments so that a word in a doc comment is not taken for a use. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

const IMPORT_RE = /(?:^|\s)(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\s*\(\s*['"]([^'"]+)['"]\s*\)/g;

export function readModules(root = SRC): Module[] {
  return listTs(root).map((abs) => {
    const file = path.relative(root, abs);
    const text = code(fs.readFileSync(abs, 'utf8'));
    const imports = [...text.matchAll(IMPORT_RE)].map((m) => {
      const spec = (m[1] ?? m[2])!;
      if (!spec.startsWith('.')) return `pkg:${spec}`;
      return path.relative(root, path.resolve(path.dirname(abs), spec)).replace(/\.js$/, '.ts');
    });
    return { file, text, imports };
  });
}

/** The layer of a file under src/: its top folder, or the file's own name for top-level files. */
export function layerOf(file: string): string {
  const parts = file.split('/');
  return parts.length > 1 ? parts[0]! : parts[0]!.replace(/\.ts$/, '');
}

/** Which layers each layer may import (besides itself). `errors` and `ort` (types only) are open to all. */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  errors: [],
  ort: [],
  graph: [],
  bundle: ['graph'],
  policy: ['bundle', 'graph'],
  engine: ['bundle', 'policy', 'graph'],
  calibrate: ['graph', 'bundle', 'policy', 'engine'],
  report: ['graph', 'bundle', 'policy', 'engine', 'calibrate'],
  learn: ['graph', 'bundle', 'policy', 'engine', 'calibrate'],
  protocol: ['bundle', 'policy', 'graph', 'learn'],
  'shared-lane': ['protocol', 'bundle', 'policy', 'graph', 'learn'],
  'core-types': ['graph', 'bundle', 'policy', 'engine', 'calibrate'],
  core: ['graph', 'bundle', 'policy', 'engine', 'calibrate', 'report', 'core-types'],
  types: ['protocol', 'bundle', 'policy', 'graph', 'learn'],
  runtime: ['graph', 'bundle', 'policy', 'engine', 'learn', 'protocol', 'shared-lane'],
  page: ['graph', 'bundle', 'policy', 'engine', 'protocol', 'shared-lane', 'types'],
  index: ['page', 'protocol', 'bundle', 'policy', 'graph', 'engine', 'types'],
  cli: ['graph', 'bundle', 'policy', 'engine', 'calibrate', 'report', 'core'],
};
const OPEN = new Set(['errors', 'ort']);
const PURE = new Set([
  'errors',
  'ort',
  'graph',
  'bundle',
  'policy',
  'engine',
  'calibrate',
  'report',
  'learn',
  'protocol',
  'core-types',
  'core',
]);

/** Every broken rule, as readable lines ("graph/x.ts imports bundle/y.ts"). */
export function violations(modules: readonly Module[]): string[] {
  const out: string[] = [];
  for (const m of modules) {
    const from = layerOf(m.file);
    const allowed = ALLOWED[from];
    if (!allowed) {
      out.push(`${m.file}: layer "${from}" has no rule in test/architecture.test.ts`);
      continue;
    }
    for (const target of m.imports) {
      if (target.startsWith('pkg:node:')) {
        if (PURE.has(from)) out.push(`${m.file} imports ${target.slice(4)} (the pure core must not use Node)`);
        continue;
      }
      if (target.startsWith('pkg:')) continue; // a package (onnxruntime, comlink…): the bundle-size budget watches those
      if (target === '../package.json' && from === 'cli') continue; // the CLI prints its version
      if (target === 'learn/learn-options.ts' && from === 'page') continue; // load() checks its learn options early
      if (target.startsWith('..')) {
        out.push(`${m.file} imports ${target}, outside src/`);
        continue;
      }
      const to = layerOf(target);
      if (to === from || OPEN.has(to)) continue;
      if (!allowed.includes(to)) out.push(`${m.file} imports ${target} (${from}/ may not depend on ${to}/)`);
    }
    if (PURE.has(from)) {
      const nodeUse = /\b(process\.|Buffer\.|require\()/.exec(m.text);
      if (nodeUse) out.push(`${m.file} uses Node's ${nodeUse[1]} (the pure core must not use Node)`);
      const domUse =
        /\b(window|document|navigator|indexedDB|localStorage|createImageBitmap|OffscreenCanvas|new Worker)\b/.exec(
          m.text,
        );
      if (domUse) out.push(`${m.file} uses the DOM's ${domUse[1]} (the pure core must not use the DOM)`);
    }
  }
  return out;
}

describe('dependency rule of src/', () => {
  const modules = readModules();

  it('finds the modules and their imports', () => {
    expect(modules.length).toBeGreaterThan(50);
    const split = modules.find((m) => m.file === 'graph/split.ts');
    expect(split?.imports.some((i) => i.startsWith('graph/'))).toBe(true);
  });

  it('holds for every import in src/', () => {
    expect(violations(modules)).toEqual([]);
  });

  it('catches each kind of break (the checker itself can fail)', () => {
    const mod = (file: string, text: string, imports: string[]): Module => ({ file, text, imports });
    expect(violations([mod('graph/a.ts', '', ['bundle/manifest.ts'])])).toHaveLength(1);
    expect(violations([mod('policy/a.ts', '', ['calibrate/prepare.ts'])])).toHaveLength(1);
    expect(violations([mod('calibrate/a.ts', '', ['runtime/runtime.ts'])])).toHaveLength(1);
    expect(violations([mod('engine/a.ts', '', ['page/classifier.ts'])])).toHaveLength(1);
    expect(violations([mod('bundle/a.ts', '', ['pkg:node:fs'])])).toHaveLength(1);
    expect(violations([mod('graph/a.ts', 'const x = document.body;', [])])).toHaveLength(1);
    expect(violations([mod('calibrate/a.ts', 'const e = process.env;', [])])).toHaveLength(1);
    expect(violations([mod('runtime/a.ts', '', ['page/classifier.ts'])])).toHaveLength(1);
    expect(violations([mod('newlayer/a.ts', '', [])])).toHaveLength(1);
    expect(violations([mod('cli/a.ts', 'process.exit(1)', ['pkg:node:fs', 'calibrate/prepare.ts'])])).toEqual([]);
    expect(violations([mod('bundle/a.ts', '', ['graph/split.ts', 'errors.ts'])])).toEqual([]);
  });

  it('reads imports the way TypeScript writes them', () => {
    const text = code(
      [
        "import { a } from './x.js';",
        "import type { B } from '../bundle/manifest.js';",
        "export { c } from './y.js';",
        "const m = await import('../runtime/worker.js');",
        "// import { z } from '../page/classifier.js';",
      ].join('\n'),
    );
    const specs = [...text.matchAll(IMPORT_RE)].map((m) => m[1] ?? m[2]);
    expect(specs).toEqual(['./x.js', '../bundle/manifest.js', './y.js', '../runtime/worker.js']);
  });
});

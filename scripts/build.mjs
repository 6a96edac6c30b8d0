// `npm run build`: every build output in dist/ — ESM + worker (entry and chunks), script-tag IIFE, pure core, Node
// CLI (and its head-training worker thread), type declarations, onnxruntime-web's .mjs/.wasm in dist/ort/ — then prints the runtime's gzip size (the serving
// worker, and apart the learning chunk it imports only for `load(url, { learn })`, dist/selfxit.learn-<hash>.js).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'vite';
import { ORT_BUILDS, ORT_DIST as ortDist, ORT_FILES } from './web-config.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');

const only = process.argv.slice(2); // e.g. `node scripts/build.mjs esm iife` for a partial rebuild

function step(name) {
  return only.length === 0 || only.includes(name);
}

async function viteBuild(mode) {
  const t0 = Date.now();
  await build({ configFile: path.join(root, 'vite.config.ts'), mode, logLevel: 'warn' });
  console.log(`built ${mode} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

if (only.length === 0) rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

/** The worker's files in dist/: its entry, then its content-hashed chunks (vite.config.ts names them). */
function workerFiles() {
  const chunks = existsSync(dist) ? readdirSync(dist).filter((f) => /^selfxit\.(shared|learn)-.+\.js$/.test(f)) : [];
  return ['selfxit.worker.js', ...chunks.sort()];
}

// 1. ESM first: it emits dist/selfxit.worker.js (and its chunks), which the script-tag build reuses.
if (step('esm')) {
  rmSync(path.join(dist, 'assets'), { recursive: true, force: true });
  for (const f of workerFiles()) for (const g of [f, `${f}.map`]) rmSync(path.join(dist, g), { force: true });
  await viteBuild('esm');
}
if (step('iife')) await viteBuild('iife');
if (step('core')) await viteBuild('core');
if (step('cli')) {
  // dist/cli.js, dist/head-worker.js (the head-trainer pool's worker thread) and their shared chunks dist/cli-*.js
  for (const f of readdirSync(dist).filter((f) => /^(cli(-.+)?|head-worker)\.js(\.map)?$/.test(f)))
    rmSync(path.join(dist, f), { force: true });
  if (existsSync(path.join(root, 'src/cli/main.ts'))) await viteBuild('cli');
  else console.warn('skipped dist/cli.js: src/cli/main.ts does not exist yet');
}

// 2. Declarations (src only).
if (step('types')) {
  const t0 = Date.now();
  execFileSync(
    process.execPath,
    [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')],
    { stdio: 'inherit' },
  );
  console.log(`built types in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

// 3. onnxruntime-web runtime files, loaded at run time from `wasmPaths` (default: dist/ort/ beside selfxit.js).
if (step('ort')) {
  const ortOut = path.join(dist, 'ort');
  mkdirSync(ortOut, { recursive: true });
  // The worker imports ORT_BUILDS from ./ort/ (vite.config.ts); those load ORT_FILES from `wasmPaths`.
  for (const f of [...ORT_BUILDS, ...ORT_FILES]) copyFileSync(path.join(ortDist, f), path.join(ortOut, f));
  console.log(`copied ${ORT_BUILDS.length + ORT_FILES.length} onnxruntime-web files to dist/ort/`);
}

// 4. Size report: what a page downloads before onnxruntime (ORT's JS and wasm excluded).
function gz(file) {
  const bytes = readFileSync(file);
  return { raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
}
function kb(n) {
  return `${(n / 1024).toFixed(1)} KiB`;
}
const assets = existsSync(path.join(dist, 'assets')) ? readdirSync(path.join(dist, 'assets')) : [];
const worker = workerFiles();
const shared = worker.filter((f) => f.startsWith('selfxit.shared-'));
const learn = worker.filter((f) => f.startsWith('selfxit.learn-'));
const rows = [
  ['selfxit.js', path.join(dist, 'selfxit.js')],
  ['selfxit.iife.js', path.join(dist, 'selfxit.iife.js')],
  ...worker.map((f) => [f, path.join(dist, f)]),
  ...assets.filter((f) => f.endsWith('.js')).map((f) => [`assets/${f}`, path.join(dist, 'assets', f)]),
  ['core.js', path.join(dist, 'core.js')],
  ['cli.js', path.join(dist, 'cli.js')],
  ['head-worker.js', path.join(dist, 'head-worker.js')],
  ...readdirSync(dist)
    .filter((f) => /^cli-.+\.js$/.test(f))
    .map((f) => [f, path.join(dist, f)]),
].filter(([, f]) => existsSync(f));
console.log('\nsize (raw / gzip -9):');
for (const [name, file] of rows) {
  const s = gz(file);
  console.log(`  ${name.padEnd(36)} ${kb(s.raw).padStart(11)} ${kb(s.gzip).padStart(11)}`);
}
const serving = ['selfxit.js', 'selfxit.worker.js', ...shared].map((f) => path.join(dist, f));
if (serving.every(existsSync)) {
  const runtime = serving.reduce((a, f) => a + gz(f).gzip, 0);
  console.log(`  runtime (selfxit.js + worker entry + ${shared.join(', ')}, without onnxruntime): ${kb(runtime)} gzip`);
}
for (const f of learn)
  console.log(`  on-device learning (${f}, fetched by a { learn } load only): ${kb(gz(path.join(dist, f)).gzip)} gzip`);
const ortBytes = ORT_FILES.map((f) => path.join(dist, 'ort', f))
  .filter(existsSync)
  .reduce((a, f) => a + statSync(f).size, 0);
if (ortBytes > 0) console.log(`  dist/ort/ (onnxruntime-web .mjs + .wasm): ${(ortBytes / 1048576).toFixed(1)} MiB`);

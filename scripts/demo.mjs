#!/usr/bin/env node
// `npm run demo`: prepares the shipped model's bundle (demo/.bundle/, only when missing or stale), builds the demo
// page with Vite (demo-dist/) and serves it on 127.0.0.1 with COOP/COEP so WASM threads work. Prints the URL.
//
// Options (env): PORT (default 5391), DEMO_SKIP_BUILD=1 (serve the existing demo-dist/).
// Flags: --prepare-only (make the bundle and exit), --build-only (bundle + build, no server).
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, sha256File, sourceHash } from './prepare-stamp.mjs';
import { serveStatic } from './static-server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const modelDir = path.join(root, 'public/models/fashion-resnet');
const bundleDir = path.join(root, 'demo/.bundle');
const stampFile = path.join(bundleDir, '.stamp.json');
const args = new Set(process.argv.slice(2));

function fail(message) {
  console.error(`demo: ${message}`);
  process.exit(1);
}

/** Runs `selfxit prepare` on the shipped model unless demo/.bundle matches the model, samples and sources. */
async function ensureBundle() {
  const modelFile = path.join(modelDir, 'model.onnx');
  const calibFile = path.join(modelDir, 'calib-u8.bin');
  const metaFile = path.join(modelDir, 'model.json');
  for (const f of [modelFile, calibFile, metaFile])
    if (!existsSync(f)) fail(`missing ${path.relative(root, f)} (the shipped model)`);
  const meta = JSON.parse(await readFile(metaFile, 'utf8'));
  const stamp = {
    model: await sha256File(modelFile),
    calib: await sha256File(calibFile),
    meta: await sha256File(metaFile),
    sources: await sourceHash(),
  };
  if (existsSync(stampFile) && existsSync(path.join(bundleDir, 'manifest.json'))) {
    const old = JSON.parse(await readFile(stampFile, 'utf8'));
    if (Object.entries(stamp).every(([k, v]) => old[k] === v)) {
      console.log('demo: bundle is up to date (demo/.bundle)');
      return;
    }
  }
  console.log('demo: preparing the bundle of the shipped model (demo/.bundle)…');
  await rm(bundleDir, { recursive: true, force: true });
  const shape = meta.shape ?? meta.input?.shape;
  const prepareArgs = [
    'tsx',
    'src/cli/main.ts',
    'prepare',
    modelFile,
    '--samples',
    calibFile,
    '--out',
    bundleDir,
    ...(shape ? ['--shape', shapeArg(shape)] : []),
    ...(meta.mean ? ['--mean', [].concat(meta.mean).join(',')] : []),
    ...(meta.std ? ['--std', [].concat(meta.std).join(',')] : []),
    ...(existsSync(path.join(modelDir, 'labels.txt')) ? ['--labels', path.join(modelDir, 'labels.txt')] : []),
  ];
  await run('npx', prepareArgs);
  await writeFile(stampFile, JSON.stringify(stamp, null, 2));
}

/** model.json's shape as `H,W,C` (accepts [H,W,C], [N,C,H,W]-style objects or {height,width,channels}). */
function shapeArg(shape) {
  if (Array.isArray(shape)) return shape.slice(-3).join(',');
  return [shape.height, shape.width, shape.channels].join(',');
}

async function buildPage() {
  console.log('demo: building the page (vite)…');
  const { build } = await import('vite');
  await build({ configFile: path.join(root, 'demo/vite.config.ts'), logLevel: 'warn' });
}

await ensureBundle();
if (args.has('--prepare-only')) process.exit(0);
if (!process.env.DEMO_SKIP_BUILD || !existsSync(path.join(root, 'demo-dist/index.html'))) await buildPage();
if (args.has('--build-only')) process.exit(0);

const port = Number(process.env.PORT ?? 5391);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT=${process.env.PORT} is not a port number`);
let server;
try {
  server = await serveStatic({ mounts: { '/': path.join(root, 'demo-dist') }, port });
} catch (e) {
  fail(
    e && e.code === 'EADDRINUSE'
      ? `port ${port} is in use: set PORT to another one (e.g. PORT=5392 npm run demo)`
      : String(e),
  );
}
console.log(
  `\n  selfxit demo: ${server.url}\n  (cross-origin isolated: COOP same-origin + COEP require-corp; Ctrl-C to stop)\n`,
);
const stop = () => server.close().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

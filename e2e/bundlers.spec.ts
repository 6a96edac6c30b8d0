// The published package in fresh bundler apps, as docs/DEPLOY.md's "Bundlers" section tells a user: `npm pack`, a Vite app
// and a webpack 5 app with default config that `import { load } from 'selfxit'` (and a Vite app with ES-module workers,
// which keeps the learning chunk apart), each built, served with and without
// COOP/COEP, and 10 images of the tiny test bundle classified in Chromium against the Node reference; with COOP/COEP
// also a `learn` load (the worker's lazily imported learning chunk, re-bundled by the app's bundler). The default Vite
// app also runs in Vite's dev server (`vite`, where the worker and its chunks are served from node_modules, unbundled,
// under rewritten URLs): the same classifying and `learn` load; built again with its `base` on another origin (a CDN), it
// classifies with its worker chunk on that origin. The apps' script
// sizes are printed (docs/DEPLOY.md "Download size"). Slow (three installs, three builds: about 1-2 minutes);
// SELFXIT_E2E_SKIP_BUNDLERS=1 skips it.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { chromium, test, expect, type LaunchOptions, type Page } from '@playwright/test';
import type { load as Load } from '../src/index.js';
import { serveStatic } from '../scripts/static-server.mjs';
import { ISOLATION_HEADERS } from '../scripts/web-config.mjs';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VITE = path.join(root, 'node_modules/vite/bin/vite.js');
const WEBPACK = path.join(root, 'node_modules/webpack-cli/bin/cli.js');
const TINY = path.join(root, 'e2e/.bundles/tiny');
const MODELS = path.join(root, 'public/models');

/** Logs each script an app build emitted under `dir`: bytes and gzip -9 bytes. */
function logSizes(app: string, dir: string): void {
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => /\.m?js$/.test(f));
  for (const f of files.sort()) {
    const bytes = readFileSync(path.join(dir, f));
    console.log(`${app}: ${f} ${bytes.length} B, ${gzipSync(bytes, { level: 9 }).length} B gzip`);
  }
}

interface Expected {
  index: number;
  exit: number;
  confidence: number;
}

/** The app's entry: only what the README shows. */
const APP_ENTRY = `import { load } from 'selfxit';\nwindow.selfxitLoad = load;\n`;

async function sh(cmd: string, args: string[], cwd: string): Promise<void> {
  try {
    await run(cmd, args, { cwd, maxBuffer: 64 << 20, env: { ...process.env, npm_config_update_notifier: 'false' } });
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} in ${cwd} failed:\n${err.stdout ?? ''}\n${err.stderr ?? err.message}`, {
      cause: e,
    });
  }
}

/** `npm install` of the packed package, from npm's cache when it can. */
async function install(app: string, tarball: string): Promise<void> {
  await sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], app);
}

/** A Vite app: default config, or (`esWorkers`) `worker.format: 'es'`, which keeps the worker's learning chunk apart. */
async function viteApp(dir: string, tarball: string, esWorkers = false): Promise<string> {
  mkdirSync(path.join(dir, 'src'), { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'vite-app', private: true, type: 'module' }));
  if (esWorkers) writeFileSync(path.join(dir, 'vite.config.js'), "export default { worker: { format: 'es' } };\n");
  writeFileSync(
    path.join(dir, 'index.html'),
    '<!doctype html><html><body><script type="module" src="/src/main.js"></script></body></html>\n',
  );
  writeFileSync(path.join(dir, 'src/main.js'), APP_ENTRY);
  await install(dir, tarball);
  await sh(process.execPath, [VITE, 'build'], dir); // default config: dist/
  return path.join(dir, 'dist');
}

async function webpackApp(dir: string, tarball: string): Promise<string> {
  mkdirSync(path.join(dir, 'src'), { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'webpack-app', private: true }));
  writeFileSync(path.join(dir, 'src/index.js'), APP_ENTRY);
  await install(dir, tarball);
  await sh(process.execPath, [WEBPACK, '--mode', 'production'], dir); // default config: src/index.js → dist/main.js
  writeFileSync(
    path.join(dir, 'dist/index.html'),
    '<!doctype html><html><body><script src="main.js"></script></body></html>\n',
  );
  return path.join(dir, 'dist');
}

/** A free TCP port on 127.0.0.1 (for Vite's dev server, which takes no port 0). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Vite's dev server (`vite`) on the built app's folder: its default config, plus COOP/COEP and the test bundle and
 * models (a public folder of links), from a config file outside the app. Resolves once it answers.
 */
async function viteDevServer(app: string, tmp: string): Promise<{ url: string; close(): void }> {
  const publicDir = path.join(tmp, 'dev-public');
  mkdirSync(publicDir, { recursive: true });
  symlinkSync(TINY, path.join(publicDir, 'bundle'));
  symlinkSync(MODELS, path.join(publicDir, 'models'));
  const config = path.join(tmp, 'vite.dev.config.mjs');
  writeFileSync(
    config,
    `export default ${JSON.stringify({ root: app, publicDir, server: { headers: ISOLATION_HEADERS } })};\n`,
  );
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    [VITE, '--config', config, '--host', '127.0.0.1', '--port', String(port), '--strictPort'],
    { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  for (const s of [child.stdout, child.stderr]) s?.on('data', (d: Buffer) => (output += d.toString()));
  const url = `http://127.0.0.1:${port}/`;
  for (let t = 0; ; t += 250) {
    if (child.exitCode !== null) throw new Error(`vite dev server exited ${child.exitCode}:\n${output}`);
    if (t > 60_000) throw new Error(`vite dev server did not answer in 60 s:\n${output}`);
    if (
      await fetch(url).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return { url, close: () => child.kill() };
}

/**
 * On a page of an app (opened at `url`, its root, whose entry sets window.selfxitLoad; no page errors): 10 images of the tiny bundle
 * (`/bundle/`) classified as in Node, and with `isolation` a `learn` load (`/models/`), with as many threads as asked.
 */
async function classifyAndLearn(page: Page, url: string, isolation: boolean): Promise<void> {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForFunction(() => typeof (window as { selfxitLoad?: unknown }).selfxitLoad === 'function');
  const out = await page.evaluate(async (learnToo) => {
    const load = (window as unknown as { selfxitLoad: typeof Load }).selfxitLoad;
    const buf = new Uint8ClampedArray(await (await fetch('/bundle/images.rgba')).arrayBuffer());
    const images = Array.from({ length: 10 }, (_, i) => new ImageData(buf.slice(i * 1024, (i + 1) * 1024), 16, 16));
    try {
      const clf = await load('/bundle/', { cache: false });
      const results = [];
      for (const img of images) results.push(await clf.classify(img));
      const info = clf.info();
      await clf.dispose();
      // learning: the worker imports its learning chunk, the learner worker too (load() waits for it)
      // and a fit: in the learner worker, started as the same type as the worker (webpack's is a classic one)
      let learnedModel: string | undefined;
      let fitRanIn: string | undefined;
      if (learnToo) {
        const learner = await load('/models/fashion-resnet/model.onnx', {
          cache: false,
          learn: { target: 0.9, minSamples: 100, maxCandidates: 2, headKinds: ['pool-linear'], persist: false },
        });
        const bytes = new Uint8Array(await (await fetch('/models/fashion-resnet/test-u8.bin')).arrayBuffer());
        const image = (i: number): ImageData => {
          const px = new Uint8ClampedArray(784 * 4);
          for (let p = 0; p < 784; p++) {
            const v = bytes[(i % (bytes.length / 784)) * 784 + p]!;
            px.set([v, v, v, 255], p * 4);
          }
          return new ImageData(px, 28, 28);
        };
        for (let i = 0; i < 400 && learner.learning().fits === 0; i++) await learner.classify(image(i));
        for (let i = 0; i < 600 && learner.learning().fitting; i++) {
          await new Promise((r) => setTimeout(r, 100));
          await learner.classify(image(i));
        }
        learnedModel = learner.learning().modelHash;
        fitRanIn = learner.learning().fitRanIn;
        await learner.dispose();
      }
      return {
        results: results.map((r) => ({ index: r.index, exit: r.exit.index, confidence: r.confidence })),
        backend: info.backend,
        threads: info.threads,
        isolated: info.crossOriginIsolated,
        learnedModel,
        fitRanIn,
      };
    } catch (e) {
      const err = e as Error & { code?: string };
      return { error: `${err.code ?? err.name}: ${err.message}` };
    }
  }, isolation);
  expect('error' in out ? out.error : undefined).toBeUndefined();
  if ('error' in out) return;
  const expected = JSON.parse(readFileSync(path.join(TINY, 'expected.json'), 'utf8')) as Expected[];
  out.results.forEach((r, i) => {
    expect({ index: r.index, exit: r.exit }, `image ${i}`).toEqual({
      index: expected[i]!.index,
      exit: expected[i]!.exit,
    });
    expect(Math.abs(r.confidence - expected[i]!.confidence), `image ${i} confidence`).toBeLessThan(1e-3);
  });
  expect(out.isolated).toBe(isolation);
  expect(out.backend).toBe('wasm'); // 'auto' on the SwiftShader adapter
  if (isolation) expect(out.learnedModel).toMatch(/^[0-9a-f]{64}$/);
  if (isolation) expect(out.fitRanIn).toBe('worker');
  if (isolation) expect(out.threads).toBeGreaterThan(1);
  else expect(out.threads).toBe(1);
  expect(errors).toEqual([]);
}

const skipReason =
  process.env.SELFXIT_E2E_SKIP_BUNDLERS === '1'
    ? 'SELFXIT_E2E_SKIP_BUNDLERS=1'
    : !existsSync(VITE) || !existsSync(WEBPACK)
      ? `vite and webpack-cli must be in ${path.join(root, 'node_modules')} (npm ci installs them)`
      : undefined;
if (skipReason) console.log(`e2e/bundlers.spec.ts skipped: ${skipReason}`);

test.describe('published package in bundler apps', () => {
  test.skip(skipReason !== undefined, skipReason);
  test.describe.configure({ mode: 'serial' });

  const apps: Record<string, string> = {};
  let tmp = '';

  test.beforeAll(async () => {
    test.setTimeout(240_000);
    tmp = mkdtempSync(path.join(os.tmpdir(), 'selfxit-bundlers-'));
    // dist/ is built by the global setup; --ignore-scripts: no second build.
    await sh('npm', ['pack', '--ignore-scripts', '--pack-destination', tmp], root);
    const tarball = path.join(
      tmp,
      readdirSync(tmp).find((f) => f.endsWith('.tgz'))!,
    );
    const [vite, viteEs, webpack] = await Promise.all([
      viteApp(path.join(tmp, 'vite-app'), tarball),
      viteApp(path.join(tmp, 'vite-es-app'), tarball, true),
      webpackApp(path.join(tmp, 'webpack-app'), tarball),
    ]);
    Object.assign(apps, { vite, 'vite-es': viteEs, webpack });
    for (const [name, dir] of Object.entries(apps)) logSizes(`${name} app`, dir);
  });

  test.afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test("vite app with worker.format 'es': the learning code stays a chunk of its own", () => {
    const assets = readdirSync(path.join(apps['vite-es']!, 'assets'));
    expect(assets.filter((f) => /^selfxit\.learn-.*\.js$/.test(f))).toHaveLength(1);
  });

  for (const bundler of ['vite', 'vite-es', 'webpack'] as const) {
    for (const isolation of bundler === 'vite-es' ? [true] : [true, false]) {
      const what = isolation
        ? 'load() and 10 images classified, a learn load whose fit runs in the learner worker'
        : 'load() and 10 images classified';
      test(`${bundler} build, ${isolation ? 'with' : 'without'} COOP/COEP: ${what}`, async ({ page }) => {
        const mounts = { '/': apps[bundler]!, '/bundle/': TINY, '/models/': MODELS };
        const server = await serveStatic({ mounts, port: 0, isolation });
        try {
          await classifyAndLearn(page, server.url, isolation);
        } finally {
          await server.close();
        }
      });
    }
  }

  /** Serves an app built for `http://cdn.test:<port>/` (mapped to 127.0.0.1) and classifies and learns in it. */
  async function classifyFromCdn(
    dist: string,
    port: number,
    launchOptions: LaunchOptions,
    headless: boolean,
  ): Promise<void> {
    const mounts = { '/': dist, '/bundle/': TINY, '/models/': MODELS };
    const server = await serveStatic({ mounts, port, isolation: false, cors: true });
    const browser = await chromium.launch({
      ...launchOptions,
      headless,
      args: [...(launchOptions.args ?? []), '--host-resolver-rules=MAP cdn.test 127.0.0.1'],
    });
    try {
      const page = await browser.newPage();
      await classifyAndLearn(page, server.url, false);
    } finally {
      await browser.close();
      await server.close();
    }
  }

  // The app's assets on another origin (Vite's `base` a CDN URL; a host name Chromium maps to 127.0.0.1, the page on
  // 127.0.0.1): its hashed worker chunk is started without workerUrl, through the same-origin blob module.
  test('vite build with base on another origin (a CDN): load() and 10 images classified', async ({
    launchOptions,
    headless,
  }) => {
    const app = path.dirname(apps.vite!);
    const port = await freePort();
    await sh(process.execPath, [VITE, 'build', '--base', `http://cdn.test:${port}/`, '--outDir', 'dist-cdn'], app);
    await classifyFromCdn(path.join(app, 'dist-cdn'), port, launchOptions, headless);
  });

  // webpack 5 with an absolute publicPath on another origin: it makes selfxit's worker a classic one (chunks by
  // importScripts), which starts through a classic same-origin blob that importScripts it (a module blob breaks it).
  test('webpack build with publicPath on another origin (a CDN): load() and 10 images classified', async ({
    launchOptions,
    headless,
  }) => {
    const app = path.dirname(apps.webpack!);
    const port = await freePort();
    const cdn = `http://cdn.test:${port}/`;
    await sh(
      process.execPath,
      [WEBPACK, '--mode', 'production', '--output-public-path', cdn, '--output-path', 'dist-cdn'],
      app,
    );
    writeFileSync(
      path.join(app, 'dist-cdn/index.html'),
      `<!doctype html><html><body><script src="${cdn}main.js"></script></body></html>\n`,
    );
    await classifyFromCdn(path.join(app, 'dist-cdn'), port, launchOptions, headless);
  });

  // Unbundled: Vite serves the worker as /node_modules/selfxit/dist/selfxit.worker.js?worker_file&type=module and
  // rewrites the imports of its chunks (`?v=…`): the learning chunk and the entry must import the shared chunk under
  // one URL, or the learning code would run against a second copy of the worker's modules.
  test('vite dev server, with COOP/COEP: load() and 10 images classified, a learn load', async ({ page }) => {
    test.setTimeout(180_000);
    const server = await viteDevServer(path.dirname(apps.vite!), tmp);
    try {
      await classifyAndLearn(page, server.url, true);
    } finally {
      server.close();
    }
  });
});

test('a plain module page: a bare `import … from "selfxit"` through the README\'s import map loads and classifies', async ({
  page,
}) => {
  await page.goto('/e2e/pages/importmap.html');
  await page.waitForFunction(() => (window as { selfxitReady?: boolean }).selfxitReady === true);
  const out = await page.evaluate(async () => {
    const w = window as unknown as {
      selfxit: { load: typeof Load };
      testkit: { images(b: string): Promise<ImageData[]> };
    };
    const clf = await w.selfxit.load('/e2e/.bundles/tiny/', { cache: false });
    const images = (await w.testkit.images('/e2e/.bundles/tiny')).slice(0, 10);
    const results = await clf.classifyBatch(images);
    await clf.dispose();
    return results.map((r) => ({ index: r.index, exit: r.exit.index }));
  });
  const expected = JSON.parse(readFileSync(path.join(TINY, 'expected.json'), 'utf8')) as Expected[];
  expect(out).toEqual(expected.slice(0, 10).map((e) => ({ index: e.index, exit: e.exit })));
});

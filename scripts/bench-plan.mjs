#!/usr/bin/env node
// Device plans in Chromium (WASM, batch 1): the compiled engine with the bundle's own exits and the same engine after
// clf.plan() (exits and thresholds re-chosen on the stage times and exit costs measured in the page's worker), each
// its own classifier, interleaved image by image with the full model in one page. Uses bundles `npm run bench` made
// (read only); writes bench/results/plan-<date>.json and prints one line per side.
//
//   node scripts/bench-plan.mjs
// Environment (all optional):
//   BENCH_MODELS   comma list of resnet20,resnet56 (default both); an entry name=dir measures the bundle in dir
//                  (e.g. one prepared with other options) under that name
//   BENCH_BUNDLES  folder holding the bundles <model>/ (default bench/.bundles, else ../main/bench/.bundles)
//   BENCH_IMAGES   test images (default 300)
//   BENCH_THREADS  WASM threads (default 1)
//   BENCH_REPEAT   runs of each model, each with a fresh plan (default 2)
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serveStatic } from './static-server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const env = process.env;
const entries = (env.BENCH_MODELS ?? 'resnet20,resnet56').split(',').filter(Boolean);
const named = entries.filter((e) => !e.includes('='));
const bundles =
  env.BENCH_BUNDLES ??
  [path.join(root, 'bench/.bundles'), path.resolve(root, '../main/bench/.bundles')].find((d) =>
    named.every((m) => existsSync(path.join(d, m, 'manifest.json'))),
  );
if (!bundles) throw new Error(`no bundles for ${named.join(', ')}: run npm run bench or set BENCH_BUNDLES`);
/** [name, bundle dir] per measured bundle. */
const models = entries.map((e) => (e.includes('=') ? e.split('=') : [e, path.join(bundles, e)]));
const images = Number(env.BENCH_IMAGES ?? 300);
const threads = Number(env.BENCH_THREADS ?? 1);
const repeat = Number(env.BENCH_REPEAT ?? 2);
const log = (...a) => console.log('bench-plan:', ...a);

const { build } = await import('vite');
await build({ configFile: path.join(root, 'bench/vite.config.ts'), logLevel: 'warn' });
const server = await serveStatic({
  mounts: {
    '/': path.join(root, 'bench/.dist'),
    '/shared/': shared,
    ...Object.fromEntries(models.map(([m, dir]) => [`/bundles/${m}/`, dir])),
  },
  port: Number(env.SELFXIT_E2E_PORT ?? 0),
});
const { chromium } = await import('@playwright/test');
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const results = [];
const started = new Date();
try {
  const page = await browser.newPage();
  page.on('console', (msg) => msg.text().startsWith('[bench]') && console.log(msg.text()));
  page.on('pageerror', (e) => console.error('page exception:', e.message));
  await page.goto(server.url);
  await page.waitForFunction(() => window.selfxitBench !== undefined);
  for (let r = 0; r < repeat; r++)
    for (const [m, dir] of models) {
      const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8'));
      const file = path.basename(manifest.backbone.file ?? 'backbone.onnx');
      const rs = await page.evaluate((cfg) => window.selfxitBench.run(cfg), {
        name: `${m} run ${r + 1}`,
        manifestUrl: `bundles/${m}/manifest.json`,
        modelUrl: `bundles/${m}/${file}`,
        imagesUrl: 'shared/data/cifar10/test-u8.bin',
        labelsUrl: 'shared/data/cifar10/test-labels.u8',
        images,
        backend: 'wasm',
        threads,
        batch: 1,
        engines: ['compiled', 'compiled'],
        variants: ['selfxit', 'selfxit+plan'],
        devicePlan: [false, true],
      });
      for (const x of rs) {
        results.push({ model: m, run: r + 1, ...x });
        const exits = x.thresholds.map((t) => (t <= 1 ? 1 : 0)).join('');
        const p = x.plan;
        log(
          `${m} run ${r + 1} ${x.variant}: exits ${exits} ratio mean ${x.ratio.mean.toFixed(3)} p50 ${x.ratio.p50.toFixed(3)} (early ${x.early.mean.toFixed(3)} / full ${x.full.mean.toFixed(3)} ms) ` +
            `MACs ${x.macsFraction.toFixed(3)} agreement ${(x.agreement * 100).toFixed(2)} % shares ${x.exitShares.map((s) => Math.round(s * 100)).join('/')}` +
            (p
              ? `; plan ${p.seconds.toFixed(2)} s, expected ms ${p.expectedMsFraction.toFixed(3)}, exitMs ${(p.exitMs ?? []).map((t) => t.toFixed(3)).join(' ')}, stageMs ${p.stageMs.map((t) => t.toFixed(3)).join(' ')}`
              : ''),
        );
      }
    }
} finally {
  await browser.close();
  await server.close();
}
const out = path.join(root, 'bench/results', `plan-${started.toISOString().slice(0, 19).replace(/[T:]/g, '-')}.json`);
await mkdir(path.dirname(out), { recursive: true });
await writeFile(
  out,
  JSON.stringify(
    { started: started.toISOString(), images, threads, bundles, loadAverage: os.loadavg(), results },
    null,
    1,
  ),
);
log(
  `load average ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(', ')}; wrote ${path.relative(root, out)}`,
);

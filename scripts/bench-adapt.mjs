#!/usr/bin/env node
// `npm run bench:adapt` (issue 15, not part of `npm test`; run through tsx): on-device learning of ResNet-56 in
// Chromium (WASM) from the plain model, no bundle. Traffic: pool images in a seeded shuffled order, then the test images
// (the final measurement), then (drift on) pool images with a shift. Per window it records agreement with a separate
// full-model session, the SDK's audit, MACs, latency ratio and fits (page bench/adapt.ts; goals and Markdown in
// bench/adapt-report.ts); writes bench/results/adapt-<date>.json and the `bench:adapt` block of BENCHMARKS.md.
//
// Environment (all optional):
//   BENCH_ADAPT_IMAGES        traffic images from pool-u8.bin (default 40000, at most 40000)
//   BENCH_ADAPT_WINDOW        images per window (default 1000)
//   BENCH_ADAPT_TEST          test images for the final measurement, in a seeded shuffled order (default all 5000; 0 skips)
//   BENCH_ADAPT_DRIFT         blur (5x5 box blur, default), cast (warm colour cast) or 0 (no drift phase)
//   BENCH_ADAPT_DRIFT_IMAGES  shifted pool images after the test phase (default 5000)
//   BENCH_ADAPT_SEED          seed of the traffic order (default 1)
//   BENCH_ADAPT_THREADS       WASM threads of both sides (default 1)
//   BENCH_ADAPT_AUDIT         learn.auditShare (default: the SDK's)
//   BENCH_ADAPT_LEARN         more learn options as JSON, e.g. '{"learnShare":0.2,"maxBytes":67108864}' (the defaults
//                             before the sample-rate change: a baseline run of the same code)
//   BENCH_NO_MD               1: do not rewrite BENCHMARKS.md
//
// `npm run bench:adapt -- --render bench/results/adapt-<date>.json` runs nothing: it judges that record's windows and
// writes its BENCHMARKS.md block again (after a change to the report or the goals).
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeBlock } from './md-block.mjs';
import { serveStatic } from './static-server.mjs';
import { judgeGoals, renderAdaptBlock, shuffledOrder, windowLine } from '../bench/adapt-report.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const env = process.env;
const log = (...a) => console.log('bench:adapt:', ...a);
const CIFAR_LABELS = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const POOL = 40000;
const TEST = 5000;

async function main() {
  const model = path.join(shared, 'models/cifar10-resnet56.onnx');
  if (!existsSync(model)) {
    log(`skipped: ${model} is absent (../shared holds the CIFAR-10 models and images)`);
    return;
  }
  const images = Math.min(POOL, Number(env.BENCH_ADAPT_IMAGES ?? POOL));
  const windowSize = Number(env.BENCH_ADAPT_WINDOW ?? 1000);
  const testImages = Math.min(TEST, Number(env.BENCH_ADAPT_TEST ?? TEST));
  const drift = env.BENCH_ADAPT_DRIFT === '0' ? 'off' : (env.BENCH_ADAPT_DRIFT ?? 'blur');
  if (!['off', 'blur', 'cast'].includes(drift)) throw new Error(`BENCH_ADAPT_DRIFT=${drift}: blur, cast or 0`);
  const driftImages = drift === 'off' ? 0 : Math.min(POOL, Number(env.BENCH_ADAPT_DRIFT_IMAGES ?? 5000));
  const seed = Number(env.BENCH_ADAPT_SEED ?? 1);
  const threads = Number(env.BENCH_ADAPT_THREADS ?? 1);
  const learn = {
    ...(env.BENCH_ADAPT_LEARN ? JSON.parse(env.BENCH_ADAPT_LEARN) : {}),
    ...(env.BENCH_ADAPT_AUDIT ? { auditShare: Number(env.BENCH_ADAPT_AUDIT) } : {}),
  };
  if (!(images > 0 && windowSize > 0)) throw new Error('BENCH_ADAPT_IMAGES and BENCH_ADAPT_WINDOW must be > 0');
  const started = new Date();

  log('building the page…');
  const { build } = await import('vite');
  const outDir = path.join(root, 'bench/.cache/adapt-dist');
  await build({
    configFile: path.join(root, 'bench/vite.config.ts'),
    logLevel: 'warn',
    build: { outDir, emptyOutDir: true, rollupOptions: { input: path.join(root, 'bench/adapt.html') } },
  });
  const server = await serveStatic({ mounts: { '/': outDir, '/shared/': shared }, port: 0 });
  const { chromium } = await import('@playwright/test');
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  const windows = [];
  let pageInfo;
  try {
    const page = await browser.newPage();
    page.on('console', (m) => m.type() === 'error' && console.error('page error:', m.text()));
    page.on('pageerror', (e) => console.error('page exception:', e.message));
    await page.goto(server.url + 'adapt.html');
    await page.waitForFunction(() => window.selfxitAdapt !== undefined);
    pageInfo = await page.evaluate((c) => window.selfxitAdapt.init(c), {
      modelUrl: 'shared/models/cifar10-resnet56.onnx',
      sets: { pool: 'shared/data/cifar10/pool-u8.bin', test: 'shared/data/cifar10/test-u8.bin' },
      threads,
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
      labels: CIFAR_LABELS,
      learn,
    });
    log(`page ready: ${JSON.stringify(pageInfo)}`);
    const phases = [
      { phase: 'traffic', set: 'pool', order: shuffledOrder(POOL, seed).slice(0, images) },
      // the files are in class-major order: shuffled, or the traffic is one class after another (a real drift)
      { phase: 'test', set: 'test', order: shuffledOrder(TEST, seed + 2).slice(0, testImages) },
      { phase: 'drift', set: 'pool', order: shuffledOrder(POOL, seed + 1).slice(0, driftImages), shift: drift },
    ];
    let served = 0;
    for (const p of phases)
      for (let s = 0; s < p.order.length; s += windowSize) {
        const indices = p.order.slice(s, s + windowSize);
        const w = await page.evaluate((st) => window.selfxitAdapt.step(st), {
          phase: p.phase,
          start: served,
          set: p.set,
          indices,
          ...(p.shift ? { shift: p.shift } : {}),
        });
        served += indices.length;
        windows.push(w);
        log(windowLine(w));
      }
    await page.evaluate(() => window.selfxitAdapt.dispose());
  } finally {
    await browser.close();
    await server.close();
  }

  const record = {
    date: started.toISOString(),
    command: `${Object.entries(env)
      .filter(([k]) => k.startsWith('BENCH_'))
      .map(([k, v]) => `${k}=${v} `)
      .join('')}npm run bench:adapt`,
    model: 'CIFAR-10 ResNet-56 (../shared/models/cifar10-resnet56.onnx)',
    machine: {
      cpu: os.cpus()[0]?.model ?? 'unknown',
      cores: os.cpus().length,
      loadAverage: os.loadavg(),
      page: pageInfo,
    },
    config: { images, window: windowSize, testImages, drift, driftImages, seed, threads, learn },
    seconds: (Date.now() - started.getTime()) / 1000,
    windows,
  };
  const dir = path.join(root, 'bench/results');
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `adapt-${started.toISOString().slice(0, 19).replace(/[:T]/g, '-')}.json`);
  await writeFile(file, JSON.stringify(record, null, 2) + '\n');
  log(`wrote ${path.relative(root, file)}`);
  await report(record, file);
}

/** Logs the goals of a record and (unless BENCH_NO_MD=1) writes its BENCHMARKS.md block. */
async function report(record, file) {
  for (const g of judgeGoals(record.windows))
    log(
      `goal ${g.goal}: ${g.value} → ${g.met === null ? 'not measured' : g.met ? 'met' : 'MISSED'}${g.distance ? ` (${g.distance})` : ''}`,
    );
  if (env.BENCH_NO_MD !== '1') {
    await writeBlock(
      path.join(root, 'BENCHMARKS.md'),
      'bench:adapt',
      renderAdaptBlock(record, path.relative(root, file)),
    );
    log('updated BENCHMARKS.md');
  }
}

/** `--render FILE`: the report of a recorded run, nothing run. */
async function render(file) {
  const abs = path.resolve(file);
  await report(JSON.parse(await readFile(abs, 'utf8')), abs);
}

const at = process.argv.indexOf('--render');
(at >= 0 ? render(process.argv[at + 1] ?? '') : main()).catch((e) => {
  console.error(`bench:adapt: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});

#!/usr/bin/env node
// `npm run bench`: latency of early-exit bundles vs the original model in Chromium (Playwright), interleaved in one
// page with the same backend and threads. Prepares bundles on calibration images (cached in bench/.bundles/),
// measures on test images, writes bench/results/<date>.json and the results section of BENCHMARKS.md.
//
// Environment (all optional):
//   BENCH_MODELS      comma list of fashion,resnet20,resnet56,resnet56-qdq,resnet56-qop (default: all available; CIFAR
//                     needs ../shared; the int8 ResNet-56 models run a light set: batch 1, compiled engine vs full model)
//   BENCH_IMAGES      test images per configuration (default: fashion 1000, resnet20 500, resnet56 500, int8 200)
//   BENCH_THREADS     WASM thread counts (default 1,2)
//   BENCH_BATCHES     batch sizes (default 1,32)
//   BENCH_GPU_IMAGES  images for the WebGPU correctness check (default 64; 0 skips it)
//   BENCH_CALIB       calibration images for prepare (default: all in the calib file)
//   BENCH_POOL        1: ResNet-20/56's selfxit bundles are prepared on calib + pool (10,000 + 40,000 images, the
//                     pool's unlabeled: ../shared/data/cifar10/pool-u8.bin) into bench/.bundles/<key>-pool
//                     (default 0: calib only)
//   BENCH_PAPER       0 skips the paper setup (default 1)
//   BENCH_PAPER_EXITS comma list of cuts for the paper setup (default: prepare's, cuts nearest 25/50/75 % MACs)
//   BENCH_TARGET      agreement target for prepare (default 0.99)
//   BENCH_GOAL_TARGET the same bundle also measured at this target via clf.setTarget() (the latency goals of
//                     bench/report.mjs are at >= 98.5 % agreement; default 0.985; 0 skips it)
//   BENCH_TARGETS     targets of the calibration curves measured on the test images (default 0.95,0.97,0.98,0.985,0.99,0.995)
//   BENCH_CURVES      0 skips the curves (and the max-softmax baseline bundle they need)
//   BENCH_NO_MD       1: do not rewrite BENCHMARKS.md
//   BENCH_WORST_WARMUP untimed calls of each side before the worst case is measured (default 800: live exit pruning has
//                     pruned every exit of the bench bundles by then, so the steady state is measured)
//   BENCH_INTERLEAVE  image (default): the sides (early-exit classifiers, full model) take turns image by image;
//                     block: each side classifies BENCH_BLOCK consecutive calls (default 10), then the page idles
//                     BENCH_PAUSE_MS (default 20) before the next side's turn, as a classifier runs alone in an app
//                     (with several WASM threads per worker, per-image turns keep the other workers' threads spinning)
//   BENCH_WARMUP      untimed calls of each side before measuring (default 100; the worst case: BENCH_WORST_WARMUP)
//   BENCH_JS_FLAGS    V8 flags of the bench's Chromium (default --no-wasm-dynamic-tiering: WebAssembly is compiled to
//                     optimised code in the background right after it loads, instead of function by function once
//                     hot; each side is a fresh worker, and with dynamic tiering a model whose kernels the others had
//                     not run stayed at baseline code for its first ~1,000 calls, at twice the time; '' for Chromium's
//                     default)
//   BENCH_BATCH_WARMUP untimed batches of each side before a batch > 1 is measured (default 40: a segment session's
//                     first few dozen runs are several times slower while WebAssembly tiers its kernels up, and a
//                     batch run measures only images / batch calls; `node bench/segment-boundary.mjs`)
//   BENCH_BATCH_STAGES 0: batches > 1 measure the batch model alone beside the full model (default: the stage engine's
//                     classifier too, in the same loop; with it in the page the batch model measured up to 0.10 slower)
//   BENCH_CALL_MS     1: the record keeps every measured call's page ms of each side and of the full model (callMs;
//                     at batch 1 also each image's exit and each call's onnxruntime ms: `node bench/by-exit.mjs` sums
//                     them up by exit)
//   BENCH_REUSE_BUNDLES 1: use a bundle already in bench/.bundles even when its stamp (prepare's sources, flags, inputs)
//                     no longer matches (quick runs while the calibrator changes; the record says so)
//
// Batch 1 runs the compiled and the stage engine interleaved with the full model in one loop (results 'selfxit' and
// 'selfxit-stages', 'worst-case' and 'worst-case-stages'), and the compiled engine with live exit pruning off
// ('selfxit-noprune', 'worst-case-noprune'; the others prune, load()'s default), and at the bundle's thresholds the
// compiled engine with every call by message ('selfxit-message', `sharedMemory: false`; the others go through shared
// memory, load()'s default on this cross-origin isolated page), every call profiled for the per-part breakdown; batches
// run the batch model ('selfxit', `engine: 'auto'`: the runtime's choice on WASM) and the stage engine
// ('selfxit-stages') in the same loop.
//
// Over 400 lines: one script drives the whole run (bundles, curves, the page, the record) so that the record's fields
// stay next to the code that measures them; the rendering is bench/report.mjs.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, sha256File, sourceHash } from './prepare-stamp.mjs';
import { writeBlock } from './md-block.mjs';
import { serveStatic } from './static-server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const bundlesDir = path.join(root, 'bench/.bundles');
const resultsDir = path.join(root, 'bench/results');
const CHROMIUM = '/usr/bin/chromium';
/** BENCH_JS_FLAGS (see the header). */
const JS_FLAGS = process.env.BENCH_JS_FLAGS ?? '--no-wasm-dynamic-tiering';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--enable-unsafe-webgpu',
  ...(JS_FLAGS ? [`--js-flags=${JS_FLAGS}`] : []),
];
const CIFAR_LABELS = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const env = process.env;
const list = (v, dflt) =>
  v
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : dflt;
const log = (...a) => console.log('bench:', ...a);

// ---------------------------------------------------------------------------------------------- models

async function fashionModel() {
  const dir = path.join(root, 'public/models/fashion-resnet');
  const meta = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
  const shape = Array.isArray(meta.shape)
    ? meta.shape.slice(-3)
    : [meta.shape.height, meta.shape.width, meta.shape.channels];
  return {
    key: 'fashion',
    title: 'Fashion-MNIST ResNet (shipped, public/models/fashion-resnet)',
    model: path.join(dir, 'model.onnx'),
    calib: path.join(dir, 'calib-u8.bin'),
    test: path.join(dir, 'test-u8.bin'),
    testLabels: path.join(dir, 'test-labels.u8'),
    labelsFile: path.join(dir, 'labels.txt'),
    shape,
    mean: [].concat(meta.mean),
    std: [].concat(meta.std),
    images: 1000,
    mount: ['/models/fashion/', dir],
  };
}

function cifarModel(key, file, title, light = false) {
  return {
    // int8 models: a light set, calibrated on the first 5000 images to keep prepare short
    ...(light ? { light: true, optional: true, calibLimit: 5000 } : {}),
    key,
    title,
    model: path.join(shared, 'models', file),
    calib: path.join(shared, 'data/cifar10/calib-u8.bin'),
    // BENCH_POOL=1: the selfxit bundle also learns from the 40,000 pool images (the int8 light set never does)
    ...(!light && env.BENCH_POOL === '1' ? { pool: path.join(shared, 'data/cifar10/pool-u8.bin') } : {}),
    test: path.join(shared, 'data/cifar10/test-u8.bin'),
    testLabels: path.join(shared, 'data/cifar10/test-labels.u8'),
    labels: CIFAR_LABELS,
    shape: [32, 32, 3],
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    images: light ? 200 : 500,
    mount: ['/shared/', shared],
  };
}

async function selectedModels() {
  const all = [];
  if (existsSync(path.join(root, 'public/models/fashion-resnet/model.onnx'))) all.push(await fashionModel());
  else log('skipping fashion: public/models/fashion-resnet/model.onnx is missing');
  if (existsSync(shared)) {
    all.push(cifarModel('resnet20', 'cifar10-resnet20.onnx', 'CIFAR-10 ResNet-20 (../shared)'));
    all.push(cifarModel('resnet56', 'cifar10-resnet56.onnx', 'CIFAR-10 ResNet-56 (../shared)'));
    for (const [key, file, title] of [
      ['resnet56-qdq', 'cifar10-resnet56-int8-qdq.onnx', 'CIFAR-10 ResNet-56 int8, QDQ (../shared)'],
      ['resnet56-qop', 'cifar10-resnet56-int8-qop.onnx', 'CIFAR-10 ResNet-56 int8, QOperator (../shared)'],
    ])
      if (existsSync(path.join(shared, 'models', file))) all.push(cifarModel(key, file, title, true));
  } else log(`skipping CIFAR-10 ResNet-20/56: ${shared} is absent`);
  const want = list(
    env.BENCH_MODELS,
    all.map((m) => m.key),
  );
  for (const w of want)
    if (!all.some((m) => m.key === w))
      throw new Error(`BENCH_MODELS names "${w}", which is not available (have: ${all.map((m) => m.key).join(', ')})`);
  return all.filter((m) => want.includes(m.key));
}

// --------------------------------------------------------------------------------------------- bundles

/** Bundles used although their stamps differ (BENCH_REUSE_BUNDLES=1). */
const reused = [];

/** prepare flags of each bundle variant besides the model, samples and input. */
const VARIANT_ARGS = {
  // prepare's defaults: pooled avg+max heads, flip augmentation, cost-calibrated thresholds, exit selection
  selfxit: () => ['--target', env.BENCH_TARGET ?? '0.99'],
  // the same pipeline as it was before stronger exits: average-pooled heads, no augmentation, one shared threshold
  maxsoftmax: () => [
    '--target',
    env.BENCH_TARGET ?? '0.99',
    '--threshold-rule',
    'global',
    '--augment',
    'none',
    '--max-pool-grid',
    '0',
  ],
  // the SelfXit paper's setup: its heads at fixed exits (25/50/75 % MACs), one 0.9 threshold, no selection
  paper: () => [
    '--mode',
    'paper',
    '--threshold',
    '0.9',
    ...(env.BENCH_PAPER_EXITS ? ['--exits', env.BENCH_PAPER_EXITS] : []),
  ],
};

/** Prepares `model` as `mode` (a VARIANT_ARGS key) into bench/.bundles/<key>[-mode]/ unless a bundle made from the same inputs is there. */
async function ensureBundle(model, mode, sources) {
  const pool = mode === 'selfxit' ? model.pool : undefined;
  const dir = path.join(bundlesDir, mode === 'selfxit' ? `${model.key}${pool ? '-pool' : ''}` : `${model.key}-${mode}`);
  const labelsArg = model.labelsFile ? model.labelsFile : path.join(bundlesDir, `${model.key}-labels.txt`);
  if (!model.labelsFile) await writeFile(labelsArg, model.labels.join('\n') + '\n');
  const args = [
    'tsx',
    'src/cli/main.ts',
    'prepare',
    model.model,
    '--samples',
    model.calib,
    ...(pool ? ['--samples', pool] : []),
    '--shape',
    model.shape.join(','),
    '--mean',
    model.mean.join(','),
    '--std',
    model.std.join(','),
    '--labels',
    labelsArg,
    '--out',
    dir,
    ...(env.BENCH_CALIB || model.calibLimit ? ['--limit', env.BENCH_CALIB ?? String(model.calibLimit)] : []),
    ...VARIANT_ARGS[mode](),
  ];
  const stamp = {
    args: args.slice(3).map((a) => a.replace(root, '.')),
    model: await sha256File(model.model),
    calib: await sha256File(model.calib),
    ...(pool ? { pool: await sha256File(pool) } : {}),
    sources,
  };
  const stampFile = path.join(dir, '.stamp.json');
  if (existsSync(stampFile) && existsSync(path.join(dir, 'manifest.json'))) {
    const old = await readFile(stampFile, 'utf8');
    if (old === JSON.stringify(stamp)) return dir;
    if (env.BENCH_REUSE_BUNDLES === '1') {
      log(`reusing ${path.relative(root, dir)} although its stamp differs (BENCH_REUSE_BUNDLES=1)`);
      reused.push(path.relative(root, dir));
      return dir;
    }
  }
  log(`preparing ${path.relative(root, dir)} (${mode})…`);
  const t0 = Date.now();
  await run('npx', args);
  await writeFile(stampFile, JSON.stringify(stamp));
  await writeFile(path.join(dir, '.prepare-seconds'), String((Date.now() - t0) / 1000));
  return dir;
}

/** `selfxit eval --targets` of a bundle on the model's test images: calibration's expectation vs what the test set shows. */
async function measureCurve(model, dir, targets) {
  const out = await new Promise((resolve, reject) => {
    const args = [
      'tsx',
      'src/cli/main.ts',
      'eval',
      dir,
      '--samples',
      model.test,
      '--shape',
      model.shape.join(','),
      '--labels-file',
      model.testLabels,
      '--targets',
      targets.join(','),
      '--json',
    ];
    const child = spawn('npx', args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (d) => (text += d));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`selfxit eval ${dir} exited with ${code}`)),
    );
  });
  const r = JSON.parse(out);
  const m = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8'));
  const seconds = existsSync(path.join(dir, '.prepare-seconds'))
    ? Number(await readFile(path.join(dir, '.prepare-seconds'), 'utf8'))
    : NaN;
  return {
    samples: r.samples,
    backboneAccuracy: r.backboneAccuracy,
    exits: m.exits.map((e) => e.name),
    calibrationSamples: m.calibration.samples,
    prepareSeconds: seconds,
    prepareSteps: m.calibration.timings ?? {},
    // the bundle as written (its own thresholds: the calibration target, or the paper's fixed 0.9) on all test images
    asShipped: {
      target: m.calibration.target,
      thresholds: r.thresholds,
      agreement: r.agreement,
      accuracy: r.accuracy,
      macsFraction: r.macsFraction,
      oracleMacsFraction: r.oracleMacsFraction,
      exitShares: r.exitShares,
    },
    targetCurve: r.targetCurve,
  };
}

/**
 * A copy of the manifest with every threshold at 1: the worst case, inputs that no exit is sure enough of. Every exit
 * output is still read back and decided on (a threshold above 1 would switch the exit off and skip that work), so
 * all heads, readbacks and decisions are paid with no savings. Only a probability that rounds to exactly 1 in
 * float32 leaves; the bench reports the exit shares of this run.
 */
async function writeNoExitManifest(dir) {
  const m = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8'));
  const noExit = { ...m, exits: m.exits.map((e) => ({ ...e, threshold: 1 })) };
  noExit.calibration = { ...m.calibration, curve: m.calibration.curve.map((p) => ({ ...p })) };
  await writeFile(path.join(dir, 'manifest-noexit.json'), JSON.stringify(noExit, null, 2));
  return m;
}

// ------------------------------------------------------------------------------------------- machine

function machine() {
  const cpus = os.cpus();
  let chromium;
  try {
    chromium = execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    chromium = 'unknown';
  }
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    chromium,
    jsFlags: JS_FLAGS,
    loadAverage: os.loadavg(),
  };
}

// ---------------------------------------------------------------------------------------------- main

async function main() {
  const models = await selectedModels();
  if (models.length === 0) throw new Error('nothing to benchmark');
  const threads = list(env.BENCH_THREADS, ['1', '2']).map(Number);
  const batches = list(env.BENCH_BATCHES, ['1', '32']).map(Number);
  const gpuImages = Number(env.BENCH_GPU_IMAGES ?? 64);
  const paper = env.BENCH_PAPER !== '0';
  const curves = env.BENCH_CURVES !== '0';
  const goalTarget = Number(env.BENCH_GOAL_TARGET ?? 0.985);
  const interleave = env.BENCH_INTERLEAVE ?? 'image';
  if (interleave !== 'image' && interleave !== 'block')
    throw new Error(`BENCH_INTERLEAVE must be image or block, not ${interleave}`);
  const count = (name, dflt, min) => {
    const v = env[name] === undefined ? dflt : Number(env[name]);
    if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer >= ${min}, not ${env[name]}`);
    return v;
  };
  const turns = {
    interleave,
    ...(env.BENCH_WARMUP !== undefined ? { warmup: count('BENCH_WARMUP', 100, 0) } : {}),
    ...(env.BENCH_CALL_MS === '1' ? { returnCallMs: true } : {}),
    ...(interleave === 'block' ? { block: count('BENCH_BLOCK', 10, 1), pauseMs: count('BENCH_PAUSE_MS', 20, 0) } : {}),
  };
  const targets = list(env.BENCH_TARGETS, ['0.95', '0.97', '0.98', '0.985', '0.99', '0.995']).map(Number);
  const started = new Date();

  await mkdir(bundlesDir, { recursive: true });
  const sources = await sourceHash();
  const plan = [];
  const skipped = [];
  const phase = { prepareSeconds: 0, curvesSeconds: 0, measureSeconds: 0 };
  let t0 = Date.now();
  for (const m of models) {
    let dir;
    try {
      dir = await ensureBundle(m, 'selfxit', sources);
    } catch (e) {
      if (!m.optional) throw e;
      const reason = e instanceof Error ? e.message : String(e);
      log(`${m.key}: prepare failed, left out (${reason})`);
      skipped.push({ key: m.key, title: m.title, reason: `prepare failed: ${reason}` });
      continue;
    }
    const manifest = await writeNoExitManifest(dir);
    if (manifest.exits.length === 0) log(`${m.key}: prepare gave no exits; measured as it is (one segment, no exit)`);
    const paperDir = paper && !m.light ? await ensureBundle(m, 'paper', sources) : undefined;
    const baselineDir = curves && !m.light ? await ensureBundle(m, 'maxsoftmax', sources) : undefined;
    plan.push({ m, dir, paperDir, baselineDir, manifest });
  }
  phase.prepareSeconds = (Date.now() - t0) / 1000;
  t0 = Date.now();
  const curveResults = {};
  if (curves) {
    for (const { m, dir, paperDir, baselineDir } of plan) {
      if (m.light) continue;
      log(`${m.key}: calibration curves on the test images (${targets.join(', ')})…`);
      curveResults[m.key] = {
        selfxit: await measureCurve(m, dir, targets),
        maxsoftmax: await measureCurve(m, baselineDir, targets),
      };
      if (paperDir) curveResults[m.key].paper = await measureCurve(m, paperDir, targets);
    }
  }

  phase.curvesSeconds = (Date.now() - t0) / 1000;
  t0 = Date.now();
  log('building the bench page…');
  const { build } = await import('vite');
  await build({ configFile: path.join(root, 'bench/vite.config.ts'), logLevel: 'warn' });

  const mounts = { '/': path.join(root, 'bench/.dist'), '/bundles/': bundlesDir };
  for (const { m } of plan) mounts[m.mount[0]] = m.mount[1];
  const server = await serveStatic({ mounts, port: 0 });
  const { chromium } = await import('@playwright/test');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const results = [];
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error') console.error('page error:', msg.text());
      else if (msg.text().startsWith('[bench]')) console.log(msg.text());
    });
    page.on('pageerror', (e) => console.error('page exception:', e.message));
    await page.goto(server.url);
    await page.waitForFunction(() => window.selfxitBench !== undefined);
    const gpu = await page.evaluate(() => window.selfxitBench.webgpu());

    for (const { m, dir, paperDir } of plan) {
      const images = Number(env.BENCH_IMAGES ?? m.images);
      const url = (file) => m.mount[0].slice(1) + path.relative(m.mount[1], file).split(path.sep).join('/');
      const common = { modelUrl: url(m.model), imagesUrl: url(m.test), labelsUrl: url(m.testLabels), images, ...turns };
      const rel = (d, f) => `bundles/${path.basename(d)}/${f}`;
      const configs = [];
      const both = { engines: ['compiled', 'stages'] };
      // both engines with live exit pruning (the default) and the compiled one without it, in the same loop; with a
      // fourth name, also the compiled one with every call by message (sharedMemory: false; the others use shared
      // memory, load()'s default where the page is cross-origin isolated)
      const withNoPrune = (a, b, c, d) => ({
        engines: ['compiled', 'stages', 'compiled', ...(d ? ['compiled'] : [])],
        variants: [a, b, c, ...(d ? [d] : [])],
        pruneExits: [true, true, false, ...(d ? [true] : [])],
        ...(d ? { sharedMemory: [true, true, true, false] } : {}),
      });
      const b1 = (variant, file, extra = {}) =>
        threads.map((t) => ({ variant, manifestUrl: rel(dir, file), backend: 'wasm', threads: t, batch: 1, ...extra }));
      if (m.light) {
        // compiled engine vs the full model only
        configs.push(...b1('selfxit', 'manifest.json', { engine: 'compiled' }));
      } else {
        // the compiled and the stage engine interleaved with the full model, at the bundle's target and in the worst case
        configs.push(
          ...b1(
            'selfxit',
            'manifest.json',
            withNoPrune('selfxit', 'selfxit-stages', 'selfxit-noprune', 'selfxit-message'),
          ),
        );
        configs.push(
          ...b1('worst-case', 'manifest-noexit.json', {
            ...withNoPrune('worst-case', 'worst-case-stages', 'worst-case-noprune'),
            warmup: count('BENCH_WORST_WARMUP', 800, 0),
          }),
        );
        // batches: the batch model (engine 'auto') and the stage engine, in the same loop
        for (const b of batches.filter((x) => x > 1))
          for (const t of threads)
            configs.push({
              variant: 'selfxit',
              manifestUrl: rel(dir, 'manifest.json'),
              backend: 'wasm',
              threads: t,
              batch: b,
              ...(env.BENCH_BATCH_STAGES === '0'
                ? { engines: ['auto'], variants: ['selfxit'] }
                : { engines: ['auto', 'stages'], variants: ['selfxit', 'selfxit-stages'] }),
              warmup: count('BENCH_BATCH_WARMUP', 40, 0),
            });
        if (goalTarget > 0) configs.push(...b1(`selfxit@${goalTarget}`, 'manifest.json', { target: goalTarget }));
        // plan() times the engine in use: each engine plans on its own timings (the compiled one: no per-exit cost)
        configs.push(
          ...b1('selfxit+plan', 'manifest.json', {
            devicePlan: true,
            ...both,
            variants: ['selfxit+plan', 'selfxit+plan-stages'],
          }),
        );
        if (paperDir)
          for (const b of batches)
            for (const t of threads)
              configs.push({
                variant: 'paper',
                manifestUrl: rel(paperDir, 'manifest.json'),
                backend: 'wasm',
                threads: t,
                batch: b,
              });
      }
      if (!batches.includes(1)) configs.splice(0, configs.length, ...configs.filter((c) => c.batch !== 1));
      for (const c of configs) {
        const name = `${m.key} ${c.variant} wasm t${c.threads} b${c.batch}`;
        log(`${name}: ${images} images${c.engines ? ` (engines ${c.engines.join(', ')})` : ''}…`);
        const rs = await page.evaluate((cfg) => window.selfxitBench.run(cfg), { ...common, ...c, name });
        for (const r of rs) results.push({ model: m.key, ...r });
      }
      if (gpu && gpuImages > 0 && !m.light) {
        const n = Math.min(gpuImages, images);
        const name = `${m.key} selfxit webgpu b1 (correctness)`;
        log(`${name}: ${n} images on ${gpu}…`);
        const [g] = await page.evaluate((cfg) => window.selfxitBench.run(cfg), {
          ...common,
          images: n,
          name,
          variant: 'selfxit',
          manifestUrl: rel(dir, 'manifest.json'),
          backend: 'webgpu',
          threads: 1,
          batch: 1,
          correctnessOnly: true,
          returnLabels: true,
        });
        const [w] = await page.evaluate((cfg) => window.selfxitBench.run(cfg), {
          ...common,
          images: n,
          name: `${m.key} selfxit wasm b1 (reference for webgpu)`,
          manifestUrl: rel(dir, 'manifest.json'),
          backend: 'wasm',
          threads: 1,
          batch: 1,
          correctnessOnly: true,
          returnLabels: true,
        });
        const same = (a, b) => a.filter((x, i) => x === b[i]).length / a.length;
        results.push({
          model: m.key,
          ...g,
          variant: 'webgpu-correctness',
          adapter: gpu,
          crossBackend: {
            earlyWebgpuVsWasm: same(g.labels.early, w.labels.early),
            fullWebgpuVsWasm: same(g.labels.full, w.labels.full),
          },
        });
      }
    }
  } finally {
    await browser.close();
    await server.close();
  }
  phase.measureSeconds = (Date.now() - t0) / 1000;

  const record = {
    date: started.toISOString(),
    command: `${Object.entries(env)
      .filter(([k]) => k.startsWith('BENCH_'))
      .map(([k, v]) => `${k}=${v} `)
      .join('')}npm run bench`,
    machine: machine(),
    seconds: (Date.now() - started.getTime()) / 1000,
    phases: phase,
    ...(reused.length ? { reusedBundles: reused } : {}),
    ...(skipped.length ? { skipped } : {}),
    models: plan.map(({ m, manifest }) => ({
      key: m.key,
      title: m.title,
      ...(m.light ? { light: true } : {}),
      ...(m.pool ? { pool: true } : {}),
      images: Number(env.BENCH_IMAGES ?? m.images),
      backboneMacs: manifest.backbone.macs,
      exits: manifest.exits.map((e) => ({ name: e.name, macsFraction: e.macsFraction, threshold: e.threshold })),
      calibrationSamples: manifest.calibration.samples,
      target: manifest.calibration.target,
    })),
    results: results.map(({ labels: _labels, ...r }) => r),
    curves: curveResults,
  };
  await mkdir(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${started.toISOString().slice(0, 19).replace(/[:T]/g, '-')}.json`);
  // Long number arrays (BENCH_CALL_MS's per-call times) one to a line, not one number to a line.
  const json = JSON.stringify(record, null, 2).replace(/\[\n\s*(-?[\d.e+-]+,\n\s*){16,}-?[\d.e+-]+\n\s*\]/g, (m) =>
    JSON.stringify(JSON.parse(m)),
  );
  await writeFile(file, json + '\n');
  log(`wrote ${path.relative(root, file)}`);
  const { renderMarkdown } = await import('../bench/report.mjs');
  const md = renderMarkdown(record, path.relative(root, file));
  if (env.BENCH_NO_MD !== '1') {
    await writeBlock(path.join(root, 'BENCHMARKS.md'), 'bench:results', md);
    log('updated BENCHMARKS.md');
  }
  console.log('\n' + md);
}

main().catch((e) => {
  console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});

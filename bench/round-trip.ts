// Round-trip micro-benchmark: what one classify() costs between the page and the worker (batch 1, WASM), against a bare
// postMessage echo worker, a comlink echo worker and the bench's baseline worker (the full model over comlink), all
// interleaved image by image in one Chromium page. Two SDK builds run side by side: A (the source at --base, extracted
// from git; without it this checkout again, an A/A run) and B (this checkout), each plain and profiled (→ / ← worker).
// Round trip = page time − the worker's own time (timings.totalMs; the baseline's workerMs). Profiled calls also give
// the SDK's work around onnxruntime: page time and the worker's span (received → reply) less its onnxruntime runs
// (profile runMs), medians, with B − A in µs per call, and the runs' median against the baseline worker's session.run. `npx tsx bench/round-trip-profile.ts FILE` summarises a profile.
//
// With --in-thread, every side runs in the page's own thread: the echoes and the SDK's worker API (createWorkerApi,
// onnxruntime included) answer on a MessageChannel in the page, as the unit tests drive them, so the round trip is the
// CPU work of both ends (no thread wake-ups): what the SDK's own code costs, measurable on a loaded machine.
//
// --page-alone CALLS also times the page's SDK alone (A and B over a transport that answers at once, blocks of CALLS
// calls, passes x 4 blocks a side; an ImageData, one of 224 x 224, a Float32Array, a canvas; B's transport gives the
// input buffers back as the worker does): µs per classify() call, no messages nor worker.
//
// --cpu-profile FILE writes the page thread's CPU profile (DevTools format; with --in-thread, both ends), --only a,b
// measures only the sides whose names contain a or b. --manifest NAME loads the bundle's NAME instead of manifest.json:
// `--manifest manifest-noexit.json --warmup 1500` is the bench's worst case (every threshold 1; the warm-up calls let
// live pruning switch every exit off: the exits pruned after the run are printed).
//
//   npx tsx bench/round-trip.ts [bundleDir] [--base COMMIT] [--in-thread] [--images N] [--passes P] [--threads T]
//     [--only NAMES] [--cpu-profile FILE] [--port P] [--manifest NAME] [--warmup CALLS] [--page-alone CALLS]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright';
import type { Plugin } from 'vite';
import { boolFlag, intFlag, stringFlag } from './args.js';
import type { RoundTripConfig, SideStats } from './round-trip-page.js';
import { serveStatic } from '../scripts/static-server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const IMAGES = intFlag(args, '--images', 300);
const PASSES = intFlag(args, '--passes', 3);
const THREADS = intFlag(args, '--threads', 1);
const PORT = Number(stringFlag(args, '--port') ?? 0);
const base = stringFlag(args, '--base');
const inThread = boolFlag(args, '--in-thread');
const only = stringFlag(args, '--only')?.split(',');
const cpuProfile = stringFlag(args, '--cpu-profile');
const manifestName = stringFlag(args, '--manifest') ?? 'manifest.json';
const WARMUP = intFlag(args, '--warmup', 20);
const PAGE_ALONE = args.includes('--page-alone') ? intFlag(args, '--page-alone', 1) : 0;
const dir = path.resolve(args[0] ?? path.join(root, 'bench/.bundles/fashion'));
const fashion = path.basename(dir).startsWith('fashion');
const imagesFile = fashion
  ? path.join(root, 'public/models/fashion-resnet/test-u8.bin')
  : path.resolve(root, '../shared/data/cifar10/test-u8.bin');

const cache = path.join(root, 'bench/.cache/round-trip');
const outDir = path.join(cache, 'dist');
let baseSrc: string | undefined;

if (base) {
  // The SDK source at `base`, beside this checkout's node_modules (resolved upwards from bench/.cache).
  const at = path.join(cache, 'base');
  fs.rmSync(at, { recursive: true, force: true });
  fs.mkdirSync(at, { recursive: true });
  const tar = execFileSync('git', ['archive', base, 'src'], { cwd: root, maxBuffer: 1 << 28 });
  execFileSync('tar', ['-x', '-C', at], { input: tar });
  baseSrc = path.join(at, 'src');
}

/** Points round-trip-base.ts's import of the SDK at the source extracted from `--base`. */
function baseSdk(): Plugin {
  return {
    name: 'round-trip-base-sdk',
    enforce: 'pre',
    resolveId(source, importer) {
      if (!baseSrc || !importer?.endsWith('round-trip-base.ts') || !source.startsWith('../src/')) return null;
      return path.join(baseSrc, source.slice('../src/'.length).replace(/\.js$/, '.ts'));
    },
  };
}

const { build } = await import('vite');
await build({
  configFile: path.join(root, 'bench/vite.config.ts'),
  logLevel: 'warn',
  plugins: [baseSdk()],
  build: {
    outDir,
    emptyOutDir: true,
    // readable function names in a CPU profile
    ...(cpuProfile ? { minify: false } : {}),
    rollupOptions: { input: path.join(root, 'bench/round-trip.html') },
  },
});
const server = await serveStatic({
  mounts: { '/': outDir, '/bundle/': dir, '/images/': path.dirname(imagesFile) },
  port: PORT,
});
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page exception:', e.message));
  page.on('response', (r) => r.status() >= 400 && console.error('HTTP', r.status(), r.url()));
  page.on('console', (m) => m.type() === 'error' && console.error('page error:', m.text()));
  await page.goto(new URL('round-trip.html', server.url).href);
  await page.waitForFunction(() => window.selfxitRoundTrip !== undefined);
  const config: RoundTripConfig = {
    manifestUrl: `bundle/${manifestName}`,
    imagesUrl: `images/${path.basename(imagesFile)}`,
    images: IMAGES,
    threads: THREADS,
    passes: PASSES,
    inThread,
    warmup: WARMUP,
    pageAlone: PAGE_ALONE,
    ...(only ? { only } : {}),
  };
  const cdp = cpuProfile ? await page.context().newCDPSession(page) : undefined;
  if (cdp) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 250 });
    await cdp.send('Profiler.start');
  }
  const { stats, agree, engines, pruned, alone } = await page.evaluate((c) => window.selfxitRoundTrip.run(c), config);
  if (cdp && cpuProfile) {
    const { profile } = await cdp.send('Profiler.stop');
    fs.writeFileSync(cpuProfile, JSON.stringify(profile));
  }
  console.log(
    `${dir}: ${IMAGES} images x ${PASSES} passes, Chromium WASM ${THREADS} thread(s), engines A/B ${engines.join('/')}, ` +
      `A = ${base ?? 'this checkout'}, B = this checkout; A/B same label on ${(agree * 100).toFixed(1)} %` +
      (inThread ? '; all in the page thread (--in-thread)' : '') +
      `; ${manifestName}, ${WARMUP} warm-up calls, exits pruned at the end A/B ${pruned.map((p) => `[${p}]`).join('/')}`,
  );
  const f = (x: number | undefined): string => (x === undefined ? '' : x.toFixed(3));
  // (in the page thread, the marks of the two ends mix: no page columns then)
  console.log(
    '| side | page ms | round trip ms: mean | 90 % trimmed mean | median | p90 | → worker | ← worker | page − onnxruntime runs (median) | worker − onnxruntime runs (median) |' +
      (inThread ? '' : ' page before post (median) | page after reply (median) |'),
  );
  console.log(`|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|${inThread ? '' : '---:|---:|'}`);
  const sides = [...new Set(stats.map((s) => s.side))];
  const avg = (rows: SideStats[], k: keyof SideStats): number | undefined =>
    rows[0]![k] === undefined ? undefined : rows.reduce((a, r) => a + (r[k] as number), 0) / rows.length;
  for (const side of sides) {
    const rows = stats.filter((s) => s.side === side);
    for (const r of rows)
      console.log(
        `| ${side} #${r.pass} | ${f(r.pageMs)} | ${f(r.roundTripMs)} | ${f(r.roundTripTrimmed)} | ${f(r.roundTripP50)} | ` +
          `${f(r.roundTripP90)} | ${f(r.toWorkerMs)} | ${f(r.fromWorkerMs)} | ${f(r.outsideRunP50)} | ${f(r.workerOutsideRunP50)} |` +
          (inThread ? '' : ` ${f(r.sendMs)} | ${f(r.receiveMs)} |`),
      );
    console.log(
      `| **${side}** (mean of passes) | ${f(avg(rows, 'pageMs'))} | **${f(avg(rows, 'roundTripMs'))}** | ` +
        `${f(avg(rows, 'roundTripTrimmed'))} | ${f(avg(rows, 'roundTripP50'))} | ${f(avg(rows, 'roundTripP90'))} | ` +
        `${f(avg(rows, 'toWorkerMs'))} | ${f(avg(rows, 'fromWorkerMs'))} | ${f(avg(rows, 'outsideRunP50'))} | ` +
        `${f(avg(rows, 'workerOutsideRunP50'))} |` +
        (inThread ? '' : ` ${f(avg(rows, 'sendMs'))} | ${f(avg(rows, 'receiveMs'))} |`),
    );
  }
  if (sides.includes('selfxit A (profiled)') && sides.includes('selfxit B (profiled)')) {
    for (const [k, what] of [
      ['outsideRunP50', 'page − onnxruntime runs'],
      ['workerOutsideRunP50', 'worker span − onnxruntime runs'],
      ['runP50', 'onnxruntime runs'],
    ] as const) {
      const outside = (side: string): number =>
        avg(
          stats.filter((s) => s.side === side),
          k,
        )!;
      const [a, b] = [outside('selfxit A (profiled)'), outside('selfxit B (profiled)')];
      // the baseline worker's session.run alone (its preprocessing and softmax are outside it)
      const full =
        k === 'runP50' && sides.includes('full model (bench baseline)') ? outside('full model (bench baseline)') : 0;
      console.log(
        `${what} (profiled calls, median): A ${a.toFixed(3)} ms, B ${b.toFixed(3)} ms; ` +
          `B − A ${((b - a) * 1000).toFixed(1)} µs per call` +
          (full
            ? `; full model ${full.toFixed(3)} ms, A / full ${(a / full).toFixed(3)}, B / full ${(b / full).toFixed(3)}`
            : ''),
      );
    }
  }
  for (const k of sides.some((s) => s.includes('A'))
    ? (['roundTripMs', 'roundTripTrimmed', 'roundTripP50'] as const)
    : []) {
    const trip = (side: string): number =>
      avg(
        stats.filter((s) => s.side === side),
        k,
      )!;
    const full = inThread ? NaN : trip('full model (bench baseline)');
    console.log(
      `${k}: / full model's: A ${(trip('selfxit A') / full).toFixed(3)}, B ${(trip('selfxit B') / full).toFixed(3)}; ` +
        `B − A ${(trip('selfxit B') - trip('selfxit A')).toFixed(3)} ms (plain), ` +
        `${(trip('selfxit B (profiled)') - trip('selfxit A (profiled)')).toFixed(3)} ms (profiled)`,
    );
  }
  if (alone.length > 0) {
    const median = (v: readonly number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1]!;
    console.log(
      `\npage alone (instant transport, ${PAGE_ALONE} calls a block), µs per classify() call, median of blocks:`,
    );
    console.log('| input | A | B | B − A | blocks A | blocks B |\n|---|---:|---:|---:|---|---|');
    for (const input of [...new Set(alone.map((a) => a.input))]) {
      const [a, b] = (['A', 'B'] as const).map((side) => alone.find((x) => x.input === input && x.side === side)!);
      const list = (v: readonly number[]): string => v.map((x) => x.toFixed(1)).join(' ');
      const [ma, mb] = [median(a!.usPerCall), median(b!.usPerCall)];
      console.log(
        `| ${input} | ${ma.toFixed(2)} | ${mb.toFixed(2)} | ${(mb - ma).toFixed(2)} | ${list(a!.usPerCall)} | ${list(b!.usPerCall)} |`,
      );
    }
  }
} finally {
  await browser.close();
  await server.close();
}

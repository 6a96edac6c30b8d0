// End-to-end test of the demo page: starts `scripts/demo.mjs` (prepare if needed, build, serve), classifies the
// gallery, lowers the agreement target with the slider and checks the results move consistently, saves a screenshot
// (test-results/demo.png) and fails on any console error; then makes a device plan and downloads its cost table
// (JSON that `selfxit prepare --cost-table` reads, checked against the bundle's exits); then runs "bring your own
// model" on 300 PNG files; and "learn on this device" streams images into the plain model with learning on.
import { test, expect, type Page } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { unzipSync } from 'fflate';
import { PNG } from 'pngjs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Summary {
  target: number;
  count: number;
  backend: string;
  agreement: number;
  accuracyEarly: number;
  accuracyFull: number;
  macsFraction: number;
  exitShares: number[];
  exits: number[];
  expected?: { thresholds: number[]; macsFraction: number; agreement: number };
}

let server: ChildProcess | undefined;
let baseUrl = '';

test.describe.configure({ mode: 'serial' });

test.beforeAll(async () => {
  test.setTimeout(600_000); // first run prepares the bundle (calibration) and builds the page
  server = spawn(process.execPath, ['scripts/demo.mjs'], {
    cwd: root,
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  baseUrl = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const m = /selfxit demo: (http:\/\/\S+)/.exec(output);
      if (m) resolve(m[1]!);
    };
    server!.stdout!.on('data', onData);
    server!.stderr!.on('data', onData);
    server!.on('exit', (code) => reject(new Error(`scripts/demo.mjs exited with ${code} before serving:\n${output}`)));
  });
});

test.afterAll(() => {
  server?.kill('SIGTERM');
});

function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console.error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  return errors;
}

async function waitForRun(page: Page, runs: number): Promise<Summary> {
  await page.waitForFunction(
    (n) =>
      window.selfxitDemo.status === 'error' || (window.selfxitDemo.status === 'ready' && window.selfxitDemo.runs >= n),
    runs,
    {
      timeout: 180_000,
    },
  );
  const state = await page.evaluate(() => window.selfxitDemo);
  expect(state.error, 'the demo reported an error').toBeUndefined();
  return state.last as Summary;
}

/** Cumulative share of images that left at or before each exit slot. */
function cumulative(shares: readonly number[]): number[] {
  let acc = 0;
  return shares.map((s) => (acc += s));
}

test('demo classifies the gallery and follows the agreement target', async ({ page }) => {
  test.setTimeout(600_000);
  const errors = watchConsole(page);
  await page.goto(baseUrl);
  const first = await waitForRun(page, 1);

  // The gallery is classified: every tile has a label, a confidence and an exit.
  await expect(page.locator('#gallery .tile')).toHaveCount(48);
  await expect(page.locator('#gallery .tile.pending')).toHaveCount(0);
  await expect(page.locator('#pill-backend')).toHaveText(/backend: (wasm|webgpu)/);
  expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
  expect(first.count).toBe(200);
  expect(first.accuracyFull).toBeGreaterThan(0.8);
  expect(first.agreement).toBeGreaterThan(0.9);
  expect(first.exitShares.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
  expect(first.macsFraction).toBeGreaterThan(0);
  expect(first.macsFraction).toBeLessThan(1.2);

  // Lower the target step by step with the keyboard, as a user would; each change reclassifies.
  const slider = page.locator('#target');
  const runs: Summary[] = [first];
  for (const key of ['PageDown', 'Home']) {
    await slider.focus();
    await slider.press(key);
    const next = await waitForRun(page, runs.length + 1);
    runs.push(next);
  }
  for (let r = 1; r < runs.length; r++) {
    const hi = runs[r - 1]!;
    const lo = runs[r]!;
    expect(lo.target).toBeLessThan(hi.target);
    // Lower target → no more MACs, and images leave no later.
    expect(lo.macsFraction).toBeLessThanOrEqual(hi.macsFraction + 1e-9);
    const cLo = cumulative(lo.exitShares);
    const cHi = cumulative(hi.exitShares);
    cLo.forEach((c, k) => expect(c).toBeGreaterThanOrEqual(cHi[k]! - 1e-9));
    // Where the thresholds only went down, every single image exits at the same exit or earlier.
    const tLo = lo.expected?.thresholds;
    const tHi = hi.expected?.thresholds;
    if (tLo && tHi && tLo.every((t, k) => t <= tHi[k]!))
      lo.exits.forEach((e, i) => expect(e).toBeLessThanOrEqual(hi.exits[i]!));
  }
  const last = runs[runs.length - 1]!;
  expect(last.macsFraction).toBeLessThan(first.macsFraction);

  // The trade-off chart marks the chosen point.
  await expect(page.locator('#chart-tradeoff circle')).toHaveCount(1);

  await page.locator('#target').evaluate((el: HTMLInputElement, v) => {
    el.value = String(v);
    el.dispatchEvent(new Event('input'));
    el.dispatchEvent(new Event('change'));
  }, first.target);
  await waitForRun(page, runs.length + 1);
  await page.screenshot({ path: path.join(root, 'test-results/demo.png'), fullPage: true });
  expect(errors).toEqual([]);
});

test('plan for this device, then download its cost table', async ({ page }) => {
  test.setTimeout(300_000);
  const errors = watchConsole(page);
  await page.goto(baseUrl);
  await waitForRun(page, 1);
  await expect(page.locator('#plan-download')).toBeDisabled();
  await page.locator('#plan').click();
  await waitForRun(page, 2); // the gallery is classified again under the plan
  const state = await page.evaluate(() => window.selfxitDemo);
  expect(state.plan?.backend).toMatch(/wasm|webgpu/);
  expect(state.plan!.expectedMsFraction).toBeGreaterThan(0);
  await expect(page.locator('#plan-note')).toContainText('Plan for');
  await page.locator('.controls').screenshot({ path: path.join(root, 'test-results/demo-plan.png') });

  const download = page.waitForEvent('download');
  await page.locator('#plan-download').click();
  const file = await download;
  expect(file.suggestedFilename()).toMatch(/^selfxit-cost-table-(wasm|webgpu)-\d+t\.json$/);
  const table = JSON.parse(readFileSync(await file.path(), 'utf8')) as {
    unit: string;
    backbone: number;
    cuts?: Record<string, number>;
    heads?: Record<string, number>;
    overhead?: number;
  };
  const manifest = (await page.evaluate(() => fetch('bundle/manifest.json').then((r) => r.json()))) as {
    exits: { cut: string }[];
  };
  expect(table.unit).toBe('ms');
  expect(table.backbone).toBeGreaterThan(0);
  expect(Object.keys(table.cuts ?? {}).sort()).toEqual(manifest.exits.map((e) => e.cut).sort());
  for (const v of Object.values(table.cuts ?? {})) expect(v).toBeLessThanOrEqual(table.backbone + 1e-9);
  expect(errors).toEqual([]);
});

test('bring your own model: calibration in the worker, then the page classifies with the new exits; the bundle downloads', async ({
  page,
}) => {
  test.setTimeout(300_000);
  const errors = watchConsole(page);
  // 300 of the shipped calibration images as PNG files, as a user would pick them.
  const dir = path.join(root, 'public/models/fashion-resnet');
  const raw = readFileSync(path.join(dir, 'calib-u8.bin'));
  const files = Array.from({ length: 300 }, (_, i) => {
    const png = new PNG({ width: 28, height: 28 });
    for (let p = 0; p < 784; p++) {
      const v = raw[i * 784 + p]!;
      png.data.set([v, v, v, 255], p * 4);
    }
    return { name: `img-${String(i).padStart(3, '0')}.png`, mimeType: 'image/png', buffer: PNG.sync.write(png) };
  });
  await page.goto(baseUrl);
  await page.locator('#byom-model').setInputFiles(path.join(dir, 'model.onnx'));
  // Too few images for the target: said up front, and calibration cannot start.
  await page.locator('#byom-files').setInputFiles(files.slice(0, 20));
  await expect(page.locator('#byom-status')).toHaveText(
    '20 images selected (files): at least 300 are needed for target 0.99.',
  );
  await expect(page.locator('#byom-run')).toBeDisabled();
  await page.locator('#byom-files').setInputFiles(files);
  await page.locator('#byom-mean').fill('0.286');
  await page.locator('#byom-std').fill('0.353');
  await page.locator('#byom-target').fill('0.98');
  await page.locator('#byom-target').dispatchEvent('change');
  await expect(page.locator('#byom-status')).toHaveText('300 images selected (files).');
  const names = readFileSync(path.join(dir, 'labels.txt'), 'utf8').trim().split('\n');
  await page.locator('#byom-labels').fill(names.join(', '));
  await page.locator('#byom-run').click();
  await expect(page.locator('#byom-status')).toHaveText(/^Done\./, { timeout: 240_000 });
  await expect(page.locator('#byom-summary')).toContainText('Calibrated on 300 images');
  await expect(page.locator('#byom-gallery .tile')).toHaveCount(24);
  // The class names typed in are the labels.
  for (const label of await page.locator('#byom-gallery .tile .label').allTextContents())
    expect(names).toContain(label);
  const download = page.waitForEvent('download');
  await page.locator('#byom-download').click();
  const zip = unzipSync(new Uint8Array(readFileSync(await (await download).path())));
  const manifest = JSON.parse(new TextDecoder().decode(zip['manifest.json']!)) as {
    calibration: { samples: number };
    segments: { file: string }[];
    labels: string[];
  };
  expect(manifest.calibration.samples).toBe(300);
  expect(manifest.labels).toEqual(names);
  for (const s of manifest.segments) expect(zip[s.file]?.length ?? 0).toBeGreaterThan(0);
  expect(errors).toEqual([]);
});

test('learn on this device: the plain model learns exits from streamed images; the numbers and the chart follow', async ({
  page,
}) => {
  test.setTimeout(300_000);
  const errors = watchConsole(page);
  await page.goto(baseUrl);
  await expect(page.locator('#learn-start')).toBeEnabled();
  await page.locator('#learn-start').click();
  // numbers and chart update as images stream (points every 50 images)
  await page.waitForFunction(() => window.selfxitLearnDemo.points.length >= 3, null, { timeout: 120_000 });
  const seen = Number((await page.locator('#l-seen').textContent())!.replace(/,/g, ''));
  expect(seen).toBeGreaterThanOrEqual(100);
  await expect(page.locator('#chart-learn path[data-series="MACs saved"]')).toHaveCount(1);
  // the first fit (500 samples) puts exits in use: MACs are saved and the audit starts
  await page.waitForFunction(
    () => window.selfxitLearnDemo.status === 'error' || window.selfxitLearnDemo.points.some((p) => p.macsSaved > 0),
    null,
    { timeout: 180_000 },
  );
  const s = await page.evaluate(() => window.selfxitLearnDemo);
  expect(s.error).toBeUndefined();
  expect(s.learning!.fits).toBeGreaterThanOrEqual(1);
  await expect(page.locator('#l-exits')).toHaveText(/^on \(\d+\)$/);
  await expect(page.locator('#l-fits')).not.toHaveText('0');
  await page.locator('#learn-start').click(); // pause
  await page.waitForFunction(() => window.selfxitLearnDemo.status === 'stopped');
  await page.locator('.learn').screenshot({ path: path.join(root, 'test-results/demo-learn.png') });
  await page.locator('#learn-reset').click(); // leave no learned state behind
  await expect(page.locator('#l-fits')).toHaveText('0');
  expect(errors).toEqual([]);
});

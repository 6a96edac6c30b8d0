// End-to-end test of the demo page: starts `scripts/demo.mjs` (prepare if needed, build, serve), classifies the
// gallery, lowers the agreement target with the slider and checks the results move consistently, saves a screenshot
// (test-results/demo.png) and fails on any console error.
import { test, expect, type Page } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
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
  server = spawn(process.execPath, ['scripts/demo.mjs'], { cwd: root, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
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
  await page.waitForFunction((n) => window.selfxitDemo.status === 'error' || (window.selfxitDemo.status === 'ready' && window.selfxitDemo.runs >= n), runs, {
    timeout: 180_000,
  });
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
    if (tLo && tHi && tLo.every((t, k) => t <= tHi[k]!)) lo.exits.forEach((e, i) => expect(e).toBeLessThanOrEqual(hi.exits[i]!));
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

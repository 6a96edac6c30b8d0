// The demo's device plan: "Plan for this device" runs clf.plan() in the page (stage times measured in the worker),
// the gallery is classified again under the plan, and "Download cost table" saves JSON that `selfxit prepare
// --cost-table` reads (checked against the bundle's exits).
import { test, expect } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let server: ChildProcess | undefined;
let baseUrl = '';

test.beforeAll(async () => {
  test.setTimeout(600_000); // may prepare the demo bundle and build the page
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

test('plan for this device, then download its cost table', async ({ page }) => {
  test.setTimeout(300_000);
  const errors: string[] = [];
  page.on('console', (msg) => msg.type() === 'error' && errors.push(msg.text()));
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(baseUrl);
  await page.waitForFunction(() => window.selfxitDemo.status === 'error' || (window.selfxitDemo.status === 'ready' && window.selfxitDemo.runs >= 1), undefined, { timeout: 180_000 });
  await expect(page.locator('#plan-download')).toBeDisabled();
  await page.locator('#plan').click();
  await page.waitForFunction(() => window.selfxitDemo.status === 'error' || (window.selfxitDemo.runs >= 2 && window.selfxitDemo.status === 'ready'), undefined, { timeout: 180_000 });
  const state = await page.evaluate(() => window.selfxitDemo);
  expect(state.error).toBeUndefined();
  expect(state.plan?.backend).toMatch(/wasm|webgpu/);
  expect(state.plan!.expectedMsFraction).toBeGreaterThan(0);
  await expect(page.locator('#plan-note')).toContainText('Plan for');
  await page.locator('.controls').screenshot({ path: path.join(root, 'test-results/demo-plan.png') });

  const download = page.waitForEvent('download');
  await page.locator('#plan-download').click();
  const file = await download;
  expect(file.suggestedFilename()).toMatch(/^selfxit-cost-table-(wasm|webgpu)-\d+t\.json$/);
  const table = JSON.parse(readFileSync(await file.path(), 'utf8')) as { unit: string; backbone: number; cuts?: Record<string, number>; heads?: Record<string, number>; overhead?: number };
  const manifest = (await page.evaluate(() => fetch('bundle/manifest.json').then((r) => r.json()))) as { exits: { cut: string }[] };
  expect(table.unit).toBe('ms');
  expect(table.backbone).toBeGreaterThan(0);
  expect(Object.keys(table.cuts ?? {}).sort()).toEqual(manifest.exits.map((e) => e.cut).sort());
  for (const v of Object.values(table.cuts ?? {})) expect(v).toBeLessThanOrEqual(table.backbone + 1e-9);
  expect(errors).toEqual([]);
});

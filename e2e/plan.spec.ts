// Browser test of device plans on the tiny test bundle (WASM): clf.plan() measures every stage and applies the plan
// (an exit it leaves out is never taken), a second load finds it in IndexedDB without fetching validation.bin,
// `cache: false` stores nothing, `plan: 'off'` ignores it, and a bundle without validation data gives INVALID_BUNDLE.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect, type Page } from '@playwright/test';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { decodeValidation } from '../src/bundle/validation-file.js';
import { planExits } from '../src/policy/device-plan.js';
// window.selfxit / window.testkit are typed in runtime.spec.ts (e2e/pages/testkit.js).

const B = '/e2e/.bundles';
const NEVER = 1.0000001;
const bundles = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '.bundles');

async function requestLog(page: Page): Promise<string[]> {
  return (await (await page.request.get('/__log')).json()) as string[];
}

test('clf.plan(): measured stages, the plan applied and cached per device; cache: false stores nothing; no validation data → INVALID_BUNDLE', async ({
  page,
}) => {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
  await page.request.get('/__log/reset');

  // First visit: no plan yet; plan() for a low target. The tiny stages take some 0.05 ms each, so which exits pay off
  // depends on the measured noise: the test checks that the plan is the planner's choice for the times it measured,
  // and that it is applied, whichever exits that is.
  const first = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm' });
    const before = {
      plan: clf.info().plan ?? null,
      exits: (await clf.classifyBatch(await testkit.inputs(`${B}/tiny`))).map((r) => r.exit.index),
    };
    const plan = await clf.plan({ target: 0.05 });
    const info = clf.info();
    const results = (await clf.classifyBatch(await testkit.inputs(`${B}/tiny`))).map((r) => ({
      exit: r.exit.index,
      confidence: r.confidence,
    }));
    const retarget = clf.setTarget(0.2).thresholds;
    await clf.dispose();
    return { before, plan, info, results, retarget };
  }, B);
  console.log(
    `tiny bundle plan at target 0.05: exits used ${JSON.stringify(first.plan.enabled)}, stage ms ${first.plan.timings.stageMs.map((t) => t.toFixed(3)).join('/')}, decision ms ${first.plan.timings.decisionMs.map((t) => t.toFixed(3)).join('/')}`,
  );
  expect(first.before.plan).toBeNull();
  expect(first.before.exits).toContain(0); // the manifest's thresholds use both exits
  expect(first.before.exits).toContain(1);
  const { plan, info } = first;
  for (const t of [plan.timings.stageMs, plan.timings.decisionMs]) {
    expect(t).toHaveLength(3);
    expect(t.every((x) => Number.isFinite(x) && x >= 0)).toBe(true);
  }
  // The compiled engine (the default) is timed by where its one run leaves: a stage's time is a difference of two
  // medians, clipped at 0 when noise orders them the other way (measure.ts, compiledStageTimings); their sum is the
  // whole run's.
  expect(plan.timings.stageMs.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  expect(plan).toMatchObject({ backend: 'wasm', target: 0.05, manifestHash: info.manifestHash, threads: info.threads });
  // The worker's plan is planExits() (the pure planner) on the bundle's validation data and the measured times.
  const manifest = JSON.parse(readFileSync(path.join(bundles, 'tiny/manifest.json'), 'utf8')) as BundleManifest;
  const validation = decodeValidation(
    new Uint8Array(readFileSync(path.join(bundles, 'tiny/validation.bin'))),
    manifest.exits.length,
    manifest.calibration.samples,
  );
  // the runtime also records the engine the times were measured on (the default: compiled)
  expect(plan.engine).toBe('compiled');
  expect(plan).toEqual({
    ...planExits(manifest, validation, plan.timings, {
      target: 0.05,
      manifestHash: plan.manifestHash,
      backend: 'wasm',
      threads: plan.threads,
      measuredAt: plan.measuredAt,
    }),
    engine: 'compiled',
  });
  // Exit 1's random head agrees with the backbone on none of the validation samples, so no plan uses both exits (exit 0
  // alone usually wins: every sample can leave there; exit 1 alone only when reading exit 0 measured dearer than stage 1).
  expect(plan.enabled).toHaveLength(2);
  expect(plan.enabled.includes(false)).toBe(true);
  expect(plan.thresholds).toHaveLength(2);
  plan.enabled.forEach((on, j) =>
    on ? expect(plan.thresholds[j]).toBeLessThan(NEVER) : expect(plan.thresholds[j]).toBe(NEVER),
  );
  expect(info.plan).toEqual({
    target: 0.05,
    enabled: plan.enabled,
    thresholds: plan.thresholds,
    expectedMsFraction: plan.expectedMsFraction,
    expectedMacsFraction: plan.expectedMacsFraction,
    measuredAt: plan.measuredAt,
    stageMs: plan.timings.stageMs,
    decisionMs: plan.timings.decisionMs,
    exitMs: plan.timings.exitMs, // measured on the compiled engine (the default)
  });
  expect(info.plan?.exitMs).toHaveLength(3);
  expect(info.exits.map((e) => e.threshold)).toEqual(plan.thresholds);
  expect(info.segments.every((s) => s.loaded)).toBe(true);
  // Applied: a sample leaves at the first used exit whose confidence reaches the plan's threshold, never at an exit
  // the plan leaves out (though the manifest's thresholds used both).
  for (const r of first.results) {
    if (r.exit >= 0) {
      expect(plan.enabled[r.exit]).toBe(true);
      expect(r.confidence).toBeGreaterThanOrEqual(plan.thresholds[r.exit]!);
    }
  }
  const firstUsed = plan.enabled.indexOf(true);
  if (firstUsed >= 0) expect(first.results.filter((r) => r.exit === firstUsed).length).toBeGreaterThan(0);
  plan.enabled.forEach((on, j) => on || expect(first.retarget[j]).toBe(NEVER)); // setTarget() picks from the plan's curve: left-out exits stay off
  const validationRequests = (log: string[]) => log.filter((p) => p.endsWith('/validation.bin'));
  expect(validationRequests(await requestLog(page))).toEqual([`${B}/tiny/validation.bin`]);

  // Second load in the same browser context: the cached plan applies at once, nothing is fetched for it.
  await page.request.get('/__log/reset');
  const second = await page.evaluate(async (B) => {
    const { selfxit } = window;
    const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm' });
    const info = clf.info();
    await clf.dispose();
    const off = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', plan: 'off' });
    const offInfo = off.info();
    await off.dispose();
    return { info, offPlan: offInfo.plan ?? null, offThresholds: offInfo.exits.map((e) => e.threshold) };
  }, B);
  expect(second.info.plan).toEqual(info.plan);
  expect(second.info.exits.map((e) => e.threshold)).toEqual(plan.thresholds);
  expect(second.offPlan).toBeNull();
  expect(second.offThresholds).not.toEqual(plan.thresholds);
  expect(validationRequests(await requestLog(page))).toEqual([]);

  // cache: false measures and applies, but stores nothing: a later cached load of that bundle finds no plan.
  const uncached = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const clf = await selfxit.load(`${B}/tiny-exit0/`, { backend: 'wasm', cache: false });
    const p = await clf.plan({ target: 0.05 });
    const applied = clf.info().plan !== undefined;
    await clf.dispose();
    const later = await selfxit.load(`${B}/tiny-exit0/`, { backend: 'wasm' });
    const laterPlan = later.info().plan ?? null;
    await later.dispose();
    const keys = await new Promise<string[]>((resolve, reject) => {
      const open = indexedDB.open('selfxit');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const req = open.result.transaction('bundles').objectStore('bundles').getAllKeys();
        req.onsuccess = () => {
          resolve(req.result.map(String));
          open.result.close();
        };
        req.onerror = () => reject(req.error);
      };
    });
    const noValidation = await selfxit.load(`${B}/tiny-novalidation/`, { backend: 'wasm', cache: false });
    const error = await testkit.error(noValidation.plan());
    await noValidation.dispose();
    return {
      stages: p.timings.stageMs.length,
      applied,
      laterPlan,
      planKeys: keys.filter((k) => k.startsWith('plan:')),
      error,
    };
  }, B);
  expect(uncached.stages).toBe(3);
  expect(uncached.applied).toBe(true);
  expect(uncached.laterPlan).toBeNull();
  expect(uncached.planKeys).toEqual([`plan:${info.manifestHash}:wasm:${info.threads}:${info.engine}`]);
  expect(uncached.error).toMatchObject({ code: 'INVALID_BUNDLE' });
  expect(uncached.error!.message).toMatch(/validation/);
});

test('clf.plan() on WebGPU (SwiftShader): GPU activations between stages, the plan made for webgpu', async ({
  page,
}) => {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const clf = await selfxit.load(`${B}/tiny/`, { backend: 'webgpu', cache: false });
    if (clf.backend !== 'webgpu') {
      const reason = clf.info().fallbackReason ?? 'WebGPU not used';
      await clf.dispose();
      return { skipped: reason };
    }
    const plan = await clf.plan({ target: 0.05 });
    const exits = (await clf.classifyBatch((await testkit.inputs(`${B}/tiny`)).slice(0, 16))).map((r) => r.exit.index);
    const info = clf.info();
    await clf.dispose();
    return { skipped: null, plan, exits, backend: info.backend, applied: info.plan !== undefined };
  }, B);
  test.skip(out.skipped !== null, `no WebGPU adapter in this browser: ${out.skipped}`);
  expect(out.backend).toBe('webgpu');
  expect(out.plan).toMatchObject({ backend: 'webgpu' });
  expect(out.plan!.thresholds).toHaveLength(2);
  for (const t of [out.plan!.timings.stageMs, out.plan!.timings.decisionMs]) {
    expect(t).toHaveLength(3);
    expect(t.every((x) => Number.isFinite(x) && x >= 0)).toBe(true);
  }
  expect(out.applied).toBe(true);
  // Which exits pay off depends on this GPU's timings; an exit the plan leaves out is never taken.
  out.plan!.enabled.forEach((on, j) => on || expect(out.exits).not.toContain(j));
});

// CIFAR-10 ResNet-56 in the browser vs `selfxit eval`: prepare a bundle with the CLI (2,000 calibration images),
// evaluate 500 test images with the CLI, classify the same 500 in the browser (built package, WASM), and require
// the same exit and label for >= 99.8 % of them. Then WebGPU (SwiftShader) vs WASM in one page on 50 of those
// images: the same labels. Needs ../shared; skipped without it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test, expect, type LaunchOptions } from '@playwright/test';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { shuffleAndLimit } from '../src/calibrate/samples.js';
import {
  cifarPrepareArgs,
  cli as cliIn,
  evalWithNodeReference,
  cifarCalib as calib,
  cifarTest as testImages,
  repoRoot as root,
  shared,
} from './fixtures/cli-cascade.js';
import type * as Selfxit from '../src/index.js';

const model = path.join(shared, 'models/cifar10-resnet56.onnx');
const bundleDir = path.join(root, 'e2e/.bundles/cifar-resnet56');
const COUNT = 500;
const SEED = 0;

const cli = (args: string[]): string => cliIn(root, args);

const NO_SHARED = `needs ../shared (CIFAR-10 ResNet-56 and images) at ${shared}: not present, skipped`;
// Playwright's list reporter shows a skipped test's title but not test.skip()'s reason: say it once, as the Vitest files do.
if (!existsSync(model) || !existsSync(testImages))
  console.warn(`[e2e/cifar] skipping the CIFAR-10 tests: ${NO_SHARED}`);

/** The bundle from the CLI (kept in e2e/.bundles between runs; SELFXIT_E2E_REPREPARE=1 rebuilds it once per run). */
let prepared = false;
function ensureBundle(): BundleManifest {
  if (!prepared && (process.env.SELFXIT_E2E_REPREPARE === '1' || !existsSync(path.join(bundleDir, 'manifest.json')))) {
    cli(cifarPrepareArgs(model, calib, bundleDir, 2000));
  }
  prepared = true;
  return JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')) as BundleManifest;
}

/** Test-file indices of the first `count` images of eval's seeded subset (the class-ordered file shuffled with SEED). */
function subsetIndices(count: number): number[] {
  const all = new Uint8Array(readFileSync(testImages));
  return Array.from(
    shuffleAndLimit({ data: all, count: all.length / 3072 }, { height: 32, width: 32, channels: 3 }, SEED, count)
      .indices,
  );
}

test('CIFAR-10 ResNet-56, 500 test images: browser exits and labels (ESM and script-tag builds) match selfxit eval on >= 99.8 %', async ({
  page,
}) => {
  test.skip(!existsSync(model) || !existsSync(testImages), NO_SHARED);
  test.setTimeout(600_000);

  // 1. Bundle from the CLI.
  const manifest = ensureBundle();

  // 2. `selfxit eval` on the 500 images (seeded shuffle of the class-ordered test file).
  const { evalOut, node, indices, shares } = await evalWithNodeReference(
    root,
    manifest,
    bundleDir,
    testImages,
    COUNT,
    SEED,
  );

  // 4. The browser: built package (ESM import, then the script-tag build), WASM, the same 500 images as 32x32
  // ImageData (exact size: no resampling).
  for (const build of ['esm', 'script'] as const) {
    await page.goto(`/e2e/pages/${build}.html`);
    await page.waitForFunction(() => window.selfxitReady === true);
    const browser = await page.evaluate(
      async ({ indices }) => {
        const { selfxit } = window;
        const clf = await selfxit.load('/e2e/.bundles/cifar-resnet56/', { backend: 'wasm', cache: false });
        const images = await window.testkit.cifarImages('/shared/data/cifar10/test-u8.bin', indices);
        const t0 = performance.now();
        const results = await clf.classifyBatch(images);
        const ms = performance.now() - t0;
        const info = clf.info();
        await clf.dispose();
        return {
          results: results.map((r: Selfxit.ClassifyResult) => ({ index: r.index, exit: r.exit.index })),
          ms,
          threads: info.threads,
        };
      },
      { indices: Array.from(indices) },
    );
    const same = browser.results.filter((r, i) => r.index === node[i]!.index && r.exit === node[i]!.exit).length;
    console.log(
      `cifar resnet56 (${build} build): ${same}/${COUNT} browser decisions equal the Node/eval cascade; browser ${browser.ms.toFixed(0)} ms (${browser.threads} threads); ` +
        `exit shares browser ${shares(browser.results)
          .map((s) => s.toFixed(3))
          .join('/')} eval ${evalOut.exitShares.map((s) => s.toFixed(3)).join('/')}`,
    );
    expect(
      same / COUNT,
      `${build} build: share of images with the same exit and label as selfxit eval`,
    ).toBeGreaterThanOrEqual(0.998);
  }
});

/**
 * Whether a WebGPU adapter is expected: Chromium launched with --enable-unsafe-webgpu (playwright.config.ts does)
 * has one here, SwiftShader's software adapter. Then a fallback to WASM FAILS the test with the reason, since a
 * silent skip would hide the regression it exists for. Keyed on the flag rather than `navigator.gpu`, which can
 * exist with no usable adapter. Without the flag (another config or browser) the test skips, saying so.
 */
function webgpuExpected(launchOptions: LaunchOptions): boolean {
  return (launchOptions.args ?? []).includes('--enable-unsafe-webgpu');
}

/** Images in the WebGPU vs WASM comparison (the first of eval's 500). */
const GPU_COUNT = 50;
/**
 * Exits may differ between the backends only where the earlier exit's confidence is within this of its threshold:
 * float differences between WebGPU and WASM kernels move a max-softmax by ~1e-6..1e-4, not more.
 */
const NEAR_THRESHOLD = 1e-3;

test('CIFAR-10 ResNet-56, 50 test images: WebGPU (SwiftShader) gives the same labels as WASM in the same page', async ({
  page,
  launchOptions,
}) => {
  test.skip(!existsSync(model) || !existsSync(testImages), NO_SHARED);
  test.skip(
    !webgpuExpected(launchOptions),
    'Chromium was launched without --enable-unsafe-webgpu (see playwright.config.ts): no WebGPU adapter is expected, not checked',
  );
  // Measured on a busy 2-core machine: WebGPU load 11 s + 61 s for the 50 images on SwiftShader, WASM 3 s.
  test.setTimeout(600_000);
  const manifest = ensureBundle();
  const indices = subsetIndices(GPU_COUNT);

  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true);
  const out = await page.evaluate(
    async ({ indices }) => {
      const { selfxit, testkit } = window;
      const images = await testkit.cifarImages('/shared/data/cifar10/test-u8.bin', indices);
      const runAll = async (backend: 'webgpu' | 'wasm') => {
        const t0 = performance.now();
        const clf = await selfxit.load('/e2e/.bundles/cifar-resnet56/', { backend, cache: false });
        const used = clf.backend;
        const info = clf.info();
        const t1 = performance.now();
        const results =
          used === backend
            ? (await clf.classifyBatch(images)).map((r) => ({
                index: r.index,
                label: r.label,
                exit: r.exit.index,
                confidence: r.confidence,
              }))
            : [];
        const t2 = performance.now();
        const segmentsLoaded = clf.info().segments.filter((s) => s.loaded).length;
        await clf.dispose();
        return {
          backend: used,
          reason: info.fallbackReason ?? null,
          thresholds: info.exits.map((e) => e.threshold),
          results,
          loadMs: t1 - t0,
          classifyMs: t2 - t1,
          segmentsLoaded,
        };
      };
      const gpu = await runAll('webgpu');
      const wasm = await runAll('wasm');
      return { gpu, wasm };
    },
    { indices },
  );
  expect(
    out.gpu.backend,
    `WebGPU expected with --enable-unsafe-webgpu, but the classifier fell back to WASM: ${out.gpu.reason}`,
  ).toBe('webgpu');
  expect(out.wasm.backend).toBe('wasm');
  expect(out.gpu.results).toHaveLength(GPU_COUNT);
  expect(out.wasm.results).toHaveLength(GPU_COUNT);
  expect(out.gpu.thresholds).toEqual(manifest.exits.map((e) => e.threshold));

  const k = manifest.exits.length;
  const depth = (exit: number): number => (exit < 0 ? k : exit);
  const sameLabel = out.gpu.results.filter((g, i) => g.index === out.wasm.results[i]!.index).length;
  const sameExit = out.gpu.results.filter((g, i) => g.exit === out.wasm.results[i]!.exit).length;
  let maxConfDiff = 0;
  out.gpu.results.forEach((g, i) => {
    const w = out.wasm.results[i]!;
    if (g.exit === w.exit) {
      maxConfDiff = Math.max(maxConfDiff, Math.abs(g.confidence - w.confidence));
      return;
    }
    // A different exit: the backend that left earlier did so with a confidence just at its exit's threshold.
    const early = depth(g.exit) < depth(w.exit) ? g : w;
    const margin = Math.abs(early.confidence - out.gpu.thresholds[early.exit]!);
    expect(
      margin,
      `image ${indices[i]}: exit ${g.exit} on WebGPU vs ${w.exit} on WASM, confidence ${early.confidence} vs threshold ${out.gpu.thresholds[early.exit]}`,
    ).toBeLessThanOrEqual(NEAR_THRESHOLD);
  });
  const shares = (rs: { exit: number }[]): string => {
    const c = new Array<number>(k + 1).fill(0);
    for (const r of rs) c[depth(r.exit)]!++;
    return c.map((v) => (v / rs.length).toFixed(2)).join('/');
  };
  console.log(
    `cifar resnet56, ${GPU_COUNT} images: WebGPU (SwiftShader) load ${out.gpu.loadMs.toFixed(0)} ms + classifyBatch ${out.gpu.classifyMs.toFixed(0)} ms (${out.gpu.segmentsLoaded} segments); ` +
      `WASM load ${out.wasm.loadMs.toFixed(0)} ms + classifyBatch ${out.wasm.classifyMs.toFixed(0)} ms; labels equal ${sameLabel}/${GPU_COUNT}, exits equal ${sameExit}/${GPU_COUNT}, ` +
      `max confidence difference at equal exits ${maxConfDiff.toExponential(2)}; exit shares WebGPU ${shares(out.gpu.results)} WASM ${shares(out.wasm.results)}`,
  );
  // Must show 2: the same label for every image (a near-threshold exit flip that changed a label would fail here).
  out.gpu.results.forEach((g, i) =>
    expect(g.label, `image ${indices[i]}: WebGPU vs WASM label`).toBe(out.wasm.results[i]!.label),
  );
  expect(maxConfDiff, 'confidence difference where both backends left at the same exit').toBeLessThanOrEqual(
    NEAR_THRESHOLD,
  );
  // Several exits are taken, so rows really left the GPU batch at different stages.
  expect(new Set(out.gpu.results.map((r) => r.exit)).size).toBeGreaterThan(1);
});

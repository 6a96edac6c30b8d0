// The int8 CIFAR-10 ResNet-56, both formats of onnxruntime's quantizer, in the browser vs `selfxit eval`: prepare a
// bundle with the CLI (2,000 calibration images; QOperator: every exit head reads a uint8 cut through a
// DequantizeLinear and the segments pass uint8; QDQ: the same on the QuantizeLinear side of each pair), eval 200 test
// images with the CLI,
// classify the same 200 in Chromium (built package, WASM), and require the same exit and label for >= 99 % of them.
// Needs ../shared; skipped without it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test, expect } from '@playwright/test';
import type { BundleManifest } from '../src/bundle/manifest.js';
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

const COUNT = 200;
const SEED = 0;

const cli = (args: string[]): string => cliIn(root, args);

const NO_SHARED = `needs ../shared (the int8 CIFAR-10 ResNet-56 and images) at ${shared}: not present, skipped`;
const FORMATS = [
  { format: 'qop', title: 'QOperator', dequant: 'uint8' },
  { format: 'qdq', title: 'QDQ', dequant: 'uint8' },
] as const;
const modelOf = (format: string): string => path.join(shared, `models/cifar10-resnet56-int8-${format}.onnx`);
if (!existsSync(modelOf('qop')) || !existsSync(testImages))
  console.warn(`[e2e/int8] skipping the int8 tests: ${NO_SHARED}`);

for (const { format, title, dequant } of FORMATS)
  test(`int8 (${title}) CIFAR-10 ResNet-56, 200 test images: browser (WASM) exits and labels match selfxit eval on >= 99 %`, async ({
    page,
  }) => {
    const model = modelOf(format);
    const bundleDir = path.join(root, `e2e/.bundles/cifar-resnet56-int8-${format}`);
    test.skip(!existsSync(model) || !existsSync(testImages), NO_SHARED);
    test.setTimeout(600_000);

    // 1. Bundle from the CLI (kept in e2e/.bundles between runs; SELFXIT_E2E_REPREPARE=1 rebuilds it).
    // (also when a kept bundle reads its cuts otherwise than this code prepares them: one from before a change)
    const kept = path.join(bundleDir, 'manifest.json');
    const stale = (): boolean =>
      (JSON.parse(readFileSync(kept, 'utf8')) as BundleManifest).exits.some((e) => e.dequant?.dtype !== dequant);
    if (process.env.SELFXIT_E2E_REPREPARE === '1' || !existsSync(kept) || stale()) {
      const t0 = Date.now();
      cli(cifarPrepareArgs(model, calib, bundleDir, 2000));
      console.log(`int8 ${format} bundle prepared in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
    const manifest = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')) as BundleManifest;
    expect(manifest.exits.length).toBeGreaterThan(0);
    for (const e of manifest.exits) expect(e.dequant?.dtype).toBe(dequant);

    // 2. `selfxit eval` on the 200 images, and the same cascade per image in Node (onnxruntime-node).
    const { evalOut, node, indices, shares } = await evalWithNodeReference(
      root,
      manifest,
      bundleDir,
      testImages,
      COUNT,
      SEED,
    );

    // 3. The browser: the built package (ESM), WASM, the same images as 32x32 ImageData.
    await page.goto('/e2e/pages/esm.html');
    await page.waitForFunction(() => window.selfxitReady === true);
    const browser = await page.evaluate(
      async ({ indices, format }) => {
        const { selfxit } = window;
        const clf = await selfxit.load(`/e2e/.bundles/cifar-resnet56-int8-${format}/`, {
          backend: 'wasm',
          cache: false,
        });
        const images = await window.testkit.cifarImages('/shared/data/cifar10/test-u8.bin', indices);
        const t0 = performance.now();
        const results = await clf.classifyBatch(images);
        const ms = performance.now() - t0;
        const single = await clf.classify(images[0]!); // one input: the compiled engine
        const info = clf.info();
        await clf.dispose();
        return {
          results: results.map((r: Selfxit.ClassifyResult) => ({ index: r.index, exit: r.exit.index })),
          single: { index: single.index, exit: single.exit.index },
          ms,
          backend: info.backend,
        };
      },
      { indices: Array.from(indices), format },
    );
    expect(browser.backend).toBe('wasm');
    const same = browser.results.filter((r, i) => r.index === node[i]!.index && r.exit === node[i]!.exit).length;
    console.log(
      `int8 ${format} resnet56: ${same}/${COUNT} browser decisions equal the Node/eval cascade; browser ${browser.ms.toFixed(0)} ms; ` +
        `exit shares browser ${shares(browser.results)
          .map((s) => s.toFixed(3))
          .join(
            '/',
          )} eval ${evalOut.exitShares.map((s) => s.toFixed(3)).join('/')}; eval agreement ${evalOut.agreement}`,
    );
    expect(same / COUNT, 'share of images with the same exit and label as selfxit eval').toBeGreaterThanOrEqual(0.99);
    expect(browser.single).toEqual(browser.results[0]);
  });

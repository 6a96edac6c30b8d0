// The int8 CIFAR-10 ResNet-56, both formats of onnxruntime's quantizer, in the browser vs `selfxit eval`: prepare a
// bundle with the CLI (2,000 calibration images; QOperator: every exit head reads a uint8 cut through a
// DequantizeLinear and the segments pass uint8; QDQ: the same on the QuantizeLinear side of each pair), eval 200 test
// images with the CLI,
// classify the same 200 in Chromium (built package, WASM), and require the same exit and label for >= 99 % of them.
// Then `backend: 'webgpu'` (and 'auto') on 9 of them, with the manifest flagged `backbone.quantized` and without the
// field (a bundle written before it): WASM every time, the fallback reason naming the upstream bug, WASM's decisions
// (onnxruntime-web's WebGPU gave wrong labels on both formats: every QDQ input left at exit 0 as class 9).
// Needs ../shared; skipped without it.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
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
    // the same bundle flagged quantized (what prepare writes today) and without the field (written before it)
    const { quantized: _, ...legacy } = manifest.backbone;
    for (const [file, backbone] of [
      ['manifest-flagged.json', { ...legacy, quantized: true }],
      ['manifest-legacy.json', legacy],
    ] as const)
      writeFileSync(path.join(bundleDir, file), JSON.stringify({ ...manifest, backbone }));
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
        const decisions = (rs: Selfxit.ClassifyResult[]) => rs.map((r) => ({ index: r.index, exit: r.exit.index }));
        // WebGPU asked for: 8 images as a batch (the stage engine), 1 alone (the compiled engine)
        const gpu = [];
        for (const [manifest, backend] of [
          ['manifest-flagged.json', 'webgpu'],
          ['manifest-flagged.json', 'auto'],
          ['manifest-legacy.json', 'webgpu'], // found in the segments, on WebGPU (on any adapter, SwiftShader here)
        ] as const) {
          const g = await selfxit.load(`/e2e/.bundles/cifar-resnet56-int8-${format}/${manifest}`, {
            backend,
            cache: false,
          });
          const few = await g.classifyBatch(images.slice(0, 8));
          const one = await g.classify(images[8]!);
          const { backend: ran, fallbackReason } = g.info();
          gpu.push({ manifest, asked: backend, backend: ran, fallbackReason, results: decisions([...few, one]) });
          await g.dispose();
        }
        return {
          results: decisions(results),
          single: { index: single.index, exit: single.exit.index },
          ms,
          gpu,
          backend: info.backend,
          adapter: 'gpu' in navigator && (await navigator.gpu.requestAdapter()) !== null,
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
    if (!browser.adapter)
      console.log(`int8 ${format}: no WebGPU adapter in this Chromium: the legacy case not checked`);
    for (const g of browser.gpu) {
      const what = `${g.manifest}, backend '${g.asked}'`;
      expect(g.backend, `${what}: the backend`).toBe('wasm');
      expect(g.results, `${what}: WASM's decisions`).toEqual(browser.results.slice(0, 9));
      if (g.manifest === 'manifest-legacy.json' && !browser.adapter) continue; // it never got to WebGPU
      expect(g.fallbackReason, `${what}: why`).toMatch(
        /^the model has quantized ops \(.+\), which onnxruntime-web's WebGPU backend computes wrongly \(onnxruntime#32578\), so it runs on WASM$/,
      );
    }
  });

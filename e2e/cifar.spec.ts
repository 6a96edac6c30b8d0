// CIFAR-10 ResNet-56 in the browser vs `selfxit eval`: prepare a bundle with the CLI (2,000 calibration images),
// evaluate 500 test images with the CLI, classify the same 500 in the browser (built package, WASM), and require
// the same exit and label for >= 99.8 % of them. Needs ../shared; skipped without it.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortNode from 'onnxruntime-node';
import { test, expect } from '@playwright/test';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { runCascade } from '../src/engine/cascade.js';
import { shuffleAndLimit, toModelInput } from '../src/calibrate/samples.js';
import type { OrtModule } from '../src/ort/types.js';
import { OrtStageRunner } from '../src/runtime/stage-runner.js';
import { SerialQueue } from '../src/runtime/queue.js';
import type * as Selfxit from '../src/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const model = path.join(shared, 'models/cifar10-resnet56.onnx');
const calib = path.join(shared, 'data/cifar10/calib-u8.bin');
const testImages = path.join(shared, 'data/cifar10/test-u8.bin');
const bundleDir = path.join(root, 'e2e/.bundles/cifar-resnet56');
const COUNT = 500;
const SEED = 0;

interface EvalJson {
  samples: number;
  agreement: number;
  exitShares: number[];
  thresholds: number[];
}

function cli(args: string[]): string {
  return execFileSync(process.execPath, [path.join(root, 'node_modules/tsx/dist/cli.mjs'), path.join(root, 'src/cli/main.ts'), ...args], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

test('CIFAR-10 ResNet-56, 500 test images: browser exits and labels (ESM and script-tag builds) match selfxit eval on >= 99.8 %', async ({ page }) => {
  test.skip(!existsSync(model) || !existsSync(testImages), `needs ../shared (CIFAR-10 ResNet-56 and images) at ${shared}: not present, skipped`);
  test.setTimeout(600_000);

  // 1. Bundle from the CLI (kept in e2e/.bundles between runs; SELFXIT_E2E_REPREPARE=1 rebuilds it).
  if (process.env.SELFXIT_E2E_REPREPARE === '1' || !existsSync(path.join(bundleDir, 'manifest.json'))) {
    cli(['prepare', model, '--samples', calib, '--shape', '32,32,3', '--limit', '2000', '--seed', '0', '--mean', '0.485,0.456,0.406', '--std', '0.229,0.224,0.225', '--out', bundleDir]);
  }
  const manifest = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8')) as BundleManifest;

  // 2. `selfxit eval` on the 500 images (seeded shuffle of the class-ordered test file).
  const evalOut = JSON.parse(cli(['eval', bundleDir, '--samples', testImages, '--limit', String(COUNT), '--seed', String(SEED), '--json'])) as EvalJson;
  expect(evalOut.samples).toBe(COUNT);

  // 3. Per-image decisions in Node: the same subset, the same runCascade as eval, on onnxruntime-node.
  const all = new Uint8Array(readFileSync(testImages));
  const shape = { height: 32, width: 32, channels: 3 };
  const { batch, indices } = shuffleAndLimit({ data: all, count: all.length / 3072 }, shape, SEED, COUNT);
  const ort = ortNode as unknown as OrtModule;
  const sessions = await Promise.all(manifest.segments.map((s) => ort.InferenceSession.create(new Uint8Array(readFileSync(path.join(bundleDir, s.file))))));
  const runner = new OrtStageRunner({ Tensor: ort.Tensor, manifest, queue: new SerialQueue(), session: async (s) => sessions[s]! });
  const node: { index: number; exit: number }[] = [];
  for (let start = 0; start < COUNT; start += 64) {
    const rows = Math.min(64, COUNT - start);
    const x = new ort.Tensor('float32', toModelInput(batch, start, rows, manifest.input), [rows, 3, 32, 32]);
    for (const r of await runCascade(manifest, runner, x, rows)) node.push({ index: r.index, exit: r.exit });
  }
  await Promise.all(sessions.map((s) => s.release()));
  const shares = (rs: { exit: number }[]): number[] => {
    const k = manifest.exits.length;
    const c = new Array<number>(k + 1).fill(0);
    for (const r of rs) c[r.exit < 0 ? k : r.exit]!++;
    return c.map((v) => v / rs.length);
  };
  // The Node reference is eval's cascade: same exit shares (up to a sample flipped by batch-size rounding).
  shares(node).forEach((s, i) => expect(Math.abs(s - evalOut.exitShares[i]!), `node vs eval share of exit ${i}`).toBeLessThanOrEqual(2 / COUNT + 1e-9));

  // 4. The browser: built package (ESM import, then the script-tag build), WASM, the same 500 images as 32x32
  // ImageData (exact size: no resampling).
  for (const build of ['esm', 'script'] as const) {
    await page.goto(`/e2e/pages/${build}.html`);
    await page.waitForFunction(() => window.selfxitReady === true);
    const browser = await page.evaluate(
      async ({ indices }) => {
        const { selfxit } = window;
        const clf = await selfxit.load('/e2e/.bundles/cifar-resnet56/', { backend: 'wasm', cache: false });
        const bytes = new Uint8Array(await (await fetch('/shared/data/cifar10/test-u8.bin')).arrayBuffer());
        const images = indices.map((i) => {
          const rgba = new Uint8ClampedArray(32 * 32 * 4);
          for (let p = 0; p < 1024; p++) {
            rgba[p * 4] = bytes[i * 3072 + p * 3]!;
            rgba[p * 4 + 1] = bytes[i * 3072 + p * 3 + 1]!;
            rgba[p * 4 + 2] = bytes[i * 3072 + p * 3 + 2]!;
            rgba[p * 4 + 3] = 255;
          }
          return new ImageData(rgba, 32, 32);
        });
        const t0 = performance.now();
        const results = await clf.classifyBatch(images);
        const ms = performance.now() - t0;
        const info = clf.info();
        await clf.dispose();
        return { results: results.map((r: Selfxit.ClassifyResult) => ({ index: r.index, exit: r.exit.index })), ms, threads: info.threads };
      },
      { indices: Array.from(indices) },
    );
    const same = browser.results.filter((r, i) => r.index === node[i]!.index && r.exit === node[i]!.exit).length;
    console.log(
      `cifar resnet56 (${build} build): ${same}/${COUNT} browser decisions equal the Node/eval cascade; browser ${browser.ms.toFixed(0)} ms (${browser.threads} threads); ` +
        `exit shares browser ${shares(browser.results).map((s) => s.toFixed(3)).join('/')} eval ${evalOut.exitShares.map((s) => s.toFixed(3)).join('/')}`,
    );
    expect(same / COUNT, `${build} build: share of images with the same exit and label as selfxit eval`).toBeGreaterThanOrEqual(0.998);
  }
});

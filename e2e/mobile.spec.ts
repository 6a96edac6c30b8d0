// Browser tests of the calibrated MobileNet-style bundles (e2e/fixtures/mobile-bundles.ts): depthwise convs, inverted
// residuals and squeeze-excite, and the batch-1-only twin (manifest backbone.batch "one") classify in Chromium on WASM
// with the same decisions as `selfxit eval`'s engine, in a batch (stage engine) and one by one (compiled engine).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';
import { MOBILE_BUNDLES, MOBILE_TEST_SAMPLES } from './fixtures/mobile-bundles.js';

declare global {
  interface Window {
    selfxit: typeof Selfxit;
    selfxitReady?: boolean;
  }
}

interface Decision {
  index: number;
  exit: number;
  confidence: number;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const B = '/e2e/.bundles';

async function openPage(page: Page): Promise<void> {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
}

for (const name of Object.keys(MOBILE_BUNDLES)) {
  test(`${name}: classifies on WASM with eval's decisions, in a batch and one by one`, async ({ page }) => {
    test.setTimeout(120_000);
    const want = JSON.parse(readFileSync(path.join(root, `e2e/.bundles/${name}/expected.json`), 'utf8')) as Decision[];
    const manifest = JSON.parse(readFileSync(path.join(root, `e2e/.bundles/${name}/manifest.json`), 'utf8')) as {
      backbone: { batch?: string };
    };
    expect(manifest.backbone.batch).toBe(name === 'mobile' ? undefined : 'one');
    await openPage(page);
    const out = await page.evaluate(
      async ({ url, n }) => {
        const all = new Float32Array(await (await fetch(`${url}inputs.f32`)).arrayBuffer());
        const per = all.length / n;
        const inputs = Array.from({ length: n }, (_, i) => all.slice(i * per, (i + 1) * per));
        const brief = (r: Selfxit.ClassifyResult) => ({ index: r.index, exit: r.exit.index, confidence: r.confidence });
        const clf = await window.selfxit.load(url, { backend: 'wasm', cache: false });
        const batch = (await clf.classifyBatch(inputs)).map(brief);
        const singles = [];
        for (const x of inputs) singles.push(brief(await clf.classify(x)));
        const info = clf.info();
        await clf.dispose();
        return { batch, singles, backend: info.backend, engine: info.engine };
      },
      { url: `${B}/${name}/`, n: MOBILE_TEST_SAMPLES },
    );
    expect(out.backend).toBe('wasm');
    const exits = new Set(want.map((w) => w.exit));
    expect(exits.size, 'the reference uses an exit and the backbone').toBeGreaterThan(1);
    for (const [kind, got] of [
      ['batch', out.batch],
      ['single', out.singles],
    ] as const) {
      got.forEach((g, i) => {
        expect({ index: g.index, exit: g.exit }, `${kind} ${i}`).toEqual({
          index: want[i]!.index,
          exit: want[i]!.exit,
        });
        expect(
          Math.abs(g.confidence - want[i]!.confidence),
          `${kind} ${i} confidence (ORT-web vs -node rounding)`,
        ).toBeLessThan(2e-3);
      });
    }
  });
}

// The page side against the real worker in Chromium: a worker served from another origin (loaded through a blob
// module whose URL is revoked once load() resolved) still starts its learner worker from that URL and fits there; a
// batch of large images sent in parts gives the results of single calls.
import { test, expect, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

declare global {
  interface Window {
    selfxit: typeof Selfxit;
    selfxitReady?: boolean;
  }
}

async function openPage(page: Page): Promise<void> {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
}

test('a worker on another origin: started from a revoked blob URL, its learner worker starts and fits there', async ({
  page,
  baseURL,
}) => {
  test.setTimeout(180_000);
  // http://cdn.test/ serves this server's files with CORS (module scripts from another origin need it).
  await page.context().route('http://cdn.test/**', async (route) => {
    const url = new URL(route.request().url());
    const response = await route.fetch({ url: new URL(url.pathname, baseURL).href });
    await route.fulfill({
      response,
      headers: {
        ...response.headers(),
        'access-control-allow-origin': '*',
        'cross-origin-resource-policy': 'cross-origin',
      },
    });
  });
  await openPage(page);
  const out = await page.evaluate(async () => {
    const revoked: string[] = [];
    const revoke = URL.revokeObjectURL.bind(URL);
    URL.revokeObjectURL = (u: string) => {
      revoked.push(u);
      revoke(u);
    };
    const bytes = new Uint8Array(await (await fetch('/models/fashion-resnet/test-u8.bin')).arrayBuffer());
    const image = (i: number): ImageData => {
      const px = new Uint8ClampedArray(784 * 4);
      for (let p = 0; p < 784; p++) {
        const v = bytes[(i % (bytes.length / 784)) * 784 + p]!;
        px.set([v, v, v, 255], p * 4);
      }
      return new ImageData(px, 28, 28);
    };
    const clf = await window.selfxit.load('/models/fashion-resnet/model.onnx', {
      backend: 'wasm',
      cache: false,
      workerUrl: 'http://cdn.test/dist/selfxit.worker.js',
      learn: { target: 0.9, minSamples: 100, maxCandidates: 2, headKinds: ['pool-linear'], persist: false },
    });
    const revokedAtLoad = revoked.length;
    for (let i = 0; i < 400 && clf.learning().fits === 0; i++) await clf.classify(image(i));
    for (let i = 0; i < 600 && clf.learning().fitting; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await clf.classify(image(i));
    }
    const learning = clf.learning();
    await clf.dispose();
    return { revokedAtLoad, fits: learning.fits, fitRanIn: learning.fitRanIn, error: learning.lastError };
  });
  expect(out.revokedAtLoad).toBe(1);
  expect(out.fits).toBeGreaterThan(0);
  expect(out.fitRanIn).toBe('worker');
});

test('classifyBatch of large images, sent in parts: the results of single calls', async ({ page }) => {
  await openPage(page);
  const out = await page.evaluate(async () => {
    const clf = await window.selfxit.load('/e2e/.bundles/tiny/', { backend: 'wasm', cache: false });
    // counts the classify requests posted (on the classify port) and their inputs
    const posted: number[] = [];
    const post = MessagePort.prototype.postMessage;
    MessagePort.prototype.postMessage = function (this: MessagePort, ...args: Parameters<MessagePort['postMessage']>) {
      const inputs = (args[0] as { request?: { inputs?: unknown[] } } | undefined)?.request?.inputs;
      if (inputs) posted.push(inputs.length);
      return post.apply(this, args);
    } as MessagePort['postMessage'];
    // 8 canvases of 2048 x 2048 (16 MiB each decoded): 2 parts of 4 inputs (64 MiB).
    const canvases = Array.from({ length: 8 }, (_, i) => {
      const c = new OffscreenCanvas(2048, 2048);
      const g = c.getContext('2d')!;
      g.fillStyle = `rgb(${(i * 37) % 256}, ${(i * 91) % 256}, ${(i * 53) % 256})`;
      g.fillRect(0, 0, 2048, 2048);
      g.fillStyle = `rgb(${255 - ((i * 37) % 256)}, 40, ${(i * 17) % 256})`;
      g.fillRect(256 * i, 128, 700, 1500 - 100 * i);
      return c;
    });
    const batch = await clf.classifyBatch(canvases);
    const parts = [...posted];
    const single = [];
    for (const c of canvases) single.push(await clf.classify(c));
    await clf.dispose();
    const brief = (r: { index: number; exit: { index: number }; confidence: number }) => [
      r.index,
      r.exit.index,
      r.confidence,
    ];
    return {
      parts,
      batch: batch.map(brief),
      single: single.map(brief),
      totals: new Set(batch.map((r) => r.timings.totalMs)).size,
    };
  });
  expect(out.parts).toEqual([4, 4]);
  expect(out.batch).toHaveLength(8);
  for (let i = 0; i < 8; i++) {
    expect(out.batch[i]!.slice(0, 2)).toEqual(out.single[i]!.slice(0, 2));
    expect(Math.abs(out.batch[i]![2]! - out.single[i]![2]!)).toBeLessThan(1e-5);
  }
  expect(out.totals).toBe(1); // one totalMs for the whole batch (the parts' sum)
});

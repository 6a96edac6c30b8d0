// A plain-HTTP page that is not localhost (a made-up host name Chromium maps to 127.0.0.1): no secure context, so no
// crypto.subtle, no WebGPU and no cross-origin isolation. load() must still verify the bundle's hashes (pure-JS SHA-256)
// and classify on single-threaded WASM, and info() must say so.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, expect, test } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

/** What e2e/pages/esm.html and testkit.js put on the window (the full declaration is in runtime.spec.ts). */
interface EsmPage {
  selfxit: typeof Selfxit;
  selfxitReady?: boolean;
  testkit: { inputs(bundle: string): Promise<Float32Array[]> };
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const B = '/e2e/.bundles';
const HOST = 'selfxit-insecure.test';

test('a plain-HTTP page on a non-localhost host name loads the tiny bundle and classifies like the reference (WASM, 1 thread)', async ({
  launchOptions,
  headless,
  baseURL,
}) => {
  const port = new URL(baseURL!).port;
  const browser = await chromium.launch({
    ...launchOptions,
    headless,
    args: [...(launchOptions.args ?? []), `--host-resolver-rules=MAP ${HOST} 127.0.0.1`],
  });
  try {
    const page = await browser.newPage({ baseURL: `http://${HOST}:${port}` });
    await page.goto('/e2e/pages/esm.html');
    await page.waitForFunction(() => (window as unknown as EsmPage).selfxitReady === true, null, { timeout: 15_000 });
    const out = await page.evaluate(async (B) => {
      const context = {
        secure: window.isSecureContext,
        subtle: typeof globalThis.crypto?.subtle,
        isolated: window.crossOriginIsolated,
        origin: location.origin,
      };
      const { selfxit, testkit } = window as unknown as EsmPage;
      const clf = await selfxit.load(`${B}/tiny/`, { cache: false, threads: 4 }); // 4 asked, 1 possible here
      const inputs = await testkit.inputs(`${B}/tiny`);
      const results = (await clf.classifyBatch(inputs)).map((r) => ({
        index: r.index,
        exit: r.exit.index,
        confidence: r.confidence,
      }));
      const info = clf.info();
      await clf.dispose();
      return {
        context,
        results,
        info: {
          backend: info.backend,
          threads: info.threads,
          isolated: info.crossOriginIsolated,
          transport: info.transport,
        },
      };
    }, B);
    expect(out.context).toEqual({
      secure: false,
      subtle: 'undefined',
      isolated: false,
      origin: `http://${HOST}:${port}`,
    });
    expect(out.info).toEqual({ backend: 'wasm', threads: 1, isolated: false, transport: 'message' });
    const want = JSON.parse(readFileSync(path.join(root, 'e2e/.bundles/tiny/expected.json'), 'utf8')) as {
      index: number;
      exit: number;
      confidence: number;
    }[];
    expect(out.results.length).toBe(want.length);
    out.results.forEach((r, i) => {
      expect({ index: r.index, exit: r.exit }, `sample ${i}`).toEqual({ index: want[i]!.index, exit: want[i]!.exit });
      expect(Math.abs(r.confidence - want[i]!.confidence), `sample ${i} confidence`).toBeLessThan(1e-4);
    });
  } finally {
    await browser.close();
  }
});

// An integrator's first use (packaging review): selfxit's script tag served from another origin (a CDN: a host name
// Chromium maps to 127.0.0.1, `/cors/` answers with CORS) starts its default worker and classifies.
import { chromium, expect, test } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

interface Page {
  selfxit: typeof Selfxit;
  testkit: {
    inputs(bundle: string): Promise<Float32Array[]>;
    error(p: Promise<unknown>): Promise<{ code: string; message: string; details: Record<string, unknown> } | null>;
  };
}

const B = '/e2e/.bundles/tiny/';
const CDN = 'cdn.test';

test('the script tag from another origin starts its default worker (no workerUrl) and classifies', async ({
  launchOptions,
  headless,
  baseURL,
}) => {
  const port = new URL(baseURL!).port;
  const browser = await chromium.launch({
    ...launchOptions,
    headless,
    args: [...(launchOptions.args ?? []), `--host-resolver-rules=MAP ${CDN} 127.0.0.1`],
  });
  try {
    const page = await browser.newPage({ baseURL });
    await page.goto('/e2e/pages/plain.html');
    const out = await page.evaluate(
      async ({ src, B }) => {
        await new Promise((resolve, reject) => {
          const s = document.createElement('script');
          s.src = src;
          s.onload = resolve;
          s.onerror = reject;
          document.head.append(s);
        });
        const { selfxit, testkit } = window as unknown as Page;
        try {
          const clf = await selfxit.load(B, { backend: 'wasm', cache: false });
          const index = (await clf.classify((await testkit.inputs(B.slice(0, -1)))[0]!)).index;
          await clf.dispose();
          return { index };
        } catch (e) {
          return { error: `${(e as { code?: string }).code}: ${(e as Error).message}` };
        }
      },
      { src: `http://${CDN}:${port}/cors/dist/selfxit.iife.js`, B },
    );
    expect(out).toEqual({ index: expect.any(Number) });
  } finally {
    await browser.close();
  }
});

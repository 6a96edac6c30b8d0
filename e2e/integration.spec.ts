// An integrator's first use (packaging review): selfxit's script tag served from another origin (a CDN: a host name
// Chromium maps to 127.0.0.1, `/cors/` answers with CORS) starts its default worker and classifies; under a
// Content-Security-Policy (`/csp/<name>/`), DEPLOY.md's policy works, and one without 'wasm-unsafe-eval' or with
// worker-src 'none' fails with a message that names the policy (not missing files).
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

test("a Content-Security-Policy: DEPLOY.md's works; without 'wasm-unsafe-eval' or workers the error names it", async ({
  page,
}) => {
  const outcome = async (policy: string) => {
    await page.goto(`/csp/${policy}/e2e/pages/plain.html`);
    return page.evaluate(
      async ({ policy, B }) => {
        const w = window as unknown as Page;
        const selfxit = (w.selfxit = (await import(`/csp/${policy}/dist/selfxit.js`)) as typeof Selfxit);
        const { testkit } = w;
        const loaded = selfxit.load(B, { backend: 'wasm', cache: false });
        const error = await testkit.error(loaded);
        if (error) return error;
        await (await loaded).dispose();
        return null;
      },
      { policy, B },
    );
  };
  expect(await outcome('ok')).toBeNull();
  const noWasm = await outcome('no-wasm');
  expect(noWasm).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE' });
  expect(noWasm!.message).toMatch(/Content-Security-Policy.*'wasm-unsafe-eval'/);
  const noWorker = await outcome('no-worker');
  expect(noWorker).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE' });
  expect(noWorker!.message).toMatch(/Content-Security-Policy.*worker-src/);
  // Chromium reports the refusal on the page (securitypolicyviolation), so the policy is named as seen
  expect(noWorker).toMatchObject({ details: { csp: true, directive: 'worker-src' } });
  expect(noWorker!.message).not.toMatch(/Serve the package's dist\/ files/);
});

// The back/forward cache: a page holding a classifier (its worker, the Web Lock the worker holds and the page's pending
// request for it, which watch the worker's end) is restored on Back (pageshow.persisted, no reload), and classifies
// after. Playwright starts Chromium with --disable-back-forward-cache: this file runs it without. The pages come from
// the e2e server's /http-cache/all/ mount, since a page served `Cache-Control: no-store` (the rest of the server) is
// not kept in that cache once it made network requests.
import { test, expect, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

type Win = Window & {
  selfxit: typeof Selfxit;
  selfxitReady?: boolean;
  clf?: Selfxit.Classifier;
  marker?: number;
  persisted?: boolean;
  testkit: { inputs(bundle: string): Promise<Float32Array[]> };
};

const B = '/e2e/.bundles';
const PAGES = '/http-cache/all/e2e/pages';

test.use({
  launchOptions: {
    executablePath: process.env.SELFXIT_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    ignoreDefaultArgs: ['--disable-back-forward-cache'],
  },
});

async function openPage(page: Page): Promise<void> {
  await page.goto(`${PAGES}/esm.html`);
  await page.waitForFunction(() => (window as unknown as Win).selfxitReady === true, null, { timeout: 15_000 });
}

/** Leaves the page for another and comes Back; what the page knows then (a restored page kept its globals). */
async function awayAndBack(page: Page): Promise<{ marker: number | null; persisted: boolean | null; reasons: string }> {
  await page.evaluate(() => {
    const w = window as unknown as Win;
    w.marker = 42;
    addEventListener('pageshow', (e: PageTransitionEvent) => (w.persisted = e.persisted));
  });
  await page.goto(`${PAGES}/script.html`);
  await page.goBack({ waitUntil: 'commit' }); // a restored page fires no load event
  await page.waitForFunction(() => document.readyState === 'complete');
  return page.evaluate(() => {
    const w = window as unknown as Win;
    const nav = performance.getEntriesByType('navigation')[0] as { notRestoredReasons?: unknown } | undefined;
    return {
      marker: w.marker ?? null,
      persisted: w.persisted ?? null,
      reasons: JSON.stringify(nav?.notRestoredReasons),
    };
  });
}

test('a page with a loaded classifier (Web Lock watch on) is restored from the back/forward cache and classifies after', async ({
  page,
}) => {
  await openPage(page);
  const before = await page.evaluate(async (B) => {
    const w = window as unknown as Win;
    w.clf = await w.selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false });
    const [x] = await w.testkit.inputs(`${B}/tiny`);
    const r = await w.clf.classify(x!);
    // the liveness watch is on: the worker holds its lock, the page waits for it
    const q = await navigator.locks.query();
    const ours = (l: LockInfo[] | undefined) => (l ?? []).some((k) => k.name?.startsWith('selfxit-worker-'));
    return { index: r.index, held: ours(q.held), pending: ours(q.pending) };
  }, B);
  expect(before).toMatchObject({ held: true, pending: true });

  const back = await awayAndBack(page);
  expect(back, `not restored: ${back.reasons}`).toMatchObject({ marker: 42, persisted: true });

  const after = await page.evaluate(async (B) => {
    const w = window as unknown as Win;
    const [x] = await w.testkit.inputs(`${B}/tiny`);
    return (await w.clf!.classify(x!)).index;
  }, B);
  expect(after).toBe(before.index);
  await page.evaluate(() => (window as unknown as Win).clf!.dispose());
});

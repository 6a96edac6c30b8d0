// Live exit pruning's state remembered in the worker's IndexedDB cache, in Chromium (dist/ as a consumer loads it): the
// tiny bundle served with every threshold at 1 (nothing leaves: the exits are pruned), then loaded again in the same
// page: the exits are pruned right after load(), answers unchanged; with `cache: false` nothing is remembered.
import { test, expect, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

// window.selfxit and window.testkit: declared in runtime.spec.ts

const B = '/e2e/.bundles';

/** The tiny bundle's manifest with every exit's threshold at 1, served in place of its own (worker requests too). */
async function thresholdsAtOne(page: Page): Promise<void> {
  await page.route(`**${B}/tiny/manifest.json`, async (route) => {
    const res = await route.fetch();
    const m = (await res.json()) as { exits: { threshold: number }[] };
    for (const e of m.exits) e.threshold = 1;
    await route.fulfill({ response: res, body: JSON.stringify(m) });
  });
}

test('the pruned exits are remembered across loads in IndexedDB (not with cache: false), answers unchanged', async ({
  page,
}) => {
  await thresholdsAtOne(page);
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const inputs = await testkit.inputs(`${B}/tiny`);
    const serve = async (clf: Selfxit.Classifier, calls: number): Promise<string[]> => {
      const rs: string[] = [];
      for (let i = 0; i < calls; i++) {
        const r = await clf.classify(inputs[i % inputs.length]!);
        rs.push(`${r.index}/${r.exit.index}`);
      }
      return rs;
    };
    const open = (cache: boolean): Promise<Selfxit.Classifier> =>
      selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache, manifestMaxAgeMs: 0 });
    const a = await open(true);
    const atLoad = a.info().prunedExits;
    const first = await serve(a, 200);
    const pruned = a.info().prunedExits;
    await new Promise((r) => setTimeout(r, 300)); // the write is never awaited by a call
    await a.dispose();
    const b = await open(true);
    const afterReload = b.info().prunedExits;
    const again = await serve(b, 64);
    await b.dispose();
    const c = await open(false);
    const noCache = c.info().prunedExits;
    const plain = await serve(c, 64);
    await c.dispose();
    return { atLoad, pruned, afterReload, noCache, first: first.slice(0, 64), again, plain };
  }, B);
  expect(out.atLoad).toEqual([]);
  expect(out.pruned).toEqual([0, 1]);
  expect(out.afterReload).toEqual([0, 1]);
  expect(out.noCache).toEqual([]);
  expect(out.again).toEqual(out.first);
  expect(out.plain).toEqual(out.first);
});

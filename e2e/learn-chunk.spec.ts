// The on-device learning code is a chunk of its own (dist/selfxit.learn-<hash>.js, imported by the worker on first
// use): a page that only classifies never fetches it, a `learn` load does (from the ES module and the script-tag
// builds, whose worker resolves its chunks against its own URL), and a worker started from another URL (a query
// string) learns too, since the chunk imports the worker's shared chunk, never the worker's entry. A chunk that
// cannot be fetched (a 404: dist/ of another build) fails with RUNTIME_FILES_UNAVAILABLE.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

/** What the e2e pages put on window (pages/esm.html, pages/script.html, pages/testkit.js). */
interface PageGlobals {
  selfxit: typeof Selfxit;
  selfxitReady?: boolean;
  testkit: { images(bundle: string): Promise<ImageData[]> };
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TINY = '/e2e/.bundles/tiny';
const MODEL = '/models/fashion-resnet/model.onnx';
const LEARN = { maxCandidates: 4, headKinds: ['pool-linear'], input: { mean: [0.286], std: [0.353] } };

async function openPage(page: Page, kind: 'esm' | 'script'): Promise<void> {
  await page.goto(`/e2e/pages/${kind}.html`);
  await page.waitForFunction(() => (window as unknown as PageGlobals).selfxitReady === true, null, {
    timeout: 15_000,
  });
  await page.request.get('/__log/reset');
}

/** The worker's dist/ files the server was asked for since the page opened, content hashes replaced by `<hash>`. */
async function distRequests(page: Page): Promise<string[]> {
  const log = (await (await page.request.get('/__log')).json()) as string[];
  const worker = log.filter((p) => /^\/dist\/selfxit\.(worker|shared-[\w-]+|learn-[\w-]+)\.js$/.test(p));
  return [...new Set(worker.map((p) => p.replace(/-[\w-]+\.js$/, '-<hash>.js')))].sort();
}

interface Outcome {
  readonly index?: number;
  readonly exit?: number;
  readonly learning?: boolean;
  readonly code?: string;
  readonly message?: string;
}

/** In the page: loads `url` (with `learn` when given), classifies one image of the tiny bundle or a blank 28×28. */
async function loadAndClassify(page: Page, url: string, opts: Record<string, unknown>): Promise<Outcome> {
  return page.evaluate(
    async ({ url, opts, TINY }) => {
      const w = window as unknown as PageGlobals;
      try {
        const clf = await w.selfxit.load(url, { backend: 'wasm', ...opts });
        const image = opts.learn ? new ImageData(28, 28) : (await w.testkit.images(TINY))[0]!;
        const r = await clf.classify(image);
        const learning = opts.learn ? clf.learning().modelHash.length === 64 : undefined;
        await clf.dispose();
        return { index: r.index, exit: r.exit.index, learning };
      } catch (e) {
        const err = e as Error & { code?: string };
        return { code: err.code ?? err.name, message: err.message };
      }
    },
    { url, opts, TINY },
  );
}

for (const kind of ['esm', 'script'] as const) {
  test(`${kind} build: classifying never fetches the learning chunk; a learn load does, and learns`, async ({
    page,
  }) => {
    await openPage(page, kind);
    const expected = JSON.parse(readFileSync(path.join(root, 'e2e/.bundles/tiny/expected.json'), 'utf8')) as {
      index: number;
      exit: number;
    }[];
    const plain = await loadAndClassify(page, `${TINY}/`, { cache: false });
    expect(plain).toEqual({ index: expected[0]!.index, exit: expected[0]!.exit });
    expect(await distRequests(page)).toEqual(['/dist/selfxit.shared-<hash>.js', '/dist/selfxit.worker.js']);

    const learned = await loadAndClassify(page, MODEL, { cache: false, learn: LEARN });
    expect(learned.code, learned.message).toBeUndefined();
    expect(learned.learning).toBe(true);
    expect(learned.exit).toBe(-1); // nothing learned yet: the full model answers
    expect(await distRequests(page)).toEqual([
      '/dist/selfxit.learn-<hash>.js',
      '/dist/selfxit.shared-<hash>.js',
      '/dist/selfxit.worker.js',
    ]);
  });
}

test('a worker started from another URL (a query string) classifies, and a learn load learns', async ({ page }) => {
  await openPage(page, 'esm');
  const workerUrl = '/dist/selfxit.worker.js?v=2';
  const plain = await loadAndClassify(page, `${TINY}/`, { cache: false, workerUrl });
  expect(plain.code, plain.message).toBeUndefined();
  const learned = await loadAndClassify(page, MODEL, { cache: false, learn: LEARN, workerUrl });
  expect(learned.code, learned.message).toBeUndefined();
  expect(learned.learning).toBe(true);
});

test('a learning chunk that cannot be fetched: a learn load fails with RUNTIME_FILES_UNAVAILABLE, naming it', async ({
  page,
}) => {
  await openPage(page, 'esm');
  await page.route(/\/dist\/selfxit\.learn-[\w-]+\.js$/, (route) => route.fulfill({ status: 404, body: 'gone' }));
  const learned = await loadAndClassify(page, MODEL, { cache: false, learn: LEARN });
  expect(learned.code, learned.message).toBe('RUNTIME_FILES_UNAVAILABLE');
  expect(learned.message).toMatch(/selfxit\.learn-/);
  const plain = await loadAndClassify(page, `${TINY}/`, { cache: false });
  expect(plain.code, plain.message).toBeUndefined();
});

test("a worker whose shared chunk cannot be fetched (another build's worker): RUNTIME_FILES_UNAVAILABLE", async ({
  page,
}) => {
  await openPage(page, 'esm');
  await page.route(/\/dist\/selfxit\.shared-[\w-]+\.js$/, (route) => route.fulfill({ status: 404, body: 'gone' }));
  const plain = await loadAndClassify(page, `${TINY}/`, { cache: false });
  expect(plain.code, plain.message).toBe('RUNTIME_FILES_UNAVAILABLE');
  // The error event names no file: the page asked the server, and names the chunk rather than the worker.
  expect(plain.message).toMatch(
    /the module it imports, \S+\/dist\/selfxit\.shared-[\w-]+\.js, could not be fetched \(HTTP 404\)/,
  );
});

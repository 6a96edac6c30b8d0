// Browser tests of deploys, the cache and hangs (issue 16, items 4-6) on the tiny test bundles: a bundle replaced in
// place recovers on reload without cache: 'reload'; a failed load caches nothing; the network down after the manifest
// expired loads from the cache; a worker that ends rejects pending and later calls with WORKER_DIED; a request never
// answered (e2e/serve.mjs `/hang/<file>/…`) gives TIMEOUT; an aborted or timed-out load leaves no worker; a segment
// download that breaks off half way (`/drop/<file>/…`) is taken up from there with a Range request.
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect, type Page } from '@playwright/test';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { decodeModel, encodeModel } from '../src/graph/index.js';
import type * as Selfxit from '../src/index.js';

interface ErrorInfo {
  code: string;
  message: string;
  details: Record<string, unknown> | null;
}
type Expected = {
  index: number;
  exit: number;
};
type Win = Window & {
  selfxit: typeof Selfxit;
  selfxitReady?: boolean;
  clf?: Selfxit.Classifier;
  testkit: {
    inputs(bundle: string): Promise<Float32Array[]>;
    error(p: Promise<unknown>): Promise<ErrorInfo | null>;
    brief(r: Selfxit.ClassifyResult): { index: number; exit: number };
  };
};

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const B = '/e2e/.bundles';
const bundles = path.join(root, 'e2e/.bundles');
const expectedTiny = (): Expected[] =>
  JSON.parse(readFileSync(path.join(bundles, 'tiny/expected.json'), 'utf8')) as Expected[];
/** Class and exit of the reference (confidences differ by float noise between ORT builds). */
const want = (i: number): Expected => ({ index: expectedTiny()[i]!.index, exit: expectedTiny()[i]!.exit });
const deep = (): number => expectedTiny().findIndex((e) => e.exit === -1);
const early = (): number => expectedTiny().findIndex((e) => e.exit === 0);

async function openPage(page: Page): Promise<void> {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => (window as unknown as Win).selfxitReady === true, null, { timeout: 15_000 });
}

/** Workers of the page that are selfxit's (started from selfxit.worker.js). */
const selfxitWorkers = (page: Page) => page.workers().filter((w) => w.url().includes('selfxit.worker'));

test('a bundle replaced in place: after a reload the cached manifest meets a new segment, and the classifier re-opens the new version', async ({
  page,
}) => {
  const dir = path.join(bundles, 'swap');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  for (const f of ['manifest.json', 'segment-0.onnx', 'segment-1.onnx', 'segment-2.onnx', 'inputs.f32'])
    copyFileSync(path.join(bundles, 'tiny', f), path.join(dir, f));
  await openPage(page);
  const v1 = await page.evaluate(
    async ({ B, early }) => {
      const { selfxit } = window as unknown as Win;
      const clf = await selfxit.load(`${B}/swap/`, { backend: 'wasm' });
      const inputs = await (window as unknown as Win).testkit.inputs(`${B}/swap`);
      await clf.classify(inputs[early]!); // segment 0 only: the deeper ones are not cached
      const hash = clf.info().manifestHash;
      await clf.dispose();
      return hash;
    },
    { B, early: early() },
  );
  // Version 2 in place: segments 1 and 2 re-encoded (same names, new bytes and sha256), the manifest listing them.
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as BundleManifest;
  const segments = manifest.segments.map((s, i) => {
    if (i === 0) return s;
    const m = decodeModel(readFileSync(path.join(dir, s.file)));
    m.proto.docString = 'version 2';
    const bytes = encodeModel(m);
    writeFileSync(path.join(dir, s.file), bytes);
    return { ...s, sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
  });
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...manifest, segments }));

  await page.reload();
  await page.waitForFunction(() => (window as unknown as Win).selfxitReady === true);
  const out = await page.evaluate(
    async ({ B, deep }) => {
      const { selfxit, testkit } = window as unknown as Win;
      const clf = await selfxit.load(`${B}/swap/`, { backend: 'wasm' });
      const opened = clf.info();
      const inputs = await testkit.inputs(`${B}/swap`);
      const r = testkit.brief(await clf.classify(inputs[deep]!));
      const after = clf.info();
      await clf.dispose();
      return { opened: { hash: opened.manifestHash, cache: opened.cache }, r, after: after.manifestHash };
    },
    { B, deep: deep() },
  );
  expect(out.opened.hash, 'reload opened the cached manifest (version 1)').toBe(v1);
  expect(out.opened.cache.manifestFromCache).toBe(true);
  expect(out.r).toMatchObject(want(deep()));
  expect(out.after, 'the classifier now runs version 2').not.toBe(v1);
  rmSync(dir, { recursive: true, force: true });
});

test('a segment download whose connection drops half way is taken up from there (Range) and classifies as usual', async ({
  page,
}) => {
  await openPage(page);
  await page.request.get('/__log/reset');
  // e2e/serve.mjs: the first answer of segment-1.onnx under /drop/ breaks off after half its bytes.
  const dropped = `/drop/segment-1.onnx${B}/tiny/`;
  const out = await page.evaluate(
    async ({ dropped, B, deep }) => {
      const { selfxit, testkit } = window as unknown as Win;
      const clf = await selfxit.load(dropped, { backend: 'wasm', cache: false });
      const inputs = await testkit.inputs(`${B}/tiny`);
      const brief = testkit.brief(await clf.classify(inputs[deep]!));
      await clf.dispose();
      return brief;
    },
    { dropped, B, deep: deep() },
  );
  expect(out).toMatchObject(want(deep()));
  const log = (await (await page.request.get('/__log')).json()) as string[];
  const size = readFileSync(path.join(bundles, 'tiny/segment-1.onnx')).length;
  expect(log.filter((l) => l.startsWith(`${dropped}segment-1.onnx`))).toEqual([
    `${dropped}segment-1.onnx`,
    `${dropped}segment-1.onnx bytes=${Math.floor(size / 2)}-`,
  ]);
});

test('a load that failed with INTEGRITY_ERROR caches nothing', async ({ page }) => {
  await openPage(page);
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window as unknown as Win;
    const err = await testkit.error(selfxit.load(`${B}/tiny-badsha0/`, { backend: 'wasm' }));
    const keys = await new Promise<string[]>((resolve, reject) => {
      const open = indexedDB.open('selfxit');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const db = open.result;
        if (!db.objectStoreNames.contains('bundles')) return resolve([]);
        const req = db.transaction('bundles').objectStore('bundles').getAllKeys();
        req.onsuccess = () => resolve(req.result.map(String));
        req.onerror = () => reject(req.error);
      };
    });
    return { err, keys };
  }, B);
  expect(out.err).toMatchObject({ code: 'INTEGRITY_ERROR' });
  expect(out.keys.filter((k) => k.startsWith('manifest:'))).toEqual([]);
});

test('the network down after the manifest expired: load() uses the cached copy and info() says it is stale', async ({
  page,
  context,
}) => {
  await openPage(page);
  await page.evaluate(async (B) => {
    const { selfxit, testkit } = window as unknown as Win;
    const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm' });
    await clf.classifyBatch(await testkit.inputs(`${B}/tiny`)); // every segment cached
    await clf.dispose();
  }, B);
  const inputs = await page.evaluate(
    async (B) => Array.from(await (window as unknown as Win).testkit.inputs(`${B}/tiny`), (a) => Array.from(a)),
    B,
  );
  // No network for the bundle (the worker's requests included), as offline.
  const aborted: string[] = [];
  await context.route('**/e2e/.bundles/tiny/**', (route) => {
    aborted.push(new URL(route.request().url()).pathname);
    return route.abort('internetdisconnected');
  });
  const out = await page.evaluate(
    async ({ B, inputs }) => {
      const { selfxit, testkit } = window as unknown as Win;
      const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', manifestMaxAgeMs: 0 });
      const results = (await clf.classifyBatch(inputs.map((a) => Float32Array.from(a)))).map(testkit.brief);
      const info = clf.info();
      await clf.dispose();
      const reload = await testkit.error(selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: 'reload' }));
      return { results, cache: info.cache, reload };
    },
    { B, inputs },
  );
  expect(aborted, 'the manifest was asked for, and the request failed').toContain(`${B}/tiny/manifest.json`);
  expect(out.cache).toEqual({ enabled: true, manifestFromCache: true, stale: true });
  out.results.forEach((r, i) => expect(r, `sample ${i}`).toMatchObject(want(i)));
  expect(out.reload).toMatchObject({ code: 'FETCH_FAILED' });
});

/**
 * Ends the page's selfxit worker from outside through the DevTools protocol: auto-attach to the page's workers, then
 * `Runtime.evaluate` of `close()` in the worker's own session (Chromium cannot close a dedicated worker's target:
 * `Target.closeTarget` answers "doesn't support closing").
 */
async function killWorkerViaDevTools(page: Page): Promise<void> {
  const cdp = await page.context().newCDPSession(page);
  const workers: string[] = [];
  cdp.on('Target.attachedToTarget', (ev) => {
    if (ev.targetInfo.type === 'worker' && ev.targetInfo.url.includes('selfxit.worker')) workers.push(ev.sessionId);
  });
  await cdp.send('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });
  await expect.poll(() => workers.length, 'the DevTools protocol sees the selfxit worker').toBeGreaterThan(0);
  const message = { id: 1, method: 'Runtime.evaluate', params: { expression: 'setTimeout(() => close(), 0)' } };
  await cdp.send('Target.sendMessageToTarget', { sessionId: workers[0]!, message: JSON.stringify(message) });
}

for (const how of ['close() inside it', 'the DevTools protocol'] as const)
  test(`a worker ended by ${how} rejects the pending and later calls with WORKER_DIED at once; a new load() works`, async ({
    page,
  }) => {
    await openPage(page);
    // Segment 1 is never answered: a deep input stays pending in the worker.
    const hung = `/hang/segment-1.onnx${B}/tiny/`;
    await page.evaluate(
      async ({ hung, B, deep }) => {
        const w = window as unknown as Win & { pending?: Promise<ErrorInfo | null>; inputs?: Float32Array[] };
        w.clf = await w.selfxit.load(hung, { backend: 'wasm', cache: false, heartbeatMs: 500 });
        w.inputs = await w.testkit.inputs(`${B}/tiny`);
        w.pending = w.testkit.error(w.clf.classify(w.inputs[deep]!));
      },
      { hung, B, deep: deep() },
    );
    await expect.poll(() => selfxitWorkers(page).length).toBe(1);
    const t0 = Date.now();
    if (how === 'the DevTools protocol') await killWorkerViaDevTools(page);
    else await selfxitWorkers(page)[0]!.evaluate('setTimeout(() => close(), 0)');
    const out = await page.evaluate(
      async ({ B, early }) => {
        const w = window as unknown as Win & { pending?: Promise<ErrorInfo | null>; inputs?: Float32Array[] };
        const pending = await w.pending!;
        const later = await w.testkit.error(w.clf!.classify(w.inputs![early]!));
        const fresh = await w.selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false });
        const r = w.testkit.brief(await fresh.classify(w.inputs![early]!));
        await fresh.dispose();
        return { pending, later, r };
      },
      { B, early: early() },
    );
    const ms = Date.now() - t0;
    expect(out.pending).toMatchObject({ code: 'WORKER_DIED' });
    expect(out.later).toMatchObject({ code: 'WORKER_DIED' });
    expect(ms, 'WORKER_DIED (and a new load) within the heartbeat period and then some').toBeLessThan(10_000);
    expect(out.r).toMatchObject(want(early()));
  });

test('an idle worker that stops answering is declared dead by the heartbeat: later calls reject with WORKER_DIED', async ({
  page,
}) => {
  await page.clock.install(); // the page's timers run as usual until runFor() below moves them ahead
  await openPage(page);
  await page.evaluate(async (B) => {
    const w = window as unknown as Win;
    w.clf = await w.selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false, heartbeatMs: 300 });
  }, B);
  await expect.poll(() => selfxitWorkers(page).length).toBe(1);
  // Stuck (an endless loop): alive for Web Locks, but it answers nothing.
  void selfxitWorkers(page)[0]!
    .evaluate('setTimeout(() => { for (;;); }, 0)')
    .catch(() => {});
  await page.waitForTimeout(2 * 300); // a ping is sent to the stuck worker
  // An idle ping gets 12 periods, at least 10 s (background work a call left may block the worker): the page's clock
  // moved past that (the worker's is its own: it stays stuck).
  await page.clock.runFor(10_000 + 2 * 300);
  await page.waitForTimeout(300);
  const later = await page.evaluate(async (B) => {
    const w = window as unknown as Win;
    const inputs = await w.testkit.inputs(`${B}/tiny`);
    return w.testkit.error(w.clf!.classify(inputs[0]!));
  }, B);
  expect(later).toMatchObject({ code: 'WORKER_DIED', message: expect.stringMatching(/stopped answering/) });
  await expect.poll(() => selfxitWorkers(page).length, 'the stuck worker was terminated').toBe(0);
});

test('never-answered requests: load() rejects with TIMEOUT, a call with TIMEOUT; an aborted load rejects with ABORTED; none leaves a worker', async ({
  page,
}) => {
  await openPage(page);
  const before = selfxitWorkers(page).length;
  const out = await page.evaluate(
    async ({ B, deep, early }) => {
      const { selfxit, testkit } = window as unknown as Win;
      const opts = { backend: 'wasm', cache: false } as const;
      const t0 = performance.now();
      const manifest = await testkit.error(selfxit.load(`/hang/manifest.json${B}/tiny/`, { ...opts, timeoutMs: 1500 }));
      const manifestMs = performance.now() - t0;
      const segment0 = await testkit.error(
        selfxit.load(`/hang/segment-0.onnx${B}/tiny/`, { ...opts, timeoutMs: 1500 }),
      );
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 300);
      const aborted = await testkit.error(
        selfxit.load(`/hang/manifest.json${B}/tiny/`, { ...opts, signal: ac.signal }),
      );
      const clf = await selfxit.load(`/hang/segment-1.onnx${B}/tiny/`, { ...opts, callTimeoutMs: 1500 });
      const inputs = await testkit.inputs(`${B}/tiny`);
      const call = await testkit.error(clf.classify(inputs[deep]!));
      const after = await testkit.error(clf.classify(inputs[early]!));
      const ac2 = new AbortController();
      const clf2 = await selfxit.load(`/hang/segment-1.onnx${B}/tiny/`, opts);
      const abortedCall = testkit.error(clf2.classify(inputs[deep]!, { signal: ac2.signal }));
      ac2.abort();
      const stillUsable = testkit.brief(await clf2.classify(inputs[early]!));
      const r = { manifest, manifestMs, segment0, aborted, call, after, abortedCall: await abortedCall, stillUsable };
      await clf2.dispose();
      return r;
    },
    { B, deep: deep(), early: early() },
  );
  expect(out.manifest).toMatchObject({ code: 'TIMEOUT', details: { timeoutMs: 1500 } });
  expect(out.manifestMs).toBeLessThan(5000);
  expect(out.segment0).toMatchObject({ code: 'TIMEOUT' });
  expect(out.aborted).toMatchObject({ code: 'ABORTED' });
  expect(out.call).toMatchObject({ code: 'TIMEOUT', details: { callTimeoutMs: 1500 } });
  expect(out.after).toMatchObject({ code: 'WORKER_DIED' });
  expect(out.abortedCall).toMatchObject({ code: 'ABORTED' });
  expect(out.stillUsable).toMatchObject(want(early()));
  await expect.poll(() => selfxitWorkers(page).length, 'no worker left behind').toBe(before);
});

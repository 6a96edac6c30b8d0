// Browser tests of the built runtime (dist/ loaded as a consumer would, ESM and script tag) on the uncalibrated
// test bundles of e2e/fixtures/tiny-bundles.ts: results vs the Node reference, batching, concurrency, typed
// errors, lazy segments (request log), the IndexedDB cache and offline use, and WebGPU (SwiftShader) vs WASM.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

declare global {
  interface Window {
    selfxit: typeof Selfxit;
    selfxitReady?: boolean;
    testkit: {
      inputs(bundle: string): Promise<Float32Array[]>;
      images(bundle: string): Promise<ImageData[]>;
      expected(bundle: string): Promise<Expected[]>;
      error(p: Promise<unknown>): Promise<ErrorInfo | null>;
      brief(r: Selfxit.ClassifyResult): Brief;
    };
  }
}

interface Expected {
  index: number;
  exit: number;
  confidence: number;
}
interface Brief {
  index: number;
  exit: number;
  confidence: number;
  label: string;
  exitName: string;
  stages: number;
}
interface ErrorInfo {
  name: string;
  code: string;
  message: string;
  details: Record<string, unknown> | null;
  isSelfxitError: boolean;
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const B = '/e2e/.bundles';
const expectedTiny = (): Expected[] => JSON.parse(readFileSync(path.join(root, 'e2e/.bundles/tiny/expected.json'), 'utf8')) as Expected[];

async function openPage(page: Page, kind: 'esm' | 'script'): Promise<void> {
  await page.goto(`/e2e/pages/${kind}.html`);
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
}

async function requestLog(page: Page): Promise<string[]> {
  return (await (await page.request.get('/__log')).json()) as string[];
}

async function resetLog(page: Page): Promise<void> {
  await page.request.get('/__log/reset');
}

/** Same decision as the reference: same class and exit; confidence equal up to float noise between ORT builds. */
function expectSame(got: Brief, want: Expected, where: string, tolerance = 1e-4): void {
  expect({ index: got.index, exit: got.exit }, where).toEqual({ index: want.index, exit: want.exit });
  expect(Math.abs(got.confidence - want.confidence), `${where} confidence`).toBeLessThan(tolerance);
}

for (const kind of ['esm', 'script'] as const) {
  test.describe(`${kind} build`, () => {
    test('classifyBatch(32) equals 32 single calls and the Node reference; 200 concurrent calls all resolve correctly', async ({ page }) => {
      await openPage(page, kind);
      const out = await page.evaluate(async (B) => {
        const { selfxit, testkit } = window;
        const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false });
        const inputs = await testkit.inputs(`${B}/tiny`);
        const images = await testkit.images(`${B}/tiny`);
        const batch = (await clf.classifyBatch(inputs.slice(0, 32))).map(testkit.brief);
        const singles: Brief[] = [];
        for (let i = 0; i < 32; i++) singles.push(testkit.brief(await clf.classify(inputs[i]!)));
        const concurrent = (await Promise.all(Array.from({ length: 200 }, (_, i) => clf.classify(inputs[i % inputs.length]!)))).map(testkit.brief);
        const fromImages = (await clf.classifyBatch(images)).map(testkit.brief);
        // Every accepted image type, built from samples 0..5 at the model size (no resampling, so results are exact).
        const canvasOf = (img: ImageData): HTMLCanvasElement => {
          const c = document.createElement('canvas');
          c.width = img.width;
          c.height = img.height;
          c.getContext('2d')!.putImageData(img, 0, 0);
          return c;
        };
        const png = await new Promise<Blob>((res) => canvasOf(images[1]!).toBlob((b) => res(b!), 'image/png'));
        const el = new Image();
        el.src = URL.createObjectURL(await new Promise<Blob>((res) => canvasOf(images[3]!).toBlob((b) => res(b!), 'image/png')));
        await el.decode();
        const off = new OffscreenCanvas(16, 16);
        off.getContext('2d')!.putImageData(images[5]!, 0, 0);
        const bitmap = await createImageBitmap(images[2]!);
        const kinds = [canvasOf(images[0]!), png, bitmap, el, images[4]!, off];
        const fromKinds = (await clf.classifyBatch(kinds)).map(testkit.brief);
        const bitmapStillUsable = bitmap.width === 16; // the caller's bitmap is cloned, not taken
        const withProbs = await clf.classify(inputs[0]!, { probabilities: true });
        const probs = withProbs.probabilities ? Array.from(withProbs.probabilities) : null;
        const info = clf.info();
        await clf.dispose();
        return { batch, singles, concurrent, fromImages, fromKinds, bitmapStillUsable, probs, info, backend: info.backend };
      }, B);
      const want = expectedTiny();
      for (let i = 0; i < 32; i++) {
        expect({ index: out.batch[i]!.index, exit: out.batch[i]!.exit }, `batch row ${i} vs single call`).toEqual({ index: out.singles[i]!.index, exit: out.singles[i]!.exit });
        expect(Math.abs(out.batch[i]!.confidence - out.singles[i]!.confidence)).toBeLessThan(1e-5);
        expectSame(out.singles[i]!, want[i]!, `single ${i}`);
        expect(out.singles[i]!.stages, `stages run by sample ${i}`).toBe(want[i]!.exit < 0 ? 3 : want[i]!.exit + 1);
      }
      expect(out.concurrent).toHaveLength(200);
      out.concurrent.forEach((r, i) => expectSame(r, want[i % want.length]!, `concurrent call ${i}`));
      out.fromImages.forEach((r, i) => expectSame(r, want[i]!, `ImageData ${i}`));
      const kindNames = ['HTMLCanvasElement', 'PNG Blob', 'ImageBitmap', 'HTMLImageElement', 'ImageData', 'OffscreenCanvas'];
      out.fromKinds.forEach((r, i) => expectSame(r, want[i]!, kindNames[i]!));
      expect(out.bitmapStillUsable).toBe(true);
      // The reference spreads samples over every stage, so batches really shrank between segments.
      expect(new Set(want.map((w) => w.exit))).toEqual(new Set([0, 1, -1]));
      expect(out.probs).toHaveLength(10);
      expect(Math.abs(out.probs!.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-4);
      expect(out.backend).toBe('wasm');
      expect(out.info.crossOriginIsolated).toBe(true);
      expect(out.info.threads).toBeGreaterThanOrEqual(1);
      expect(out.info.exits.map((e) => e.name)).toEqual(['cut-c1', 'cut-c2']);
    });

    test('typed errors reach the page: FETCH_FAILED, INVALID_BUNDLE, INTEGRITY_ERROR, INVALID_INPUT, DISPOSED, WORKER_DIED', async ({ page }) => {
      await openPage(page, kind);
      const out = await page.evaluate(async (B) => {
        const { selfxit, testkit } = window;
        const E = testkit.error;
        const opts = { backend: 'wasm', cache: false } as const;
        const r: Record<string, unknown> = {};
        r.notFound = await E(selfxit.load(`${B}/missing/`, opts));
        r.notJson = await E(selfxit.load(`${B}/not-json/manifest.json`, opts));
        r.badSha0 = await E(selfxit.load(`${B}/tiny-badsha0/`, opts));
        r.badOption = await E(selfxit.load(`${B}/tiny/`, { backend: 'cuda' as 'wasm' }));
        r.deadWorker = await E(selfxit.load(`${B}/tiny/`, { ...opts, workerUrl: '/e2e/pages/no-such-worker.js' }));
        const clf = await selfxit.load(`${B}/tiny-badsha2/`, opts);
        const inputs = await testkit.inputs(`${B}/tiny`);
        const exp = await testkit.expected(`${B}/tiny`);
        const early = exp.findIndex((e) => e.exit === 0);
        const deep = exp.findIndex((e) => e.exit === -1);
        r.early = testkit.brief(await clf.classify(inputs[early]!));
        r.integrity = await E(clf.classify(inputs[deep]!));
        r.wrongSize = await E(clf.classify(new Float32Array(10)));
        r.wrongType = await E(clf.classify('cat.png' as unknown as Float32Array));
        r.wrongInBatch = await E(clf.classifyBatch([inputs[0]!, new Float32Array(3)]));
        r.badBlob = await E(clf.classify(new Blob(['not an image'], { type: 'image/png' })));
        r.after = testkit.brief(await clf.classify(inputs[early]!));
        try {
          clf.setTarget(2);
          r.badTarget = null;
        } catch (e) {
          r.badTarget = (e as { code?: string }).code;
        }
        await clf.dispose();
        r.disposed = await E(clf.classify(inputs[0]!));
        r.disposedBatch = await E(clf.classifyBatch([inputs[0]!]));
        // A worker that dies mid-call: every pending call rejects (a 10 s race would expose a hang), later ones too.
        const crashing = await selfxit.load(`${B}/tiny/`, { ...opts, workerUrl: '/e2e/pages/crash-worker.js' });
        const hang = new Promise((res) => setTimeout(() => res('hung'), 10_000));
        r.crash = await Promise.race([Promise.all([0, 1, 2].map((i) => E(crashing.classify(inputs[i]!)))), hang]);
        r.afterCrash = await E(crashing.classify(inputs[0]!));
        return { r, early, deep };
      }, B);
      const r = out.r as Record<string, ErrorInfo | null>;
      const want = expectedTiny();
      expect(r.notFound).toMatchObject({ code: 'FETCH_FAILED', isSelfxitError: true, name: 'SelfxitError', details: { status: 404 } });
      expect(r.notJson).toMatchObject({ code: 'INVALID_BUNDLE', isSelfxitError: true });
      expect(r.badSha0).toMatchObject({ code: 'INTEGRITY_ERROR', isSelfxitError: true, details: { segment: 0 } });
      expect(r.badOption).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(r.deadWorker).toMatchObject({ code: 'WORKER_DIED', isSelfxitError: true });
      expectSame(r.early as unknown as Brief, want[out.early]!, 'early exit with a corrupt deep segment');
      expect(r.integrity).toMatchObject({ code: 'INTEGRITY_ERROR', details: { segment: 2 } });
      expect(r.wrongSize).toMatchObject({ code: 'INVALID_INPUT', details: { expected: 768, got: 10 } });
      expect(r.wrongType).toMatchObject({ code: 'INVALID_INPUT' });
      expect(r.wrongInBatch).toMatchObject({ code: 'INVALID_INPUT', details: { inputIndex: 1 } });
      expect(r.badBlob).toMatchObject({ code: 'INVALID_INPUT' });
      expectSame(r.after as unknown as Brief, want[out.early]!, 'classify after bad inputs');
      expect(r.badTarget).toBe('INVALID_TARGET');
      expect(r.disposed).toMatchObject({ code: 'DISPOSED', isSelfxitError: true });
      expect(r.disposedBatch).toMatchObject({ code: 'DISPOSED' });
      const crash = out.r.crash as ErrorInfo[];
      expect(crash).toHaveLength(3);
      for (const c of crash) expect(c).toMatchObject({ code: 'WORKER_DIED', isSelfxitError: true });
      expect(crash[0]!.message).toContain('simulated worker crash');
      expect(r.afterCrash).toMatchObject({ code: 'WORKER_DIED' });
    });
  });
}

test('segments load lazily: when every input leaves at exit 0, no deeper segment is ever requested', async ({ page }) => {
  await openPage(page, 'esm');
  await resetLog(page);
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const events: string[] = [];
    const clf = await selfxit.load(`${B}/tiny-exit0/`, { backend: 'wasm', cache: false, onProgress: (p) => events.push(`${p.status}:${p.file}`) });
    const inputs = await testkit.inputs(`${B}/tiny`);
    const batch = (await clf.classifyBatch(inputs)).map(testkit.brief);
    const singles: Brief[] = [];
    for (let i = 0; i < 8; i++) singles.push(testkit.brief(await clf.classify(inputs[i]!)));
    const loaded = clf.info().segments.map((s) => s.loaded);
    await clf.dispose();
    return { batch, singles, loaded, events };
  }, B);
  const files = (await requestLog(page)).filter((p) => p.startsWith(`${B}/tiny-exit0/`)).map((p) => p.slice(`${B}/tiny-exit0/`.length));
  expect(files.sort()).toEqual(['manifest.json', 'segment-0.onnx']);
  expect(out.loaded).toEqual([true, false, false]);
  expect(out.batch.every((r) => r.exit === 0 && r.stages === 1)).toBe(true);
  expect(out.singles.every((r) => r.exit === 0)).toBe(true);
  expect(out.events.filter((e) => e.includes('segment-1') || e.includes('segment-2'))).toEqual([]);

  // Control on the mixed bundle: segment 1 comes when a sample first reaches it, segment 2 only for the backbone.
  await resetLog(page);
  const want = expectedTiny();
  const atExit1 = want.findIndex((w) => w.exit === 1);
  const atBackbone = want.findIndex((w) => w.exit === -1);
  const steps = await page.evaluate(
    async ({ B, atExit1, atBackbone }) => {
      const { selfxit, testkit } = window;
      const log = async (): Promise<string[]> => ((await (await fetch('/__log')).json()) as string[]).filter((p) => p.endsWith('.onnx'));
      const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false });
      const inputs = await testkit.inputs(`${B}/tiny`);
      const afterLoad = await log();
      await clf.classify(inputs[atExit1]!);
      const afterExit1 = await log();
      await clf.classify(inputs[atBackbone]!);
      const afterBackbone = await log();
      await clf.dispose();
      return { afterLoad, afterExit1, afterBackbone };
    },
    { B, atExit1, atBackbone },
  );
  const names = (l: string[]): string[] => l.map((p) => p.split('/').pop()!);
  expect(names(steps.afterLoad)).toEqual(['segment-0.onnx']);
  expect(names(steps.afterExit1)).toEqual(['segment-0.onnx', 'segment-1.onnx']);
  expect(names(steps.afterBackbone)).toEqual(['segment-0.onnx', 'segment-1.onnx', 'segment-2.onnx']);
});

test('second visit makes no request for the manifest or segments, and with everything cached the page classifies offline', async ({ page, context }) => {
  const run = (opts: { cache: true | 'reload' }) =>
    page.evaluate(
      async ({ B, opts }) => {
        const { selfxit, testkit } = window;
        const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', ...opts });
        const inputs = await testkit.inputs(`${B}/tiny`).catch(() => null);
        const results = inputs ? (await clf.classifyBatch(inputs)).map(testkit.brief) : [];
        const info = clf.info();
        await clf.dispose();
        return { results, info };
      },
      { B, opts },
    );
  const bundleRequests = async (): Promise<string[]> => (await requestLog(page)).filter((p) => p.startsWith(`${B}/tiny/`) && !/\/(inputs\.f32|expected\.json)$/.test(p));
  const want = expectedTiny();

  await openPage(page, 'esm');
  await resetLog(page);
  const first = await run({ cache: true });
  expect(first.info.cache).toEqual({ enabled: true, manifestFromCache: false });
  expect((await bundleRequests()).sort()).toEqual([`${B}/tiny/manifest.json`, `${B}/tiny/segment-0.onnx`, `${B}/tiny/segment-1.onnx`, `${B}/tiny/segment-2.onnx`]);

  // Second visit: same browser profile (IndexedDB), a fresh page.
  await page.reload();
  await page.waitForFunction(() => window.selfxitReady === true);
  await resetLog(page);
  const second = await run({ cache: true });
  expect(await bundleRequests()).toEqual([]);
  expect(second.info.cache).toEqual({ enabled: true, manifestFromCache: true });
  expect(second.info.segments.every((s) => s.cached)).toBe(true);
  second.results.forEach((r, i) => expectSame(r, want[i]!, `cached run ${i}`));

  // cache: 'reload' fetches the manifest again, and still no segment.
  await resetLog(page);
  await run({ cache: 'reload' });
  expect(await bundleRequests()).toEqual([`${B}/tiny/manifest.json`]);

  // Offline: a classifier opened from the cache (segment 0 only, the rest loads lazily), then the network goes
  // away: segments 1 and 2 come from IndexedDB. (Starting a page offline also needs the app shell — page,
  // selfxit.js, worker, dist/ort/ — cached by the app, e.g. a service worker; selfxit caches the bundle.)
  const inputs = await page.evaluate(async (B) => Array.from(await window.testkit.inputs(`${B}/tiny`), (a) => Array.from(a)), B);
  const before = await page.evaluate(async (B) => {
    const clf = await window.selfxit.load(`${B}/tiny/`, { backend: 'wasm' });
    (window as unknown as { clf: Selfxit.Classifier }).clf = clf;
    return clf.info().segments.map((s) => s.loaded);
  }, B);
  expect(before).toEqual([true, false, false]);
  await resetLog(page);
  await context.setOffline(true);
  try {
    const offline = await page.evaluate(async (inputs) => {
      const { selfxit, testkit } = window;
      const clf = (window as unknown as { clf: Selfxit.Classifier }).clf;
      const results = (await clf.classifyBatch(inputs.map((a) => Float32Array.from(a)))).map(testkit.brief);
      const info = clf.info();
      await clf.dispose();
      const refetch = await testkit.error(selfxit.load('/e2e/.bundles/tiny/', { backend: 'wasm', cache: 'reload' }));
      return { results, info, refetch };
    }, inputs);
    offline.results.forEach((r, i) => expectSame(r, want[i]!, `offline ${i}`));
    expect(offline.info.segments.map((s) => s.loaded)).toEqual([true, true, true]);
    // Without the cache there is no way around the network: a typed error, not a hang.
    expect(offline.refetch).toMatchObject({ code: 'FETCH_FAILED' });
  } finally {
    await context.setOffline(false);
  }
  expect(await bundleRequests()).toEqual([]);
});

test('WebGPU (SwiftShader) gives the same labels and exits as WASM', async ({ page }) => {
  test.setTimeout(180_000);
  await openPage(page, 'esm');
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const clf = await selfxit.load(`${B}/tiny/`, { backend: 'webgpu', cache: false });
    const info = clf.info();
    if (info.backend !== 'webgpu') {
      await clf.dispose();
      return { skipped: info.fallbackReason ?? 'WebGPU not used' };
    }
    const inputs = await testkit.inputs(`${B}/tiny`);
    const batch = (await clf.classifyBatch(inputs.slice(0, 12))).map(testkit.brief);
    const singles: Brief[] = [];
    for (let i = 0; i < 4; i++) singles.push(testkit.brief(await clf.classify(inputs[i]!)));
    const backend = clf.backend;
    await clf.dispose();
    // 'auto' takes WebGPU only on a hardware adapter: on SwiftShader it stays on WASM and says why.
    const auto = await selfxit.load(`${B}/tiny/`, { cache: false });
    const autoInfo = { backend: auto.backend, reason: auto.info().fallbackReason ?? null };
    await auto.dispose();
    return { skipped: null, batch, singles, backend, autoInfo };
  }, B);
  test.skip(out.skipped !== null, `no WebGPU adapter in this browser: ${out.skipped}`);
  expect(out.backend).toBe('webgpu');
  const want = expectedTiny();
  out.batch!.forEach((r, i) => expectSame(r, want[i]!, `webgpu batch ${i}`, 1e-3));
  out.singles!.forEach((r, i) => expectSame(r, want[i]!, `webgpu single ${i}`, 1e-3));
  expect(new Set(out.batch!.map((r) => r.exit)).size).toBeGreaterThan(1); // rows left the GPU batch at different stages
  if (out.autoInfo!.backend === 'wasm') expect(out.autoInfo!.reason).toMatch(/software/);
});

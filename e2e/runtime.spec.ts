// Browser tests of the built runtime (dist/ loaded as a consumer would, ESM and script tag) on the uncalibrated
// test bundles of e2e/fixtures/tiny-bundles.ts: results vs the Node reference, batching, concurrency, typed
// errors, lazy segments (request log), the IndexedDB cache and offline use, and WebGPU (SwiftShader) vs WASM.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, test, expect, type BrowserContext, type LaunchOptions, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

declare global {
  interface Window {
    selfxit: typeof Selfxit;
    selfxitReady?: boolean;
    testkit: {
      inputs(bundle: string): Promise<Float32Array[]>;
      images(bundle: string): Promise<ImageData[]>;
      cifarImages(url: string, indices: number[]): Promise<ImageData[]>;
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
const expectedTiny = (): Expected[] =>
  JSON.parse(readFileSync(path.join(root, 'e2e/.bundles/tiny/expected.json'), 'utf8')) as Expected[];

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
    test('classifyBatch(32) equals 32 single calls and the Node reference; 200 concurrent calls all resolve correctly', async ({
      page,
    }) => {
      await openPage(page, kind);
      const out = await page.evaluate(async (B) => {
        const { selfxit, testkit } = window;
        const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false });
        const inputs = await testkit.inputs(`${B}/tiny`);
        const images = await testkit.images(`${B}/tiny`);
        const batch = (await clf.classifyBatch(inputs.slice(0, 32))).map(testkit.brief);
        const singles: Brief[] = [];
        for (let i = 0; i < 32; i++) singles.push(testkit.brief(await clf.classify(inputs[i]!)));
        const concurrent = (
          await Promise.all(Array.from({ length: 200 }, (_, i) => clf.classify(inputs[i % inputs.length]!)))
        ).map(testkit.brief);
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
        el.src = URL.createObjectURL(
          await new Promise<Blob>((res) => canvasOf(images[3]!).toBlob((b) => res(b!), 'image/png')),
        );
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
        // the same single calls by message (sharedMemory: false) as through shared memory (the default here)
        const byMessage = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false, sharedMemory: false });
        const messageSingles: Brief[] = [];
        for (let i = 0; i < 32; i++) messageSingles.push(testkit.brief(await byMessage.classify(inputs[i]!)));
        const messageTransport = byMessage.info().transport;
        await byMessage.dispose();
        return {
          messageSingles,
          messageTransport,
          batch,
          singles,
          concurrent,
          fromImages,
          fromKinds,
          bitmapStillUsable,
          probs,
          info,
          backend: info.backend,
          cores: navigator.hardwareConcurrency,
        };
      }, B);
      const want = expectedTiny();
      for (let i = 0; i < 32; i++) {
        expect({ index: out.batch[i]!.index, exit: out.batch[i]!.exit }, `batch row ${i} vs single call`).toEqual({
          index: out.singles[i]!.index,
          exit: out.singles[i]!.exit,
        });
        expect(Math.abs(out.batch[i]!.confidence - out.singles[i]!.confidence)).toBeLessThan(1e-5);
        expectSame(out.singles[i]!, want[i]!, `single ${i}`);
        expect(out.singles[i]!.stages, `stages run by sample ${i}`).toBe(want[i]!.exit < 0 ? 3 : want[i]!.exit + 1);
      }
      expect(out.concurrent).toHaveLength(200);
      out.concurrent.forEach((r, i) => expectSame(r, want[i % want.length]!, `concurrent call ${i}`));
      out.fromImages.forEach((r, i) => expectSame(r, want[i]!, `ImageData ${i}`));
      const kindNames = [
        'HTMLCanvasElement',
        'PNG Blob',
        'ImageBitmap',
        'HTMLImageElement',
        'ImageData',
        'OffscreenCanvas',
      ];
      out.fromKinds.forEach((r, i) => expectSame(r, want[i]!, kindNames[i]!));
      expect(out.bitmapStillUsable).toBe(true);
      // The 32 batched rows left at every stage, so the batch really shrank between segments.
      expect(new Set(out.batch.map((r) => r.exit))).toEqual(new Set([0, 1, -1]));
      expect(out.probs).toHaveLength(10);
      expect(Math.abs(out.probs!.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-4);
      expect(out.backend).toBe('wasm');
      expect(out.info.crossOriginIsolated).toBe(true);
      // Cross-origin isolated, no `threads` option: defaultThreads() = min(4, navigator.hardwareConcurrency).
      expect(out.info.threads, `threads on ${out.cores} cores`).toBe(Math.max(1, Math.min(4, out.cores)));
      expect(out.info.exits.map((e) => e.name)).toEqual(['cut-c1', 'cut-c2']);
      // Cross-origin isolated with Atomics.waitAsync: calls went through shared memory; by message, the same decisions
      expect(out.info.transport).toBe('shared-memory');
      expect(out.messageTransport).toBe('message');
      out.messageSingles.forEach((r, i) => {
        expect({ index: r.index, exit: r.exit }, `single ${i} by message`).toEqual({
          index: out.singles[i]!.index,
          exit: out.singles[i]!.exit,
        });
        expect(Math.abs(r.confidence - out.singles[i]!.confidence)).toBeLessThan(1e-6);
      });
    });

    test('typed errors reach the page: FETCH_FAILED, INVALID_BUNDLE, INTEGRITY_ERROR, INVALID_INPUT, DISPOSED, WORKER_DIED', async ({
      page,
    }) => {
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
      expect(r.notFound).toMatchObject({
        code: 'FETCH_FAILED',
        isSelfxitError: true,
        name: 'SelfxitError',
        details: { status: 404 },
      });
      expect(r.notJson).toMatchObject({ code: 'INVALID_BUNDLE', isSelfxitError: true });
      expect(r.badSha0).toMatchObject({ code: 'INTEGRITY_ERROR', isSelfxitError: true, details: { segment: 0 } });
      expect(r.badOption).toMatchObject({ code: 'INVALID_ARGUMENT' });
      // A worker script that cannot be fetched is a files problem, not a crash (issue 16 item 7).
      expect(r.deadWorker).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE', isSelfxitError: true });
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

test('inputs larger than the model input are resized: 2x images give the reference results, a 32x32 image equals its 16x16 drawImage resize', async ({
  page,
}) => {
  await openPage(page, 'esm');
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', cache: false });
    const images = await testkit.images(`${B}/tiny`);
    // 1. Every sample scaled up 2x by pixel replication, as a 32x32 canvas. Scaling back down by 2 gives the 16x16
    //    sample exactly with any averaging or picking filter, so the results must be the Node reference's; a crop,
    //    a wrong scale or a transposed image would not be.
    const upscaled = images.map((img) => {
      const big = new ImageData(32, 32);
      for (let y = 0; y < 32; y++)
        for (let x = 0; x < 32; x++)
          for (let c = 0; c < 4; c++) big.data[(y * 32 + x) * 4 + c] = img.data[((y >> 1) * 16 + (x >> 1)) * 4 + c]!;
      const canvas = document.createElement('canvas');
      canvas.width = 32;
      canvas.height = 32;
      canvas.getContext('2d')!.putImageData(big, 0, 0);
      return canvas;
    });
    const fromUpscaled = (await clf.classifyBatch(upscaled)).map(testkit.brief);

    // 2. Seeded pixel noise at 32x32 (ImageData), where resampling filters disagree: the runtime's result must equal
    //    classifying the image resized here to 16x16 exactly as src/runtime/preprocess.ts does (ImageBitmap without
    //    colour conversion or premultiplication, drawImage onto a 16x16 OffscreenCanvas with default smoothing, read
    //    back), passed as 16x16 ImageData (taken as is).
    let seed = 12345;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
    const noise = Array.from({ length: 8 }, () => {
      const img = new ImageData(32, 32);
      for (let p = 0; p < 32 * 32; p++) {
        img.data[p * 4] = rnd();
        img.data[p * 4 + 1] = rnd();
        img.data[p * 4 + 2] = rnd();
        img.data[p * 4 + 3] = 255;
      }
      return img;
    });
    const resized: ImageData[] = [];
    let differsFromNearest = 0;
    for (const img of noise) {
      const bmp = await createImageBitmap(img, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      const ctx = new OffscreenCanvas(16, 16).getContext('2d', { willReadFrequently: true })!;
      ctx.drawImage(bmp, 0, 0, 16, 16);
      bmp.close();
      const small = ctx.getImageData(0, 0, 16, 16);
      resized.push(small);
      // How many values differ from picking one pixel per 2x2 block: the comparison would catch another filter.
      for (let y = 0; y < 16; y++)
        for (let x = 0; x < 16; x++)
          for (let c = 0; c < 3; c++)
            if (small.data[(y * 16 + x) * 4 + c] !== img.data[(2 * y * 32 + 2 * x) * 4 + c]) differsFromNearest++;
    }
    const withProbs = async (inputs: ImageData[]) =>
      (await clf.classifyBatch(inputs, { probabilities: true })).map((r) => ({
        ...testkit.brief(r),
        probs: Array.from(r.probabilities!),
      }));
    const big = await withProbs(noise);
    const small = await withProbs(resized);
    await clf.dispose();
    return { fromUpscaled, big, small, differsFromNearest };
  }, B);
  const want = expectedTiny();
  expect(out.fromUpscaled).toHaveLength(64);
  out.fromUpscaled.forEach((r, i) => expectSame(r, want[i]!, `32x32 canvas of sample ${i}`));
  expect(out.differsFromNearest, 'noise resized by drawImage differs from nearest-neighbour picking').toBeGreaterThan(
    8 * 16 * 16,
  );
  out.big.forEach((r, i) => {
    const s = out.small[i]!;
    expect({ index: r.index, exit: r.exit }, `noise image ${i}: 32x32 vs resized on the page`).toEqual({
      index: s.index,
      exit: s.exit,
    });
    expect(
      Math.max(...r.probs.map((p, k) => Math.abs(p - s.probs[k]!))),
      `noise image ${i} probabilities`,
    ).toBeLessThan(1e-6);
  });
});

test('segments load lazily: when every input leaves at exit 0, no deeper segment is ever requested', async ({
  page,
}) => {
  await openPage(page, 'esm');
  await resetLog(page);
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const events: string[] = [];
    const clf = await selfxit.load(`${B}/tiny-exit0/`, {
      backend: 'wasm',
      cache: false,
      onProgress: (p) => events.push(`${p.status}:${p.file}`),
    });
    const inputs = await testkit.inputs(`${B}/tiny`);
    const batch = (await clf.classifyBatch(inputs)).map(testkit.brief);
    const singles: Brief[] = [];
    for (let i = 0; i < 8; i++) singles.push(testkit.brief(await clf.classify(inputs[i]!)));
    const loaded = clf.info().segments.map((s) => s.loaded);
    await clf.dispose();
    return { batch, singles, loaded, events };
  }, B);
  const files = (await requestLog(page))
    .filter((p) => p.startsWith(`${B}/tiny-exit0/`))
    .map((p) => p.slice(`${B}/tiny-exit0/`.length));
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
      const log = async (): Promise<string[]> =>
        ((await (await fetch('/__log')).json()) as string[]).filter((p) => p.endsWith('.onnx'));
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

test('second visit makes no request for the manifest or segments, and with everything cached the page classifies offline', async ({
  launchOptions,
  headless,
  baseURL,
}) => {
  // A browser profile on disk, as a visitor's browser has. In Playwright's default (off-the-record) context the HTTP
  // cache kept selfxit.worker.js but not onnxruntime's 14 MB .wasm, so a worker started offline failed to load ORT
  // (XMLHttpRequest NetworkError). The disk cache is sized explicitly so that the .wasm fits whatever the free disk.
  const profile = mkdtempSync(path.join(os.tmpdir(), 'selfxit-e2e-profile-'));
  const context: BrowserContext = await chromium.launchPersistentContext(profile, {
    ...launchOptions,
    args: [...(launchOptions.args ?? []), '--disk-cache-size=536870912'],
    headless,
    baseURL,
  });
  try {
    await secondVisitAndOffline(context, context.pages()[0] ?? (await context.newPage()));
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
});

async function secondVisitAndOffline(context: BrowserContext, page: Page): Promise<void> {
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
  const isBundleFile = (p: string): boolean => p.startsWith(`${B}/tiny/`) && !/\/(inputs\.f32|expected\.json)$/.test(p);
  const bundleRequests = async (): Promise<string[]> => (await requestLog(page)).filter(isBundleFile);
  // Requests the browser made (the worker's included), whether or not they reached the server: offline, a fetch
  // fails before it reaches the server log, so this list is what shows that nothing was even tried.
  let attempted: string[] = [];
  context.on('request', (r) => attempted.push(new URL(r.url()).pathname));
  const want = expectedTiny();

  await openPage(page, 'esm');
  await resetLog(page);
  attempted = [];
  const first = await run({ cache: true });
  expect(first.info.cache).toEqual({ enabled: true, manifestFromCache: false, stale: false });
  expect((await bundleRequests()).sort()).toEqual([
    `${B}/tiny/manifest.json`,
    `${B}/tiny/segment-0.onnx`,
    `${B}/tiny/segment-1.onnx`,
    `${B}/tiny/segment-2.onnx`,
  ]);
  expect(attempted.filter(isBundleFile).sort(), 'the request listener sees the worker fetch the bundle').toEqual(
    await bundleRequests(),
  );
  expect(first.info.segments.every((s) => s.cached)).toBe(true);

  // Second visit: same browser profile (IndexedDB), a fresh page.
  await page.reload();
  await page.waitForFunction(() => window.selfxitReady === true);
  await resetLog(page);
  const second = await run({ cache: true });
  expect(await bundleRequests()).toEqual([]);
  expect(second.info.cache).toEqual({ enabled: true, manifestFromCache: true, stale: false });
  expect(second.info.segments.every((s) => s.cached)).toBe(true);
  second.results.forEach((r, i) => expectSame(r, want[i]!, `cached run ${i}`));

  // cache: 'reload' fetches the manifest again, and still no segment.
  await resetLog(page);
  await run({ cache: 'reload' });
  expect(await bundleRequests()).toEqual([`${B}/tiny/manifest.json`]);

  // Offline: a classifier opened from the cache (segment 0 only, the rest loads lazily), then the network goes
  // away: segments 1 and 2 come from IndexedDB. Then a fresh selfxit.load() while offline, default cache: manifest
  // and every segment from IndexedDB. It runs in the already-open page: e2e/serve.mjs lets the HTTP cache keep
  // dist/ (selfxit.js, the worker, dist/ort/), which the worker needs, but not the e2e pages themselves; starting a
  // page offline needs the app shell cached by the app (e.g. a service worker) — selfxit caches the bundle.
  const inputs = await page.evaluate(
    async (B) => Array.from(await window.testkit.inputs(`${B}/tiny`), (a) => Array.from(a)),
    B,
  );
  const before = await page.evaluate(async (B) => {
    const clf = await window.selfxit.load(`${B}/tiny/`, { backend: 'wasm' });
    (window as unknown as { clf: Selfxit.Classifier }).clf = clf;
    return clf.info().segments.map((s) => s.loaded);
  }, B);
  expect(before).toEqual([true, false, false]);
  await resetLog(page);
  await context.setOffline(true);
  try {
    attempted = [];
    const offline = await page.evaluate(async (inputs) => {
      const { selfxit, testkit } = window;
      const clf = (window as unknown as { clf: Selfxit.Classifier }).clf;
      const tensors = inputs.map((a) => Float32Array.from(a));
      const results = (await clf.classifyBatch(tensors)).map(testkit.brief);
      const info = clf.info();
      await clf.dispose();
      // A new classifier while offline, default cache (`backend: 'wasm'` only so that the worker imports the ORT
      // build this page has already loaded, which the HTTP cache holds).
      const fresh = await selfxit.load('/e2e/.bundles/tiny/', { backend: 'wasm' });
      const freshOpened = fresh.info();
      const freshResults = (await fresh.classifyBatch(tensors)).map(testkit.brief);
      const freshInfo = fresh.info();
      await fresh.dispose();
      return { results, info, freshOpened, freshResults, freshInfo };
    }, inputs);
    const attemptedOffline = attempted.filter(isBundleFile);
    offline.results.forEach((r, i) => expectSame(r, want[i]!, `offline ${i}`));
    expect(offline.info.segments.map((s) => s.loaded)).toEqual([true, true, true]);
    expect(offline.freshOpened.cache).toEqual({ enabled: true, manifestFromCache: true, stale: false });
    expect(offline.freshOpened.segments.map((s) => s.cached)).toEqual([true, true, true]);
    expect(offline.freshResults).toHaveLength(64);
    offline.freshResults.forEach((r, i) => expectSame(r, want[i]!, `fresh load offline ${i}`));
    expect(offline.freshInfo.segments.map((s) => s.loaded)).toEqual([true, true, true]);
    expect(attemptedOffline, 'bundle requests attempted offline').toEqual([]);

    // Without the cache there is no way around the network: a typed error, not a hang (and the attempt is seen).
    const refetch = await page.evaluate(() =>
      window.testkit.error(window.selfxit.load('/e2e/.bundles/tiny/', { backend: 'wasm', cache: 'reload' })),
    );
    expect(refetch).toMatchObject({ code: 'FETCH_FAILED' });
    // The request event of the worker's failed fetch can reach the test after the typed error does (seen once in CI).
    await expect.poll(() => attempted.filter(isBundleFile), { timeout: 5_000 }).toEqual([`${B}/tiny/manifest.json`]);
  } finally {
    await context.setOffline(false);
  }
  expect(await bundleRequests()).toEqual([]);
}

/**
 * Whether a WebGPU adapter is expected: Chromium launched with --enable-unsafe-webgpu (playwright.config.ts does)
 * has one here, SwiftShader's software adapter, even headless without a GPU. Where it is expected, a classifier
 * that fell back to WASM FAILS the WebGPU tests, with the fallback reason: skipping would hide exactly the
 * regressions they exist for (the adapter probe, the JSEP build, a WebGPU session that fails). Keyed on the flag,
 * not on `navigator.gpu`, because navigator.gpu can exist with no usable adapter (requestAdapter() → null), so its
 * presence does not say whether one should be there. Without the flag (another config or browser) they skip, saying so.
 */
function webgpuExpected(launchOptions: LaunchOptions): boolean {
  return (launchOptions.args ?? []).includes('--enable-unsafe-webgpu');
}
const NO_WEBGPU_FLAG =
  'Chromium was launched without --enable-unsafe-webgpu (see playwright.config.ts): no WebGPU adapter is expected, WebGPU vs WASM not checked';

test('WebGPU (SwiftShader) gives the same labels and exits as WASM on all 64 tiny inputs (batch and single calls), and as the Node reference', async ({
  page,
  launchOptions,
}) => {
  test.skip(!webgpuExpected(launchOptions), NO_WEBGPU_FLAG);
  test.setTimeout(240_000);
  await openPage(page, 'esm');
  const out = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window;
    const inputs = await testkit.inputs(`${B}/tiny`);
    const runAll = async (backend: 'webgpu' | 'wasm') => {
      const clf = await selfxit.load(`${B}/tiny/`, { backend, cache: false });
      const used = clf.backend;
      const reason = clf.info().fallbackReason ?? null;
      const batchEngine = clf.info().batchEngine;
      const t0 = performance.now();
      const batch = used === backend ? (await clf.classifyBatch(inputs)).map(testkit.brief) : [];
      const t1 = performance.now();
      const singles: Brief[] = [];
      if (used === backend) for (const x of inputs) singles.push(testkit.brief(await clf.classify(x)));
      const t2 = performance.now();
      await clf.dispose();
      return { backend: used, reason, batchEngine, batch, singles, batchMs: t1 - t0, singlesMs: t2 - t1 };
    };
    const gpu = await runAll('webgpu');
    const wasm = await runAll('wasm');
    // 'auto' takes WebGPU only on a hardware adapter: on SwiftShader it stays on WASM and says why.
    const auto = await selfxit.load(`${B}/tiny/`, { cache: false });
    const autoInfo = { backend: auto.backend, reason: auto.info().fallbackReason ?? null };
    await auto.dispose();
    return { gpu, wasm, autoInfo };
  }, B);
  expect(
    out.gpu.backend,
    `WebGPU expected with --enable-unsafe-webgpu, but the classifier fell back to WASM: ${out.gpu.reason}`,
  ).toBe('webgpu');
  expect(out.wasm.backend).toBe('wasm');
  // batches: the batch model on WASM, stage by stage on WebGPU (onnxruntime-web has no Compress kernel there)
  expect(out.wasm.batchEngine).toBe('compiled');
  if (out.gpu.backend === 'webgpu') expect(out.gpu.batchEngine).toBe('stages');
  console.log(
    `tiny bundle, 64 inputs: WebGPU (SwiftShader) batch ${out.gpu.batchMs.toFixed(0)} ms, 64 single calls ${out.gpu.singlesMs.toFixed(0)} ms; ` +
      `WASM batch ${out.wasm.batchMs.toFixed(0)} ms, single calls ${out.wasm.singlesMs.toFixed(0)} ms`,
  );
  const want = expectedTiny();
  // The tiny bundle's thresholds sit in gaps of >= 2e-3 between sample scores: no exit may flip between backends.
  for (const [name, gpu, wasm] of [
    ['batch', out.gpu.batch, out.wasm.batch],
    ['single', out.gpu.singles, out.wasm.singles],
  ] as const) {
    expect(gpu).toHaveLength(64);
    expect(wasm).toHaveLength(64);
    for (let i = 0; i < 64; i++) {
      expect({ index: gpu[i]!.index, exit: gpu[i]!.exit }, `${name} ${i}: WebGPU vs WASM`).toEqual({
        index: wasm[i]!.index,
        exit: wasm[i]!.exit,
      });
      expect(
        Math.abs(gpu[i]!.confidence - wasm[i]!.confidence),
        `${name} ${i}: WebGPU vs WASM confidence`,
      ).toBeLessThan(1e-3);
      expectSame(gpu[i]!, want[i]!, `webgpu ${name} ${i} vs Node`, 1e-3);
    }
  }
  expect(new Set(out.gpu.batch.map((r) => r.exit))).toEqual(new Set([0, 1, -1])); // rows left the GPU batch at every stage
  if (out.autoInfo.backend === 'wasm') expect(out.autoInfo.reason).toMatch(/software/);
});

// Codes that point the right way and no silent nonsense, in Chromium on the built package (issue 16, items 7 and 8):
// missing onnxruntime files or worker script → RUNTIME_FILES_UNAVAILABLE naming the URL; a closed ImageBitmap, a
// transferred buffer, NaN/±Infinity → INVALID_INPUT (the classifier stays usable); null options → INVALID_ARGUMENT;
// dispose() rejects the calls not answered yet with DISPOSED; info().threads is the count onnxruntime runs.
import { expect, test } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

/** What e2e/pages/esm.html and testkit.js put on the window (the full declaration is in runtime.spec.ts). */
interface EsmPage {
  selfxit: typeof Selfxit;
  selfxitReady?: boolean;
  testkit: {
    inputs(bundle: string): Promise<Float32Array[]>;
    error(p: Promise<unknown>): Promise<{ code: string; message: string; details: Record<string, unknown> } | null>;
  };
}

const B = '/e2e/.bundles';

test('wrong codes set right: runtime files, closed bitmap, transferred buffer, NaN, null options, dispose, threads', async ({
  page,
}) => {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => (window as unknown as EsmPage).selfxitReady === true, null, { timeout: 15_000 });
  const r = await page.evaluate(async (B) => {
    const { selfxit, testkit } = window as unknown as EsmPage;
    const E = testkit.error;
    const opts = { backend: 'wasm', cache: false } as const;
    const out: Record<string, unknown> = {};
    out.noOrt = await E(selfxit.load(`${B}/tiny/`, { ...opts, wasmPaths: '/e2e/no-such-ort/' }));
    out.noWorker = await E(selfxit.load(`${B}/tiny/`, { ...opts, workerUrl: '/e2e/pages/no-such-worker.js' }));
    // a worker URL answered with an HTML page and 200 (a single-page app's fallback for a file it lacks)
    out.htmlWorker = await E(selfxit.load(`${B}/tiny/`, { ...opts, workerUrl: '/e2e/pages/esm.html' }));
    const clf = await selfxit.load(`${B}/tiny/`, { ...opts, threads: 2 });
    out.isolatedThreads = { threads: clf.info().threads, isolated: clf.info().crossOriginIsolated };
    const inputs = await testkit.inputs(`${B}/tiny`);
    const bitmap = await createImageBitmap(new ImageData(16, 16));
    bitmap.close();
    out.closedBitmap = await E(clf.classify(bitmap));
    const moved = inputs[1]!.slice();
    structuredClone(moved.buffer, { transfer: [moved.buffer] });
    out.transferred = await E(clf.classify(moved));
    const nan = inputs[2]!.slice();
    nan[5] = Number.NaN;
    out.nan = await E(clf.classify(nan));
    const inf = inputs[2]!.slice();
    inf[7] = -Infinity;
    out.infInBatch = await E(clf.classifyBatch([inputs[0]!, inf]));
    out.nullOptions = await E(clf.classify(inputs[0]!, null as never));
    out.stillWorks = (await clf.classify(inputs[0]!)).index >= 0;
    // Queued calls: none answered when dispose() is called, so all reject with DISPOSED.
    const queued = inputs.slice(0, 20).map((x) => E(clf.classify(x)));
    await clf.dispose();
    out.queued = (await Promise.all(queued)).map((e) => e?.code ?? 'resolved');
    return out;
  }, B);
  expect(r.noOrt).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE' });
  expect(JSON.stringify(r.noOrt)).toContain('/e2e/no-such-ort/ort-wasm-simd-threaded');
  expect(r.noWorker).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE' });
  expect((r.noWorker as { details: { url: string } }).details.url).toContain('/e2e/pages/no-such-worker.js');
  expect(r.htmlWorker).toMatchObject({
    code: 'RUNTIME_FILES_UNAVAILABLE',
    message: expect.stringMatching(/could not be loaded \(an HTML page, served as text\/html\)/),
    details: { contentType: expect.stringMatching(/^text\/html/) },
  });
  expect((r.htmlWorker as { details: object }).details).not.toHaveProperty('csp');
  expect(r.isolatedThreads).toEqual({ threads: 2, isolated: true });
  expect(r.closedBitmap).toMatchObject({ code: 'INVALID_INPUT' });
  expect(r.transferred).toMatchObject({ code: 'INVALID_INPUT' });
  expect(r.nan).toMatchObject({ code: 'INVALID_INPUT', details: { index: 5 } });
  expect(r.infInBatch).toMatchObject({ code: 'INVALID_INPUT', details: { index: 7, inputIndex: 1 } });
  expect(r.nullOptions).toMatchObject({ code: 'INVALID_ARGUMENT' });
  expect(r.stillWorks).toBe(true);
  expect(r.queued).toEqual(Array.from({ length: 20 }, () => 'DISPOSED'));
});

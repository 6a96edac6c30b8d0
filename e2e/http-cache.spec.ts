// Browser tests of what only a browser does to bundle files and images: its HTTP cache keeping bundle files the server
// lets it keep (a bundle replaced in place, then `cache: 'reload'`: the manifest is revalidated, a segment whose cached
// copy is the old version fetched again past the cache), and colour profiles (an element's pixels read as a Blob's
// are: as stored, no conversion to sRGB).
import { deflateSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';
import { writeBundleV1, writeBundleV2 } from '../test/fixtures/bundle-versions.js';

declare global {
  interface Window {
    selfxit: typeof Selfxit;
    selfxitReady?: boolean;
  }
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bundles = path.join(root, 'e2e/.bundles');

async function openPage(page: Page): Promise<void> {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
}

/** load() of `url` with `cache`, opened and disposed: its manifest hash, or the error's code and message. */
function loadOnce(page: Page, url: string, cache: boolean | 'reload'): Promise<string> {
  return page.evaluate(
    async ({ url, cache }) => {
      try {
        const clf = await window.selfxit.load(url, { backend: 'wasm', cache, heartbeatMs: 0 });
        const hash = clf.info().manifestHash;
        await clf.dispose();
        return hash;
      } catch (e) {
        const err = e as { code?: string; message?: string };
        return `${err.code}: ${err.message}`;
      }
    },
    { url, cache },
  );
}

for (const mode of ['all', 'files'] as const) {
  test(`a bundle replaced in place while the HTTP cache keeps its files (${mode === 'all' ? 'manifest too' : 'manifest no-cache'}): cache 'reload' opens the new version`, async ({
    page,
  }) => {
    const name = `http-replaced-${mode}`;
    const src = path.join(bundles, 'tiny');
    const dst = path.join(bundles, name);
    writeBundleV1(src, dst);
    await openPage(page);
    const url = `/http-cache/${mode}/e2e/.bundles/${name}/`;
    const v1 = await loadOnce(page, url, true);
    expect(v1).toMatch(/^[0-9a-f]{64}$/);
    await writeBundleV2(src, dst, [0]);
    const v2 = await loadOnce(page, url, 'reload');
    expect(v2).toMatch(/^[0-9a-f]{64}$/);
    expect(v2).not.toBe(v1);
  });
}

/** A 16x16 RGB PNG (a grey ramp) with a gAMA chunk of gamma 1.0: a browser converting to sRGB brightens it. */
function linearGammaPng(): Buffer {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer): number => {
    let c = 0xffffffff;
    for (const x of b) c = table[(c ^ x) & 255]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer): Buffer => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const tail = Buffer.alloc(4);
    tail.writeUInt32BE(crc(body));
    return Buffer.concat([head, body, tail]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(16, 0);
  ihdr.writeUInt32BE(16, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const row = 1 + 3 * 16;
  const raw = Buffer.alloc(16 * row);
  for (let y = 0; y < 16; y++)
    for (let x = 0; x < 16; x++) raw.fill(32 + ((x * 11 + y * 5) % 160), y * row + 1 + 3 * x, y * row + 4 + 3 * x);
  const gamma = Buffer.alloc(4);
  gamma.writeUInt32BE(100000); // 1.0
  const signature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  return Buffer.concat([
    signature,
    chunk('IHDR', ihdr),
    chunk('gAMA', gamma),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

test('an image element with a colour profile reads as its Blob does: the pixels as stored, not converted to sRGB', async ({
  page,
}) => {
  await openPage(page);
  const out = await page.evaluate(
    async ({ b64 }) => {
      const blob = new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: 'image/png' });
      const el = new Image();
      el.src = URL.createObjectURL(blob);
      await el.decode();
      const clf = await window.selfxit.load('/e2e/.bundles/tiny/', { backend: 'wasm', cache: false });
      const probs = async (x: Selfxit.ClassifierInput): Promise<number[]> =>
        Array.from((await clf.classify(x, { probabilities: true })).probabilities!);
      const r = {
        element: await probs(el),
        blob: await probs(blob),
        // what converting to sRGB would give (the page's former createImageBitmap default): must differ
        srgb: await probs(await createImageBitmap(el)),
      };
      await clf.dispose();
      return r;
    },
    { b64: linearGammaPng().toString('base64') },
  );
  const gap = (a: number[], b: number[]): number => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
  expect(gap(out.srgb, out.blob)).toBeGreaterThan(1e-3); // the test can tell the two apart
  expect(gap(out.element, out.blob)).toBeLessThan(1e-6);
});

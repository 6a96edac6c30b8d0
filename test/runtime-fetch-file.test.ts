// fetchBytes against bodies that never end or trickle: a download cannot keep the page's inactivity clocks running for
// ever (its progress events restart them).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { BundleSource } from '../src/runtime/bundle-source.js';
import { noCache } from '../src/runtime/cache.js';
import { PROGRESS_STEP_BYTES, fetchBytes } from '../src/runtime/fetch-file.js';

/** A body of `chunks` chunks of `size` bytes each (endless when `chunks` is Infinity). */
function body(size: number, chunks = Infinity): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent++ >= chunks) c.close();
      else c.enqueue(new Uint8Array(size));
    },
  });
}

function serve(stream: ReadableStream<Uint8Array>, headers: Record<string, string> = {}): void {
  vi.stubGlobal('fetch', () => Promise.resolve(new Response(stream, { headers })));
}

afterEach(() => vi.unstubAllGlobals());

describe('fetchBytes', () => {
  it('stops an endless body once it passes the manifest size, with INTEGRITY_ERROR tooLong', async () => {
    serve(body(4096));
    const err = await fetchBytes('https://x.test/segment-3.onnx', { expectedBytes: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SelfxitError);
    expect((err as SelfxitError).code).toBe('INTEGRITY_ERROR');
    expect((err as SelfxitError).details).toMatchObject({ expectedBytes: 10_000, loaded: 12_288, tooLong: true });
  });

  it('reports a trickle only per PROGRESS_STEP_BYTES, so it does not restart the clocks byte by byte', async () => {
    serve(body(1, 1000));
    const seen: number[] = [];
    const bytes = await fetchBytes('https://x.test/m.onnx', { onProgress: (loaded) => seen.push(loaded) });
    expect(bytes.length).toBe(1000);
    expect(seen).toEqual([1000]); // once, at the end
  });

  it('reports progress per step while bytes arrive, and none past 4 × the Content-Length without a manifest size', async () => {
    serve(body(PROGRESS_STEP_BYTES, 12), { 'content-length': String(2 * PROGRESS_STEP_BYTES) });
    const seen: number[] = [];
    await fetchBytes('https://x.test/m.onnx', { onProgress: (loaded) => seen.push(loaded) });
    const steps = [1, 2, 3, 4, 5, 6, 7, 8, 12].map((i) => i * PROGRESS_STEP_BYTES);
    expect(seen).toEqual(steps); // 9..11 past 4 × 2 steps: silent; the end is reported once
  });

  it('a compressed body (Content-Length the compressed size) keeps reporting up to the manifest size', async () => {
    serve(body(PROGRESS_STEP_BYTES, 10), { 'content-length': String(6 * PROGRESS_STEP_BYTES) });
    const seen: { loaded: number; total: number }[] = [];
    await fetchBytes('https://x.test/segment-1.onnx', {
      expectedBytes: 10 * PROGRESS_STEP_BYTES,
      onProgress: (loaded, total) => seen.push({ loaded, total }),
    });
    expect(seen.map((p) => p.loaded)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((i) => i * PROGRESS_STEP_BYTES));
    expect(seen.every((p) => p.total === 10 * PROGRESS_STEP_BYTES)).toBe(true);
  });

  it('a segment answered with an endless stream fails as a file other than the manifest lists (fetched twice)', async () => {
    const asked: string[] = [];
    vi.stubGlobal('fetch', (url: string) => {
      asked.push(url);
      if (url.endsWith('.onnx')) return Promise.resolve(new Response(body(4096)));
      return Promise.reject(new TypeError('Failed to fetch')); // the manifest check: unknown
    });
    const sha256 = 'a'.repeat(64);
    const manifest = { segments: [{ file: 'segment-3.onnx', sha256, bytes: 10_000 }] };
    const source = new BundleSource(
      manifest as unknown as BundleManifest,
      'https://x.test/b/manifest.json',
      noCache,
      () => {},
      new Set(),
    );
    const err = await source.segmentBytes(0).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INTEGRITY_ERROR', details: { expected: sha256, segment: 0 } });
    expect((err as SelfxitError).details?.actual).toMatch(/more than 10000 bytes/);
    expect(asked.filter((u) => u.endsWith('.onnx'))).toHaveLength(2); // again past the HTTP cache, as for a wrong hash
  });
});

// fetchBytes against bodies that never end or trickle: a download cannot keep the page's inactivity clocks running for
// ever (its progress events restart them).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { BundleSource, isOutage } from '../src/runtime/bundle-source.js';
import { noCache } from '../src/runtime/cache.js';
import { MAX_RESUMES, PROGRESS_STEP_BYTES, fetchBytes, fetchText } from '../src/runtime/fetch-file.js';

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

/** The file a flaky server holds: byte i = i mod 251. */
const file = (n: number): Uint8Array => {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = i % 251;
  return a;
};

/** A body of `bytes` in chunks of `step` that breaks off (a network error) after `breakAt` bytes, if given. */
function flaky(bytes: Uint8Array, step: number, breakAt?: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (breakAt !== undefined && at >= breakAt) return c.error(new TypeError('network error'));
      if (at >= bytes.length) return c.close();
      const end = Math.min(bytes.length, at + step, breakAt ?? Infinity);
      c.enqueue(bytes.slice(at, end));
      at = end;
    },
  });
}

interface Asked {
  range?: string;
  ifRange?: string;
}

/**
 * A server of `data` whose bodies break off after `breaks[k]` bytes of the k-th answer (counted in the answer's own
 * bytes); `ranges`: it answers a Range request with 206 from that offset (else the whole file, 200); `encoded`: it
 * announces a Content-Length other than the file's (a compressed body).
 */
function flakyServer(
  data: Uint8Array,
  breaks: readonly (number | undefined)[],
  o: {
    ranges?: boolean;
    encoded?: boolean;
    wrongStart?: boolean;
    /** Requests (0-based) that get no answer at all (offline). */
    offline?: readonly number[];
    /** Content-Range not readable (a cross-origin answer without Access-Control-Expose-Headers). */
    hideRange?: boolean;
    /** ETag sent ('' for none; default "v1"). */
    etag?: string;
    lastModified?: string;
  } = {},
): Asked[] {
  const asked: Asked[] = [];
  vi.stubGlobal('fetch', (_url: string, init: RequestInit = {}) => {
    const h = new Headers(init.headers);
    const range = h.get('range') ?? undefined;
    const ifRange = h.get('if-range') ?? undefined;
    asked.push({ ...(range ? { range } : {}), ...(ifRange ? { ifRange } : {}) });
    if (o.offline?.includes(asked.length - 1)) return Promise.reject(new TypeError('Failed to fetch'));
    const breakAt = breaks[asked.length - 1];
    const from = range && o.ranges ? Number(/bytes=(\d+)-/.exec(range)![1]) : 0;
    const part = data.subarray(from);
    const headers: Record<string, string> = {
      'content-length': String(o.encoded ? Math.floor(part.length / 2) : part.length),
      ...(o.etag !== '' ? { etag: o.etag ?? '"v1"' } : {}),
      ...(o.lastModified ? { 'last-modified': o.lastModified } : {}),
    };
    if (from > 0 && !o.hideRange)
      headers['content-range'] = `bytes ${o.wrongStart ? from + 1 : from}-${data.length - 1}/${data.length}`;
    return Promise.resolve(new Response(flaky(part, 1000, breakAt), { status: from > 0 ? 206 : 200, headers }));
  });
  return asked;
}

describe('fetchBytes: a body that breaks off is taken up again', () => {
  it('from where it stopped, with Range and If-Range, when the server takes ranges; progress only grows', async () => {
    const data = file(300_000);
    const asked = flakyServer(data, [150_000, 70_000], { ranges: true });
    const seen: number[] = [];
    const got = await fetchBytes('https://x.test/segment-1.onnx', {
      expectedBytes: data.length,
      onProgress: (loaded) => seen.push(loaded),
    });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked).toEqual([
      {},
      { range: 'bytes=150000-', ifRange: '"v1"' },
      { range: 'bytes=220000-', ifRange: '"v1"' },
    ]);
    expect(seen.every((v, i) => i === 0 || v > seen[i - 1]!)).toBe(true);
    expect(seen.at(-1)).toBe(data.length);
  });

  it('from the start when the server ignores the range (200, the whole file): no byte twice', async () => {
    const data = file(200_000);
    const asked = flakyServer(data, [120_000], { ranges: false });
    const seen: number[] = [];
    const got = await fetchBytes('https://x.test/segment-1.onnx', {
      expectedBytes: data.length,
      onProgress: (loaded) => seen.push(loaded),
    });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked[1]).toEqual({ range: 'bytes=120000-', ifRange: '"v1"' });
    expect(seen.every((v, i) => i === 0 || v >= seen[i - 1]!)).toBe(true); // never down while read again
  });

  it('from the start, without a Range, when the body is compressed in transit (Content-Length is not the size)', async () => {
    const data = file(200_000);
    const asked = flakyServer(data, [90_000], { ranges: true, encoded: true });
    const got = await fetchBytes('https://x.test/segment-1.onnx', { expectedBytes: data.length });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked).toEqual([{}, {}]);
  });

  it('a 206 that starts elsewhere than asked is not spliced in: the next resume asks for the whole file', async () => {
    const data = file(100_000);
    const asked = flakyServer(data, [50_000], { ranges: true, wrongStart: true });
    const got = await fetchBytes('https://x.test/segment-1.onnx', { expectedBytes: data.length });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked).toEqual([{}, { range: 'bytes=50000-', ifRange: '"v1"' }, {}]);
  });

  it(`fails with FETCH_FAILED after ${MAX_RESUMES} resumes that all broke off, saying how far it got`, async () => {
    const data = file(100_000);
    const asked = flakyServer(data, [10_000, 10_000, 10_000, 10_000], { ranges: true });
    const err = await fetchBytes('https://x.test/segment-1.onnx', { expectedBytes: data.length }).catch(
      (e: unknown) => e,
    );
    expect(asked).toHaveLength(1 + MAX_RESUMES);
    // status 0: the network failed (the answers' headers had come: 200, 206), so isOutage lets a cached copy stand in
    expect(err).toMatchObject({ code: 'FETCH_FAILED', details: { status: 0, loaded: 40_000, resumes: MAX_RESUMES } });
    expect((err as Error).message).toMatch(/broke off after 40000 bytes \(taken up again 3 times\)/);
  });

  it('a resume request that gets no answer counts as one: the next one asks for the whole file', async () => {
    const data = file(150_000);
    const asked = flakyServer(data, [100_000], { ranges: true, offline: [1] });
    const got = await fetchBytes('https://x.test/segment-1.onnx', { expectedBytes: data.length });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked).toEqual([{}, { range: 'bytes=100000-', ifRange: '"v1"' }, {}]);
  });

  it('offline for every resume: FETCH_FAILED with status 0 (an outage the cached copy may stand in for)', async () => {
    const data = file(50_000);
    flakyServer(data, [20_000], { ranges: true, offline: [1, 2, 3] });
    const err = await fetchBytes('https://x.test/m.onnx', { expectedBytes: data.length }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FETCH_FAILED', details: { status: 0, loaded: 20_000, resumes: MAX_RESUMES } });
  });

  it('a 206 whose Content-Range cannot be read (cross-origin) is not spliced: the next resume asks for the whole file', async () => {
    const data = file(150_000);
    const asked = flakyServer(data, [100_000], { ranges: true, hideRange: true });
    const got = await fetchBytes('https://x.test/segment-1.onnx', { expectedBytes: data.length });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked).toEqual([{}, { range: 'bytes=100000-', ifRange: '"v1"' }, {}]);
  });

  it('a weak ETag is never sent as If-Range: Last-Modified is, or nothing', async () => {
    const data = file(60_000);
    const lm = 'Mon, 07 Dec 2026 04:00:00 GMT';
    const weak = flakyServer(data, [30_000], { ranges: true, etag: 'W/"w1"', lastModified: lm });
    await fetchBytes('https://x.test/a.onnx', { expectedBytes: data.length });
    expect(weak[1]).toEqual({ range: 'bytes=30000-', ifRange: lm });
    const none = flakyServer(data, [30_000], { ranges: true, etag: 'W/"w1"' });
    await fetchBytes('https://x.test/a.onnx', { expectedBytes: data.length });
    expect(none[1]).toEqual({ range: 'bytes=30000-' });
  });

  it('a body that broke off after its last byte is complete: no further request', async () => {
    const data = file(40_000);
    const asked = flakyServer(data, [40_000], { ranges: true });
    const got = await fetchBytes('https://x.test/a.onnx', { expectedBytes: data.length });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked).toHaveLength(1);
  });

  it('read again from the start, progress keeps coming (the clocks restart) at the furthest point reached', async () => {
    const data = file(10 * PROGRESS_STEP_BYTES);
    flakyServer(data, [8 * PROGRESS_STEP_BYTES], { ranges: false });
    const seen: number[] = [];
    await fetchBytes('https://x.test/a.onnx', { expectedBytes: data.length, onProgress: (l) => seen.push(l) });
    expect(seen.every((v, k) => k === 0 || v >= seen[k - 1]!)).toBe(true); // never down
    // Reports per 64 KiB received (1,000-byte chunks): 7 before the break at 8 × 64 KiB, the last of them the furthest
    // point reached; then the second read reports as often, the first 7 times at that point (not below it).
    const furthest = seen[6]!;
    expect(furthest).toBeLessThanOrEqual(8 * PROGRESS_STEP_BYTES);
    expect(seen.slice(7, 14)).toEqual(Array<number>(7).fill(furthest));
    expect(seen[14]).toBeGreaterThan(furthest);
    expect(seen.at(-1)).toBe(data.length);
  });

  it('a progress callback that throws stops the download (no resume): its error, the body cancelled', async () => {
    const data = file(4 * PROGRESS_STEP_BYTES);
    const asked = flakyServer(data, [], { ranges: true });
    const boom = new Error('listener failed');
    const err = await fetchBytes('https://x.test/a.onnx', {
      expectedBytes: data.length,
      onProgress: () => {
        throw boom;
      },
    }).catch((e: unknown) => e);
    expect(err).toBe(boom);
    expect(asked).toHaveLength(1);
  });

  it('after a whole-file answer the next resume uses that answer: its validator, and ranges again', async () => {
    const data = file(150_000);
    // first body breaks; the range answer is ignored (200, whole) and breaks too; the third continues from there
    let n = 0;
    const asked: Asked[] = [];
    vi.stubGlobal('fetch', (_u: string, init: RequestInit = {}) => {
      const h = new Headers(init.headers);
      asked.push({
        ...(h.get('range') ? { range: h.get('range')! } : {}),
        ...(h.get('if-range') ? { ifRange: h.get('if-range')! } : {}),
      });
      n++;
      const etag = n === 1 ? '"v1"' : '"v2"';
      if (n <= 2)
        return Promise.resolve(
          new Response(flaky(data, 1000, n === 1 ? 50_000 : 80_000), {
            headers: { 'content-length': String(data.length), etag },
          }),
        );
      const from = Number(/bytes=(\d+)-/.exec(h.get('range') ?? 'bytes=0-')![1]);
      return Promise.resolve(
        new Response(flaky(data.subarray(from), 1000), {
          status: 206,
          headers: {
            'content-length': String(data.length - from),
            'content-range': `bytes ${from}-${data.length - 1}/${data.length}`,
            etag,
          },
        }),
      );
    });
    const got = await fetchBytes('https://x.test/a.onnx', { expectedBytes: data.length });
    expect(Buffer.from(got).equals(data)).toBe(true);
    expect(asked).toEqual([{}, { range: 'bytes=50000-', ifRange: '"v1"' }, { range: 'bytes=80000-', ifRange: '"v2"' }]);
  });

  it('fetchText: a manifest body that breaks off is a network failure (status 0: a cached copy may stand in)', async () => {
    flakyServer(file(10_000), [5_000]);
    const err = await fetchText('https://x.test/manifest.json').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FETCH_FAILED', details: { status: 0, httpStatus: 200 } });
    expect(isOutage(err)).toBe(true);
  });
});

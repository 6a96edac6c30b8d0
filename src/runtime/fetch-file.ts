// Fetching bundle files: bytes with growing progress counts, HTTP failures as FETCH_FAILED with the status; the HTTP cache
// bypassed on request (`revalidate`: a manifest that may have changed; `reload`: a file whose cached copy was wrong).
import { SelfxitError } from '../errors.js';

/**
 * Bytes a download must grow by before it reports progress again (and once at its end): progress restarts the page's
 * inactivity clocks (`callTimeoutMs`, load()'s `timeoutMs`), so a server that trickles a few bytes at a time does not
 * keep a call waiting for ever: at least 64 KiB per clock period, or the call times out.
 */
export const PROGRESS_STEP_BYTES = 64 * 1024;

/**
 * Without a manifest size, how far past its Content-Length a body still reports progress: a compressed response
 * (`Content-Encoding: gzip`/`br`, whose Content-Length is the compressed size) decodes to more bytes than announced;
 * model weights compress far less than 4×.
 */
const MAX_DECODED_RATIO = 4;

interface FetchOptions {
  /**
   * Called as bytes arrive, at most once per {@link PROGRESS_STEP_BYTES} and at the end; `loaded` only grows. `total` =
   * `expectedBytes` (the decoded size), else Content-Length, else 0. Without `expectedBytes`, bytes past 4 × the
   * Content-Length (more than a compressed body decodes to) are not reported: they do not restart the clocks.
   */
  readonly onProgress?: (loaded: number, total: number) => void;
  /**
   * Size announced by the manifest (exact: the file as served, decoded), used when the server sends no Content-Length.
   * A body that grows past it stops at once with INTEGRITY_ERROR (`details.tooLong`): an endless or wrong response is
   * not read on.
   */
  readonly expectedBytes?: number;
  /** Called once the response headers arrived (the network download starts). */
  readonly onResponse?: () => void;
  /** Bypass the HTTP cache (`cache: 'reload'`): the copy it holds turned out wrong (the file was replaced since). */
  readonly reload?: boolean;
}

/**
 * FETCH_FAILED (status 0) for a fetch that got no response. From another origin than this page's (or worker's), a
 * response without `Access-Control-Allow-Origin` fails the same way as no network: the message names both, and
 * `details.crossOrigin` is true.
 */
export function networkError(url: string, e: unknown): SelfxitError {
  const message = (e as Error | undefined)?.message ?? String(e);
  const here = (globalThis as { location?: { href: string } }).location?.href;
  let origin: string | undefined;
  let crossOrigin = false;
  try {
    origin = here === undefined ? undefined : new URL(here).origin;
    crossOrigin = origin !== undefined && origin !== 'null' && new URL(url, here).origin !== origin;
  } catch {
    // not a URL: nothing to tell
  }
  const why = crossOrigin
    ? `network error or offline, or the server sends no Access-Control-Allow-Origin for ${origin}: ` +
      'a file on another origin is read only with CORS'
    : 'network error or offline';
  return new SelfxitError(
    'FETCH_FAILED',
    `Cannot fetch ${url}: ${message} (${why})`,
    { url, status: 0, ...(crossOrigin ? { crossOrigin: true } : {}) },
    { cause: e },
  );
}

async function request(url: string, cache?: RequestCache): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, cache ? { cache } : {});
  } catch (e) {
    throw networkError(url, e);
  }
  if (!res.ok) {
    throw new SelfxitError('FETCH_FAILED', `Cannot fetch ${url}: HTTP ${res.status} ${res.statusText}`.trim(), {
      url,
      status: res.status,
    });
  }
  return res;
}

/** How many times a download whose body broke off is taken up again before it fails (FETCH_FAILED). */
export const MAX_RESUMES = 3;

/** The wait before resume `n` (1-based): 200, 400, 800 ms. */
const resumeDelayMs = (n: number): number => 100 * 2 ** n;

/**
 * Whether a range of `res`'s body is a range of the file: its Content-Length is the manifest's size, so the body is the
 * file as it is (not compressed in transit).
 */
function rangesOf(res: Response, expected: number | undefined): boolean {
  const header = Number(res.headers.get('content-length'));
  return expected !== undefined && Number.isFinite(header) && header === expected;
}

/** Whether `res` is the 206 answer to `Range: bytes=<from>-`: its Content-Range (readable) starts at `from`. */
function continuesAt(res: Response, from: number): boolean {
  if (res.status !== 206 || !res.body) return false;
  const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
  return m !== null && Number(m[1]) === from;
}

/**
 * The validator to send back as `If-Range`: a strong ETag (a weak one must not be), else Last-Modified; none for a
 * file of another origin, where `If-Range` would need a CORS preflight the server may refuse (the caller's sha256
 * check catches a file replaced between the parts: it is then fetched whole).
 */
function ifRangeOf(url: string, headers: Headers): string | undefined {
  const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
  if (origin !== undefined && origin !== 'null' && new URL(url, origin).origin !== origin) return undefined;
  const etag = headers.get('etag');
  if (etag && !etag.startsWith('W/')) return etag;
  return headers.get('last-modified') ?? undefined;
}

/**
 * Fetches `url` as bytes. A body that breaks off (the connection dropped) is taken up again, up to
 * {@link MAX_RESUMES} times in all (a resume request that fails or is answered with something unusable counts as
 * one): from where it stopped with a `Range` request when the body is the file as the manifest sizes it
 * (Content-Length = `expectedBytes`, so not compressed in transit; `If-Range` with a strong ETag or Last-Modified on
 * the same origin, so a file replaced meanwhile comes whole), else, or after a resume that failed, from the start. A
 * server that ignores the range answers the whole file, read from the start. The caller checks the bytes' hash. While
 * bytes arrive, progress is reported per {@link PROGRESS_STEP_BYTES} received, also while a file is read again from
 * the start (then `loaded` stays at the furthest point reached: it never goes down). Throws FETCH_FAILED (details:
 * url, status — 0 when the last failure was the network: a body that broke off or a request with no answer, else the
 * HTTP status of the last answer that could not be used — and, for a body that broke off, `loaded` and `resumes`),
 * INTEGRITY_ERROR (details: url, expectedBytes, loaded, tooLong: true) when the body grows past `expectedBytes`.
 */
export async function fetchBytes(url: string, options: FetchOptions = {}): Promise<Uint8Array> {
  const cache: RequestCache | undefined = options.reload === true ? 'reload' : undefined;
  const res = await request(url, cache);
  options.onResponse?.();
  const header = Number(res.headers.get('content-length'));
  const announced = Number.isFinite(header) && header > 0 ? header : 0;
  const expected = options.expectedBytes !== undefined && options.expectedBytes > 0 ? options.expectedBytes : undefined;
  // The manifest's size is the decoded one; a Content-Length is the compressed size of a compressed response.
  const total = expected ?? announced;
  const progressUpTo = expected ?? (announced > 0 ? announced * MAX_DECODED_RATIO : Infinity);
  if (!res.body) {
    const buf = new Uint8Array(await res.arrayBuffer());
    options.onProgress?.(buf.length, total || buf.length);
    return buf;
  }
  let ranges = rangesOf(res, expected);
  let validator = ifRangeOf(url, res.headers);
  const limit = expected ?? Infinity;
  let chunks: Uint8Array[] = [];
  let loaded = 0;
  let reported = 0; // the furthest `loaded` reported
  let unreported = 0; // bytes received since the last report
  let resumes = 0;
  let status = res.status;
  let body: ReadableStream<Uint8Array> | null = res.body;
  let broken: unknown;
  let fromStart = false;
  for (;;) {
    if (body) {
      const reader = body.getReader();
      body = null;
      try {
        for (;;) {
          let next: ReadableStreamReadResult<Uint8Array>;
          try {
            next = await reader.read();
          } catch (e) {
            broken = e; // the connection went: a network failure, whatever status the headers had
            status = 0;
            break;
          }
          if (next.done) return joined(chunks, loaded, reported, total, options);
          chunks.push(next.value);
          loaded += next.value.length;
          unreported += next.value.length;
          if (loaded > limit)
            throw new SelfxitError(
              'INTEGRITY_ERROR',
              `${url} is longer than the ${limit} bytes the manifest says (${loaded} bytes read): not the file it lists`,
              { url, expectedBytes: limit, loaded, tooLong: true },
            );
          if (loaded <= progressUpTo && unreported >= PROGRESS_STEP_BYTES) {
            unreported = 0;
            reported = Math.max(reported, loaded);
            options.onProgress?.(reported, Math.max(total, reported));
          }
        }
      } catch (e) {
        reader.cancel().catch(() => {}); // too long, or the progress callback threw: read no more of it
        throw e;
      }
    }
    // Every byte arrived before the connection went (a reset after the last one): the hash decides.
    if (ranges && loaded === expected) return joined(chunks, loaded, reported, total, options);
    if (resumes >= MAX_RESUMES) {
      const why = broken instanceof Error ? broken.message : String(broken);
      throw new SelfxitError(
        'FETCH_FAILED',
        `Download of ${url} broke off after ${loaded} bytes${resumes > 0 ? ` (taken up again ${resumes} times)` : ''}: ${why}`,
        { url, status, loaded, resumes },
        { cause: broken },
      );
    }
    resumes++;
    await new Promise((r) => setTimeout(r, resumeDelayMs(resumes)));
    const from = ranges && !fromStart && loaded > 0 ? loaded : 0;
    const headers: Record<string, string> =
      from > 0 ? { range: `bytes=${from}-`, ...(validator ? { 'if-range': validator } : {}) } : {};
    try {
      const next = await fetch(url, { ...(cache ? { cache } : {}), headers });
      status = next.status;
      if (from > 0 && continuesAt(next, from)) {
        body = next.body;
        continue;
      }
      if (next.status === 200 && next.body) {
        body = next.body; // the whole file again (maybe a new version of it): read it from the start
        chunks = [];
        loaded = 0;
        ranges = rangesOf(next, expected);
        validator = ifRangeOf(url, next.headers);
        fromStart = false;
        continue;
      }
      next.body?.cancel().catch(() => {});
      broken = new Error(
        next.status === 206
          ? 'a part that does not start where asked (or an unreadable Content-Range)'
          : `HTTP ${next.status}`,
      );
    } catch (e) {
      status = 0;
      broken = e;
    }
    fromStart = true; // that resume failed: the next one asks for the whole file
  }
}

/** The chunks as one array, the end reported when it was not yet. */
function joined(
  chunks: readonly Uint8Array[],
  loaded: number,
  reported: number,
  total: number,
  options: FetchOptions,
): Uint8Array {
  if (reported < loaded) options.onProgress?.(loaded, Math.max(total, loaded));
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * Fetches `url` as text (`revalidate`: asking the server even when the HTTP cache holds a fresh copy). Throws FETCH_FAILED
 * like {@link fetchBytes}: status 0 also when the body broke off after the headers (`httpStatus` then has theirs).
 */
export async function fetchText(url: string, options: { readonly revalidate?: boolean } = {}): Promise<string> {
  const res = await request(url, options.revalidate === true ? 'no-cache' : undefined);
  try {
    return await res.text();
  } catch (e) {
    throw new SelfxitError(
      'FETCH_FAILED',
      `Reading ${url} failed: ${(e as Error).message}`,
      // The body broke off: the network failed (status 0), whatever the headers said, so a cached copy may stand in.
      { url, status: 0, httpStatus: res.status },
      { cause: e },
    );
  }
}

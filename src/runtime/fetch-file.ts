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

async function request(url: string, cache?: RequestCache): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, cache ? { cache } : {});
  } catch (e) {
    throw new SelfxitError(
      'FETCH_FAILED',
      `Cannot fetch ${url}: ${(e as Error).message} (network error or offline)`,
      { url, status: 0 },
      { cause: e },
    );
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

/** Whether `res` is the 206 answer to `Range: bytes=<from>-`: its Content-Range starts at `from`. */
function continuesAt(res: Response, from: number): boolean {
  if (res.status !== 206) return false;
  const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
  return m !== null && Number(m[1]) === from;
}

/**
 * Fetches `url` as bytes. A body that breaks off (the connection dropped) is taken up again, up to
 * {@link MAX_RESUMES} times: from where it stopped with a `Range` request when the body is the file as the manifest
 * sizes it (Content-Length = `expectedBytes`, so not compressed in transit; `If-Range` with its ETag or Last-Modified,
 * so a file replaced meanwhile comes whole), else from the start; a server that ignores the range answers the whole
 * file, which is read from the start. The caller checks the bytes' hash either way. Throws FETCH_FAILED (details: url,
 * status; status 0 = network error; `loaded` and `resumes` for a body that broke off more often than that),
 * INTEGRITY_ERROR (details: url, expectedBytes, loaded, tooLong: true) when the body grows past `expectedBytes`.
 */
export async function fetchBytes(url: string, options: FetchOptions = {}): Promise<Uint8Array> {
  const cache: RequestCache | undefined = options.reload === true ? 'reload' : undefined;
  let res = await request(url, cache);
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
  // A range of the body is a range of the file only when the body is the file as it is (not compressed in transit).
  const ranges = expected !== undefined && announced === expected;
  const validator = res.headers.get('etag') ?? res.headers.get('last-modified');
  const limit = expected ?? Infinity;
  let chunks: Uint8Array[] = [];
  let loaded = 0;
  let reported = 0;
  let resumes = 0;
  for (;;) {
    const reader = res.body!.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        loaded += value.length;
        if (loaded > limit) {
          reader.cancel().catch(() => {});
          throw new SelfxitError(
            'INTEGRITY_ERROR',
            `${url} is longer than the ${limit} bytes the manifest says (${loaded} bytes read): not the file it lists`,
            { url, expectedBytes: limit, loaded, tooLong: true },
          );
        }
        // `loaded` may start again from 0 (a resume answered whole): progress is reported only past the furthest.
        if (loaded <= progressUpTo && loaded - reported >= PROGRESS_STEP_BYTES) {
          reported = loaded;
          options.onProgress?.(loaded, Math.max(total, loaded));
        }
      }
      break;
    } catch (e) {
      if (e instanceof SelfxitError) throw e;
      const broke = new SelfxitError(
        'FETCH_FAILED',
        `Download of ${url} broke off after ${loaded} bytes${resumes > 0 ? ` (taken up again ${resumes} times)` : ''}: ` +
          (e as Error).message,
        { url, status: res.status, loaded, resumes },
        { cause: e },
      );
      if (resumes >= MAX_RESUMES) throw broke;
      resumes++;
      await new Promise((r) => setTimeout(r, resumeDelayMs(resumes)));
      const from = ranges && loaded > 0 ? loaded : 0;
      const headers: Record<string, string> =
        from > 0 ? { range: `bytes=${from}-`, ...(validator ? { 'if-range': validator } : {}) } : {};
      let next: Response;
      try {
        next = await fetch(url, { ...(cache ? { cache } : {}), headers });
      } catch {
        throw broke;
      }
      if (from > 0 && continuesAt(next, from) && next.body) {
        res = next;
        continue;
      }
      if (next.status !== 200 || !next.body) {
        next.body?.cancel().catch(() => {});
        throw broke;
      }
      res = next; // the whole file again: read it from the start
      chunks = [];
      loaded = 0;
    }
  }
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
 * like {@link fetchBytes}.
 */
export async function fetchText(url: string, options: { readonly revalidate?: boolean } = {}): Promise<string> {
  const res = await request(url, options.revalidate === true ? 'no-cache' : undefined);
  try {
    return await res.text();
  } catch (e) {
    throw new SelfxitError(
      'FETCH_FAILED',
      `Reading ${url} failed: ${(e as Error).message}`,
      { url, status: res.status },
      { cause: e },
    );
  }
}

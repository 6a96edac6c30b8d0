// Which file kept a module worker from starting. A worker whose script or a module it imports cannot be fetched fires
// a bare `error` event (no URL, no status), so the page asks the server itself: the worker script first, then the
// modules it imports statically (`import … from "./selfxit.shared-<hash>.js"`, as vite emits them). Only on the
// failure path, bounded in time; nothing is cached.

/**
 * A file the worker needs that the server would not give, and its answer (`HTTP 404`, `served as text/plain, not as
 * JavaScript`, or `an HTML page, served as text/html`: a fallback page, e.g. a single-page app's index.html answered
 * with 200 for a path the server lacks).
 */
export interface MissingFile {
  readonly url: string;
  readonly why: string;
  /** The Content-Type it was served with, where that is what is wrong (not JavaScript). */
  readonly contentType?: string;
}

/** Whether a Content-Type is one a browser runs a module script with (a JavaScript MIME type). */
export const isJavaScriptType = (contentType: string): boolean =>
  /^\s*(?:(?:text|application)\/(?:x-)?(?:java|ecma)script|text\/javascript1\.[0-5]|text\/(?:jscript|livescript))\s*(?:;|$)/i.test(
    contentType,
  );

/** Static import specifiers of a module's source: `import "x"`, `import … from "x"`, `export … from "x"`. */
export function staticImports(source: string): string[] {
  const found: string[] = [];
  for (const m of source.matchAll(/(?:^|[;\s}\])])(?:import|from)\s*(["'])([^"'\n]+)\1/g)) {
    const spec = m[2]!;
    if (/^(\.{0,2}\/|https?:)/.test(spec) && !found.includes(spec)) found.push(spec);
  }
  return found;
}

const missing = (url: string, r: { why?: string; contentType?: string }): MissingFile => ({
  url,
  why: r.why!,
  ...(r.contentType !== undefined ? { contentType: r.contentType } : {}),
});

/**
 * The first file of the worker at `workerUrl` that cannot be fetched: the script itself, else the first of its static
 * imports (one level: the chunks vite splits a worker into import nothing the worker does not), by the server's HTTP
 * status, or as not JavaScript (a Content-Type that is not a JavaScript one, or an HTML body: the fallback page a
 * single-page app's server answers with 200 for a file it lacks). `'served'` when every one was served as JavaScript
 * (the browser refused the worker itself: a Content-Security-Policy's worker-src, or its script failed to run).
 * `'timeout'` when the server had not answered in `ms` (a slow or hung server: nothing told, and no missing CORS
 * either). Undefined when one got no answer at all (offline, a server on another origin without CORS, a
 * Content-Security-Policy connect-src that forbids the page's fetch, `signal` aborted), or without `fetch`: then
 * nothing can be told. Only the script's body is read; an import's is cancelled once its headers are known.
 */
export async function missingWorkerFile(
  workerUrl: string,
  ms = 3000,
  signal?: AbortSignal,
): Promise<MissingFile | 'served' | 'timeout' | undefined> {
  if (typeof fetch !== 'function' || signal?.aborted) return undefined;
  const ctl = new AbortController();
  const stop = (): void => ctl.abort();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    stop();
  }, ms);
  signal?.addEventListener('abort', stop, { once: true });
  const get = async (url: string, read: boolean): Promise<{ text?: string; why?: string; contentType?: string }> => {
    try {
      const r = await fetch(url, { signal: ctl.signal, cache: 'no-store' });
      if (!r.ok) {
        r.body?.cancel().catch(() => {});
        return { why: `HTTP ${r.status}` };
      }
      const type = r.headers.get('content-type') ?? '';
      const text = read ? await r.text() : (r.body?.cancel().catch(() => {}), '');
      // A browser runs a module script served as JavaScript only: an HTML page (a server's fallback for a path it
      // lacks, whatever its Content-Type), text/plain or no type at all is as good as missing.
      const as = type ? `served as ${type.split(';')[0]!.trim()}` : 'served with no Content-Type';
      if (/^\s*</.test(text)) return { why: `an HTML page, ${as}`, contentType: type || undefined };
      if (!isJavaScriptType(type)) return { why: `${as}, not as JavaScript`, contentType: type || undefined };
      return { text };
    } catch {
      // No answer (offline, a Content-Security-Policy connect-src that forbids it, the deadline): nothing told.
      return {};
    }
  };
  const tell = async (): Promise<MissingFile | 'served' | undefined> => {
    const script = await get(workerUrl, true);
    if (script.why !== undefined) return missing(workerUrl, script);
    if (script.text === undefined) return undefined;
    for (const spec of staticImports(script.text)) {
      let url: string;
      try {
        url = new URL(spec, workerUrl).href;
      } catch {
        continue;
      }
      const r = await get(url, false);
      if (r.why !== undefined) return missing(url, r);
      if (r.text === undefined) return undefined;
    }
    return 'served';
  };
  try {
    const told = await tell();
    return told === undefined && timedOut && !signal?.aborted ? 'timeout' : told;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', stop);
  }
}

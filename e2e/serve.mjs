// Static server for the browser tests: dist/, e2e/ (pages, test bundles), public/models and ../shared on 127.0.0.1,
// cross-origin isolated (COOP/COEP), with a request log the tests read to prove what was (not) fetched, and
// `/hang/<file name>/<path>`: <path> as served, except that a file named <file name> is never answered;
// `/http-cache/<all|files>/<path>`: <path> with headers that let the HTTP cache keep it (httpCacheControl);
// `/drop/<file name>/<path>`: <path> as served, except that the first whole answer of a file named <file name> (since
// the last log reset) breaks off half way (the connection dropped); any file there answers `Range: bytes=N-` with 206;
// `/cors/<path>`: <path> as served, readable from any origin (CORS, CORP cross-origin: a CDN, under another host name);
// `/csp/<policy name>/<path>`: <path> as served, with the Content-Security-Policy named in CSP_POLICIES.
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ISOLATION_HEADERS as ISOLATION } from '../scripts/web-config.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Port from SELFXIT_E2E_PORT (playwright.config.ts sets it to a free port when the caller did not). */
export const E2E_PORT = Number(process.env.SELFXIT_E2E_PORT ?? 47613);

const MOUNTS = [
  ['/dist/', path.join(root, 'dist')],
  ['/e2e/', path.join(root, 'e2e')],
  ['/models/', path.join(root, 'public/models')],
  ['/shared/', path.resolve(root, '../shared')],
];

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/** Content-Security-Policies of `/csp/<name>/` (integration.spec.ts): DEPLOY.md's, and each with one part missing. */
const CSP_POLICIES = {
  ok: "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self'",
  'no-wasm': "default-src 'self'; script-src 'self'; worker-src 'self' blob:; connect-src 'self'",
  'no-worker': "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'none'; connect-src 'self'",
};

/** Paths requested since the last reset (bundle files only matter to the tests, but everything is logged). */
let log = [];
/** `/drop/` paths whose first whole answer broke off since the last reset. */
const dropped = new Set();

function send(res, status, body, type = 'text/plain; charset=utf-8') {
  res.writeHead(status, { ...ISOLATION, 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const pathname = decodeURIComponent(url.pathname);
  if (pathname === '/__health') return send(res, 200, 'ok');
  if (pathname === '/__log') return send(res, 200, JSON.stringify(log), TYPES['.json']);
  if (pathname === '/__log/reset') {
    log = [];
    dropped.clear();
    return send(res, 200, 'reset');
  }
  const drop = /^\/drop\/([^/]+)(\/.*)$/.exec(pathname);
  log.push(drop && req.headers.range ? `${pathname} ${req.headers.range}` : pathname);
  if (drop) return serveFile(req, res, drop[2], undefined, path.posix.basename(drop[2]) === drop[1]);
  const hang = /^\/hang\/([^/]+)(\/.*)$/.exec(pathname);
  if (hang && path.posix.basename(hang[2]) === hang[1]) return; // never answered (the tests' stalled request)
  if (hang) return serveFile(req, res, hang[2]);
  const cors = /^\/cors(\/.*)$/.exec(pathname);
  if (cors) {
    const open = { 'Access-Control-Allow-Origin': '*', 'Cross-Origin-Resource-Policy': 'cross-origin' };
    return serveFile(req, res, cors[1], undefined, undefined, open);
  }
  const csp = /^\/csp\/([^/]+)(\/.*)$/.exec(pathname);
  if (csp && CSP_POLICIES[csp[1]])
    return serveFile(req, res, csp[2], undefined, undefined, { 'Content-Security-Policy': CSP_POLICIES[csp[1]] });
  const cacheable = /^\/http-cache\/(all|files)(\/.*)$/.exec(pathname);
  if (cacheable) return serveFile(req, res, cacheable[2], cacheable[1]);
  return serveFile(req, res, pathname);
});

/**
 * Cache-Control of a file served under `/http-cache/<mode>/<path>` (a deploy that lets the browser's HTTP cache keep
 * bundle files): `all` every file for an hour, `files` every file but `manifest.json` (no-cache: always revalidated).
 */
function httpCacheControl(mode, file) {
  return mode === 'files' && path.basename(file) === 'manifest.json' ? 'no-cache' : 'public, max-age=3600';
}

/**
 * `pathname` with `Range: bytes=N-` answered by 206 (and ETag), and `breakOnce`: the first whole answer of it breaks off
 * after half its bytes (the e2e tests of a download taken up again).
 */
async function serveRanges(req, res, file, info, pathname, breakOnce) {
  const etag = `"${info.size}-${Math.round(info.mtimeMs)}"`;
  const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
  const head = { ...ISOLATION, 'Content-Type': type, 'Cache-Control': 'no-store', ETag: etag };
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const from = m && (req.headers['if-range'] ?? etag) === etag ? Number(m[1]) : 0;
  if (from > 0 && from < info.size) {
    res.writeHead(206, {
      ...head,
      'Content-Length': String(info.size - from),
      'Content-Range': `bytes ${from}-${info.size - 1}/${info.size}`,
    });
    return createReadStream(file, { start: from }).pipe(res);
  }
  res.writeHead(200, { ...head, 'Content-Length': String(info.size), 'Accept-Ranges': 'bytes' });
  if (!breakOnce || dropped.has(pathname)) return createReadStream(file).pipe(res);
  dropped.add(pathname);
  const bytes = await readFile(file);
  res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => setTimeout(() => res.socket?.destroy(), 50));
}

async function serveFile(req, res, pathname, httpCacheMode, breakOnce, extraHeaders = {}) {
  const mount = MOUNTS.find(([prefix]) => pathname.startsWith(prefix));
  if (!mount) return send(res, 404, 'not found');
  const [prefix, dir] = mount;
  const file = path.resolve(dir, '.' + pathname.slice(prefix.length - 1));
  if (file !== dir && !file.startsWith(dir + path.sep)) return send(res, 404, 'not found');
  const info = await stat(file).catch(() => undefined);
  if (!info?.isFile()) return send(res, 404, 'not found');
  if (breakOnce !== undefined) return serveRanges(req, res, file, info, pathname, breakOnce);
  // The package files may sit in the HTTP cache (as on any site, so an offline page can still start its
  // worker); bundle files never do, so a bundle file that does not reach this server came from selfxit's cache.
  const cacheable = prefix === '/dist/' && !/\.json$/.test(file);
  res.writeHead(200, {
    ...ISOLATION,
    ...extraHeaders,
    'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'Content-Length': String(info.size),
    'Cache-Control': httpCacheMode
      ? httpCacheControl(httpCacheMode, file)
      : cacheable
        ? 'public, max-age=3600'
        : 'no-store',
  });
  if (req.method === 'HEAD') return res.end();
  createReadStream(file).pipe(res);
}

server.on('error', (e) => {
  const hint =
    e.code === 'EADDRINUSE' ? ' (choose another port with SELFXIT_E2E_PORT, or leave it unset for a free one)' : '';
  console.error(`e2e server: ${e.message}${hint}`);
  process.exit(1);
});
server.listen(E2E_PORT, '127.0.0.1', () => console.log(`selfxit e2e server on http://127.0.0.1:${E2E_PORT}/`));

// Tiny static file server for the demo and the benchmark page: serves folders on 127.0.0.1 with the
// COOP/COEP headers that make the page cross-origin isolated (SharedArrayBuffer, so WASM threads work).
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { ISOLATION_HEADERS as ISOLATION } from './web-config.mjs';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.u8': 'application/octet-stream',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.map': 'application/json; charset=utf-8',
};

/**
 * Serves `mounts` (URL prefix → folder, longest prefix wins) on `host:port`. Resolves once listening
 * with `{ url, close() }`. Fails (EADDRINUSE) rather than picking another port. `isolation: false` leaves out the
 * COOP/COEP headers (a page that is not cross-origin isolated); `cors: true` lets pages of any origin read the files
 * (`Access-Control-Allow-Origin: *`: a CDN).
 * @param {{ mounts: Record<string, string>, port: number, host?: string, isolation?: boolean, cors?: boolean }} options
 */
export async function serveStatic({ mounts, port, host = '127.0.0.1', isolation = true, cors = false }) {
  const ISOLATION_HEADERS = {
    ...(isolation ? ISOLATION : {}),
    ...(cors ? { 'Access-Control-Allow-Origin': '*' } : {}),
  };
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      let pathname = decodeURIComponent(url.pathname);
      if (pathname.endsWith('/')) pathname += 'index.html';
      const prefix = prefixes.find((p) => pathname.startsWith(p));
      if (prefix === undefined) return notFound(res);
      const root = path.resolve(mounts[prefix]);
      const file = path.resolve(root, '.' + pathname.slice(prefix.length - (prefix.endsWith('/') ? 1 : 0)));
      if (file !== root && !file.startsWith(root + path.sep)) return notFound(res);
      const info = await stat(file).catch(() => undefined);
      if (!info?.isFile()) return notFound(res);
      res.writeHead(200, {
        ...ISOLATION_HEADERS,
        'Content-Type': TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
        'Content-Length': info.size,
        'Cache-Control': 'no-cache',
      });
      if (req.method === 'HEAD') return res.end();
      createReadStream(file).pipe(res);
    } catch (e) {
      res.writeHead(500, ISOLATION_HEADERS).end(String(e));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(undefined));
  });
  const address = server.address();
  const actualPort = typeof address === 'object' && address ? address.port : port;
  return {
    url: `http://${host}:${actualPort}/`,
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}

function notFound(res) {
  res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
}

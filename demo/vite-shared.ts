// Vite pieces shared by the demo and the bench page (both import the SDK from source): onnxruntime-web resolved
// to its "extern wasm" builds as the library build does (see ../vite.config.ts), and a plugin that serves/copies
// ORT's .mjs/.wasm files at <base>/ort/ — pass `wasmPaths: new URL('ort/', document.baseURI)` to load() and the baseline.
import type { Plugin, UserConfig } from 'vite';
import { cpSync, createReadStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import {
  ISOLATION_HEADERS,
  ORT_DIST as ortDist,
  ORT_FILES,
  isOrtFile,
  ortContentType,
} from '../scripts/web-config.mjs';

/** Serves ORT_FILES at /ort/ in dev and copies them to <outDir>/ort/ in builds. */
export function ortFiles(): Plugin {
  let outDir = '';
  return {
    name: 'selfxit-demo-ort-files',
    configResolved(config) {
      outDir = config.build.outDir;
    },
    configureServer(server) {
      server.middlewares.use('/ort/', (req, res, next) => {
        const name = (req.url ?? '').split('?')[0]!.replace(/^\//, '');
        if (!isOrtFile(name)) return next();
        res.setHeader('Content-Type', ortContentType(name));
        createReadStream(path.join(ortDist, name)).pipe(res);
      });
    },
    writeBundle() {
      mkdirSync(path.join(outDir, 'ort'), { recursive: true });
      for (const f of ORT_FILES) cpSync(path.join(ortDist, f), path.join(outDir, 'ort', f));
    },
  };
}

/** Config shared by both pages (root, outDir and page-specific plugins are added by each config). */
export function sharedConfig(): UserConfig {
  return {
    base: './',
    resolve: {
      // Same as the library build: the extern-wasm ORT builds load their glue and .wasm from `wasmPaths`.
      alias: [
        { find: /^onnxruntime-web$/, replacement: path.join(ortDist, 'ort.min.mjs') },
        { find: /^onnxruntime-web\/wasm$/, replacement: path.join(ortDist, 'ort.wasm.min.mjs') },
      ],
    },
    worker: { format: 'es' },
    optimizeDeps: { exclude: ['onnxruntime-web'] },
    server: { host: '127.0.0.1', headers: ISOLATION_HEADERS },
    preview: { host: '127.0.0.1', headers: ISOLATION_HEADERS },
  };
}

// Vite config of the demo page (root demo/, output demo-dist/). The SDK is imported from source;
// the shipped model's files come from public/, onnxruntime-web's files are copied to ort/, and the bundle prepared
// by scripts/demo.mjs (demo/.bundle/) is served and copied at bundle/.
import { defineConfig, mergeConfig, type Plugin } from 'vite';
import { cpSync, createReadStream, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ortFiles, sharedConfig } from './vite-shared.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const bundleDir = path.join(here, '.bundle');

/** Serves demo/.bundle at /bundle/ in dev and copies it into the build. */
function preparedBundle(): Plugin {
  let outDir = '';
  return {
    name: 'selfxit-demo-bundle',
    configResolved(config) {
      outDir = config.build.outDir;
    },
    configureServer(server) {
      server.middlewares.use('/bundle/', (req, res, next) => {
        const file = path.join(bundleDir, decodeURIComponent((req.url ?? '').split('?')[0] ?? ''));
        if (!file.startsWith(bundleDir) || !existsSync(file) || !statSync(file).isFile()) return next();
        res.setHeader('Content-Type', file.endsWith('.json') ? 'application/json' : 'application/octet-stream');
        createReadStream(file).pipe(res);
      });
    },
    writeBundle() {
      if (existsSync(bundleDir))
        cpSync(bundleDir, path.join(outDir, 'bundle'), {
          recursive: true,
          filter: (src) => !src.endsWith('.stamp.json'),
        });
    },
  };
}

export default defineConfig(
  mergeConfig(sharedConfig(), {
    root: here,
    publicDir: path.join(here, '../public'),
    plugins: [ortFiles(), preparedBundle()],
    build: {
      outDir: path.join(here, '../demo-dist'),
      emptyOutDir: true,
      target: 'es2022',
      chunkSizeWarningLimit: 2000,
      reportCompressedSize: false,
      rollupOptions: {
        input: { main: path.join(here, 'index.html'), 'byom-sw': path.join(here, 'byom-sw.ts') },
        output: {
          entryFileNames: (chunk: { name: string }) =>
            chunk.name === 'byom-sw' ? 'byom-sw.js' : 'assets/[name]-[hash].js',
        },
      },
    },
  }),
);

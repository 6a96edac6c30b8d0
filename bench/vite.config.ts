// Vite config of the benchmark page (root bench/, output bench/.dist/). The SDK is imported from source;
// scripts/bench.mjs serves bundles, models and images next to the built page.
import { defineConfig, mergeConfig } from 'vite';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ortFiles, sharedConfig } from '../demo/vite-shared.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export default defineConfig(
  mergeConfig(sharedConfig(), {
    root: here,
    publicDir: false,
    plugins: [ortFiles()],
    build: {
      outDir: path.join(here, '.dist'),
      emptyOutDir: true,
      target: 'es2022',
      chunkSizeWarningLimit: 2000,
      reportCompressedSize: false,
    },
  }),
);

// Vite config for every build target (`--mode esm|iife|core|cli`, driven by scripts/build.mjs) and the dev server.
// The runtime's worker is a separate ES chunk; onnxruntime-web's .mjs/.wasm files live in dist/ort/ (copied by
// scripts/build.mjs, served from node_modules by the dev server; the list and the COOP/COEP headers are in
// scripts/web-config.mjs) and are loaded from there at run time.
import { createReadStream, existsSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin, type UserConfig } from 'vite';
import { ISOLATION_HEADERS, ORT_DIST as ortDist, isOrtFile, ortContentType } from './scripts/web-config.mjs';

const root = path.dirname(fileURLToPath(import.meta.url));

/**
 * Import the "extern wasm" ORT builds (ort.min.mjs, ort.wasm.min.mjs): they load their .mjs glue and .wasm from
 * `env.wasm.wasmPaths`, so threaded sessions spawn their pthread workers from dist/ort/*.mjs, not from our chunks.
 */
export const ortAliases = [
  { find: /^onnxruntime-web$/, replacement: path.join(ortDist, 'ort.min.mjs') },
  { find: /^onnxruntime-web\/wasm$/, replacement: path.join(ortDist, 'ort.wasm.min.mjs') },
];

/** Dev server: answer any `…/ort/<ort file>` from node_modules, as dist/ort/ does after a build. */
function serveOrtFiles(): Plugin {
  return {
    name: 'selfxit-serve-ort',
    apply: 'serve',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const m = /\/ort\/([^/?#]+)(?:[?#].*)?$/.exec(req.url ?? '');
        const name = m?.[1];
        if (!name || !isOrtFile(name)) return next();
        const file = path.join(ortDist, name);
        if (!existsSync(file)) return next();
        res.setHeader('Content-Type', ortContentType(name));
        res.setHeader('Content-Length', String(statSync(file).size));
        for (const [k, v] of Object.entries(ISOLATION_HEADERS)) res.setHeader(k, v);
        createReadStream(file).pipe(res);
      });
    },
  };
}

/** The worker module the ESM build emitted: the script-tag build reuses it. */
function builtWorkerFile(): string {
  if (!existsSync(path.join(root, 'dist/selfxit.worker.js'))) {
    throw new Error('the iife build needs dist/selfxit.worker.js from the esm build first: run scripts/build.mjs');
  }
  return 'selfxit.worker.js';
}

/**
 * The script-tag build has no `import.meta.url`. In src/page/ it becomes the URL of the script itself,
 * captured while the script first runs (document.currentScript is null later, when load() needs it), and
 * the worker is the ESM build's chunk, resolved against that URL (so both builds share one worker and ORT).
 */
function iifeScriptUrl(): Plugin {
  const pageDir = path.join(root, 'src/page') + path.sep;
  return {
    name: 'selfxit-iife-script-url',
    enforce: 'pre',
    apply: 'build',
    transform(code, id) {
      if (!id.startsWith(pageDir) || !code.includes('import.meta.url')) return null;
      const worker = JSON.stringify(builtWorkerFile());
      const out = code
        .replace(
          /new URL\(\s*'\.\.\/runtime\/worker\.ts'\s*,\s*import\.meta\.url\s*\)/g,
          `new URL(${worker}, __selfxitScriptUrl)`,
        )
        .replace(/\bimport\.meta\.url\b/g, '__selfxitScriptUrl');
      return { code: out, map: null };
    },
  };
}

/** Runs first inside the IIFE wrapper: the script's own URL while document.currentScript is still set. */
const IIFE_INTRO =
  'var __selfxitScriptUrl = (typeof document !== "undefined" && document.currentScript && document.currentScript.src) || ' +
  '(typeof location !== "undefined" ? location.href : "");';

const nodeExternals = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];
const packageExternals = [
  /^onnxruntime-(node|web|common)(\/.*)?$/,
  /^onnx-proto$/,
  /^protobufjs(\/.*)?$/,
  /^comlink$/,
  /^idb-keyval$/,
  /^pngjs$/,
  /^jpeg-js$/,
];

function libConfig(mode: string): UserConfig {
  const common: UserConfig = {
    root,
    base: './', // emitted URLs (the worker chunk) resolve against import.meta.url, wherever dist/ is served
    publicDir: false,
    resolve: { alias: ortAliases },
    // The worker gets a stable name (dist/selfxit.worker.js) so that consumers and the IIFE build can point at it.
    worker: {
      format: 'es',
      rollupOptions: { output: { entryFileNames: 'selfxit.worker.js', chunkFileNames: 'assets/[name]-[hash].js' } },
    },
    build: {
      outDir: 'dist',
      emptyOutDir: false,
      sourcemap: true,
      target: 'es2022',
      minify: true,
      reportCompressedSize: false,
    },
  };
  switch (mode) {
    case 'esm':
      return {
        ...common,
        build: {
          ...common.build,
          lib: { entry: path.join(root, 'src/index.ts'), formats: ['es'], fileName: () => 'selfxit.js' },
          rollupOptions: { output: { assetFileNames: 'assets/[name]-[hash][extname]' } },
        },
      };
    case 'iife':
      return {
        ...common,
        plugins: [iifeScriptUrl()],
        build: {
          ...common.build,
          lib: {
            entry: path.join(root, 'src/index.ts'),
            formats: ['iife'],
            name: 'selfxit',
            fileName: () => 'selfxit.iife.js',
          },
          rollupOptions: { output: { intro: IIFE_INTRO } },
        },
      };
    case 'core':
      return {
        ...common,
        build: {
          ...common.build,
          lib: { entry: path.join(root, 'src/core.ts'), formats: ['es'], fileName: () => 'core.js' },
          rollupOptions: { external: packageExternals },
        },
      };
    case 'cli':
      return {
        root,
        publicDir: false,
        build: {
          outDir: 'dist',
          emptyOutDir: false,
          sourcemap: true,
          target: 'node20',
          minify: false,
          ssr: path.join(root, 'src/cli/main.ts'),
          rollupOptions: {
            external: [...nodeExternals, ...packageExternals],
            output: { entryFileNames: 'cli.js', format: 'es' },
          },
        },
      };
    default:
      throw new Error(`unknown build mode ${mode}`);
  }
}

export default defineConfig(({ command, mode }) => {
  if (command === 'build') return libConfig(mode);
  return {
    root,
    publicDir: 'public',
    resolve: { alias: ortAliases },
    plugins: [serveOrtFiles()],
    worker: { format: 'es' },
    optimizeDeps: { exclude: ['onnxruntime-web'] },
    server: { headers: ISOLATION_HEADERS },
    preview: { headers: ISOLATION_HEADERS },
  };
});

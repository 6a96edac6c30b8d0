// Vite config for every build target (`--mode esm|iife|core|cli`, driven by scripts/build.mjs) and the dev server.
// The runtime's worker is a separate ES build (a tiny entry, its shared chunk, the learning chunk); onnxruntime-web's
// .mjs/.wasm files live in dist/ort/ (copied by scripts/build.mjs, served from node_modules by the dev server; the list
// and the COOP/COEP headers are in scripts/web-config.mjs) and are loaded from there at run time.
import { createReadStream, existsSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin, type UserConfig } from 'vite';
import {
  ISOLATION_HEADERS,
  ORT_BUILDS,
  ORT_DIST as ortDist,
  isOrtFile,
  ortContentType,
} from './scripts/web-config.mjs';

const root = path.dirname(fileURLToPath(import.meta.url));
/** The worker's entry, and the name of the chunk that holds the code it shares with the learning chunk. */
const workerEntry = path.join(root, 'src/runtime/worker.ts');
const WORKER_SHARED = 'worker-shared';

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

/**
 * The published ESM must carry the URL patterns that bundlers follow (Vite, webpack 5): literally
 * `new Worker(new URL('./selfxit.worker.js', import.meta.url), { type: 'module', … })` in selfxit.js, and
 * `new URL('./ort/<file>', import.meta.url)` in the worker. Vite's own lib build rewrites the first into a nested
 * `new URL(new URL(…).href, '' + import.meta.url)` (which a consumer's Vite then copies as a plain asset instead of
 * building the worker), and the second carry `@vite-ignore` (else the lib build inlines 40 MB as base64). Both are put
 * back here, keeping line breaks so that the source maps stay aligned; the build fails when a pattern is missing.
 */
function publishedUrlPatterns(): Plugin {
  const nestedWorkerUrl =
    /new URL\(\s*(?:\/\*\s*@vite-ignore\s*\*\/\s*)?new URL\(\s*["'`](?:\.\/)?selfxit\.worker\.js["'`]\s*,\s*import\.meta\.url\s*\)\.href\s*,\s*(?:(?:""|''|``)\s*\+\s*)?import\.meta\.url\s*\)/g;
  const ignoredOrtUrl = /new URL\(\s*\/\*\s*@vite-ignore\s*\*\/\s*(["'`]\.\/ort\/)/g;
  // The line breaks of the replaced text go after the worker pattern, before each ORT pattern (outside the string).
  const keepLines = (text: string, replacement: string): string =>
    replacement + '\n'.repeat(text.split('\n').length - 1);
  return {
    name: 'selfxit-published-url-patterns',
    apply: 'build',
    enforce: 'post',
    generateBundle(_options, bundle) {
      for (const chunk of Object.values(bundle)) {
        if (chunk.type !== 'chunk') continue;
        chunk.code = chunk.code
          .replace(nestedWorkerUrl, (m) => keepLines(m, 'new URL("./selfxit.worker.js", import.meta.url)'))
          .replace(ignoredOrtUrl, (m, quote: string) => '\n'.repeat(m.split('\n').length - 1) + `new URL(${quote}`);
      }
      const main = bundle['selfxit.js'];
      const worker = bundle['selfxit.worker.js'];
      const workerPattern = /new Worker\(new URL\("\.\/selfxit\.worker\.js", import\.meta\.url\)/;
      if (main?.type === 'chunk' && !workerPattern.test(main.code))
        this.error(
          'dist/selfxit.js lacks new Worker(new URL("./selfxit.worker.js", import.meta.url)): see vite.config.ts',
        );
      // the worker's bundle: its entry and the chunks beside it (the ORT URLs are in its shared chunk)
      const ortUrls = Object.values(bundle).reduce(
        (n, c) => n + (c.type === 'chunk' ? (c.code.match(/new URL\(\s*["'`]\.\/ort\//g) ?? []).length : 0),
        0,
      );
      if (worker?.type === 'chunk' && ortUrls !== 4)
        this.error(
          'dist/selfxit.worker.js and its chunks lack their 4 new URL("./ort/…", import.meta.url): see vite.config.ts',
        );
    },
  };
}

/**
 * Published worker: onnxruntime-web stays out of our chunks and is imported from `./ort/ort(.wasm).min.mjs`, the
 * files as shipped (scripts/build.mjs copies them), so that it runs unbundled beside dist/ and a consumer's
 * bundler sees onnxruntime-web's own bundler hints.
 */
function ortFromDistOrt(): Plugin {
  return {
    name: 'selfxit-ort-from-dist-ort',
    enforce: 'pre',
    apply: 'build',
    resolveId(source) {
      const name = ortAliases.find((a) => a.find.test(source))?.replacement ?? source;
      const base = path.basename(name);
      if (!name.startsWith(ortDist) || !ORT_BUILDS.includes(base)) return null;
      return { id: `./ort/${base}`, external: true }; // relative to dist/selfxit.worker.js
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
    // The worker's entry keeps a stable name (dist/selfxit.worker.js) so that consumers and the IIFE build can point at
    // it. It is a tiny module that imports the worker's code from a chunk of its own (dist/selfxit.shared-<hash>.js),
    // which imports the learning code (src/runtime/learn-chunk.ts → dist/selfxit.learn-<hash>.js) on first use, and the
    // learning chunk imports the shared chunk back, never the entry: a dev server that serves the entry under another
    // URL (Vite: `?worker_file&type=module`) than it rewrites the imports to would otherwise start a second copy. The
    // chunks' content hashes make a worker and a learning chunk of two builds unable to meet (a 404 at worst).
    worker: {
      format: 'es',
      rollupOptions: {
        output: {
          entryFileNames: 'selfxit.worker.js',
          chunkFileNames: (chunk) =>
            chunk.name === 'learn-chunk'
              ? 'selfxit.learn-[hash].js'
              : chunk.name === WORKER_SHARED
                ? 'selfxit.shared-[hash].js'
                : 'assets/[name]-[hash].js',
          // everything the entry imports statically: the ORT URLs in it resolve beside the entry, in dist/
          codeSplitting: { groups: [{ name: WORKER_SHARED, tags: ['$initial'], test: (id) => id !== workerEntry }] },
        },
      },
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
        plugins: [publishedUrlPatterns()],
        worker: { ...common.worker, plugins: () => [ortFromDistOrt(), publishedUrlPatterns()] },
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
          ssr: true,
          rollupOptions: {
            // the CLI, and the head-trainer pool's worker thread (src/cli/trainer-pool.ts loads it beside cli.js)
            input: {
              cli: path.join(root, 'src/cli/main.ts'),
              'head-worker': path.join(root, 'src/cli/head-worker.ts'),
            },
            external: [...nodeExternals, ...packageExternals],
            output: { entryFileNames: '[name].js', chunkFileNames: 'cli-[name]-[hash].js', format: 'es' },
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

// What every server and build of the web side shares (vite.config.ts, scripts/build.mjs, scripts/static-server.mjs,
// e2e/serve.mjs, demo/vite-shared.ts): the COOP/COEP headers and the onnxruntime-web files the runtime loads.
// Plain JS so that the Node scripts run without a build; types in web-config.d.mts.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** COOP/COEP (and CORP): cross-origin isolation, so that WASM can use threads (SharedArrayBuffer). */
export const ISOLATION_HEADERS = Object.freeze({
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
});

/** onnxruntime-web files the runtime loads from `wasmPaths`: the WASM-only build and the JSEP (WebGPU + WASM) build. */
export const ORT_FILES = Object.freeze([
  'ort-wasm-simd-threaded.mjs',
  'ort-wasm-simd-threaded.wasm',
  'ort-wasm-simd-threaded.jsep.mjs',
  'ort-wasm-simd-threaded.jsep.wasm',
]);

/**
 * onnxruntime-web's "extern wasm" JS builds (JSEP and WASM-only), imported by the published worker from `./ort/`
 * as they ship: re-minifying them breaks the bundler hints inside (`webpackIgnore`, URL constructors kept opaque).
 */
export const ORT_BUILDS = Object.freeze(['ort.min.mjs', 'ort.wasm.min.mjs']);

/** The folder of onnxruntime-web's built files (ORT_FILES and the "extern wasm" ORT builds) in node_modules. */
export const ORT_DIST = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../node_modules/onnxruntime-web/dist',
);

/** True for a name in ORT_FILES. */
export function isOrtFile(name) {
  return ORT_FILES.includes(name);
}

/** The Content-Type of an ORT file: `application/wasm` for .wasm, else `text/javascript`. */
export function ortContentType(name) {
  return name.endsWith('.wasm') ? 'application/wasm' : 'text/javascript';
}

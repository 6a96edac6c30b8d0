// Types of scripts/web-config.mjs (plain JS so that the Node scripts run without a build).

/** COOP/COEP (and CORP): cross-origin isolation, so that WASM can use threads (SharedArrayBuffer). */
export const ISOLATION_HEADERS: Readonly<Record<string, string>>;

/** onnxruntime-web files the runtime loads from `wasmPaths`: the WASM-only build and the JSEP (WebGPU + WASM) build. */
export const ORT_FILES: readonly string[];

/** onnxruntime-web's "extern wasm" JS builds, imported by the published worker from `./ort/` as they ship. */
export const ORT_BUILDS: readonly string[];

/** The folder of onnxruntime-web's built files (ORT_FILES and the "extern wasm" ORT builds) in node_modules. */
export const ORT_DIST: string;

/** True for a name in ORT_FILES. */
export function isOrtFile(name: string): boolean;

/** The Content-Type of an ORT file: `application/wasm` for .wasm, else `text/javascript`. */
export function ortContentType(name: string): 'application/wasm' | 'text/javascript';

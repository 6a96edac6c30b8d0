// Where selfxit's own files live (selfxit.js / selfxit.iife.js, ort/, assets/): the base for default worker and wasm URLs.

/**
 * Absolute URL of the folder holding the running selfxit build. ESM: from `import.meta.url`. The
 * script-tag build has no `import.meta`; its build replaces it with the script's `src`, captured while
 * the script runs (see vite.config.ts).
 */
export function packageBaseUrl(): string {
  return new URL(/* @vite-ignore */ './', import.meta.url).href;
}

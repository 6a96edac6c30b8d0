// Pure core entry (`selfxit/core`, dist/core.js): graph toolkit, bundle schema, cascade engine and errors; runs in Node and browsers.
export * from './graph/index.js';
export * from './bundle/manifest.js';
export * from './bundle/head-spec.js';
export * from './engine/cascade.js';
export * from './errors.js';
export type { OrtModule, OrtSession, OrtTensor, OrtSessionOptions } from './ort/types.js';

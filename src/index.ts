// Public ESM entry (and the script-tag build's global `selfxit`): load() a bundle, classify in a worker. Nothing runs at
// import. Every value export is named here; the public types are listed in types.ts.
export { load } from './page/classifier.js';
export { LOAD_DEFAULTS } from './page/options.js';
export { SelfxitError, isSelfxitError } from './errors.js';
export type * from './types.js';

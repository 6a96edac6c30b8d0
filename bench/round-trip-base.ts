// The "A" side of the round-trip micro-benchmark: the SDK as bench/round-trip.ts builds it, from the source at another
// commit (its --base, extracted under bench/.cache) or, without --base, this checkout's own source (an A/A run).
export { load } from '../src/index.js';
export { createWorkerApi } from '../src/runtime/api.js';

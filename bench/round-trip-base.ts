// The "A" side of the round-trip micro-benchmark: the SDK as bench/round-trip.ts builds it, from the source at another
// commit (its --base, extracted under bench/.cache) or, without --base, this checkout's own source (an A/A run). The
// page alone (--page-alone) drives its ClassifierImpl over a transport that answers at once.
export { load } from '../src/index.js';
export { createWorkerApi } from '../src/runtime/api.js';
export { ClassifierImpl } from '../src/page/classifier.js';

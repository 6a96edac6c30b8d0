// Worker entry: serves the runtime API to the page through comlink (the page creates this module as a module worker).
// Started again by the runtime under the name LEARNER_NAME, it serves on-device learning's fits instead
// (learn-worker.ts), so that head training never blocks serving. The learning code is not in this module's graph: it is
// a chunk imported on first use (learnCode() in learn-worker.ts), while `expose` below runs synchronously at start-up.
// The build keeps this entry tiny: the code it shares with that chunk is a chunk of its own that both import, so the
// chunk never imports this file (a dev server's rewritten URL for it would start a second copy: vite.config.ts).
import { expose } from 'comlink';
import { installErrorTransfer } from '../protocol.js';
import { createWorkerApi } from './api.js';
import { createLearnerApi, learnerWorkerRunner, LEARNER_NAME } from './learn-worker.js';

const self = globalThis as { name?: string; location?: { href: string } };

installErrorTransfer();
expose(
  self.name === LEARNER_NAME
    ? createLearnerApi()
    : createWorkerApi({ startLearner: () => learnerWorkerRunner(self.location?.href) }),
);

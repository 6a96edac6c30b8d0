// Worker entry: serves the runtime API to the page through comlink (the page creates this module as a module worker).
// Started again by the runtime under the name LEARNER_NAME, it serves on-device learning's fits instead
// (learn-worker.ts), so that head training never blocks serving.
import { expose } from 'comlink';
import { installErrorTransfer } from '../protocol.js';
import { createWorkerApi } from './api.js';
import { createLearnerApi, learnerWorkerRunner, LEARNER_NAME } from './learn-worker.js';

installErrorTransfer();
const self = globalThis as { name?: string; location?: { href: string } };
expose(
  self.name === LEARNER_NAME
    ? createLearnerApi()
    : createWorkerApi({ startLearner: () => learnerWorkerRunner(self.location?.href) }),
);

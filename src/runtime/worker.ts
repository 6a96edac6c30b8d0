// Worker entry: serves the runtime API to the page through comlink (the page creates this module as a module worker).
// Started again by the runtime under the name LEARNER_NAME, it serves on-device learning's fits instead
// (learn-worker.ts), so that head training never blocks serving. The learning code is not in this module's graph: it is
// a chunk imported on first use (learnCode() in learn-worker.ts), while `expose` below runs synchronously at start-up.
import { expose } from 'comlink';
import { installErrorTransfer } from '../protocol.js';
import { createWorkerApi } from './api.js';
import { createLearnerApi, learnerWorkerRunner, LEARNER_NAME } from './learn-worker.js';

const STARTED = Symbol.for('selfxit.worker');
const self = globalThis as { name?: string; location?: { href: string }; [STARTED]?: true };
// The built learning chunk imports shared code from ./selfxit.worker.js: the worker itself when started from that URL.
// Started from another (a query string, a renamed file), the chunk would evaluate a second copy of this file: it must
// not serve a second API, so it throws, and learnCode() reports RUNTIME_FILES_UNAVAILABLE (docs/DEPLOY.md).
if (self[STARTED])
  throw new Error(
    `the selfxit learning chunk loaded a second copy of the worker script, since the worker was started from ` +
      `${self.location?.href ?? 'another URL'}: serve it as selfxit.worker.js, beside selfxit.learn.js, without a query`,
  );
self[STARTED] = true;

installErrorTransfer();
expose(
  self.name === LEARNER_NAME
    ? createLearnerApi()
    : createWorkerApi({ startLearner: () => learnerWorkerRunner(self.location?.href) }),
);

// The on-device learning code the worker loads only when a load asks for `learn` (api.ts) or a fit runs
// (learn-worker.ts): one dynamic-import target, so that the build emits it as one chunk (dist/selfxit.learn-<hash>.js).
export { LearnRuntime } from './learn-runtime.js';
export { fitLearned } from '../learn/fit.js';

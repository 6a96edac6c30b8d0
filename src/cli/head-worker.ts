// A worker thread of the CLI's head-trainer pool (trainer-pool.ts): holds the heads phase's data (features and
// teacher on SharedArrayBuffer: read in place, never copied) and trains the stack tasks it is sent, one at a time,
// with its own instance of the WebAssembly kernels (wasm-kernels.ts instantiates them in each thread that trains).
// Built to dist/head-worker.js beside dist/cli.js; run from src/ (.ts) under tsx.
import { parentPort } from 'node:worker_threads';
import { SelfxitError, toErrorPayload } from '../errors.js';
import { FeatureCache, runStackTask, type TrainingData } from '../calibrate/train-task.js';
import type { WorkerReply, WorkerRequest } from './trainer-pool.js';

const port = parentPort;
if (!port) throw new Error('head-worker.ts runs as a worker thread of the head-trainer pool');
let data: TrainingData | undefined;
const cache = new FeatureCache();

port.on('message', (msg: WorkerRequest) => {
  if (msg.type === 'data' || msg.type === 'unload') {
    data = msg.type === 'data' ? msg.data : undefined;
    cache.clear();
    return;
  }
  let reply: WorkerReply;
  let transfer: ArrayBuffer[] = [];
  try {
    if (!data) throw new SelfxitError('INTERNAL', 'a training task reached a worker before its data');
    const result = runStackTask(data, msg.task, cache);
    reply = { type: 'done', id: msg.id, result };
    // the held-out outputs are this task's own buffer: moved, not copied (the standardisation is cached: cloned)
    if (result.oof && result.oof.buffer instanceof ArrayBuffer) transfer = [result.oof.buffer];
  } catch (e) {
    reply = { type: 'error', id: msg.id, error: toErrorPayload(e) };
  }
  port.postMessage(reply, transfer);
});

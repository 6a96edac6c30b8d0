// Test worker for e2e/prepare.spec.ts (bundled into e2e/.build/ by global setup): fetches the shipped model and runs
// the core's prepare() on onnxruntime-web WASM, posting progress events and then the outcome as plain data.
import { prepare } from '../../src/core.js';
import { toErrorPayload } from '../../src/errors.js';
import { loadOrt } from '../../src/runtime/ort-backend.js';
import {
  caseOptions,
  toOutcome,
  type CaseFiles,
  type ModelMeta,
  type PrepareJob,
  type WorkerMessage,
} from '../fixtures/prepare-case.js';

const post = (m: WorkerMessage): void => (self as unknown as DedicatedWorkerGlobalScope).postMessage(m);

async function fetchOk(url: string): Promise<Response> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res;
}

async function fetchFiles(base: string): Promise<CaseFiles> {
  const meta = (await (await fetchOk(`${base}model.json`)).json()) as ModelMeta;
  const bytes = async (name: string): Promise<Uint8Array> =>
    new Uint8Array(await (await fetchOk(base + name)).arrayBuffer());
  return {
    meta,
    model: await bytes('model.onnx'),
    calib: await bytes(meta.calib),
    labelsText: await (await fetchOk(base + meta.labels)).text(),
  };
}

self.onmessage = async (ev: MessageEvent<PrepareJob>): Promise<void> => {
  const job = ev.data;
  try {
    const files = await fetchFiles(job.modelBase);
    // loadOrt (the SDK's loader) dynamically imports onnxruntime-web/wasm and sets env.wasm.numThreads / wasmPaths.
    const { ort } = await loadOrt({ backend: 'wasm', threads: job.threads, wasmPaths: job.wasmPaths });
    const t0 = performance.now();
    const result = await prepare({
      ...caseOptions(files),
      ort,
      onProgress: (event) => post({ type: 'progress', event }),
    });
    const outcome = await toOutcome(result, files, (performance.now() - t0) / 1000);
    post({
      type: 'done',
      ...outcome,
      numThreads: ort.env.wasm.numThreads ?? 0,
      crossOriginIsolated: self.crossOriginIsolated,
    });
  } catch (e) {
    post({ type: 'error', error: toErrorPayload(e) });
  }
};

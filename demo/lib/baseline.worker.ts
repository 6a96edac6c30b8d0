// Worker: the original (full) model as one plain onnxruntime-web session — the baseline early exits are compared
// with. It loads onnxruntime-web exactly as the SDK's worker does (same build, wasm files, threads and session
// options), takes the same uint8 images and normalises them the same way.
import * as Comlink from 'comlink';
import type { InferenceSession } from 'onnxruntime-common';
import { argmaxRow, softmaxRow } from '../../src/engine/cascade.js';
import type { InputSpec } from '../../src/bundle/manifest.js';
import { loadOrt, sessionOptions, type OrtHandle } from '../../src/runtime/ort-backend.js';
import { toModelInput } from '../../src/bundle/input.js';
import type { BaselineInit, BaselineResult, BaselineWorkerApi } from './baseline-protocol.js';

let handle: OrtHandle | undefined;
let session: InferenceSession | undefined;
let spec: InputSpec | undefined;
let outputKind: BaselineInit['outputKind'] = 'logits';

const api: BaselineWorkerApi = {
  async init(options) {
    handle = await loadOrt({ backend: options.backend, threads: options.threads, wasmPaths: options.wasmPaths });
    const bytes =
      typeof options.model === 'string'
        ? new Uint8Array(await (await fetch(options.model)).arrayBuffer())
        : options.model;
    session = await handle.ort.InferenceSession.create(bytes, sessionOptions(handle, []));
    spec = options.input;
    outputKind = options.outputKind;
    return { backend: handle.backend, inputName: session.inputNames[0]!, outputName: session.outputNames[0]! };
  },
  async run(images, count): Promise<BaselineResult> {
    if (!session || !spec || !handle) throw new Error('baseline worker: init() first');
    const t0 = performance.now();
    const data = toModelInput({ data: images, count }, 0, count, spec);
    const dims =
      spec.layout === 'NCHW'
        ? [count, spec.channels, spec.height, spec.width]
        : [count, spec.height, spec.width, spec.channels];
    const feeds = { [session.inputNames[0]!]: new handle.ort.Tensor('float32', data, dims) };
    const t1 = performance.now();
    const out = await session.run(feeds);
    const t2 = performance.now();
    const values = (await out[session.outputNames[0]!]!.getData()) as Float32Array;
    const k = values.length / count;
    const indices = new Int32Array(count);
    const confidences = new Float32Array(count);
    for (let r = 0; r < count; r++) {
      const probs = outputKind === 'logits' ? softmaxRow(values, r * k, k) : values.subarray(r * k, (r + 1) * k);
      const { index, value } = argmaxRow(probs, 0, k);
      indices[r] = index;
      confidences[r] = value;
    }
    for (const t of Object.values(out)) t.dispose();
    return { indices, confidences, workerMs: performance.now() - t0, runMs: t2 - t1 };
  },
  async dispose() {
    await session?.release();
    session = undefined;
  },
};

Comlink.expose(api);

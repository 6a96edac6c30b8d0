// Wire types between the page and the baseline worker (the original model as one plain onnxruntime-web session).
import type { InputSpec } from '../../src/bundle/manifest.js';

export type BaselineBackend = 'wasm' | 'webgpu';

export interface BaselineInit {
  /** Model bytes, or a URL the worker fetches. */
  readonly model: Uint8Array | string;
  readonly input: InputSpec;
  readonly backend: BaselineBackend;
  /** WASM threads (ort.env.wasm.numThreads). */
  readonly threads: number;
  /** URL prefix of onnxruntime-web's .mjs/.wasm files (the same the SDK's worker uses). */
  readonly wasmPaths: string;
  /** Whether the model ends in logits (softmax applied here) or probabilities. */
  readonly outputKind: 'logits' | 'probabilities';
}

export interface BaselineResult {
  /** Argmax class per image. */
  readonly indices: Int32Array;
  /** Max probability per image. */
  readonly confidences: Float32Array;
  /** Time inside the worker for preprocessing + session.run + postprocessing (ms). */
  readonly workerMs: number;
  /** Time of session.run alone (ms). */
  readonly runMs: number;
}

export interface BaselineWorkerApi {
  init(options: BaselineInit): Promise<{ backend: BaselineBackend; inputName: string; outputName: string }>;
  run(images: Uint8Array, count: number): Promise<BaselineResult>;
  dispose(): Promise<void>;
}

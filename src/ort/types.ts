// The slice of the onnxruntime API that the core uses. onnxruntime-node (CLI, tests) and
// onnxruntime-web (worker) both satisfy it, so the core never imports either one.
import type { InferenceSession, Tensor } from 'onnxruntime-common';

/** An onnxruntime inference session (onnxruntime-common's `InferenceSession`). */
export type OrtSession = InferenceSession;
/** An onnxruntime tensor (onnxruntime-common's `Tensor`). */
export type OrtTensor = Tensor;
/** Options of an onnxruntime session (execution providers, threads, graph optimisation…). */
export type OrtSessionOptions = InferenceSession.SessionOptions;

/** An onnxruntime module (`import * as ort from 'onnxruntime-node' | 'onnxruntime-web'`). */
export interface OrtModule {
  readonly InferenceSession: {
    create(model: Uint8Array, options?: InferenceSession.SessionOptions): Promise<InferenceSession>;
  };
  readonly Tensor: typeof Tensor;
}

// The slice of the onnxruntime API that the core uses. onnxruntime-node (CLI, tests) and
// onnxruntime-web (worker) both satisfy it, so the core never imports either one.
import type { InferenceSession, Tensor } from 'onnxruntime-common';

export type OrtSession = InferenceSession;
export type OrtTensor = Tensor;
export type OrtSessionOptions = InferenceSession.SessionOptions;

/** An onnxruntime module (`import * as ort from 'onnxruntime-node' | 'onnxruntime-web'`). */
export interface OrtModule {
  readonly InferenceSession: {
    create(model: Uint8Array, options?: InferenceSession.SessionOptions): Promise<InferenceSession>;
  };
  readonly Tensor: typeof Tensor;
}

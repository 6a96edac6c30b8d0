// Wire types between the demo page and its calibration worker ("bring your own model").
import type { BundleManifest } from '../../src/bundle/manifest.js';
import type { SelfxitErrorPayload } from '../../src/errors.js';

export interface ByomRequest {
  readonly model: Uint8Array;
  /** Unlabeled images (any format the browser decodes). */
  readonly images: readonly Blob[];
  /** Input geometry; read from the model's input when absent. */
  readonly shape?: { readonly height: number; readonly width: number; readonly channels: 1 | 3 };
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly target: number;
  readonly labels?: readonly string[];
  readonly threads: number;
  /** URL prefix of onnxruntime-web's files. */
  readonly wasmPaths: string;
}

/** Progress: image decoding first, then prepare()'s own stages. */
export interface ByomProgress {
  readonly stage: 'decode' | 'features' | 'heads' | 'thresholds' | 'bundle';
  readonly done: number;
  readonly total: number;
  readonly detail?: string;
}

export type ByomReply =
  | {
      readonly ok: true;
      readonly manifest: BundleManifest;
      readonly files: Map<string, Uint8Array>;
      readonly seconds: number;
      readonly images: number;
    }
  | { readonly ok: false; readonly error: SelfxitErrorPayload };

export interface ByomWorkerApi {
  prepare(request: ByomRequest, onProgress: (p: ByomProgress) => void): Promise<ByomReply>;
}

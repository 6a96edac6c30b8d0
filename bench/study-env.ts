// What the CIFAR-10 study scripts share: where the repository, `../shared` and the feature cache are, onnxruntime-node
// as the SDK's OrtModule, the images' shape and class count, and the sessions' options (no spinning: the studies
// share a 2-core machine).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortNode from 'onnxruntime-node';
import type { OrtModule } from '../src/ort/types.js';
import { extractFeatures, type FeatureSet } from '../src/calibrate/features.js';
import type { FeatureRows } from '../src/calibrate/feature-store.js';
import type { ModelIO } from '../src/calibrate/prepare-options.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const shared = path.resolve(root, '../shared');
export const cacheDir = path.join(root, 'bench/.cache');
export const ort = ortNode as unknown as OrtModule;
/** CIFAR-10's classes. */
export const K = 10;
export const SHAPE = { height: 32, width: 32, channels: 3 } as const;
export const SESSION = { extra: { session: { intra_op: { allow_spinning: '0' } } } };

type ExtractOptions = Parameters<typeof extractFeatures>[0];
type StudyExtract = Pick<ExtractOptions, 'model' | 'requests' | 'samples'>;

/** `extractFeatures` with the model's I/O (`resolveModelIO`), onnxruntime-node and {@link SESSION} filled in. */
export function studyFeatures(io: ModelIO, o: StudyExtract & { storage?: 'f32' }): Promise<FeatureSet>;
export function studyFeatures(io: ModelIO, o: StudyExtract & { storage: 'f16' }): Promise<FeatureSet<FeatureRows>>;
export function studyFeatures(
  io: ModelIO,
  o: StudyExtract & Pick<ExtractOptions, 'storage'>,
): Promise<FeatureSet<FeatureRows>> {
  const { input, output, outputKind, classes } = io;
  return extractFeatures({ ...o, input, output, outputKind, classes, ort, sessionOptions: SESSION });
}

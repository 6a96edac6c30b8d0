// What the CIFAR-10 study scripts share: where the repository, `../shared` and the feature cache are, onnxruntime-node
// as the SDK's OrtModule, the images' shape and class count, and the sessions' options (no spinning: the studies
// share a 2-core machine).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortNode from 'onnxruntime-node';
import type { OrtModule } from '../src/ort/types.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const shared = path.resolve(root, '../shared');
export const cacheDir = path.join(root, 'bench/.cache');
export const ort = ortNode as unknown as OrtModule;
/** CIFAR-10's classes. */
export const K = 10;
export const SHAPE = { height: 32, width: 32, channels: 3 } as const;
export const SESSION = { extra: { session: { intra_op: { allow_spinning: '0' } } } };

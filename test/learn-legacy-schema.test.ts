// The learn runtime asks its store for the state of an all-NCHW model at the schema before channels-last cuts were
// pooled as such too (LEGACY_NCHW_SCHEMA: identical states for such a model), so that an update keeps what was learned.
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LearnRuntime } from '../src/runtime/learn-runtime.js';
import { LEGACY_NCHW_SCHEMA, type LearnStore } from '../src/runtime/learn-store.js';
import { fashionLearnRequest, MemoryLearnStore, modelDir } from './fixtures/learn-runtime.js';
import { loadOrtNode, serveTinyBundles, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
  copyFileSync(path.join(modelDir, 'model.onnx'), path.join(tiny.dir, 'fashion.onnx'));
}, 60_000);
afterAll(() => tiny.close());

describe('learn runtime: a saved state of the schema before NHWC cuts', () => {
  it('is asked for at LEGACY_NCHW_SCHEMA for an NCHW model (Fashion-MNIST)', async () => {
    const store = new MemoryLearnStore();
    const calls: Parameters<LearnStore['load']>[] = [];
    const load = store.load;
    store.load = (...a) => {
      calls.push(a);
      return load(...a);
    };
    const rt = await LearnRuntime.open(fashionLearnRequest(tiny.base), () => {}, {
      loadOrt: loadOrtNode,
      learnStore: store,
    });
    await rt.dispose();
    expect(calls.length).toBe(1);
    expect(calls[0]![2]).toBe(LEGACY_NCHW_SCHEMA);
  }, 60_000);
});

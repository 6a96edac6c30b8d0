// On-device learning in the worker runtime, in Node (onnxruntime-node injected, the shipped Fashion-MNIST model over
// a local HTTP server): full-model serving while collecting, a fit in the background, serving through learned exits,
// the live audit (and a forced failure), persistence across loads (restored, corrupt, quota), reset.
import { copyFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toModelInput } from '../src/bundle/input.js';
import type { InputSpec } from '../src/bundle/manifest.js';
import type { LearnerState } from '../src/learn/learner.js';
import type { InitRequest, LearnRequest, WireInput } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { LearnRuntime } from '../src/runtime/learn-runtime.js';
import { IdbLearnStore, type LearnStore } from '../src/runtime/learn-store.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

const modelDir = path.resolve(import.meta.dirname, '../public/models/fashion-resnet');
const calib = new Uint8Array(readFileSync(path.join(modelDir, 'calib-u8.bin')));
const spec: InputSpec = {
  name: 'input',
  height: 28,
  width: 28,
  channels: 1,
  mean: [0.286],
  std: [0.353],
  layout: 'NCHW' as const,
};

/** Image i of the calibration file as the model's float32 input (mirrored left-right with `flip`). */
function image(i: number, flip = false): WireInput {
  const px = calib.slice(i * 784, (i + 1) * 784);
  if (flip) for (let y = 0; y < 28; y++) px.subarray(y * 28, y * 28 + 28).reverse();
  return { kind: 'tensor', data: toModelInput({ data: px, count: 1 }, 0, 1, spec).slice() };
}

/** A LearnStore in memory (what IdbLearnStore keeps in IndexedDB), cloned like IndexedDB does. */
class MemoryLearnStore implements LearnStore {
  readonly enabled = true;
  readonly reason = undefined;
  readonly saved = new Map<string, LearnerState>();
  load = async (h: string) => (this.saved.has(h) ? structuredClone(this.saved.get(h)) : undefined);
  save = async (h: string, s: LearnerState) => void this.saved.set(h, structuredClone(s));
  clear = async (h: string) => void this.saved.delete(h);
}

let tiny: TinyServer;
beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
  copyFileSync(path.join(modelDir, 'model.onnx'), path.join(tiny.dir, 'fashion.onnx'));
});
afterAll(() => tiny.close());

const learnRequest = (over: Partial<LearnRequest['options']> = {}, extra: Partial<LearnRequest> = {}): InitRequest =>
  tinyInitRequest(tiny.base, 'tiny', {
    manifestUrl: `${tiny.base}/fashion.onnx`,
    learn: {
      options: { minSamples: 400, maxCandidates: 4, headKinds: ['pool-linear'], auditShare: 0.5, ...over },
      input: { mean: [0.286], std: [0.353] },
      persist: true,
      ...extra,
    },
  });

async function serve(rt: LearnRuntime, from: number, count: number, flip = false) {
  const out = [];
  for (let at = from; at < from + count; at += 50) {
    const inputs = Array.from({ length: Math.min(50, from + count - at) }, (_, j) => image(at + j, flip));
    out.push(...(await rt.classify({ inputs, thresholds: [], probabilities: false })));
  }
  return out;
}

describe('LearnRuntime', () => {
  it('serves the full model while collecting, fits in the background, then serves through exits; restored after a reload', async () => {
    const store = new MemoryLearnStore();
    const progress: string[] = [];
    const rt = await LearnRuntime.open(
      learnRequest(),
      (p) => {
        if (p.status === 'learn') progress.push(p.stage);
      },
      { loadOrt: loadOrtNode, learnStore: store },
    );
    expect(rt.manifest.exits).toEqual([]);
    const first = await serve(rt, 0, 450);
    expect(first.every((r) => r.exit === -1)).toBe(true);
    await rt.settled();
    const s1 = rt.state().learning!;
    expect(s1.fits).toBe(1);
    expect(s1.exitsOn).toBe(true);
    expect(s1.manifest?.exits.length).toBeGreaterThan(0);
    expect(progress).toContain('heads');
    expect(progress[progress.length - 1]).toBe('done');
    expect(rt.state().learning!.manifest).toBeUndefined(); // sent once per change

    const later = await serve(rt, 450, 300, true);
    expect(later.some((r) => r.exit >= 0)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    const s2 = rt.state().learning!;
    expect(s2.audit.totalAudited).toBeGreaterThan(10);
    // over all audits (the window restarts at each tightening and may hold only a few)
    expect(s2.audit.totalAgreed / s2.audit.totalAudited).toBeGreaterThan(0.85);
    expect(s2.samplesSeen).toBeGreaterThanOrEqual(450 + s2.audit.totalAudited); // + inputs served whole while the exits opened
    expect(s2.persists).toBe(true);
    await rt.dispose();

    // a new load restores the learned exits without learning again
    const rt2 = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    const s3 = rt2.state().learning!;
    expect(s3.restored).toBe(true);
    expect(s3.exitsOn).toBe(true);
    expect(s3.fits).toBe(s2.fits);
    expect(rt2.manifest.exits.length).toBeGreaterThan(0);
    expect(s3.thresholds).toEqual(s2.thresholds);
    const again = await serve(rt2, 800, 50);
    expect(again.some((r) => r.exit >= 0)).toBe(true);
    await rt2.resetLearning();
    const s4 = rt2.state().learning!;
    expect([s4.exitsOn, s4.fits, s4.samplesStored]).toEqual([false, 0, 0]);
    expect(store.saved.size).toBe(0);
    await rt2.dispose();

    // a corrupt state is discarded, never used
    store.saved.set(rt2.modelHash, { ...s1, fits: 'x' } as unknown as LearnerState);
    const rt3 = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    expect(rt3.state().learning!.restored).toBe(false);
    expect(rt3.state().learning!.exitsOn).toBe(false);
    expect(store.saved.size).toBe(0);
    await rt3.dispose();
  }, 180_000);

  it('a failing audit tightens the thresholds at once; a full quota keeps learning in memory', async () => {
    const quota = new IdbLearnStore(
      () => () => Promise.reject(Object.assign(new Error('full'), { name: 'QuotaExceededError' })),
    );
    const rt = await LearnRuntime.open(learnRequest({ minAudits: 5 }, { corruptAudit: true }), () => {}, {
      loadOrt: loadOrtNode,
      learnStore: quota,
    });
    await serve(rt, 0, 400);
    await rt.settled();
    expect(rt.state().learning!.exitsOn).toBe(true);
    await serve(rt, 400, 300);
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    const s = rt.state().learning!;
    expect(s.tightenings).toBeGreaterThanOrEqual(1);
    expect(s.persists).toBe(false);
    expect(s.persistReason).toMatch(/quota/);
    await rt.dispose();
  }, 180_000);

  it('is what the worker API opens for a learn request; plan() is refused while learning', async () => {
    const api = createWorkerApi({ loadOrt: loadOrtNode, learnStore: new MemoryLearnStore() });
    const reply = await api.init(learnRequest());
    expect(reply.state.learning?.exitsOn).toBe(false);
    await expect(api.plan({ target: 0.99 })).rejects.toMatchObject({ code: 'LEARNING_UNAVAILABLE' });
    const r = await api.classify({ inputs: [image(0)], thresholds: [], probabilities: true });
    expect(r.results[0]!.probabilities?.length).toBe(10);
    await api.dispose();
  }, 60_000);
});

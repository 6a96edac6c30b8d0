// On-device learning in the worker runtime, in Node (onnxruntime-node injected, the shipped Fashion-MNIST model over
// a local HTTP server): full-model serving while collecting, a fit in the background, serving through learned exits,
// the live audit (and a forced failure), persistence across loads (restored, corrupt, quota), reset; the compiled
// engine serving learned exits as the stage engine does; learning from a bundle's exits; drift of the traffic.
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
import { writeFashionBundle } from './fixtures/fashion-learn-bundle.js';
import { BundleRuntime } from '../src/runtime/runtime.js';

const modelDir = path.resolve(import.meta.dirname, '../public/models/fashion-resnet');
// images 0-999: the calibration file, 1,000-1,999: the test file
const calib = new Uint8Array([
  ...readFileSync(path.join(modelDir, 'calib-u8.bin')),
  ...readFileSync(path.join(modelDir, 'test-u8.bin')),
]);
const spec: InputSpec = {
  name: 'input',
  height: 28,
  width: 28,
  channels: 1,
  mean: [0.286],
  std: [0.353],
  layout: 'NCHW' as const,
};

/** Image i of the calibration file as the model's float32 input (mirrored left-right with `flip`; `invert`: 255 - x). */
function image(i: number, flip = false, invert = false): WireInput {
  const px = calib.slice(i * 784, (i + 1) * 784);
  if (flip) for (let y = 0; y < 28; y++) px.subarray(y * 28, y * 28 + 28).reverse();
  if (invert) px.forEach((v, j) => (px[j] = 255 - v));
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
let bundleSamples = 0;
beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
  copyFileSync(path.join(modelDir, 'model.onnx'), path.join(tiny.dir, 'fashion.onnx'));
  bundleSamples = await writeFashionBundle(path.join(tiny.dir, 'fashion-bundle'));
}, 120_000);
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

async function serve(rt: LearnRuntime, from: number, count: number, flip = false, invert = false) {
  const out = [];
  for (let at = from; at < from + count; at += 50) {
    const inputs = Array.from({ length: Math.min(50, from + count - at) }, (_, j) => image(at + j, flip, invert));
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
    expect(rt.state().engine).toBe('compiled'); // learned exits are served by the default (compiled) engine
    expect(s1.reservoirBytes).toBeLessThan(s1.reservoirMaxBytes); // allocated as samples arrive
    expect(rt.state().learning!.manifest).toBeUndefined(); // sent once per change
    const afterFirstFit = new MemoryLearnStore();
    for (const [h, st] of store.saved) afterFirstFit.saved.set(h, structuredClone(st));

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

    // a new load restores the state as it was (the audit may have tightened the exits, a re-fit at a stricter
    // fitTarget may have found none on these few samples) without learning again
    const rt2 = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    const s3 = rt2.state().learning!;
    expect(s3.restored).toBe(true);
    expect([s3.exitsOn, s3.fits, s3.thresholds]).toEqual([s2.exitsOn, s2.fits, s2.thresholds]);
    // and the exits of the first fit serve at once after a reload
    const rt1 = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: afterFirstFit });
    expect(rt1.state().learning!.exitsOn).toBe(true);
    expect(rt1.manifest.exits.length).toBeGreaterThan(0);
    const again = await serve(rt1, 800, 50);
    expect(again.some((r) => r.exit >= 0)).toBe(true);
    await rt1.dispose();
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

  it('the compiled and the stage engine make the same decisions on learned exits', async () => {
    const store = new MemoryLearnStore();
    const rt = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    await serve(rt, 0, 450);
    await rt.settled();
    expect(rt.state().learning!.exitsOn).toBe(true);
    await rt.dispose();
    // both restored from the same state; no audit or drift test, so the thresholds cannot move between calls
    const quiet = { auditShare: 0, learnShare: 0, drift: false };
    const open = (engine: 'auto' | 'stages') =>
      LearnRuntime.open({ ...learnRequest(quiet), engine }, () => {}, { loadOrt: loadOrtNode, learnStore: store });
    const [compiled, stages] = [await open('auto'), await open('stages')];
    expect([compiled.state().engine, stages.state().engine]).toEqual(['compiled', 'stages']);
    let early = 0;
    for (let i = 500; i < 700; i++) {
      const req = { inputs: [image(i, i % 2 === 1)], thresholds: [], probabilities: false };
      const [a] = await compiled.classify(req);
      const [b] = await stages.classify(req);
      expect([a!.index, a!.exit]).toEqual([b!.index, b!.exit]);
      expect(a!.confidence).toBeCloseTo(b!.confidence, 5);
      if (a!.exit >= 0) early++;
    }
    expect(early).toBeGreaterThan(20);
    await compiled.dispose();
    await stages.dispose();
  }, 180_000);

  it('learns from a bundle: serves and audits its exits, replaces them by a fit on live samples, resets to them', async () => {
    const store = new MemoryLearnStore();
    const request = (over: Partial<LearnRequest['options']> = {}) =>
      tinyInitRequest(tiny.base, 'fashion-bundle', {
        learn: {
          options: { minSamples: 300, maxCandidates: 4, headKinds: ['pool-linear'], learnShare: 1, ...over },
          persist: true,
          fromBundle: true,
        },
      });
    const rt = await LearnRuntime.open(request(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    const s0 = rt.state().learning!;
    expect([s0.exitsOn, s0.fromBundle, s0.fits]).toEqual([true, true, 0]);
    // its exits serve as the bundle itself does
    const plain = await BundleRuntime.open(tinyInitRequest(tiny.base, 'fashion-bundle'), () => {}, {
      loadOrt: loadOrtNode,
    });
    const thresholds = plain.manifest.exits.map((e) => e.threshold);
    const served = await serve(rt, 1000, 100);
    const ref = [];
    for (let i = 1000; i < 1100; i++)
      ref.push(...(await plain.classify({ inputs: [image(i)], thresholds, probabilities: false })));
    expect(served.map((r) => [r.index, r.exit])).toEqual(ref.map((r) => [r.index, r.exit]));
    expect(served.some((r) => r.exit >= 0)).toBe(true);
    await plain.dispose();
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    expect(rt.state().learning!.audit.totalAudited).toBeGreaterThan(50); // learnShare 1: every input completed
    // the first fit waits for as many samples as the bundle was calibrated on
    await serve(rt, 1100, bundleSamples - 150);
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    expect(rt.state().learning!.fits).toBe(0);
    await serve(rt, 1100 + bundleSamples - 150, 200);
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    const s1 = rt.state().learning!;
    expect(s1.fits).toBe(1);
    expect(s1.fromBundle).toBeUndefined();
    expect(s1.exitsOn).toBe(true);
    await rt.resetLearning();
    const s2 = rt.state().learning!;
    expect([s2.exitsOn, s2.fromBundle, s2.fits]).toEqual([true, true, 0]);
    expect(rt.manifest.exits.length).toBe(s0.exits);
    await rt.dispose();
    // a state saved for another bundle is discarded
    const saved = [...store.saved.values()][0];
    if (saved) {
      const foreign = structuredClone(saved);
      (foreign.fitted as { bundle?: { manifestHash: string } } | undefined)!.bundle!.manifestHash = 'other';
      store.saved.set([...store.saved.keys()][0]!, foreign);
      const rt2 = await LearnRuntime.open(request(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
      expect(rt2.state().learning!.restored).toBe(false);
      await rt2.dispose();
    }
  }, 240_000);

  it('a drift of the traffic is flagged without full-model answers, confirmed by the audit, then learned again', async () => {
    const rt = await LearnRuntime.open(learnRequest({ auditShare: 0.05 }), () => {}, {
      loadOrt: loadOrtNode,
      learnStore: new MemoryLearnStore(),
    });
    await serve(rt, 0, 600);
    await rt.settled();
    expect(rt.state().learning!.exitsOn).toBe(true);
    expect(rt.state().learning!.drift?.alarms).toBe(0);
    // inverted images, 10 at a time: the drift detector needs no full-model answer to see them; the audits that
    // follow its alarm (at least half the inputs) confirm that the exits no longer agree, and the exits go off
    let alarmAt = -1;
    let offAt = -1;
    for (let at = 600; at < 1000 && offAt < 0; at += 10) {
      await serve(rt, at, 10, false, true);
      await new Promise((r) => setTimeout(r, 5));
      await rt.settled();
      const l = rt.state().learning!;
      if (alarmAt < 0 && l.drift!.alarms > 0) alarmAt = at + 10 - 600;
      if (!l.exitsOn) offAt = at + 10 - 600;
    }
    const s = rt.state().learning!;
    console.log(`runtime drift: alarm after ${alarmAt} inverted inputs, exits off (drift confirmed) after ${offAt}`);
    expect(alarmAt).toBeGreaterThan(0);
    expect(alarmAt).toBeLessThanOrEqual(200);
    expect(offAt).toBeGreaterThanOrEqual(alarmAt);
    expect(offAt).toBeLessThanOrEqual(alarmAt + 200);
    expect(s.drift?.restarts).toBe(1);
    expect(s.samplesStored).toBeLessThan(offAt); // the reservoir started again on the new traffic
    await serve(rt, 1000, 450, false, true);
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    const s2 = rt.state().learning!;
    expect(s2.fits).toBeGreaterThanOrEqual(2);
    expect(s2.exitsOn).toBe(true);
    const back = await serve(rt, 1450, 100, false, true);
    expect(back.some((r) => r.exit >= 0)).toBe(true);
    await rt.dispose();
  }, 240_000);
});

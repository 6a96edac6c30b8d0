// On-device learning in the worker runtime, in Node (onnxruntime-node injected, the shipped Fashion-MNIST model over
// a local HTTP server): full-model serving while collecting, a fit in the background, serving through learned exits,
// the live audit (and a forced failure), persistence across loads (restored, corrupt, quota), reset; the compiled
// engine serving learned exits as the stage engine does; learning from a bundle's exits; drift of the traffic.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { decodeModel, encodeModel, sha256Hex } from '../src/graph/index.js';
import { MemoryBundleCache, plainModelKey } from '../src/runtime/learn-bundle.js';
import { noCutClassifier } from './fixtures/prepare-fixtures.js';
import type { BundleManifest } from '../src/bundle/manifest.js';
import type { DevicePlan } from '../src/policy/device-plan.js';
import { planKey } from '../src/runtime/cache.js';
import type { LearnerState } from '../src/learn/learner.js';
import type { InitRequest, LearnRequest, ProgressInfo } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { AUDIT_CHUNK, LearnRuntime, type FitWorker, type LearnDeps } from '../src/runtime/learn-runtime.js';
import { fitLearned } from '../src/learn/fit.js';
import { IdbLearnStore } from '../src/runtime/learn-store.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';
import { writeFashionBundle } from './fixtures/fashion-learn-bundle.js';
import { fashionLearnRequest, image, MemoryLearnStore, modelDir, serve } from './fixtures/learn-runtime.js';
import { BundleRuntime } from '../src/runtime/runtime.js';
import type * as InputKey from '../src/learn/input-key.js';

/** Calls of inputKeys (the learner's hash of each input stored), counted as they pass through. */
const keyCalls = vi.hoisted(() => ({ n: 0 }));
vi.mock('../src/learn/input-key.js', async (importOriginal) => {
  const m = await importOriginal<typeof InputKey>();
  return {
    ...m,
    inputKeys: (...a: Parameters<typeof m.inputKeys>): ReturnType<typeof m.inputKeys> => {
      keyCalls.n++;
      return m.inputKeys(...a);
    },
  };
});

let tiny: TinyServer;
let bundleSamples = 0;
beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
  copyFileSync(path.join(modelDir, 'model.onnx'), path.join(tiny.dir, 'fashion.onnx'));
  bundleSamples = await writeFashionBundle(path.join(tiny.dir, 'fashion-bundle'));
  writeFileSync(path.join(tiny.dir, 'nocut.onnx'), encodeModel(noCutClassifier()));
}, 120_000);
afterAll(() => tiny.close());

const learnRequest = (over: Partial<LearnRequest['options']> = {}, extra: Partial<LearnRequest> = {}): InitRequest =>
  fashionLearnRequest(tiny.base, over, extra);

/** Runs `fn` with every fetch failing as it does offline (a network error: FETCH_FAILED, status 0). */
async function offline<T>(fn: () => Promise<T>): Promise<T> {
  vi.stubGlobal('fetch', () => Promise.reject(new TypeError('fetch failed')));
  try {
    return await fn();
  } finally {
    vi.unstubAllGlobals();
  }
}

/** A copy of `bytes` with one byte changed (a corrupt copy in storage). */
const corrupt = (bytes: Uint8Array): Uint8Array => {
  const c = bytes.slice();
  c[c.length >> 1]! ^= 0xff;
  return c;
};

/** Copies the served bundle folder `from` to `to` (replaced), leaving out the files named in `omit`. */
function copyBundle(from: string, to: string, omit: readonly string[] = []): void {
  const [src, dst] = [path.join(tiny.dir, from), path.join(tiny.dir, to)];
  rmSync(dst, { recursive: true, force: true });
  mkdirSync(dst);
  for (const f of readdirSync(src)) if (!omit.includes(f)) copyFileSync(path.join(src, f), path.join(dst, f));
}

/**
 * Replaces, in the served bundle `name`, the file `file` (the backbone or a segment) by a new version (same model, another
 * doc string: new bytes and sha256) and its manifest by one listing it: the bundle replaced in place on the server.
 * Returns the old sha256.
 */
async function replaceInPlace(name: string, file: string): Promise<string> {
  const dir = path.join(tiny.dir, name);
  const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as BundleManifest;
  const model = decodeModel(readFileSync(path.join(dir, file)));
  model.proto.docString = `replaced ${Date.now()}`;
  const bytes = encodeModel(model);
  writeFileSync(path.join(dir, file), bytes);
  const sha256 = await sha256Hex(bytes);
  const old = file === m.backbone.file ? m.backbone.sha256 : m.segments.find((s) => s.file === file)!.sha256;
  const next: BundleManifest = {
    ...m,
    backbone: file === m.backbone.file ? { ...m.backbone, sha256 } : m.backbone,
    segments: m.segments.map((s) => (s.file === file ? { ...s, sha256, bytes: bytes.length } : s)),
  };
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(next));
  return old;
}

/** A learning request for the bundle served at `dir`, learning from its exits (small fits, nothing persisted). */
function bundleLearnRequest(dir: string): InitRequest {
  return tinyInitRequest(tiny.base, dir, {
    learn: {
      options: { minSamples: 300, maxCandidates: 4, headKinds: ['pool-linear'] },
      persist: false,
      fromBundle: true,
    },
  });
}

/** Opens the plain model's learn request with `deps`, recording each learning progress event as `fit:stage`. */
async function openRecording(deps: LearnDeps): Promise<{ rt: LearnRuntime; progress: string[] }> {
  const progress: string[] = [];
  const rt = await LearnRuntime.open(
    learnRequest(),
    (p) => {
      if (p.status === 'learn') progress.push(`${p.fit}:${p.stage}`);
    },
    deps,
  );
  return { rt, progress };
}

describe('LearnRuntime', () => {
  it('serves the full model while collecting, fits in the background, then serves through exits; restored after a reload', async () => {
    const store = new MemoryLearnStore();
    const opens = vi.spyOn(BundleRuntime, 'open');
    const { rt, progress } = await openRecording({ loadOrt: loadOrtNode, learnStore: store });
    expect(rt.manifest.exits).toEqual([]);
    const first = await serve(rt, 0, 450);
    expect(first.every((r) => r.exit === -1)).toBe(true);
    await rt.settled();
    const s1 = rt.state().learning!;
    expect(s1.fits).toBe(1);
    expect(s1.exitsOn).toBe(true);
    expect(s1.manifest?.exits.length).toBeGreaterThan(0);
    expect(progress).toContain('1:heads');
    expect(progress[progress.length - 1]).toBe('1:done');
    expect(rt.state().engine).toBe('compiled'); // learned exits are served by the default (compiled) engine
    expect(rt.state().batchEngine).toBe('stages'); // batches by stages: the serving model is remade at every fit
    // the serving runtimes run inside this runtime's queued jobs: no onnxruntime step of theirs in the background
    expect(opens.mock.calls.length).toBeGreaterThan(0);
    expect(opens.mock.calls.map((c) => c[2]?.nested)).toEqual(opens.mock.calls.map(() => true));
    opens.mockRestore();
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
    store.saved.set(rt2.stateKey, { ...s1, fits: 'x' } as unknown as LearnerState);
    const rt3 = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    expect(rt3.state().learning!.restored).toBe(false);
    expect(rt3.state().learning!.exitsOn).toBe(false);
    expect(store.saved.size).toBe(0);
    await rt3.dispose();
  }, 180_000);

  it('an input served again (the same preprocessed tensor) is not stored again, nor counted as a new sample', async () => {
    const rt = await LearnRuntime.open(learnRequest(), () => {}, {
      loadOrt: loadOrtNode,
      learnStore: new MemoryLearnStore(),
    });
    await serve(rt, 0, 100);
    await serve(rt, 0, 100); // the same 100 images again
    await rt.classify({ inputs: [image(100), image(100)], thresholds: [], probabilities: false }); // twice in one call
    const s = rt.state().learning!;
    expect([s.samplesStored, s.samplesSeen, s.samplesRepeated]).toEqual([101, 101, 101]);
    await rt.dispose();
  }, 60_000);

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
    // onnxruntime sessions the compiled side creates: all while opening (its last step compiles the cascade that the
    // learned thresholds run), none while serving
    let sessions = 0;
    const countingOrt = async (): Promise<Awaited<ReturnType<typeof loadOrtNode>>> => {
      const h = await loadOrtNode();
      const create = h.ort.InferenceSession.create.bind(h.ort.InferenceSession) as (...a: unknown[]) => unknown;
      const InferenceSession = { create: (...a: unknown[]) => (sessions++, create(...a)) };
      return { ...h, ort: { ...h.ort, InferenceSession } as unknown as typeof h.ort };
    };
    const open = (engine: 'auto' | 'stages', loadOrt = loadOrtNode) =>
      LearnRuntime.open({ ...learnRequest(quiet), engine }, () => {}, { loadOrt, learnStore: store });
    const [compiled, stages] = [await open('auto', countingOrt), await open('stages')];
    expect([compiled.state().engine, stages.state().engine]).toEqual(['compiled', 'stages']);
    const opened = sessions;
    expect(opened).toBeGreaterThan(0);
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
    expect(sessions - opened, 'sessions created while serving').toBe(0);
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
    const served = await serve(rt, 1000, 100, false, false, AUDIT_CHUNK);
    const ref = [];
    for (let i = 1000; i < 1100; i++)
      ref.push(...(await plain.classify({ inputs: [image(i)], thresholds, probabilities: false })));
    expect(served.map((r) => [r.index, r.exit])).toEqual(ref.map((r) => [r.index, r.exit]));
    expect(served.some((r) => r.exit >= 0)).toBe(true);
    await plain.dispose();
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    expect(rt.state().learning!.audit.totalAudited).toBeGreaterThan(50); // learnShare 1: every input completed
    // the first fit waits for as many samples as the bundle was calibrated on (calls of AUDIT_CHUNK back to back: the
    // completions keep up; calls of more outrun them, and inputs drawn beyond MAX_PENDING_AUDITS are not completed)
    await serve(rt, 1100, bundleSamples - 150, false, false, AUDIT_CHUNK);
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    expect(rt.state().learning!.fits).toBe(0);
    await serve(rt, 1100 + bundleSamples - 150, 200, false, false, AUDIT_CHUNK);
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

  it('resetLearning() waits for a save under way: its write never brings the state before the reset back', async () => {
    const store = new MemoryLearnStore();
    // a slow write (a full reservoir's ~32 blocks): it lands well after the reset began
    store.save = async (h: string, s: LearnerState) => {
      const c = structuredClone(s);
      await new Promise((r) => setTimeout(r, 200));
      store.saved.set(h, c);
    };
    const rt = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    await serve(rt, 0, 60);
    expect(rt.state().learning!.samplesSeen).toBe(60);
    (rt as unknown as { save(): void }).save();
    await rt.resetLearning();
    await rt.settled();
    await new Promise((r) => setTimeout(r, 300));
    expect(store.saved.get(rt.stateKey)?.reservoir.size ?? 0).toBe(0);
    await rt.dispose();
  }, 60_000);

  it('resetLearning() during a slow fit cancels it: resolves at once, its result is never adopted', async () => {
    // fits in a stand-in for the fits' worker that holds each job until released (a fit of minutes on a full reservoir)
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    let closed = 0;
    const ran: Promise<unknown>[] = [];
    const startLearner = (): FitWorker => {
      started++;
      return {
        run: (job, onProgress) => {
          const r = gate.then(() => fitLearned(job, onProgress));
          ran.push(r);
          return r;
        },
        close: () => void closed++,
      };
    };
    const { rt, progress } = await openRecording({
      loadOrt: loadOrtNode,
      learnStore: new MemoryLearnStore(),
      startLearner,
    });
    await serve(rt, 0, 450); // the fit starts at 400 samples
    expect(rt.state().learning!.fitting).toBe(true);
    await vi.waitFor(() => expect(ran).toHaveLength(1), { timeout: 20_000 }); // in the worker, held
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('reset hung')), 10_000)));
    await Promise.race([rt.resetLearning(), hung]);
    clearTimeout(timer);
    const s = rt.state().learning!;
    expect([s.samplesSeen, s.fits, s.exitsOn, s.fitting]).toEqual([0, 0, false, false]);
    expect([closed, started]).toEqual([1, 2]); // the busy worker ended, a fresh one ready for the next fit
    // the cancelled fit ends after all: its exits are not adopted
    release();
    await ran[0];
    await new Promise((r) => setTimeout(r, 50));
    await rt.settled();
    const after = rt.state().learning!;
    expect([after.fits, after.exitsOn, after.lastError]).toEqual([0, false, undefined]);
    expect(rt.manifest.exits).toEqual([]);
    expect(progress).not.toContain('1:done');
    // learning goes on: the next fit (in the fresh worker) is adopted
    await serve(rt, 500, 450);
    await rt.settled();
    expect([rt.state().learning!.fits, rt.state().learning!.exitsOn]).toEqual([1, true]);
    expect(progress[progress.length - 1]).toBe('1:done');
    await rt.dispose();
  }, 120_000);

  it('a save that throws turns persistence off with its reason; later saves, fits, reset and dispose go on', async () => {
    const store = new MemoryLearnStore();
    const { rt, progress } = await openRecording({ loadOrt: loadOrtNode, learnStore: store });
    await serve(rt, 0, 60);
    // copying the reservoir fails (as a RangeError allocating a large copy would)
    const learner = (rt as unknown as { learner: { sliceState: () => Promise<unknown> } }).learner;
    learner.sliceState = () => Promise.reject(new RangeError('Array buffer allocation failed'));
    (rt as unknown as { save(): void }).save();
    await rt.settled();
    const s = rt.state().learning!;
    expect(s.persists).toBe(false);
    expect(s.persistReason).toMatch(/could not be saved: RangeError: Array buffer allocation failed/);
    await serve(rt, 60, 400); // a fit at 400 samples
    await new Promise((r) => setTimeout(r, 20));
    await rt.settled();
    const f = rt.state().learning!;
    expect([f.fits, f.lastError]).toEqual([1, undefined]);
    expect(progress[progress.length - 1]).toBe('1:done');
    await rt.resetLearning();
    expect(rt.state().learning!.fits).toBe(0);
    await rt.dispose();
  }, 120_000);

  it('a drift of the traffic is flagged without full-model answers, confirmed by the audit, then learned again', async () => {
    const store = new MemoryLearnStore();
    // few completions (the scenario was written at learnShare 0.2, its default then): the drift detector, not the
    // audit, must see the switch first
    const few = { auditShare: 0.05, learnShare: 0.2 };
    const rt = await LearnRuntime.open(learnRequest(few), () => {}, {
      loadOrt: loadOrtNode,
      learnStore: store,
    });
    await serve(rt, 0, 600);
    await rt.settled();
    expect(rt.state().learning!.exitsOn).toBe(true);
    expect(rt.state().learning!.drift?.alarms).toBe(0);
    // inverted images, 10 at a time: the drift detector needs no full-model answer to see them; the audits that
    // follow its alarm (at least half the inputs) confirm that the exits no longer agree, and the exits go off
    let alarmAt = -1;
    let offAt = -1;
    let atAlarm: LearnerState | undefined;
    for (let at = 600; at < 1000 && offAt < 0; at += 10) {
      await serve(rt, at, 10, false, true);
      await new Promise((r) => setTimeout(r, 5));
      await rt.settled();
      const l = rt.state().learning!;
      if (alarmAt < 0 && l.drift!.alarms > 0) {
        alarmAt = at + 10 - 600;
        atAlarm = structuredClone(store.saved.get(rt.stateKey)); // saved at the alarm
      }
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

    // a reload while the alarm was being verified goes on verifying: the suspected exits at their (tightened)
    // thresholds, the audits left, no fit meanwhile
    expect(atAlarm?.verifying).toBeGreaterThan(0);
    const reloaded = new MemoryLearnStore();
    reloaded.saved.set(rt.stateKey, atAlarm!);
    const again = await LearnRuntime.open(learnRequest(few), () => {}, {
      loadOrt: loadOrtNode,
      learnStore: reloaded,
    });
    const r = again.state().learning!;
    expect(r.restored).toBe(true);
    expect(r.drift?.verifying).toBe(atAlarm!.verifying);
    expect(r.thresholds).toEqual(atAlarm!.point?.thresholds);
    expect(r.exitsOn).toBe(true);
    await serve(again, 1000, 30, false, true);
    await again.settled();
    expect(again.state().learning!.fits).toBe(atAlarm!.fits); // no fit while verifying
    await again.dispose();
  }, 240_000);

  it('starts offline from the cached model (a plain one, a bundle backbone), a corrupt copy never used; a bundle plan costs the fits', async () => {
    const cache = new MemoryBundleCache();
    const deps = { loadOrt: loadOrtNode, learnStore: new MemoryLearnStore(), cache };
    const online = await LearnRuntime.open(learnRequest(), () => {}, deps);
    const hash = online.modelHash;
    await online.dispose();
    const key = plainModelKey(learnRequest().manifestUrl);
    expect((await cache.getCompiled(key))?.sha256).toBe(hash);
    const progress: ProgressInfo[] = [];
    const rt = await offline(() => LearnRuntime.open(learnRequest(), (p) => progress.push(p), deps));
    expect(rt.modelHash).toBe(hash);
    expect(progress).toContainEqual(expect.objectContaining({ status: 'done', fromCache: true }));
    expect(await serve(rt, 0, 10)).toHaveLength(10);
    await rt.dispose();
    const good = (await cache.getCompiled(key))!;
    await cache.putCompiled(key, { sha256: good.sha256, bytes: corrupt(good.bytes) });
    await expect(offline(() => LearnRuntime.open(learnRequest(), () => {}, deps))).rejects.toMatchObject({
      code: 'FETCH_FAILED',
    });
    expect(await cache.getCompiled(key)).toBeUndefined(); // dropped, not used

    // a bundle: its manifest, segments and backbone.onnx (by sha256) from the cache
    const bundleCache = new MemoryBundleCache();
    const request = bundleLearnRequest('fashion-bundle');
    const bdeps = { loadOrt: loadOrtNode, learnStore: new MemoryLearnStore(), cache: bundleCache };
    await (await LearnRuntime.open(request, () => {}, bdeps)).dispose();
    const text = (await bundleCache.getManifest(request.manifestUrl))?.text ?? '{}';
    const sha = (JSON.parse(text) as { backbone?: { sha256?: string } }).backbone?.sha256;
    expect(sha).toBe(hash); // the bundle's backbone is the plain model
    const b = await offline(() => LearnRuntime.open(request, () => {}, bdeps));
    expect([b.state().learning!.fromBundle, b.state().learning!.exitsOn]).toEqual([true, true]);
    expect((await serve(b, 0, 50)).some((r) => r.exit >= 0)).toBe(true);
    await b.dispose();
    await bundleCache.putSegment(sha!, corrupt((await bundleCache.getSegment(sha!))!));
    await expect(offline(() => LearnRuntime.open(request, () => {}, bdeps))).rejects.toMatchObject({
      code: 'FETCH_FAILED',
    });
    expect(await bundleCache.getSegment(sha!)).toBeUndefined();
    const refetched = await LearnRuntime.open(request, () => {}, bdeps); // online: fetched and cached again
    expect(await bundleCache.getSegment(sha!)).toBeDefined();
    expect(refetched.state().learning!.fitCosts).toBe('macs');
    await refetched.dispose();

    // a device plan made for the bundle on this backend: the fits select exits by its measured stage times
    const manifest = JSON.parse(text) as BundleManifest;
    const timings = { stageMs: manifest.segments.map(() => 1), decisionMs: manifest.segments.map(() => 0.1) };
    const bundleHash = (await bundleCache.getManifest(request.manifestUrl))!.hash;
    await bundleCache.putPlan(planKey(bundleHash, 'wasm', 1, 'compiled'), { timings } as unknown as DevicePlan);
    const planned = await LearnRuntime.open({ ...request, usePlan: true }, () => {}, bdeps);
    expect(planned.state().learning!.fitCosts).toBe('ms');
    await planned.dispose();
  }, 120_000);

  it('a learning load of a bundle replaced on the server (its backbone, then its segment 0) learns from the new version', async () => {
    copyBundle('fashion-bundle', 'fb-swap');
    const cache = new MemoryBundleCache();
    const request = bundleLearnRequest('fb-swap');
    const open = async () => {
      const api = createWorkerApi({ loadOrt: loadOrtNode, learnStore: new MemoryLearnStore(), cache });
      const reply = await api.init(request);
      await api.dispose();
      return reply;
    };
    const v1 = await open();
    expect(v1.state.learning?.fromBundle).toBe(true);
    // the cached manifest (never stale here) lists the old backbone, which is no longer in the cache: its fetch
    // mismatches, and the load opens the new version, learning
    await cache.deleteSegments([await replaceInPlace('fb-swap', v1.manifest.backbone.file!)]);
    const v2 = await open();
    expect(v2.manifestHash).not.toBe(v1.manifestHash);
    expect([v2.state.learning?.fromBundle, v2.state.learning?.exitsOn]).toEqual([true, true]);
    // segment 0 replaced: the mismatch comes while the learner opens the bundle's exits
    const seg0 = v2.manifest.segments[0]!.file;
    await cache.deleteSegments([await replaceInPlace('fb-swap', seg0)]);
    const v3 = await open();
    expect(v3.manifestHash).not.toBe(v2.manifestHash);
    expect([v3.state.learning?.fromBundle, v3.state.learning?.exitsOn]).toEqual([true, true]);
  }, 120_000);

  it('a bundle deployed without its backbone.onnx (404) cannot learn: LEARNING_UNAVAILABLE, not FETCH_FAILED', async () => {
    const m = JSON.parse(readFileSync(path.join(tiny.dir, 'fashion-bundle/manifest.json'), 'utf8')) as BundleManifest;
    copyBundle('fashion-bundle', 'fb-nobackbone', [m.backbone.file!]);
    const request = tinyInitRequest(tiny.base, 'fb-nobackbone', {
      learn: { options: {}, persist: false, fromBundle: true },
    });
    const err = await LearnRuntime.open(request, () => {}, {
      loadOrt: loadOrtNode,
      learnStore: new MemoryLearnStore(),
      cache: new MemoryBundleCache(),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'LEARNING_UNAVAILABLE', details: { status: 404 } });
    expect((err as Error).message).toMatch(/backbone\.onnx.*not on the server/);
  }, 60_000);

  it('classify(x, { profile: true }) profiles the call while learning: full model, and through the exits', async () => {
    const deps = { loadOrt: loadOrtNode, learnStore: new MemoryLearnStore() };
    const check = async (rt: LearnRuntime) => {
      const inputs = [image(0), image(1)];
      const [a, b] = await rt.classify({ inputs, thresholds: [], probabilities: false, profile: true });
      const p = a!.profile!;
      expect(p).toBeDefined();
      expect(b!.profile).toBe(p); // one profile per call
      expect(p.runs).toBeGreaterThanOrEqual(1);
      expect(p.runMs).toBeGreaterThan(0);
      expect(p.replyAt).toBeGreaterThanOrEqual(p.recvAt);
      const parts = p.preprocessMs + p.runMs + p.queueMs + p.readbackMs + p.decisionMs + p.replyMs;
      expect(parts).toBeLessThanOrEqual(p.replyAt - p.recvAt + 1); // its parts within the call
      const [plain] = await rt.classify({ inputs, thresholds: [], probabilities: false });
      expect(plain!.profile).toBeUndefined();
    };
    const full = await LearnRuntime.open(learnRequest(), () => {}, deps);
    expect(full.state().learning!.exitsOn).toBe(false);
    await check(full);
    await full.dispose();
    const request = tinyInitRequest(tiny.base, 'fashion-bundle', {
      learn: { options: { minSamples: 300 }, persist: false, fromBundle: true },
    });
    const bundle = await LearnRuntime.open(request, () => {}, deps);
    expect(bundle.state().learning!.exitsOn).toBe(true); // the bundle's exits serve
    await check(bundle);
    await bundle.dispose();
  }, 60_000);

  it('a model the toolkit cannot cut serves everything with the full model and says why', async () => {
    // the two-branch classifier of prepare's fixtures: no inner cut
    let learners = 0;
    const base = learnRequest({ minSamples: 300 });
    const n = await LearnRuntime.open(
      {
        ...base,
        manifestUrl: `${tiny.base}/nocut.onnx`,
        learn: { ...base.learn!, input: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } },
      },
      () => {},
      { loadOrt: loadOrtNode, learnStore: new MemoryLearnStore(), startLearner: () => void learners++ },
    );
    const inputs = Array.from({ length: 50 }, (_, i) => ({
      kind: 'tensor' as const,
      data: Float32Array.from({ length: 48 }, (_, j) => Math.sin(i * 7 + j)),
    }));
    const out = [];
    keyCalls.n = 0;
    for (let k = 0; k < 8; k++) out.push(...(await n.classify({ inputs, thresholds: [], probabilities: false })));
    await n.settled();
    expect(keyCalls.n).toBe(0); // no input hashed for samples never stored
    const l = n.state().learning!;
    expect(out).toHaveLength(400);
    expect(out.every((r) => r.exit === -1)).toBe(true);
    expect(l.cannotLearn).toMatch(/no inner cut/);
    expect([l.exitsOn, l.fits, l.fitting, l.samplesStored]).toEqual([false, 0, false, 0]);
    expect(learners).toBe(0); // no worker for fits that never come
    await n.dispose();
  }, 60_000);
});

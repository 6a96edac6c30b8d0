// The learn runtime when storage or the audit misbehave (onnxruntime-node, the shipped Fashion-MNIST model): a save that
// never settles holds up neither the fits nor the calls nor a reset; a hung IndexedDB at load means learning in memory;
// audits are judged against the exits that served them, completed a few at a time, with a bounded backlog; an audit
// that throws is reported; a fit's exits already serving are not opened again; a state of another input spec is not
// restored; a reset forgets what learning() showed of the fits.
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import type { UseStore } from 'idb-keyval';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { fitLearned } from '../src/learn/fit.js';
import type { LearnerState } from '../src/learn/learner.js';
import type { InitRequest, LearnRequest } from '../src/protocol.js';
import {
  AUDIT_CHUNK,
  LearnRuntime,
  MAX_PENDING_AUDITS,
  pendingAuditCap,
  learnStateKey,
  type FitWorker,
  type LearnDeps,
} from '../src/runtime/learn-runtime.js';
import { IdbLearnStore } from '../src/runtime/learn-store.js';
import { BundleRuntime } from '../src/runtime/runtime.js';
import { fashionLearnRequest, image, MemoryLearnStore, modelDir, serve } from './fixtures/learn-runtime.js';
import { loadOrtNode, serveTinyBundles, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
/** A state with learned exits in force (one fit on 450 inputs). */
const fitted = new MemoryLearnStore();
beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
  copyFileSync(path.join(modelDir, 'model.onnx'), path.join(tiny.dir, 'fashion.onnx'));
  const rt = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: fitted });
  await serve(rt, 0, 450);
  await rt.settled();
  await rt.dispose();
}, 180_000);
afterAll(() => tiny.close());

const learnRequest = (over: Partial<LearnRequest['options']> = {}, extra: Partial<LearnRequest> = {}): InitRequest =>
  fashionLearnRequest(tiny.base, over, extra);

/** `p`, or a rejection after `ms` (what hangs fails the test instead of timing it out). */
const within = <T>(p: Promise<T>, ms = 10_000): Promise<T> =>
  Promise.race([p, new Promise<never>((_, no) => setTimeout(() => no(new Error(`hung for ${ms} ms`)), ms))]);

/** Opens the fitted state again (a copy): its exits serve at once. */
async function restored(request: InitRequest, deps: LearnDeps = {}): Promise<LearnRuntime> {
  const store = new MemoryLearnStore();
  for (const [h, s] of fitted.saved) store.saved.set(h, structuredClone(s));
  for (const [h, i] of fitted.inputs) store.inputs.set(h, i);
  return LearnRuntime.open(request, () => {}, { loadOrt: loadOrtNode, learnStore: store, ...deps });
}

/** The runtime's audits waiting for the full model. */
const pending = (rt: LearnRuntime): number => (rt as unknown as { pendingAudits: unknown[] }).pendingAudits.length;

describe('LearnRuntime when storage or the audit misbehave', () => {
  it('a save that never settles: the fit ends, calls and a reset never wait for it; a reset forgets the fit it showed', async () => {
    const store = new MemoryLearnStore();
    let hang = false;
    const save = store.save;
    store.save = (h: string, s: LearnerState) => (hang ? new Promise<void>(() => {}) : save(h, s));
    // the fits' worker broke: its runner fits in this thread (as learn-worker.ts's does)
    const broken: FitWorker = { run: (job, onProgress) => fitLearned(job, onProgress), close: () => {}, broken: true };
    const rt = await LearnRuntime.open(learnRequest(), () => {}, {
      loadOrt: loadOrtNode,
      learnStore: store,
      startLearner: () => broken,
    });
    hang = true;
    await serve(rt, 0, 450); // a fit at 400
    await vi.waitFor(() => expect(rt.state().learning!.exitsOn).toBe(true), { timeout: 60_000, interval: 50 });
    // the fit is over once its exits serve (its save still hangs): the next one may start
    await vi.waitFor(() => expect((rt as unknown as { fitting?: unknown }).fitting).toBeUndefined(), {
      timeout: 10_000,
      interval: 50,
    });
    const s = rt.state().learning!;
    expect([s.fits, s.fitRanIn, typeof s.lastFitSeconds]).toEqual([1, 'thread', 'number']);
    expect(await within(serve(rt, 450, 20))).toHaveLength(20);
    // a reset (its clear waits in the save loop, behind the hung save) does not hold the calls behind it
    void rt.resetLearning();
    expect(await within(serve(rt, 500, 1))).toHaveLength(1);
    const r = rt.state().learning!;
    expect([r.fits, r.exitsOn, r.restored, r.lastFitSeconds, r.fitRanIn]).toEqual([
      0,
      false,
      false,
      undefined,
      undefined,
    ]);
    void rt.dispose(); // (its wait for the hung save never ends)
  }, 120_000);

  it('a hung IndexedDB at load: learning goes on in memory, and says why', async () => {
    const hung: UseStore = () => new Promise(() => {});
    const rt = await within(
      LearnRuntime.open(learnRequest(), () => {}, {
        loadOrt: loadOrtNode,
        learnStore: new IdbLearnStore(() => hung, 100),
      }),
    );
    const l = rt.state().learning!;
    expect(l.persists).toBe(false);
    expect(l.persistReason).toMatch(/timed out.*in memory/);
    expect(await serve(rt, 0, 10)).toHaveLength(10);
    await within(rt.dispose());
  }, 60_000);

  it('a state learned with another input spec (normalisation) is not restored', async () => {
    const base = learnRequest();
    const rt = await restored({ ...base, learn: { ...base.learn!, input: { mean: [0.3], std: [0.353] } } });
    expect([rt.state().learning!.restored, rt.state().learning!.exitsOn]).toEqual([false, false]);
    await rt.dispose();
  }, 60_000);

  it('audits are judged against the exits that served them: a tightening makes the rest of the batch samples only', async () => {
    const rt = await restored(learnRequest({ minAudits: 5, learnShare: 1, auditShare: 1 }, { corruptAudit: true }));
    const s0 = rt.state().learning!;
    expect([s0.restored, s0.exitsOn]).toEqual([true, true]);
    await serve(rt, 500, 50); // every input completed, every audit disagreeing
    await rt.settled(); // (the completions too)
    const s = rt.state().learning!;
    expect(s.tightenings - s0.tightenings).toBe(1);
    expect(s.audit.totalAudited - s0.audit.totalAudited).toBeLessThanOrEqual(AUDIT_CHUNK); // not 50
    expect(s.samplesSeen - s0.samplesSeen).toBe(50); // the stale ones are samples still
    await rt.dispose();
  }, 60_000);

  it('an audit names the exits version in force when its input was served, not when the serving run ended', async () => {
    const rt = await restored(learnRequest({ minAudits: 5, learnShare: 1, auditShare: 1 }));
    const inner = rt as unknown as {
      serving: BundleRuntime;
      learner: { version: number; status(): { audit: { totalAudited: number } } };
    };
    const classify = inner.serving.classify.bind(inner.serving);
    // a fit adopted while the serving run is under way (outside the queue) bumps the version
    inner.serving.classify = async (r) => {
      const out = await classify(r);
      inner.learner.version++;
      return out;
    };
    const before = inner.learner.status().audit.totalAudited;
    await serve(rt, 500, 20);
    await rt.settled();
    // every input was served under the older version: samples only, no audit counted
    expect(inner.learner.status().audit.totalAudited).toBe(before);
    expect(rt.state().learning!.samplesSeen).toBeGreaterThan(0);
    await rt.dispose();
  }, 60_000);

  it('the saved state is per class-score output: a state learned from another output of the model is not restored', async () => {
    const store = new MemoryLearnStore();
    const [key, state] = [...fitted.saved][0]!;
    const hash = key.slice(0, key.lastIndexOf('/'));
    expect(key).toBe(learnStateKey(hash, key.slice(hash.length + 1)));
    store.saved.set(learnStateKey(hash, 'aux'), structuredClone(state));
    for (const i of fitted.inputs.values()) store.inputs.set(learnStateKey(hash, 'aux'), i);
    const rt = await LearnRuntime.open(learnRequest(), () => {}, { loadOrt: loadOrtNode, learnStore: store });
    expect(rt.state().learning!.restored).toBe(false);
    expect(rt.stateKey).toBe(key);
    await rt.dispose();
  }, 60_000);

  it('bounds the audits waiting for the full model in bytes too (large inputs)', () => {
    expect(pendingAuditCap(28 * 28)).toBe(MAX_PENDING_AUDITS);
    expect(pendingAuditCap(224 * 224 * 3)).toBe(55); // 32 MiB of 588 KiB inputs
    expect(pendingAuditCap(4096 * 4096 * 3)).toBe(AUDIT_CHUNK);
  });

  it('completes audits a few at a time (a call waits for one part), at most MAX_PENDING_AUDITS; a failure is reported', async () => {
    const opens = vi.spyOn(BundleRuntime, 'open');
    const rt = await restored(learnRequest({ learnShare: 1, auditShare: 1 }));
    expect(rt.state().learning!.exitsOn).toBe(true);
    // the exits in force are served already: a fit that was not adopted opens nothing again
    const opened = opens.mock.calls.length;
    await (rt as unknown as { serveLearned(): Promise<void> }).serveLearned();
    expect(opens.mock.calls.length).toBe(opened);
    opens.mockRestore();
    const inputs = Array.from({ length: 300 }, (_, i) => image(i));
    await rt.classify({ inputs, thresholds: [], probabilities: false });
    expect(pending(rt)).toBe(MAX_PENDING_AUDITS); // drawn beyond it: served, not completed
    await new Promise((r) => setTimeout(r, 0)); // the first part of the completions starts
    await rt.classify({ inputs: [image(0)], thresholds: [], probabilities: false });
    expect(pending(rt)).toBeGreaterThanOrEqual(MAX_PENDING_AUDITS - 2 * AUDIT_CHUNK); // not all done before the call
    await rt.settled();
    expect(pending(rt)).toBe(0);
    // an audit that throws: reported as lastError (no unhandled rejection), serving goes on
    const runtime = rt as unknown as { runFeatures: () => Promise<never> };
    runtime.runFeatures = () => Promise.reject(new Error('boom'));
    await serve(rt, 600, 10);
    await vi.waitFor(() => expect(rt.state().learning!.lastError).toMatch(/audit failed: boom/), { timeout: 10_000 });
    await rt.dispose();
  }, 120_000);
});

// The page's use of device plans (the Classifier over a fake transport): a plan applies its thresholds and shows in
// info(), setTarget() picks from its curve, and a WebGPU plan stops applying after the backend fell back to WASM.
import { describe, expect, it } from 'vitest';
import { NEVER_EXIT as NEVER } from '../src/bundle/manifest.js';
import type { DevicePlan } from '../src/policy/device-plan.js';
import { SelfxitError } from '../src/errors.js';
import { ClassifierImpl } from '../src/page/classifier.js';
import { chooseThresholds } from '../src/page/target.js';
import type { PlanRequest } from '../src/protocol.js';
import type { Classifier } from '../src/types.js';
import { FakeTransport as BaseTransport, manifest } from './fixtures/page-fakes.js';

function makePlan(backend: 'webgpu' | 'wasm', target: number): DevicePlan {
  return {
    version: 1,
    manifestHash: 'h',
    backend,
    threads: 1,
    measuredAt: '2026-01-01T00:00:00.000Z',
    timings: { stageMs: [1, 2, 3], decisionMs: [0.1, 0.2, 0] },
    target,
    enabled: [true, false],
    thresholds: [0.7, NEVER],
    expectedAgreement: 0.97,
    expectedMacsFraction: 0.6,
    expectedMsFraction: 0.5,
    curve: [
      { knob: 0.5, thresholds: [0.5, NEVER], agreement: 0.9, macsFraction: 0.4, exitShares: [0.7, 0, 0.3] },
      { knob: 0.7, thresholds: [0.7, NEVER], agreement: 0.97, macsFraction: 0.6, exitShares: [0.5, 0, 0.5] },
      { knob: NEVER, thresholds: [NEVER, NEVER], agreement: 1, macsFraction: 1.1, exitShares: [0, 0, 1] },
    ],
  };
}

/** Answers plan() with a WebGPU plan for 0.9 unless told otherwise. */
class FakeTransport extends BaseTransport {
  constructor() {
    super(makePlan('webgpu', 0.9));
  }
}

const make = (transport: FakeTransport, plan?: DevicePlan): Classifier =>
  new ClassifierImpl(transport, { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/m/manifest.json', plan });

describe('Classifier with a device plan', () => {
  it('without a plan: the manifest thresholds, no info().plan', async () => {
    const client = new FakeTransport();
    const clf = make(client);
    await clf.classify(new Float32Array(1));
    expect(client.sent).toEqual([[0.9, 0.9]]);
    expect(clf.info().plan).toBeUndefined();
  });

  it('a cached plan applies at load: thresholds, expectations, info().plan; setTarget picks from its curve', async () => {
    const client = new FakeTransport();
    const clf = make(client, makePlan('webgpu', 0.97));
    const info = clf.info();
    expect(info.plan).toEqual({
      target: 0.97,
      enabled: [true, false],
      thresholds: [0.7, NEVER],
      expectedMsFraction: 0.5,
      expectedMacsFraction: 0.6,
      measuredAt: '2026-01-01T00:00:00.000Z',
      stageMs: [1, 2, 3],
      decisionMs: [0.1, 0.2, 0],
    });
    expect(info).toMatchObject({ target: 0.97, expectedAgreement: 0.97, expectedMacsFraction: 0.6 });
    expect(info.exits.map((e) => e.threshold)).toEqual([0.7, NEVER]);
    await clf.classify(new Float32Array(1));
    expect(client.sent.at(-1)).toEqual([0.7, NEVER]);
    // the plan's curve, not the bundle's (exit 1 stays off), with the margin over calibration.samples = 1000
    expect(clf.setTarget(0.85).thresholds).toEqual([0.5, NEVER]);
    expect(clf.setTarget(0.95).thresholds).toEqual([0.7, NEVER]);
    expect(clf.setTarget(0.97).thresholds).toEqual([NEVER, NEVER]); // 0.97 of 1000 has a lower bound below 0.97
    expect(clf.info().plan?.target).toBe(0.97); // info().plan describes the plan as made
    expect(info.plan).not.toHaveProperty('exitMs'); // a plan without measured exit costs (the stage engine)
    // a plan made on the compiled engine: its measured exit costs too
    const compiled = makePlan('webgpu', 0.97);
    const withExitMs = { ...compiled, timings: { ...compiled.timings, exitMs: [0.05, 0, 0] } };
    expect(make(new FakeTransport(), withExitMs).info().plan).toMatchObject({
      stageMs: [1, 2, 3],
      exitMs: [0.05, 0, 0],
    });
  });

  it('plan() applies the returned plan (target default: the current one) and passes errors on with their code', async () => {
    const client = new FakeTransport();
    const clf = make(client);
    let asked: PlanRequest | undefined;
    const plan = client.plan.bind(client);
    client.plan = async (req) => {
      asked = req;
      return plan(req);
    };
    const p = await clf.plan();
    expect(asked).toEqual({ target: 0.95 });
    expect(p.target).toBe(0.9);
    expect(clf.info().plan?.thresholds).toEqual([0.7, NEVER]);
    await clf.classify(new Float32Array(1));
    expect(client.sent.at(-1)).toEqual([0.7, NEVER]);
    await expect(clf.plan({ target: 1.5 })).rejects.toMatchObject({ code: 'INVALID_TARGET' });
    client.planReply = new SelfxitError('INVALID_BUNDLE', 'no validation file');
    const err = await clf.plan({ target: 0.9 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SelfxitError);
    expect(err).toMatchObject({ code: 'INVALID_BUNDLE' });
    expect(clf.info().plan?.target).toBe(0.9); // the earlier plan stays
  });

  it('a setTarget() made while plan() measures is kept: the plan applies with thresholds for the newer target', async () => {
    const client = new FakeTransport();
    let answer: (p: DevicePlan) => void = () => {};
    client.plan = () => new Promise<DevicePlan>((r) => (answer = r));
    const clf = make(client);
    const planning = clf.plan({ target: 0.9 });
    expect(clf.setTarget(0.8).target).toBe(0.8);
    const plan = makePlan('webgpu', 0.9);
    answer(plan);
    await expect(planning).resolves.toBe(plan);
    const expected = chooseThresholds(manifest, 0.8, plan);
    expect(clf.info()).toMatchObject({ target: 0.8, plan: { target: 0.9 } });
    await clf.classify(new Float32Array(1));
    expect(client.sent.at(-1)).toEqual(expected.thresholds);
    // with no setTarget() meanwhile, the plan's own target and thresholds apply
    const again = clf.plan({ target: 0.9 });
    answer(plan);
    await again;
    expect(clf.info().target).toBe(0.9);
    await clf.classify(new Float32Array(1));
    expect(client.sent.at(-1)).toEqual(plan.thresholds);
  });

  it("a setTarget() made while plan() measures that the plan's curve does not reach: its most faithful point applies", async () => {
    const client = new FakeTransport();
    let answer: (p: DevicePlan) => void = () => {};
    client.plan = () => new Promise<DevicePlan>((r) => (answer = r));
    const clf = make(client);
    const planning = clf.plan({ target: 0.9 });
    clf.setTarget(0.999);
    const base = makePlan('webgpu', 0.9);
    const capped = { ...base, curve: base.curve.slice(0, 2) }; // at most 0.97 agreement
    answer(capped);
    await planning;
    expect(chooseThresholds(manifest, 0.999, capped).reached).toBe(false);
    const info = clf.info();
    expect(info).toMatchObject({ target: 0.999, expectedAgreement: 0.97, plan: { target: 0.9 } });
    expect(info.expectedAgreement).toBeLessThan(info.target); // how a caller sees the target is not reached
    expect(info.exits.map((e) => e.threshold)).toEqual([0.7, NEVER]);
  });

  it('bad plan()/setTarget() arguments are typed errors naming the value and its type', async () => {
    const clf = make(new FakeTransport());
    const bad = (f: () => unknown): Promise<unknown> =>
      Promise.resolve()
        .then(f)
        .catch((e: unknown) => e);
    expect(await bad(() => clf.plan(null as never))).toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: 'plan options must be an object, got null',
    });
    expect(await bad(() => clf.setTarget('0.99' as never))).toMatchObject({
      code: 'INVALID_TARGET',
      message: 'agreement target must be a number in (0, 1], got "0.99" (string)',
    });
    expect(await bad(() => clf.plan({ target: '0.9' as never }))).toMatchObject({
      code: 'INVALID_TARGET',
      message: expect.stringContaining('got "0.9" (string)') as unknown,
    });
    expect(await bad(() => clf.setTarget(1.5))).toMatchObject({ code: 'INVALID_TARGET' });
  });

  it('a WebGPU plan stops applying once the backend fell back to WASM', async () => {
    const client = new FakeTransport();
    const clf = make(client, makePlan('webgpu', 0.95));
    expect(clf.info().plan).toBeDefined();
    client.state = { ...client.state, backend: 'wasm', fallbackReason: 'a WebGPU run failed' };
    await clf.classify(new Float32Array(1));
    expect(client.sent.at(-1)).toEqual([0.9, 0.9]); // the manifest's thresholds at the calibration target
    expect(clf.info().plan).toBeUndefined();
    expect(clf.info().target).toBe(0.95);
    // another target: re-chosen from the bundle's curve
    const c2 = new FakeTransport();
    const other = make(c2, makePlan('webgpu', 0.85));
    c2.state = { ...c2.state, backend: 'wasm' };
    expect(other.info().plan).toBeUndefined();
    expect(other.info().exits.map((e) => e.threshold)).toEqual(chooseThresholds(manifest, 0.85).thresholds);
    expect(other.info().target).toBe(0.85);
  });

  it('a plan measured on the compiled engine stops applying once the stage engine runs (a fallback mid-session)', async () => {
    const client = new FakeTransport();
    client.state = { ...client.state, engine: 'compiled' };
    const clf = make(client, { ...makePlan('webgpu', 0.95), engine: 'compiled' });
    await clf.classify(new Float32Array(1));
    expect(client.sent.at(-1)).toEqual([0.7, NEVER]); // the plan's
    client.state = { ...client.state, engine: 'stages', engineFallbackReason: 'the compiled model failed' };
    await clf.classify(new Float32Array(1));
    expect(client.sent.at(-1)).toEqual([0.9, 0.9]); // the manifest's thresholds at the calibration target
    expect(clf.info().plan).toBeUndefined();
  });
});

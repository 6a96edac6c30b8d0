// Page-side pure logic: load() option defaults/validation, bundle URL → manifest URL, setTarget's curve choice.
import { describe, expect, it } from 'vitest';
import type { BundleManifest, CurvePoint } from '../src/bundle/manifest.js';
import type { DevicePlan } from '../src/policy/device-plan.js';
import { LOAD_DEFAULTS, manifestUrlOf, resolveLoadOptions } from '../src/page/options.js';
import { chooseThresholds } from '../src/page/target.js';

describe('resolveLoadOptions', () => {
  it('fills in the documented defaults', () => {
    const r = resolveLoadOptions('https://cdn.example/models/m/');
    expect(r.init).toMatchObject({
      manifestUrl: 'https://cdn.example/models/m/manifest.json',
      backend: 'auto',
      threads: undefined,
      cache: true,
      manifestMaxAgeMs: 24 * 3600 * 1000,
    });
    expect(r.init.wasmPaths).toBeUndefined(); // the worker's default: ort/ beside itself (bundler-friendly URLs)
    expect(r.workerUrl).toBeUndefined();
    expect(r.init.usePlan).toBe(true);
    expect(LOAD_DEFAULTS).toEqual({
      backend: 'auto',
      cache: true,
      manifestMaxAgeMs: 86_400_000,
      plan: 'cached',
      timeoutMs: 120_000,
      heartbeatMs: 5_000,
      callTimeoutMs: 300_000,
      engine: 'auto',
      pruneExits: true,
      sharedMemory: true,
    });
    expect(r.init.engine).toBe('auto');
    expect(r.init.pruneExits).toBe(true);
    expect(resolveLoadOptions('https://x.test/b/', { pruneExits: false }).init.pruneExits).toBe(false);
    expect(r.sharedMemory).toBe(true);
    expect(resolveLoadOptions('https://x.test/b/', { sharedMemory: false }).sharedMemory).toBe(false);
    expect(r).toMatchObject({
      timeoutMs: 120_000,
      signal: undefined,
      liveness: { heartbeatMs: 5000, callTimeoutMs: 300_000 },
    });
    expect(resolveLoadOptions('https://x.test/b/', { timeoutMs: Infinity, callTimeoutMs: 0 })).toMatchObject({
      timeoutMs: 0,
      liveness: { callTimeoutMs: 0 },
    });
    expect(() => resolveLoadOptions('https://x.test/b/', { heartbeatMs: -1 })).toThrow(/heartbeatMs/);
    // so short that a worker only busy for a moment would be stopped: refused (0 stays: off)
    for (const key of ['heartbeatMs', 'callTimeoutMs'] as const) {
      expect(() => resolveLoadOptions('https://x.test/b/', { [key]: 1 })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/at least 100 ms/) }),
      );
      expect(resolveLoadOptions('https://x.test/b/', { [key]: 100 }).liveness[key]).toBe(100);
    }
    expect(() => resolveLoadOptions('https://x.test/b/', { signal: {} as AbortSignal })).toThrow(/AbortSignal/);
    expect(resolveLoadOptions('https://x.test/b/', { plan: 'off' }).init.usePlan).toBe(false);
  });

  it('keeps explicit options and normalises wasmPaths to a folder', () => {
    const r = resolveLoadOptions('https://x.test/b/manifest.json', {
      backend: 'wasm',
      threads: 2,
      cache: 'reload',
      wasmPaths: 'https://x.test/ort',
      workerUrl: 'https://x.test/w.js',
    });
    expect(r.init).toMatchObject({
      manifestUrl: 'https://x.test/b/manifest.json',
      backend: 'wasm',
      threads: 2,
      cache: 'reload',
      wasmPaths: 'https://x.test/ort/',
    });
    expect(r.workerUrl?.href).toBe('https://x.test/w.js');
  });

  it.each([
    [{ backend: 'cuda' }, /backend/],
    [{ threads: 0 }, /threads/],
    [{ threads: 1.5 }, /threads/],
    [{ cache: 'yes' }, /cache/],
    [{ manifestMaxAgeMs: -1 }, /manifestMaxAgeMs/],
    [{ onProgress: 3 }, /onProgress/],
    [{ plan: 'always' }, /plan/],
    [{ engine: 'fast' }, /engine/],
    [{ pruneExits: 'yes' }, /pruneExits/],
    [{ sharedMemory: 1 }, /sharedMemory/],
  ])('rejects %j with INVALID_ARGUMENT', (opts, msg) => {
    expect(() => resolveLoadOptions('https://x.test/b/', opts as never)).toThrow(msg);
    try {
      resolveLoadOptions('https://x.test/b/', opts as never);
    } catch (e) {
      expect(e).toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
  });

  it('rejects an empty bundle URL', () => {
    expect(() => resolveLoadOptions('')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('manifestUrlOf', () => {
  it('maps folders (with or without a slash) to manifest.json and keeps .json URLs', () => {
    expect(manifestUrlOf('/m/fashion', 'https://a.test/page/')).toBe('https://a.test/m/fashion/manifest.json');
    expect(manifestUrlOf('m/', 'https://a.test/page/')).toBe('https://a.test/page/m/manifest.json');
    expect(manifestUrlOf('https://b.test/x/v2.json?sig=1')).toBe('https://b.test/x/v2.json?sig=1');
  });
});

function withCurve(curve: CurvePoint[]): BundleManifest {
  return {
    exits: [{}, {}],
    calibration: { curve },
  } as unknown as BundleManifest;
}

describe('chooseThresholds (setTarget)', () => {
  const curve: CurvePoint[] = [
    { knob: 0.5, thresholds: [0.5, 0.5], agreement: 0.9, macsFraction: 0.4, exitShares: [] },
    { knob: 0.8, thresholds: [0.8, 0.8], agreement: 0.97, macsFraction: 0.55, exitShares: [] },
    { knob: 0.9, thresholds: [0.9, 0.9], agreement: 0.99, macsFraction: 0.7, exitShares: [] },
    { knob: 0.95, thresholds: [0.95, 0.95], agreement: 0.99, macsFraction: 0.8, exitShares: [] },
    { knob: 1, thresholds: [1, 1], agreement: 1, macsFraction: 1.02, exitShares: [] },
  ];
  it('takes the cheapest point whose agreement reaches the target', () => {
    expect(chooseThresholds(withCurve(curve), 0.99)).toMatchObject({
      thresholds: [0.9, 0.9],
      agreement: 0.99,
      macsFraction: 0.7,
      reached: true,
    });
    expect(chooseThresholds(withCurve(curve), 0.95).thresholds).toEqual([0.8, 0.8]);
    expect(chooseThresholds(withCurve(curve), 0.5).thresholds).toEqual([0.5, 0.5]);
    expect(chooseThresholds(withCurve(curve), 1).thresholds).toEqual([1, 1]);
  });

  it('falls back to the most faithful point when none reaches the target', () => {
    const c = chooseThresholds(withCurve(curve.slice(0, 3)), 0.999);
    expect(c).toMatchObject({ thresholds: [0.9, 0.9], reached: false });
  });

  it("with a device plan, picks from the plan's curve", () => {
    const plan = {
      curve: [
        { knob: 0.7, thresholds: [0.7, 1.0000001], agreement: 0.99, macsFraction: 0.6, exitShares: [] },
        ...curve.slice(4),
      ],
    } as unknown as DevicePlan;
    expect(chooseThresholds(withCurve(curve), 0.99, plan)).toMatchObject({
      thresholds: [0.7, 1.0000001],
      macsFraction: 0.6,
      reached: true,
    });
    expect(chooseThresholds(withCurve(curve), 0.999, plan).thresholds).toEqual([1, 1]);
  });

  it('rejects targets outside (0, 1] and empty curves', () => {
    for (const t of [0, -0.1, 1.01, Number.NaN])
      expect(() => chooseThresholds(withCurve(curve), t)).toThrow(expect.objectContaining({ code: 'INVALID_TARGET' }));
    expect(() => chooseThresholds(withCurve([]), 0.9)).toThrow(expect.objectContaining({ code: 'INVALID_BUNDLE' }));
  });
});

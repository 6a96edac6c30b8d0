// The WebGPU → WASM fallback (session-pool.ts) in Node: onnxruntime-node posing as a WebGPU backend whose session
// creation or runs fail, on the tiny bundles over local HTTP; classify and plan go on on WASM with the same results.
import type { InferenceSession } from 'onnxruntime-common';
import * as ortNode from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import type { WireInput } from '../src/protocol.js';
import { noCache } from '../src/runtime/cache.js';
import type { OrtHandle, OrtWeb } from '../src/runtime/ort-backend.js';
import { BundleRuntime } from '../src/runtime/runtime.js';
import { serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;

beforeAll(async () => {
  tiny = await serveTinyBundles(() => {});
});

afterAll(() => tiny.close());

/** What fails while the (fake) backend is WebGPU: session creation (a count) and runs (while `runs` is true). */
interface Failures {
  create: number;
  runs: boolean;
  /** The device is lost (runs fail from then on) as the n-th compiled session (one with a `thresholds` input) is made. */
  lostAtCompiled?: number;
  /** Runs of more rows than this fail with an out-of-memory error (the device keeps working unless `lostOnOom`). */
  oomAbove?: number;
  /** The device is lost once a run went out of memory (runs fail from then on). */
  lostOnOom?: boolean;
  /** Runs of the sessions it picks (by input names) go out of memory at any batch, one row too (the device works). */
  oomOn?: (inputNames: readonly string[]) => boolean;
}

/** onnxruntime-node on the CPU reported as WebGPU; sessions made while the handle says 'webgpu' fail as `fail` says. */
function gpuHandle(fail: Failures): OrtHandle {
  const handle: OrtHandle = {
    ort: undefined as unknown as OrtWeb,
    backend: 'webgpu',
    threads: 1,
    fallbackReason: undefined,
    executionProvider: 'cpu',
  };
  const create = async (bytes: Uint8Array, options: InferenceSession.SessionOptions): Promise<InferenceSession> => {
    const onGpu = handle.backend === 'webgpu';
    if (onGpu && fail.create > 0) {
      fail.create--;
      throw new Error('no WebGPU today');
    }
    const { preferredOutputLocation: _, ...cpuOptions } = options;
    const session = await ortNode.InferenceSession.create(bytes, cpuOptions);
    if (session.inputNames.includes('thresholds') && fail.lostAtCompiled !== undefined && --fail.lostAtCompiled === 0)
      fail.runs = true;
    if (!onGpu) return session;
    const run = session.run.bind(session) as (...a: unknown[]) => Promise<unknown>;
    return new Proxy(session, {
      get(target, key, receiver) {
        if (key !== 'run') return Reflect.get(target, key, receiver) as unknown;
        return (...args: unknown[]) => {
          if (fail.runs) return Promise.reject(new Error('device lost'));
          const rows = (Object.values(args[0] as Record<string, { dims: readonly number[] }>)[0]?.dims ?? [1])[0]!;
          if ((fail.oomAbove !== undefined && rows > fail.oomAbove) || fail.oomOn?.(target.inputNames)) {
            if (fail.lostOnOom) fail.runs = true;
            return Promise.reject(new Error('Failed to allocate a buffer of size 805306368: out of memory'));
          }
          return run(...args);
        };
      },
    });
  };
  (handle as { ort: unknown }).ort = { ...ortNode, InferenceSession: { create } };
  return handle;
}

function open(fail: Failures, engine?: 'compiled' | 'stages'): Promise<BundleRuntime> {
  const req = tinyInitRequest(tiny.base, 'tiny', { backend: 'webgpu', cache: false, ...(engine ? { engine } : {}) });
  return BundleRuntime.open(req, () => {}, { cache: noCache, loadOrt: async () => gpuHandle(fail) });
}

async function expectReference(rt: BundleRuntime): Promise<void> {
  const inputs: WireInput[] = tiny.inputs.map((data) => ({ kind: 'tensor', data }));
  const thresholds = rt.manifest.exits.map((e) => e.threshold);
  const out = await rt.classify({ inputs, thresholds, probabilities: false });
  expect(out.map((r) => [r.index, r.exit])).toEqual(tiny.expected.map((e) => [e.index, e.exit]));
}

/** One input that runs through every segment, alone: its reference class, and no exit. */
async function expectDeep(rt: BundleRuntime): Promise<void> {
  const deep = tiny.expected.findIndex((e) => e.exit === -1);
  const thresholds = rt.manifest.exits.map((e) => e.threshold);
  const [r] = await rt.classify({
    inputs: [{ kind: 'tensor', data: tiny.inputs[deep]! }],
    thresholds,
    probabilities: false,
  });
  expect([r!.index, r!.exit]).toEqual([tiny.expected[deep]!.index, -1]);
}

describe('WebGPU → WASM fallback', () => {
  it('a session WebGPU cannot create is made on WASM, and that session stays usable', async () => {
    const rt = await open({ create: 1, runs: false });
    expect(rt.state()).toMatchObject({ backend: 'wasm', sessions: [true, false, false] });
    expect(rt.state().fallbackReason).toMatch(/^creating a WebGPU session for segment 0 failed: .*no WebGPU today/);
    await expectReference(rt);
    await rt.dispose();
  });

  it('a failed WebGPU run switches to WASM and classifies again there', async () => {
    const fail = { create: 0, runs: false };
    const rt = await open(fail);
    expect(rt.state().backend).toBe('webgpu');
    fail.runs = true;
    await expectReference(rt);
    expect(rt.state()).toMatchObject({ backend: 'wasm', fallbackReason: 'a WebGPU run failed: device lost' });
    await rt.dispose();
  });

  it('a WebGPU run out of memory on a working device rejects with OUT_OF_MEMORY and stays on WebGPU', async () => {
    const rt = await open({ create: 0, runs: false, oomAbove: 8 });
    const inputs: WireInput[] = tiny.inputs.map((data) => ({ kind: 'tensor', data }));
    const thresholds = rt.manifest.exits.map((e) => e.threshold);
    const err = await rt.classify({ inputs, thresholds, probabilities: false }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'OUT_OF_MEMORY', details: { backend: 'webgpu' } });
    expect((err as Error).message).toMatch(/try smaller batches/);
    expect(rt.state()).toMatchObject({ backend: 'webgpu' });
    expect(rt.state().fallbackReason).toBeUndefined();
    // smaller batches run, on WebGPU
    const out = await rt.classify({ inputs: inputs.slice(0, 8), thresholds, probabilities: false });
    expect(out.map((r) => [r.index, r.exit])).toEqual(tiny.expected.slice(0, 8).map((e) => [e.index, e.exit]));
    expect(rt.state().backend).toBe('webgpu');
    await rt.dispose();
  });

  it('one input out of memory on a working device (the compiled model too large): the compiled engine off, the stages on WebGPU', async () => {
    const fail: Failures = { create: 0, runs: false };
    const rt = await open(fail);
    expect(rt.state()).toMatchObject({ engine: 'compiled', backend: 'webgpu' });
    let compiledRuns = 0;
    fail.oomOn = (names) => names.includes('thresholds') && ++compiledRuns > 0; // segment 0 alone still runs one input
    const thresholds = rt.manifest.exits.map((e) => e.threshold);
    for (let i = 0; i < tiny.inputs.length; i++) {
      const [r] = await rt.classify({
        inputs: [{ kind: 'tensor', data: tiny.inputs[i]! }],
        thresholds,
        probabilities: false,
      });
      expect([r!.index, r!.exit], `input ${i}`).toEqual([tiny.expected[i]!.index, tiny.expected[i]!.exit]);
    }
    expect(compiledRuns, 'the compiled model ran once, then never again').toBe(1);
    expect(rt.state()).toMatchObject({ backend: 'webgpu', engine: 'stages' });
    expect(rt.state().fallbackReason).toBeUndefined();
    expect(rt.state().engineFallbackReason).toMatch(
      /^onnxruntime \(webgpu\) ran out of memory running the compiled model: .*out of memory/,
    );
    await rt.dispose();
  });

  it('with the compiled engine, a stage past its prefix out of memory at one row: WASM takes over, the engine stays on', async () => {
    const fail: Failures = { create: 0, runs: false };
    const rt = await open(fail);
    fail.oomOn = (names) => names.includes(rt.manifest.segments[1]!.input);
    await expectDeep(rt);
    expect(rt.state()).toMatchObject({ backend: 'wasm', engine: 'compiled' });
    expect(rt.state().fallbackReason).toMatch(/segment 1 .*out of memory/); // its warm-up run, as its session is made
    await rt.dispose();
  });

  it('a later segment out of memory at batch 1: a single-input call and a plan go on on WASM', async () => {
    for (const call of ['classify', 'plan'] as const) {
      const fail: Failures = { create: 0, runs: false };
      const rt = await open(fail, 'stages');
      await expectReference(rt); // every segment's session made on WebGPU
      const later = rt.manifest.segments[1]!.input;
      fail.oomOn = (names) => names.includes(later);
      if (call === 'plan') expect(await rt.plan({ target: 0.99 })).toMatchObject({ backend: 'wasm' });
      else {
        await expectDeep(rt);
      }
      expect(rt.state().backend).toBe('wasm');
      expect(rt.state().fallbackReason).toMatch(/out of memory/);
      await rt.dispose();
    }
  });

  it('out of memory on a device that no longer runs anything (lost): the fallback to WASM as before', async () => {
    const rt = await open({ create: 0, runs: false, oomAbove: 8, lostOnOom: true });
    const inputs: WireInput[] = tiny.inputs.map((data) => ({ kind: 'tensor', data }));
    const thresholds = rt.manifest.exits.map((e) => e.threshold);
    const out = await rt.classify({ inputs, thresholds, probabilities: false });
    expect(out.map((r) => [r.index, r.exit])).toEqual(tiny.expected.map((e) => [e.index, e.exit]));
    expect(rt.state()).toMatchObject({ backend: 'wasm' });
    expect(rt.state().fallbackReason).toMatch(/out of memory/);
    await rt.dispose();
  });

  it('a WebGPU device lost while a compiled model is made in the background: the compiled engine goes on, on WASM', async () => {
    // the first compiled model is made at open; the device is lost as the second (gated) one is made
    const fail: Failures = { create: 0, runs: false, lostAtCompiled: 2 };
    const rt = await open(fail);
    expect(rt.state()).toMatchObject({ engine: 'compiled', backend: 'webgpu' });
    const off0 = rt.manifest.exits.map((_, i) => (i === 0 ? NEVER_EXIT : 1));
    const one = (i: number) =>
      rt.classify({ inputs: [{ kind: 'tensor', data: tiny.inputs[i]! }], thresholds: off0, probabilities: false });
    await one(0); // disables exit 0: the next call starts the gated model's build in the background
    for (let i = 1; i < 6; i++) await one(i);
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 1; i < 4; i++) await one(i);
    expect(rt.state()).toMatchObject({ engine: 'compiled', backend: 'wasm' });
    expect(rt.state().fallbackReason).toMatch(/^a WebGPU run failed.*: device lost$/);
    await expectReference(rt);
    await rt.dispose();
  });

  it('a failed WebGPU run while measuring makes the plan on WASM', async () => {
    const fail = { create: 0, runs: false };
    const rt = await open(fail);
    await expectReference(rt); // every segment's session made on WebGPU
    fail.runs = true;
    const plan = await rt.plan({ target: 0.99 });
    expect(plan).toMatchObject({ backend: 'wasm' });
    // the measurement first makes the gated compiled model: its failure, the device's, switches to WASM (the compiled
    // engine goes on there)
    expect(rt.state().fallbackReason).toBe('a WebGPU run failed while making the compiled model: device lost');
    expect(rt.state().engine).toBe('compiled');
    await rt.dispose();
  });
});

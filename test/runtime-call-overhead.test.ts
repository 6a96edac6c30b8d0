// The worker's per-call work that is done once or only when needed (issue 12's worst case): the input buffer reused
// between calls (never one a call still runs on, never a tensor the request handed in), the state snapshot kept while
// it holds (the page still gets every new one), the pruner's decisions skipped when nothing they read changed, and the
// running median kept sorted; each checked against doing the work every time (tiny bundle, onnxruntime-node).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { createRng } from '../src/calibrate/rng.js';
import { RunningMedian } from '../src/policy/exit-economics.js';
import { ExitPruner, type ExitEconomics } from '../src/policy/exit-pruning.js';
import type { ClassifyAnswer, ClassifyRequest, WireInput, WireResult } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { noCache } from '../src/runtime/cache.js';
import { BundleRuntime } from '../src/runtime/runtime.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
beforeAll(async () => void (tiny = await serveTinyBundles(() => {})));
afterAll(() => tiny.close());

/** Tiny input `i` as a view into a larger buffer: the runtime copies it into its input buffer. */
function view(i: number): WireInput {
  const data = tiny.inputs[i]!;
  const buf = new Float32Array(data.length + 8);
  buf.set(data, 8);
  return { kind: 'tensor', data: buf.subarray(8) };
}

const decision = (r: WireResult): [number, number, number] => [r.index, r.exit, Math.round(r.confidence * 1e6)];

describe('per-call work done once', () => {
  it('reuses one input buffer between calls, never one a call still runs on nor a tensor the request handed in', async () => {
    for (const engine of ['compiled', 'stages'] as const) {
      const rt = await BundleRuntime.open(tinyInitRequest(tiny.base, 'tiny', { engine, pruneExits: false }), () => {}, {
        loadOrt: loadOrtNode,
        cache: noCache,
      });
      const thresholds = rt.manifest.exits.map((e) => e.threshold);
      const one = (input: WireInput): Promise<WireResult[]> =>
        rt.classify({ inputs: [input], thresholds, probabilities: true });
      const n = 12;
      const want = tiny.expected.slice(0, n).map((e) => [e.index, e.exit]);
      // one after another, then all at once (each call preprocesses while the others wait for onnxruntime)
      const serial: WireResult[] = [];
      for (let i = 0; i < n; i++) serial.push((await one(view(i)))[0]!);
      const overlapping = (await Promise.all(Array.from({ length: n }, (_, i) => one(view(i))))).map((r) => r[0]!);
      expect(serial.map((r) => [r.index, r.exit])).toEqual(want);
      expect(overlapping.map(decision)).toEqual(serial.map(decision));
      // a tensor that fills its own buffer is run as it is, and is not written by later calls
      const own = tiny.inputs[0]!.slice();
      expect((await one({ kind: 'tensor', data: own }))[0]!.index).toBe(want[0]![0]);
      await one(view(1));
      await one(view(2));
      expect(own).toEqual(tiny.inputs[0]);
      await rt.dispose();
    }
  }, 30_000);

  it('state(): the same snapshot while nothing in it changed, a new one when something did; the page gets each new one', async () => {
    const rt = await BundleRuntime.open(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }), () => {}, {
      loadOrt: loadOrtNode,
      cache: noCache,
    });
    const s0 = rt.state();
    expect(rt.state()).toBe(s0);
    // an input that runs the whole backbone creates the deeper sessions: a new snapshot
    const deep = tiny.expected.findIndex((e) => e.exit < 0);
    const thresholds = rt.manifest.exits.map((e) => e.threshold);
    await rt.classify({ inputs: [view(deep)], thresholds, probabilities: false });
    const s1 = rt.state();
    expect(s1).not.toBe(s0);
    expect(s1.sessions).toEqual(rt.manifest.segments.map(() => true));
    expect(s0.sessions).not.toEqual(s1.sessions); // the old snapshot was not changed in place
    expect(rt.state()).toBe(s1);
    await rt.dispose();

    // Through the classify port: every exit at 1 (nothing leaves) until pruning switches exits off; the reply after
    // that change carries the new state, the next ones none, and the page's state is the runtime's.
    const api = createWorkerApi({ loadOrt: loadOrtNode, cache: noCache });
    const init = await api.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled' }));
    const { port1, port2 } = new MessageChannel();
    await api.connect(port2);
    const waiting = new Map<number, (a: ClassifyAnswer) => void>();
    port1.onmessage = (ev: MessageEvent<ClassifyAnswer>) => waiting.get(ev.data.id)?.(ev.data);
    const call = (id: number, request: ClassifyRequest): Promise<ClassifyAnswer> => {
      const answer = new Promise<ClassifyAnswer>((resolve) => waiting.set(id, resolve));
      port1.postMessage({ id, request });
      return answer;
    };
    const atOne = init.manifest.exits.map(() => 1);
    let page = init.state;
    let changes = 0;
    for (let id = 1; id <= 400 && (page.prunedExits ?? []).length < atOne.length; id++) {
      const a = await call(id, { inputs: [view(id % 64)], thresholds: atOne, probabilities: false });
      if (a.state) {
        expect(a.state.seq).toBeGreaterThan(page.seq!);
        changes++;
        page = a.state;
      }
    }
    expect(page.prunedExits).toEqual(atOne.map((_, e) => e));
    expect(changes).toBeGreaterThan(0);
    const quiet = await call(1000, { inputs: [view(0)], thresholds: atOne, probabilities: false });
    expect(quiet.state).toBeUndefined();
    const { seq: _seq, ...now } = (await api.state())!;
    const { seq: _pageSeq, ...held } = page;
    expect(now).toEqual(held);
    await api.dispose();
    port1.close();
  }, 30_000);

  it('RunningMedian: kept sorted, the same median as sorting the last values every time', () => {
    const rng = createRng(7);
    for (const size of [1, 2, 5, 31]) {
      const m = new RunningMedian(size);
      const last: number[] = [];
      for (let i = 0; i < 400; i++) {
        // repeats, ties, non-finite and negative values (ignored)
        const k = rng.int(12);
        const v = k === 0 ? NaN : k === 1 ? -1 : k === 2 ? Infinity : rng.int(4) === 0 ? 2.5 : rng.next() * 10;
        m.push(v);
        if (Number.isFinite(v) && v >= 0) last.push(v);
        const kept = last.slice(-size).sort((a, b) => a - b);
        expect(m.value).toBe(kept[kept.length >> 1]);
      }
    }
  });

  it('ExitPruner: skipping decisions when nothing they read changed decides as deciding on every call', () => {
    const manifest = {
      backbone: { macs: 1000 },
      segments: [{ macs: 300 }, { macs: 300 }, { macs: 200 }, { macs: 200 }],
      exits: [
        { segment: 0, headMacs: 5 },
        { segment: 1, headMacs: 5 },
        { segment: 2, headMacs: 5 },
      ],
    } as unknown as BundleManifest;
    const options = { minCount: 16, probeEvery: 4, recent: 64 };
    const a = ExitPruner.forManifest(manifest, options);
    const b = ExitPruner.forManifest(manifest, options);
    const always = b as unknown as { settled: boolean };
    const rng = createRng(11);
    const priced = (breakEven: number): ExitEconomics[] =>
      manifest.exits.map(() => ({ cost: breakEven * 0.5, saved: 0.5, breakEven }));
    let requested = manifest.exits.map(() => 0.9);
    let leave = 0.05; // the share of inputs that leave at an exit in use
    let changes = 0;
    for (let call = 0; call < 6000; call++) {
      if (rng.int(500) === 0) requested = manifest.exits.map(() => (rng.int(2) ? 0.9 : 0.8));
      if (rng.int(700) === 0) leave = rng.int(2) ? 0.05 : 0.6;
      if (rng.int(40) === 0) {
        const e = priced(rng.int(2) ? 0.1 : 0.3 + rng.next() * 0.01);
        a.setEconomics(e);
        b.setEconomics(e);
      }
      const [ra, rb] = [a.next(requested), b.next(requested)];
      expect(ra).toEqual(rb);
      let exit = -1;
      for (let e = 0; e < manifest.exits.length && exit < 0; e++)
        if (ra.thresholds[e]! <= 1 && rng.next() < leave) exit = e;
      always.settled = false; // b decides on every call, as before the skip
      const [ca, cb] = [a.observe(ra, [exit]), b.observe(rb, [exit])];
      expect(ca).toBe(cb);
      expect(a.pruned).toEqual(b.pruned);
      if (ca) changes++;
    }
    expect(changes).toBeGreaterThan(4); // exits were pruned and restored along the way
    expect(NEVER_EXIT).toBeGreaterThan(1);
  });
});

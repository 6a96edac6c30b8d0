// The compiled engine's exit-free model (compileBundleChain, the "chain"): the segments re-joined with no head, no `If`
// and no thresholds input; it gives the full model's outputs, and the engine runs it while every exit is off (fed the
// image alone, its one output fetched), switching back when a call enables an exit (onnxruntime-node, the tiny bundle
// over local HTTP).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as ortNode from 'onnxruntime-node';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { compileBundleCascade, compileBundleChain } from '../src/bundle/compiled-cascade.js';
import { softmaxRow } from '../src/engine/cascade.js';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { CASCADE_IO, cascadeThresholds, EXIT_INDEX_CONTINUE, EXIT_INDEX_FULL } from '../src/graph/compile-cascade.js';
import { decodeModel, encodeModel, type OnnxModel } from '../src/graph/index.js';
import type { WireResult, WorkerApi } from '../src/protocol.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { noCache } from '../src/runtime/cache.js';
import { CompiledEngine } from '../src/runtime/compiled-engine.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

let tiny: TinyServer;
beforeAll(async () => void (tiny = await serveTinyBundles(() => {})));
afterAll(() => tiny.close());
afterEach(() => vi.restoreAllMocks());

const manifest = (): BundleManifest =>
  JSON.parse(readFileSync(path.join(tiny.dir, 'tiny/manifest.json'), 'utf8')) as BundleManifest;
const segments = (m: BundleManifest, count: number): OnnxModel[] =>
  m.segments.slice(0, count).map((s) => decodeModel(new Uint8Array(readFileSync(path.join(tiny.dir, 'tiny', s.file)))));

/** Runs `model` on tiny input `i` with `thresholds`: its outputs' data. */
async function runModel(
  session: ortNode.InferenceSession,
  m: BundleManifest,
  i: number,
  thresholds: readonly number[],
): Promise<Record<string, Float32Array | BigInt64Array>> {
  const t = cascadeThresholds(thresholds, m.exits.length);
  const out = await session.run({
    [m.segments[0]!.input]: new ortNode.Tensor('float32', tiny.inputs[i]!, [1, 3, 16, 16]),
    [CASCADE_IO.thresholds]: new ortNode.Tensor('float32', t, [t.length]),
  });
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array | BigInt64Array]));
}

const allOff = (m: BundleManifest): number[] => m.exits.map(() => NEVER_EXIT);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number =>
  Array.from(a).reduce((d, x, k) => Math.max(d, Math.abs(x - b[k]!)), 0);

describe('exit-free compiled model', () => {
  it('has no If, no head and no thresholds input; gives the ungated model with every exit off (whole bundle and a prefix)', async () => {
    const m = manifest();
    const n = m.segments.length;
    for (const count of [n, 1]) {
      const chain = compileBundleChain(m, segments(m, count));
      const g = chain.proto.graph!;
      const ops = (g.node ?? []).map((x) => x.opType);
      expect(ops).not.toContain('If');
      // the heads' nodes dropped: fewer than the segments have
      const segNodes = segments(m, count).reduce((a, s) => a + (s.proto.graph!.node ?? []).length, 0);
      expect(ops.length).toBeLessThan(segNodes);
      // one input (the image), one output: the backbone's logits, or the prefix's cut
      const out = m.segments[count - 1]!.output;
      expect((g.input ?? []).map((i) => i.name)).toEqual([m.segments[0]!.input]);
      expect((g.output ?? []).map((o) => o.name)).toEqual([out]);
      const withHeads = compileBundleCascade(m, segments(m, count), 0, 'nested', false);
      const [a, b] = await Promise.all([chain, withHeads].map((x) => ortNode.InferenceSession.create(encodeModel(x))));
      for (let i = 0; i < 16; i++) {
        const got = (
          await a!.run({ [m.segments[0]!.input]: new ortNode.Tensor('float32', tiny.inputs[i]!, [1, 3, 16, 16]) })
        )[out]!.data as Float32Array;
        const want = await runModel(b!, m, i, allOff(m));
        expect(Number(want[CASCADE_IO.exitIndex]![0])).toBe(count === n ? EXIT_INDEX_FULL : EXIT_INDEX_CONTINUE);
        // the cascade model applies the backbone's softmax in the graph; the engine applies softmaxRow to the chain's
        const key = count === n ? CASCADE_IO.probabilities : CASCADE_IO.continueActivation;
        const mine = count === n ? softmaxRow(got, 0, got.length) : got;
        expect(mine.length).toBeGreaterThan(0);
        expect(maxDiff(mine, want[key] as Float32Array)).toBeLessThan(1e-5);
      }
      await Promise.all([a!.release(), b!.release()]);
    }
  });
});

async function singles(a: WorkerApi, thresholds: readonly number[], count = 16): Promise<WireResult[]> {
  const out: WireResult[] = [];
  for (const data of tiny.inputs.slice(0, count)) {
    const r = await a.classify({ inputs: [{ kind: 'tensor', data }], thresholds, probabilities: true });
    out.push(r.results[0]!);
  }
  return out;
}

describe('compiled engine with every exit off', () => {
  it('runs the exit-free model (same decisions as the stage engine), and switches back once a call enables an exit', async () => {
    const kinds: string[] = [];
    const engines = new Set<CompiledEngine>();
    const orig = CompiledEngine.prototype.run;
    vi.spyOn(CompiledEngine.prototype, 'run').mockImplementation(function (this: CompiledEngine, ...args) {
      kinds.push(args[0].kind);
      engines.add(this);
      return orig.apply(this, args);
    });
    const idle = async (): Promise<void> => void (await Promise.all([...engines].map((e) => e.idle())));
    // every onnxruntime run's feeds and fetches (the stage engine's worker included: only the compiled calls are read)
    type Run = (feeds: Record<string, unknown>, fetches?: unknown) => Promise<unknown>;
    const runs = vi.spyOn((ortNode.InferenceSession as unknown as { prototype: { run: Run } }).prototype, 'run');
    const compiled = createWorkerApi({ loadOrt: loadOrtNode, cache: noCache });
    const stages = createWorkerApi({ loadOrt: loadOrtNode, cache: noCache });
    const m = (await compiled.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'compiled', pruneExits: false })))
      .manifest;
    await stages.init(tinyInitRequest(tiny.base, 'tiny', { engine: 'stages', pruneExits: false }));
    const off = allOff(m);
    const on = m.exits.map(() => 1);
    const zero = m.exits.map(() => 0); // every input leaves at exit 0
    const same = (got: WireResult[], want: WireResult[]): void =>
      got.forEach((g, i) => {
        const w = want[i]!;
        expect({ index: g.index, exit: g.exit }, `input ${i}`).toEqual({ index: w.index, exit: w.exit });
        expect(Math.abs(g.confidence - w.confidence)).toBeLessThan(1e-5);
        expect(maxDiff(g.probabilities!, w.probabilities!)).toBeLessThan(1e-5);
      });
    // The first call wants the model of its thresholds; the next one makes it in the background (calls meanwhile run
    // on the model in use).
    const use = async (thresholds: readonly number[]): Promise<void> => {
      for (let k = 0; k < 2; k++) await singles(compiled, thresholds, 1).then(idle);
    };
    await use(off); // every segment loads too
    kinds.length = 0;
    runs.mockClear();
    const got = await singles(compiled, off);
    expect(kinds.every((k) => k === 'chain')).toBe(true);
    // the exit-free model is fed the image alone (no thresholds) and its one output, the backbone's, is fetched
    expect(runs.mock.calls.map(([feeds, fetches]) => [Object.keys(feeds), fetches])).toEqual(
      got.map(() => [[m.segments[0]!.input], [m.segments[m.segments.length - 1]!.output]]),
    );
    expect(got.every((r) => r.exit === -1 && r.stages.length === m.segments.length)).toBe(true);
    same(got, await singles(stages, off));
    // A call that enables an exit while the exit-free model is in use decides it (on the stages); once the ungated
    // model is made, the calls run it.
    kinds.length = 0;
    const first = await singles(compiled, zero, 1);
    expect(kinds).toEqual(['chain']);
    expect(first[0]!.exit).toBe(0);
    same(first, await singles(stages, zero, 1));
    await use(on);
    kinds.length = 0;
    same(await singles(compiled, on), await singles(stages, on));
    expect(kinds.every((k) => k === 'ungated')).toBe(true);
    // Back to every exit off: the exit-free model again.
    await use(off);
    kinds.length = 0;
    same(await singles(compiled, off), await singles(stages, off));
    expect(kinds.every((k) => k === 'chain')).toBe(true);
    await compiled.dispose();
    await stages.dispose();
  });
});

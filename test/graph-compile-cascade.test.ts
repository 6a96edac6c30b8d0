// The compiled cascade (src/graph/compile-cascade.ts): one onnxruntime model with nested (or flat) `If` exits decides
// as the stage engine (runCascade over per-segment sessions) on many inputs and threshold vectors; prefixes continue
// from the cut; renaming makes clashing segment names safe; what cannot be composed throws INVALID_BUNDLE.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compileBundleCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import type { BundleFiles } from '../src/bundle/manifest.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { inputDims, toModelInput, type SampleBatch } from '../src/bundle/input.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { bundleStageRunner } from '../src/calibrate/evaluate.js';
import type { OrtStageRunner } from '../src/engine/stage-runner.js';
import { argmaxRow, runCascade, type StageOutput, type StageRunner } from '../src/engine/cascade.js';
import { isSelfxitError } from '../src/errors.js';
import {
  CASCADE_IO,
  cascadeThresholds,
  compileCascade,
  EXIT_INDEX_CONTINUE,
  type CascadePart,
} from '../src/graph/compile-cascade.js';
import { encodeModel, fuseHead, type OnnxModel } from '../src/graph/index.js';
import {
  fashionRandomBundle,
  randomHead,
  resnet56RandomBundle,
  spreadImages,
  tinyRandomBundle,
} from './fixtures/random-head-bundle.js';
import { makeNode, makeTensor, makeValueInfo, pb, type onnx } from '../src/graph/proto.js';
import type { OrtTensor } from '../src/ort/types.js';
import { rng } from './fixtures/graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages } from './fixtures/prepare-fixtures.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(repoRoot, '../shared');
const r20Dir = '/work/baseline/before/r20';
const hasShared = fs.existsSync(path.join(shared, 'data/cifar10/test-u8.bin'));
if (!hasShared) console.warn(`[graph-compile-cascade] skipping the CIFAR-10 ResNet tests: ${shared} is absent`);
const hasR20 = hasShared && fs.existsSync(path.join(r20Dir, 'manifest.json'));
if (hasShared && !hasR20)
  console.warn(`[graph-compile-cascade] skipping the prepared ResNet-20 bundle: ${r20Dir} is absent`);
const ONE_THREAD = { intraOpNumThreads: 1, interOpNumThreads: 1 };

interface Fixture {
  readonly bundle: BundleFiles;
  readonly runner: StageRunner<OrtTensor>;
  readonly inputs: OrtTensor[];
  /** Max exit probability of each input at each exit (all heads run). */
  readonly scores: number[][];
  dispose(): Promise<void>;
}

/**
 * The stage engine's runner with every segment's outputs kept per input activation: each segment runs once per input
 * however many threshold vectors runCascade is called with (the runner always returns the exit output; the cascade
 * decides the same either way).
 */
function memoRunner(runner: OrtStageRunner): StageRunner<OrtTensor> {
  const memo = new Map<OrtTensor, StageOutput<OrtTensor>>();
  return {
    async runStage(s, input, rows) {
      let out = memo.get(input);
      if (!out) memo.set(input, (out = await runner.runStage(s, input, rows, true)));
      return out;
    },
    selectRows: (a, keep, rows) => runner.selectRows(a, keep, rows),
  };
}

async function fixture(bundle: BundleFiles, images: SampleBatch): Promise<Fixture> {
  const { runner: ortRunner, sessions } = bundleStageRunner(ortNode, bundle, ONE_THREAD);
  const runner = memoRunner(ortRunner);
  const spec = bundle.manifest.input;
  const inputs = Array.from(
    { length: images.count },
    (_, i) => new ortNode.Tensor('float32', toModelInput(images, i, 1, spec), inputDims(spec, 1)),
  );
  const k = bundle.manifest.labels.length;
  const scores: number[][] = [];
  for (const x of inputs) {
    const row: number[] = [];
    let act: OrtTensor = x;
    for (let s = 0; s < bundle.manifest.segments.length - 1; s++) {
      const out = await runner.runStage(s, act, 1);
      if (out.exitProbs) row.push(argmaxRow(out.exitProbs, 0, k).value);
      act = out.next!;
    }
    scores.push(row);
  }
  return { bundle, runner, inputs, scores, dispose: () => sessions.releaseAll() };
}

/** Threshold vectors: the manifest's, all exit at 0, none exits, per-exit medians, and exactly on / just above a score. */
function thresholdSets(f: Fixture): number[][] {
  const e = f.bundle.manifest.exits.length;
  const q = (p: number): number[] =>
    Array.from({ length: e }, (_, j) => {
      const s = f.scores.map((r) => r[j]!).sort((a, b) => a - b);
      return s[Math.floor(p * (s.length - 1))]!;
    });
  const onScore = q(0.6);
  return [
    f.bundle.manifest.exits.map((x) => x.threshold),
    new Array<number>(e).fill(0),
    new Array<number>(e).fill(NEVER_EXIT),
    q(0.5),
    onScore, // some input's max probability itself: >= fires
    onScore.map((t) => t + 1e-12), // between two float32s: the input at the score must not fire
    q(0.8).map((t, j) => (j % 2 ? NEVER_EXIT : t)),
  ];
}

interface Decision {
  readonly exit: number;
  readonly index: number;
  readonly confidence: number;
  readonly probs: Float32Array;
}

function decisionOf(out: Record<string, OrtTensor>): Decision {
  const probs = out[CASCADE_IO.probabilities]!.data as Float32Array;
  const { index, value } = argmaxRow(probs, 0, probs.length);
  return { exit: Number((out[CASCADE_IO.exitIndex]!.data as BigInt64Array)[0]), index, confidence: value, probs };
}

async function runCompiled(session: ort.InferenceSession, x: OrtTensor, thr: Float32Array): Promise<Decision> {
  const feeds = { [session.inputNames[0]!]: x, [CASCADE_IO.thresholds]: new ort.Tensor('float32', thr, [thr.length]) };
  return decisionOf((await session.run(feeds as Record<string, ort.Tensor>)) as unknown as Record<string, OrtTensor>);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
  return d;
}

function expectSame(
  got: Decision,
  want: { exit: number; index: number; confidence: number; probs: Float32Array },
): void {
  expect(got.exit).toBe(want.exit);
  expect(got.index).toBe(want.index);
  expect(Math.abs(got.confidence - want.confidence)).toBeLessThanOrEqual(1e-5);
  expect(got.probs.length).toBe(want.probs.length);
  expect(maxDiff(got.probs, want.probs)).toBeLessThanOrEqual(1e-5);
}

async function sessionOf(model: OnnxModel): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model), ONE_THREAD);
}

/**
 * The compiled model equals the stage engine on every input and threshold vector (`dropped` exits left out of the
 * model and off in every vector); returns how often each exit fired.
 */
async function compareFull(
  f: Fixture,
  layout: Layout,
  gateHeads = true,
  dropped?: ReadonlySet<number>,
): Promise<Map<number, number>> {
  const m = f.bundle.manifest;
  const compiled = await sessionOf(
    compileBundleCascade(m, segmentModels(f.bundle, 0, m.segments.length), 0, layout, gateHeads, dropped),
  );
  const hits = new Map<number, number>();
  for (const all of thresholdSets(f)) {
    const t = all.map((v, e) => (dropped?.has(e) ? NEVER_EXIT : v));
    const thr = cascadeThresholds(t, m.exits.length);
    for (const x of f.inputs) {
      const [want] = await runCascade(m, f.runner, x, 1, { thresholds: t });
      const got = await runCompiled(compiled, x, thr);
      expectSame(got, want!);
      hits.set(got.exit, (hits.get(got.exit) ?? 0) + 1);
    }
  }
  await compiled.release();
  return hits;
}

/** Prefix 0..p (continue) + suffix p+1..last (compiled too) equals the stage engine; the continue activation is the cut. */
async function comparePrefix(f: Fixture, p: number, inputs: readonly OrtTensor[], layout: Layout): Promise<number> {
  const m = f.bundle.manifest;
  const n = m.segments.length;
  const prefix = await sessionOf(compileBundleCascade(m, segmentModels(f.bundle, 0, p + 1), 0, layout));
  const suffix = await sessionOf(compileBundleCascade(m, segmentModels(f.bundle, p + 1, n - p - 1), p + 1, layout));
  let continued = 0;
  for (const t of thresholdSets(f)) {
    const thr = new ort.Tensor('float32', cascadeThresholds(t, m.exits.length), [m.exits.length]);
    for (const x of inputs) {
      const [want] = await runCascade(m, f.runner, x, 1, { thresholds: t });
      const out = await prefix.run({ [m.input.name]: x as ort.Tensor, [CASCADE_IO.thresholds]: thr });
      const got = decisionOf(out as unknown as Record<string, OrtTensor>);
      const cont = out[CASCADE_IO.continueActivation]!;
      if (got.exit !== EXIT_INDEX_CONTINUE) {
        expect(cont.dims[0]).toBe(0);
        expectSame(got, want!);
        continue;
      }
      continued++;
      expect(got.probs.length).toBe(0);
      let act: OrtTensor = x;
      for (let s = 0; s <= p; s++) act = (await f.runner.runStage(s, act, 1)).next!;
      expect(cont.dims).toEqual(act.dims);
      expect(maxDiff(act.data as Float32Array, cont.data as Float32Array)).toBeLessThanOrEqual(1e-5);
      const rest = await suffix.run({ [suffix.inputNames[0]!]: cont, [CASCADE_IO.thresholds]: thr });
      expectSame(decisionOf(rest as unknown as Record<string, OrtTensor>), want!);
    }
  }
  await prefix.release();
  await suffix.release();
  return continued;
}

type Layout = 'nested' | 'flat';

/**
 * The whole check on one bundle, for both `If` layouts: every exit (and the backbone) is taken at some threshold
 * vector, the compiled model decides as the stage engine everywhere, and prefixes ending at `prefixes` continue (on the
 * first `prefixImages`).
 */
async function checkBundle(
  bundle: BundleFiles,
  images: SampleBatch,
  prefixes: readonly number[],
  prefixImages = images.count,
  ungated = false,
): Promise<void> {
  const f = await fixture(bundle, images);
  for (const layout of ['nested', 'flat'] as const) {
    const hits = await compareFull(f, layout);
    expect([...hits.keys()].sort((a, b) => a - b)).toEqual([-1, ...bundle.manifest.exits.map((_, e) => e)]);
    if (ungated) expect(await compareFull(f, layout, false)).toEqual(hits);
    for (const p of prefixes)
      expect(await comparePrefix(f, p, f.inputs.slice(0, prefixImages), layout)).toBeGreaterThan(0);
  }
  await f.dispose();
}

describe('compileCascade on bundles', () => {
  it(
    'tiny classifier (3 segments, 2 exits): decisions, probabilities and prefixes equal the stage engine',
    { timeout: 60_000 },
    async () => {
      const bundle = await tinyRandomBundle();
      await checkBundle(bundle, { data: blobImages(150, 8, 8, 3, 3), count: 150 }, [0, 1], 150, true);
    },
  );

  it(
    'exits left out (dropped): their heads are gone, no gate, and the model decides as the stage engine with them off',
    { timeout: 60_000 },
    async () => {
      const bundle = await tinyRandomBundle();
      const m = bundle.manifest;
      const f = await fixture(bundle, { data: blobImages(60, 8, 8, 3, 3), count: 60 });
      const graphOf = (dropped: ReadonlySet<number>, gateHeads = false): onnx.IGraphProto =>
        compileBundleCascade(m, segmentModels(bundle, 0, m.segments.length), 0, 'nested', gateHeads, dropped).proto
          .graph!;
      const nodeOutputs = (g: onnx.IGraphProto): string[] =>
        (g.node ?? []).flatMap((n) => [
          ...(n.output ?? []),
          ...(n.attribute ?? []).flatMap((a) => (a.g ? nodeOutputs(a.g) : [])),
        ]);
      const ops = (g: onnx.IGraphProto): string[] =>
        (g.node ?? []).flatMap((n) => [n.opType ?? '', ...(n.attribute ?? []).flatMap((a) => (a.g ? ops(a.g) : []))]);
      const every = nodeOutputs(graphOf(new Set()));
      for (const dropped of [new Set([1]), new Set([0]), new Set([0, 1])]) {
        const g = graphOf(dropped);
        const outs = new Set(nodeOutputs(g));
        for (const e of dropped) {
          const seg = m.exits[e]!.segment;
          const head = `s${seg}/${m.segments[seg]!.exitOutput!}`;
          expect(every, 'the ungated model computes the head').toContain(head);
          expect(outs.has(head), `exit ${e}'s head is left out`).toBe(false);
        }
        // one If per exit kept (the decision), none for a dropped one: no gate either, even when gating is asked for
        const ifs = ops(g).filter((o) => o === 'If').length;
        expect(ifs).toBe(m.exits.length - dropped.size);
        expect(ops(graphOf(dropped, true)).filter((o) => o === 'If').length).toBe(2 * (m.exits.length - dropped.size));
        const hits = await compareFull(f, 'nested', false, dropped);
        for (const e of dropped) expect(hits.has(e)).toBe(false);
      }
      await f.dispose();
    },
  );

  it('shipped Fashion-MNIST ResNet with two random heads, 150 test images', { timeout: 120_000 }, async () => {
    const dir = path.join(repoRoot, 'public/models/fashion-resnet');
    const bundle = await fashionRandomBundle(dir);
    await checkBundle(bundle, spreadImages(path.join(dir, 'test-u8.bin'), 28 * 28, 150), [0], 50);
  });

  it.skipIf(!hasR20)(
    'prepared ResNet-20 bundle (/work/baseline/before/r20), 200 CIFAR-10 test images',
    { timeout: 180_000 },
    async () => {
      const bundle = await readBundleDir(r20Dir);
      await checkBundle(bundle, spreadImages(path.join(shared, 'data/cifar10/test-u8.bin'), 3072, 200), [1], 60);
    },
  );

  it.skipIf(!hasShared)(
    'ResNet-56 (../shared) with five random heads, 200 CIFAR-10 test images',
    { timeout: 300_000 },
    async () => {
      const bundle = await resnet56RandomBundle(shared);
      await checkBundle(bundle, spreadImages(path.join(shared, 'data/cifar10/test-u8.bin'), 3072, 200), [2], 40);
    },
  );
});

/** A 2-segment pair built by hand whose internal names all clash: same tensor, node and initializer names. */
function clashingSegment(seed: number, inName: string, outName: string, withHead: boolean): OnnxModel {
  const r = rng(seed);
  const w = makeTensor(
    'w',
    'float32',
    [4, 4, 1, 1],
    Array.from({ length: 16 }, () => r()),
  );
  const proto = pb.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'seg',
      node: [
        makeNode('Conv', [inName, 'w'], ['/Conv_output_0'], {}, '/Conv'),
        makeNode('Relu', ['/Conv_output_0'], [outName], {}, '/Relu'),
      ],
      initializer: [w],
      input: [makeValueInfo(inName, 'float32', ['batch', 4, 2, 2])],
      output: [makeValueInfo(outName, 'float32', ['batch', 4, 2, 2])],
    },
  });
  const seg = { proto };
  return withHead ? fuseHead(seg, randomHead(4, 2, 2, seed, 3), { outputName: 'probs' }) : seg;
}

describe('compileCascade graph rules', () => {
  const a = clashingSegment(1, 'x', '/Relu_output_0', true);
  // Segment b reads a's output under its own input name and reuses every internal name (and the head's).
  const b = clashingSegment(2, '/Relu_output_0', '/Relu_output_1', true);
  const c = clashingSegment(3, '/Relu_output_1', 'y', true); // its head's probabilities stand for the backbone's
  const parts: CascadePart[] = [
    { model: a, output: '/Relu_output_0', exitOutput: 'probs', exit: 0 },
    { model: b, output: '/Relu_output_1', exitOutput: 'probs', exit: 1 },
    { model: c, output: 'probs' },
  ];

  it('renames clashing names per segment and computes what the segments compute', async () => {
    const model = compileCascade(parts, { end: 'probabilities' });
    const names = new Set<string>();
    const visit = (g: onnx.IGraphProto): void => {
      for (const n of g.node ?? []) {
        for (const o of n.output ?? []) {
          expect(names.has(o)).toBe(false);
          names.add(o);
        }
        for (const at of n.attribute ?? []) if (at.g) visit(at.g);
      }
      for (const t of g.initializer ?? []) {
        expect(names.has(t.name!)).toBe(false);
        names.add(t.name!);
      }
    };
    visit(model.proto.graph!);
    expect(names.has('s0/w') && names.has('s1/w') && names.has('s2/w') && names.has('s1/probs/fc0.weight')).toBe(true);
    const s = await sessionOf(model);
    const x = new ort.Tensor(
      'float32',
      Float32Array.from({ length: 16 }, (_, i) => Math.sin(i)),
      [1, 4, 2, 2],
    );
    const sa = await sessionOf(a);
    const sb = await sessionOf(b);
    const sc = await sessionOf(c);
    const oa = await sa.run({ x });
    const ob = await sb.run({ '/Relu_output_0': oa['/Relu_output_0']! });
    const oc = await sc.run({ '/Relu_output_1': ob['/Relu_output_1']! });
    const cases: [number[], Float32Array, number][] = [
      [[0, 0], oa.probs!.data as Float32Array, 0],
      [[2, 0], ob.probs!.data as Float32Array, 1],
      [[2, 2], oc.probs!.data as Float32Array, -1],
    ];
    for (const [t, want, exit] of cases) {
      const got = await runCompiled(s, x as unknown as OrtTensor, cascadeThresholds(t, 2));
      expect(got.exit).toBe(exit);
      expect(Array.from(got.probs)).toEqual(Array.from(want));
    }
    expect(model.proto.graph!.input![0]!.type!.tensorType!.shape!.dim![0]!.dimValue).toBe(1);
  });

  it('an exit adds ReduceMax, the comparison and the If (gated: Greater and a second If): thresholds split once', () => {
    const ops = (g: onnx.IGraphProto, into: string[] = []): string[] => {
      for (const n of g.node ?? []) {
        if ((n.name ?? '').startsWith('cascade/')) into.push(n.opType!);
        for (const at of n.attribute ?? []) if (at.g) ops(at.g, into);
      }
      return into;
    };
    const count = (xs: string[], op: string): number => xs.filter((x) => x === op).length;
    const two = ops(compileCascade(parts, { end: 'probabilities', gateHeads: false }).proto.graph!);
    expect(count(two, 'Split')).toBe(1);
    expect(count(two, 'Gather')).toBe(0);
    expect([count(two, 'ReduceMax'), count(two, 'GreaterOrEqual'), count(two, 'If')]).toEqual([2, 2, 2]);
    // Gated (the default): each head moves into If(threshold > 1)'s else-branch with its decision.
    const model = compileCascade(parts, { end: 'probabilities' });
    const gated = ops(model.proto.graph!);
    expect(['Split', 'ReduceMax', 'GreaterOrEqual', 'Greater', 'If'].map((o) => count(gated, o))).toEqual([
      1, 2, 2, 2, 4,
    ]);
    const top = model.proto.graph!.node ?? [];
    expect(top.some((n) => (n.name ?? '').startsWith('s0/probs/'))).toBe(false); // segment 0's head is not at the top
    const gate = top.find((n) => n.name === 'cascade/exit0/gate')!;
    const branch = (name: string): onnx.IGraphProto => gate.attribute!.find((a) => a.name === name)!.g!;
    expect(branch('then_branch').node!.map((n) => n.opType)).toEqual(['Constant', 'Constant']);
    const on = branch('else_branch');
    expect(on.node!.some((n) => (n.name ?? '').startsWith('s0/probs/'))).toBe(true);
    expect(on.initializer!.map((t) => t.name).sort()).toEqual([
      's0/probs/fc0.bias',
      's0/probs/fc0.weight',
      's0/probs/logit_scale',
    ]);
    // One exit: its threshold is the input itself, nothing to split.
    const one = ops(
      compileCascade([parts[0]!, { ...parts[1]!, exitOutput: undefined, exit: undefined }, parts[2]!], {
        end: 'probabilities',
      }).proto.graph!,
    );
    expect([count(one, 'Split'), count(one, 'If')]).toEqual([0, 2]); // the gate and the exit
  });

  it("renames inside a segment's own control flow (If bodies reading outer values)", async () => {
    // Segment: x → If(ReduceSum(x) > 0) then Relu(x · w) else Neg(x), with clashing names in and out of the bodies.
    const w = makeTensor('w', 'float32', [], [3]);
    const body = (name: string, nodes: onnx.INodeProto[], out: string): onnx.IGraphProto => ({
      name,
      node: nodes,
      output: [makeValueInfo(out, 'float32', undefined)],
    });
    const thenG = body(
      'then',
      [makeNode('Mul', ['/Relu_output_1', 'w'], ['/Conv_output_0']), makeNode('Relu', ['/Conv_output_0'], ['t'])],
      't',
    );
    const elseG = body('else', [makeNode('Neg', ['/Relu_output_1'], ['e'])], 'e');
    const ifNode = makeNode('If', ['/cond'], ['z']);
    ifNode.attribute = [
      pb.AttributeProto.create({ name: 'then_branch', type: 5, g: thenG }),
      pb.AttributeProto.create({ name: 'else_branch', type: 5, g: elseG }),
    ];
    const seg: OnnxModel = {
      proto: pb.ModelProto.create({
        irVersion: 7,
        opsetImport: [{ domain: '', version: 13 }],
        graph: {
          name: 'with-if',
          node: [
            makeNode('ReduceSum', ['/Relu_output_1'], ['/sum'], { keepdims: 0 }),
            makeNode('Greater', ['/sum', 'zero'], ['/cond']),
            ifNode,
          ],
          initializer: [w, makeTensor('zero', 'float32', [], [0])],
          input: [makeValueInfo('/Relu_output_1', 'float32', ['batch', 4, 2, 2])],
          output: [makeValueInfo('z', 'float32', ['batch', 4, 2, 2])],
        },
      }),
    };
    for (const layout of ['nested', 'flat'] as const) {
      const model = compileCascade([parts[0]!, parts[1]!, { model: seg, output: 'z' }], { end: 'continue', layout });
      const s = await sessionOf(model);
      const x = new ort.Tensor(
        'float32',
        Float32Array.from({ length: 16 }, (_, i) => Math.cos(i)),
        [1, 4, 2, 2],
      );
      const oa = await (await sessionOf(a)).run({ x });
      const ob = await (await sessionOf(b)).run({ '/Relu_output_0': oa['/Relu_output_0']! });
      const want = (await (await sessionOf(seg)).run({ '/Relu_output_1': ob['/Relu_output_1']! })).z!;
      const out = await s.run({ x, thresholds: new ort.Tensor('float32', cascadeThresholds([2, 2], 2), [2]) });
      expect(Number((out.exit_index!.data as BigInt64Array)[0])).toBe(EXIT_INDEX_CONTINUE);
      expect(Array.from(out.continue_activation!.data as Float32Array)).toEqual(Array.from(want.data as Float32Array));
    }
  });

  it('thresholds round up to float32 so float32 >= decides as the double comparison', () => {
    for (const t of [0.9, 0.7, 1 / 3, 0.99999, NEVER_EXIT, 0, 1, 1e-46, -0.3]) {
      const [f] = cascadeThresholds([t], 1);
      expect(f!).toBeGreaterThanOrEqual(t);
      expect(Math.fround(f!)).toBe(f);
      // no float32 lies in [t, f)
      const below = new Float32Array([f!]);
      new Int32Array(below.buffer)[0]! += f! > 0 ? -1 : 1;
      if (f !== 0) expect(below[0]!).toBeLessThan(t);
    }
    expect(Array.from(cascadeThresholds([0.5], 3))).toEqual([0.5, Infinity, Infinity]);
  });

  const code = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (e) {
      return isSelfxitError(e) ? e.code : 'not a SelfxitError';
    }
    return undefined;
  };

  it('throws INVALID_BUNDLE for parts that cannot be composed', () => {
    const opset11 = { proto: pb.ModelProto.create({ ...b.proto, opsetImport: [{ domain: '', version: 11 }] }) };
    expect(
      code(() => compileCascade([parts[0]!, { ...parts[1]!, model: opset11 }, parts[2]!], { end: 'logits' })),
    ).toBe('INVALID_BUNDLE');
    expect(code(() => compileCascade([{ ...parts[0]!, output: 'nope' }], { end: 'continue' }))).toBe('INVALID_BUNDLE');
    const twoInputs = {
      proto: pb.ModelProto.create({
        ...a.proto,
        graph: { ...a.proto.graph!, input: [...a.proto.graph!.input!, makeValueInfo('z', 'float32', [1])] },
      }),
    };
    expect(code(() => compileCascade([{ ...parts[0]!, model: twoInputs }], { end: 'continue' }))).toBe(
      'INVALID_BUNDLE',
    );
    const int8In = {
      proto: pb.ModelProto.create({
        ...b.proto,
        graph: { ...b.proto.graph!, input: [makeValueInfo('/Relu_output_0', 'int8', ['batch', 4, 2, 2])] },
      }),
    };
    expect(code(() => compileCascade([parts[0]!, { ...parts[1]!, model: int8In }], { end: 'continue' }))).toBe(
      'INVALID_BUNDLE',
    );
    const reserved = clashingSegment(1, 'thresholds', 'o', false);
    expect(code(() => compileCascade([{ model: reserved, output: 'o' }], { end: 'logits' }))).toBe('INVALID_BUNDLE');
    expect(code(() => compileCascade([], { end: 'logits' }))).toBe('INVALID_ARGUMENT');
    expect(code(() => compileCascade(parts, { end: 'logits', exitCount: 1 }))).toBe('INVALID_ARGUMENT');
    const swapped = [parts[0]!, { ...parts[1]!, exit: 0 }, parts[2]!];
    expect(code(() => compileCascade(swapped, { end: 'logits' }))).toBe('INVALID_ARGUMENT');
  });

  it('a one-segment part from the middle: exit or continue, with the bundle-wide thresholds input', async () => {
    const s = await sessionOf(compileCascade([parts[1]!], { end: 'continue', exitCount: 3 }));
    const x = new ort.Tensor('float32', new Float32Array(16).fill(0.5), [1, 4, 2, 2]);
    const run = (t: number[]) =>
      s.run({ '/Relu_output_0': x, thresholds: new ort.Tensor('float32', cascadeThresholds(t, 3), [3]) });
    const fired = await run([2, 0, 2]);
    expect(Number((fired.exit_index!.data as BigInt64Array)[0])).toBe(1);
    expect(fired.probabilities!.dims).toEqual([1, 3]);
    expect(fired.continue_activation!.dims).toEqual([0, 4, 2, 2]);
    const went = await run([0, 2, 0]);
    expect(Number((went.exit_index!.data as BigInt64Array)[0])).toBe(EXIT_INDEX_CONTINUE);
    expect(went.probabilities!.dims).toEqual([0, 3]);
    expect(went.continue_activation!.dims).toEqual([1, 4, 2, 2]);
  });
});

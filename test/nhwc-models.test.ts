// Channels-last models (tf2onnx-style Keras exports): the graph toolkit tells each cut's layout, prepare pools an NHWC
// cut over H and W as its NCHW twin's, the bundle's ONNX head (a Transpose to NCHW first) gives prepare's head, and the
// manifest records the layout of NHWC heads only.
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { compileBundleCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { validateManifest, type BundleFiles } from '../src/bundle/manifest.js';
import { bundleStageRunner, evaluateBundle } from '../src/calibrate/evaluate.js';
import { cutGeometry, extractFeatures, type FeatureRequest } from '../src/calibrate/features.js';
import { headFeaturesInto, nhwcToNCHW } from '../src/calibrate/pool.js';
import { prepare } from '../src/calibrate/prepare.js';
import { FEATURE_RUN_BYTES, featureBatchRows } from '../src/calibrate/prepare-context.js';
import { predictHead, toHeadSpec, trainHead } from '../src/calibrate/train-head.js';
import { argmaxRow, runCascade } from '../src/engine/cascade.js';
import { isSelfxitError } from '../src/errors.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { inferMapLayouts } from '../src/graph/layout.js';
import {
  analyzeModel,
  buildHeadModel,
  decodeModel,
  encodeModel,
  fuseHead,
  splitModel,
  withExtraOutputs,
  type CutPoint,
  type OnnxModel,
} from '../src/graph/index.js';
import type { OrtTensor } from '../src/ort/types.js';
import { inspectJson } from '../src/cli/inspect.js';
import { FeatureReservoir, reservoirCuts } from '../src/learn/reservoir.js';
import { analyseForLearning } from '../src/learn/fit.js';
import { Learner, type LearnerState } from '../src/learn/learner.js';
import { GraphBuilder, residualGraph, rng } from './fixtures/graphs.js';
import { clusterImages } from './fixtures/mobile-graphs.js';
import {
  fittedKerasNet,
  kerasInput,
  kerasNet,
  NHWC_CLASSES,
  NHWC_CUTS,
  NHWC_SIZE,
  toNHWC,
} from './fixtures/nhwc-graphs.js';
import { ortNode, run } from './fixtures/ort-helpers.js';

const S = NHWC_SIZE;

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

const byTensor = (cuts: readonly CutPoint[]): Map<string, CutPoint> => new Map(cuts.map((c) => [c.tensor, c]));

describe('layout of each cut, told by the graph', () => {
  it('NHWC on the channels-last cuts of a tf2onnx-style model, NCHW on its twin and on an NCHW fixture', async () => {
    const nhwc = byTensor((await analyzeModel(kerasNet('NHWC'), { ort: ortNode })).cuts);
    const nchw = byTensor((await analyzeModel(kerasNet('NCHW'), { ort: ortNode })).cuts);
    for (const t of NHWC_CUTS) {
      expect({ t, layout: nhwc.get(t)!.layout }).toEqual({ t, layout: 'NHWC' });
      expect({ t, layout: nchw.get(t)!.layout }).toEqual({ t, layout: 'NCHW' });
      // the same map: [N, H, W, C] and [N, C, H, W] read as the same C, H, W
      expect(cutGeometry(nhwc.get(t)!)).toEqual(cutGeometry(nchw.get(t)!));
    }
    expect(nhwc.get('stem')!.shape).toEqual(['batch', S, S, 8]);
    expect(cutGeometry(nhwc.get('stem')!)).toEqual({ channels: 8, height: S, width: S });
    // the Transpose into each Conv gives NCHW; a 2-D cut has no layout
    const convIn = [...nhwc.values()].filter((c) => c.shape.length === 4 && c.layout === 'NCHW');
    expect(convIn.length).toBeGreaterThan(0);
    expect(nhwc.get('gap')!.layout).toBeUndefined();
    const res = byTensor((await analyzeModel(residualGraph().model, { ort: ortNode })).cuts);
    for (const t of ['c1', 'r1', 'a', 'y', 'gap'])
      expect({ t, layout: res.get(t)!.layout }).toEqual({ t, layout: 'NCHW' });
    expect(res.get('flat')!.layout).toBeUndefined();
  });

  it('a 4-D cut nothing tells keeps no layout (read as NCHW), and inspect says "unknown"', async () => {
    const g = new GraphBuilder(3);
    const x = g.input('x', 'float32', ['N', 4, 6, 6]);
    const a = g.op('Relu', [x], {}, 'a');
    const b = g.op('Mul', [a, g.init('float32', [1], [2])], {}, 'b');
    const m = g.op('ReduceMean', [b], { axes: [1, 2, 3], keepdims: 0 }, 'm');
    g.op('Mul', [m, g.init('float32', [1, 3], [1, 2, 3])], {}, 'logits');
    g.output('logits', 'float32', ['N', 3]);
    const analysis = await analyzeModel(g.build(), { ort: ortNode });
    const cuts = byTensor(analysis.cuts);
    expect(cuts.get('b')!.shape).toEqual(['batch', 4, 6, 6]);
    expect(cuts.get('b')!.layout).toBeUndefined();
    expect(cutGeometry(cuts.get('b')!)).toEqual({ channels: 4, height: 6, width: 6 });
    const json = inspectJson(analysis) as { cuts: { tensor: string; layout?: string }[] };
    expect(json.cuts.find((c) => c.tensor === 'b')!.layout).toBe('unknown');
    expect(json.cuts.find((c) => c.tensor === 'm')!.layout).toBeUndefined();
  });

  it('contrib ops fix NHWC (NhwcConv, channels_last = 1); two paths that disagree tell nothing', () => {
    const g = new GraphBuilder(5);
    const w = g.init('float32', [4, 4, 1, 1]);
    g.op('NhwcConv', ['x', w], {}, 'c', 'com.microsoft');
    g.op('Relu', ['c'], {}, 'r');
    g.op('QLinearGlobalAveragePool', ['r', 's', 'z', 's', 'z'], { channels_last: 1 }, 'p', 'com.microsoft');
    g.op('QLinearGlobalAveragePool', ['y3', 's', 'z', 's', 'z'], {}, 'q', 'com.microsoft');
    // a Conv's output and its transpose (C = H = W): an Add of the two is told both ways, and so is all it touches
    g.op('Conv', ['y', w], {}, 'k');
    g.op('Transpose', ['k'], { perm: [0, 2, 3, 1] }, 't');
    g.op('Add', ['k', 't'], {}, 'both');
    g.op('Relu', ['both'], {}, 'after');
    // a Transpose that moves the batch tells nothing past it
    g.op('Transpose', ['after2'], { perm: [1, 0, 2, 3] }, 'moved');
    g.op('Conv', ['y2', w], {}, 'after2');
    const ranks = new Map([...['s', 'z'].map((n) => [n, 0] as const), [w, 4]]);
    const layouts = inferMapLayouts(
      g.nodes,
      (n) => ranks.get(n) ?? 4,
      (n) => n === w,
    );
    expect(Object.fromEntries(['x', 'c', 'r', 'p', 'q'].map((t) => [t, layouts.get(t)]))).toEqual({
      x: 'NHWC',
      c: 'NHWC',
      r: 'NHWC',
      p: 'NHWC',
      q: 'NCHW',
    });
    // the Conv's output keeps the layout its definition fixes
    expect(layouts.get('k')).toBe('NCHW');
    for (const t of ['t', 'both', 'after', 'moved'])
      expect({ t, layout: layouts.get(t) }).toEqual({ t, layout: undefined });
    expect(layouts.get('after2')).toBe('NCHW');
    expect(layouts.get('y3')).toBe('NCHW');
  });
});

describe('a 4-D constant shared by an NHWC and an NCHW region', () => {
  // x → Transpose → Conv c → Transpose h → Add(h, K) → Relu cut → Transpose → Conv d → Mul(d, K): K [1, 1, 1, 1] is
  // broadcast in both regions and ties neither to the other
  const build = (constant: 'init' | 'Constant'): { g: GraphBuilder; k: string } => {
    const g = new GraphBuilder(6);
    const w = g.init('float32', [4, 4, 1, 1]);
    const k = constant === 'init' ? g.init('float32', [1, 1, 1, 1]) : g.constant('float32', [1, 1, 1, 1], [2]);
    g.op('Transpose', ['x'], { perm: [0, 3, 1, 2] }, 't0');
    g.op('Conv', ['t0', w], {}, 'c');
    g.op('Transpose', ['c'], { perm: [0, 2, 3, 1] }, 'h');
    g.op('Add', ['h', k], {}, 'a');
    g.op('Relu', ['a'], {}, 'cut');
    g.op('Transpose', ['cut'], { perm: [0, 3, 1, 2] }, 'u');
    g.op('Conv', ['u', w], {}, 'd');
    g.op('Mul', ['d', k], {}, 'e');
    return { g, k };
  };
  const expected = {
    x: 'NHWC',
    t0: 'NCHW',
    c: 'NCHW',
    h: 'NHWC',
    a: 'NHWC',
    cut: 'NHWC',
    u: 'NCHW',
    d: 'NCHW',
    e: 'NCHW',
  };

  it('an initializer ties nothing: every map is told', () => {
    const { g, k } = build('init');
    const layouts = inferMapLayouts(
      g.nodes,
      () => 4,
      (n) => g.inits.some((t) => t.name === n),
    );
    expect(Object.fromEntries(Object.keys(expected).map((t) => [t, layouts.get(t)]))).toEqual(expected);
    expect(layouts.get(k)).toBeUndefined();
  });

  it('an explicit ai.onnx domain is the default one: Transpose, Conv, Add, Relu and a Constant read as without it', () => {
    const { g, k } = build('Constant');
    for (const n of g.nodes) n.domain = 'ai.onnx';
    const layouts = inferMapLayouts(
      g.nodes,
      () => 4,
      () => false,
    );
    expect(Object.fromEntries(Object.keys(expected).map((t) => [t, layouts.get(t)]))).toEqual(expected);
    expect(layouts.get(k)).toBeUndefined();
  });

  it("a Constant's output ties nothing either (told by the nodes alone)", () => {
    const { g, k } = build('Constant');
    const layouts = inferMapLayouts(
      g.nodes,
      () => 4,
      () => false,
    );
    expect(Object.fromEntries(Object.keys(expected).map((t) => [t, layouts.get(t)]))).toEqual(expected);
    expect(layouts.get(k)).toBeUndefined();
  });
});

describe('layout inference on long chains (union-find and a worklist: close to linear)', () => {
  const N = 10_000;
  const timed = (label: string, nodes: GraphBuilder['nodes']): Map<string, string> => {
    const t0 = performance.now();
    const layouts = inferMapLayouts(
      nodes,
      () => 4,
      () => false,
    );
    console.log(`${label}: ${N} nodes in ${(performance.now() - t0).toFixed(0)} ms`);
    return layouts;
  };

  it('a Conv-free chain of 10,000 elementwise ops ending in a Conv: all told NCHW, from the end back', () => {
    const g = new GraphBuilder(7);
    let x = 'x';
    for (let i = 0; i < N; i++) x = g.op(i % 2 ? 'Relu' : 'Sigmoid', [x], {}, `v${i}`);
    g.op('Conv', [x, g.init('float32', [4, 4, 1, 1])], {}, 'c');
    const layouts = timed('elementwise chain', g.nodes);
    expect(layouts.get('x')).toBe('NCHW');
    for (let i = 0; i < N; i += 997) expect({ i, l: layouts.get(`v${i}`) }).toEqual({ i, l: 'NCHW' });
  });

  it('a chain of 10,000 ops that goes to NHWC and back every 4: each told its own, from a Conv at the end', () => {
    const g = new GraphBuilder(8);
    let x = 'x';
    for (let i = 0; i < N; i++) {
      const step = i % 4;
      x =
        step === 1
          ? g.op('Transpose', [x], { perm: [0, 2, 3, 1] }, `v${i}`)
          : step === 3
            ? g.op('Transpose', [x], { perm: [0, 3, 1, 2] }, `v${i}`)
            : g.op('Relu', [x], {}, `v${i}`);
    }
    g.op('Conv', [x, g.init('float32', [4, 4, 1, 1])], {}, 'c');
    const layouts = timed('transposing chain', g.nodes);
    expect(layouts.get('x')).toBe('NCHW');
    for (let i = 0; i < N; i += 13) {
      const want = i % 4 === 1 || i % 4 === 2 ? 'NHWC' : 'NCHW';
      expect({ i, l: layouts.get(`v${i}`) }).toEqual({ i, l: want });
    }
  });
});

describe("prepare's feature batch counts the NCHW scratch of NHWC cuts", () => {
  it('one scratch, sized to the largest NHWC cut, in the rows per run (not one per cut)', () => {
    const cut = (tensor: string, shape: number[], layout?: 'NHWC'): FeatureRequest =>
      ({ cut: { tensor, shape, ...(layout ? { layout } : {}) }, grid: [1, 1] }) as unknown as FeatureRequest;
    const c = {
      batch: 'dynamic',
      o: { batchSize: 1000 },
      analysis: { shapes: new Map() },
      io: { input: { height: 1, width: 1, channels: 1 } },
    } as unknown as Parameters<typeof featureBatchRows>[0];
    const M = 2 ** 20;
    const rows = (floats: number): number => Math.floor(FEATURE_RUN_BYTES / (4 * floats));
    // two maps of M floats each (input: 1 float)
    expect(featureBatchRows(c, [cut('a', [1, 64, 64, 256]), cut('b', [1, 256, 64, 64])])).toBe(rows(1 + 2 * M));
    expect(featureBatchRows(c, [cut('a', [1, 64, 64, 256], 'NHWC'), cut('b', [1, 256, 64, 64])])).toBe(rows(1 + 3 * M));
    // two NHWC cuts share one scratch: the larger one's
    expect(featureBatchRows(c, [cut('a', [1, 64, 64, 256], 'NHWC'), cut('b', [1, 32, 32, 256], 'NHWC')])).toBe(
      rows(1 + M + M / 4 + M),
    );
  });
});

describe('pooling a channels-last map', () => {
  const [n, c, h, w] = [3, 5, 4, 6];
  const r = rng(9);
  const nchw = Float32Array.from({ length: n * c * h * w }, () => r());
  const nhwc = toNHWC(nchw, n, c, h, w);

  it('nhwcToNCHW is the NCHW map (ONNX Transpose perm [0, 3, 1, 2])', () => {
    expect(nhwcToNCHW(nhwc, n, c, h, w)).toEqual(nchw);
    const into = new Float32Array(n * c * h * w + 7);
    expect(nhwcToNCHW(nhwc, n, c, h, w, into)).toBe(into);
    expect(into.subarray(0, nchw.length)).toEqual(nchw);
  });

  for (const [grid, maxGrid] of [
    [
      [2, 3],
      [1, 1],
    ],
    [[1, 1], undefined],
    [
      [4, 6],
      [2, 2],
    ],
  ] as const) {
    it(`headFeaturesInto (avg ${grid.join('x')}${maxGrid ? `, max ${maxGrid.join('x')}` : ''}): NHWC map = the same map stored NCHW`, () => {
      const dim = c * grid[0] * grid[1] + (maxGrid ? c * maxGrid[0] * maxGrid[1] : 0);
      const want = new Float32Array((n + 1) * dim);
      const got = new Float32Array((n + 1) * dim);
      headFeaturesInto(nchw, n, c, h, w, grid, maxGrid, want, 1);
      headFeaturesInto(nhwc, n, c, h, w, grid, maxGrid, got, 1, 'NHWC');
      expect(got).toEqual(want);
      // read as NCHW (as before), the channels-last map gives other features
      const wrong = new Float32Array((n + 1) * dim);
      headFeaturesInto(nhwc, n, c, h, w, grid, maxGrid, wrong, 1);
      expect(maxDiff(wrong, want)).toBeGreaterThan(0.01);
    });
  }

  it('the learner’s reservoir pools an NHWC cut’s map as its NCHW twin’s', () => {
    const cut = (layout: 'NCHW' | 'NHWC'): CutPoint => ({
      tensor: 'm',
      shape: layout === 'NHWC' ? ['batch', h, w, c] : ['batch', c, h, w],
      dtype: 'float32',
      macs: 1,
      fraction: 0.5,
      layout,
    });
    const logits = Float32Array.from({ length: n * 4 }, () => r());
    const states = (['NCHW', 'NHWC'] as const).map((layout) => {
      const res = new FeatureReservoir(reservoirCuts([{ cut: cut(layout), grid: [2, 3], maxGrid: [1, 1] }]), 4, {
        maxSamples: 10,
        maxBytes: 1 << 20,
      });
      res.addFromMaps([layout === 'NHWC' ? nhwc : nchw], logits, n);
      return res.state();
    });
    expect(states[0]!.size).toBe(n);
    expect(states[1]!.features).toEqual(states[0]!.features);
    expect(states[1]!.ranges).toEqual(states[0]!.ranges);
  });
});

describe('prepare’s features and the bundle’s head on a channels-last model', () => {
  const N = 40;
  const samples = { data: clusterImages(N, S, S, 3, NHWC_CLASSES, 5), count: N };
  let models: Record<'NCHW' | 'NHWC', OnnxModel>;
  let cuts: Record<'NCHW' | 'NHWC', Map<string, CutPoint>>;

  beforeAll(async () => {
    models = { NCHW: await fittedKerasNet('NCHW', ortNode), NHWC: await fittedKerasNet('NHWC', ortNode) };
    cuts = {
      NCHW: byTensor((await analyzeModel(models.NCHW, { ort: ortNode })).cuts),
      NHWC: byTensor((await analyzeModel(models.NHWC, { ort: ortNode })).cuts),
    };
  }, 60_000);

  const features = (layout: 'NCHW' | 'NHWC', requests: FeatureRequest[]) =>
    extractFeatures({
      model: models[layout],
      requests,
      samples,
      input: kerasInput(layout),
      output: 'logits',
      outputKind: 'logits',
      classes: NHWC_CLASSES,
      ort: ortNode,
      batchSize: 16,
    });

  it('an NHWC cut’s pooled features equal its NCHW twin’s (the same images)', async () => {
    const req = (layout: 'NCHW' | 'NHWC'): FeatureRequest[] =>
      NHWC_CUTS.map((t) => ({ cut: cuts[layout].get(t)!, grid: [2, 2], maxGrid: [1, 1] }));
    const a = await features('NCHW', req('NCHW'));
    const b = await features('NHWC', req('NHWC'));
    expect(maxDiff(b.teacher, a.teacher)).toBeLessThan(1e-5);
    NHWC_CUTS.forEach((t, i) => {
      expect({ t, dim: b.cuts[i]!.dim }).toEqual({ t, dim: a.cuts[i]!.dim });
      expect({ t, diff: maxDiff(b.cuts[i]!.x, a.cuts[i]!.x) < 1e-5 }).toEqual({ t, diff: true });
    });
  });

  it('the ONNX head (standalone and fused onto its segment) gives prepare’s JS head within 1e-5', async () => {
    const analysis = await analyzeModel(models.NHWC, { ort: ortNode });
    const input = kerasInput('NHWC');
    const x = new ort.Tensor('float32', toModelInput(samples, 0, N, input).slice(), inputDims(input, N));
    for (const t of NHWC_CUTS) {
      const cut = cuts.NHWC.get(t)!;
      const fs = await features('NHWC', [{ cut, grid: [2, 2], maxGrid: [2, 2] }]);
      const cf = fs.cuts[0]!;
      const head = trainHead(cf.x, fs.teacher, N, cf.dim, fs.k, { kind: 'pool-mlp', hidden: 8, epochs: 3, seed: 4 });
      const spec = toHeadSpec(head, {
        kind: 'pool-mlp',
        inChannels: cf.channels,
        inHeight: cf.height,
        inWidth: cf.width,
        grid: cf.grid,
        maxGrid: cf.maxGrid,
        layout: 'NHWC',
      });
      expect(spec.layout).toBe('NHWC');
      const want = predictHead(head, cf.x, N);
      const map = (await run(withExtraOutputs(models.NHWC, [t]), x))[t]!;
      const alone = await run(buildHeadModel(spec), map);
      expect({ t, diff: maxDiff(alone.probs!.data as Float32Array, want) < 1e-5 }).toEqual({ t, diff: true });
      const [seg0] = splitModel(models.NHWC, [t], analysis);
      const fused = fuseHead(seg0!, spec, { outputName: 'exit0' });
      expect(fused.proto.graph!.node!.filter((nd) => nd.output![0] === 'exit0/nchw')[0]?.opType).toBe('Transpose');
      const out = await run(fused, x);
      expect({ t, diff: maxDiff(out.exit0!.data as Float32Array, want) < 1e-5 }).toEqual({ t, diff: true });
      // read as NCHW (the spec without its layout), the head does not fit the cut
      expect(() => fuseHead(seg0!, { ...spec, layout: undefined }, { outputName: 'exit0' })).toThrow(/expects/);
    }
  }, 60_000);
});

describe('prepare → bundle → eval on a channels-last model', () => {
  const N = 300;
  const images = { data: clusterImages(N, S, S, 3, NHWC_CLASSES, 5), count: N };
  const quick = {
    target: 0.97,
    headKinds: ['pool-linear'],
    augment: [],
    folds: 3,
    maxCandidates: 6,
    createdAt: '2026-01-01T00:00:00Z',
  } as const;
  const bundles = {} as Record<'NCHW' | 'NHWC', BundleFiles & { cutNotes: readonly string[] }>;

  beforeAll(async () => {
    for (const layout of ['NCHW', 'NHWC'] as const) {
      const r = await prepare({
        model: encodeModel(await fittedKerasNet(layout, ortNode)),
        samples: images,
        ort: ortNode,
        ...quick,
        input: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
      });
      bundles[layout] = { manifest: r.manifest, files: r.files, cutNotes: r.report.cutNotes };
    }
  }, 240_000);

  it('records NHWC on the heads of channels-last cuts, each reading its cut through a Transpose', () => {
    const m = bundles.NHWC.manifest;
    expect(m.input.layout).toBe('NHWC');
    expect(m.exits.length).toBeGreaterThan(0);
    for (const e of m.exits) {
      const seg = decodeModel(bundles.NHWC.files.get(m.segments[e.segment]!.file)!);
      const head = seg.proto.graph!.node!.filter((nd) => nd.name?.startsWith(`${m.segments[e.segment]!.exitOutput}/`));
      const transposed = head.some((nd) => nd.opType === 'Transpose');
      // the layout recorded is the one the head reads: NHWC ⇔ a Transpose first
      expect({ cut: e.cut, layout: e.layout ?? 'NCHW', transposed }).toEqual({
        cut: e.cut,
        layout: transposed ? 'NHWC' : 'NCHW',
        transposed,
      });
    }
    expect(m.exits.some((e) => e.layout === 'NHWC')).toBe(true);
    expect(bundles.NHWC.cutNotes.join('\n')).toMatch(/channels-last maps \[N, H, W, C\].*Transpose to NCHW/);
    expect(validateManifest(JSON.parse(JSON.stringify(m))).exits.map((e) => e.layout)).toEqual(
      m.exits.map((e) => e.layout),
    );
  });

  it('an NCHW model’s manifest has no exit layout field and its heads no Transpose', () => {
    const m = bundles.NCHW.manifest;
    expect(m.exits.length).toBeGreaterThan(0);
    for (const e of m.exits) expect(Object.keys(e)).not.toContain('layout');
    for (const s of m.segments) {
      const nodes = decodeModel(bundles.NCHW.files.get(s.file)!).proto.graph!.node!;
      expect(nodes.some((nd) => nd.opType === 'Transpose')).toBe(false);
    }
    expect(bundles.NCHW.cutNotes).toEqual([]);
  });

  it('rejects a manifest whose exit layout is not NCHW or NHWC (INVALID_BUNDLE)', () => {
    for (const layout of ['nhwc', 3, null]) {
      const bad = JSON.parse(JSON.stringify(bundles.NHWC.manifest)) as { exits: { layout?: unknown }[] };
      bad.exits[0]!.layout = layout;
      let code = '';
      try {
        validateManifest(bad);
      } catch (e) {
        code = isSelfxitError(e) ? e.code : String(e);
      }
      expect({ layout, code }).toEqual({ layout, code: 'INVALID_BUNDLE' });
    }
    const ok = JSON.parse(JSON.stringify(bundles.NCHW.manifest)) as { exits: { layout?: unknown }[] };
    ok.exits[0]!.layout = 'NCHW';
    expect(validateManifest(ok).exits[0]!.layout).toBe('NCHW');
  });

  it('eval replays its decisions with exits taken; the stage runner decides as the compiled engine', async () => {
    const bundle = bundles.NHWC;
    const m = bundle.manifest;
    const ev = await evaluateBundle({ bundle, samples: images, ort: ortNode });
    expect(ev.replayMismatches).toBe(0);
    expect(ev.exitShares.slice(0, -1).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(ev.agreement).toBeGreaterThan(0.9);
    const count = 40;
    const thresholds = m.exits.map((e) => e.threshold);
    const x = toModelInput(images, 0, count, m.input);
    const { runner, sessions } = bundleStageRunner(ortNode, bundle);
    const staged = await runCascade(
      m,
      runner,
      new ort.Tensor('float32', x.slice(), inputDims(m.input, count)) as unknown as OrtTensor,
      count,
      { thresholds },
    );
    await sessions.releaseAll();
    const s = await ort.InferenceSession.create(
      encodeModel(compileBundleCascade(m, segmentModels(bundle, 0, m.segments.length))),
    );
    const per = S * S * 3;
    try {
      for (let i = 0; i < count; i++) {
        const r = await s.run({
          [s.inputNames[0]!]: new ort.Tensor('float32', x.slice(i * per, (i + 1) * per), inputDims(m.input, 1)),
          [CASCADE_IO.thresholds]: new ort.Tensor('float32', cascadeThresholds(thresholds, m.exits.length)),
        });
        const probs = r[CASCADE_IO.probabilities]!.data as Float32Array;
        const got = [
          Number((r[CASCADE_IO.exitIndex]!.data as BigInt64Array)[0]),
          argmaxRow(probs, 0, probs.length).index,
        ];
        expect({ i, d: got }).toEqual({ i, d: [staged[i]!.exit, staged[i]!.index] });
      }
    } finally {
      await s.release();
    }
  }, 120_000);
});

describe('other readers of a channels-last model’s cuts', () => {
  const N = 120;
  const images = { data: clusterImages(N, S, S, 3, NHWC_CLASSES, 5), count: N };

  it('on-device learning pools its NHWC candidate cuts as NHWC (the analysis it learns on tells them)', async () => {
    const lm = await analyseForLearning(encodeModel(await fittedKerasNet('NHWC', ortNode)), ortNode, {
      input: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
    });
    const nhwc = reservoirCuts(lm.requests).filter((c) => c.cut.layout === 'NHWC');
    expect(nhwc.length).toBeGreaterThan(0);
    for (const c of nhwc) {
      const [, h, w, ch] = c.cut.shape;
      expect({ t: c.cut.tensor, g: [c.channels, c.height, c.width] }).toEqual({ t: c.cut.tensor, g: [ch, h, w] });
    }
  }, 60_000);

  it('a saved learned exit whose head reads its cut in another layout is not restored (NCHW head on an NHWC cut)', async () => {
    const lm = await analyseForLearning(encodeModel(await fittedKerasNet('NHWC', ortNode)), ortNode, {
      input: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
    });
    const cut = reservoirCuts(lm.requests).find((c) => c.cut.layout === 'NHWC')!.cut;
    const [, h, w, ch] = cut.shape as number[];
    const head = {
      kind: 'pool-linear',
      inChannels: ch!,
      inHeight: h!,
      inWidth: w!,
      grid: [1, 1],
      layers: [
        {
          in: ch!,
          out: NHWC_CLASSES,
          weights: new Float32Array(ch! * NHWC_CLASSES),
          bias: new Float32Array(NHWC_CLASSES),
        },
      ],
      logitScale: 1,
      classes: NHWC_CLASSES,
    };
    const saved = (layout: 'NHWC' | undefined): LearnerState => {
      const fresh = new Learner(lm, { maxCandidates: 4 }).state();
      const exit = { cut: cut.tensor, head: { ...head, ...(layout ? { layout } : {}) } };
      return { ...fresh, fitted: { exits: [exit], summary: { curve: [] } } } as unknown as LearnerState;
    };
    expect(new Learner(lm, { maxCandidates: 4 }).restore(saved('NHWC'))).toBe(true);
    expect(new Learner(lm, { maxCandidates: 4 }).restore(saved(undefined))).toBe(false);
  }, 60_000);

  it('paper mode: full-map heads on NHWC cuts (Transpose, then Flatten) that eval replays', async () => {
    const r = await prepare({
      model: encodeModel(await fittedKerasNet('NHWC', ortNode)),
      samples: images,
      ort: ortNode,
      mode: 'paper',
      exits: ['stem', 'down'],
      folds: 3,
      input: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
      createdAt: '2026-01-01T00:00:00Z',
    });
    expect(r.manifest.exits.length).toBeGreaterThan(0);
    for (const e of r.manifest.exits)
      expect([e.cut, e.headKind, e.layout]).toEqual([expect.stringMatching(/^(stem|down)$/), 'paper', 'NHWC']);
    const ev = await evaluateBundle({ bundle: r, samples: images, ort: ortNode });
    expect(ev.replayMismatches).toBe(0);
  }, 120_000);
});

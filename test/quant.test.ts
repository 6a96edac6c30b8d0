// Exits on int8-quantized graphs (graph/quant.ts): scale and zero point found in a real QOperator graph, features and
// fused heads reading uint8 cuts dequantized, prepare → eval / stage runner / compiled engine deciding alike, uint8
// activations between segments, QDQ's quantized side preferred, and cuts without a scale skipped with a reason.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateManifest, type BundleManifest } from '../src/bundle/manifest.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { candidateCuts, namedExitCuts } from '../src/calibrate/candidate-cuts.js';
import { buildCosts } from '../src/calibrate/exit-costs.js';
import { bundleStageRunner, evaluateBundle } from '../src/calibrate/evaluate.js';
import { extractFeatures } from '../src/calibrate/features.js';
import { prepare } from '../src/calibrate/prepare.js';
import { runCascade } from '../src/engine/cascade.js';
import { isSelfxitError } from '../src/errors.js';
import {
  analyzeModel,
  buildHeadModel,
  decodeModel,
  encodeModel,
  splitModel,
  withExtraOutputs,
  type CutPoint,
  type ModelAnalysis,
} from '../src/graph/index.js';
import type { HeadSpec } from '../src/graph/head-spec.js';
import type { Dequantization } from '../src/graph/quant.js';
import { analyseForLearning, Learner } from '../src/learn/learner.js';
import { createWorkerApi } from '../src/runtime/api.js';
import { noCache } from '../src/runtime/cache.js';
import { rng } from './fixtures/graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, TINY_INPUT } from './fixtures/prepare-fixtures.js';
import { qopClassifier, type HiddenScales } from './fixtures/quant-graphs.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

const INPUT = TINY_INPUT;
const N = 400;
const images = blobImages(N, 8, 8, 3, 17);

/** prepare() on the QOperator fixture (target 0.9, no augmentation) with the first `count` images. */
function prepareQop(hidden: HiddenScales, count: number): ReturnType<typeof prepare> {
  return prepare({
    model: encodeModel(qopClassifier(hidden)),
    samples: { data: images.subarray(0, count * 192), count },
    ort: ortNode,
    target: 0.9,
    input: { mean: INPUT.mean, std: INPUT.std },
    augment: [],
  });
}

/** Reference: `(q - zp) * scale` as float32, then average pooling over `g` and max pooling over `mg`, NCHW order. */
function referenceFeatures(
  q: Uint8Array,
  d: Dequantization,
  n: number,
  [c, h, w]: readonly [number, number, number],
  g: [number, number],
  mg: [number, number],
): Float32Array {
  const x = Float32Array.from(q, (v) => (v - d.zeroPoint) * Math.fround(d.scale));
  const dim = c * (g[0] * g[1] + mg[0] * mg[1]);
  const out = new Float32Array(n * dim);
  for (let r = 0; r < n; r++) {
    let f = 0;
    for (const [grid, max] of [
      [g, false],
      [mg, true],
    ] as const) {
      const bh = h / grid[0];
      const bw = w / grid[1];
      for (let ch = 0; ch < c; ch++)
        for (let i = 0; i < grid[0]; i++)
          for (let j = 0; j < grid[1]; j++) {
            let acc = max ? -Infinity : 0;
            for (let y = i * bh; y < (i + 1) * bh; y++)
              for (let xx = j * bw; xx < (j + 1) * bw; xx++) {
                const v = x[((r * c + ch) * h + y) * w + xx]!;
                acc = max ? Math.max(acc, v) : acc + v;
              }
            out[r * dim + f++] = max ? acc : acc / (bh * bw);
          }
    }
  }
  return out;
}

describe('quantization of cut tensors', () => {
  it('finds each uint8 cut’s scale and zero point from the QLinear op that writes it', async () => {
    const a = await analyzeModel(qopClassifier(), { ort: ortNode });
    const by = new Map(a.cuts.map((c) => [c.tensor, c]));
    expect(by.get('xq')!.dequant).toEqual({ scale: Math.fround(0.03), zeroPoint: 128, dtype: 'uint8' });
    expect(by.get('stem')!.dequant).toEqual({ scale: Math.fround(0.012), zeroPoint: 0, dtype: 'uint8' });
    expect(by.get('sum')!.dequant).toEqual({ scale: Math.fround(0.015), zeroPoint: 0, dtype: 'uint8' });
    expect(by.get('gap')!.dequant?.scale).toBe(Math.fround(0.004));
    expect(by.get('flat')!.dequant).toBeUndefined();
    expect(candidateCuts(a.cuts).map((c) => c.tensor)).toEqual(['stem', 'sum', 'c3']);
  });

  it('leaves out a cut whose scale the graph does not give, saying why', async () => {
    const a = await analyzeModel(qopClassifier('stem'), { ort: ortNode });
    const stem = a.cuts.find((c) => c.tensor === 'stem')!;
    expect(stem.dequant).toBeUndefined();
    expect(stem.dequantMissing).toMatch(/QLinearConv .*scale "scale_mul_\d+" is not a constant/);
    expect(candidateCuts(a.cuts).map((c) => c.tensor)).toEqual(['sum', 'c3']);
  });

  it('keeps one candidate per position and prefers the quantized side of a QDQ pair', () => {
    const cut = (tensor: string, dtype: 'float32' | 'uint8', macs: number, dequant = true): CutPoint => ({
      tensor,
      shape: ['batch', 4, 2, 2],
      dtype,
      macs,
      fraction: macs / 100,
      ...(dtype === 'uint8' && dequant ? { dequant: { scale: 0.1, zeroPoint: 0, dtype: 'uint8' } } : {}),
    });
    const cuts = [
      cut('relu', 'float32', 10),
      cut('relu_q', 'uint8', 10),
      cut('relu_dq', 'float32', 10),
      cut('add_q', 'uint8', 20),
      cut('other_q', 'uint8', 30, false),
    ];
    expect(candidateCuts(cuts).map((c) => c.tensor)).toEqual(['relu_q', 'add_q']);
    // a display name shared by the pair (as cutDisplayNames gives one place) names the candidate
    const named = cuts.map((c) => ({ ...c, name: c.macs === 10 ? 'block1' : c.tensor }));
    expect(namedExitCuts(named, ['block1'], []).map((c) => c.tensor)).toEqual(['relu_q']);
    // so does a tensor name of the pair's float side (bundles and scripts from before named those)
    const warnings: string[] = [];
    expect(namedExitCuts(named, ['relu_dq', 'add_q'], warnings).map((c) => c.tensor)).toEqual(['relu_q', 'add_q']);
    expect(warnings).toEqual([expect.stringMatching(/"relu_dq" names the exit place of candidate "relu_q"/)]);
    // and a cost table's entries for the float side price the candidate
    const analysis = { macs: 100, cuts: named } as unknown as ModelAnalysis;
    const cand = candidateCuts(named);
    const { costs } = buildCosts(analysis, cand, [0, 0], {
      unit: 'ms',
      backbone: 2,
      cuts: { relu_dq: 0.5 },
      heads: { relu_dq: 0.05 },
    });
    expect(costs.backboneCostAt).toEqual([0.5, 2 * 0.2]);
    expect(costs.headCost).toEqual([0.05, 0]);
  });
});

describe('features and heads on uint8 cuts', () => {
  it('pools the dequantized map exactly as a JS dequantize + pool of the backbone’s uint8 outputs', async () => {
    const model = qopClassifier();
    const a = await analyzeModel(model, { ort: ortNode });
    const cuts = candidateCuts(a.cuts);
    const n = 40;
    const feats = await extractFeatures({
      model,
      requests: cuts.map((cut) => ({ cut, grid: [2, 2], maxGrid: [1, 1] })),
      samples: { data: images, count: n },
      input: INPUT,
      output: 'logits',
      outputKind: 'logits',
      classes: 4,
      ort: ortNode,
      batchSize: 16,
    });
    const s = await ort.InferenceSession.create(
      encodeModel(
        withExtraOutputs(
          model,
          cuts.map((c) => c.tensor),
        ),
      ),
    );
    const out = await s.run({
      x: new ort.Tensor('float32', toModelInput({ data: images, count: n }, 0, n, INPUT), inputDims(INPUT, n)),
    });
    for (const [i, c] of cuts.entries()) {
      const q = out[c.tensor]!.data;
      expect(q).toBeInstanceOf(Uint8Array);
      const want = referenceFeatures(
        q as Uint8Array,
        c.dequant!,
        n,
        c.shape.slice(1) as unknown as [number, number, number],
        [2, 2],
        [1, 1],
      );
      const got = feats.cuts[i]!.x;
      expect(got.length).toBe(want.length);
      let d = 0;
      for (let k = 0; k < want.length; k++) d = Math.max(d, Math.abs(got[k]! - want[k]!));
      expect(d).toBeLessThan(1e-5);
      expect(Math.max(...want)).toBeGreaterThan(0.1); // the maps are not all zero
    }
  });

  it('a head with dequant reads uint8 through DequantizeLinear like the float head on the dequantized map', async () => {
    const r = rng(3);
    const d: Dequantization = { scale: 0.05, zeroPoint: 7, dtype: 'uint8' };
    const w = Float32Array.from({ length: 3 * 16 }, () => r());
    const spec: HeadSpec = {
      kind: 'pool-linear',
      inChannels: 4,
      inHeight: 4,
      inWidth: 4,
      grid: [2, 2],
      maxGrid: [1, 1],
      layers: [{ in: 20, out: 3, weight: Float32Array.from({ length: 60 }, () => r()), bias: w.slice(0, 3) }],
      logitScale: 2,
      classes: 3,
    };
    const q = Uint8Array.from({ length: 2 * 64 }, () => Math.floor((r() + 1) * 127));
    const f = Float32Array.from(q, (v) => (v - d.zeroPoint) * Math.fround(d.scale));
    const sq = await ort.InferenceSession.create(encodeModel(buildHeadModel({ ...spec, dequant: d })));
    const sf = await ort.InferenceSession.create(encodeModel(buildHeadModel(spec)));
    const pq = (await sq.run({ features: new ort.Tensor('uint8', q, [2, 4, 4, 4]) })).probs!.data as Float32Array;
    const pf = (await sf.run({ features: new ort.Tensor('float32', f, [2, 4, 4, 4]) })).probs!.data as Float32Array;
    for (let i = 0; i < pf.length; i++) expect(pq[i]).toBeCloseTo(pf[i]!, 6);
  });
});

describe('prepare → bundle → run on a QOperator classifier', () => {
  let tiny: TinyServer;
  let manifest: BundleManifest;
  let files: Map<string, Uint8Array>;
  let warnings: string[];
  let cutNotes: readonly string[];

  beforeAll(async () => {
    const res = await prepareQop('none', N);
    ({ manifest, files, warnings } = res);
    cutNotes = res.report.cutNotes;
    tiny = await serveTinyBundles(() => undefined);
    const dir = path.join(tiny.dir, 'qop');
    mkdirSync(dir, { recursive: true });
    for (const [f, b] of files) writeFileSync(path.join(dir, f), b);
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  }, 240_000);
  afterAll(() => tiny?.close());

  it('gives exits on uint8 cuts, dequantization recorded in the manifest, and a round-tripping bundle', () => {
    expect(manifest.exits.length).toBeGreaterThan(0);
    expect(manifest.backbone.quantized).toBe(true); // the runtime runs it on WASM (test/runtime-quantized.test.ts)
    for (const e of manifest.exits) expect(e.dequant).toMatchObject({ dtype: 'uint8', zeroPoint: 0 });
    const back = validateManifest(JSON.parse(JSON.stringify(manifest)));
    expect(back.exits.map((e) => e.dequant)).toEqual(manifest.exits.map((e) => e.dequant));
    expect(cutNotes.join('\n')).toMatch(/uint8 tensors \(QOperator\).*DequantizeLinear/);
    expect(warnings.filter((w) => /skipped/.test(w))).toEqual([]);
    // the segments pass uint8 between them
    const seg1 = decodeModel(files.get(manifest.segments[1]!.file)!);
    expect(seg1.proto.graph!.input![0]!.type!.tensorType!.elemType).toBe(2); // UINT8
  });

  it('rejects a manifest whose dequant is malformed', () => {
    const bad = JSON.parse(JSON.stringify(manifest)) as { exits: { dequant?: unknown }[] };
    bad.exits[0]!.dequant = { scale: -1, zeroPoint: 0, dtype: 'uint8' };
    let code = '';
    try {
      validateManifest(bad);
    } catch (e) {
      code = isSelfxitError(e) ? e.code : String(e);
    }
    expect(code).toBe('INVALID_BUNDLE');
  });

  it('eval, the stage runner (batches shrinking over uint8 activations) and the compiled engine decide alike', async () => {
    const n = 120;
    const test = blobImages(n, 8, 8, 3, 99);
    const bundle = { manifest, files };
    const thresholds = manifest.exits.map((e) => e.threshold);
    const ev = await evaluateBundle({
      bundle,
      samples: { data: test, count: n },
      ort: ortNode,
      thresholds,
      batchSize: 32,
    });
    expect(ev.replayMismatches).toBe(0);
    expect(ev.exitShares.slice(0, -1).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    const { runner, sessions } = bundleStageRunner(ortNode, bundle);
    const x = toModelInput({ data: test, count: n }, 0, n, manifest.input);
    const staged = await runCascade(manifest, runner, new ort.Tensor('float32', x, inputDims(manifest.input, n)), n, {
      thresholds,
    });
    await sessions.releaseAll();
    // a backbone run one image at a time (batch 'one': batches go row by row) keeps the uint8 activations as they are
    const one = bundleStageRunner(ortNode, {
      manifest: { ...manifest, backbone: { ...manifest.backbone, batch: 'one' } },
      files,
    });
    const byRow = await runCascade(
      manifest,
      one.runner,
      new ort.Tensor('float32', x, inputDims(manifest.input, n)),
      n,
      {
        thresholds,
      },
    );
    await one.sessions.releaseAll();
    expect(byRow.map((r) => [r.index, r.exit])).toEqual(staged.map((r) => [r.index, r.exit]));
    // eval's numbers are those of these decisions: agreement with the backbone and the share leaving at each exit
    const bb = await ort.InferenceSession.create(files.get(manifest.backbone.file!)!);
    const logits = (await bb.run({ x: new ort.Tensor('float32', x, inputDims(manifest.input, n)) })).logits!
      .data as Float32Array;
    const argmax = (i: number): number => {
      let b = 0;
      for (let k = 1; k < 4; k++) if (logits[i * 4 + k]! > logits[i * 4 + b]!) b = k;
      return b;
    };
    expect(ev.agreement).toBeCloseTo(staged.filter((r, i) => r.index === argmax(i)).length / n, 10);
    const shares = manifest.exits.map((_, e) => staged.filter((r) => r.exit === e).length / n);
    expect(ev.exitShares.slice(0, -1)).toEqual(shares);
    const worker = createWorkerApi({ loadOrt: loadOrtNode, cache: noCache });
    const init = await worker.init(tinyInitRequest(tiny.base, 'qop', { engine: 'compiled' }));
    expect(init.state.engine).toBe('compiled');
    const per = manifest.input.channels * manifest.input.height * manifest.input.width;
    for (let i = 0; i < n; i++) {
      const data = x.slice(i * per, (i + 1) * per);
      const r = (await worker.classify({ inputs: [{ kind: 'tensor', data }], thresholds, probabilities: false }))
        .results[0]!;
      expect({ i, index: r.index, exit: r.exit }).toEqual({ i, index: staged[i]!.index, exit: staged[i]!.exit });
    }
    expect(
      (await worker.classify({ inputs: [{ kind: 'tensor', data: x.slice(0, per) }], thresholds, probabilities: false }))
        .state.engine,
    ).toBe('compiled');
    await worker.dispose();
  }, 120_000);
});

describe('quantized cuts without a scale', () => {
  it('prepare skips them with a reason and still finds exits on the others', async () => {
    const res = await prepareQop('stem', 300);
    expect(res.warnings.join('\n')).toMatch(/Quantized cut "stem" skipped as a candidate: .*not a constant/);
    expect(res.report.candidates.map((c) => c.cut)).not.toContain('stem');
    expect(res.report.candidates.length).toBeGreaterThan(0);
  }, 120_000);

  it('a model with no usable cut writes a valid no-exit bundle and says why', async () => {
    const res = await prepareQop('all', 200);
    expect(res.manifest.exits).toEqual([]);
    expect(res.manifest.segments).toHaveLength(1);
    validateManifest(JSON.parse(JSON.stringify(res.manifest)));
    expect(res.warnings.join('\n')).toMatch(/no inner cut .*\(\d+ quantized cuts skipped: no scale\/zero point\)/);
  }, 60_000);
});

const SHARED = path.resolve(import.meta.dirname, '../../shared/models');
const sharedModels = ['cifar10-resnet56-int8-qop.onnx', 'cifar10-resnet56-int8-qdq.onnx'];
const haveShared = sharedModels.every((f) => existsSync(path.join(SHARED, f)));
if (!haveShared) console.log(`quant.test: skipping the shared int8 ResNet-56 checks: ${SHARED} is absent`);

describe.skipIf(!haveShared)('the shared int8 ResNet-56 models', () => {
  it('QOperator: every candidate reads a uint8 cut dequantized; QDQ: the QuantizeLinear side of each pair', async () => {
    const qop = await analyzeModel(decodeModel(new Uint8Array(readFileSync(path.join(SHARED, sharedModels[0]!)))), {
      ort: ortNode,
    });
    const c1 = candidateCuts(qop.cuts);
    expect(c1.length).toBeGreaterThanOrEqual(20);
    for (const c of c1) expect(c.dequant).toMatchObject({ dtype: 'uint8' });
    const qdq = await analyzeModel(decodeModel(new Uint8Array(readFileSync(path.join(SHARED, sharedModels[1]!)))), {
      ort: ortNode,
    });
    const c2 = candidateCuts(qdq.cuts);
    expect(c2.length).toBe(c1.length);
    for (const c of c2) {
      expect(c.dequant).toMatchObject({ dtype: 'uint8' });
      expect(c.tensor).toMatch(/QuantizeLinear_Output$/);
    }
    // the segment after each cut starts with the DequantizeLinear of its input, as in the model (fusable with its Conv)
    const segs = splitModel(
      decodeModel(new Uint8Array(readFileSync(path.join(SHARED, sharedModels[1]!)))),
      c2.slice(0, 3).map((c) => c.tensor),
      qdq,
    );
    for (const s of segs.slice(1)) {
      const input = s.proto.graph!.input![0]!.name!;
      const readers = s.proto.graph!.node!.filter((n) => n.input!.includes(input));
      expect(readers.map((n) => n.opType)).toEqual(['DequantizeLinear']);
    }
    // on-device learning reads the same uint8 cuts (dequantized), from the plain QDQ model
    const lm = await analyseForLearning(new Uint8Array(readFileSync(path.join(SHARED, sharedModels[1]!))), ortNode, {
      input: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    });
    expect(lm.requests.every((r) => r.cut.dequant?.dtype === 'uint8')).toBe(true);
    const learner = new Learner(lm, { maxCandidates: 4 });
    const fs = await ort.InferenceSession.create(encodeModel(learner.featureModel()));
    const x = new ort.Tensor('float32', new Float32Array(8 * 3 * 32 * 32).fill(0.25), [8, 3, 32, 32]);
    learner.fromRun(await fs.run({ [fs.inputNames[0]!]: x }), 8, true);
    await fs.release();
    expect(learner.samplesSeen).toBe(8);
  }, 60_000);
});

// MobileNet-style and fixed-batch models (issue 14): cuts along the whole depth and never inside a squeeze-excite
// branch; prepare finds exits; eval's cascade decides as the compiled engine; a batch fixed at 1 is made dynamic when a
// probe at batch 2 agrees, else the bundle runs one image at a time (features, stage runner, eval).
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compileBundleBatchCascade, compileBundleCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import type { BundleFiles } from '../src/bundle/manifest.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { bundleStageRunner, evaluateBundle } from '../src/calibrate/evaluate.js';
import { candidateCuts } from '../src/calibrate/candidate-cuts.js';
import { prepare, type PrepareOptions } from '../src/calibrate/prepare.js';
import { argmaxRow, runCascade } from '../src/engine/cascade.js';
import { BATCH_CASCADE_IO } from '../src/graph/compile-batch-cascade.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import {
  analyzeModel,
  encodeModel,
  findCuts,
  graphOutputs,
  resolveBatch,
  rewriteBatchDynamic,
  type OnnxModel,
} from '../src/graph/index.js';
import type { OrtTensor } from '../src/ort/types.js';
import {
  clusterImages,
  fittedMobileNet,
  QUICK_PREPARE,
  SMALL_MOBILE,
  smallMobileNet,
} from './fixtures/mobile-graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';

const N = 200;
const images = { data: clusterImages(N, 32, 32, 3), count: N };

/** prepare with small, fast settings (one head kind, few candidates, no augmentation). */
function quickPrepare(model: OnnxModel, extra: Partial<PrepareOptions> = {}) {
  return prepare({
    model: encodeModel(model),
    samples: images,
    ort: ortNode,
    ...QUICK_PREPARE,
    ...extra,
  });
}

/** Compiled-engine decision (exit, class) of every sample at `thresholds` (default the manifest's), batch 1. */
async function compiledDecisions(
  bundle: BundleFiles,
  count: number,
  thresholds = bundle.manifest.exits.map((e) => e.threshold),
): Promise<[number, number][]> {
  const m = bundle.manifest;
  const model = compileBundleCascade(m, segmentModels(bundle, 0, m.segments.length));
  const s = await ort.InferenceSession.create(encodeModel(model));
  const thr = cascadeThresholds(thresholds, m.exits.length);
  const out: [number, number][] = [];
  try {
    for (let i = 0; i < count; i++) {
      const x = new ort.Tensor('float32', toModelInput(images, i, 1, m.input).slice(), inputDims(m.input, 1));
      const r = await s.run({ [s.inputNames[0]!]: x, [CASCADE_IO.thresholds]: new ort.Tensor('float32', thr) });
      const probs = r[CASCADE_IO.probabilities]!.data as Float32Array;
      out.push([Number((r[CASCADE_IO.exitIndex]!.data as BigInt64Array)[0]), argmaxRow(probs, 0, probs.length).index]);
    }
  } finally {
    await s.release();
  }
  return out;
}

/** Batch-model decisions (exit, class) of the first `count` samples, run as one batch (bundles taking batches only). */
async function batchDecisions(
  bundle: BundleFiles,
  count: number,
  thresholds = bundle.manifest.exits.map((e) => e.threshold),
): Promise<[number, number][]> {
  const m = bundle.manifest;
  const model = compileBundleBatchCascade(m, segmentModels(bundle, 0, m.segments.length));
  const s = await ort.InferenceSession.create(encodeModel(model));
  try {
    const x = new ort.Tensor('float32', toModelInput(images, 0, count, m.input).slice(), inputDims(m.input, count));
    const thr = new ort.Tensor('float32', cascadeThresholds(thresholds, m.exits.length));
    const r = await s.run({ [s.inputNames[0]!]: x, [BATCH_CASCADE_IO.thresholds]: thr });
    const probs = r[BATCH_CASCADE_IO.probabilities]!.data as Float32Array;
    const k = m.labels.length;
    const out: [number, number][] = new Array<[number, number]>(count);
    (r[BATCH_CASCADE_IO.rowIndex]!.data as BigInt64Array).forEach((row, j) => {
      const exit = Number((r[BATCH_CASCADE_IO.exitIndex]!.data as BigInt64Array)[j]);
      out[Number(row)] = [exit, argmaxRow(probs, j * k, k).index];
    });
    return out;
  } finally {
    await s.release();
  }
}

/** Stage-runner decisions (exit, class) of the first `count` samples, run as one batch. */
async function stageDecisions(
  bundle: BundleFiles,
  count: number,
  thresholds = bundle.manifest.exits.map((e) => e.threshold),
): Promise<[number, number][]> {
  const m = bundle.manifest;
  const { runner, sessions } = bundleStageRunner(ortNode, bundle);
  try {
    const x = new ort.Tensor('float32', toModelInput(images, 0, count, m.input).slice(), inputDims(m.input, count));
    const res = await runCascade(m, runner, x as unknown as OrtTensor, count, { thresholds });
    return res.map((r) => [r.exit, r.index]);
  } finally {
    await sessions.releaseAll();
  }
}

/** Eval agrees with itself (replay), and the stage runner's batch decisions equal the compiled engine's. */
async function checkBundle(bundle: BundleFiles): Promise<void> {
  const ev = await evaluateBundle({ bundle, samples: images, ort: ortNode });
  expect(ev.replayMismatches).toBe(0);
  expect(ev.exitShares.slice(0, -1).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  const count = 24;
  const stages = await stageDecisions(bundle, count);
  expect(stages).toEqual(await compiledDecisions(bundle, count));
  // The batch model (bundles that take batches; 'one' runs batches row by row on the stage engine): the same.
  const batches = bundle.manifest.backbone.batch !== 'one';
  if (batches) expect(await batchDecisions(bundle, count)).toEqual(stages);
  // No exit enabled: every input runs the whole backbone (a batch-1 `[classes]` output read as [1, classes]).
  const never = bundle.manifest.exits.map(() => Infinity);
  const full = await compiledDecisions(bundle, 12, never);
  expect(await stageDecisions(bundle, 12, never)).toEqual(full);
  if (batches) expect(await batchDecisions(bundle, 12, never)).toEqual(full);
  expect(new Set(full.map(([, label]) => label)).size).toBeGreaterThan(1);
}

describe('MobileNet-style fixture', () => {
  it('cuts lie along the whole depth, never inside a squeeze-excite branch', async () => {
    const model = smallMobileNet();
    const cuts = new Set(findCuts(model));
    const g = model.proto.graph!;
    // The SE branch: from each GlobalAveragePool that is not the head's to the Mul reading its HardSigmoid.
    const seTensors = g
      .node!.filter((n) => n.opType === 'GlobalAveragePool' && n.output![0] !== 'gap')
      .flatMap((gp) => {
        const out: string[] = [gp.output![0]!];
        for (let t = out[0]!; ;) {
          const next = g.node!.find((n) => n.input!.includes(t));
          if (!next || next.opType === 'Mul') break;
          t = next.output![0]!;
          out.push(t);
        }
        return out;
      });
    expect(seTensors.length).toBe(2 * 5);
    for (const t of seTensors) expect(cuts.has(t)).toBe(false);
    const a = await analyzeModel(model, { ort: ortNode });
    const cand = candidateCuts(a.cuts);
    expect(cand.length).toBeGreaterThanOrEqual(8);
    expect(cand[0]!.fraction).toBeLessThan(0.15);
    expect(cand[cand.length - 1]!.fraction).toBeGreaterThan(0.9);
    // depthwise convs and SE blocks: an exit after each stride stage, the Mul of an SE block among them
    expect(cand.some((c) => g.node!.find((n) => n.output![0] === c.tensor)?.opType === 'Mul')).toBe(true);
  });

  it(
    'prepares with exits; eval replays; the stage runner decides as the compiled engine',
    { timeout: 60_000 },
    async () => {
      const r = await quickPrepare(await fittedMobileNet(SMALL_MOBILE, ortNode));
      expect(r.manifest.exits.length).toBeGreaterThan(0);
      expect(r.manifest.backbone.batch).toBeUndefined();
      await checkBundle(r);
    },
  );
});

describe('fixed batch 1', () => {
  it('[1, C, H, W] → [classes]: the batch is made dynamic, checked by a batch-2 probe', async () => {
    const fixed = smallMobileNet('fixed');
    expect(graphOutputs(fixed)[0]!.shape).toEqual([10]);
    const res = await resolveBatch(fixed, ortNode);
    expect(res.mode).toBe('rewritten');
    expect(graphOutputs(res.model)[0]!.shape).toEqual(['N', 10]);
    // same outputs as the dynamic-batch twin (same weights), at batch 3
    const x = new ort.Tensor(
      'float32',
      Float32Array.from({ length: 3 * 3 * 32 * 32 }, (_, i) => Math.sin(i)),
      [3, 3, 32, 32],
    );
    const run = async (m: OnnxModel) => {
      const s = await ort.InferenceSession.create(encodeModel(m));
      const o = (await s.run({ x }))['logits']!.data as Float32Array;
      await s.release();
      return o;
    };
    const [a, b] = [await run(res.model), await run(smallMobileNet())];
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i]!, 4);
  });

  it('a graph that folds the batch into its features stays at batch 1', async () => {
    const m = smallMobileNet('fixed-flat0');
    expect(rewriteBatchDynamic(m)).toBeDefined();
    const res = await resolveBatch(m, ortNode);
    expect(res.mode).toBe('one');
    expect(res.note).toMatch(/probe/);
  });

  for (const [kind, mode] of [
    ['fixed', 'rewritten'],
    ['fixed-flat0', 'one'],
  ] as const) {
    it(
      `${kind}: prepares with exits (backbone.batch "${mode}"); eval and the stage runner decide as the compiled engine`,
      {
        timeout: 60_000,
      },
      async () => {
        const r = await quickPrepare(await fittedMobileNet({ ...SMALL_MOBILE, batch: kind }, ortNode));
        expect(r.manifest.backbone.batch).toBe(mode);
        expect(r.warnings.join(' ')).toMatch(/batch/);
        expect(r.manifest.exits.length).toBeGreaterThan(0);
        await checkBundle(r);
      },
    );
  }
});

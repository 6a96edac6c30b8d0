// The batch cascade (src/graph/compile-batch-cascade.ts): one onnxruntime model that keeps the rows going on with
// `Compress` at each exit decides every row of a batch as the stage engine (runCascade over per-segment sessions, rows
// leaving the batch) for many threshold vectors, batch sizes and gating; a prefix returns the rows no exit took with
// their cut activation; what cannot be compiled throws INVALID_BUNDLE.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compileBundleBatchCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims, toModelInput, type SampleBatch } from '../src/bundle/input.js';
import { NEVER_EXIT, type BundleFiles } from '../src/bundle/manifest.js';
import { bundleStageRunner } from '../src/calibrate/evaluate.js';
import { argmaxRow, runCascade, type CascadeResult } from '../src/engine/cascade.js';
import { isSelfxitError } from '../src/errors.js';
import { BATCH_CASCADE_IO, compileBatchCascade } from '../src/graph/compile-batch-cascade.js';
import { cascadeThresholds } from '../src/graph/compile-cascade.js';
import { decodeModel, encodeModel, type OnnxModel } from '../src/graph/index.js';
import type { OrtTensor } from '../src/ort/types.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages } from './fixtures/prepare-fixtures.js';
import {
  fashionRandomBundle,
  resnet56RandomBundle,
  spreadImages,
  tinyRandomBundle,
} from './fixtures/random-head-bundle.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(repoRoot, '../shared');
const hasShared = fs.existsSync(path.join(shared, 'data/cifar10/test-u8.bin'));
if (!hasShared) console.warn(`[graph-compile-batch-cascade] skipping the CIFAR-10 ResNet-56 test: ${shared} is absent`);
const ONE_THREAD = { intraOpNumThreads: 1, interOpNumThreads: 1 };

interface Row {
  readonly exit: number;
  readonly index: number;
  readonly confidence: number;
  readonly probs: Float32Array;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
  return d;
}

function expectSame(got: Row | undefined, want: CascadeResult, where: string): void {
  expect(got, where).toBeDefined();
  expect({ exit: got!.exit, index: got!.index }, where).toEqual({ exit: want.exit, index: want.index });
  expect(Math.abs(got!.confidence - want.confidence), where).toBeLessThanOrEqual(1e-5);
  expect(maxDiff(got!.probs, want.probs), where).toBeLessThanOrEqual(1e-5);
}

/** The batch model's rows by input row, and (prefix) the rows it continues with their activation. */
async function runBatch(
  session: ort.InferenceSession,
  input: OrtTensor,
  rows: number,
  thresholds: readonly number[],
  exits: number,
): Promise<{ decided: (Row | undefined)[]; contRows: number[]; cont?: OrtTensor }> {
  const thr = cascadeThresholds(thresholds, exits);
  const out = await session.run({
    [session.inputNames[0]!]: input as ort.Tensor,
    [BATCH_CASCADE_IO.thresholds]: new ort.Tensor('float32', thr, [thr.length]),
  });
  const probs = out[BATCH_CASCADE_IO.probabilities]!.data as Float32Array;
  const exitIdx = out[BATCH_CASCADE_IO.exitIndex]!.data as BigInt64Array;
  const rowIdx = out[BATCH_CASCADE_IO.rowIndex]!.data as BigInt64Array;
  const k = probs.length / Math.max(1, rowIdx.length);
  const decided: (Row | undefined)[] = new Array<Row | undefined>(rows);
  rowIdx.forEach((r, j) => {
    const p = probs.slice(j * k, (j + 1) * k);
    const { index, value } = argmaxRow(p, 0, k);
    expect(decided[Number(r)], `row ${r} decided twice`).toBeUndefined();
    decided[Number(r)] = { exit: Number(exitIdx[j]), index, confidence: value, probs: p };
  });
  const cr = out[BATCH_CASCADE_IO.continueRows];
  return {
    decided,
    contRows: cr ? Array.from(cr.data as BigInt64Array, Number) : [],
    ...(cr ? { cont: out[BATCH_CASCADE_IO.continueActivation] as unknown as OrtTensor } : {}),
  };
}

/** Threshold vectors: the manifest's, all exit at 0, none exits, each exit's score quantiles, odd exits off. */
function thresholdSets(b: BundleFiles, scores: number[][]): number[][] {
  const e = b.manifest.exits.length;
  const q = (p: number): number[] =>
    Array.from({ length: e }, (_, j) => {
      const s = scores.map((r) => r[j]!).sort((x, y) => x - y);
      return s[Math.floor(p * (s.length - 1))]!;
    });
  return [
    b.manifest.exits.map((x) => x.threshold),
    new Array<number>(e).fill(0),
    new Array<number>(e).fill(NEVER_EXIT),
    q(0.5),
    q(0.6), // some row's max probability itself: >= fires
    q(0.8).map((t, j) => (j % 2 ? NEVER_EXIT : t)),
  ];
}

/**
 * The batch model (and with `prefixes`, prefix models) equals the stage engine on every image, for every threshold
 * vector, in batches of `batch` (the last one shorter) and of one; returns how often each exit fired.
 */
async function checkBundle(
  bundle: BundleFiles,
  images: SampleBatch,
  batch: number,
  prefixes: readonly number[] = [],
): Promise<Map<number, number>> {
  const m = bundle.manifest;
  const { runner, sessions } = bundleStageRunner(ortNode, bundle, ONE_THREAD);
  const spec = m.input;
  const chunks: { input: OrtTensor; rows: number }[] = [];
  for (let s = 0; s < images.count; s += batch) {
    const rows = Math.min(batch, images.count - s);
    chunks.push({
      input: new ortNode.Tensor('float32', toModelInput(images, s, rows, spec), inputDims(spec, rows)),
      rows,
    });
  }
  chunks.push({ input: new ortNode.Tensor('float32', toModelInput(images, 0, 1, spec), inputDims(spec, 1)), rows: 1 });
  // each exit's max probability on every image (every exit's head run: thresholds above 1 never fire)
  const scores: number[][] = [];
  const k = m.labels.length;
  for (let i = 0; i < images.count; i++) {
    let act: OrtTensor = new ortNode.Tensor('float32', toModelInput(images, i, 1, spec), inputDims(spec, 1));
    const row: number[] = [];
    for (let s = 0; s < m.segments.length - 1; s++) {
      const out = await runner.runStage(s, act, 1, true);
      if (out.exitProbs) row.push(argmaxRow(out.exitProbs, 0, k).value);
      act = out.next!;
    }
    scores.push(row);
  }
  const session = (model: OnnxModel): Promise<ort.InferenceSession> =>
    ort.InferenceSession.create(encodeModel(model), ONE_THREAD);
  const all = segmentModels(bundle, 0, m.segments.length);
  const gated = await session(compileBundleBatchCascade(m, all));
  const ungated = await session(compileBundleBatchCascade(m, all, 0, false));
  const prefixModels = await Promise.all(
    prefixes.map(async (p) => ({ p, s: await session(compileBundleBatchCascade(m, all.slice(0, p + 1))) })),
  );
  const hits = new Map<number, number>();
  for (const [v, t] of thresholdSets(bundle, scores).entries())
    for (const [c, { input, rows }] of chunks.entries()) {
      const want = await runCascade(m, runner, input, rows, { thresholds: t });
      for (const [name, s] of [
        ['gated', gated],
        ['ungated', ungated],
      ] as const) {
        const got = await runBatch(s, input, rows, t, m.exits.length);
        want.forEach((w, r) => expectSame(got.decided[r], w, `${name} thresholds #${v} chunk ${c} row ${r}`));
        expect(got.contRows).toEqual([]);
        if (name === 'gated') for (const w of want) hits.set(w.exit, (hits.get(w.exit) ?? 0) + 1);
      }
      for (const { p, s } of prefixModels) {
        const got = await runBatch(s, input, rows, t, m.exits.length);
        let lastExit = -1; // the last exit within the prefix
        m.exits.forEach((e, j) => (lastExit = e.segment <= p ? j : lastExit));
        want.forEach((w, r) => {
          const where = `prefix ${p} thresholds #${v} chunk ${c} row ${r}`;
          if (w.exit >= 0 && w.exit <= lastExit) expectSame(got.decided[r], w, where);
          else expect(got.decided[r], where).toBeUndefined();
        });
        const expectCont = want.flatMap((w, r) => (w.exit >= 0 && w.exit <= lastExit ? [] : [r]));
        expect(got.contRows).toEqual(expectCont);
        // the continuing rows' activation is the stage engine's cut of those rows
        if (expectCont.length > 0) {
          let act: OrtTensor = input;
          for (let s = 0; s <= p; s++) act = (await runner.runStage(s, act, rows, false)).next!;
          const per = (act.data as Float32Array).length / rows;
          const cut = got.cont!.data as Float32Array;
          expect(got.cont!.dims).toEqual([expectCont.length, ...act.dims.slice(1)]);
          expectCont.forEach((r, j) => {
            const a = (act.data as Float32Array).subarray(r * per, (r + 1) * per);
            expect(maxDiff(a, cut.subarray(j * per, (j + 1) * per)), `prefix ${p} row ${r}`).toBeLessThanOrEqual(1e-5);
          });
        } else expect(got.cont!.dims[0]).toBe(0);
      }
    }
  for (const s of [gated, ungated, ...prefixModels.map((x) => x.s)]) await s.release();
  await sessions.releaseAll();
  return hits;
}

describe('compileBatchCascade on bundles', () => {
  it(
    'tiny classifier (3 segments, 2 exits), 150 images in batches of 64: every row as the stage engine; prefixes continue',
    { timeout: 120_000 },
    async () => {
      const bundle = await tinyRandomBundle();
      const hits = await checkBundle(bundle, { data: blobImages(150, 8, 8, 3, 3), count: 150 }, 64, [0, 1]);
      expect([...hits.keys()].sort((a, b) => a - b)).toEqual([-1, 0, 1]);
    },
  );

  it(
    'shipped Fashion-MNIST ResNet with two random heads, 200 test images in batches of 32',
    { timeout: 180_000 },
    async () => {
      const dir = path.join(repoRoot, 'public/models/fashion-resnet');
      const bundle = await fashionRandomBundle(dir);
      const hits = await checkBundle(bundle, spreadImages(path.join(dir, 'test-u8.bin'), 28 * 28, 200), 32, [0]);
      expect([...hits.keys()].sort((a, b) => a - b)).toEqual([-1, 0, 1]);
    },
  );

  it.skipIf(!hasShared)(
    'ResNet-56 (../shared) with five random heads, 96 CIFAR-10 test images in batches of 32',
    { timeout: 300_000 },
    async () => {
      const bundle = await resnet56RandomBundle(shared);
      await checkBundle(bundle, spreadImages(path.join(shared, 'data/cifar10/test-u8.bin'), 3072, 96), 32, [2]);
    },
  );
});

describe('compileBatchCascade graph rules', () => {
  it('throws INVALID_BUNDLE where no class count is declared, the opset is below 11 or the input name is reserved', async () => {
    const bundle = await tinyRandomBundle();
    const models = segmentModels(bundle, 0, bundle.manifest.segments.length);
    const parts = bundle.manifest.segments.map((s, i) => ({
      model: models[i]!,
      output: s.output,
      ...(s.exit !== undefined ? { exitOutput: s.exitOutput!, exit: s.exit } : {}),
    }));
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return isSelfxitError(e) ? `${e.code}: ${e.message}` : String(e);
      }
      return undefined;
    };
    const old = parts.map((p) => ({
      ...p,
      model: {
        proto: { ...p.model.proto, opsetImport: [{ domain: '', version: 10 }] } as typeof p.model.proto,
      },
    }));
    expect(code(() => compileBatchCascade(old, { end: 'logits' }))).toMatch(/^INVALID_BUNDLE: .*opset 11/);
    // no class count: the exit's and the backbone's outputs declare no class dim
    const undeclared = parts.map((p) => {
      const g = p.model.proto.graph!;
      const output = (g.output ?? []).map((o) =>
        o.name === p.exitOutput || o.name === 'logits' || o.name === p.output
          ? { ...o, type: { tensorType: { elemType: 1 } } }
          : o,
      );
      return { ...p, model: { proto: { ...p.model.proto, graph: { ...g, output } } as typeof p.model.proto } };
    });
    expect(code(() => compileBatchCascade(undeclared, { end: 'logits' }))).toMatch(/^INVALID_BUNDLE: .*class count/);
    // an input named as one of the batch model's outputs
    const renamed = decodeModel(encodeModel(parts[0]!.model));
    const g0 = renamed.proto.graph!;
    const own = g0.input![0]!.name!;
    g0.input![0]!.name = BATCH_CASCADE_IO.rowIndex;
    for (const n of g0.node ?? []) n.input = (n.input ?? []).map((x) => (x === own ? BATCH_CASCADE_IO.rowIndex : x));
    const clash = [{ ...parts[0]!, model: renamed }, ...parts.slice(1)];
    expect(code(() => compileBatchCascade(clash, { end: 'logits' }))).toMatch(
      /^INVALID_BUNDLE: .*"row_index" is reserved/,
    );
  });
});

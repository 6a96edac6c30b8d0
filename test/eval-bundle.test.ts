// evaluateBundle / assembleBundle / readBundle on a hand-assembled bundle (fixed random heads, no training):
// exit bookkeeping, MACs accounting, accuracy against labels, threshold re-choice from the curve, integrity and shape
// errors.
import { stubCalibration } from './fixtures/calibration.js';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assembleBundle } from '../src/bundle/write-bundle.js';
import { readBundle } from '../src/bundle/read-bundle.js';
import type { HeadSpec } from '../src/graph/head-spec.js';
import type { CurvePoint } from '../src/bundle/manifest.js';
import { pickCurvePoint } from '../src/policy/curve.js';
import { cumulativeMacs, evaluateBundle } from '../src/calibrate/evaluate.js';
import { analyzeModel, decodeModel, encodeModel } from '../src/graph/index.js';
import { isSelfxitError } from '../src/errors.js';
import { rng } from './fixtures/graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, tinyClassifier, TINY_INPUT } from './fixtures/prepare-fixtures.js';

function randomHead(c: number, h: number, w: number, seed: number, k = 4): HeadSpec {
  const r = rng(seed);
  const d = c * 2 * 2;
  return {
    kind: 'pool-linear',
    inChannels: c,
    inHeight: h,
    inWidth: w,
    grid: [2, 2],
    classes: k,
    logitScale: 4,
    layers: [{ in: d, out: k, weight: Float32Array.from({ length: k * d }, () => r()), bias: new Float32Array(k) }],
  };
}

const repoRoot = path.resolve(import.meta.dirname, '..');

const curve: CurvePoint[] = [
  { knob: 0.5, thresholds: [0.5, 0.5], agreement: 0.9, macsFraction: 0.6, exitShares: [0.3, 0.2, 0.5] },
  { knob: 0.7, thresholds: [0.7, 0.7], agreement: 0.95, macsFraction: 0.7, exitShares: [0.2, 0.1, 0.7] },
  { knob: 0.9, thresholds: [0.9, 0.9], agreement: 0.99, macsFraction: 0.9, exitShares: [0.05, 0.05, 0.9] },
];

async function tinyBundle() {
  const model = tinyClassifier();
  const bytes = encodeModel(model);
  const analysis = await analyzeModel(model, { ort: ortNode });
  const calibration = stubCalibration(curve);
  return assembleBundle({
    modelBytes: bytes,
    model,
    analysis,
    labels: ['a', 'b', 'c', 'd'],
    output: 'logits',
    outputKind: 'logits',
    calibration,
    input: TINY_INPUT,
    exits: [
      { name: 'b1', cut: 'block1', head: randomHead(8, 8, 8, 1), threshold: 0.7, expectedShare: 0.2 },
      { name: 'b3', cut: 'block3', head: randomHead(16, 4, 4, 2), threshold: 0.7, expectedShare: 0.1 },
    ],
  });
}

describe('evaluateBundle', () => {
  it('accounts exits and MACs like the manifest says', { timeout: 30_000 }, async () => {
    const b = await tinyBundle();
    const m = b.manifest;
    expect(m.segments.map((s) => s.exit)).toEqual([0, 1, undefined]);
    const cost = cumulativeMacs(m);
    expect(cost.exits[0]! / m.backbone.macs).toBeCloseTo(m.exits[0]!.macsFraction, 12);
    expect(cost.backbone).toBe(m.backbone.macs + m.exits[0]!.headMacs + m.exits[1]!.headMacs);
    const n = 200;
    const samples = { data: blobImages(n, 8, 8, 3, 3), count: n };
    const labels = Int32Array.from({ length: n }, (_, i) => i % 4);
    const r = await evaluateBundle({ bundle: b, samples, labels, ort: ortNode, batchSize: 64 });
    expect(r.replayMismatches).toBe(0);
    expect(r.exitShares.reduce((a, x) => a + x, 0)).toBeCloseTo(1, 12);
    const expectedMacs =
      (r.exitShares[0]! * cost.exits[0]! + r.exitShares[1]! * cost.exits[1]! + r.exitShares[2]! * cost.backbone) /
      m.backbone.macs;
    expect(r.macsFraction).toBeCloseTo(expectedMacs, 9);
    expect(r.oracleMacsFraction).toBeLessThanOrEqual(cost.backbone / m.backbone.macs);
    // heads with thresholds 0 answer everything at the first exit
    const all = await evaluateBundle({ bundle: b, samples, ort: ortNode, thresholds: [0, 0] });
    expect(all.exitShares).toEqual([1, 0, 0]);
    expect(all.macsFraction).toBeCloseTo(cost.exits[0]! / m.backbone.macs, 12);
    expect(all.accuracy).toBeNull();
    // --target picks thresholds from the curve
    const t = await evaluateBundle({ bundle: b, samples, ort: ortNode, target: 0.99 });
    expect(t.thresholds).toEqual([0.9, 0.9]);
  });

  it(
    "labels equal to the backbone's own predictions: backboneAccuracy 1 and accuracy === agreement exactly",
    { timeout: 60_000 },
    async () => {
      // The shipped Fashion-MNIST ResNet (its answers vary over images; the tiny fixture's do not) with two random heads.
      const dir = path.join(repoRoot, 'public/models/fashion-resnet');
      const modelBytes = new Uint8Array(fs.readFileSync(path.join(dir, 'model.onnx')));
      const model = decodeModel(modelBytes);
      const analysis = await analyzeModel(model, { ort: ortNode });
      const mean = 0.286;
      const std = 0.353;
      const b = await assembleBundle({
        modelBytes,
        model,
        analysis,
        labels: Array.from({ length: 10 }, (_, i) => String(i)),
        output: 'logits',
        outputKind: 'logits',
        calibration: stubCalibration(curve),
        input: { name: 'input', height: 28, width: 28, channels: 1, layout: 'NCHW', mean: [mean], std: [std] },
        exits: [
          {
            name: 's1',
            cut: '/stage1/stage1.1/Relu_1_output_0',
            head: randomHead(16, 28, 28, 1, 10),
            threshold: 0.7,
            expectedShare: 0.2,
          },
          {
            name: 's2',
            cut: '/stage2/stage2.1/Relu_1_output_0',
            head: randomHead(32, 14, 14, 2, 10),
            threshold: 0.7,
            expectedShare: 0.1,
          },
        ],
      });
      // 200 test images spread over the (class-ordered) file
      const all = new Uint8Array(fs.readFileSync(path.join(dir, 'test-u8.bin')));
      const per = 28 * 28;
      const n = 200;
      const stride = Math.floor(all.length / per / n);
      const data = new Uint8Array(n * per);
      for (let i = 0; i < n; i++) data.set(all.subarray(i * stride * per, (i * stride + 1) * per), i * per);
      const samples = { data, count: n };
      // The backbone's top-1, computed here by hand (not through evaluate.ts): normalise, run the original model.
      const x = Float32Array.from(data, (v) => (v / 255 - mean) / std);
      const session = await ortNode.InferenceSession.create(modelBytes);
      const logits = (await session.run({ input: new ortNode.Tensor('float32', x, [n, 1, 28, 28]) })).logits!
        .data as Float32Array;
      await session.release();
      const labels = Int32Array.from({ length: n }, (_, i) => {
        const row = Array.from(logits.subarray(i * 10, i * 10 + 10));
        return row.indexOf(Math.max(...row));
      });
      expect(new Set(labels).size).toBeGreaterThanOrEqual(8);

      const r = await evaluateBundle({ bundle: b, samples, labels, ort: ortNode, targets: [0.9, 0.99] });
      expect(r.backboneAccuracy).toBe(1);
      expect(r.accuracy).toBe(r.agreement);
      // not the trivial case: some samples leave early, and some of those disagree with the backbone
      expect(r.exitShares[2]).toBeLessThan(1);
      expect(r.agreement).toBeLessThan(1);
      for (const t of r.targetCurve!) expect(t.accuracy).toBe(t.agreement);

      // Labels one class off the backbone's: the backbone never matches them, and a cascade answer that does cannot
      // agree with the backbone, so accuracy <= 1 - agreement.
      const shifted = labels.map((l) => (l + 1) % 10);
      const s = await evaluateBundle({ bundle: b, samples, labels: shifted, ort: ortNode });
      expect(s.backboneAccuracy).toBe(0);
      expect(s.agreement).toBe(r.agreement);
      expect(s.accuracy!).toBeLessThanOrEqual(1 - s.agreement + 1e-12);
    },
  );

  it('picks the cheapest curve point meeting the target, else the most agreeing', () => {
    expect(pickCurvePoint(curve, 0.93).point.knob).toBe(0.7);
    expect(pickCurvePoint(curve, 0.9).point.knob).toBe(0.5);
    expect(pickCurvePoint(curve, 0.999).point.knob).toBe(0.9);
  });

  it('rejects tampered files and samples of the wrong size', { timeout: 30_000 }, async () => {
    const b = await tinyBundle();
    const manifestBytes = new TextEncoder().encode(JSON.stringify(b.manifest));
    const tampered = new Map(b.files);
    const seg = tampered.get('segment-1.onnx')!.slice();
    seg[seg.length - 1]! ^= 1;
    tampered.set('segment-1.onnx', seg);
    await expect(readBundle(async (f) => (f === 'manifest.json' ? manifestBytes : tampered.get(f)!))).rejects.toSatisfy(
      (e) => isSelfxitError(e, 'INTEGRITY_ERROR') && /segment-1\.onnx/.test((e as Error).message),
    );
    await expect(
      evaluateBundle({ bundle: b, samples: { data: new Uint8Array(10 * 64), count: 10 }, ort: ortNode }),
    ).rejects.toSatisfy((e) => isSelfxitError(e, 'INVALID_SAMPLES'));
  });
});

// prepare() end to end on a tiny classifier (always) and on a real CIFAR/Fashion ResNet when available: bundle
// structure, sha256s, fused heads, eval of the bundle, the no-inner-cut case, and the typed validation errors.
import fs from 'node:fs';
import path from 'node:path';
import { chooseThresholds } from '../src/page/target.js';
import { describe, expect, it } from 'vitest';
import { prepare, minimumSamples } from '../src/calibrate/prepare.js';
import { cumulativeMacs, evaluateBundle } from '../src/calibrate/evaluate.js';
import { validateManifest } from '../src/bundle/manifest.js';
import { readBundle } from '../src/bundle/read-bundle.js';
import { encodeModel, sha256Hex } from '../src/graph/index.js';
import { isSelfxitError } from '../src/errors.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, noCutClassifier, tinyClassifier } from './fixtures/prepare-fixtures.js';

const repoRoot = path.resolve(import.meta.dirname, '..');
const shared = path.resolve(repoRoot, '../shared');

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(isSelfxitError(e), String(e)).toBe(true);
    expect((e as { code: string }).code).toBe(code);
    if (message) expect((e as Error).message).toMatch(message);
    return;
  }
  throw new Error(`expected ${code}, resolved`);
}

describe('prepare on a tiny classifier', () => {
  const model = encodeModel(tinyClassifier());
  const n = 400;
  const data = blobImages(n, 8, 8, 3);

  it('writes a consistent bundle that eval runs like the backbone', { timeout: 180_000 }, async () => {
    const events: string[] = [];
    const res = await prepare({
      model,
      samples: { data, count: n },
      ort: ortNode,
      target: 0.9,
      labels: ['a', 'b', 'c', 'd'],
      onProgress: (e) => events.push(e.stage),
    });
    const m = validateManifest(JSON.parse(JSON.stringify(res.manifest)));
    expect(m.segments.length).toBe(m.exits.length + 1);
    expect(m.labels).toEqual(['a', 'b', 'c', 'd']);
    expect(m.input).toMatchObject({ name: 'x', height: 8, width: 8, channels: 3, layout: 'NCHW' });
    expect(m.backbone.sha256).toBe(await sha256Hex(model));
    expect(m.backbone.file).toBe('backbone.onnx');
    expect(m.calibration.samples).toBe(n);
    expect(m.calibration.curve.length).toBeGreaterThan(1);
    // conv outputs share their Relu's MACs (the Relu is kept); block4 sits at > 98 % of the MACs (nothing to save)
    expect(m.calibration.candidates.map((c) => c.name)).toEqual(['block1', 'block2', 'block3']);
    for (const s of m.segments) {
      const bytes = res.files.get(s.file)!;
      expect(bytes.length).toBe(s.bytes);
      expect(await sha256Hex(bytes)).toBe(s.sha256);
    }
    expect(m.segments.reduce((a, s) => a + s.macs, 0)).toBe(m.backbone.macs);
    expect(new Set(events)).toEqual(new Set(['features', 'heads', 'thresholds', 'bundle']));
    // reading it back verifies every hash
    const bundle = await readBundle(async (f) =>
      f === 'manifest.json' ? new TextEncoder().encode(JSON.stringify(m)) : res.files.get(f)!,
    );
    // never exiting, the segment chain must reproduce the backbone exactly
    const never = await evaluateBundle({
      bundle,
      samples: { data, count: n },
      ort: ortNode,
      thresholds: m.exits.map(() => 2),
    });
    expect(never.agreement).toBe(1);
    expect(never.exitShares[never.exitShares.length - 1]).toBe(1);
    const ev = await evaluateBundle({ bundle, samples: { data, count: n }, ort: ortNode });
    expect(ev.samples).toBe(n);
    expect(ev.replayMismatches).toBe(0);
    expect(ev.exitShares.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
    // The oracle (each sample leaves at the first exit whose head agrees with the backbone; none: the whole path) is
    // not bounded by the cascade's MACs: a confident wrong head lets a sample leave before the oracle would. What
    // holds: it lies between deciding at the first exit and running every segment and head; it does not depend on
    // the thresholds; and it exceeds the cascade's MACs only through disagreeing samples, each by at most
    // (whole path - first exit).
    expect(m.exits.length).toBeGreaterThan(0);
    const cost = cumulativeMacs(m);
    const first = cost.exits[0]! / m.backbone.macs;
    const whole = cost.backbone / m.backbone.macs;
    expect(ev.oracleMacsFraction).toBeGreaterThanOrEqual(first - 1e-12);
    expect(ev.oracleMacsFraction).toBeLessThanOrEqual(whole + 1e-12);
    expect(never.oracleMacsFraction).toBe(ev.oracleMacsFraction);
    expect(never.macsFraction).toBeCloseTo(whole, 12);
    expect(ev.oracleMacsFraction).toBeLessThanOrEqual(ev.macsFraction + (1 - ev.agreement) * (whole - first) + 1e-12);
    // on its own calibration samples, the cascade must meet (about) the validated agreement
    expect(ev.agreement).toBeGreaterThanOrEqual(m.calibration.validationAgreement - 0.05);
  });

  it(
    'trains pool-mlp heads with the hidden width asked for (hidden), and counts it in their parameters',
    { timeout: 120_000 },
    async () => {
      for (const hidden of [8, 24]) {
        const res = await prepare({
          model,
          samples: { data, count: n },
          ort: ortNode,
          target: 0.9,
          headKinds: ['pool-mlp'],
          hidden,
          augment: [],
        });
        expect(res.manifest.exits.length).toBeGreaterThan(0);
        for (const e of res.manifest.exits) {
          const d = res.report.candidates.find((c) => c.cut === e.cut)!.features;
          expect(e.headKind).toBe('pool-mlp');
          expect(e.headParams).toBe(d * hidden + hidden + hidden * 4 + 4);
        }
      }
    },
  );

  it('gives a bundle without exits, and a warning, for a model without an inner cut', { timeout: 30_000 }, async () => {
    const res = await prepare({
      model: encodeModel(noCutClassifier()),
      samples: { data: blobImages(200, 4, 4, 3), count: 200 },
      ort: ortNode,
      target: 0.9,
    });
    expect(res.manifest.exits).toEqual([]);
    expect(res.manifest.segments).toHaveLength(1);
    expect(res.warnings.join(' ')).toMatch(/no inner cut/);
    const ev = await evaluateBundle({
      bundle: res,
      samples: { data: blobImages(50, 4, 4, 3, 9), count: 50 },
      ort: ortNode,
    });
    expect(ev.agreement).toBe(1);
    expect(ev.macsFraction).toBeCloseTo(1, 9);
  });

  it('rejects samples of the wrong shape with INVALID_SAMPLES', async () => {
    await expectCode(
      prepare({ model, samples: { data: blobImages(400, 8, 8, 1), count: 400 }, ort: ortNode }),
      'INVALID_SAMPLES',
      /8x8x3/,
    );
    await expectCode(
      prepare({ model, samples: { data, count: n }, input: { height: 16 }, ort: ortNode }),
      'INVALID_SAMPLES',
      /height/,
    );
  });

  it('rejects too few samples with TOO_FEW_SAMPLES naming the minimum', async () => {
    expect(minimumSamples(0.99)).toBe(300);
    expect(minimumSamples(0.9)).toBe(100);
    await expectCode(
      prepare({ model, samples: { data, count: n }, ort: ortNode, target: 0.99, limit: 120 }),
      'TOO_FEW_SAMPLES',
      /at least 300/,
    );
  });

  it('rejects a target outside (0, 1] with INVALID_TARGET', async () => {
    for (const target of [0, -0.5, 1.01, Number.NaN])
      await expectCode(prepare({ model, samples: { data, count: n }, ort: ortNode, target }), 'INVALID_TARGET');
  });
});

// A real network: the shipped Fashion-MNIST ResNet when present, else CIFAR-10 ResNet-20 from ../shared.
const fashionDir = path.join(repoRoot, 'public/models/fashion-resnet');
const fashion =
  fs.existsSync(path.join(fashionDir, 'model.onnx')) && fs.existsSync(path.join(fashionDir, 'calib-u8.bin'));
const cifar = fs.existsSync(path.join(shared, 'models/cifar10-resnet20.onnx'));
const real = fashion
  ? {
      name: 'fashion-resnet',
      model: path.join(fashionDir, 'model.onnx'),
      calib: path.join(fashionDir, 'calib-u8.bin'),
      test: path.join(fashionDir, 'test-u8.bin'),
      labels: path.join(fashionDir, 'test-labels.u8'),
      per: 28 * 28,
      input: {},
    }
  : {
      name: 'cifar10-resnet20',
      model: path.join(shared, 'models/cifar10-resnet20.onnx'),
      calib: path.join(shared, 'data/cifar10/calib-u8.bin'),
      test: path.join(shared, 'data/cifar10/test-u8.bin'),
      labels: path.join(shared, 'data/cifar10/test-labels.u8'),
      per: 3072,
      input: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    };

describe.skipIf(!fashion && !cifar)(`prepare on ${real.name} (400 calibration images)`, () => {
  if (!fashion && !cifar)
    console.warn('skipped: neither public/models/fashion-resnet nor ../shared (CIFAR-10 ResNet-20) is present');
  it('calibrates at 0.99 and the bundle holds on test images', { timeout: 180_000 }, async () => {
    const calib = new Uint8Array(fs.readFileSync(real.calib));
    const res = await prepare({
      model: new Uint8Array(fs.readFileSync(real.model)),
      samples: { data: calib, count: calib.length / real.per },
      limit: 400,
      ort: ortNode,
      input: real.input,
      target: 0.99,
    });
    const m = res.manifest;
    expect(m.calibration.samples).toBe(400);
    expect(m.segments.length).toBe(m.exits.length + 1);
    // setTarget(calibration target) on the page gives back the shipped thresholds
    expect(chooseThresholds(m, m.calibration.target).thresholds).toEqual(m.exits.map((e) => e.threshold));
    const test = new Uint8Array(fs.readFileSync(real.test));
    const labelsAll = fs.readFileSync(real.labels);
    // every test image (fashion: 1,000; 100 gave a standard error of ~1.5 points)
    const count = Math.floor(test.length / real.per);
    const labels = Int32Array.from(labelsAll.subarray(0, count));
    const ev = await evaluateBundle({ bundle: res, samples: { data: test, count }, labels, ort: ortNode });
    // Within 2 points of the target: at 400 samples the 95 % bound certifies 0.99 only with no disagreement out of
    // fold, and the search over exits and thresholds finds such a setting by luck (fashion, seeds 0-2: 97.7-99.8 %
    // on test; seed 0 on the 600 unseen calib images: 97.0 %, and 97.3 % before fold heads trained as the final head).
    expect(ev.agreement).toBeGreaterThanOrEqual(0.97);
    // ...and prepare says so
    expect(res.warnings.some((w) => /With 400 samples, target 0.99/.test(w))).toBe(true);
    expect(ev.accuracy!).toBeGreaterThanOrEqual(ev.backboneAccuracy! - 0.03);
    expect(ev.macsFraction).toBeLessThanOrEqual(1.02);
  });
});

// Real models: the CIFAR-10 ResNets in ../shared and the shipped fashion model — cuts, MACs, and split fidelity.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { analyzeModel, decodeModel, graphInputs, splitModel } from '../src/graph/index.js';
import { maxAbsDiff, ortNode, run, runChain } from './fixtures/ort-helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(repoRoot, '../shared');
const hasShared = fs.existsSync(path.join(shared, 'models/cifar10-resnet20.onnx'));
if (!hasShared) console.warn(`[graph-models] skipping CIFAR-10 ResNet tests: ${shared} is absent`);
const fashionPath = path.join(repoRoot, 'public/models/fashion-resnet/model.onnx');
const hasFashion = fs.existsSync(fashionPath);
if (!hasFashion) console.warn(`[graph-models] skipping fashion-resnet test: ${fashionPath} is absent (not trained yet)`);

const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];

/** `count` CIFAR-10 test images spread over all classes, normalised as ../shared/README.md says, NCHW. */
function cifarImages(count: number): ort.Tensor {
  const raw = fs.readFileSync(path.join(shared, 'data/cifar10/test-u8.bin'));
  const total = raw.length / 3072;
  const x = new Float32Array(count * 3072);
  for (let k = 0; k < count; k++) {
    const img = (k * 313 + 17) % total; // class-major file: stride across classes
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < 1024; p++) x[k * 3072 + c * 1024 + p] = (raw[img * 3072 + p * 3 + c]! / 255 - MEAN[c]!) / STD[c]!;
  }
  return new ort.Tensor('float32', x, [count, 3, 32, 32]);
}

const resnets = [
  { file: 'cifar10-resnet20.onnx', blocks: 9, macs: 40.6e6 },
  { file: 'cifar10-resnet56.onnx', blocks: 27, macs: 125.5e6 },
];

describe.skipIf(!hasShared)('CIFAR-10 ResNets (../shared)', () => {
  for (const r of resnets) {
    it(`${r.file}: block outputs are cuts, MACs within 2 %, all-cuts chain reproduces logits`, async () => {
      const model = decodeModel(fs.readFileSync(path.join(shared, 'models', r.file)));
      const t0 = performance.now();
      const a = await analyzeModel(model, { ort: ortNode });
      const cuts = a.cuts.map((c) => c.tensor);
      const blockOutputs = cuts.filter((c) => /^\/layer\d\/layer\d\.\d+\/Relu_1_output_0$/.test(c));
      expect(blockOutputs).toHaveLength(r.blocks);
      expect(cuts).toContain('/Relu_output_0'); // stem
      expect(cuts.length).toBeGreaterThanOrEqual(r.blocks + 1);
      expect(Math.abs(a.macs - r.macs) / r.macs).toBeLessThan(0.02);
      expect(a.cuts.every((c, i) => i === 0 || c.macs >= a.cuts[i - 1]!.macs)).toBe(true);

      const segs = splitModel(model, cuts, a);
      const x = cifarImages(16);
      const want = (await run(model, x)).logits!;
      const got = await runChain(segs, x);
      const diff = maxAbsDiff(got, want);
      console.log(`${r.file}: ${cuts.length} cuts, ${(a.macs / 1e6).toFixed(2)} M MACs, ${a.params} params, chain max |diff| ${diff.toExponential(2)}, ${(performance.now() - t0).toFixed(0)} ms`);
      expect(got.dims).toEqual([16, 10]);
      expect(diff).toBeLessThanOrEqual(1e-4);
    }, 60_000);
  }
});

describe.skipIf(!hasFashion)('shipped fashion-resnet model', () => {
  it('has cuts, and the all-cuts chain reproduces its outputs', async () => {
    const model = decodeModel(fs.readFileSync(fashionPath));
    const a = await analyzeModel(model, { ort: ortNode });
    expect(a.cuts.length).toBeGreaterThan(0);
    expect(a.macs).toBeGreaterThan(0);
    const [input] = graphInputs(model);
    const dims = input!.shape.slice(1) as number[];
    const per = dims.reduce((p, d) => p * d, 1);
    const n = 16;
    const x = new Float32Array(n * per);
    const rawPath = path.join(repoRoot, 'public/models/fashion-resnet/test-u8.bin');
    const raw = fs.existsSync(rawPath) ? fs.readFileSync(rawPath) : undefined;
    const [c, h, w] = dims as [number, number, number];
    for (let k = 0; k < n; k++)
      for (let ch = 0; ch < c; ch++)
        for (let p = 0; p < h * w; p++) {
          // raw images are NHWC uint8; the comparison only needs the same input on both paths
          const v = raw && raw.length >= (k + 1) * per ? raw[((k * 61) % Math.floor(raw.length / per)) * per + p * c + ch]! / 255 : ((k * 7919 + p * 31 + ch) % 255) / 255;
          x[k * per + ch * h * w + p] = (v - 0.5) / 0.5;
        }
    const tensor = new ort.Tensor('float32', x, [n, ...dims]);
    const out = await run(model, tensor);
    const want = out[a.outputs[0]!.name]!;
    const got = await runChain(splitModel(model, a.cuts.map((cp) => cp.tensor), a), tensor);
    expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-4);
  }, 60_000);
});

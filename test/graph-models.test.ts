// Real models: the CIFAR-10 ResNets in ../shared and the shipped fashion model — cuts, MACs, and split fidelity.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { analyzeModel, decodeModel, splitModel } from '../src/graph/index.js';
import { maxAbsDiff, ortNode, run, runChain } from './fixtures/ort-helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(repoRoot, '../shared');
const hasShared = fs.existsSync(path.join(shared, 'models/cifar10-resnet20.onnx'));
if (!hasShared) console.warn(`[graph-models] skipping CIFAR-10 ResNet tests: ${shared} is absent`);
const fashionPath = path.join(repoRoot, 'public/models/fashion-resnet/model.onnx');
const hasFashion = fs.existsSync(fashionPath);
if (!hasFashion)
  console.warn(`[graph-models] skipping fashion-resnet test: ${fashionPath} is absent (not trained yet)`);

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
      for (let p = 0; p < 1024; p++)
        x[k * 3072 + c * 1024 + p] = (raw[img * 3072 + p * 3 + c]! / 255 - MEAN[c]!) / STD[c]!;
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
      console.log(
        `${r.file}: ${cuts.length} cuts, ${(a.macs / 1e6).toFixed(2)} M MACs, ${a.params} params, chain max |diff| ${diff.toExponential(2)}, ${(performance.now() - t0).toFixed(0)} ms`,
      );
      expect(got.dims).toEqual([16, 10]);
      expect(diff).toBeLessThanOrEqual(1e-4);
    }, 60_000);
  }
});

/** public/models/fashion-resnet/model.json: what the model card promises about the shipped model. */
interface FashionCard {
  input: string;
  output: string;
  shape: [number, number, number]; // H, W, C
  mean: number[];
  std: number[];
  test: string;
  testLabels: string;
  macs: number;
}
const fashionDir = path.dirname(fashionPath);
const readCard = (): FashionCard =>
  JSON.parse(fs.readFileSync(path.join(fashionDir, 'model.json'), 'utf8')) as FashionCard;

/** Shipped test images `indices` (raw uint8 NHWC) → NCHW float32, pixel/255 then (x - mean) / std as model.json says. */
function fashionImages(card: FashionCard, indices: readonly number[]): ort.Tensor {
  const raw = fs.readFileSync(path.join(fashionDir, card.test));
  const [h, w, c] = card.shape;
  const per = h * w * c;
  const x = new Float32Array(indices.length * per);
  indices.forEach((img, k) => {
    if ((img + 1) * per > raw.length) throw new Error(`${card.test} has ${raw.length / per} images, not ${img + 1}`);
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++)
        x[k * per + ch * h * w + p] = (raw[img * per + p * c + ch]! / 255 - card.mean[ch]!) / card.std[ch]!;
  });
  return new ort.Tensor('float32', x, [indices.length, c, h, w]);
}

describe.skipIf(!hasFashion)('shipped fashion-resnet model', () => {
  it('stem and every residual block output are cuts, MACs match model.json, the all-cuts chain reproduces the logits', async () => {
    const card = readCard();
    const model = decodeModel(fs.readFileSync(fashionPath));
    const a = await analyzeModel(model, { ort: ortNode });
    const cuts = a.cuts.map((c) => c.tensor);
    expect(a.inputs.map((t) => t.name)).toEqual([card.input]);
    expect(a.outputs.map((t) => t.name)).toEqual([card.output]);
    expect(a.macs).toBe(card.macs);

    // Blocks from the node names (the torch module paths), independently of the cut search.
    const nodes = model.proto.graph!.node!;
    const blocks = [
      ...new Set(
        nodes
          .map((n) => /^\/(stage\d+)\/\1\.\d+\//.exec(n.name ?? '')?.[0])
          .filter((b): b is string => b !== undefined),
      ),
    ];
    const stages = new Set(blocks.map((b) => b.split('/')[1]));
    expect(stages.size).toBeGreaterThanOrEqual(3);
    expect(blocks.length).toBeGreaterThanOrEqual(2 * stages.size);
    const blockOutputs = blocks.map((b) => `${b}Relu_1_output_0`);
    for (const t of blockOutputs) expect(cuts, t).toContain(t);
    const stem = nodes.filter((n) => (n.name ?? '').startsWith('/stem/'));
    expect(stem.length).toBeGreaterThan(0);
    const stemOutput = stem[stem.length - 1]!.output![0]!;
    expect(stem[stem.length - 1]!.opType).toBe('Relu');
    expect(cuts).toContain(stemOutput);
    // in order: stem first, then the blocks in graph order, MACs non-decreasing
    const order = [stemOutput, ...blockOutputs].map((t) => cuts.indexOf(t));
    expect(order).toEqual([...order].sort((p, q) => p - q));
    expect(a.cuts.every((c, i) => i === 0 || c.macs >= a.cuts[i - 1]!.macs)).toBe(true);

    const tensor = fashionImages(
      card,
      Array.from({ length: 16 }, (_, k) => (k * 61) % 1000),
    );
    const want = (await run(model, tensor))[card.output]!;
    const got = await runChain(splitModel(model, cuts, a), tensor);
    const diff = maxAbsDiff(got, want);
    console.log(
      `fashion-resnet: ${cuts.length} cuts (stem + ${blockOutputs.length} blocks among them), ${a.macs} MACs, chain max |diff| ${diff.toExponential(2)}`,
    );
    expect(got.dims).toEqual([16, 10]);
    expect(diff).toBeLessThanOrEqual(1e-4);
  }, 60_000);

  it('top-1 of the ONNX model on all shipped test images is at least 91 %', async () => {
    const card = readCard();
    const labels = fs.readFileSync(path.join(fashionDir, card.testLabels));
    const [h, w, c] = card.shape;
    const n = fs.statSync(path.join(fashionDir, card.test)).size / (h * w * c);
    expect(n).toBe(labels.length);
    expect(n).toBeGreaterThanOrEqual(1000);
    const session = await ort.InferenceSession.create(fs.readFileSync(fashionPath), { intraOpNumThreads: 2 });
    let correct = 0;
    try {
      for (let start = 0; start < n; start += 250) {
        const idx = Array.from({ length: Math.min(250, n - start) }, (_, k) => start + k);
        const logits = (await session.run({ [card.input]: fashionImages(card, idx) }))[card.output]!;
        const k = logits.dims[1]!;
        const data = logits.data as Float32Array;
        idx.forEach((img, row) => {
          let best = 0;
          for (let j = 1; j < k; j++) if (data[row * k + j]! > data[row * k + best]!) best = j;
          if (best === labels[img]) correct++;
        });
      }
    } finally {
      await session.release();
    }
    const acc = correct / n;
    console.log(
      `fashion-resnet ONNX top-1 on ${n} shipped test images (onnxruntime-node): ${(acc * 100).toFixed(2)} % (${correct}/${n})`,
    );
    expect(acc).toBeGreaterThanOrEqual(0.91);
  }, 120_000);
});

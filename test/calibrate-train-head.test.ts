import { describe, expect, it } from 'vitest';
import { foldStandardization, predictHead, toHeadSpec, trainHead } from '../src/calibrate/train-head.js';
import { argmaxAgreement, meanKL } from '../src/calibrate/linalg.js';
import { createRng } from '../src/calibrate/rng.js';
import type { DenseLayer } from '../src/graph/head-spec.js';
import { teacherData } from './calibrate-fixtures.js';

const [n, d, k] = [3000, 24, 6];
const train = teacherData(n, d, k, 1);
const test = teacherData(1000, d, k, 2);
/** KL of the uniform head, the starting point of every fit in spirit. */
const uniform = new Float32Array(1000 * k).fill(1 / k);

describe('trainHead', () => {
  it('pool-linear imitates a linear teacher on unseen samples', () => {
    const h = trainHead(train.x, train.p, n, d, k, { kind: 'pool-linear', seed: 1 });
    const q = predictHead(h, test.x, 1000);
    const loss = h.report.lossHistory;
    expect(loss[loss.length - 1]!).toBeLessThan(loss[0]! * 0.5);
    expect(meanKL(test.p, q, 1000, k)).toBeLessThan(0.1 * meanKL(test.p, uniform, 1000, k));
    expect(argmaxAgreement(test.p, q, 1000, k)).toBeGreaterThan(0.93);
    expect(h.layers.length).toBe(1);
    expect(h.logitScale).toBe(1);
  });
  it('pool-mlp reaches high agreement too, and is seeded', () => {
    const opts = { kind: 'pool-mlp' as const, hidden: 32, seed: 4 };
    const h = trainHead(train.x, train.p, n, d, k, opts);
    const q = predictHead(h, test.x, 1000);
    expect(argmaxAgreement(test.p, q, 1000, k)).toBeGreaterThan(0.9);
    expect(h.layers.map((l) => [l.in, l.out])).toEqual([
      [d, 32],
      [32, k],
    ]);
    const again = trainHead(train.x, train.p, n, d, k, opts);
    expect(Array.from(again.layers[1]!.weight)).toEqual(Array.from(h.layers[1]!.weight));
  });
  it('paper head: hidden 512 by default, logits x2', () => {
    const h = trainHead(train.x, train.p, n, d, k, { kind: 'paper', seed: 2, epochs: 5 });
    expect(h.layers[0]!.out).toBe(512);
    expect(h.logitScale).toBe(2);
    const q = predictHead(h, test.x, 1000);
    expect(argmaxAgreement(test.p, q, 1000, k)).toBeGreaterThan(0.8);
  });
  it('temperature softening still learns the teacher', () => {
    const h = trainHead(train.x, train.p, n, d, k, { temperature: 3, seed: 1 });
    expect(argmaxAgreement(test.p, predictHead(h, test.x, 1000), 1000, k)).toBeGreaterThan(0.9);
  });
  it('rejects malformed inputs with INVALID_ARGUMENT', () => {
    expect(() => trainHead(train.x, train.p, n + 1, d, k)).toThrow(/features hold/);
    expect(() => trainHead(train.x, train.p, n, d, k, { epochs: 0 })).toThrow(/epochs/);
  });
});

describe('foldStandardization', () => {
  it('gives the same outputs on raw features as the unfolded head on standardised ones', () => {
    const rng = createRng(5);
    const [m, dd, h] = [50, 7, 5];
    const x = Float32Array.from({ length: m * dd }, () => 3 + 2 * rng.normal());
    const mean = Float32Array.from({ length: dd }, () => 3 + rng.normal());
    const inv = Float32Array.from({ length: dd }, () => 0.2 + rng.next());
    const layer = (i: number, o: number): DenseLayer => ({
      in: i,
      out: o,
      weight: Float32Array.from({ length: i * o }, () => rng.normal()),
      bias: Float32Array.from({ length: o }, () => rng.normal()),
    });
    const l0 = layer(dd, h);
    const l1 = layer(h, 4);
    const xs = x.map((v, idx) => (v - mean[idx % dd]!) * inv[idx % dd]!);
    const unfolded = predictHead({ layers: [l0, l1], logitScale: 2 }, xs, m);
    const folded = predictHead({ layers: [foldStandardization(l0, mean, inv), l1], logitScale: 2 }, x, m);
    for (let i = 0; i < unfolded.length; i++) expect(folded[i]).toBeCloseTo(unfolded[i]!, 5);
  });
});

describe('toHeadSpec', () => {
  it('wraps a trained head with its pooling geometry and checks the feature count', () => {
    const h = trainHead(train.x, train.p, 200, d, k, { epochs: 1 });
    const spec = toHeadSpec(h, { kind: 'pool-linear', inChannels: 6, inHeight: 8, inWidth: 8, grid: [2, 2] });
    expect(spec.classes).toBe(k);
    expect(spec.grid).toEqual([2, 2]);
    expect(() => toHeadSpec(h, { kind: 'pool-linear', inChannels: 6, inHeight: 8, inWidth: 8, grid: [4, 4] })).toThrow(
      /features/,
    );
  });
});

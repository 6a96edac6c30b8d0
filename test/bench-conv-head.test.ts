import { describe, expect, it } from 'vitest';
import {
  convHeadLossAndGrad,
  convHeadMacs,
  predictConvHead,
  trainConvHead,
  type ConvHead,
  type ConvHeadShape,
} from '../bench/conv-head/conv-head.js';
import { argmaxAgreement, meanKL } from '../src/calibrate/linalg.js';
import { packFeatures } from '../src/calibrate/feature-store.js';
import { createRng } from '../src/calibrate/rng.js';

const shape: ConvHeadShape = {
  inChannels: 4,
  inHeight: 8,
  inWidth: 8,
  outChannels: 8,
  stride: 2,
  maxGrid: 2,
  hidden: 8,
  classes: 3,
};
const d = 4 * 8 * 8;

/** A head with seeded random weights (a teacher, or a point to check gradients at). */
function randomHead(s: ConvHeadShape, seed: number, gain = 1): ConvHead {
  const rng = createRng(seed);
  const rand = (len: number, std: number): Float32Array => Float32Array.from({ length: len }, () => rng.normal() * std);
  const D = s.outChannels * ((s.avgGrid ?? 1) ** 2 + s.maxGrid * s.maxGrid);
  const layers =
    s.hidden > 0
      ? [
          { in: D, out: s.hidden, weight: rand(D * s.hidden, gain / Math.sqrt(D)), bias: rand(s.hidden, 0.1) },
          {
            in: s.hidden,
            out: s.classes,
            weight: rand(s.hidden * s.classes, gain / Math.sqrt(s.hidden)),
            bias: rand(s.classes, 0.1),
          },
        ]
      : [{ in: D, out: s.classes, weight: rand(D * s.classes, gain / Math.sqrt(D)), bias: rand(s.classes, 0.1) }];
  return {
    shape: s,
    convWeight: rand(s.outChannels * s.inChannels * 9, gain / Math.sqrt(s.inChannels * 9)),
    convBias: rand(s.outChannels, 0.1),
    layers,
  };
}

/** Non-negative maps (as after a ReLU), `[n, C, H, W]`. */
function maps(n: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n * d }, () => Math.max(0, rng.normal() + 0.3));
}

/** Central difference of the loss in conv weight `i` (or conv bias `i` with `bias`), step `eps`. */
function centralDiff(
  head: ConvHead,
  x: Float32Array,
  p: Float32Array,
  n: number,
  i: number,
  eps: number,
  bias = false,
): number {
  const at = (delta: number): number => {
    const w = (bias ? head.convBias : head.convWeight).slice();
    w[i]! += delta;
    const h = bias ? { ...head, convBias: w } : { ...head, convWeight: w };
    return convHeadLossAndGrad(h, x, p, n).loss;
  };
  return (at(eps) - at(-eps)) / (2 * eps);
}

describe('conv head', () => {
  it('conv-weight and bias gradients match central finite differences', () => {
    const n = 5;
    const x = maps(n, 3);
    const head = randomHead(shape, 4);
    const p = predictConvHead(randomHead(shape, 5, 3), x, null, n, { kernels: 'js' });
    const { convWeightGrad, convBiasGrad } = convHeadLossAndGrad(head, x, p, n);
    const eps = 1e-2;
    const rng = createRng(6);
    let checked = 0;
    for (let t = 0; t < 40; t++) {
      const i = rng.int(head.convWeight.length);
      const fd = centralDiff(head, x, p, n, i, eps);
      expect(Math.abs(fd - convWeightGrad[i]!)).toBeLessThan(2e-4 + 0.05 * Math.abs(fd));
      checked++;
    }
    for (let o = 0; o < shape.outChannels; o++) {
      const fd = centralDiff(head, x, p, n, o, eps, true);
      expect(Math.abs(fd - convBiasGrad[o]!)).toBeLessThan(2e-4 + 0.05 * Math.abs(fd));
    }
    expect(checked).toBe(40);
    // Not all zero: the check is not vacuous.
    expect(convWeightGrad.some((g) => Math.abs(g) > 1e-3)).toBe(true);
  });

  it('the linear variant (2x2 average grid, no max) has correct conv gradients too', () => {
    const s = { ...shape, hidden: 0, maxGrid: 0, avgGrid: 2 };
    const n = 4;
    const x = maps(n, 7);
    const head = randomHead(s, 8);
    const p = predictConvHead(randomHead(s, 9, 3), x, null, n, { kernels: 'js' });
    const g = convHeadLossAndGrad(head, x, p, n).convWeightGrad;
    const eps = 1e-2;
    for (const i of [0, 17, 100, 200, 287]) {
      const fd = centralDiff(head, x, p, n, i, eps);
      expect(Math.abs(fd - g[i]!)).toBeLessThan(2e-4 + 0.05 * Math.abs(fd));
    }
  });

  it('learns a conv teacher from packed maps: loss falls, unseen agreement is high, WASM and JS agree', () => {
    const n = 1200;
    const x = maps(n + 400, 11);
    const teacherHead = randomHead(shape, 12, 3);
    const p = predictConvHead(teacherHead, x, null, n + 400, { kernels: 'js' });
    const packed = packFeatures(x, n + 400, d, 'f16');
    const train = Int32Array.from({ length: 1000 }, (_, i) => i);
    const held = Int32Array.from({ length: 200 }, (_, i) => 1000 + i);
    const { head, report } = trainConvHead(packed, p, shape, train, held, { epochs: 12, seed: 1, tolerance: 0 });
    const loss = report.lossHistory;
    expect(loss[loss.length - 1]!).toBeLessThan(0.5 * loss[0]!);
    const test = Int32Array.from({ length: 400 }, (_, i) => n + i);
    const q = predictConvHead(head, packed, test, 400);
    const pt = p.slice(n * 3);
    const uniform = new Float32Array(400 * 3).fill(1 / 3);
    expect(meanKL(pt, q, 400, 3)).toBeLessThan(0.35 * meanKL(pt, uniform, 400, 3));
    expect(argmaxAgreement(pt, q, 400, 3)).toBeGreaterThan(0.8);
    const qJs = predictConvHead(head, packed, test, 400, { kernels: 'js' });
    for (let i = 0; i < qJs.length; i++) expect(Math.abs(qJs[i]! - q[i]!)).toBeLessThan(1e-4);
    expect(report.bestEpoch).toBeGreaterThan(1);
    expect(head.convWeight.length).toBe(8 * 4 * 9);
  });

  it('with the raw map pooled features beside the conv features: gradients and export still hold', () => {
    const s = { ...shape, pooled: { grid: [2, 2] as const, maxGrid: [2, 2] as const } };
    const n = 4;
    const x = maps(n, 21);
    const D = 8 * 5 + 4 * 8;
    const head = randomHead(s, 22);
    const first = head.layers[0]!;
    const rng = createRng(23);
    const wide = { ...first, in: D, weight: Float32Array.from({ length: 8 * D }, () => rng.normal() * 0.2) };
    const h2 = { ...head, layers: [wide, head.layers[1]!] };
    const p = predictConvHead(randomHead({ ...shape }, 24, 3), x, null, n, { kernels: 'js' });
    const g = convHeadLossAndGrad(h2, x, p, n).convWeightGrad;
    const eps = 2e-3; // its gradients are larger (wider features): a smaller step keeps the curvature term small
    for (const i of [3, 50, 150, 250]) {
      const fd = centralDiff(h2, x, p, n, i, eps);
      expect(Math.abs(fd - g[i]!)).toBeLessThan(2e-4 + 0.05 * Math.abs(fd));
    }
    // Trained with standardised pooled features, exported with the standardisation folded in: predictions on the
    // training rows match the training loss's view (KL small and finite, probabilities sum to 1).
    const big = maps(600, 25);
    const pt = predictConvHead(randomHead(shape, 26, 3), big, null, 600, { kernels: 'js' });
    const rows = Int32Array.from({ length: 500 }, (_, i) => i);
    const held = Int32Array.from({ length: 100 }, (_, i) => 500 + i);
    const r = trainConvHead(big, pt, s, rows, held, { epochs: 6, tolerance: 0 });
    expect(r.head.layers[0]!.in).toBe(D);
    const q = predictConvHead(r.head, big, held, 100);
    const kl = meanKL(pt.subarray(500 * 3), q, 100, 3);
    expect(Math.abs(kl - r.report.heldOutHistory[r.report.bestEpoch - 1]!)).toBeLessThan(1e-3);
  });

  it('counts its multiply-adds and rejects bad shapes', () => {
    // conv 4x4 positions x 36 x 8, pooling 2 x 16 x 8, dense 40 x 8 + 8 x 3
    expect(convHeadMacs(shape)).toBe(16 * 36 * 8 + 2 * 16 * 8 + 40 * 8 + 8 * 3);
    const x = maps(4, 1);
    const p = new Float32Array(12).fill(1 / 3);
    const rows = Int32Array.from([0, 1]);
    expect(() => trainConvHead(x, p, { ...shape, outChannels: 6 }, rows, rows)).toThrow(/multiple of 8/);
    expect(() => trainConvHead(x, p, { ...shape, maxGrid: 3 }, rows, rows)).toThrow(/does not divide/);
    expect(() => trainConvHead(x, p, shape, Int32Array.from([9]), rows)).toThrow(/outside/);
  });
});

import { describe, expect, it } from 'vitest';
import { createKernelMemory, gemmJs } from '../src/calibrate/wasm-kernels.js';
import { trainStack, type StackSettings } from '../src/calibrate/head-stack.js';
import { crossFit } from '../src/calibrate/crossfit.js';
import { predictHead, trainHead } from '../src/calibrate/train-head.js';
import { meanKL } from '../src/calibrate/linalg.js';
import { createRng } from '../src/calibrate/rng.js';
import { teacherData } from './calibrate-fixtures.js';

describe('wasm kernels', () => {
  const km = createKernelMemory();
  it('compile to WebAssembly SIMD under Node', () => {
    expect(km.backend).toBe('wasm-simd');
  });
  it('gemm equals a naive triple loop (strided, offset, accumulating)', () => {
    const rng = createRng(1);
    for (const [m, n, k, lda, ldb, ldc] of [
      [4, 8, 1, 1, 8, 8],
      [8, 16, 37, 40, 24, 20],
      [12, 56, 130, 130, 56, 56],
    ] as const) {
      const [a, b, c] = [3, 3 + m * lda + 1, 3 + m * lda + 1 + k * ldb + 5];
      const size = c + m * ldc;
      km.reserve(size);
      const f = km.f32;
      for (let i = 0; i < size; i++) f[i] = rng.normal();
      const want = new Float64Array(m * ldc);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < ldc; j++) {
          let s = f[c + i * ldc + j]!;
          if (j < n) for (let t = 0; t < k; t++) s += f[a + i * lda + t]! * f[b + t * ldb + j]!;
          want[i * ldc + j] = s;
        }
      const twin = Float32Array.from(f.subarray(0, size));
      km.gemm(m, n, k, a, lda, b, ldb, c, ldc);
      gemmJs(twin, m, n, k, a, lda, 1, b, ldb, c, ldc);
      for (let i = 0; i < m * ldc; i++) {
        expect(km.f32[c + i]!).toBeCloseTo(want[i]!, 3);
        expect(twin[c + i]!).toBeCloseTo(want[i]!, 3);
      }
    }
  });
  it('gemmTN (A stored transposed) equals a naive loop, and so does its JS twin', () => {
    const rng = createRng(3);
    const [m, n, k, lda, ldb, ldc] = [12, 24, 33, 14, 30, 26];
    const [a, b, c] = [1, 1 + k * lda, 1 + k * lda + k * ldb];
    const size = c + m * ldc;
    km.reserve(size);
    const f = km.f32;
    for (let i = 0; i < size; i++) f[i] = rng.normal();
    const twin = Float32Array.from(f.subarray(0, size));
    const want = new Float64Array(m * ldc);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < ldc; j++) {
        let sum = f[c + i * ldc + j]!;
        if (j < n) for (let t = 0; t < k; t++) sum += f[a + t * lda + i]! * f[b + t * ldb + j]!;
        want[i * ldc + j] = sum;
      }
    km.gemmTN(m, n, k, a, lda, b, ldb, c, ldc);
    gemmJs(twin, m, n, k, a, 1, lda, b, ldb, c, ldc);
    for (let i = 0; i < m * ldc; i++) {
      expect(km.f32[c + i]!).toBeCloseTo(want[i]!, 3);
      expect(twin[c + i]!).toBeCloseTo(want[i]!, 3);
    }
  });
  it('adamw equals the JS twin', () => {
    const n = 64;
    const js = createKernelMemory('js');
    km.reserve(4 * n);
    js.reserve(4 * n);
    const rng = createRng(2);
    for (let i = 0; i < 4 * n; i++) km.f32[i] = js.f32[i] = i >= 3 * n ? Math.abs(rng.normal()) : rng.normal();
    const h = { lr: 0.01, b1: 0.9, b2: 0.999, c1: 10, c2: 1000, eps: 1e-8, decay: 1e-6 };
    km.adamw(0, n, 2 * n, 3 * n, n, h);
    js.adamw(0, n, 2 * n, 3 * n, n, h);
    for (let i = 0; i < 4 * n; i++) expect(km.f32[i]!).toBeCloseTo(js.f32[i]!, 5);
  });
});

const [n, d, k] = [3000, 24, 6];
const train = teacherData(n, d, k, 1);
const test = teacherData(1000, d, k, 2);

describe('head stack training', () => {
  // Reference: the previous trainer (scalar JS, one head at a time) on the same problem and seeds gave these
  // per-epoch training KLs (pool-linear) and test KL (pool-mlp 32); the stack must reach the same loss.
  it('pool-linear follows the previous trainer epoch by epoch', () => {
    const h = trainHead(train.x, train.p, n, d, k, { kind: 'pool-linear', seed: 1 });
    const old = [0.91815, 0.39064, 0.19908, 0.12326, 0.08877, 0.0708, 0.06067, 0.05493, 0.05176, 0.05029, 0.04985];
    expect(h.report.lossHistory.length).toBe(old.length);
    h.report.lossHistory.forEach((v, i) => expect(v).toBeCloseTo(old[i]!, 3));
    expect(meanKL(test.p, predictHead(h, test.x, 1000), 1000, k)).toBeCloseTo(0.05035, 3);
  });
  it('pool-mlp reaches the previous trainer test KL, with WebAssembly and with the JS kernels', () => {
    for (const kernels of ['auto', 'js'] as const) {
      const h = trainHead(train.x, train.p, n, d, k, { kind: 'pool-mlp', hidden: 32, seed: 1, kernels });
      expect(h.report.backend).toBe(kernels === 'js' ? 'js' : 'wasm-simd');
      expect(h.report.lossHistory.at(-1)!).toBeCloseTo(0.01797, 3);
      expect(meanKL(test.p, predictHead(h, test.x, 1000), 1000, k)).toBeCloseTo(0.02062, 3);
    }
  });
  it('cross-fitted folds are as good out of fold as the previous trainer (oof KL 0.0508 linear, 0.0248 mlp)', () => {
    const lin = crossFit(train.x, train.p, n, d, k, { kind: 'pool-linear', folds: 5, seed: 3, fitFinal: false });
    expect(meanKL(train.p, lin.oof, n, k)).toBeLessThan(0.0508 * 1.03);
    const mlp = crossFit(train.x, train.p, n, d, k, { kind: 'pool-mlp', hidden: 32, folds: 5, seed: 3 });
    expect(meanKL(train.p, mlp.oof, n, k)).toBeLessThan(0.0248 * 1.05);
    // The final head is trainHead's on all samples (its own pass, same seed).
    const alone = trainHead(train.x, train.p, n, d, k, { kind: 'pool-mlp', hidden: 32, seed: 3 });
    expect(Array.from(mlp.head!.layers[1]!.weight)).toEqual(Array.from(alone.layers[1]!.weight));
  });
});

describe('early stopping on the held-out fold', () => {
  // 200 samples, 40 features, a wide MLP, 60 epochs, and a teacher that the features do not predict (rows paired
  // with another sample's teacher): the head can only memorise, so its held-out KL soon turns up.
  const small = { x: teacherData(200, 40, k, 5).x, p: teacherData(200, 40, k, 6).p };
  const base: Omit<StackSettings, 'heldOutTolerance'> = {
    hidden: 128,
    batchSize: 32,
    epochs: 60,
    learningRate: 0.01,
    weightDecay: 0,
    temperature: 1,
    logitScale: 1,
    shuffleSeed: 0,
    trainTolerance: 0,
  };
  const group = Int32Array.from({ length: 200 }, (_, i) => i % 2);
  const heads = [
    { holdOut: 0, seed: 1 },
    { holdOut: 1, seed: 2 },
  ];
  it('stops each fold head when its held-out KL stops improving and keeps its best epoch', () => {
    const oof = new Float32Array(200 * k);
    const r = trainStack(small.x, small.p, 200, 40, k, group, heads, { ...base, heldOutTolerance: 0.001 }, oof);
    expect(r.epochs).toBeLessThan(60);
    for (const h of r.heads) {
      expect(h.heldOutHistory.length).toBeLessThan(30);
      const bestLoss = Math.min(...h.heldOutHistory);
      expect(h.heldOutHistory[h.bestEpoch - 1]).toBe(bestLoss);
      expect(h.bestEpoch).toBeLessThan(h.heldOutHistory.length);
    }
    const full = new Float32Array(200 * k);
    const r2 = trainStack(small.x, small.p, 200, 40, k, group, heads, { ...base, heldOutTolerance: 0 }, full);
    expect(r2.epochs).toBe(60);
    expect(r2.heads[0]!.heldOutHistory.length).toBe(60);
    // Keeping the best epoch beats training to the end on the held-out rows.
    expect(meanKL(small.p, oof, 200, k)).toBeLessThan(meanKL(small.p, full, 200, k));
  });
  it('a head with no rows to train on is refused', () => {
    expect(() =>
      trainStack(small.x, small.p, 200, 40, k, new Int32Array(200), [{ holdOut: 0, seed: 1 }], {
        ...base,
        heldOutTolerance: 0,
      }),
    ).toThrow(/no samples/);
  });
});

// Synthetic data for the calibration math tests: a softmax teacher over features, and candidate-exit score tables.
import { createRng } from '../src/calibrate/rng.js';
import type { CascadeCosts, ExitScores } from '../src/policy/cascade-sim.js';

/** Features `x [n, d]` (shifted, scaled, ReLU'd Gaussians, like pooled activations) and teacher `p = softmax(A x + b)`. */
export function teacherData(
  n: number,
  d: number,
  k: number,
  seed: number,
  mapSeed = 12345,
  sharpness = 3,
): { x: Float32Array; p: Float32Array } {
  const rng = createRng(seed);
  const map = createRng(mapSeed);
  const shift = Float32Array.from({ length: d }, () => map.normal());
  const scale = Float32Array.from({ length: d }, () => 0.5 + 3 * map.next());
  const A = Float32Array.from({ length: k * d }, () => (map.normal() * sharpness) / Math.sqrt(d));
  const x = new Float32Array(n * d);
  for (let r = 0; r < n; r++)
    for (let i = 0; i < d; i++) x[r * d + i] = Math.max(0, (rng.normal() + shift[i]!) * scale[i]!);
  const p = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    let max = -Infinity;
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += A[j * d + i]! * (x[r * d + i]! / scale[i]! - 0.4);
      p[r * k + j] = s;
      max = Math.max(max, s);
    }
    let z = 0;
    for (let j = 0; j < k; j++) {
      const e = Math.exp(p[r * k + j]! - max);
      p[r * k + j] = e;
      z += e;
    }
    for (let j = 0; j < k; j++) p[r * k + j]! /= z;
  }
  return { x, p };
}

/**
 * E candidate exits of growing quality on n samples: each sample has a difficulty; exit e's score rises with its
 * quality minus the difficulty, and the exit agrees with the backbone with probability ≈ its score (calibrated).
 */
export function candidateTable(n: number, E: number, seed: number): ExitScores[] {
  const rng = createRng(seed);
  const difficulty = Float64Array.from({ length: n }, () => rng.next());
  return Array.from({ length: E }, (_, e) => {
    const quality = 0.2 + (1.2 * (e + 1)) / E;
    const score = new Float32Array(n);
    const pred = new Int32Array(n);
    const agree = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const z = 4 * (quality - difficulty[i]!) + 0.7 * rng.normal();
      const s = 0.1 + 0.9 / (1 + Math.exp(-2 * z));
      score[i] = s;
      const ok = rng.next() < Math.pow(s, 0.6);
      agree[i] = ok ? 1 : 0;
      pred[i] = ok ? 0 : 1;
    }
    return { n, score, pred, agree };
  });
}

/** Costs for E candidates spread evenly over the backbone, each head costing 1 % of it. */
export function evenCosts(E: number, overhead = 0): CascadeCosts {
  return {
    backboneCostAt: Array.from({ length: E }, (_, e) => (100 * (e + 1)) / (E + 1)),
    headCost: Array.from({ length: E }, () => 1),
    fullCost: 100,
    overhead,
  };
}

import { describe, expect, it } from 'vitest';
import { cascadeTop1, confidence, multiScale, rescored } from '../bench/exit-levers.js';
import { estimateHeadMacs } from '../src/calibrate/exit-costs.js';
import type { CutFeatures, FeatureSet } from '../src/calibrate/features.js';
import {
  autoConfigs,
  autoLadder,
  configFeatures,
  configGeometry,
  fixedConfig,
} from '../src/calibrate/head-capacity.js';
import { exitScores } from '../src/policy/cascade-sim.js';

describe('bench/exit-levers confidence scores', () => {
  const p = Float32Array.from([0.7, 0.2, 0.1, 1 / 3, 1 / 3, 1 / 3, 0, 1, 0]);

  it('gives max, top-1 minus top-2 and 1 − H/ln k per row', () => {
    expect([...confidence(p, 3, 3, 'max')]).toEqual([0.7, 1 / 3, 1].map(Math.fround));
    const margin = confidence(p, 3, 3, 'margin');
    expect(margin[0]).toBeCloseTo(0.5, 6);
    expect(margin[1]).toBeCloseTo(0, 6);
    expect(margin[2]).toBeCloseTo(1, 6);
    const h0 = -(0.7 * Math.log(0.7) + 0.2 * Math.log(0.2) + 0.1 * Math.log(0.1));
    const entropy = confidence(p, 3, 3, 'entropy');
    expect(entropy[0]).toBeCloseTo(1 - h0 / Math.log(3), 6);
    expect(entropy[1]).toBeCloseTo(0, 6);
    expect(entropy[2]).toBeCloseTo(1, 6);
  });

  it('rescores exits without touching their answers', () => {
    const e = exitScores(p, 3, 3, Int32Array.from([0, 2, 1]));
    expect(rescored(e, p, 3, 'max')).toBe(e);
    const m = rescored(e, p, 3, 'margin');
    expect([...m.pred]).toEqual([...e.pred]);
    expect([...m.agree]).toEqual([1, 0, 1]);
    expect(m.score[0]).toBeCloseTo(0.5, 6);
  });

  it('scores a cascade top-1 from its decisions, the backbone answering the rest', () => {
    const leaves = (score: number[], pred: number[]) => ({
      n: 3,
      score: Float32Array.from(score),
      pred: Int32Array.from(pred),
      agree: new Uint8Array(3),
    });
    // row 0 leaves at the first exit (right), row 1 at the second (wrong), row 2 reaches the backbone (right)
    const d = [leaves([1, 0, 0], [2, 0, 0]), leaves([0, 1, 0], [0, 0, 0])];
    expect(cascadeTop1(d, Int32Array.from([1, 1, 1]), Uint8Array.from([2, 1, 1]))).toBeCloseTo(2 / 3, 9);
  });
});

describe('bench/exit-levers multiScale', () => {
  const n = 2;
  const cut = (i: number, channels: number, side: number, dim: number): CutFeatures => ({
    cut: {
      tensor: `c${i}`,
      shape: [1, channels, side, side],
      dtype: 'float32',
      macs: 100 * (i + 1),
      fraction: 0.25 * i,
    },
    channels,
    height: side,
    width: side,
    grid: [1, 1],
    ...(i === 0 ? { maxGrid: [1, 1] as const } : {}),
    dim,
    x: Float32Array.from({ length: n * dim }, (_, j) => 10 * i + j),
  });
  const set: FeatureSet = {
    n,
    k: 3,
    teacher: new Float32Array(n * 3),
    cuts: [cut(0, 2, 8, 4), cut(1, 3, 4, 3), cut(2, 6, 2, 6)],
  };

  it('concatenates each cut’s rows with the earlier cuts’ rows, itself first', () => {
    const ms = multiScale(set, 1);
    expect(ms.sources).toEqual([[0], [1, 0], [2, 1]]);
    expect(ms.dims.map((d) => d.combined)).toEqual([4, 7, 9]);
    const c1 = ms.set.cuts[1]!;
    // row 1 of cut 1: cut 1's row 1 (10 + 3..5), then cut 0's row 1 (4..7)
    expect([...c1.x.subarray(7, 14)]).toEqual([13, 14, 15, 4, 5, 6, 7]);
    expect(multiScale(set, 2).sources[2]).toEqual([2, 1, 0]);
  });

  it('gives a geometry that prepare’s head code takes as it is, pooling counted apart', () => {
    const ms = multiScale(set, 1);
    for (const f of ms.set.cuts) {
      expect(configGeometry(f, fixedConfig('pool-mlp', 64)).dim).toBe(f.dim);
      expect(configFeatures(f, fixedConfig('pool-mlp', 64))).toBe(f);
      // no coarser-grid or avg-only variant of concatenated rows
      expect(autoConfigs(1e6, f, autoLadder(64)).map((c) => c.label)).toEqual(['mlp128']);
      expect(estimateHeadMacs(0, f, 3)).toBe(f.dim * 3);
    }
    const pools = set.cuts.map((c) => estimateHeadMacs(0, c, 0));
    expect(pools).toEqual([2 * 2 * 64, 3 * 16, 6 * 4]);
    expect(ms.poolMacs).toEqual([pools[0], pools[1]! + pools[0]!, pools[2]! + pools[1]!]);
  });
});

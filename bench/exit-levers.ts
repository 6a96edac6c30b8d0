// Two exit levers studied by bench/ensemble-study.ts (issue 13): confidence scores other than the max-softmax (the
// margin p1 − p2, the negative entropy), and multi-scale head features (the head at a candidate cut also reads the
// pooled features of the candidate cuts before it).
import { estimateHeadMacs } from '../src/calibrate/exit-costs.js';
import type { CutFeatures, FeatureSet } from '../src/calibrate/features.js';
import type { ExitScores } from '../src/policy/cascade-sim.js';

/** An exit's confidence: max-softmax, top-1 minus top-2 probability, or 1 − H/ln k (negative entropy in [0, 1]). */
export type ScoreKind = 'max' | 'margin' | 'entropy';

/** The `kind` confidence of each of `rows` rows of probabilities `p` (`[rows, k]`); larger is more confident. */
export function confidence(p: Float32Array, rows: number, k: number, kind: ScoreKind): Float32Array {
  const out = new Float32Array(rows);
  const lnK = Math.log(k);
  for (let r = 0; r < rows; r++) {
    let top = -Infinity;
    let second = -Infinity;
    let h = 0;
    for (let c = 0; c < k; c++) {
      const v = p[r * k + c]!;
      if (v > top) [second, top] = [top, v];
      else if (v > second) second = v;
      if (v > 0) h -= v * Math.log(v);
    }
    out[r] = kind === 'max' ? top : kind === 'margin' ? top - second : Math.min(1, Math.max(0, 1 - h / lnK));
  }
  return out;
}

/** `e` with its scores replaced by the `kind` confidence of its probabilities `p` (`e` itself for 'max'). */
export function rescored(e: ExitScores, p: Float32Array, k: number, kind: ScoreKind): ExitScores {
  return kind === 'max' ? e : { ...e, score: confidence(p, e.n, k, kind) };
}

/** Multi-scale features of a feature set (see {@link multiScale}). */
export interface MultiScale {
  readonly set: FeatureSet;
  /** Per cut: the pooling MACs of every cut its head reads (its own and the earlier ones'). */
  readonly poolMacs: number[];
  /** Per cut: the candidate cuts its head reads, itself first. */
  readonly sources: number[][];
  /** Per cut: its own feature count and the combined one. */
  readonly dims: { own: number; combined: number }[];
}

/**
 * Cut i's pooled rows followed by those of cuts i−1 … i−depth (those that exist), as one `[n, combined]` matrix per
 * cut. The geometry is a stand-in — `channels · 1 · w` equal to the combined width with w odd, no max grid, the grid
 * equal to the map — so that prepare's head code (configFeatures, configGeometry, estimateHeadMacs) takes the rows as
 * they are, counts only the dense MACs, and offers no coarser-grid or avg-only variant of them (neither would mean
 * anything here); the pooling MACs are returned apart, to be added to the head costs.
 */
export function multiScale(f: FeatureSet, depth: number): MultiScale {
  const sources = f.cuts.map((_, i) => Array.from({ length: Math.min(depth, i) + 1 }, (_, j) => i - j));
  const cuts = f.cuts.map((c, i): CutFeatures => {
    const src = sources[i]!.map((j) => f.cuts[j]!);
    const d = src.reduce((a, s) => a + s.dim, 0);
    const x = new Float32Array(f.n * d);
    for (let r = 0; r < f.n; r++) {
      let o = r * d;
      for (const s of src) {
        x.set(s.x.subarray(r * s.dim, (r + 1) * s.dim), o);
        o += s.dim;
      }
    }
    let channels = 1;
    let w = d;
    while (w % 2 === 0) [w, channels] = [w / 2, channels * 2];
    return { cut: c.cut, channels, height: 1, width: w, grid: [1, w], dim: d, x };
  });
  return {
    set: { ...f, cuts },
    // with hidden 0 and 0 classes, estimateHeadMacs counts the pooling reads alone
    poolMacs: sources.map((src) => src.reduce((a, j) => a + estimateHeadMacs(0, f.cuts[j]!, 0), 0)),
    sources,
    dims: f.cuts.map((c, i) => ({ own: c.dim, combined: cuts[i]!.dim })),
  };
}

/**
 * Top-1 accuracy of a cascade on labelled rows: each row answers at the first position whose decision (score ≥ 0.5)
 * says leave, with that position's argmax, else with the backbone's argmax `backbone`.
 */
export function cascadeTop1(decisions: readonly ExitScores[], backbone: Int32Array, labels: Uint8Array): number {
  let right = 0;
  for (let r = 0; r < backbone.length; r++) {
    const at = decisions.find((d) => d.score[r]! >= 0.5);
    if ((at ? at.pred[r]! : backbone[r]!) === labels[r]) right++;
  }
  return backbone.length ? right / backbone.length : 0;
}

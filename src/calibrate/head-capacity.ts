// Per-exit head capacity (prepare's `capacity: 'auto'`): the head configurations a cut may get (hidden width, a
// coarser average grid, the max branch kept or not), a ladder that grows with the training rows, and the features of
// a configuration derived from the stored ones (no second backbone pass).
import type { HeadKind } from '../bundle/manifest.js';
import type { ExitScores } from '../policy/cascade-sim.js';
import type { CutFeatures } from './features.js';
import { rowReader, toHalf, type FeatureRows, type PackedFeatures } from './feature-store.js';
import { headFeatureDim } from './pool.js';

/** One head configuration at a cut: kind and hidden width, and its pooling relative to the stored features. */
export interface HeadConfig {
  /** Display and map key, e.g. `pool-mlp` (fixed) or `mlp128`, `mlp64-coarse`, `mlp64-avg` (auto). */
  readonly label: string;
  readonly kind: HeadKind;
  /** Hidden width (0: linear). */
  readonly hidden: number;
  /** Halve the stored average grid's sides (where even), e.g. 4x4 → 2x2, 2x2 → 1x1. */
  readonly coarse: boolean;
  /** Keep the stored max-pooling branch. */
  readonly max: boolean;
}

/** A rung of the auto ladder: configurations tried on shortlisted cuts once the training rows reach `minRows`. */
export interface CapacityRung {
  readonly minRows: number;
  readonly config: HeadConfig;
}

const cfg = (label: string, kind: HeadKind, hidden: number, coarse = false, max = true): HeadConfig => ({
  label,
  kind,
  hidden,
  coarse,
  max,
});

/** The head every cut gets first (cross-fitted on all folds), in both capacity modes. */
export const LINEAR: HeadConfig = cfg('pool-linear', 'pool-linear', 0);

/**
 * The auto ladder beyond the fixed heads (pool-linear everywhere, the base MLP of width `hidden` on the shortlist):
 * from 30,000 training rows (15,000 images with flip copies), twice the width (the heads study saw hidden 128 pay
 * with more data) and two cheaper variants of the base MLP (a coarser average grid, no max branch). Below that
 * nothing is added, so prepare on 10,000 images costs what fixed capacity costs.
 */
export function autoLadder(hidden: number): CapacityRung[] {
  const h = `mlp${hidden}`;
  return [
    { minRows: 30_000, config: cfg(`mlp${2 * hidden}`, 'pool-mlp', 2 * hidden) },
    { minRows: 30_000, config: cfg(`${h}-coarse`, 'pool-mlp', hidden, true) },
    { minRows: 30_000, config: cfg(`${h}-avg`, 'pool-mlp', hidden, false, false) },
  ];
}

/** The configurations of the ladder tried with `rows` training rows (those that differ from the stored pooling only
 * where the cut allows it: a coarse variant needs an even grid side, an avg-only one a max branch). */
export function autoConfigs(
  rows: number,
  f: Pick<CutFeatures, 'grid' | 'maxGrid'>,
  ladder: readonly CapacityRung[],
): HeadConfig[] {
  return ladder
    .filter((r) => rows >= r.minRows)
    .map((r) => r.config)
    .filter((c) => (!c.coarse || coarsened(f.grid) !== f.grid) && (c.max || f.maxGrid !== undefined));
}

/** Today's fixed heads: one configuration per head kind, on the stored pooling. */
export function fixedConfig(kind: HeadKind, hidden: number): HeadConfig {
  return cfg(kind, kind, hidden);
}

function coarsened(grid: readonly [number, number]): readonly [number, number] {
  const half = (s: number): number => (s % 2 === 0 ? s / 2 : s);
  const g: [number, number] = [half(grid[0]), half(grid[1])];
  return g[0] === grid[0] && g[1] === grid[1] ? grid : g;
}

/** The pooling and feature count of `config` on the stored features `f` (no data touched). */
export function configGeometry<X extends FeatureRows>(
  f: CutFeatures<X>,
  config: HeadConfig,
): Omit<CutFeatures<X>, 'x'> {
  const grid = config.coarse ? coarsened(f.grid) : f.grid;
  const maxGrid = config.max ? f.maxGrid : undefined;
  const { x: _x, maxGrid: _m, ...rest } = f;
  return { ...rest, grid, ...(maxGrid ? { maxGrid } : {}), dim: headFeatureDim(f.channels, grid, maxGrid) };
}

/**
 * The features of `config` at a cut: `f` itself when the pooling is the stored one, else a new matrix (same storage)
 * whose average part averages the stored cells into the coarser grid and whose max part is copied or dropped.
 * Average cells are equal-sized, so the mean of cell means is the coarser grid's average: the same values the ONNX
 * head computes from the map.
 */
export function configFeatures(f: CutFeatures<FeatureRows>, config: HeadConfig): CutFeatures<FeatureRows> {
  const g = configGeometry(f, config);
  if (g.dim === f.dim && g.grid === f.grid) return f;
  const n = f.x instanceof Float32Array ? f.x.length / f.dim : f.x.n;
  const c = f.channels;
  const [gh, gw] = f.grid;
  const [ch, cw] = g.grid;
  const [fh, fw] = [gh / ch, gw / cw];
  const avgIn = c * gh * gw;
  const avgOut = c * ch * cw;
  const maxLen = g.dim - avgOut;
  const read = rowReader(f.x, f.dim, new Float32Array(f.dim), new Float32Array(f.dim).fill(1));
  const row = new Float32Array(f.dim);
  const outRow = new Float32Array(g.dim);
  const half = !(f.x instanceof Float32Array);
  const dst32 = half ? null : new Float32Array(n * g.dim);
  const dst16 = half ? new Uint16Array(n * g.dim) : null;
  const inv = 1 / (fh * fw);
  for (let r = 0; r < n; r++) {
    read(r, row, 0);
    for (let k = 0; k < c; k++)
      for (let i = 0; i < ch; i++)
        for (let j = 0; j < cw; j++) {
          let s = 0;
          for (let a = 0; a < fh; a++)
            for (let b = 0; b < fw; b++) s += row[k * gh * gw + (i * fh + a) * gw + (j * fw + b)]!;
          outRow[k * ch * cw + i * cw + j] = s * inv;
        }
    for (let m = 0; m < maxLen; m++) outRow[avgOut + m] = row[avgIn + m]!;
    if (dst32) dst32.set(outRow, r * g.dim);
    else for (let m = 0; m < g.dim; m++) dst16![r * g.dim + m] = toHalf(outRow[m]!);
  }
  const x: FeatureRows = dst32 ?? ({ format: 'f16', n, d: g.dim, data: dst16! } satisfies PackedFeatures);
  return { ...g, x };
}

/** The scores of samples `rows` only (a screening fold's held-out samples). */
export function subsetScores(s: ExitScores, rows: Int32Array): ExitScores {
  const pick = <T extends Float32Array | Int32Array | Uint8Array>(a: T, out: T): T => {
    rows.forEach((r, i) => (out[i] = a[r]!));
    return out;
  };
  const m = rows.length;
  return {
    n: m,
    score: pick(s.score, new Float32Array(m)),
    pred: pick(s.pred, new Int32Array(m)),
    agree: pick(s.agree, new Uint8Array(m)),
  };
}

/**
 * Out-of-fold saving of a head per sample, in fractions of the backbone cost: the share it answers alone at the
 * target (`coverage`, top scores first) × the cost after its cut − its own cost (paid by every sample reaching it).
 * The same criterion ranks the head kinds of fixed capacity and the candidates' cuts for the shortlist.
 */
export function headUtility(coverage: number, afterFraction: number, headFraction: number): number {
  return coverage * afterFraction - headFraction;
}

/** The head with the highest utility; `base` (the cheapest, listed first) wins ties. */
export function chooseCapacity<T extends { readonly utility: number }>(base: T, others: readonly T[]): T {
  return others.reduce((a, b) => (b.utility > a.utility ? b : a), base);
}

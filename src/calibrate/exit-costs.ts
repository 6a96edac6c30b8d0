// The cascade cost model over candidate cuts (MACs, or a measured cost table) and the per-head statistics
// reported for every candidate (coverage at the target).
import type { CutPoint, ModelAnalysis } from '../graph/index.js';
import { simulateCascade, type CascadeCosts, type CascadeOutcome, type ExitScores } from '../policy/cascade-sim.js';
import type { CostTable } from '../policy/cost-table.js';
import type { CutFeatures } from './features.js';

/**
 * Cost model in MACs (or the cost table's unit) over the candidates. `table` must have passed `checkCostTable`
 * (prepare() checks it against the model's cut tensors before any work).
 */
export function buildCosts(
  analysis: ModelAnalysis,
  cuts: readonly CutPoint[],
  headMacs: readonly number[],
  table?: CostTable,
): { costs: CascadeCosts; unit: 'macs' | 'ms'; overheadUnit: number } {
  if (!table) {
    return {
      costs: { backboneCostAt: cuts.map((c) => c.macs), headCost: headMacs, fullCost: analysis.macs },
      unit: 'macs',
      overheadUnit: analysis.macs,
    };
  }
  // An entry for another tensor of the candidate's place (the Add of an Add → Relu, the other side of a QDQ pair) counts.
  const entry = (m: Readonly<Record<string, number>> | undefined, c: CutPoint): number | undefined => {
    if (!m) return undefined;
    if (m[c.tensor] !== undefined) return m[c.tensor];
    const other = analysis.cuts.find((x) => x.macs === c.macs && m[x.tensor] !== undefined);
    return other ? m[other.tensor] : undefined;
  };
  const at = cuts.map((c) => entry(table.cuts, c) ?? table.backbone * c.fraction);
  const head = cuts.map(
    (c, i) => entry(table.heads, c) ?? (table.backbone * headMacs[i]!) / Math.max(1, analysis.macs),
  );
  return {
    costs: { backboneCostAt: at, headCost: head, fullCost: table.backbone },
    unit: 'ms',
    overheadUnit: table.backbone,
  };
}

/** Per-exit MACs-based outcome (overhead excluded) at the given thresholds, for the manifest. */
export function macsOutcome(
  scores: readonly ExitScores[],
  selected: readonly number[],
  thresholds: readonly number[],
  macsCosts: CascadeCosts,
): CascadeOutcome {
  return simulateCascade(scores, selected, thresholds, { ...macsCosts, overhead: 0 });
}

/** Head MACs for a kind on features of a cut (`hidden`: its hidden width, 0 for none; pooling as in headCost). */
export function estimateHeadMacs(
  hidden: number,
  f: Pick<CutFeatures, 'dim' | 'channels' | 'height' | 'width' | 'grid' | 'maxGrid'>,
  k: number,
): number {
  const dense = hidden ? f.dim * hidden + hidden * k : f.dim * k;
  const pools = (g: readonly [number, number] | undefined): number =>
    g && !(g[0] === f.height && g[1] === f.width) ? f.channels * f.height * f.width : 0;
  return dense + pools(f.grid) + pools(f.maxGrid);
}

/** Coverage of a head alone at the target: the largest top-score share whose agreement is >= target. */
export function coverageAt(s: ExitScores, target: number): number {
  const order = Array.from({ length: s.n }, (_, i) => i).sort((a, b) => s.score[b]! - s.score[a]!);
  let agree = 0;
  let best = 0;
  order.forEach((idx, r) => {
    agree += s.agree[idx]!;
    if (agree >= target * (r + 1)) best = r + 1;
  });
  return s.n ? best / s.n : 0;
}

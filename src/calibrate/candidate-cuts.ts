// Which cuts of the backbone can hold an exit: the candidates spread over the MACs, cuts named by the caller,
// and the short display name of a cut tensor used in manifests and reports.
import { SelfxitError } from '../errors.js';
import type { CutPoint } from '../graph/index.js';

/** Short display name of a cut tensor, e.g. "/layer2/layer2.1/Relu_1_output_0" → "layer2.1". */
export function exitName(tensor: string): string {
  const bare = tensor.replace(/^\//, '');
  const parts = bare.split('/');
  if (parts.length > 1) return parts[parts.length - 2]!;
  return bare.replace(/_output_\d+$/, '') || tensor;
}

/**
 * Candidate exit cuts: 4-D float32 cuts with known C, H, W, after some backbone work and before the last 2 % of it;
 * of cuts at the same MACs (e.g. Add then Relu) the last. At most `max`, spread evenly over the MACs fraction.
 */
export function candidateCuts(cuts: readonly CutPoint[], max = Infinity): CutPoint[] {
  const ok = cuts.filter(
    (c) =>
      c.dtype === 'float32' &&
      c.shape.length === 4 &&
      c.shape.slice(1).every((d) => typeof d === 'number' && d > 0) &&
      c.fraction > 0 &&
      c.fraction < 0.98,
  );
  const dedup = ok.filter((c, i) => i === ok.length - 1 || ok[i + 1]!.macs !== c.macs);
  if (dedup.length <= max) return dedup;
  const keep = new Set<number>();
  for (let i = 0; i < max; i++) {
    const want =
      dedup[0]!.fraction + ((dedup[dedup.length - 1]!.fraction - dedup[0]!.fraction) * i) / Math.max(1, max - 1);
    let best = 0;
    dedup.forEach((c, j) => {
      if (
        !keep.has(j) &&
        Math.abs(c.fraction - want) < Math.abs(dedup[best]!.fraction - want) + (keep.has(best) ? Infinity : 0)
      )
        best = j;
    });
    keep.add(best);
  }
  return dedup.filter((_, j) => keep.has(j));
}

/** Finds cuts by tensor name or display name (INVALID_CUT naming the unknown one). */
export function findNamedCuts(all: readonly CutPoint[], names: readonly string[]): CutPoint[] {
  const found = names.map((nm) => {
    const c = all.find((x) => x.tensor === nm) ?? all.filter((x) => exitName(x.tensor) === nm).pop();
    if (!c) {
      throw new SelfxitError(
        'INVALID_CUT',
        `"${nm}" is not a cut of this model; cuts: ${all.map((x) => exitName(x.tensor)).join(', ')}`,
        { tensor: nm },
      );
    }
    return c;
  });
  return [...new Set(found)].sort((a, b) => all.indexOf(a) - all.indexOf(b));
}

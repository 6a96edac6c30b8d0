// Which cuts of the backbone can hold an exit: the candidates spread over the MACs, cuts named by the caller,
// and the short display name of a cut tensor used in manifests and reports.
import { SelfxitError } from '../errors.js';
import { exitName, type CutPoint } from '../graph/index.js';

export { exitName };

/** The display name of a cut in manifests, reports and `exits` (unique per place; see cutDisplayNames). */
export function cutName(cut: CutPoint): string {
  return cut.name ?? exitName(cut.tensor);
}

/** A 4-D map with known C, H, W, after some backbone work and before the last 2 % of it (any element type). */
function placed(c: CutPoint): boolean {
  return (
    c.shape.length === 4 &&
    c.shape.slice(1).every((d) => typeof d === 'number' && d > 0) &&
    c.fraction > 0 &&
    c.fraction < 0.98
  );
}

/** A head can read it: float32, or uint8/int8 with a known scale and zero point (read through DequantizeLinear). Not
 * float16: its features would need converting in prepare, the learn runtime and the heads alike (docs/MODELS.md). */
function readable(c: CutPoint): boolean {
  return c.dtype === 'float32' || c.dequant !== undefined;
}

/**
 * Candidate exit cuts: 4-D cuts with known C, H, W that a head can read (float32, or uint8/int8 whose scale and zero
 * point the graph gives), after some backbone work and before the last 2 % of it. One per position: of cuts at the
 * same MACs (e.g. Add then Relu, or QDQ's QuantizeLinear → DequantizeLinear pair) the last quantized one, else the
 * last float32 one. In a QDQ model that is the QuantizeLinear's output: the DequantizeLinear then stays in the segment
 * after the cut, beside the Conv it feeds, so onnxruntime still fuses DequantizeLinear → Conv → QuantizeLinear into one
 * int8 kernel there (a cut on the float side leaves a float Conv at the start of every segment and every `If` branch of
 * the compiled cascade: ~0.15 ms more per exit on ResNet-56, BENCHMARKS.md "int8 QDQ: cut on the quantized side"); the
 * head reads the same values through its own DequantizeLinear, and segments pass 1 byte per value instead of 4.
 * At most `max`, spread evenly over the MACs fraction.
 */
export function candidateCuts(cuts: readonly CutPoint[], max = Infinity): CutPoint[] {
  const ok = cuts.filter((c) => placed(c) && readable(c));
  const dedup = ok.filter((c) => {
    const same = ok.filter((x) => x.macs === c.macs);
    const quantized = same.filter((x) => x.dtype !== 'float32');
    return c === (quantized.length > 0 ? quantized[quantized.length - 1] : same[same.length - 1]);
  });
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

/**
 * Finds cuts by tensor name or display name (INVALID_CUT naming the unknown one). A display name shared by several cuts
 * of one place (an Add and its Relu, a QDQ pair) means the last of them in `prefer`, else the last.
 */
export function findNamedCuts(
  all: readonly CutPoint[],
  names: readonly string[],
  prefer: ReadonlySet<CutPoint> = new Set(),
): CutPoint[] {
  const found = names.map((nm) => {
    const same = all.filter((x) => cutName(x) === nm);
    const c = all.find((x) => x.tensor === nm) ?? same.filter((x) => prefer.has(x)).pop() ?? same.pop();
    if (!c) {
      throw new SelfxitError(
        'INVALID_CUT',
        `"${nm}" is not a cut of this model; cuts: ${[...new Set(all.map(cutName))].join(', ')}`,
        { tensor: nm },
      );
    }
    return c;
  });
  return [...new Set(found)].sort((a, b) => all.indexOf(a) - all.indexOf(b));
}

/**
 * The cuts named in `names` (tensor or display names) that can hold an exit ({@link candidateCuts}), in model order,
 * with a warning in `warnings` for each other one. INVALID_CUT for a name that is not a cut, or when none of them can
 * hold an exit.
 */
export function namedExitCuts(all: readonly CutPoint[], names: readonly string[], warnings: string[]): CutPoint[] {
  const usable = new Set(candidateCuts(all));
  // a tensor of a candidate's place that is not the candidate itself (an Add before its Relu, the float side of a
  // QDQ pair, as bundles made before QDQ cuts moved to the quantized side named them) names that candidate
  const sameShape = (a: CutPoint, b: CutPoint): boolean =>
    a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
  const named = [
    ...new Set(
      findNamedCuts(all, names, usable).map((x) => {
        const u = usable.has(x) ? undefined : [...usable].find((c) => c.macs === x.macs && sameShape(c, x));
        if (!u) return x;
        warnings.push(
          `"${x.tensor}" names the exit place of candidate "${u.tensor}" (${cutName(u)}): that cut is used`,
        );
        return u;
      }),
    ),
  ];
  const unusable = named.filter((x) => !usable.has(x));
  const why = 'not a 4-D map a head can read, after some backbone work and before the last 2 % of it';
  if (unusable.length === named.length)
    throw new SelfxitError(
      'INVALID_CUT',
      `none of the exits named can hold an exit (${unusable.map((x) => `"${x.tensor}"`).join(', ')}: ${why}); candidates: ${[...usable].map(cutName).join(', ')}`,
      { tensor: unusable[0]?.tensor },
    );
  for (const x of unusable) warnings.push(`"${x.tensor}" cannot hold an exit (${why}); skipped`);
  return named.filter((x) => usable.has(x));
}

/** Quantized cuts left out as candidates because their scale/zero point is unknown, with the reason. */
export function skippedQuantCuts(cuts: readonly CutPoint[]): { tensor: string; reason: string }[] {
  return cuts
    .filter((c) => placed(c) && c.dequantMissing !== undefined && !cuts.some((x) => x.macs === c.macs && readable(x)))
    .map((c) => ({ tensor: c.tensor, reason: c.dequantMissing! }));
}

/** float16 cuts that would be candidates but for their element type (no float32 or readable cut at their MACs). */
export function skippedFloat16Cuts(cuts: readonly CutPoint[]): string[] {
  return cuts
    .filter((c) => placed(c) && c.dtype === 'float16' && !cuts.some((x) => x.macs === c.macs && readable(x)))
    .map((c) => c.tensor);
}

/** prepare's warning when no cut can hold an exit: why, naming skipped quantized and float16 cuts. */
export function noExitCutsWarning(cuts: readonly CutPoint[]): string {
  const quant = skippedQuantCuts(cuts).length;
  const half = skippedFloat16Cuts(cuts).length;
  const why = [
    quant > 0 ? `${quant} quantized cuts skipped: no scale/zero point` : '',
    half > 0 ? `${half} float16 cuts skipped: heads read float32 or uint8/int8 maps; export the model in float32` : '',
  ].filter((x) => x !== '');
  return `The model has no inner cut where an exit head can read a 4-D feature map${why.length > 0 ? ` (${why.join('; ')})` : ''}: the bundle has no exits (one segment, the whole model).`;
}

/** How a quantized model's candidates read their cuts, in words (none for a float model). */
export function quantCutNotes(cuts: readonly CutPoint[]): string[] {
  const cand = candidateCuts(cuts);
  const quant = cand.filter((c) => c.dequant);
  const notes: string[] = [];
  if (quant.length > 0) {
    const d = quant[0]!.dequant!.dtype;
    const qdq = quant.filter((c) => cuts.some((x) => x.macs === c.macs && x.dtype === 'float32')).length;
    const kind =
      qdq === 0
        ? 'QOperator'
        : qdq === quant.length
          ? 'QDQ: the QuantizeLinear side of each pair'
          : 'QDQ and QOperator';
    notes.push(
      `${quant.length} of ${cand.length} candidate cuts are ${d} tensors (${kind}): their heads start with a DequantizeLinear (scale and zero point from the graph)`,
    );
  }
  return notes;
}

/**
 * How candidates read their maps' layout, in words (none when the graph tells NCHW for every 4-D one): the channels-last
 * cuts (their heads start with a Transpose to NCHW) and those whose layout the graph does not tell (read as NCHW).
 */
export function layoutCutNotes(cuts: readonly CutPoint[]): string[] {
  const cand = candidateCuts(cuts);
  const nhwc = cand.filter((c) => c.layout === 'NHWC').length;
  const unknown = cand.filter((c) => c.layout === undefined).length;
  const notes: string[] = [];
  if (nhwc > 0)
    notes.push(
      `${nhwc} of ${cand.length} candidate cuts are channels-last maps [N, H, W, C] (as the graph tells): pooled over H and W, their heads start with a Transpose to NCHW`,
    );
  if (unknown > 0)
    notes.push(
      `the graph does not tell the layout of ${unknown} of ${cand.length} candidate cuts (no Conv, pool or normalization on a path to them, or paths that tell them different layouts): read as NCHW [N, C, H, W]`,
    );
  return notes;
}

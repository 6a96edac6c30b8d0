// The cost table: measured per-sample costs (e.g. ms on a device) that exit selection minimises instead of MACs.
import { SelfxitError } from '../errors.js';

/**
 * Measured cost per sample (e.g. milliseconds on the target device), used by exit selection instead of MACs.
 * Every number is per sample in the same unit.
 * @example { "unit": "ms", "backbone": 0.52, "cuts": { "/layer1/layer1.2/Relu_1_output_0": 0.2 }, "overhead": 0.01 }
 */
export interface CostTable {
  /** Unit of every number. Only 'ms' for now. */
  readonly unit?: 'ms';
  /** Whole backbone. */
  readonly backbone: number;
  /** Cumulative cost from the input to each cut tensor; cuts not listed get `backbone * (MACs fraction)`. */
  readonly cuts?: Readonly<Record<string, number>>;
  /** Cost of the exit head at a cut; not listed: `backbone * headMacs / backboneMacs`. */
  readonly heads?: Readonly<Record<string, number>>;
  /** Per-exit overhead (dispatch, readback) per sample; default `overheadFraction * backbone`. */
  readonly overhead?: number;
}

/**
 * Checks a cost table's structure: `backbone` a finite number > 0; `cuts`, `heads` objects of finite numbers >= 0;
 * `overhead` a finite number >= 0; `unit` 'ms' when given; no other keys; a cut's cost (cumulative from the input)
 * at most `backbone`. With `cutTensors` (in topological order), every key of `cuts` and `heads` must be one of them (a
 * misspelt tensor would silently fall back to MACs), and cut costs must not decrease along them.
 * @throws SelfxitError `INVALID_ARGUMENT` naming the offending entry.
 */
export function checkCostTable(table: unknown, cutTensors?: readonly string[]): asserts table is CostTable {
  const bad = (msg: string): never => {
    throw new SelfxitError('INVALID_ARGUMENT', `cost table: ${msg}`);
  };
  const isRecord = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  const isCost = (v: unknown, positive = false): boolean =>
    typeof v === 'number' && Number.isFinite(v) && (positive ? v > 0 : v >= 0);
  if (!isRecord(table))
    bad('needs an object { "backbone": <cost per sample>, "cuts"?: {…}, "heads"?: {…}, "overhead"?: <cost> }');
  const t = table as Record<string, unknown>;
  for (const key of Object.keys(t))
    if (!['unit', 'backbone', 'cuts', 'heads', 'overhead'].includes(key))
      bad(`unknown key "${key}" (unit, backbone, cuts, heads, overhead)`);
  if (t.unit !== undefined && t.unit !== 'ms') bad(`unit must be "ms", got ${JSON.stringify(t.unit)}`);
  if (!isCost(t.backbone, true))
    bad(`backbone must be a number > 0 (cost of the whole model per sample), got ${JSON.stringify(t.backbone)}`);
  if (t.overhead !== undefined && !isCost(t.overhead))
    bad(`overhead must be a number >= 0, got ${JSON.stringify(t.overhead)}`);
  const known = cutTensors ? new Set(cutTensors) : undefined;
  for (const part of ['cuts', 'heads'] as const) {
    const m = t[part];
    if (m === undefined) continue;
    if (!isRecord(m)) bad(`${part} must be an object { "<cut tensor>": <cost> }`);
    for (const [tensor, v] of Object.entries(m as Record<string, unknown>)) {
      if (!isCost(v)) bad(`${part}["${tensor}"] must be a number >= 0, got ${JSON.stringify(v)}`);
      if (known && !known.has(tensor))
        bad(`${part}["${tensor}"]: not a cut tensor of this model (see \`selfxit inspect\`)`);
    }
  }
  const cuts = (t.cuts ?? {}) as Record<string, number>;
  for (const [tensor, v] of Object.entries(cuts))
    if (v > (t.backbone as number))
      bad(
        `cuts["${tensor}"] is ${v}, more than the whole backbone (${String(t.backbone)}): a cut's cost is cumulative from the input`,
      );
  const ordered = (cutTensors ?? []).filter((c) => cuts[c] !== undefined);
  for (let i = 1; i < ordered.length; i++) {
    const [a, b] = [ordered[i - 1]!, ordered[i]!];
    if (cuts[b]! < cuts[a]!)
      bad(
        `cuts["${b}"] (${cuts[b]}) is less than cuts["${a}"] (${cuts[a]}) before it: cut costs are cumulative from the input, so they cannot decrease along the model`,
      );
  }
}

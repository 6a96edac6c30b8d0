// What an exit costs and saves as a fraction of the full path, for live exit pruning (exit-pruning.ts): from a device
// plan's measured times when one is in force, else from MACs with a per-exit overhead in ms over the live call time. Pure.
import type { BundleManifest } from '../bundle/manifest.js';
import type { StageTimings } from './device-plan.js';

/**
 * Per-exit overhead in MACs-fraction units: exit selection's default (select-exits.ts `overhead`, 1 % of the backbone,
 * prepare's `overheadFraction`); a bundle does not record the value it was prepared with. Also the least an exit is
 * ever charged on top of its head (a measured time that rounds to nothing is noise, not a free exit).
 */
export const EXIT_OVERHEAD_FRACTION = 0.01;

/**
 * What an exit in use costs a call that passes it, in ms, whatever the model (its head, decision and `If` in the
 * compiled model), per backend. WASM: measured in Chromium at 1 thread, worst case (no exit fires), nested compiled
 * cascade vs the full model, interleaved: 0.08 ms per exit on the shipped Fashion model (2.12 vs 1.88 ms, 3 exits),
 * 0.09 on ResNet-20 (3.90 vs 3.62, 3), 0.10 on ResNet-56 (10.98 vs 10.48, 5); rerun with
 * `npx tsx bench/exit-cost-browser.ts <bundle dir> --images 200 --threads 1` (column "paired extra per exit", row
 * "nested"). WebGPU: not measured; the WASM figure is used.
 */
export const EXIT_OVERHEAD_MS: Readonly<Record<string, number>> = { wasm: 0.09, webgpu: 0.09 };

/** What one exit costs and saves, in fractions of the full path (MACs or measured time). */
export interface ExitEconomics {
  /** Paid by every input that reaches the exit: its head + the per-exit overhead. */
  readonly cost: number;
  /** Saved by an input that leaves there when no exit after it is in use: the backbone after its cut. */
  readonly saved: number;
  /** The share of reaching inputs that must leave for the exit to pay as the deepest in use: cost / saved. */
  readonly breakEven: number;
}

const economicsOf = (cost: number, saved: number): ExitEconomics => ({
  cost,
  saved,
  breakEven: saved > 0 ? cost / saved : Infinity,
});

/**
 * The most {@link overheadFraction} charges: the largest measured share ({@link EXIT_OVERHEAD_MS}: 4.8 % of the shipped
 * Fashion model's 1.88 ms, the fastest model measured). A much faster model has smaller heads, so there the constant
 * would price exits far above their cost (a 0.2 ms model: 45 %).
 */
export const EXIT_OVERHEAD_MAX_FRACTION = 0.05;

/**
 * The per-exit overhead as a fraction of the full path: `overheadMs` over `fullMs` (the runtime's live estimate of a
 * call that takes no exit), never below {@link EXIT_OVERHEAD_FRACTION} (that floor alone while `fullMs` is unknown)
 * nor above {@link EXIT_OVERHEAD_MAX_FRACTION}.
 */
export function overheadFraction(overheadMs: number, fullMs: number | undefined): number {
  const f = fullMs !== undefined && fullMs > 0 && Number.isFinite(overheadMs) ? overheadMs / fullMs : 0;
  return Math.max(EXIT_OVERHEAD_FRACTION, Math.min(EXIT_OVERHEAD_MAX_FRACTION, f));
}

/** {@link ExitEconomics} of every exit of a manifest by MACs; `overhead` in backbone-MACs fractions. */
export function exitEconomics(manifest: BundleManifest, overhead = EXIT_OVERHEAD_FRACTION): ExitEconomics[] {
  // MACs of segments 0 .. s, summed in order (the runtime prices exits again as its call time moves: no slices)
  const prefix: number[] = [];
  for (const s of manifest.segments) prefix.push((prefix[prefix.length - 1] ?? 0) + s.macs);
  const segMacs = prefix[prefix.length - 1] ?? 0;
  // MACs fractions as the manifest's (of backbone.macs); a manifest without MACs counts segments instead.
  const total = manifest.backbone.macs > 0 ? manifest.backbone.macs : segMacs;
  const upTo = (segment: number): number =>
    total > 0 ? prefix[segment]! / total : (segment + 1) / manifest.segments.length;
  return manifest.exits.map((e) =>
    economicsOf((total > 0 ? e.headMacs / total : 0) + overhead, Math.max(0, 1 - upTo(e.segment))),
  );
}

/**
 * {@link ExitEconomics} from a device plan's measured times (device-plan.ts {@link StageTimings}), for the engine that
 * serves: `headsGated` when exits off skip their heads (the compiled engine), false when the fused heads run whether
 * used or not (the stage engine). The full path is the backbone's time; an exit costs `decisionMs` of its segment + its
 * head's time, an input leaving there saves the backbone's time after its cut:
 * - `exitMs` measured and > 0 at the exit's segment (the compiled engine's plan): the head's time is that, outside
 *   `stageMs`;
 * - otherwise (plans of the stage engine or older ones, or an exit whose cost could not be measured) the head is inside
 *   its segment's `stageMs`, split off by MACs (its fused head's share of the segment's MACs);
 * - not `headsGated`: the heads run anyway, so an exit costs its decision only and a segment's whole time is saved.
 * Each cost is at least {@link EXIT_OVERHEAD_FRACTION}. Undefined when the times do not fit the manifest (another
 * segment count, a negative or non-finite time, no positive backbone time) or describe the compiled engine (`exitMs`)
 * while the heads are not gated: the caller then prices by MACs.
 */
export function timedExitEconomics(
  manifest: Pick<BundleManifest, 'segments' | 'exits'>,
  timings: StageTimings,
  headsGated: boolean,
): ExitEconomics[] | undefined {
  const { segments, exits } = manifest;
  const { stageMs, decisionMs, exitMs } = timings;
  const n = segments.length;
  if (stageMs.length !== n || decisionMs.length !== n || (exitMs !== undefined && exitMs.length !== n))
    return undefined;
  if (![...stageMs, ...decisionMs, ...(exitMs ?? [])].every((t) => Number.isFinite(t) && t >= 0)) return undefined;
  if (exitMs && !headsGated) return undefined;
  const measured = (s: number): boolean => (exitMs?.[s] ?? 0) > 0;
  const headMs = segments.map((g, s) => {
    if (!headsGated) return 0;
    if (measured(s)) return exitMs![s]!;
    return g.macs + g.headMacs > 0 ? (stageMs[s]! * g.headMacs) / (g.macs + g.headMacs) : 0;
  });
  const backboneMs = stageMs.map((t, s) => (measured(s) ? t : t - headMs[s]!));
  const full = backboneMs.reduce((a, b) => a + b, 0);
  if (!(full > 0)) return undefined;
  return exits.map((e) => {
    const after = backboneMs.slice(e.segment + 1).reduce((a, b) => a + b, 0);
    const cost = Math.max(EXIT_OVERHEAD_FRACTION, (headMs[e.segment]! + decisionMs[e.segment]!) / full);
    return economicsOf(cost, after / full);
  });
}

/**
 * The median of the last `size` values pushed (the runtime's live time of a call that takes no exit). The values are
 * also kept sorted (one insertion per push), so reading the median, on every such call, sorts nothing.
 */
export class RunningMedian {
  private readonly ring: number[] = [];
  /** The values of `ring`, ascending. */
  private readonly sorted: number[] = [];
  private at = 0;

  constructor(private readonly size = 31) {}

  /** Adds a value (a non-finite or negative one is ignored). */
  push(v: number): void {
    if (!(Number.isFinite(v) && v >= 0)) return;
    const s = this.sorted;
    // the value pushed goes in where the oldest one was taken out (the end while filling up), then moves into order
    let j = s.length;
    if (this.ring.length < this.size) this.ring.push(v);
    else {
      j = s.indexOf(this.ring[this.at]!);
      this.ring[this.at] = v;
    }
    for (; j > 0 && s[j - 1]! > v; j--) s[j] = s[j - 1]!;
    for (; j < s.length - 1 && s[j + 1]! < v; j++) s[j] = s[j + 1]!;
    s[j] = v;
    this.at = (this.at + 1) % this.size;
  }

  /** The median of the values held (the upper middle one for an even count); undefined when none. */
  get value(): number | undefined {
    const s = this.sorted;
    return s.length === 0 ? undefined : s[s.length >> 1];
  }
}

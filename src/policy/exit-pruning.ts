// Live exit pruning, pure: which exits do not pay on the traffic a runtime actually serves, so that it sends them as off
// (a threshold above 1: the compiled engine's gated model then skips their heads) until they clearly pay again.
//
// Per exit, over a bounded record of the most recent inputs that reached it: how many reached it and how many left
// there. An exit costs every input that reaches it `cost` = its head's MACs fraction + the per-exit overhead term of
// exit selection (select-exits.ts: 1 % of the backbone by default, prepare's `overheadFraction`), in the bundle's MACs
// fraction units; an input that leaves there saves `saved` = the backbone after its cut. As the deepest exit in use
// (only such an exit is judged, below), it pays iff its share of leaving inputs exceeds `breakEven` = cost / saved.
//
// Only the back is pruned: the deepest exit in use first, then the next one, so the pruned exits are always every
// enabled exit from some depth on. That keeps agreement: an input the calibrated cascade sends out at an exit before
// the pruned ones leaves there exactly as before (nothing before it changed), and one it sends out at a pruned exit
// (or never) finds no exit in use after it and runs the full model, whose answer agrees with the full model by
// definition. So on every input the pruned cascade answers either as the calibrated cascade or as the full model, and
// its agreement with the full model cannot fall below the calibrated cascade's. (Pruning a middle exit would send its
// inputs to later exits calibrated without them; that is why it is never done.)
//
// An exit is pruned only when the statistics say clearly that it does not pay: at least `minCount` observations and
// the upper confidence bound (Wilson, `confidence`) of its share below break-even; a pruned exit comes back when the
// lower bound of its share, measured on probes since it was pruned, is above break-even. Every `probeEvery`-th call
// while an exit is pruned is a probe: it runs with the requested thresholds, so the pruned exits keep being measured.
// Requests with other thresholds (setTarget(), a plan) start over: nothing pruned, records empty. Deterministic given
// the sequence of calls.
import { NEVER_EXIT, type BundleManifest } from '../bundle/manifest.js';
import { agreementLowerBound } from './bounds.js';

/** How the pruner decides; {@link PRUNE_DEFAULTS} holds the runtime's values. */
export interface PruneOptions {
  /** Most recent observations kept per exit (inputs that reached it). */
  readonly recent: number;
  /** Fewest observations in the record before an exit is pruned or restored. */
  readonly minCount: number;
  /** One-sided confidence of the share bounds. */
  readonly confidence: number;
  /** While an exit is pruned, every this-many-th call is a probe (runs the requested thresholds). */
  readonly probeEvery: number;
}

export const PRUNE_DEFAULTS: PruneOptions = { recent: 1024, minCount: 64, confidence: 0.999, probeEvery: 32 };

/**
 * Per-exit overhead in MACs-fraction units: exit selection's default (select-exits.ts `overhead`, 1 % of the backbone,
 * prepare's `overheadFraction`); a bundle does not record the value it was prepared with.
 */
export const EXIT_OVERHEAD_FRACTION = 0.01;

/** What one exit costs and saves, in fractions of the backbone's MACs. */
export interface ExitEconomics {
  /** Paid by every input that reaches the exit: its head's MACs fraction + the per-exit overhead. */
  readonly cost: number;
  /** Saved by an input that leaves there when no exit after it is in use: the backbone after its cut. */
  readonly saved: number;
  /** The share of reaching inputs that must leave for the exit to pay as the deepest in use: cost / saved. */
  readonly breakEven: number;
}

/** {@link ExitEconomics} of every exit of a manifest; `overhead` in backbone-MACs fractions. */
export function exitEconomics(manifest: BundleManifest, overhead = EXIT_OVERHEAD_FRACTION): ExitEconomics[] {
  const segMacs = manifest.segments.reduce((a, s) => a + s.macs, 0);
  // MACs fractions as the manifest's (of backbone.macs); a manifest without MACs counts segments instead.
  const total = manifest.backbone.macs > 0 ? manifest.backbone.macs : segMacs;
  const upTo = (segment: number): number =>
    total > 0
      ? manifest.segments.slice(0, segment + 1).reduce((a, s) => a + s.macs, 0) / total
      : (segment + 1) / manifest.segments.length;
  return manifest.exits.map((e) => {
    const cost = (total > 0 ? e.headMacs / total : 0) + overhead;
    const saved = Math.max(0, 1 - upTo(e.segment));
    return { cost, saved, breakEven: saved > 0 ? cost / saved : Infinity };
  });
}

/** The last `size` outcomes (left or not) of inputs that reached one exit. */
class Recent {
  private readonly ring: Uint8Array;
  private at = 0;
  /** Observations held (≤ size) and how many of them left. */
  n = 0;
  left = 0;

  constructor(size: number) {
    this.ring = new Uint8Array(size);
  }

  push(left: boolean): void {
    const size = this.ring.length;
    if (this.n === size) this.left -= this.ring[this.at]!;
    else this.n++;
    this.ring[this.at] = left ? 1 : 0;
    this.left += left ? 1 : 0;
    this.at = (this.at + 1) % size;
  }

  clear(): void {
    this.at = this.n = this.left = 0;
  }
}

/** One call's plan from {@link ExitPruner.next}: hand it back to {@link ExitPruner.observe} with the call's exits. */
export interface PruneRun {
  /** Thresholds to run the call with: the requested ones with the pruned exits off, or on a probe the requested ones. */
  readonly thresholds: readonly number[];
  /** Whether this call is a probe. */
  readonly probe: boolean;
  /** The thresholds of the calls that are not probes (= `thresholds` unless a probe): what the next calls run. */
  readonly steady: readonly number[];
  /** Which requested thresholds the run belongs to (an observation of older ones is ignored). */
  readonly generation: number;
}

/**
 * The pruning state of one runtime: call {@link next} before each call with the requested thresholds, run the call with
 * the thresholds it returns, then {@link observe} with the exit each input took. See the module comment.
 */
export class ExitPruner {
  private readonly options: PruneOptions;
  private readonly records: Recent[];
  /** The requested thresholds the state is about (undefined before the first call). */
  private requested: readonly number[] | undefined;
  private steady: readonly number[] = [];
  private generation = 0;
  private calls = 0;
  /** Every enabled exit at this index or deeper is pruned (exits.length: none). */
  private from: number;

  constructor(
    private readonly economics: readonly ExitEconomics[],
    options: Partial<PruneOptions> = {},
  ) {
    this.options = { ...PRUNE_DEFAULTS, ...options };
    this.records = economics.map(() => new Recent(this.options.recent));
    this.from = economics.length;
  }

  /** A pruner for `manifest`'s exits (their {@link exitEconomics}). */
  static forManifest(manifest: BundleManifest, options: Partial<PruneOptions> = {}): ExitPruner {
    return new ExitPruner(exitEconomics(manifest), options);
  }

  /** The exits pruned now (ascending); empty when none. */
  get pruned(): number[] {
    const out: number[] = [];
    for (let e = this.from; e < this.economics.length; e++) if (this.enabled(e)) out.push(e);
    return out;
  }

  private enabled(e: number): boolean {
    return (this.requested?.[e] ?? Infinity) <= 1;
  }

  /** Whether `t` are the requested thresholds the state is about. */
  private same(t: readonly number[]): boolean {
    const r = this.requested;
    if (!r || r.length !== t.length) return false;
    for (let e = 0; e < t.length; e++) if (!Object.is(r[e], t[e])) return false;
    return true;
  }

  /**
   * The thresholds of the next call for `requested` (one per exit). Other thresholds than the last call's start over:
   * the records are cleared, so callers alternating between two targets never let an exit be pruned (API.md says so).
   */
  next(requested: readonly number[]): PruneRun {
    let r = this.requested;
    if (!r || !this.same(requested)) {
      r = this.requested = [...requested];
      this.generation++;
      this.calls = 0;
      this.from = this.economics.length;
      for (const w of this.records) w.clear();
      this.steady = r;
    }
    this.calls++;
    const probe = this.steady !== r && this.calls % this.options.probeEvery === 0;
    return {
      thresholds: probe ? r : this.steady,
      probe,
      steady: this.steady,
      generation: this.generation,
    };
  }

  /**
   * Counts a call's outcomes: `exits[i]` is where input i left (-1: the full model) when run with `run.thresholds`.
   * Every exit in use there up to that one was reached; then prunes or restores (see the module comment). Returns
   * whether the pruned exits changed.
   */
  observe(run: PruneRun, exits: ArrayLike<number>): boolean {
    const r = this.requested;
    if (!r || run.generation !== this.generation) return false;
    const t = run.thresholds;
    const E = this.economics.length;
    for (let i = 0; i < exits.length; i++) {
      const x = exits[i]!;
      for (let e = 0; e < E && (x < 0 || e <= x); e++) if ((t[e] ?? Infinity) <= 1) this.records[e]!.push(x === e);
    }
    const before = this.from;
    this.decide();
    if (this.from === before) return false;
    this.steady = this.pruned.length ? r.map((v, e) => (e >= this.from && v <= 1 ? NEVER_EXIT : v)) : r;
    return true;
  }

  /** Prunes the deepest exits in use while they clearly do not pay; else restores the first pruned one if it clearly pays. */
  private decide(): void {
    const { minCount, confidence } = this.options;
    const bound = { confidence, bound: 'wilson' } as const;
    let pruned = false;
    for (;;) {
      let d = this.from - 1;
      while (d >= 0 && !this.enabled(d)) d--;
      if (d < 0) break;
      const w = this.records[d]!;
      if (w.n < minCount || 1 - agreementLowerBound(w.n - w.left, w.n, bound) >= this.economics[d]!.breakEven) break;
      this.from = d;
      w.clear(); // from now on it is measured on probes only: a restore looks at those alone
      pruned = true;
    }
    if (pruned) return;
    let s = this.from;
    while (s < this.economics.length && !this.enabled(s)) s++;
    if (s >= this.economics.length) return;
    const w = this.records[s]!;
    if (w.n >= minCount && agreementLowerBound(w.left, w.n, bound) > this.economics[s]!.breakEven) this.from = s + 1;
  }
}

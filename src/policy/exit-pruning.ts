// Live exit pruning, pure: which exits do not pay on the traffic a runtime actually serves, so that it sends them as off
// (a threshold above 1: the compiled engine's gated model then skips their heads) until they clearly pay again.
//
// Per exit, over a bounded record of the most recent inputs that reached it: how many reached it and how many left
// there. An exit costs every input that reaches it `cost` (its head + a per-exit overhead) and an input that leaves
// there saves `saved` (the backbone after its cut), both fractions of the full path (exit-economics.ts: a device plan's
// measured times, else MACs with the overhead in ms over the live call time; the caller may change them any time). As
// the deepest exit in use (only such an exit is judged, below), it pays iff its share of leaving inputs exceeds
// `breakEven` = cost / saved.
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
// Requests with other thresholds (setTarget(), a plan) start over: records empty, nothing pruned unless a remembered
// state for those thresholds says otherwise ({@link PrunedMemory}: the pruned set and its probe counts, kept for the
// last few thresholds, handed in and out by the runtime, which persists it). A remembered pruned set is a set of
// exits from the back, like any other, so the argument above holds for it; probes measure it and the same restore rule
// undoes it. Deterministic given the sequence of calls (and the memory handed in).
import { NEVER_EXIT, type BundleManifest } from '../bundle/manifest.js';
import { agreementLowerBound } from './bounds.js';
import { exitEconomics, type ExitEconomics } from './exit-economics.js';

export {
  EXIT_OVERHEAD_FRACTION,
  EXIT_OVERHEAD_MS,
  exitEconomics,
  overheadFraction,
  timedExitEconomics,
  type ExitEconomics,
} from './exit-economics.js';

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

  /** Starts the record from counts alone: `n` observations (at most its size), `left` of them leaving (the older). */
  seed(n: number, left: number): void {
    this.clear();
    const m = Math.min(n, this.ring.length);
    for (let i = 0; i < m; i++) this.push(i < Math.min(left, m));
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

/** The pruned state of one requested-thresholds vector, as remembered (plain data: the runtime persists it). */
export interface PrunedMemory {
  /** The requested thresholds (one per exit). */
  readonly thresholds: readonly number[];
  /** The exits pruned, ascending: every exit in use (threshold ≤ 1) from the first of them on; never empty. */
  readonly pruned: readonly number[];
  /** Per pruned exit: the probes since it was pruned that reached it (`n`, at most the record size) and left there. */
  readonly probes: readonly { readonly n: number; readonly left: number }[];
}

/** How many requested-thresholds vectors the pruner remembers (the most recently pruned first). */
export const MEMORY_LIMIT = 8;

/** The key of a requested-thresholds vector in the memory. */
const keyOf = (t: readonly number[]): string => t.map(String).join(',');

/**
 * The pruning state of one runtime: call {@link next} before each call with the requested thresholds, run the call with
 * the thresholds it returns, then {@link observe} with the exit each input took. See the module comment.
 */
export class ExitPruner {
  private readonly options: PruneOptions;
  private readonly records: Recent[];
  private economics: readonly ExitEconomics[];
  /** The requested thresholds the state is about (undefined before the first call). */
  private requested: readonly number[] | undefined;
  private steady: readonly number[] = [];
  private generation = 0;
  private calls = 0;
  /** Every enabled exit at this index or deeper is pruned (exits.length: none). */
  private from: number;
  /**
   * Whether the last {@link decide} changed nothing and nothing it reads (records, prices, state) changed since: the
   * next one would change nothing either, and is skipped (the worst case's calls, with every exit off, push nothing).
   */
  private settled = false;
  /** Remembered pruned states by thresholds key, least recently changed first. */
  private readonly memory = new Map<string, PrunedMemory>();
  /** Bumped whenever {@link memories} changes. */
  revision = 0;

  constructor(economics: readonly ExitEconomics[], options: Partial<PruneOptions> = {}) {
    this.economics = economics;
    this.options = { ...PRUNE_DEFAULTS, ...options };
    this.records = economics.map(() => new Recent(this.options.recent));
    this.from = economics.length;
  }

  /** A pruner for `manifest`'s exits (their {@link exitEconomics}). */
  static forManifest(manifest: BundleManifest, options: Partial<PruneOptions> = {}): ExitPruner {
    return new ExitPruner(exitEconomics(manifest), options);
  }

  /**
   * Prices the exits anew (one {@link ExitEconomics} per exit; another length is ignored): the next decisions use
   * them, the records stay.
   */
  setEconomics(economics: readonly ExitEconomics[]): void {
    if (economics.length !== this.economics.length) return;
    this.economics = economics;
    this.settled = false;
  }

  /** The thresholds the calls that are not probes run now (undefined before the first call or remembered state). */
  get current(): readonly number[] | undefined {
    return this.requested ? this.steady : undefined;
  }

  /** The exits pruned now (ascending); empty when none. */
  get pruned(): number[] {
    const out: number[] = [];
    for (let e = this.from; e < this.economics.length; e++) if (this.enabled(e)) out.push(e);
    return out;
  }

  private enabled(e: number, t = this.requested): boolean {
    return (t?.[e] ?? Infinity) <= 1;
  }

  /** Whether `t` are the requested thresholds the state is about. */
  private same(t: readonly number[]): boolean {
    const r = this.requested;
    if (!r || r.length !== t.length) return false;
    for (let e = 0; e < t.length; e++) if (!Object.is(r[e], t[e])) return false;
    return true;
  }

  /**
   * Takes remembered states (most recent first, as {@link memories} gives them): those that fit (one threshold per
   * exit, numbers; a pruned set that is every exit in use from its first on; probe counts in range) are kept, the rest
   * ignored. Before the first call the one for `first` (the thresholds the first call is expected to send; without
   * it, the most recent one) becomes the state, so that {@link pruned} shows it at once; none does when nothing is
   * remembered for `first` (a memory of other thresholds would show, and make the runtime prepare, a foreign pruning).
   */
  remember(entries: readonly PrunedMemory[], first?: readonly number[]): void {
    const E = this.economics.length;
    const fits = (m: PrunedMemory): boolean => {
      const t = m.thresholds;
      if (!Array.isArray(t) || t.length !== E || !t.every((v) => typeof v === 'number' && !Number.isNaN(v)))
        return false;
      const p = m.pruned;
      if (!Array.isArray(p) || p.length === 0 || !Number.isInteger(p[0]) || p[0]! < 0) return false;
      const expected = t.map((_, e) => e).filter((e) => e >= p[0]! && this.enabled(e, t));
      const counts = m.probes;
      return (
        keyOf(expected) === keyOf(p) &&
        Array.isArray(counts) &&
        counts.length === p.length &&
        counts.every(
          (c) =>
            Number.isInteger(c?.n) &&
            Number.isInteger(c.left) &&
            c.left >= 0 &&
            c.left <= c.n &&
            c.n <= this.options.recent,
        )
      );
    };
    for (const m of [...entries].slice(0, MEMORY_LIMIT).reverse()) {
      if (!fits(m)) continue;
      const entry: PrunedMemory = {
        thresholds: [...m.thresholds],
        pruned: [...m.pruned],
        probes: m.probes.map((c) => ({ n: c.n, left: c.left })),
      };
      this.memory.delete(keyOf(entry.thresholds));
      this.memory.set(keyOf(entry.thresholds), entry);
    }
    const latest = first ? this.memory.get(keyOf(first)) : [...this.memory.values()].pop();
    if (!this.requested && latest) this.start(latest.thresholds);
  }

  /** The remembered states, most recent first (at most {@link MEMORY_LIMIT}). */
  memories(): PrunedMemory[] {
    return [...this.memory.values()].reverse();
  }

  /** Starts over for requested thresholds `t`: records empty; the remembered state for `t`, if any, in force. */
  private start(t: readonly number[]): void {
    const r = (this.requested = [...t]);
    this.generation++;
    this.calls = 0;
    this.settled = false;
    this.from = this.economics.length;
    for (const w of this.records) w.clear();
    const m = this.memory.get(keyOf(r));
    if (m) {
      this.from = m.pruned[0]!;
      m.pruned.forEach((e, k) => this.records[e]!.seed(m.probes[k]!.n, m.probes[k]!.left));
    }
    this.steady = this.steadyOf(r);
  }

  /** The thresholds of the calls that are not probes: `r` with the pruned exits off. */
  private steadyOf(r: readonly number[]): readonly number[] {
    return this.pruned.length ? r.map((v, e) => (e >= this.from && v <= 1 ? NEVER_EXIT : v)) : r;
  }

  /** Writes the current state into the memory (or drops it there when nothing is pruned). */
  private memorize(): void {
    const r = this.requested;
    if (!r) return;
    const key = keyOf(r);
    const pruned = this.pruned;
    const had = this.memory.delete(key);
    if (pruned.length > 0) {
      const probes = pruned.map((e) => ({ n: this.records[e]!.n, left: this.records[e]!.left }));
      this.memory.set(key, { thresholds: [...r], pruned, probes });
      for (const k of this.memory.keys()) if (this.memory.size > MEMORY_LIMIT) this.memory.delete(k);
    }
    if (had || pruned.length > 0) this.revision++;
  }

  /**
   * The thresholds of the next call for `requested` (one per exit). Other thresholds than the last call's start over:
   * the records are cleared (so callers alternating between two targets never let another exit be pruned: API.md says
   * so), and the remembered pruned state of those thresholds, if any, is back in force.
   */
  next(requested: readonly number[]): PruneRun {
    let r = this.requested;
    if (!r || !this.same(requested)) {
      this.start(requested);
      r = this.requested!;
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
   * whether the pruned exits changed. The memory follows the pruned set (and, on probes, its counts).
   */
  observe(run: PruneRun, exits: ArrayLike<number>): boolean {
    const r = this.requested;
    if (!r || run.generation !== this.generation) return false;
    const t = run.thresholds;
    const E = this.economics.length;
    for (let i = 0; i < exits.length; i++) {
      const x = exits[i]!;
      for (let e = 0; e < E && (x < 0 || e <= x); e++)
        if ((t[e] ?? Infinity) <= 1) {
          this.records[e]!.push(x === e);
          this.settled = false;
        }
    }
    const before = this.from;
    if (!this.settled) this.decide();
    const changed = this.from !== before;
    this.settled = !changed;
    if (changed) this.steady = this.steadyOf(r);
    if (changed || run.probe) this.memorize();
    return changed;
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

// Live exit pruning in the worker: the pure pruner (policy/exit-pruning.ts) with the exits priced from what this runtime
// knows (the device plan in force, else MACs over the live time of a call that takes no exit) and its pruned state
// remembered in the bundle cache per bundle version and backend (recalled at open; a failed write never breaks serving).
import type { BundleManifest } from '../bundle/manifest.js';
import type { DevicePlan } from '../policy/device-plan.js';
import { RunningMedian } from '../policy/exit-economics.js';
import {
  EXIT_OVERHEAD_MS,
  ExitPruner,
  exitEconomics,
  overheadFraction,
  timedExitEconomics,
  type ExitEconomics,
  type PruneRun,
} from '../policy/exit-pruning.js';
import type { WireResult } from '../protocol.js';
import { prunedKey, type BundleCache } from './cache.js';
import type { OrtHandle } from './ort-backend.js';

/** Calls between writes of the pruned state when only its probe counts changed (a change of the set is written at once). */
export const PRUNED_SAVE_CALLS = 512;

/** One runtime's live exit pruning: {@link next} before a call, {@link observe} after it. */
export class LivePruning {
  private pruner: ExitPruner;
  /** The device plan in force (made by plan() or found by cachedPlan()): its times price the exits. */
  private plan: DevicePlan | undefined;
  /** ms of the single-input calls that took no exit: the full path's time (with the exits in use passed). */
  private fullPathMs = new RunningMedian();
  /** Whether exits off skipped their heads when the exits were last priced. */
  private gated = false;
  /**
   * What the exits were last priced from: the plan in force and the gating (`timed`: its prices, undefined when it
   * does not fit or there is none) and, when they are not the plan's, the overhead fraction of the MACs prices (NaN:
   * none yet). The same inputs give the same prices, so {@link price} leaves them then (undefined: price anew).
   */
  private priced:
    | {
        readonly plan: DevicePlan | undefined;
        readonly gated: boolean;
        readonly timed: readonly ExitEconomics[] | undefined;
        overhead: number;
      }
    | undefined;
  /** The backend and pool generation {@link recall} read the memory for: every write goes under that backend's key. */
  private recalled: { readonly backend: string; readonly generation: number } | undefined;
  /** The memory's revision last written, whether a write is under way, whether the set changed since, calls since. */
  private readonly save = { revision: 0, writing: false, changed: false, calls: 0 };

  constructor(
    private readonly manifest: BundleManifest,
    private readonly manifestHash: string,
    private readonly cache: BundleCache,
    private readonly ort: Pick<OrtHandle, 'backend' | 'threads'>,
    private readonly options: {
      /** Whether exits off skip their heads (the compiled engine in use), for a plan's times. */
      readonly headsGated: () => boolean;
      /** The per-exit overhead in ms without a plan (default: {@link EXIT_OVERHEAD_MS} of the backend in use). */
      readonly overheadMs?: number | undefined;
      /** The session pool's backend generation (bumped by a WebGPU → WASM switch). */
      readonly generation: () => number;
    },
  ) {
    this.pruner = ExitPruner.forManifest(manifest);
    this.price();
  }

  /** The exits pruned now (ascending). */
  get pruned(): number[] {
    return this.pruner.pruned;
  }

  /** Whether the backend changed since {@link recall} (a WebGPU → WASM switch): {@link recall} again before a call. */
  get switched(): boolean {
    return this.recalled?.generation !== this.options.generation();
  }

  /**
   * Reads the pruned state remembered for this bundle version and the backend in use (a stale or malformed record is
   * ignored: the pruner checks each entry against the manifest), that backend's from now on: later writes go under its
   * key. The state remembered for `first` (the thresholds the first call is expected to send: the manifest's or the
   * cached plan's) is put in force, none for other thresholds; returns the thresholds the next calls will run when
   * one is, so that the compiled engine makes that model first. After a backend switch ({@link switched}) it starts
   * over: the memory, the live call time and the records of the old backend are dropped.
   */
  async recall(first?: readonly number[]): Promise<readonly number[] | undefined> {
    if (this.recalled) {
      this.pruner = ExitPruner.forManifest(this.manifest);
      this.fullPathMs = new RunningMedian();
      this.priced = undefined;
      this.price();
    }
    const { backend } = this.ort;
    const generation = this.options.generation();
    this.recalled = { backend, generation };
    const record = await this.cache.getPruned?.(prunedKey(this.manifestHash, backend));
    if (this.options.generation() !== generation) return this.recall(first); // switched again meanwhile
    if (record && record.manifestHash === this.manifestHash && record.backend === backend)
      this.pruner.remember(record.entries, first);
    this.save.revision = this.pruner.revision;
    return this.pruner.current;
  }

  /** A device plan is in force now: its times price the exits while its backend and threads are those in use. */
  usePlan(plan: DevicePlan): void {
    this.plan = plan;
    this.price();
  }

  /** The thresholds the call runs (see {@link ExitPruner.next}). */
  next(requested: readonly number[]): PruneRun {
    return this.pruner.next(requested);
  }

  private overheadMs(): number {
    return this.options.overheadMs ?? EXIT_OVERHEAD_MS[this.ort.backend] ?? EXIT_OVERHEAD_MS.wasm!;
  }

  /**
   * Prices the exits: by the device plan's times when one made for the backend and threads in use is in force (and
   * fits the engine: timedExitEconomics), else by MACs with the backend's per-exit overhead in ms over the live time of
   * a call that takes no exit (at least 1 % per exit).
   */
  private price(): void {
    const gated = (this.gated = this.options.headsGated());
    const { backend, threads } = this.ort;
    const p = this.plan;
    const plan = p && p.backend === backend && p.threads === threads ? p : undefined;
    let last = this.priced;
    if (!last || last.plan !== plan || last.gated !== gated) {
      const timed = plan ? timedExitEconomics(this.manifest, plan.timings, gated) : undefined;
      last = this.priced = { plan, gated, timed, overhead: NaN };
      if (timed) {
        this.pruner.setEconomics(timed);
        return;
      }
    } else if (last.timed) return;
    // by MACs: priced again only when the overhead fraction (the live call time's median) changed
    const overhead = overheadFraction(this.overheadMs(), this.fullPathMs.value);
    if (overhead === last.overhead) return;
    last.overhead = overhead;
    this.pruner.setEconomics(exitEconomics(this.manifest, overhead));
  }

  /**
   * After a call run with `run`: a single input that took no exit gives the full path's time (its ms, with the
   * exits in use it passed: a little over, so exits are priced a little under); the exits are priced again and the outcome counted; the remembered state is written
   * when it changed (at once when the pruned set changed, else every PRUNED_SAVE_CALLS calls; one write at a time,
   * never awaited: a failed or slow write only leaves the older record).
   */
  observe(run: PruneRun, results: readonly WireResult[]): void {
    // the backend switched during the call (or since recall): nothing of the old backend is counted nor written
    if (this.switched) return;
    const r = results[0];
    const timed = results.length === 1 && r !== undefined && r.exit < 0;
    if (timed) {
      let ms = 0;
      for (const t of r.stages) ms += t;
      this.fullPathMs.push(ms);
    }
    // priced again only when what the prices read changed (not on every call: this is the classify() path)
    if (timed || this.options.headsGated() !== this.gated) this.price();
    const { pruner, save } = this;
    const exits = results.length === 1 ? [r!.exit] : results.map((x) => x.exit);
    save.changed = pruner.observe(run, exits) || save.changed;
    save.calls++;
    if (!this.cache.putPruned || save.writing || pruner.revision === save.revision) return;
    if (!save.changed && save.calls < PRUNED_SAVE_CALLS) return;
    const put = this.cache.putPruned.bind(this.cache);
    const { manifestHash } = this;
    const { backend } = this.recalled!;
    const revision = pruner.revision;
    Object.assign(save, { writing: true, changed: false, calls: 0 });
    const done = (): void => void Object.assign(save, { writing: false, revision });
    put(prunedKey(manifestHash, backend), { version: 1, manifestHash, backend, entries: pruner.memories() }).then(
      done,
      done,
    );
  }
}

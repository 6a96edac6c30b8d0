// Live exit pruning's policy (src/policy/exit-pruning.ts) on simulated traffic: exits that never fire are pruned from the
// back, exits that pay never are, probes bring an exit back when it pays again, and every pruned decision equals the
// calibrated cascade's or the full model's.
import { describe, expect, it } from 'vitest';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { createRng, type Rng } from '../src/calibrate/rng.js';
import {
  EXIT_OVERHEAD_FRACTION,
  ExitPruner,
  MEMORY_LIMIT,
  PRUNE_DEFAULTS,
  exitEconomics,
  overheadFraction,
  timedExitEconomics,
  type PruneRun,
} from '../src/policy/exit-pruning.js';
import { EXIT_OVERHEAD_MAX_FRACTION, RunningMedian } from '../src/policy/exit-economics.js';

/**
 * A manifest with the MACs of the shared ResNet-20 bundle (bench/.bundles/resnet20): segments of 0.447, 0.320, 0.116,
 * 0.116 of the backbone, exits after the first three with heads of 0.0010, 0.0010, 0.0003.
 */
const manifest = {
  backbone: { macs: 1000 },
  segments: [
    { macs: 447, headMacs: 1 },
    { macs: 320, headMacs: 1 },
    { macs: 117, headMacs: 0.3 },
    { macs: 116, headMacs: 0 },
  ],
  exits: [
    { segment: 0, headMacs: 1 },
    { segment: 1, headMacs: 1 },
    { segment: 2, headMacs: 0.3 },
  ],
} as unknown as BundleManifest;
const economics = exitEconomics(manifest);

/**
 * Where one simulated input leaves with thresholds `t`: at the first exit in use (threshold ≤ 1) whose draw is below
 * its share of reaching inputs, else -1. `draws` fixes the input, so the same input can be run with other thresholds.
 */
function exitOf(draws: readonly number[], shares: readonly number[], t: readonly number[]): number {
  for (let e = 0; e < shares.length; e++) if (t[e]! <= 1 && draws[e]! < shares[e]!) return e;
  return -1;
}

/** `calls` single-input calls with shares of reaching inputs `shares`; `each` sees every call's run and exit. */
function traffic(
  pruner: ExitPruner,
  rng: Rng,
  calls: number,
  shares: readonly number[],
  requested: readonly number[],
  each: (run: PruneRun, exit: number, draws: number[]) => void = () => {},
): void {
  for (let c = 0; c < calls; c++) {
    const run = pruner.next(requested);
    const draws = shares.map(() => rng.next());
    const x = exitOf(draws, shares, run.thresholds);
    each(run, x, draws);
    pruner.observe(run, [x]);
  }
}

const on = [0.9, 0.9, 0.9];

describe('exitEconomics', () => {
  it('cost = head MACs fraction + overhead, saved = the backbone after the cut, break-even = cost / saved', () => {
    const e = economics;
    expect(e[0]!.cost).toBeCloseTo(0.001 + EXIT_OVERHEAD_FRACTION, 12);
    expect(e[0]!.saved).toBeCloseTo(0.553, 12);
    expect(e[2]!.cost).toBeCloseTo(0.0003 + EXIT_OVERHEAD_FRACTION, 12);
    expect(e[2]!.saved).toBeCloseTo(0.116, 12);
    for (const x of e) expect(x.breakEven).toBeCloseTo(x.cost / x.saved, 12);
  });
});

describe('exits priced by time', () => {
  it('overheadFraction: ms over the live call time, between 1 % and the cap; 1 % while the time is unknown', () => {
    expect(overheadFraction(0.09, 1.88)).toBeCloseTo(0.09 / 1.88, 12); // the shipped Fashion model: 4.8 %
    expect(overheadFraction(0.09, 10.48)).toBe(EXIT_OVERHEAD_FRACTION); // ResNet-56: 0.86 %, the floor
    expect(overheadFraction(0.09, undefined)).toBe(EXIT_OVERHEAD_FRACTION);
    expect(overheadFraction(0.09, 0.1)).toBe(EXIT_OVERHEAD_MAX_FRACTION);
    const m = exitEconomics(manifest, overheadFraction(0.09, 1.88));
    expect(m[0]!.cost).toBeCloseTo(0.001 + 0.09 / 1.88, 12);
  });

  it("a compiled plan's times: cost = exitMs (+ decisionMs) over the backbone's time, saved = the backbone after the cut", () => {
    // backbone ms per segment 1, 0.8, 0.3, 0.3 (2.4); exits cost 0.1, 0.05, 0.2 ms
    const t = { stageMs: [1, 0.8, 0.3, 0.3], decisionMs: [0, 0.01, 0, 0], exitMs: [0.1, 0.05, 0.2, 0] };
    const e = timedExitEconomics(manifest, t, true)!;
    expect(e.map((x) => x.cost)).toEqual([0.1 / 2.4, 0.06 / 2.4, 0.2 / 2.4].map((v) => expect.closeTo(v, 12)));
    expect(e.map((x) => x.saved)).toEqual([1.4 / 2.4, 0.6 / 2.4, 0.3 / 2.4].map((v) => expect.closeTo(v, 12)));
    // an exit whose cost could not be measured (0): its head is inside its segment's time, split off by MACs
    // (here below the 1 % floor)
    const u = timedExitEconomics(manifest, { ...t, exitMs: [0, 0.05, 0.2, 0] }, true)!;
    const head0 = 1 / 448;
    expect(u[0]!.cost).toBe(EXIT_OVERHEAD_FRACTION);
    expect(u[0]!.saved).toBeCloseTo(1.4 / (2.4 - head0), 12);
    expect(u[1]!.cost).toBeCloseTo(0.06 / (2.4 - head0), 12);
    // a plan of the stage engine while the stages serve: the heads run anyway, an exit costs its decision (≥ 1 %)
    const s = timedExitEconomics(manifest, { stageMs: [1, 0.8, 0.3, 0.3], decisionMs: [0.2, 0.01, 0.1, 0] }, false)!;
    expect(s.map((x) => x.cost)).toEqual(
      [0.2 / 2.4, EXIT_OVERHEAD_FRACTION, 0.1 / 2.4].map((v) => expect.closeTo(v, 12)),
    );
    expect(s[0]!.saved).toBeCloseTo(1.4 / 2.4, 12);
    // times that do not fit: MACs then
    expect(timedExitEconomics(manifest, t, false)).toBeUndefined(); // compiled-engine times, stages serving
    expect(timedExitEconomics(manifest, { stageMs: [1, 1], decisionMs: [0, 0] }, true)).toBeUndefined();
    expect(timedExitEconomics(manifest, { ...t, stageMs: [1, -1, 0.3, 0.3] }, true)).toBeUndefined();
    expect(timedExitEconomics(manifest, { stageMs: [0, 0, 0, 0], decisionMs: [0, 0, 0, 0] }, true)).toBeUndefined();
  });

  it('an exit that pays at MACs prices but not at the plan times is pruned once the pruner is priced by the plan', () => {
    // exit 2 (the deepest) sends 15 % of the inputs reaching it out: above its MACs break-even (8.9 %)
    const shares = [0.3, 0.3, 0.15];
    const t = { stageMs: [1, 0.8, 0.3, 0.3], decisionMs: [0, 0, 0, 0], exitMs: [0.05, 0.05, 0.15, 0] };
    const timed = timedExitEconomics(manifest, t, true)!;
    expect(economics[2]!.breakEven).toBeLessThan(0.15);
    expect(timed[2]!.breakEven).toBeGreaterThan(0.15); // 0.15 / 0.3 = 50 %
    const byMacs = new ExitPruner(economics);
    traffic(byMacs, createRng(11), 5000, shares, on);
    expect(byMacs.pruned).toEqual([]);
    const byTime = new ExitPruner(economics);
    byTime.setEconomics(timed);
    traffic(byTime, createRng(11), 5000, shares, on);
    expect(byTime.pruned).toEqual([2]);
  });

  it('RunningMedian: the median of the last values, non-finite ones ignored', () => {
    const m = new RunningMedian(3);
    expect(m.value).toBeUndefined();
    for (const v of [5, 1, NaN, -1, 3]) m.push(v);
    expect(m.value).toBe(3);
    m.push(10);
    m.push(10);
    expect(m.value).toBe(10); // 3, 10, 10
  });
});

describe('ExitPruner memory', () => {
  it('hands out the pruned state per thresholds; a pruner given it starts there, probes still run, a wrong memory is undone', () => {
    const p = new ExitPruner(economics);
    traffic(p, createRng(12), 3000, [0, 0, 0], on);
    expect(p.pruned).toEqual([0, 1, 2]);
    const [m] = p.memories();
    expect(m).toMatchObject({ thresholds: on, pruned: [0, 1, 2] });
    const q = new ExitPruner(economics);
    q.remember(p.memories());
    expect(q.pruned).toEqual([0, 1, 2]); // before any call
    const first = q.next(on);
    expect(first.thresholds).toEqual([NEVER_EXIT, NEVER_EXIT, NEVER_EXIT]);
    // the traffic changed: the exits pay again; the probes bring them back, first pruned first
    const seq: number[][] = [];
    let probes = 0;
    q.observe(first, [-1]);
    traffic(q, createRng(13), 40_000, [0.4, 0.4, 0.5], on, (run) => {
      probes += run.probe ? 1 : 0;
      if (q.pruned.join(',') !== seq[seq.length - 1]?.join(',')) seq.push(q.pruned);
    });
    expect(probes).toBeGreaterThan(0);
    expect(seq).toEqual([[0, 1, 2], [1, 2], [2], []]);
    expect(q.memories()).toEqual([]); // nothing pruned: nothing remembered
  });

  it('keeps probe counts: evidence gathered before a reload counts after it', () => {
    // 40 probes (short of the 64 a restore needs) reached exit 0 before the reload, 16 left there
    const m = {
      thresholds: on,
      pruned: [0, 1, 2],
      probes: [
        { n: 40, left: 16 },
        { n: 24, left: 0 },
        { n: 24, left: 0 },
      ],
    };
    const q = new ExitPruner(economics);
    q.remember([m]);
    traffic(q, createRng(16), 32 * 30, [0.4, 0.4, 0.5], on); // 30 more probes: 70 in all
    expect(q.pruned).toEqual([1, 2]);
    const fresh = new ExitPruner(economics);
    fresh.remember([{ ...m, probes: m.probes.map(() => ({ n: 0, left: 0 })) }]);
    traffic(fresh, createRng(16), 32 * 30, [0.4, 0.4, 0.5], on);
    expect(fresh.pruned).toEqual([0, 1, 2]);
  });

  it('ignores entries that do not fit, keeps the last few thresholds, and other thresholds find their own state', () => {
    const q = new ExitPruner(economics);
    const zero = { n: 0, left: 0 };
    q.remember([
      { thresholds: on, pruned: [1], probes: [zero] }, // exit 2 in use after it: not from the back
      { thresholds: [0.9, 0.9], pruned: [1], probes: [zero] },
      { thresholds: on, pruned: [2], probes: [{ n: 3, left: 4 }] },
      { thresholds: on, pruned: [2], probes: [] },
      { thresholds: on, pruned: [], probes: [] },
    ]);
    expect(q.memories()).toEqual([]);
    expect(q.pruned).toEqual([]);
    const off1 = [0.9, NEVER_EXIT, 0.9];
    q.remember([
      { thresholds: off1, pruned: [0, 2], probes: [zero, zero] }, // exit 1 off as requested: still from the back
      { thresholds: on, pruned: [2], probes: [zero] },
    ]);
    expect(q.pruned).toEqual([0, 2]); // the most recent one, at once
    expect(q.next(on).thresholds).toEqual([0.9, 0.9, NEVER_EXIT]);
    expect(q.next(off1).steady).toEqual([NEVER_EXIT, NEVER_EXIT, NEVER_EXIT]);
    const many = Array.from({ length: MEMORY_LIMIT + 3 }, (_, k) => ({
      thresholds: [0.5 + k / 100, 0.9, 0.9],
      pruned: [2],
      probes: [zero],
    }));
    const r = new ExitPruner(economics);
    r.remember(many);
    expect(r.memories()).toHaveLength(MEMORY_LIMIT);
    expect(r.memories()[0]!.thresholds[0]).toBe(0.5);
  });
});

describe('ExitPruner', () => {
  it('prunes a late exit that never fires after enough calls, the earlier ones only once every later one is pruned', () => {
    const p = new ExitPruner(economics);
    const order: { call: number; pruned: number[] }[] = [];
    let call = 0;
    // exits 0 and 1 fire at shares far above their break-even; exit 2 never
    traffic(p, createRng(1), 3000, [0.3, 0.3, 0], on, () => {
      call++;
      const last = order[order.length - 1]?.pruned.join(',') ?? '';
      if (p.pruned.join(',') !== last) order.push({ call, pruned: p.pruned });
    });
    expect(order.map((o) => o.pruned)).toEqual([[2]]);
    // not before the minimum count of observations (every input reaching exit 2 is one)
    expect(order[0]!.call).toBeGreaterThan(PRUNE_DEFAULTS.minCount);
    // nothing exits at all: the rest goes, deepest first
    const seq: number[][] = [];
    traffic(p, createRng(2), 3000, [0, 0, 0], on, () => {
      if (p.pruned.join(',') !== seq[seq.length - 1]?.join(',')) seq.push(p.pruned);
    });
    expect(seq).toEqual([[2], [1, 2], [0, 1, 2]]);
  });

  it('never prunes an exit that pays, over many calls at its expected share (the bundle shares of the shared ResNet-20)', () => {
    // The bundle's expected shares 0.217, 0.136, 0.130 of all inputs, as shares of the inputs reaching each exit.
    const shares = [0.217, 0.136 / 0.783, 0.13 / 0.647];
    for (const seed of [1, 2, 3]) {
      const p = new ExitPruner(economics);
      let ever = 0;
      traffic(p, createRng(seed), 100_000, shares, on, (run) => (ever += run.steady === run.thresholds ? 0 : 1));
      expect(p.pruned).toEqual([]);
      expect(ever).toBe(0);
    }
  });

  it('keeps an early exit that does not pay while a later one is in use', () => {
    const p = new ExitPruner(economics);
    traffic(p, createRng(3), 20_000, [0, 0.3, 0.5], on);
    expect(p.pruned).toEqual([]);
  });

  it('probes every 32nd call with the requested thresholds; a pruned exit comes back when it clearly pays again', () => {
    const p = new ExitPruner(economics);
    traffic(p, createRng(4), 2000, [0, 0, 0], on);
    expect(p.pruned).toEqual([0, 1, 2]);
    const probes: number[] = [];
    let call = 0;
    traffic(p, createRng(5), 320, [0, 0, 0], on, (run) => {
      call++;
      if (run.probe) probes.push(call);
      expect(run.thresholds).toEqual(run.probe ? on : [NEVER_EXIT, NEVER_EXIT, NEVER_EXIT]);
      expect(run.steady).toEqual([NEVER_EXIT, NEVER_EXIT, NEVER_EXIT]);
    });
    expect(new Set(probes.map((c) => c % PRUNE_DEFAULTS.probeEvery)).size).toBe(1);
    expect(probes.length).toBe(320 / PRUNE_DEFAULTS.probeEvery);
    // the traffic changes: every exit pays again; the first pruned one comes back first, measured on probes only
    const seq: number[][] = [];
    traffic(p, createRng(6), 40_000, [0.4, 0.4, 0.5], on, () => {
      if (p.pruned.join(',') !== seq[seq.length - 1]?.join(',')) seq.push(p.pruned);
    });
    expect(seq).toEqual([[0, 1, 2], [1, 2], [2], []]);
  });

  it('answers as the calibrated cascade or as the full model on every input', () => {
    const p = new ExitPruner(economics);
    const shares = [0.02, 0.3, 0.01]; // exit 2 does not pay; exit 0 does not either but stays (exit 1 does)
    let changed = 0;
    let pruned = 0;
    traffic(p, createRng(7), 20_000, shares, on, (run, x, draws) => {
      const calibrated = exitOf(draws, shares, on);
      if (x !== calibrated) {
        changed++;
        expect(x).toBe(-1);
        expect(p.pruned).toContain(calibrated);
      }
      if (run.thresholds !== run.steady || run.steady[2] !== on[2]) pruned++;
    });
    expect(p.pruned).toEqual([2]);
    expect(pruned).toBeGreaterThan(0);
    expect(changed).toBeGreaterThan(0);
  });

  it('passes over exits the requested thresholds turn off; new thresholds start over', () => {
    const p = new ExitPruner(economics);
    const off1 = [0.9, NEVER_EXIT, 0.9];
    traffic(p, createRng(8), 3000, [0, 0, 0], off1);
    expect(p.pruned).toEqual([0, 2]);
    const run = p.next(off1);
    expect(run.steady).toEqual([NEVER_EXIT, NEVER_EXIT, NEVER_EXIT]);
    const next = p.next(on);
    expect(p.pruned).toEqual([]);
    expect(next.thresholds).toEqual(on);
    // an observation of the old thresholds' call, arriving late, is ignored
    expect(p.observe(run, [-1])).toBe(false);
  });

  it('is deterministic given the calls, and batches count every input', () => {
    const runOnce = (): string => {
      const p = new ExitPruner(economics, { recent: 256, minCount: 32 });
      const log: string[] = [];
      const rng = createRng(9);
      for (let c = 0; c < 200; c++) {
        const run = p.next(on);
        const exits = Array.from({ length: 8 }, () =>
          exitOf([rng.next(), rng.next(), rng.next()], [0.1, 0.05, 0], run.thresholds),
        );
        p.observe(run, exits);
        log.push(p.pruned.join(','));
      }
      return log.join('|');
    };
    const a = runOnce();
    expect(a).toBe(runOnce());
    expect(a.endsWith('2')).toBe(true);
  });
});

// Live exit pruning's policy (src/policy/exit-pruning.ts) on simulated traffic: exits that never fire are pruned from the
// back, exits that pay never are, probes bring an exit back when it pays again, and every pruned decision equals the
// calibrated cascade's or the full model's.
import { describe, expect, it } from 'vitest';
import { NEVER_EXIT, type BundleManifest } from '../src/bundle/manifest.js';
import { createRng, type Rng } from '../src/calibrate/rng.js';
import {
  EXIT_OVERHEAD_FRACTION,
  ExitPruner,
  PRUNE_DEFAULTS,
  exitEconomics,
  type PruneRun,
} from '../src/policy/exit-pruning.js';

/**
 * A manifest with the MACs of the shared ResNet-20 bundle (bench/.bundles/resnet20): segments of 0.447, 0.320, 0.116,
 * 0.116 of the backbone, exits after the first three with heads of 0.0010, 0.0010, 0.0003.
 */
const manifest = {
  backbone: { macs: 1000 },
  segments: [{ macs: 447 }, { macs: 320 }, { macs: 117 }, { macs: 116 }],
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

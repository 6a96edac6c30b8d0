// Progress of the heads stage: with auto capacity, shortlisted cuts get different numbers of ladder fits (a 1x1 grid
// without a max branch allows only the wider MLP); the announced total must hold every fit and end exactly at it.
import { describe, expect, it } from 'vitest';
import { trainCandidates, type HeadData } from '../src/calibrate/candidate-heads.js';
import type { FitContext } from '../src/calibrate/prepare-context.js';
import { resolvePrepareOptions } from '../src/calibrate/prepare-options.js';
import { StepTimer, type PrepareProgress } from '../src/calibrate/progress.js';
import type { CutFeatures } from '../src/calibrate/features.js';
import type { CutPoint, ModelAnalysis } from '../src/graph/index.js';
import { argmaxRows } from '../src/policy/cascade-sim.js';
import { teacherData } from './calibrate-fixtures.js';

describe('heads-stage progress', () => {
  it('never passes its total and ends at it when cuts get different ladders', { timeout: 300_000 }, async () => {
    const n = 30_000; // the auto ladder starts at 30,000 training rows
    const k = 3;
    const cut = (tensor: string, macs: number): CutPoint => ({
      tensor,
      shape: ['batch', 4, 2, 2],
      dtype: 'float32',
      macs,
      fraction: macs / 100,
    });
    const cuts = [cut('a', 30), cut('b', 60)];
    // cut a: 4 channels on a 1x1 grid, no max branch (dim 4); cut b: 2 channels on 2x2 plus a 1x1 max grid (dim 10)
    const a = teacherData(n, 4, k, 1);
    const b = teacherData(n, 10, k, 2);
    const features: CutFeatures[] = [
      { cut: cuts[0]!, channels: 4, height: 2, width: 2, grid: [1, 1], dim: 4, x: a.x },
      { cut: cuts[1]!, channels: 2, height: 2, width: 2, grid: [2, 2], maxGrid: [1, 1], dim: 10, x: b.x },
    ];
    const o = resolvePrepareOptions({ target: 0.9, folds: 2, hidden: 4, shortlist: 2, augment: [] });
    const events: PrepareProgress[] = [];
    const c: FitContext = {
      o,
      analysis: { macs: 100, cuts } as unknown as ModelAnalysis,
      io: { classes: k } as FitContext['io'],
      timer: new StepTimer(),
      warnings: [],
      progress: (e) => events.push(e),
      options: {},
      samples: { count: n },
    };
    const data: HeadData = {
      cuts,
      features: { n, k, teacher: a.p, cuts: features },
      rows: n,
      foldOf: Int32Array.from({ length: n }, (_, i) => i % 2),
      teacherPred: argmaxRows(a.p, n, k),
    };
    const { screened } = await trainCandidates(c, data);
    expect(screened.map((s) => s.length)).toEqual([1, 3]); // the ladders differ
    const heads = events.filter((e) => e.stage === 'heads');
    for (const e of heads) expect(e.done).toBeLessThanOrEqual(e.total);
    const last = heads[heads.length - 1]!;
    expect(last.done).toBe(last.total);
    // the fits counted one by one reach the final total: no jump at the end
    expect(heads[heads.length - 2]!.done).toBe(last.total);
  });
});

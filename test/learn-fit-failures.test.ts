// A fit that fails (the fits' worker out of memory, …) backs off instead of starting again at every call, and keeps
// the fresh samples and the re-fit it was started for.
import { describe, expect, it } from 'vitest';
import { Learner, noExitSummary, type FitRunner } from '../src/learn/learner.js';
import { resolveLearnOptions } from '../src/learn/learn-options.js';
import { fakeLearnModel } from './fixtures/fake-learn-model.js';

/** Adds `n` distinct random rows (keys from `from`). */
function add(l: Learner, n: number, from: number): void {
  const d = l.reservoir.cuts[0]!.dim;
  for (let i = 0; i < n; i++)
    l.reservoir.addPooled([Float32Array.from({ length: d }, () => Math.random())], new Float32Array(10).fill(0.1), 1, [
      from + i,
    ]);
}

describe('failed fits', () => {
  it('back off (refitAfter, doubling) instead of retrying at every call, and keep the samples and the re-fit asked for', async () => {
    const options = { minSamples: 300, maxSamples: 2000, drift: false, refitAfter: 100 };
    const l = new Learner(fakeLearnModel(), options);
    add(l, 400, 0);
    let calls = 0;
    const failing: FitRunner = async () => {
      calls++;
      throw new RangeError('Array buffer allocation failed');
    };
    const round = async (): Promise<void> => {
      if (l.wantsFit()) await l.fit(undefined, failing).catch(() => undefined);
    };
    for (let i = 0; i < 3; i++) await round();
    expect(calls).toBe(1); // one attempt, not one per call
    expect([l.status().fitsFailed, l.status().fitRetryAfter, l.reservoir.fresh]).toEqual([1, 100, 400]);
    // repeats of a stored input (a still screen) are no new samples: they do not end the backoff
    for (let i = 0; i < 500; i++) add(l, 1, 0);
    expect([l.status().samplesRepeated, l.status().fitRetryAfter, l.wantsFit()]).toEqual([500, 100, false]);
    // saved with the state: a reload goes on waiting
    const reloaded = new Learner(fakeLearnModel(), options);
    expect(reloaded.restore(l.state())).toBe(true);
    expect([reloaded.status().fitsFailed, reloaded.status().fitRetryAfter, reloaded.wantsFit()]).toEqual([
      1,
      100,
      false,
    ]);
    add(l, 99, 1000);
    await round();
    expect(calls).toBe(1);
    add(l, 1, 2000);
    await round();
    expect([calls, l.status().fitRetryAfter]).toEqual([2, 200]); // the second failure in a row waits twice as long
    add(l, 200, 3000);
    // a fit that runs to its end ends the backoff
    const ok: FitRunner = async (job) => ({ exits: [], summary: noExitSummary(job.options) });
    expect(l.wantsFit()).toBe(true);
    expect((await l.fit(undefined, ok)).adopted).toBe(true);
    expect([l.status().fits, l.status().fitsFailed, l.status().fitRetryAfter]).toEqual([1, 2, undefined]);
    // a re-fit asked for (the audit tightened, the target changed) survives a failure
    expect(l.restore({ ...l.state(), refitWanted: true })).toBe(true);
    add(l, 50, 4000);
    expect(l.wantsFit()).toBe(true);
    await l.fit(undefined, failing).catch(() => undefined);
    expect(l.state().refitWanted).toBe(true);
    expect(l.reservoir.fresh).toBe(50); // the failed fit's fresh rows are fresh for the next
    expect(l.wantsFit()).toBe(false); // backing off
    add(l, 100, 5000);
    expect(l.wantsFit()).toBe(true);
    // a reset forgets the failures
    l.reset();
    expect([l.status().fitsFailed, l.status().fitRetryAfter]).toEqual([0, undefined]);
    expect(resolveLearnOptions(options).refitAfter).toBe(100);
  });
});

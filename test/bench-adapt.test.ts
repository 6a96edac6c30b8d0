// The pure parts of `npm run bench:adapt` (bench/adapt-report.ts): the seeded order, the drift shifts, and the judging
// and rendering of issue 15's goals from per-window records.
import { describe, expect, it } from 'vitest';
import {
  driftDetectedAfter,
  exitsOnAt,
  judgeGoals,
  renderAdaptBlock,
  shiftImage,
  shuffledOrder,
  type AdaptRecord,
  type AdaptWindow,
} from '../bench/adapt-report.js';

/** A window of 1,000 images with `agreed` agreeing; exits on throughout unless `on` says otherwise. */
function win(
  phase: AdaptWindow['phase'],
  start: number,
  agreed: number,
  extra: Partial<AdaptWindow> = {},
): AdaptWindow {
  return {
    phase,
    start,
    images: 1000,
    agreed,
    onImages: 1000,
    onAgreed: agreed,
    early: 500,
    earlyAgreed: 495,
    macs: 650,
    sdkMs: 700,
    fullMs: 1000,
    fitsDone: 0,
    fitSeconds: 0,
    events: [],
    sdk: {
      exitsOn: true,
      fits: 1,
      samplesSeen: start + 1000,
      tightenings: 0,
      expectedMacsFraction: 0.65,
      audit: { agreement: 0.99, lowerBound: 0.97, upperBound: 0.998, audited: 30, totalAudited: 30 },
    },
    ...extra,
  };
}

const off = { onImages: 0, onAgreed: 0, macs: 1000 };

function run(): AdaptWindow[] {
  return [
    win('traffic', 0, 1000, off),
    win('traffic', 1000, 1000, { ...off, events: [{ at: 499, kind: 'on' }], onImages: 500, onAgreed: 500 }),
    win('traffic', 2000, 992),
    win('traffic', 3000, 990),
    win('test', 4000, 990),
    win('drift', 5000, 985, { events: [{ at: 299, kind: 'tighten' }] }),
  ];
}

describe('bench:adapt goals', () => {
  it('a run that meets every goal is judged met', () => {
    const ws = run();
    expect(exitsOnAt(ws)).toBe(1500);
    expect(driftDetectedAfter(ws)).toBe(300);
    const g = judgeGoals(ws);
    // the last goal (savings recover after the drift) needs two drift windows
    expect(g.map((x) => x.met)).toEqual([true, true, true, true, true, true, null]);
    // over the traffic with exits on: (500 + 992 + 990) / 2500
    expect(g[1]!.value).toContain('99.28 %');
  });

  it('misses are reported with their distance', () => {
    const ws = run().map((w) =>
      w.phase === 'traffic' && w.start === 3000
        ? { ...w, agreed: 970, onAgreed: 970 }
        : w.phase === 'test'
          ? { ...w, macs: 750 }
          : w.phase === 'drift'
            ? { ...w, events: [{ at: 799, kind: 'off' as const }] }
            : w,
    );
    const g = judgeGoals(ws);
    expect(g[2]).toMatchObject({ met: false, distance: expect.stringContaining('1.00 points short') });
    expect(g[3]).toMatchObject({ met: false, distance: 'MACs +0.050' });
    expect(g[4]).toMatchObject({ met: false, distance: '300 images late' });
    // (500 + 992 + 970) / 2500 = 98.48 %
    expect(g[1]).toMatchObject({ met: false, distance: '0.32 points short' });
  });

  it('after the drift: every window >= 98 %, and the savings must come back by 0.02 of MACs', () => {
    const drift = (macs: number, agreed = 990) => [...run(), win('drift', 6000, agreed, { macs: macs * 1000 })];
    // first drift window at 0.650 (win's default), last at 0.620: recovered; at 0.640: 0.010 short
    expect(judgeGoals(drift(0.62))[6]).toMatchObject({ met: true });
    expect(judgeGoals(drift(0.64))[6]).toMatchObject({ met: false, distance: '0.010 short' });
    expect(judgeGoals(drift(0.62, 975))[5]).toMatchObject({ met: false, distance: '0.50 points short' });
  });

  it('exits that never come on, or a run too short to tell, are not judged as met', () => {
    const short = [win('traffic', 0, 1000, off)];
    const g = judgeGoals(short);
    expect(g[0]!.met).toBeNull();
    expect(g[1]!.met).toBeNull();
    expect(g[3]!.met).toBeNull();
    const long = Array.from({ length: 11 }, (_, i) => win('traffic', i * 1000, 1000, off));
    expect(judgeGoals(long)[0]).toMatchObject({ met: false, distance: 'no exits' });
  });

  it('renders the goals and one row per window', () => {
    const record: AdaptRecord = {
      date: '2026-12-06T00:00:00.000Z',
      command: 'npm run bench:adapt',
      model: 'm',
      machine: {},
      config: {
        images: 4000,
        window: 1000,
        testImages: 1000,
        drift: 'blur',
        driftImages: 1000,
        seed: 1,
        threads: 1,
        learn: {},
      },
      seconds: 10,
      windows: run(),
    };
    const md = renderAdaptBlock(record, 'bench/results/adapt-x.json');
    expect(md).toContain('5x5 box blur');
    expect(md.match(/\| met/g)?.length).toBe(6);
    expect(md.split('\n').filter((l) => /^\| (traffic|test|drift) \|/.test(l))).toHaveLength(6);
  });
});

describe('bench:adapt traffic', () => {
  it('the shuffled order is a seeded permutation', () => {
    const a = shuffledOrder(1000, 1);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(shuffledOrder(1000, 1)).toEqual(a);
    expect(shuffledOrder(1000, 2)).not.toEqual(a);
  });

  it('blur averages a 5x5 neighbourhood; the cast warms the colours', () => {
    const px = new Uint8Array(5 * 5 * 3);
    px[(2 * 5 + 2) * 3] = 250; // one red pixel in the centre
    const b = shiftImage(px, 5, 5, 3, 'blur');
    expect(b[(2 * 5 + 2) * 3]).toBe(10); // 250 / 25
    expect(b[0]).toBe(Math.round(250 / 9)); // corner: a 3x3 neighbourhood
    const c = shiftImage(new Uint8Array([100, 100, 100]), 1, 1, 3, 'cast');
    expect([...c]).toEqual([160, 100, 60]);
  });
});

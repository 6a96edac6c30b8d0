// On-device learning's drift signal and recency-aware audit on synthetic streams: a shift of the inputs (blur, colour
// cast) is flagged within a few hundred inputs, a stationary stream rarely raises a false alarm (the rate is measured
// and printed), and the audit's recent window sees a fall of the agreement that the count since the exits changed
// would take thousands of audits to see.
import { describe, expect, it } from 'vitest';
import { LiveAudit } from '../src/learn/audit.js';
import { DriftDetector, inputStats, ksTwoSample, kolmogorovQ, STATS_PER_CHANNEL } from '../src/learn/drift.js';
import { createRng, type Rng } from '../src/calibrate/rng.js';

const SPEC = { height: 16, width: 16, channels: 3 as const, layout: 'NCHW' as const };

/** A random smooth-ish RGB image (NCHW): a per-image brightness, texture noise; `blur` box-blurs it, `cast` tints it. */
function image(rng: Rng, shift: 'none' | 'blur' | 'cast' = 'none'): Float32Array {
  const { height: h, width: w } = SPEC;
  const x = new Float32Array(3 * h * w);
  const base = rng.next() * 2 - 1;
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < h * w; i++) x[c * h * w + i] = base + 0.6 * (rng.next() - 0.5) + 0.3 * Math.sin(i / 7 + c);
  if (shift === 'cast') for (let i = 0; i < h * w; i++) x[i] = x[i]! * 1.3 + 0.4;
  if (shift === 'blur') {
    const y = new Float32Array(x.length);
    for (let c = 0; c < 3; c++)
      for (let r = 0; r < h; r++)
        for (let q = 0; q < w; q++) {
          let s = 0,
            n = 0;
          for (let dr = -2; dr <= 2; dr++)
            for (let dq = -2; dq <= 2; dq++) {
              const rr = r + dr,
                qq = q + dq;
              if (rr < 0 || rr >= h || qq < 0 || qq >= w) continue;
              s += x[c * h * w + rr * w + qq]!;
              n++;
            }
          y[c * h * w + r * w + q] = s / n;
        }
    return y;
  }
  return x;
}

const stats = (x: Float32Array): Float64Array => inputStats(x, 0, SPEC);

describe('drift statistics and the KS test', () => {
  it('reads the same statistics from either layout; blur lowers the neighbour differences', () => {
    const rng = createRng(1);
    const x = image(rng);
    const nhwc = new Float32Array(x.length);
    for (let c = 0; c < 3; c++) for (let i = 0; i < 256; i++) nhwc[i * 3 + c] = x[c * 256 + i]!;
    const a = stats(x);
    const b = inputStats(nhwc, 0, { ...SPEC, layout: 'NHWC' });
    expect(a.length).toBe(3 * STATS_PER_CHANNEL);
    a.forEach((v, i) => expect(b[i]).toBeCloseTo(v, 5));
    const blurred = stats(image(createRng(1), 'blur'));
    expect(blurred[2]).toBeLessThan(a[2]! / 2); // mean |dx| of channel 0
  });

  it('gives KS p-values near uniform for equal samples and tiny ones for shifted samples', () => {
    const rng = createRng(2);
    const sample = (n: number, shift: number): Float64Array =>
      Float64Array.from({ length: n }, () => rng.next() + shift).sort();
    expect(kolmogorovQ(0)).toBe(1);
    expect(kolmogorovQ(1.36)).toBeCloseTo(0.05, 2);
    let small = 0;
    for (let t = 0; t < 400; t++) if (ksTwoSample(sample(200, 0), sample(1000, 0)).p < 0.05) small++;
    expect(small / 400).toBeLessThan(0.1); // ≈ 5 % at the 5 % level
    expect(ksTwoSample(sample(200, 0.3), sample(1000, 0)).p).toBeLessThan(1e-6);
  });
});

describe('drift detector', () => {
  /** Feeds `n` inputs; returns the input indices that raised an alarm. */
  const feed = (d: DriftDetector, rng: Rng, n: number, shift: 'none' | 'blur' | 'cast' = 'none'): number[] => {
    const alarms: number[] = [];
    for (let i = 0; i < n; i++) if (d.observe(stats(image(rng, shift)))) alarms.push(i);
    return alarms;
  };

  it('flags a blur or a colour cast within 200 inputs of the switch', () => {
    for (const shift of ['blur', 'cast'] as const) {
      const d = new DriftDetector(3 * STATS_PER_CHANNEL, { seed: 3 });
      const rng = createRng(shift === 'blur' ? 4 : 5);
      expect(feed(d, rng, 1500)).toEqual([]);
      const alarms = feed(d, rng, 500, shift);
      expect(alarms.length).toBeGreaterThan(0);
      expect(alarms[0]).toBeLessThan(200);
      console.log(`drift detector: ${shift} flagged after ${alarms[0]! + 1} inputs`);
      // after restart() the new traffic is the reference: no more alarms on it
      d.restart();
      expect(feed(d, rng, 1500, shift)).toEqual([]);
    }
  });

  it('rarely false-alarms on a stationary stream (rate measured)', () => {
    const d = new DriftDetector(3 * STATS_PER_CHANNEL, { seed: 6 });
    const rng = createRng(7);
    const n = 30_000;
    const alarms = feed(d, rng, n);
    const { tests } = d.status();
    console.log(
      `drift detector: ${alarms.length} false alarms in ${n} stationary inputs (${tests} tests at alpha 1e-4); ` +
        `smallest p of the last test ${d.status().lastP.toExponential(2)}`,
    );
    expect(tests).toBeGreaterThan(250);
    expect(alarms.length).toBeLessThanOrEqual(1);
  });

  it('persists its reference; a foreign state is refused', () => {
    const d = new DriftDetector(3 * STATS_PER_CHANNEL, { seed: 8 });
    feed(d, createRng(9), 800);
    const s = structuredClone(d.state());
    expect(s.reference.length).toBe(600 * 3 * STATS_PER_CHANNEL);
    const e = new DriftDetector(3 * STATS_PER_CHANNEL);
    expect(e.restore(s)).toBe(true);
    expect(e.status().reference).toBe(600);
    expect(new DriftDetector(STATS_PER_CHANNEL).restore(s)).toBe(false);
  });
});

describe('recency-aware audit', () => {
  it('sees a fall of the agreement after many good audits within the window', () => {
    const a = new LiveAudit({ share: 1, minAudits: 20, recent: 300 });
    const rng = createRng(10);
    for (let i = 0; i < 5000; i++) a.record(rng.next() < 0.997);
    expect(a.failing(0.99)).toBe(false);
    let at = -1;
    for (let i = 0; i < 1000 && at < 0; i++) {
      a.record(rng.next() < 0.93);
      if (a.failing(0.99)) at = i;
    }
    // all 5,000+ audits together would still be above 0.99 for hundreds more; the window flags it far sooner
    expect(at).toBeGreaterThan(0);
    expect(at).toBeLessThan(250);
    const e = a.estimate();
    expect(e.upperBound).toBeGreaterThan(0.99);
    expect(e.recentUpperBound).toBeLessThan(0.99);
  });

  it('measures by how much the exits overpromise: disagreements seen / promised, recent audits weigh most', () => {
    const a = new LiveAudit({ share: 1 });
    expect(a.estimate().overpromise).toBe(1);
    for (let i = 0; i < 3000; i++) a.record(i % 50 !== 0, 0.01); // promised 99 %, gives 98 %
    expect(a.estimate().overpromise).toBeGreaterThan(1.7);
    expect(a.estimate().overpromise).toBeLessThan(2);
    for (let i = 0; i < 6000; i++) a.record(i % 100 !== 0, 0.01); // later fits keep their promise
    expect(a.estimate().overpromise).toBeLessThan(1.1);
    const b = new LiveAudit({ share: 1 });
    expect(b.restore(structuredClone(a.state()))).toBe(true);
    expect(b.estimate().overpromise).toBeCloseTo(a.estimate().overpromise, 12);
  });

  it('rarely fails a cascade that meets the target (rate measured) and persists its window', () => {
    const rng = createRng(11);
    let failures = 0;
    const runs = 20;
    for (let r = 0; r < runs; r++) {
      const a = new LiveAudit({ share: 1, minAudits: 20, recent: 300 });
      for (let i = 0; i < 3000; i++) {
        a.record(rng.next() < 0.995);
        if (a.failing(0.99)) {
          failures++;
          break;
        }
      }
    }
    console.log(`audit: ${failures} of ${runs} streams of 3,000 audits at 99.5 % agreement failed a 0.99 target`);
    expect(failures).toBeLessThanOrEqual(2);
    const a = new LiveAudit({ share: 1, recent: 5 });
    [1, 0, 1, 1, 1, 0, 1].forEach((v) => a.record(v === 1));
    const s = structuredClone(a.state());
    expect([...s.recent!]).toEqual([1, 1, 1, 0, 1]);
    const b = new LiveAudit({ share: 1, recent: 5 });
    expect(b.restore(s)).toBe(true);
    expect(b.estimate().recentAgreed).toBe(4);
    expect(b.restore({ ...s, recent: new Uint8Array([2]) })).toBe(false);
  });
});

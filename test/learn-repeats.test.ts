// Exact repeats of served inputs in on-device learning: the input key (a hash of the preprocessed tensor), the
// reservoir storing a repeated input once (a copy in another fold would be judged by a head that trained on its twin:
// the fit's out-of-fold agreement would read high), its keys kept through a restore and a replacement.
import { describe, expect, it } from 'vitest';
import { inputKey, inputKeys } from '../src/learn/input-key.js';
import { FeatureReservoir, type ReservoirCut } from '../src/learn/reservoir.js';
import { createRng } from '../src/calibrate/rng.js';
import type { PackedFeatures } from '../src/calibrate/feature-store.js';
import { Learner } from '../src/learn/learner.js';
import { fakeLearnModel as fakeModel } from './fixtures/fake-learn-model.js';

describe('input key', () => {
  it('differs for x and -x, for two sign flips in one lane, and for x and 2x (top bits reach every bit)', () => {
    const rng = createRng(3);
    for (const n of [8, 3072]) {
      for (let t = 0; t < 50; t++) {
        const x = Float32Array.from({ length: n }, () => rng.normal());
        const key = inputKey(x, 0, n);
        expect(
          inputKey(
            x.map((v) => -v),
            0,
            n,
          ),
        ).not.toBe(key);
        expect(
          inputKey(
            x.map((v) => 2 * v),
            0,
            n,
          ),
        ).not.toBe(key);
        const y = x.slice();
        const [i, j] = [2 * rng.int(n / 2), 2 * rng.int(n / 2)]; // two even words: the same lane
        if (i === j) continue;
        y[i] = -y[i]!;
        y[j] = -y[j]!;
        expect(inputKey(y, 0, n)).not.toBe(key);
      }
    }
  });

  it('is equal for equal bits and differs for a change of one value, at any offset', () => {
    const rng = createRng(1);
    const x = Float32Array.from({ length: 3 * 3072 }, () => rng.normal());
    const keys = inputKeys(x, 3, 3072);
    expect(keys[1]).toBe(inputKey(x.slice(3072, 6144), 0, 3072));
    const y = x.slice();
    y[3072 + 1000] = Math.fround(y[3072 + 1000]! + 1e-6);
    expect(inputKey(y, 3072, 3072)).not.toBe(keys[1]);
    expect(inputKey(y, 0, 3072)).toBe(keys[0]);
    y[1] = -0; // another bit pattern of zero: another input tensor
    x[1] = 0;
    expect(inputKey(y, 0, 3072)).not.toBe(inputKey(x, 0, 3072));
    // integers in [0, 2^52), spread: 5,000 inputs that differ in one value each have 5,000 keys
    const set = new Set<number>();
    const z = new Float32Array(3072);
    for (let i = 0; i < 5000; i++) {
      z[i % 3072] = i;
      const k = inputKey(z, 0, 3072);
      expect(Number.isInteger(k) && k >= 0 && k < 2 ** 52).toBe(true);
      set.add(k);
    }
    expect(set.size).toBe(5000);
  });
});

describe('feature reservoir with input keys', () => {
  const cuts = [{ dim: 16 }, { dim: 8 }] as ReservoirCut[];
  const k = 10;
  /** `n` random rows: pooled features per cut and probabilities. */
  function rows(n: number, seed: number): { pooled: Float32Array[]; probs: Float32Array } {
    const rng = createRng(seed);
    return {
      pooled: cuts.map((c) => Float32Array.from({ length: n * c.dim }, () => rng.next())),
      probs: Float32Array.from({ length: n * k }, () => rng.next()),
    };
  }
  const codes = (r: FeatureReservoir) =>
    r
      .snapshot(async () => {})
      .then((f) => ({ teacher: f.teacher, x: f.cuts.map((c) => (c.x as PackedFeatures).data) }));

  it('stores 1,000 rows added twice once: the same rows, counts and snapshot as without the repeats', async () => {
    const { pooled, probs } = rows(1000, 3);
    const keys = Float64Array.from({ length: 1000 }, (_, i) => i * 7919 + 1);
    const limits = { maxSamples: 5000, maxBytes: 1e9 };
    const once = new FeatureReservoir(cuts, k, limits);
    once.addPooled(pooled, probs, 1000, keys);
    const twice = new FeatureReservoir(cuts, k, limits);
    twice.addPooled(pooled, probs, 1000, keys);
    twice.addPooled(pooled, probs, 1000, keys);
    expect([twice.size, twice.seen, twice.fresh, twice.repeats, twice.offered]).toEqual([1000, 1000, 1000, 1000, 2000]);
    expect(await codes(twice)).toEqual(await codes(once)); // any fit on it is the fit on the rows without repeats
    // without keys every row is a new one (bench feeds of a feature cache)
    const keyless = new FeatureReservoir(cuts, k, limits);
    keyless.addPooled(pooled, probs, 1000);
    keyless.addPooled(pooled, probs, 1000);
    expect(keyless.size).toBe(2000);
    // the keys survive a state round trip: the restored reservoir still knows them
    const restored = new FeatureReservoir(cuts, k, limits);
    expect(restored.restore(structuredClone(twice.state()))).toBe(true);
    restored.addPooled(pooled, probs, 1000, keys);
    expect([restored.size, restored.repeats]).toEqual([1000, 2000]);
    const { keys: _k, ...noKeys } = twice.state();
    expect(restored.restore(noKeys as unknown as ReturnType<FeatureReservoir['state']>)).toBe(false);
  });

  it('forgets the key of a replaced row: that input may be stored again', () => {
    const { pooled, probs } = rows(2000, 5);
    const keys = Float64Array.from({ length: 2000 }, (_, i) => i + 1);
    const r = new FeatureReservoir(cuts, k, { maxSamples: 100, maxBytes: 1e9, seed: 2 });
    r.addPooled(pooled, probs, 2000, keys);
    const stored = new Set(r.state().keys);
    expect(stored.size).toBe(100);
    const gone = keys.find((key) => !stored.has(key) && key <= 100)!; // one of the first 100, replaced since
    expect(gone).toBeDefined();
    const one = (key: number): void =>
      r.addPooled(
        pooled.map((p, i) => p.subarray(0, cuts[i]!.dim)),
        probs.subarray(0, k),
        1,
        [key],
      );
    const before = r.repeats;
    one([...stored][0]!);
    expect(r.repeats).toBe(before + 1); // a stored key: a repeat
    one(gone);
    expect(r.repeats).toBe(before + 1); // a replaced one: offered as new (drawn for)
    expect(r.seen).toBe(2001);
  });
});

describe('learner with repeated inputs', () => {
  /** Offers one input with `key` to `l`'s reservoir, as a completed input is offered. */
  const offer = (l: Learner, key: number): void => {
    const d = l.reservoir.cuts[0]!.dim;
    l.reservoir.addPooled([new Float32Array(d).fill(key % 7)], new Float32Array(10).fill(0.1), 1, [key]);
  };

  it('a stream of one input is completed at about auditShare, and is no sample however often seen', () => {
    const l = new Learner(fakeModel(), { maxSamples: 400, minSamples: 300, auditShare: 0.05, learnShare: 1 });
    // a camera on a still screen: one input, offered 400 times
    for (let i = 0; i < 400; i++) offer(l, 42);
    expect([l.reservoir.size, l.status().samplesRepeated]).toEqual([1, 399]);
    let n = 0;
    for (let i = 0; i < 4000; i++) if (l.drawCompletion()) n++;
    expect(n / 4000).toBeCloseTo(0.05, 1); // not every input completed for ever
    expect(l.wantsFit()).toBe(false); // one sample, however often seen
  });

  it('repeats do not use up the learning phase: distinct inputs after them are completed at about learnShare', () => {
    const l = new Learner(fakeModel(), { maxSamples: 3000, minSamples: 300, auditShare: 0.05, learnShare: 0.5 });
    // more repeats than the reservoir holds: before, the learnShare phase ended here for good
    for (let i = 0; i < 4000; i++) offer(l, 42);
    expect(l.offered).toBeGreaterThan(l.reservoir.capacity);
    // varied traffic: each input completed is offered (a new one)
    let completed = 0;
    let late = 0;
    for (let i = 0; i < 2000; i++) {
      if (!l.drawCompletion()) continue;
      offer(l, 1000 + i);
      completed++;
      if (i >= 1000) late++;
    }
    expect(late / 1000).toBeGreaterThan(0.4); // about learnShare 0.5, not auditShare 0.05
    expect(late / 1000).toBeLessThan(0.6);
    expect(l.reservoir.seen).toBe(1 + completed);
    expect(l.reservoir.seen).toBeLessThan(l.reservoir.capacity); // still learning
  });
});

// On-device learning's pure core (src/learn): the reservoir's cap and sampling, the live audit's trigger, and the
// learner on the shipped Fashion-MNIST model — fit from streamed inputs, audit failure, persisted state.
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { encodeModel } from '../src/graph/index.js';
import { NEVER_EXIT } from '../src/policy/thresholds.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { LiveAudit } from '../src/learn/audit.js';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { costTableFromPlan } from '../src/policy/device-plan.js';
import {
  analyseForLearning,
  assembleLearned,
  fitLearned,
  Learner,
  planCostTable,
  type FitRunner,
  VERIFY_AUDITS,
  type LearnerState,
  type LearnModel,
} from '../src/learn/learner.js';
import { createRng } from '../src/calibrate/rng.js';
import { resolveLearnOptions } from '../src/learn/learn-options.js';
import { FeatureReservoir, bytesPerRow, reservoirCuts, type ReservoirCut } from '../src/learn/reservoir.js';
import { encodeRowU8, packFeatures, rowReader, type PackedFeatures } from '../src/calibrate/feature-store.js';
import { isSelfxitError } from '../src/errors.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { resolveLoadOptions } from '../src/page/options.js';
import { pickCurvePoint } from '../src/policy/curve.js';
import { qopClassifier } from './fixtures/quant-graphs.js';
import type { CalibrationSummary } from '../src/bundle/manifest.js';

const dir = path.resolve(import.meta.dirname, '../public/models/fashion-resnet');
const modelBytes = new Uint8Array(fs.readFileSync(path.join(dir, 'model.onnx')));
const calib = new Uint8Array(fs.readFileSync(path.join(dir, 'calib-u8.bin')));
const input = { mean: [0.286], std: [0.353] };

async function fashion(learn = {}): Promise<LearnModel> {
  return analyseForLearning(modelBytes, ortNode, { input, learn });
}

/** Serves `count` calibration images from `start` through the learner's feature model, `store`-ing them. */
async function stream(l: Learner, start: number, count: number, store = true): Promise<Int32Array> {
  const s = await ort.InferenceSession.create(encodeModel(l.featureModel()));
  const spec = l.model.io.input;
  const samples = { data: calib, count: calib.length / 784 };
  const out = new Int32Array(count);
  try {
    for (let at = 0; at < count; at += 100) {
      const rows = Math.min(100, count - at);
      const x = new ort.Tensor('float32', toModelInput(samples, start + at, rows, spec).slice(), inputDims(spec, rows));
      const r = l.fromRun(await s.run({ [spec.name]: x }), rows, store);
      out.set(r.index, at);
    }
  } finally {
    await s.release();
  }
  return out;
}

describe('learn options', () => {
  it('fills defaults and rejects bad values with typed errors', () => {
    const o = resolveLearnOptions();
    expect(o.auditShare).toBe(0.03);
    expect(o.minSamples).toBeGreaterThanOrEqual(300);
    expect(resolveLearnOptions({ minSamples: 10 }).minSamples).toBe(300); // never below prepare's minimum at 0.99
    for (const bad of [{ auditShare: 2 }, { maxSamples: 0 }, { maxBytes: -1 }, { minSamples: 500, maxSamples: 400 }])
      expect(() => resolveLearnOptions(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => resolveLearnOptions({ target: 1.5 })).toThrow(expect.objectContaining({ code: 'INVALID_TARGET' }));
    expect(o.learnShare).toBe(1); // every input a sample until the reservoir is full
    // the default byte cap holds the default 40,000 samples of CIFAR ResNet-56's 8 candidate cuts (uint8 rows: a byte
    // per feature, 8 per cut, 8 for the input's key and 40 for its entry in the index of keys; float16 rows took 6,568 bytes, 19,958 samples in 128 MiB, and
    // 64 MiB held 10,217)
    const r56 = [320, 320, 320, 384, 384, 512, 512, 512].map((dim) => ({ dim }) as ReservoirCut);
    expect(bytesPerRow(r56, 10)).toBe(3416);
    const r56Rows = Math.floor(o.maxBytes / bytesPerRow(r56, 10));
    expect(r56Rows).toBe(39290);
    expect(r56Rows).toBeGreaterThan(0.98 * o.maxSamples); // 98 %: the key index took 1.2 %
    expect(new FeatureReservoir(r56, 10, o).capacity).toBe(39290); // the byte cap binds, not maxSamples
    expect(resolveLearnOptions({ auditShare: 0.5, learnShare: 0.1 }).learnShare).toBe(0.5); // at least auditShare
    expect(() => resolveLearnOptions({ learnShare: -0.1 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });

  it('completes learnShare of the served inputs while the reservoir fills, auditShare once it is full', async () => {
    const l = new Learner(await fashion(), { maxSamples: 400, minSamples: 300, auditShare: 0.05, learnShare: 0.4 });
    const share = (draws: number): number => {
      let n = 0;
      for (let i = 0; i < draws; i++) if (l.drawCompletion()) n++;
      return n / draws;
    };
    expect(share(4000)).toBeCloseTo(0.4, 1);
    await stream(l, 0, 400);
    expect(l.reservoir.size).toBe(l.reservoir.capacity);
    expect(share(4000)).toBeCloseTo(0.05, 1);
  });
});

describe('the learn option of load()', () => {
  it('learns from a plain model or from a bundle (its manifest), refusing input/labels with a bundle', () => {
    const plain = resolveLoadOptions('https://x.example/m/model.onnx', { learn: true }).init;
    expect(plain.manifestUrl).toBe('https://x.example/m/model.onnx');
    expect(plain.learn?.fromBundle).toBeUndefined();
    const bundle = resolveLoadOptions('https://x.example/b/', { learn: { auditShare: 0.1 } }).init;
    expect(bundle.manifestUrl).toBe('https://x.example/b/manifest.json');
    expect(bundle.learn).toMatchObject({ fromBundle: true, options: { auditShare: 0.1 }, persist: true });
    expect(() => resolveLoadOptions('https://x.example/b/', { learn: { labels: ['a'] } })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => resolveLoadOptions('https://x.example/m/model.onnx')).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });
});

describe('feature reservoir', () => {
  it('stores rows as uint8 square-root codes within the stated error bound, half the bytes of float16', () => {
    const rng = createRng(7);
    const [n, d] = [200, 300];
    const x = new Float32Array(n * d);
    for (let r = 0; r < n; r++) {
      const scale = 10 ** (rng.next() * 4 - 2); // rows of very different magnitudes
      const shift = r % 3 === 0 ? -scale / 2 : 0; // some with negative values
      for (let i = 0; i < d; i++) x[r * d + i] = shift + scale * rng.next() ** 3; // most values small (pooled ReLU maps)
    }
    x.fill(2.5, 10 * d, 11 * d); // a constant row
    [x[5], x[6], x[7]] = [NaN, Infinity, -Infinity];
    const data = new Uint8Array(n * d);
    const ranges = new Float32Array(2 * n);
    for (let r = 0; r < n; r++) encodeRowU8(x.subarray(r * d, (r + 1) * d), d, data, r * d, ranges, 2 * r);
    const packed: PackedFeatures = { format: 'u8row', n, d, data, rowRange: ranges };
    const back = new Float32Array(n * d);
    const read = rowReader(packed, d, new Float32Array(d), new Float32Array(d).fill(1));
    for (let r = 0; r < n; r++) read(r, back, r * d);
    let over = 0;
    let worst = 0;
    let worstLinear = 0; // what a linear map over the row's range would allow: R / 510
    for (let r = 0; r < n; r++) {
      const [lo, R] = [ranges[2 * r]!, ranges[2 * r + 1]!];
      for (let i = 0; i < d; i++) {
        const v = x[r * d + i]!;
        if (!Number.isFinite(v)) continue;
        const u = R > 0 ? Math.sqrt((v - lo) / R) : 0;
        const err = Math.abs(back[r * d + i]! - v);
        if (err > (R * (2 * u + 1 / 510)) / 510 + 1e-6 * (Math.abs(v) + Math.abs(lo))) over++;
        if (R > 0) {
          worst = Math.max(worst, err / R);
          if (u < 0.1) worstLinear = Math.max(worstLinear, (err / R) * 510);
        }
      }
    }
    expect(over).toBe(0);
    expect(worst).toBeGreaterThan(1 / 1000); // lossy: the bound is not vacuous
    expect(worstLinear).toBeLessThan(0.25); // near the row's least value, 4x finer than a linear map's steps
    expect(back.subarray(10 * d, 11 * d).every((v) => v === 2.5)).toBe(true); // a constant row comes back exactly
    expect([back[5], back[7]]).toEqual([ranges[0], ranges[0]]); // NaN and -Inf: the row's least value
    expect(back[6]).toBeCloseTo(ranges[0]! + ranges[1]!, 4); // +Inf: its greatest
    // standardised reads, as the trainer makes them: (x − mean) · invStd
    const mean = Float32Array.from({ length: d }, (_, i) => i / d);
    const out = new Float32Array(d);
    rowReader(packed, d, mean, new Float32Array(d).fill(2))(3, out, 0);
    out.forEach((v, i) => expect(v).toBeCloseTo((back[3 * d + i]! - mean[i]!) * 2, 4));
    // bytes: one per feature (+ 8 per row) against float16's two
    expect(data.byteLength + ranges.byteLength).toBeLessThan(0.52 * packFeatures(x, n, d, 'f16').data.byteLength);
  });

  it('decodes every row finite, even one spanning more than float32 can hold', () => {
    const F32_MAX = 3.4028234663852886e38;
    const rows: number[][] = [
      [-3e38, 0, 3e38], // R = 6e38 > float32's max
      [-F32_MAX, 1, F32_MAX],
      [-Infinity, -3e38, NaN, 2e38, Infinity],
      [-1e39, 1, 1e39], // float64 values beyond float32
    ];
    for (const row of rows) {
      const d = row.length;
      const data = new Uint8Array(d);
      const range = new Float32Array(2);
      encodeRowU8(row, d, data, 0, range, 0);
      expect([...range].every(Number.isFinite), `range of [${row.join(', ')}]`).toBe(true);
      const back = new Float32Array(d);
      rowReader(
        { format: 'u8row', n: 1, d, data, rowRange: range },
        d,
        new Float32Array(d),
        new Float32Array(d).fill(1),
      )(0, back, 0);
      expect([...back].every(Number.isFinite), `[${row.join(', ')}] → [${[...back].join(', ')}]`).toBe(true);
    }
    // the row's least value comes back exactly; a value inside lo..lo + R within the square-root codes' bound
    const data = new Uint8Array(3);
    const range = new Float32Array(2);
    encodeRowU8([-3e38, 0, 3e38], 3, data, 0, range, 0);
    const back = new Float32Array(3);
    rowReader(
      { format: 'u8row', n: 1, d: 3, data, rowRange: range },
      3,
      new Float32Array(3),
      new Float32Array(3).fill(1),
    )(0, back, 0);
    const [lo, R] = [range[0]!, range[1]!];
    expect(back[0]).toBe(Math.fround(-3e38));
    expect(Math.abs(back[1]! - 0)).toBeLessThanOrEqual((R * (2 * Math.sqrt(-lo / R) + 1 / 510)) / 510);
    expect(back[2]).toBeCloseTo(lo + R, -33); // past lo + R: clamped to it
  });

  it('keeps a uniform sample within its byte cap and restores its state', async () => {
    const lm = await fashion();
    const cuts = reservoirCuts(lm.requests);
    const per = bytesPerRow(cuts, 10);
    const r = new FeatureReservoir(cuts, 10, { maxSamples: 1000, maxBytes: per * 50 + 3, seed: 1 });
    expect(r.capacity).toBe(50);
    expect(r.maxBytes).toBe(per * 50);
    expect(r.bytes).toBe(0); // allocated as rows arrive
    const big = new FeatureReservoir(cuts, 10, { maxSamples: 20000, maxBytes: 1e9 });
    big.addFromMaps(
      cuts.map((c) => new Float32Array(c.channels * c.height * c.width)),
      new Float32Array(10),
      1,
    );
    expect(big.bytes).toBe(256 * per); // the first block, not 20,000 rows
    expect(big.maxBytes).toBe(20000 * per);
    const maps = cuts.map((c) => new Float32Array(c.channels * c.height * c.width));
    const logits = new Float32Array(10);
    for (let i = 0; i < 500; i++) {
      maps.forEach((m) => m.fill(i));
      logits.fill(0);
      logits[i % 10] = 5;
      r.addFromMaps(maps, logits, 1);
    }
    expect([r.seen, r.size, r.fresh]).toEqual([500, 50, 500]);
    expect(r.bytes).toBe(per * 50);
    const fs0 = await r.snapshot(async () => {});
    // the average-pooled first feature of each row is the input number it came from: a spread, not the first 50
    // (a constant map pools to a constant row: its codes are 0 and its least value is that number)
    const x0 = fs0.cuts[0]!.x as PackedFeatures;
    expect(x0.format).toBe('u8row');
    const ids = Array.from({ length: 50 }, (_, i) => x0.rowRange![2 * i]!);
    expect(ids.every((v, i) => Number.isInteger(v) && v >= 0 && v < 500 && x0.data[i * cuts[0]!.dim] === 0)).toBe(true);
    expect(new Set(ids).size).toBeGreaterThan(40);
    expect(Math.max(...fs0.teacher)).toBeGreaterThan(0.9);
    const copy = new FeatureReservoir(cuts, 10, { maxSamples: 50, maxBytes: 1e9 });
    expect(copy.restore(r.state())).toBe(true);
    expect((await copy.snapshot(async () => {})).teacher).toEqual(fs0.teacher);
    // a snapshot in slices while rows keep arriving (replacing stored ones) is the reservoir as it is at its end
    let added = 0;
    const sliced = await r.snapshot(async () => {
      for (let j = 0; j < 20; j++, added++) {
        maps.forEach((m) => m.fill(1000 + added));
        r.addFromMaps(maps, logits, 1);
      }
    }, per * 10);
    expect(added).toBe(80); // 5 slices, 4 pauses
    const now = r.state();
    expect(sliced.n).toBe(50);
    expect(sliced.teacher).toEqual(now.teacher);
    sliced.cuts.forEach((c, i) => {
      expect((c.x as PackedFeatures).data).toEqual(now.features[i]);
      expect((c.x as PackedFeatures).rowRange).toEqual(now.ranges[i]);
    });
    expect(now.ranges[0]!.some((v, j) => v !== x0.rowRange![j])).toBe(true); // rows were replaced meanwhile
    // a save's sliced copy (sliceState) beside a fit's snapshot: both see rows replaced meanwhile; rows appended
    // meanwhile are left out of the state and of its counts
    const grow = new FeatureReservoir(cuts, 10, { maxSamples: 60, maxBytes: 1e9 });
    const add = (v: number): void => {
      maps.forEach((m) => m.fill(v));
      grow.addFromMaps(maps, logits, 1);
    };
    for (let i = 0; i < 40; i++) add(i);
    let pauses = 0;
    const st = await grow.sliceState(async () => {
      for (let j = 0; j < 5; j++, pauses++) add(2000 + pauses);
    }, per * 10);
    expect([pauses, grow.size, grow.seen]).toEqual([15, 55, 55]); // 4 slices, 3 pauses
    expect([st.size, st.seen, st.fresh]).toEqual([40, 40, 40]);
    st.features.forEach((f, i) => expect(f).toEqual(grow.state().features[i]!.slice(0, 40 * cuts[i]!.dim)));
    st.ranges.forEach((f, i) => expect(f).toEqual(grow.state().ranges[i]!.slice(0, 80)));
    // overlapping copies (the first 4 pauses add rows, which fill the reservoir and then replace stored ones)
    const pause = async (): Promise<void> => {
      if (pauses++ < 19) for (let j = 0; j < 5; j++) add(3000 + pauses * 10 + j);
    };
    const [st2, snap] = await Promise.all([grow.sliceState(pause, per * 10), grow.snapshot(pause, per * 10)]);
    expect(grow.size).toBe(60);
    expect([st2.size, snap.n]).toEqual([55, 60]); // the snapshot began after the first pause had added 5 rows
    const { features: rows, ranges } = grow.state();
    expect(ranges[0]!.slice(0, 80)).not.toEqual(st.ranges[0]); // rows were replaced meanwhile
    st2.features.forEach((f, i) => expect(f).toEqual(rows[i]!.slice(0, 55 * cuts[i]!.dim)));
    st2.ranges.forEach((f, i) => expect(f).toEqual(ranges[i]!.slice(0, 110)));
    snap.cuts.forEach((c, i) => expect((c.x as PackedFeatures).data).toEqual(rows[i]));
    snap.cuts.forEach((c, i) => expect((c.x as PackedFeatures).rowRange).toEqual(ranges[i]));
    const small = new FeatureReservoir(cuts, 10, { maxSamples: 10, maxBytes: 1e9 });
    expect(small.restore(r.state())).toBe(false);
    // a state of float16 rows (before LEARN_SCHEMA 6: Uint16Array features, no ranges) is never read as codes
    const f16 = { ...r.state(), features: r.state().features.map((f) => new Uint16Array(f)) };
    expect(copy.restore(f16 as unknown as ReturnType<FeatureReservoir['state']>)).toBe(false);
    const { ranges: _r, ...noRanges } = r.state();
    expect(copy.restore(noRanges as unknown as ReturnType<FeatureReservoir['state']>)).toBe(false);
    expect((await copy.snapshot(async () => {})).teacher).toEqual(fs0.teacher); // left as it was
    expect(() => new FeatureReservoir(cuts, 10, { maxSamples: 10, maxBytes: 10 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });
});

describe('live audit', () => {
  it('reports agreement with bounds and fails only on evidence below the target', () => {
    const a = new LiveAudit({ share: 0.5, minAudits: 20, seed: 3 });
    const draws = Array.from({ length: 2000 }, () => a.draw()).filter(Boolean).length;
    expect(draws).toBeGreaterThan(900);
    expect(draws).toBeLessThan(1100);
    for (let i = 0; i < 19; i++) a.record(true);
    a.record(false);
    let e = a.estimate();
    expect(e.agreement).toBeCloseTo(0.95);
    expect(e.lowerBound).toBeLessThan(0.95);
    expect(e.upperBound).toBeGreaterThan(0.95);
    expect(a.failing(0.99)).toBe(false); // one disagreement in 20 is no evidence against 0.99
    a.record(false);
    a.record(false);
    expect(a.failing(0.99)).toBe(true);
    expect(a.failing(0.8)).toBe(false);
    a.resetWindow();
    e = a.estimate();
    expect([e.audited, e.totalAudited, e.totalAgreed]).toEqual([0, 22, 19]);
    // before any audit (none since the exits changed) nothing bounds the agreement: upper bounds 1, not 0 ("≤ 0 %")
    expect([e.upperBound, e.recentUpperBound]).toEqual([1, 1]);
    expect(new LiveAudit({ share: 0 }).draw()).toBe(false);
  });
});

describe('learner on the Fashion-MNIST model', () => {
  it('fits exits from streamed inputs with prepare’s method, tightens on a failing audit, restores its state', async () => {
    const lm = await fashion();
    expect(lm.cannotLearn).toBeUndefined();
    expect(lm.requests.length).toBeGreaterThan(1);
    const l = new Learner(lm, { minSamples: 600, refitAfter: 400, maxCandidates: 4, headKinds: ['pool-linear'] });
    await stream(l, 0, 500);
    expect(l.wantsFit()).toBe(false);
    await stream(l, 500, 300);
    expect(l.wantsFit()).toBe(true);
    const stages = new Set<string>();
    const { learned } = await l.fit((p) => stages.add(p.stage));
    expect(stages.has('heads')).toBe(true);
    expect(l.wantsFit()).toBe(false);
    const st = l.status();
    expect(st.fits).toBe(1);
    expect(learned.summary.samples).toBe(800);
    expect(learned.exits.length).toBeGreaterThan(0);
    expect(st.exitsOn).toBe(true);
    expect(st.macsFraction).toBeLessThan(1);
    expect(st.thresholds).toEqual(learned.exits.map((e) => e.threshold));

    // a failing audit tightens at once: less expected disagreement (or exits off), and a re-fit is wanted
    const before = st.expectedAgreement;
    let tightened = false;
    for (let i = 0; i < 40 && !tightened; i++) tightened = l.audited(0, i % 3 === 0 ? 1 : 0);
    expect(tightened).toBe(true);
    const after = l.status();
    expect(after.tightenings).toBe(1);
    if (after.exitsOn) expect(1 - after.expectedAgreement).toBeLessThanOrEqual((1 - before) / 2 + 1e-12);
    else expect(after.thresholds.every((t) => t === NEVER_EXIT)).toBe(true);
    expect(l.wantsFit()).toBe(true);
    // the audits showed far more disagreement than promised: the next fit aims higher (at most 4x less disagreement)
    expect(after.fitTarget).toBeGreaterThan(0.99);
    expect(after.fitTarget).toBeLessThanOrEqual(1 - 0.01 / 4 + 1e-12);

    // the persisted state restores the same exits and thresholds in a new learner; a foreign state is discarded
    const saved = structuredClone(l.state());
    const l2 = new Learner(lm, { minSamples: 600, refitAfter: 400, maxCandidates: 4 });
    expect(l2.restore(saved)).toBe(true);
    expect(l2.thresholds).toEqual(l.thresholds);
    expect(l2.fitTarget()).toBeCloseTo(l.fitTarget(), 12);
    expect(l2.status().samplesStored).toBe(800);
    expect(l2.learned?.exits.map((e) => e.cut)).toEqual(learned.exits.map((e) => e.cut));
    const l3 = new Learner(lm, { maxCandidates: 4 });
    expect(l3.restore({ ...saved, reservoir: { ...saved.reservoir, size: 5 } })).toBe(false);
    expect(l3.status().samplesStored).toBe(0);
    const foreign = { ...saved, fitted: { ...saved.fitted!, exits: [{ ...saved.fitted!.exits[0]!, cut: 'nope' }] } };
    expect(l3.restore(foreign)).toBe(false);
    // an exit saved on another cut of a candidate's place (the Add before its Relu; a QDQ pair's float side, where an
    // earlier version cut) still serves: the state is kept, samples included
    const first = lm.analysis.cuts.find((c) => c.tensor === saved.fitted!.exits[0]!.cut)!;
    const twin = lm.analysis.cuts.find((c) => c.macs === first.macs && c.tensor !== first.tensor);
    expect(twin, 'the Fashion model has an Add → Relu place with two cuts').toBeDefined();
    {
      const moved = {
        ...saved,
        fitted: { ...saved.fitted!, exits: [{ ...saved.fitted!.exits[0]!, cut: twin!.tensor }] },
      };
      const l4 = new Learner(lm, { minSamples: 600, refitAfter: 400, maxCandidates: 4 });
      expect(l4.restore({ ...moved, point: undefined })).toBe(true);
      expect(l4.status().samplesStored).toBe(800);
    }

    // a drift alarm (synthetic input statistics) is verified by the audit: passing audits dismiss it, failing ones
    // restart learning on the new traffic
    const rng = createRng(5);
    const feed = (x: Learner, n: number, shift: number): boolean => {
      let alarm = false;
      for (let i = 0; i < n; i++) if (x.observeInput([rng.next() + shift, 1, rng.next(), rng.next()])) alarm = true;
      return alarm;
    };
    for (const agree of [true, false]) {
      const x = new Learner(lm, { minSamples: 600, maxCandidates: 4 });
      expect(x.restore(structuredClone(saved))).toBe(true);
      if (!x.exitsOn) break; // the tightening above switched the exits off: nothing to verify
      expect(feed(x, 1000, 0)).toBe(false);
      expect(feed(x, 200, 0.5)).toBe(true);
      expect(x.status().drift?.verifying).toBe(VERIFY_AUDITS);
      expect(x.wantsFit()).toBe(false); // no fit while verifying
      // a reload in the middle of the verification goes on with it: thresholds as suspected (tightened), the audits
      // left, the raised audit share, no fit meanwhile; a state of the earlier schema (without it) is refused
      x.audited(0, 0);
      const mid = structuredClone(x.state());
      const y = new Learner(lm, { minSamples: 600, maxCandidates: 4, auditShare: 0 });
      expect(y.restore(mid)).toBe(true);
      expect(y.status().drift?.verifying).toBe(VERIFY_AUDITS - 1);
      expect(y.thresholds).toEqual(x.thresholds);
      expect(y.wantsFit()).toBe(false);
      const draws = Array.from({ length: 400 }, () => y.drawCompletion()).filter(Boolean).length;
      expect(draws).toBeGreaterThan(150); // at least VERIFY_SHARE although auditShare is 0
      const { verifying: _v, ...older } = mid;
      expect(new Learner(lm, { maxCandidates: 4 }).restore(older as LearnerState)).toBe(false);
      expect(new Learner(lm, { maxCandidates: 4 }).restore({ ...mid, verifying: VERIFY_AUDITS + 1 })).toBe(false);
      for (let i = 0; i < VERIFY_AUDITS && x.exitsOn; i++) x.audited(0, agree ? 0 : 1);
      const st2 = x.status();
      expect(st2.drift?.verifying).toBe(0); // dismissed, or confirmed at the first failure
      expect(st2.drift?.restarts).toBe(agree ? 0 : 1);
      expect(st2.exitsOn).toBe(agree);
      // either way the samples start again from the new traffic: dismissed, the exits serve on while samples are drawn
      // at VERIFY_SHARE at least until a fit on the new traffic is adopted (which may happen without exits)
      expect(st2.samplesStored).toBe(0);
      expect(st2.drift?.relearning).toBe(agree);
      if (agree) {
        const x2 = new Learner(lm, { minSamples: 600, maxCandidates: 4, auditShare: 0, learnShare: 0 });
        expect(x2.restore(structuredClone(x.state()))).toBe(true);
        expect(x2.status().drift?.relearning).toBe(true);
        const drawn = Array.from({ length: 400 }, () => x2.drawCompletion()).filter(Boolean).length;
        expect(drawn).toBeGreaterThan(150);
        expect(x.wantsFit()).toBe(false);
        await stream(x, 0, 600);
        expect(x.wantsFit()).toBe(true);
        await x.fit();
        expect(x.status().drift?.relearning).toBe(false);
      }
    }
  }, 120_000);

  it('takes a device plan’s measured times as the fits’ cost table (planCostTable, as costTableFromPlan)', () => {
    const manifest = {
      segments: [
        { macs: 300, headMacs: 100, exit: 0 },
        { macs: 500, headMacs: 0, exit: 1 },
        { macs: 200, headMacs: 0 },
      ],
      exits: [
        { cut: 'a', segment: 0 },
        { cut: 'b', segment: 1 },
      ],
    } as unknown as BundleManifest;
    const table = (heads: Record<string, number>, overhead: number) => ({
      unit: 'ms',
      backbone: 10,
      cuts: { a: 3, b: 8 },
      heads,
      overhead,
    });
    // a plan of the stage engine (no exitMs): each segment's time split between backbone and fused head by MACs
    const staged = { stageMs: [4, 5, 2], decisionMs: [0.5, 0.3, 0] };
    expect(planCostTable(manifest, staged)).toEqual(table({ a: 1, b: 0 }, 0.4));
    // a plan of the compiled engine: stageMs hold the backbone only, each exit's measured cost is its head's
    const compiled = { stageMs: [3, 5, 2], decisionMs: [0, 0, 0], exitMs: [0.2, 0.1, 0] };
    expect(planCostTable(manifest, compiled)).toEqual(table({ a: 0.2, b: 0.1 }, 0));
    expect(planCostTable(manifest, compiled)).toEqual(costTableFromPlan(manifest, { timings: compiled }));
    // timings that do not fit the manifest, or give no time: undefined (the fits select by MACs)
    expect(planCostTable(manifest, { stageMs: [1], decisionMs: [0] })).toBeUndefined();
    expect(planCostTable(manifest, { ...compiled, exitMs: [0.2, 0.1] })).toBeUndefined();
    expect(planCostTable(manifest, { ...compiled, exitMs: [0.2, Number.NaN, 0] })).toBeUndefined();
    expect(planCostTable(manifest, { stageMs: [0, 0, 0], decisionMs: [0, 0, 0] })).toBeUndefined();
  });

  it('selects exits by a cost table of measured times when one exists, else by MACs', async () => {
    // measured costs that make every cut as dear as the whole model: no exit pays off, where MACs found some
    const lm = await fashion();
    const l = new Learner(lm, { minSamples: 600, maxCandidates: 4, headKinds: ['pool-linear'] });
    await stream(l, 0, 700);
    const { learned: byMacs } = await l.fit();
    expect(byMacs.exits.length).toBeGreaterThan(0);
    expect([byMacs.summary.costUnit, l.status().fitCosts]).toEqual(['macs', 'macs']);
    const cuts = Object.fromEntries(lm.requests.map((r) => [r.cut.tensor, 1]));
    l.costTable = { unit: 'ms', backbone: 1, cuts, overhead: 0.01 };
    const { learned: byTime } = await l.fit();
    expect([byTime.summary.costUnit, l.status().fitCosts]).toEqual(['ms', 'ms']);
    expect(byTime.exits).toEqual([]);
  }, 120_000);

  it('rejects bytes that are no model', async () => {
    const e = await analyseForLearning(new Uint8Array([1, 2, 3]), ortNode, {}).catch((x: unknown) => x);
    expect(isSelfxitError(e, 'INVALID_MODEL')).toBe(true);
  });
});

describe('learner targets, adoption and counters', () => {
  const opts = { minSamples: 600, maxCandidates: 4, headKinds: ['pool-linear' as const] };
  /** The thresholds a calibration serves at `target`: its curve's pick (policy/curve.ts), all NEVER_EXIT when that is
   * the backbone-only point or none meets the target. */
  const servedAt = (c: CalibrationSummary, exits: number, target: number): number[] => {
    const { point, reached } = pickCurvePoint(c.curve, target, { samples: c.samples, exits });
    const backbone = point.exitShares[point.exitShares.length - 1] === 1;
    return reached && !backbone ? [...point.thresholds] : new Array<number>(exits).fill(NEVER_EXIT);
  };

  it('serves a bundle’s or a restored state’s exits at the learner’s target, and re-fits when it differs', async () => {
    const lm = await fashion();
    const l = new Learner(lm, opts);
    await stream(l, 0, 700);
    const { learned } = await l.fit();
    const n = learned.exits.length;
    expect(n).toBeGreaterThan(0);
    const { manifest } = await assembleLearned(lm, modelBytes, learned, l.options, false);
    const bundle = { manifest, hash: 'h' };
    const c = manifest.calibration;
    const shipped = manifest.exits.map((e) => e.threshold);
    expect(c.target).toBe(0.99);
    // the bundle's own target: its thresholds, and the first fit waits for as many samples as it was calibrated on
    const same = new Learner(lm, opts, bundle);
    expect(same.thresholds).toEqual(shipped);
    await stream(same, 0, 650);
    expect(same.wantsFit()).toBe(false);
    // another target: the cheapest point of the bundle's curve that meets it (exits off if none), and a re-fit wanted
    for (const target of [0.97, 0.995]) {
      const other = new Learner(lm, { ...opts, target }, bundle);
      expect(other.thresholds).toEqual(servedAt(c, n, target));
      expect(other.status().target).toBe(target);
      await stream(other, 0, 650);
      expect(other.wantsFit()).toBe(true);
      other.reset(); // back to the bundle's exits, at the learner's target
      expect(other.thresholds).toEqual(servedAt(c, n, target));
      await stream(other, 0, 650);
      expect(other.wantsFit()).toBe(true);
    }
    const looser = new Learner(lm, { ...opts, target: 0.97 }, bundle);
    expect(looser.exitsOn).toBe(true);
    expect(looser.status().macsFraction).toBeLessThan(c.expectedMacsFraction); // not vacuous: the point moved
    // a restored state saved at another target (or without one: saved before it was stored) is treated the same way
    const saved = structuredClone(l.state());
    expect(saved.target).toBe(0.99);
    const kept = new Learner(lm, opts);
    expect(kept.restore(structuredClone(saved))).toBe(true);
    expect(kept.thresholds).toEqual(l.thresholds);
    expect(kept.wantsFit()).toBe(false);
    for (const [target, state] of [
      [0.97, saved],
      [0.99, { ...saved, target: undefined }],
    ] as const) {
      const r = new Learner(lm, { ...opts, target });
      expect(r.restore(structuredClone(state))).toBe(true);
      expect(r.thresholds).toEqual(servedAt(learned.summary, n, target));
      expect(r.wantsFit()).toBe(true);
      expect(r.status().fits).toBe(1);
    }
    // a bundle learner's state, restored at another target
    const fromBundle = structuredClone(same.state());
    const b2 = new Learner(lm, { ...opts, target: 0.97 }, bundle);
    expect(b2.restore(fromBundle)).toBe(true);
    expect(b2.thresholds).toEqual(servedAt(c, n, 0.97));
  }, 120_000);

  it('adopts no fit started before a drift alarm or a reset; counts fits and samples honestly', async () => {
    const lm = await fashion();
    const l = new Learner(lm, opts);
    await stream(l, 0, 700);
    expect(l.fitsStarted).toBe(0);
    expect((await l.fit()).adopted).toBe(true);
    expect(l.exitsOn).toBe(true);
    await stream(l, 700, 300); // the next fit sees other samples (other exits or thresholds)
    const rng = createRng(9);
    const feed = (n: number, shift: number): boolean => {
      let alarm = false;
      for (let i = 0; i < n; i++) if (l.observeInput([rng.next() + shift, 1, rng.next(), rng.next()])) alarm = true;
      return alarm;
    };
    expect(feed(1000, 0)).toBe(false);
    /** A fit runner held until `release()`. */
    const held = (): { runner: FitRunner; release: () => void } => {
      let release = (): void => {};
      const gate = new Promise<void>((r) => (release = r));
      return { runner: async (job, p) => (await gate, fitLearned(job, p)), release: () => release() };
    };
    const h1 = held();
    const running = l.fit(undefined, h1.runner);
    expect(l.fitsStarted).toBe(2); // numbered as it starts
    expect(l.status().fitting).toBe(true);
    expect(feed(200, 0.5)).toBe(true); // a drift alarm while it runs
    const alarmed = l.thresholds;
    for (let i = 0; i < 5; i++) l.audited(0, 0);
    h1.release();
    const out = await running;
    // not adopted: the alarm's tightening and its verification go on
    expect(l.thresholds).toEqual(alarmed);
    expect(l.status().audit.audited).toBe(5);
    expect(l.status().drift?.verifying).toBe(VERIFY_AUDITS - 5);
    expect(l.status()).toMatchObject({ fits: 1, fitsDropped: 1 });
    expect(out.adopted).toBe(false);
    // restored mid-verification from a state of another target: re-picked at this target (the fit's own thresholds,
    // as policy/curve.ts gives back a calibration's), then tightened again as the alarm did
    const mid = new Learner(lm, opts);
    expect(mid.restore({ ...structuredClone(l.state()), target: 0.97 })).toBe(true);
    expect(mid.fitTarget()).toBe(0.99);
    expect(mid.thresholds).toEqual(alarmed);
    expect(mid.status().drift?.verifying).toBe(VERIFY_AUDITS - 5);
    // a confirmed drift empties the reservoir, not the count of samples seen
    for (let i = 0; i < VERIFY_AUDITS && l.status().drift?.restarts === 0; i++) l.audited(0, 1);
    const st = l.status();
    expect(st.drift?.restarts).toBe(1);
    expect(st.samplesStored).toBe(0);
    expect(st.samplesSeen).toBe(1000);
    const restored = new Learner(lm, opts);
    expect(restored.restore(structuredClone(l.state()))).toBe(true);
    expect(restored.status()).toMatchObject({ samplesSeen: 1000, fits: 1, fitsDropped: 1 });
    expect(restored.fitsStarted).toBe(2);
    // a fit running at reset() is not adopted; the reset forgets the counters too
    await stream(l, 0, 700);
    const h2 = held();
    const again = l.fit(undefined, h2.runner);
    l.reset();
    h2.release();
    const dropped = await again;
    const r = l.status();
    expect([r.fits, r.fitsDropped, r.exitsOn, r.samplesSeen, l.fitsStarted]).toEqual([0, 0, false, 0, 0]);
    expect(dropped.adopted).toBe(false);
    expect([r.drift?.restarts, r.drift?.alarms]).toEqual([0, 0]);
    expect(r.lastFitSeconds).toBeUndefined();
  }, 120_000);
});

describe('learner on an int8 model', () => {
  it('stores the dequantized maps of uint8 cuts (QOperator; QDQ models are cut on their quantized side too)', async () => {
    const lm = await analyseForLearning(encodeModel(qopClassifier()), ortNode, { input: { mean: [0], std: [1] } });
    expect(lm.requests.length).toBeGreaterThan(0);
    for (const r of lm.requests) expect(r.cut.dequant?.dtype).toBe('uint8');
    const l = new Learner(lm, { maxCandidates: 4 });
    const s = await ort.InferenceSession.create(encodeModel(l.featureModel()));
    try {
      const rows = 20;
      const rand = createRng(5);
      const x = new ort.Tensor(
        'float32',
        Float32Array.from({ length: rows * 3 * 64 }, () => rand.next()),
        [rows, 3, 8, 8],
      );
      const r = l.fromRun(await s.run({ x }), rows, true);
      expect(r.index).toHaveLength(rows);
      expect(l.samplesSeen).toBe(rows);
    } finally {
      await s.release();
    }
  });
});

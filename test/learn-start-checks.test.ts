// What a learner checks and decides as it starts: a byte cap that cannot hold minSamples samples is refused; a bundle
// learning starts from serves only thresholds its calibration certifies at the learner's target.
import { describe, expect, it } from 'vitest';
import { analyseForLearning, Learner } from '../src/learn/learner.js';
import { learnFitOptions } from '../src/learn/fit.js';
import { chooseThresholds } from '../src/page/target.js';
import { resolveLearnOptions } from '../src/learn/learn-options.js';
import { resolvePrepareOptions } from '../src/calibrate/prepare-options.js';
import { poolingRequests, sizeHeadsForClasses } from '../src/calibrate/prepare-features.js';
import { candidateCuts } from '../src/calibrate/candidate-cuts.js';
import { encodeModel } from '../src/graph/index.js';
import { imagenetMobileNet, MOBILE_NORM } from './fixtures/mobile-graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { fakeLearnModel } from './fixtures/fake-learn-model.js';
import type { BundleManifest, CalibrationSummary, CurvePoint } from '../src/bundle/manifest.js';

/** A bundle manifest with two exits at 0.9, calibrated in `mode` at target 0.99 on 2,000 samples in 5 folds. */
function bundle(mode: 'paper' | 'selfxit', curve: CurvePoint[]): { manifest: BundleManifest; hash: string } {
  const calibration = {
    mode,
    target: 0.99,
    samples: 2000,
    folds: 5,
    validationAgreement: 0.95,
    expectedMacsFraction: 0.6,
    curve,
  } as unknown as CalibrationSummary;
  const manifest = { exits: [{ threshold: 0.9 }, { threshold: 0.9 }], calibration } as unknown as BundleManifest;
  return { manifest, hash: 'h' };
}

describe('learner start', () => {
  it('refuses a byte cap that holds fewer samples than minSamples (it would never fit)', () => {
    const model = fakeLearnModel();
    // 352 bytes a sample (40 of them the key's entry in the index): 512 KiB hold 1,489 < 2,000
    expect(() => new Learner(model, { maxBytes: 512 * 1024 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/minSamples 2000/) }),
    );
    expect(new Learner(model, { maxBytes: 512 * 1024, minSamples: 1400 }).reservoir.capacity).toBe(1489);
    expect(new Learner(model, { maxBytes: 352 * 2000 }).reservoir.capacity).toBe(2000);
  });

  it('serves a paper-mode bundle only at a curve point certified at the target, never at its fixed threshold', () => {
    const model = fakeLearnModel();
    // paper mode records target 0.99 but ships 0.9, certifying nothing (0.95 on its own samples)
    const none = new Learner(model, {}, bundle('paper', []));
    expect([none.exitsOn, none.state().refitWanted]).toEqual([false, true]);
    const point = (agreement: number, t: number, macsFraction: number): CurvePoint => ({
      knob: t,
      thresholds: [t, t],
      agreement,
      macsFraction,
      exitShares: [0.3, 0.3, 0.4],
    });
    const curve = [point(0.95, 0.9, 0.6), point(1, 0.999, 0.8)]; // 400 held out of 400: bound above 0.99
    const certified = new Learner(model, {}, bundle('paper', curve));
    expect([certified.exitsOn, certified.thresholds, certified.status().expectedAgreement]).toEqual([
      true,
      [0.999, 0.999],
      1,
    ]);
    // paper mode measures its curve on the held-out fold alone (400 of the 2,000): 0.995 there is 2 misses in 400,
    // whose bound is below 0.99 (10 in 2,000 would pass); a manifest recording the count reads it
    const held = [point(0.95, 0.9, 0.6), point(0.995, 0.95, 0.7)];
    const uncertified = new Learner(model, {}, bundle('paper', held));
    expect([uncertified.exitsOn, uncertified.state().refitWanted]).toEqual([false, true]);
    const recorded = bundle('paper', held);
    const m = {
      ...recorded.manifest,
      calibration: { ...recorded.manifest.calibration, validationSamples: 400, folds: 2 },
    };
    expect(new Learner(model, {}, { manifest: m, hash: 'h' }).exitsOn).toBe(false);
    // the page's setTarget() picks from the same curve with the same n
    expect(chooseThresholds(recorded.manifest, 0.99).reached).toBe(false);
    expect(chooseThresholds(bundle('selfxit', held).manifest, 0.99).reached).toBe(true);
    // a SelfXit bundle at the learner's target serves its own thresholds
    const selfxit = new Learner(model, {}, bundle('selfxit', curve));
    expect([selfxit.exitsOn, selfxit.thresholds, selfxit.state().refitWanted]).toEqual([true, [0.9, 0.9], false]);
  });

  it('sizes the heads of a 1,000-class model as prepare does: pool-mlp within 1.25 % of the backbone, global max pooling', async () => {
    const lm = await analyseForLearning(encodeModel(imagenetMobileNet()), ortNode, { input: MOBILE_NORM });
    const o = resolveLearnOptions();
    const { o: fit, note } = learnFitOptions(o, lm.analysis, lm.io.classes);
    // prepare's sizing of the same model at its defaults
    const prep = sizeHeadsForClasses(resolvePrepareOptions({}), {}, lm.analysis.cuts, 1000, lm.analysis.params).o;
    expect(fit.headKinds).toEqual(['pool-mlp']);
    expect([fit.hidden, fit.maxPoolGrid]).toEqual([prep.hidden, prep.maxPoolGrid]);
    expect(fit.hidden).toBeLessThan(resolvePrepareOptions({}).hidden);
    expect(note).toMatch(/^1000 classes: pool-mlp heads of width/);
    // the reservoir pools as those heads read (no 2×2 max grid beside the average pooling)
    expect(lm.requests).toEqual(poolingRequests(candidateCuts(lm.analysis.cuts, o.maxCandidates), fit));
    expect(new Learner(lm).status().headSizing).toBe(note);
    // learn.headKinds chosen: as given (prepare's rule for a caller's choice)
    expect(learnFitOptions(resolveLearnOptions({ headKinds: ['pool-linear'] }), lm.analysis, 1000).o.headKinds).toEqual(
      ['pool-linear'],
    );
  }, 60_000);
});

// What a learner checks and decides as it starts: a byte cap that cannot hold minSamples samples is refused; a bundle
// learning starts from serves only thresholds its calibration certifies at the learner's target.
import { describe, expect, it } from 'vitest';
import { Learner } from '../src/learn/learner.js';
import { fakeLearnModel } from './fixtures/fake-learn-model.js';

describe('learner start', () => {
  it('refuses a byte cap that holds fewer samples than minSamples (it would never fit)', () => {
    const model = fakeLearnModel();
    // 312 bytes a sample: 512 KiB hold 1,680 < 2,000
    expect(() => new Learner(model, { maxBytes: 512 * 1024 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/minSamples 2000/) }),
    );
    expect(new Learner(model, { maxBytes: 512 * 1024, minSamples: 1600 }).reservoir.capacity).toBe(1680);
    expect(new Learner(model, { maxBytes: 312 * 2000 }).reservoir.capacity).toBe(2000);
  });
});

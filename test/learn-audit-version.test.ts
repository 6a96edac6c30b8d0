// The learner judges an audited input against the exits and thresholds it was served by (Learner.auditedAt): one
// served before a change (a tightening among the audits before it) counts for nothing in the audit; the learner's
// persisted state names the target it was learned for.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { analyseForLearning, Learner } from '../src/learn/learner.js';
import { ortNode } from './fixtures/ort-helpers.js';

const dir = path.resolve(import.meta.dirname, '../public/models/fashion-resnet');

/** A bundle of two exits at 0.9 whose curve has a stricter point: learning starts serving them. */
const bundle = {
  manifest: {
    exits: [{ threshold: 0.9 }, { threshold: 0.9 }],
    calibration: {
      samples: 100,
      target: 0.99,
      validationAgreement: 0.98,
      expectedMacsFraction: 0.5,
      curve: [
        { knob: 0.95, thresholds: [0.95, 0.95], agreement: 0.995, macsFraction: 0.7, exitShares: [0.2, 0.2, 0.6] },
      ],
    },
  } as unknown as BundleManifest,
  hash: 'b',
};

describe('Learner.auditedAt', () => {
  it('judges an audit only against the exits it was served by: after a tightening, earlier-served ones are samples only', async () => {
    const lm = await analyseForLearning(new Uint8Array(fs.readFileSync(path.join(dir, 'model.onnx'))), ortNode, {
      input: { mean: [0.286], std: [0.353] },
      learn: {},
    });
    const l = new Learner(lm, { minAudits: 5, target: 0.99 }, bundle);
    expect(l.exitsOn).toBe(true);
    const servedAt = l.version;
    // 20 inputs served at once, every one disagreeing: the audit fails after its minimum, the thresholds tighten
    const tightened = Array.from({ length: 20 }, () => l.auditedAt(servedAt, 0, 1));
    expect(tightened.filter(Boolean)).toHaveLength(1);
    const at = tightened.indexOf(true);
    expect(l.version).toBeGreaterThan(servedAt);
    expect(l.thresholds).toEqual([0.95, 0.95]);
    // the ones after it were served at the looser thresholds: not counted against the stricter point
    expect(l.status().audit.totalAudited).toBe(at + 1);
    expect(l.status().tightenings).toBe(1);
    // served at the version in force: counted
    expect(l.auditedAt(l.version, 1, 1)).toBe(false);
    expect(l.status().audit.totalAudited).toBe(at + 2);
    expect(l.state().target).toBe(0.99);
  }, 60_000);
});

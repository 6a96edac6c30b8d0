// Options that would be ignored or misread are refused: selfxit-only options in paper mode, `exits` of which none can
// hold an exit, and cost tables whose cut costs exceed the backbone or decrease along the model.
import { describe, expect, it } from 'vitest';
import { resolvePrepareOptions } from '../src/calibrate/prepare-options.js';
import { namedExitCuts } from '../src/calibrate/candidate-cuts.js';
import { prepare } from '../src/calibrate/prepare.js';
import { checkCostTable } from '../src/policy/cost-table.js';
import { analyzeModel, encodeModel } from '../src/graph/index.js';
import { isSelfxitError } from '../src/errors.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';

function error(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isSelfxitError(e) ? `${e.code}: ${e.message}` : `not typed: ${String(e)}`;
  }
  return 'no error';
}

describe('paper mode', () => {
  it('refuses the options only selfxit mode reads, naming them with their flags', () => {
    for (const [o, named] of [
      [{ hidden: 8 }, /hidden \(--hidden\)/],
      [{ capacity: 'fixed' }, /capacity \(--capacity\)/],
      [{ maxFeatures: 64 }, /maxFeatures \(--max-features\)/],
      [{ thresholdRule: 'global' }, /thresholdRule \(--threshold-rule\)/],
      [{ target: 0.95 }, /target \(--target\)/],
      [{ maxCandidates: 4, shortlist: 2 }, /maxCandidates \(--max-candidates\), shortlist apply/],
      [{ headKinds: ['pool-linear'] }, /headKinds other than "paper" \(--heads\)/],
    ] as const) {
      const got = error(() => resolvePrepareOptions({ mode: 'paper', ...o }));
      expect(got).toMatch(/^INVALID_ARGUMENT: paper mode has fixed paper heads, exits and one threshold/);
      expect(got).toMatch(named);
    }
    // what paper mode reads stays accepted
    const ok = resolvePrepareOptions({ headKinds: ['paper'], threshold: 0.8, folds: 3, seed: 2, temperature: 2 });
    expect(ok).toMatchObject({ mode: 'paper', threshold: 0.8, folds: 3 });
    expect(resolvePrepareOptions({ mode: 'paper', headKinds: ['paper'] }).mode).toBe('paper');
  });
});

describe('exits that cannot hold an exit', () => {
  it('are skipped with a warning, and refused with INVALID_CUT when none is left', async () => {
    const { cuts } = await analyzeModel(tinyClassifier(), { ort: ortNode });
    const warnings: string[] = [];
    expect(namedExitCuts(cuts, ['gap', 'block1'], warnings).map((c) => c.tensor)).toEqual(['block1']);
    expect(warnings).toEqual([expect.stringMatching(/^"gap" cannot hold an exit \(not a 4-D map .*\); skipped$/)]);
    expect(error(() => namedExitCuts(cuts, ['gap', 'block4'], []))).toMatch(
      /^INVALID_CUT: none of the exits named can hold an exit \("block4", "gap": not a 4-D map .*\); candidates: block1, block2, block3$/,
    );
  });

  it('make prepare fail before any work rather than report that no exit pays off', async () => {
    for (const mode of ['selfxit', 'paper'] as const) {
      const run = prepare({
        model: encodeModel(tinyClassifier()),
        samples: { data: blobImages(200, 8, 8, 3), count: 200 },
        ort: ortNode,
        mode,
        exits: ['gap'],
        ...(mode === 'selfxit' ? { target: 0.9 } : {}),
      });
      await expect(run).rejects.toMatchObject({ code: 'INVALID_CUT', message: /none of the exits named/ });
    }
  });
});

describe('cost tables', () => {
  const order = ['a', 'b', 'c'];
  it('refuse a cut costing more than the backbone, and cut costs decreasing along the model', () => {
    expect(error(() => checkCostTable({ backbone: 0.5, cuts: { a: 0.9 } }))).toMatch(
      /^INVALID_ARGUMENT: cost table: cuts\["a"\] is 0.9, more than the whole backbone \(0.5\)/,
    );
    expect(error(() => checkCostTable({ backbone: 1, cuts: { a: 0.5, c: 0.2 } }, order))).toMatch(
      /^INVALID_ARGUMENT: cost table: cuts\["c"\] \(0.2\) is less than cuts\["a"\] \(0.5\) before it/,
    );
    expect(error(() => checkCostTable({ backbone: 1, cuts: { a: 0.2, b: 0.2, c: 1 } }, order))).toBe('no error');
  });
});

describe('integer options', () => {
  it('take Infinity only where it means no limit (limit, maxCandidates, shortlist, maxFeatureBytes)', () => {
    const all = { limit: Infinity, maxCandidates: Infinity, shortlist: Infinity, maxFeatureBytes: Infinity };
    const o = resolvePrepareOptions(all);
    expect([o.limit, o.maxCandidates, o.shortlist, o.maxFeatureBytes]).toEqual([
      Infinity,
      Infinity,
      Infinity,
      Infinity,
    ]);
    // elsewhere it failed late (hidden: in head training after the backbone pass) or read oddly ("at least Infinity
    // samples" for folds): refused at once
    for (const name of ['hidden', 'folds', 'maxFeatures', 'batchSize', 'curvePoints', 'maxPoolGrid'])
      expect(error(() => resolvePrepareOptions({ [name]: Infinity }))).toMatch(
        new RegExp(`^INVALID_ARGUMENT: ${name} must be an integer >= \\d+, got Infinity$`),
      );
    expect(error(() => resolvePrepareOptions({ shortlist: 2.5 }))).toBe(
      'INVALID_ARGUMENT: shortlist must be an integer >= 0 or Infinity, got 2.5',
    );
    expect(error(() => resolvePrepareOptions({ limit: 0 }))).toBe(
      'INVALID_ARGUMENT: limit must be an integer >= 1 or Infinity, got 0',
    );
  });
});

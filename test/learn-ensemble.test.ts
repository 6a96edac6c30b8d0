// The `learn.ensemble` option (issue 15): its range check, its way into the learning fit's prepare options, and a fit
// on the shipped Fashion-MNIST model whose pool-mlp heads are ensembles (one MLP that many times as wide).
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { encodeModel } from '../src/graph/index.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { DEFAULT_HIDDEN } from '../src/calibrate/train-head.js';
import { analyseForLearning, fitLearned, Learner } from '../src/learn/learner.js';
import { learnFitOptions } from '../src/learn/fit.js';
import { resolveLearnOptions } from '../src/learn/learn-options.js';
import { resolveLoadOptions } from '../src/page/options.js';
import { ortNode } from './fixtures/ort-helpers.js';
import type { BundleExit } from '../src/bundle/write-bundle.js';

const dir = path.resolve(import.meta.dirname, '../public/models/fashion-resnet');
const modelBytes = new Uint8Array(fs.readFileSync(path.join(dir, 'model.onnx')));
const calib = new Uint8Array(fs.readFileSync(path.join(dir, 'calib-u8.bin')));
const input = { mean: [0.286], std: [0.353] };

describe('learn.ensemble', () => {
  it('defaults to 1, takes integers in [1, 5] and refuses the rest (INVALID_ARGUMENT), misspelt or not', () => {
    expect(resolveLearnOptions().ensemble).toBe(1);
    expect(resolveLearnOptions({ ensemble: 3 }).ensemble).toBe(3);
    expect(resolveLearnOptions({ ensemble: 5 }).ensemble).toBe(5);
    for (const ensemble of [0, 6, 2.5, -1, Number.NaN, '2'])
      expect(() => resolveLearnOptions({ ensemble } as never)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('learn.ensemble') }),
      );
    // load() checks it before anything starts, and a misspelt key names the option meant
    expect(resolveLoadOptions('https://x.example/b/', { learn: { ensemble: 3 } }).init.learn?.options).toMatchObject({
      ensemble: 3,
    });
    expect(() => resolveLoadOptions('https://x.example/b/', { learn: { ensemble: 9 } })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => resolveLoadOptions('https://x.example/b/', { learn: { ensembel: 3 } as never })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('did you mean ensemble') }),
    );
  });

  it('reaches the fit as prepare’s ensemble option', async () => {
    const lm = await analyseForLearning(modelBytes, ortNode, { input });
    for (const ensemble of [1, 3])
      expect(learnFitOptions(resolveLearnOptions({ ensemble }), lm.analysis, lm.io.classes).o.ensemble).toBe(ensemble);
  });

  it('fits pool-mlp heads twice as wide with ensemble 2, on the same samples; a state keeps across settings', async () => {
    const learn = { minSamples: 600, maxCandidates: 2, headKinds: ['pool-mlp'] as const };
    const lm = await analyseForLearning(modelBytes, ortNode, { input, learn });
    const l = new Learner(lm, { ...learn, ensemble: 2 });
    const s = await ort.InferenceSession.create(encodeModel(l.featureModel()));
    const spec = lm.io.input;
    try {
      for (let at = 0; at < 800; at += 100) {
        const x = new ort.Tensor('float32', toModelInput({ data: calib, count: 800 }, at, 100, spec).slice(), [
          ...inputDims(spec, 100),
        ]);
        l.fromRun(await s.run({ [spec.name]: x }), 100, true);
      }
    } finally {
      await s.release();
    }
    const hidden = (exits: readonly BundleExit[]): number[] => {
      expect(exits.length).toBeGreaterThan(0);
      return exits.map((e) => {
        expect(e.head.layers).toHaveLength(2);
        expect(e.head.layers[1]!.in).toBe(e.head.layers[0]!.out);
        return e.head.layers[0]!.out;
      });
    };
    const h = DEFAULT_HIDDEN['pool-mlp'];
    // 800 rows: every configuration of the capacity ladder is `hidden` wide (its 2·hidden rung needs 30,000 rows)
    const { learned: two } = await l.fit(); // the learner's own path (its options into the fit job)
    expect(two.summary.samples).toBe(800);
    for (const w of hidden(two.exits)) expect(w).toBe(2 * h);
    const features = await l.reservoir.snapshot(async () => undefined);
    const options = resolveLearnOptions({ ...learn, ensemble: 1 });
    const one = await fitLearned({ analysis: lm.analysis, io: lm.io, requests: lm.requests, options, features });
    for (const w of hidden(one.exits)) expect(w).toBe(h);
    // a state fit with ensemble 2 serves in a learner set to 1 (its heads are plain MLPs): restored, not discarded
    const other = new Learner(lm, { ...learn, ensemble: 1 });
    expect(other.restore(l.state())).toBe(true);
    expect(other.status().exits).toBe(two.exits.length);
    expect(other.status().thresholds).toEqual(l.status().thresholds);
  }, 180_000);
});

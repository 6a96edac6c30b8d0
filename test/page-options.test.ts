// load()'s `learn` option is checked on the page, before a worker starts or anything is fetched: the learner's ranges
// (learn/learn-options.ts) and its names (a misspelt key is refused rather than silently left at its default).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { load } from '../src/page/classifier.js';
import { resolveLoadOptions } from '../src/page/options.js';
import type { LearnLoadOptions } from '../src/types.js';

afterEach(() => vi.unstubAllGlobals());

const MODEL = 'https://x.test/m/model.onnx';
const BUNDLE = 'https://x.test/b/';
const learnOf = (learn: LearnLoadOptions | boolean, url = MODEL) => resolveLoadOptions(url, { learn }).init.learn;

describe('load() learn options', () => {
  it('a misspelt learn option is refused, naming the one meant', () => {
    const bad = { auditshare: 0.1 } as unknown as LearnLoadOptions;
    expect(() => learnOf(bad)).toThrow(
      expect.objectContaining({
        code: 'INVALID_ARGUMENT',
        message: 'learn.auditshare is not a learn option (did you mean auditShare?)',
      }),
    );
    const unknown = { warmup: 3 } as unknown as LearnLoadOptions;
    expect(() => learnOf(unknown, BUNDLE)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: 'learn.warmup is not a learn option' }),
    );
  });

  it('out-of-range learn options are refused on the page', () => {
    expect(() => learnOf({ auditShare: 2 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => learnOf({ minSamples: 500, maxSamples: 400 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => learnOf({ target: 1.5 })).toThrow(expect.objectContaining({ code: 'INVALID_TARGET' }));
  });

  it('learn.output names the class scores of a plain model with several outputs; a bundle brings its own', () => {
    expect(learnOf({ output: 'logits' })).toMatchObject({ output: 'logits', options: {} });
    expect(() => learnOf({ output: 'logits' }, BUNDLE)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/learn\.output/) }),
    );
    expect(() => learnOf({ output: '' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('valid options pass as given (the page keys apart), for the worker to apply', () => {
    const learn: LearnLoadOptions = {
      minSamples: 600,
      maxCandidates: 4,
      headKinds: ['pool-linear'],
      input: { mean: [0.286], std: [0.353] },
      labels: ['a', 'b'],
      persist: false,
      corruptAudit: true,
    };
    expect(learnOf(learn)).toEqual({
      options: { minSamples: 600, maxCandidates: 4, headKinds: ['pool-linear'] },
      input: { mean: [0.286], std: [0.353] },
      labels: ['a', 'b'],
      persist: false,
      corruptAudit: true,
    });
    expect(learnOf(true, BUNDLE)).toEqual({ options: {}, fromBundle: true, persist: true });
  });

  it('load() rejects a bad learn option before a worker starts (nothing is fetched)', async () => {
    const started = vi.fn();
    vi.stubGlobal(
      'Worker',
      class {
        constructor() {
          started();
        }
      },
    );
    const bad = { minsamples: 300 } as unknown as LearnLoadOptions;
    await expect(load(MODEL, { learn: bad })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(load(MODEL, { learn: { learnShare: -1 } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(started).not.toHaveBeenCalled();
  });
});

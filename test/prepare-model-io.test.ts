// prepare()'s reading of the model's input and output: several outputs (refused, or one chosen and the rest
// dropped), a Softmax behind shape-only ops, the teacher-row guard, and symbolic image dims fixed from the options.
import { describe, expect, it } from 'vitest';
import { prepare } from '../src/calibrate/prepare.js';
import { analyseForLearning } from '../src/learn/fit.js';
import { checkOutputRows, fitModelIO, LOGITS_CHECK_ROWS, resolveModelIO } from '../src/calibrate/model-io.js';
import { decodeModel, encodeModel, graphInputs, graphOutputs, type OnnxModel } from '../src/graph/index.js';
import { makeNode, makeTensor, makeValueInfo } from '../src/graph/proto.js';
import { isSelfxitError } from '../src/errors.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';

/** tinyClassifier() edited in place by `edit` (its proto is fresh on every call). */
function edited(edit: (g: NonNullable<OnnxModel['proto']['graph']>) => void): OnnxModel {
  const m = tinyClassifier();
  edit(m.proto.graph!);
  return decodeModel(encodeModel(m));
}

const io = (m: OnnxModel, input = {}, output?: string): ReturnType<typeof resolveModelIO> =>
  resolveModelIO(m, { inputs: graphInputs(m), outputs: graphOutputs(m) }, input, output);

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return isSelfxitError(e) ? `${e.code}: ${e.message}` : String(e);
  }
  return undefined;
}

/** An embedding output listed before the logits, and an inner map listed after them. */
const embeddingFirst = (): OnnxModel => edited((g) => g.output!.unshift(makeValueInfo('flat', 'float32', ['N', 16])));
const innerLast = (): OnnxModel => edited((g) => g.output!.push(makeValueInfo('block2', 'float32', ['N', 8, 8, 8])));

const n = 200;
const data = blobImages(n, 8, 8, 3);
const quick = { target: 0.9, headKinds: ['pool-linear'], augment: [], capacity: 'fixed', seed: 1 } as const;

describe('several outputs', () => {
  it('are refused with UNSUPPORTED_MODEL naming them, unless one is chosen', () => {
    expect(codeOf(() => io(embeddingFirst()))).toMatch(
      /^UNSUPPORTED_MODEL: the model has 2 outputs \("flat" \[N, 16\], "logits" \[N, 4\]\).*--output/,
    );
    expect(io(embeddingFirst(), {}, 'logits')).toMatchObject({ output: 'logits', classes: 4 });
    expect(codeOf(() => io(embeddingFirst(), {}, 'nope'))).toMatch(/^INVALID_ARGUMENT: "nope" is not an output/);
    // a single-output model needs no choice; naming its output is fine
    expect(io(tinyClassifier(), {}, 'logits').classes).toBe(4);
  });

  it('learning reads the same choice (learn.output)', async () => {
    const bytes = encodeModel(innerLast());
    await expect(analyseForLearning(bytes, ortNode, { learn: {} })).rejects.toMatchObject({
      code: 'UNSUPPORTED_MODEL',
    });
    const lm = await analyseForLearning(bytes, ortNode, { output: 'logits', learn: {} });
    expect([lm.io.output, lm.io.classes, lm.cannotLearn]).toEqual(['logits', 4, undefined]);
  });

  it('drop the outputs not chosen, so an inner output hides no cut', { timeout: 60_000 }, async () => {
    const fitted = fitModelIO(innerLast(), {}, 'logits');
    expect(graphOutputs(fitted).map((o) => o.name)).toEqual(['logits']);
    const res = await prepare({
      model: encodeModel(innerLast()),
      output: 'logits',
      samples: { data, count: n },
      ort: ortNode,
      ...quick,
    });
    expect(res.manifest.backbone.output).toBe('logits');
    // the same candidates as the model with one output (block2 live to the end would leave only block3)
    expect(res.manifest.calibration.candidates.map((c) => c.name)).toEqual(['block1', 'block2', 'block3']);
    const backbone = decodeModel(res.files.get('backbone.onnx')!);
    expect(graphOutputs(backbone).map((o) => o.name)).toEqual(['logits']);
  });
});

describe('a Softmax output', () => {
  const softmaxThen = (ops: readonly string[]): OnnxModel =>
    edited((g) => {
      g.node!.push(makeNode('Softmax', ['logits'], ['p0'], { axis: 1 }, 'sm'));
      let t = 'p0';
      ops.forEach((op, i) => {
        const inputs = op === 'Reshape' ? [t, 'shape2'] : [t];
        g.node!.push(makeNode(op, inputs, [`p${i + 1}`], op === 'Flatten' ? { axis: 1 } : {}, `n${i}`));
        t = `p${i + 1}`;
      });
      if (ops.includes('Reshape')) g.initializer!.push(makeTensor('shape2', 'int64', [2], [-1, 4]));
      g.output = [makeValueInfo(t, 'float32', ['N', 4])];
    });

  it('is read as probabilities also behind Identity, Reshape and Flatten', () => {
    expect(io(softmaxThen([])).outputKind).toBe('probabilities');
    expect(io(softmaxThen(['Identity'])).outputKind).toBe('probabilities');
    expect(io(softmaxThen(['Reshape', 'Identity', 'Flatten'])).outputKind).toBe('probabilities');
    expect(io(tinyClassifier()).outputKind).toBe('logits');
  });

  it('is checked on the backbone rows: distributions for probabilities, not all distributions for logits', () => {
    const probs = Float32Array.from([0.25, 0.25, 0.5, 0, 0.1, 0.2, 0.3, 0.4]);
    const logits = Float32Array.from([1.5, -2, 0.3, 4, 0.1, 0.2, 0.3, 0.4]);
    expect(() => checkOutputRows(probs, 2, 4, 'probabilities', 'p')).not.toThrow();
    expect(() => checkOutputRows(logits, 2, 4, 'logits', 'l')).not.toThrow();
    // a few rows decide nothing for logits (they can look like distributions by chance); 16 do
    expect(() => checkOutputRows(probs, 2, 4, 'logits', 'p')).not.toThrow();
    const many = Float32Array.from({ length: LOGITS_CHECK_ROWS * 4 }, (_, i) => probs[i % 8]!);
    expect(codeOf(() => checkOutputRows(many, LOGITS_CHECK_ROWS, 4, 'logits', 'p'))).toMatch(
      /^UNSUPPORTED_MODEL: .*looks like probabilities/,
    );
    expect(codeOf(() => checkOutputRows(logits, 2, 4, 'probabilities', 'l'))).toMatch(
      /^UNSUPPORTED_MODEL: .*not a distribution/,
    );
  });

  it('behind an Identity gives a probabilities bundle (prepare)', { timeout: 60_000 }, async () => {
    const res = await prepare({
      model: encodeModel(softmaxThen(['Identity'])),
      samples: { data, count: n },
      ort: ortNode,
      ...quick,
    });
    expect(res.manifest.backbone.outputKind).toBe('probabilities');
  });
});

describe('symbolic image dims', () => {
  const dynamicHW = (): OnnxModel => edited((g) => (g.input = [makeValueInfo('x', 'float32', ['N', 3, 'H', 'W'])]));

  it('are fixed from the sample geometry, and the bundle has them', { timeout: 60_000 }, async () => {
    expect(codeOf(() => io(dynamicHW()))).toMatch(/^INVALID_SAMPLES: .*height is dynamic/);
    expect(graphInputs(fitModelIO(dynamicHW(), { height: 8, width: 8 }))[0]!.shape).toEqual(['N', 3, 8, 8]);
    const res = await prepare({
      model: encodeModel(dynamicHW()),
      input: { height: 8, width: 8 },
      samples: { data, count: n },
      ort: ortNode,
      ...quick,
    });
    expect(res.manifest.input).toMatchObject({ height: 8, width: 8, channels: 3, layout: 'NCHW' });
    expect(res.manifest.exits.length + res.manifest.calibration.candidates.length).toBeGreaterThan(0);
    expect(graphInputs(decodeModel(res.files.get('backbone.onnx')!))[0]!.shape).toEqual(['N', 3, 8, 8]);
  });

  it('need the layout when neither axis 1 nor axis 3 is fixed', () => {
    const nhwc = edited((g) => {
      for (const nd of g.node!) nd.input = nd.input!.map((x) => (x === 'x' ? 'x_nchw' : x));
      g.node!.unshift(makeNode('Transpose', ['x_nhwc'], ['x_nchw'], { perm: [0, 3, 1, 2] }, 'tr'));
      g.input = [makeValueInfo('x_nhwc', 'float32', ['N', 'H', 'W', 'C'])];
    });
    const geometry = { height: 8, width: 8, channels: 3 } as const;
    expect(codeOf(() => io(nhwc, geometry))).toMatch(/^INVALID_ARGUMENT: .*--layout/);
    expect(graphInputs(fitModelIO(nhwc, { ...geometry, layout: 'NHWC' }))[0]!.shape).toEqual(['N', 8, 8, 3]);
  });
});

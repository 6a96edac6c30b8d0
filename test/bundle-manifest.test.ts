// validateManifest (the one manifest check of the browser runtime and of Node): edited manifests are INVALID_BUNDLE
// naming the field, never an INTERNAL error or a wrong reading; eval refuses labels that do not match the backbone.
import { beforeAll, describe, expect, it } from 'vitest';
import { prepare } from '../src/calibrate/prepare.js';
import { evaluateBundle } from '../src/calibrate/evaluate.js';
import { validateManifest, type BundleManifest } from '../src/bundle/manifest.js';
import { encodeModel } from '../src/graph/index.js';
import { isSelfxitError } from '../src/errors.js';
import type { PrepareResult } from '../src/calibrate/prepare.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';

const n = 200;
const data = blobImages(n, 8, 8, 3);
let res: PrepareResult;

beforeAll(async () => {
  res = await prepare({
    model: encodeModel(tinyClassifier()),
    samples: { data, count: n },
    ort: ortNode,
    target: 0.9,
    headKinds: ['pool-linear'],
    augment: [],
    capacity: 'fixed',
  });
}, 60_000);

type Json = Record<string, unknown> & { [k: string]: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The prepared manifest as JSON, edited by `edit`, through validateManifest: the error's code and message. */
function check(edit: (m: Json) => void): string {
  const m = JSON.parse(JSON.stringify(res.manifest)) as Json;
  edit(m);
  try {
    validateManifest(m);
  } catch (e) {
    return isSelfxitError(e) ? `${e.code}: ${e.message}` : `not typed: ${String(e)}`;
  }
  return 'valid';
}

describe('validateManifest', () => {
  it('accepts what prepare writes, with and without exits', () => {
    expect(res.manifest.exits.length).toBeGreaterThan(0);
    expect(check(() => undefined)).toBe('valid');
    expect(res.manifest.backbone.quantized).toBe(false); // a float model (a quantized one: test/quant.test.ts)
    expect(check((m) => (m.backbone.quantized = true))).toBe('valid');
    expect(check((m) => delete m.backbone.quantized)).toBe('valid'); // written before the field: absent
  });

  it.each([
    ['backbone deleted', (m: Json) => delete m.backbone, /backbone missing/],
    ['backbone.output a number', (m: Json) => (m.backbone.output = 3), /backbone.output/],
    ['backbone.outputKind unknown', (m: Json) => (m.backbone.outputKind = 'scores'), /outputKind/],
    ['backbone.quantized a string', (m: Json) => (m.backbone.quantized = 'yes'), /backbone.quantized is "yes"/],
    ['calibration.curve deleted', (m: Json) => delete m.calibration.curve, /calibration.curve must be an array/],
    ['a curve point without thresholds', (m: Json) => delete m.calibration.curve[0].thresholds, /curve\[0\]/],
    ['a threshold as a string', (m: Json) => (m.exits[0].threshold = '0.5'), /threshold "0.5" is not a number/],
    ['2 channels', (m: Json) => (m.input.channels = 2), /1 or 3 channels/],
    ['layout NWHC', (m: Json) => (m.input.layout = 'NWHC'), /layout is "NWHC"/],
    ['height 0', (m: Json) => (m.input.height = 0), /not usable/],
    ['std 0', (m: Json) => (m.input.std = [0, 1, 1]), /std must be > 0/],
    ['mean as strings', (m: Json) => (m.input.mean = ['0.5', '0.5', '0.5']), /mean\/std must be numbers/],
    ['labels not strings', (m: Json) => (m.labels = [1, 2, 3, 4]), /labels/],
    ['segment without output', (m: Json) => delete m.segments[0].output, /lacks input\/output/],
    ['segment macs a string', (m: Json) => (m.segments[0].macs = '5'), /macs and headMacs/],
    ['exit without a cut', (m: Json) => delete m.exits[0].cut, /name and a cut/],
  ])('refuses %s with INVALID_BUNDLE', (_what, edit, message) => {
    const got = check(edit);
    expect(got).toMatch(/^INVALID_BUNDLE: Invalid bundle manifest: /);
    expect(got).toMatch(message);
  });
});

describe('eval', () => {
  it('refuses a manifest whose labels do not match the backbone output', { timeout: 60_000 }, async () => {
    const manifest: BundleManifest = { ...res.manifest, labels: ['a', 'b', 'c'] };
    const run = evaluateBundle({
      bundle: { manifest, files: res.files },
      samples: { data: data.subarray(0, 50 * 8 * 8 * 3), count: 50 },
      ort: ortNode,
    });
    await expect(run).rejects.toMatchObject({ code: 'INVALID_BUNDLE', message: /4 classes per image .* 3 labels/ });
  });
});

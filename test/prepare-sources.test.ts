// Several sample sources and the feature memory cap: `--samples` given more than once (checked first, concatenated
// in order, then shuffled as one), sources of another image size or channel count rejected naming the file, an
// unreadable source failing before any work; prepare's pooled features float32, float16 or fewer cuts under a cap.
import fs from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { describe, expect, it } from 'vitest';
import { byteSizeOption, prepareCommand } from '../src/cli/prepare.js';
import { checkSampleSources, loadSampleSources } from '../src/cli/sample-sources.js';
import { prepare } from '../src/calibrate/prepare.js';
import type { PrepareOptions } from '../src/calibrate/prepare-options.js';
import { encodeModel } from '../src/graph/index.js';
import { isSelfxitError } from '../src/errors.js';
import { cliWith, writePrepareInputs } from './fixtures/cli-helpers.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';

const cli = cliWith({ prepare: prepareCommand });

function writePng(file: string, w: number, h: number, colorType: 0 | 2 | 6 = 6): void {
  const png = new PNG({ width: w, height: h, colorType, inputColorType: 6 });
  for (let i = 0; i < w * h * 4; i++) png.data[i] = (i * 37) & 255;
  fs.writeFileSync(file, PNG.sync.write(png, { colorType, inputColorType: 6 }));
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    expect(isSelfxitError(e), String(e)).toBe(true);
    return { code: (e as { code: string }).code, message: (e as Error).message };
  }
  throw new Error('expected an error, resolved');
}

const shape = { height: 8, width: 8, channels: 3 };

describe('sample sources', () => {
  it('concatenates raw files and folders in the order given', async () => {
    const { dir } = writePrepareInputs('selfxit-sources-');
    const a = path.join(dir, 'a.u8');
    const b = path.join(dir, 'b.u8');
    const all = blobImages(30, 8, 8, 3, 5);
    fs.writeFileSync(a, all.subarray(0, 10 * 192));
    fs.writeFileSync(b, all.subarray(10 * 192));
    const imgs = path.join(dir, 'imgs');
    fs.mkdirSync(imgs);
    writePng(path.join(imgs, 'x.png'), 8, 8, 2);
    writePng(path.join(imgs, 'y.png'), 8, 8, 6);
    const r = await loadSampleSources([b, imgs, a], shape);
    expect(r.count).toBe(32);
    expect(r.sources.map((s) => s.count)).toEqual([20, 2, 10]);
    expect(r.data.subarray(0, 20 * 192)).toEqual(all.subarray(10 * 192));
    expect(r.data.subarray(22 * 192)).toEqual(all.subarray(0, 10 * 192));
    expect(r.files.map((f) => path.basename(f))).toEqual(['x.png', 'y.png']);
  });

  it('rejects a source of another image size or channel count, naming the file (INVALID_SAMPLES)', async () => {
    const { dir, samples } = writePrepareInputs('selfxit-sources-');
    const big = path.join(dir, 'big');
    fs.mkdirSync(big);
    writePng(path.join(big, 'ok.png'), 8, 8);
    writePng(path.join(big, 'large.png'), 16, 16);
    let e = await codeOf(checkSampleSources([samples, big], shape));
    expect(e.code).toBe('INVALID_SAMPLES');
    expect(e.message).toMatch(/large\.png: 16x16x3 images, but .*calib\.u8 holds 8x8x3/);
    const gray = path.join(dir, 'gray');
    fs.mkdirSync(gray);
    writePng(path.join(gray, 'g.png'), 8, 8, 0);
    e = await codeOf(checkSampleSources([samples, gray], shape));
    expect(e.message).toMatch(/g\.png: 8x8x1 images/);
    const odd = path.join(dir, 'odd.u8');
    fs.writeFileSync(odd, new Uint8Array(1000));
    e = await codeOf(checkSampleSources([samples, odd], shape));
    expect(e.code).toBe('INVALID_SAMPLES');
    expect(e.message).toMatch(/odd\.u8: 1000 bytes/);
    const notImage = path.join(dir, 'bad');
    fs.mkdirSync(notImage);
    fs.writeFileSync(path.join(notImage, 'z.png'), 'not a png');
    e = await codeOf(checkSampleSources([samples, notImage], shape));
    expect(e.message).toMatch(/z\.png: not a PNG or JPEG/);
    // one folder alone is still resized, whatever its images' sizes
    expect((await loadSampleSources([big], shape)).count).toBe(2);
  });

  it('reads a JPEG whose size header lies past 64 KiB (large EXIF/ICC blocks), like the decoder does', async () => {
    const { dir } = writePrepareInputs('selfxit-sources-');
    const rgba = Buffer.alloc(8 * 6 * 4, 255);
    for (let i = 0; i < rgba.length; i++) if (i % 4 !== 3) rgba[i] = (i * 53) & 255;
    const plain = Buffer.from(jpeg.encode({ data: rgba, width: 8, height: 6 }, 95).data);
    const app = (marker: number): Buffer => {
      const seg = Buffer.alloc(65002);
      seg[0] = 0xff;
      seg[1] = marker;
      seg.writeUInt16BE(65000, 2);
      return seg;
    };
    const big = Buffer.concat([plain.subarray(0, 2), app(0xe1), app(0xe2), plain.subarray(2)]);
    const imgs = path.join(dir, 'jpgs');
    fs.mkdirSync(imgs);
    fs.writeFileSync(path.join(imgs, 'a.jpg'), plain);
    fs.writeFileSync(path.join(imgs, 'b.jpg'), big);
    const [src] = await checkSampleSources([imgs], shape);
    expect(src!.geometry).toEqual([
      { height: 6, width: 8, channels: 3 },
      { height: 6, width: 8, channels: 3 },
    ]);
    const r = await loadSampleSources([imgs], shape);
    expect(r.data.subarray(192)).toEqual(r.data.subarray(0, 192)); // the same pixels either way
    // cut before its size header: still INVALID_SAMPLES naming the file
    fs.writeFileSync(path.join(imgs, 'b.jpg'), big.subarray(0, 100_000));
    const e = await codeOf(checkSampleSources([imgs], shape));
    expect(e.code).toBe('INVALID_SAMPLES');
    expect(e.message).toMatch(/b\.jpg: not a PNG or JPEG image \(no size header found\)/);
  });

  it('byte sizes for --max-feature-memory', () => {
    expect(byteSizeOption('1.5G', 'x')).toBe(1.5 * 2 ** 30);
    expect(byteSizeOption('800M', 'x')).toBe(800 * 2 ** 20);
    expect(byteSizeOption('4194304', 'x')).toBe(4 * 2 ** 20);
    expect(() => byteSizeOption('3072', 'x')).toThrow(/3072 bytes; give a unit, e\.g\. 3072M/);
    expect(byteSizeOption('500000B', 'x')).toBe(500000); // explicit bytes are taken as such
    expect(byteSizeOption('2kb', 'x')).toBe(2048);
    expect(() => byteSizeOption('lots', 'x')).toThrow(/byte count/);
  });
});

describe('selfxit prepare --samples … --samples …', () => {
  it(
    'two halves of a file give the bundle of the whole file; time and peak memory printed',
    { timeout: 240_000 },
    async () => {
      const { dir, model, samples } = writePrepareInputs('selfxit-sources-');
      const bytes = fs.readFileSync(samples);
      const a = path.join(dir, 'a.u8');
      const b = path.join(dir, 'b.u8');
      fs.writeFileSync(a, bytes.subarray(0, 150 * 192));
      fs.writeFileSync(b, bytes.subarray(150 * 192));
      const one = await cli('prepare', model, '--samples', samples, '--target', '0.9', '--out', path.join(dir, 'one'));
      const two = await cli(
        'prepare',
        model,
        '--samples',
        a,
        '--samples',
        b,
        '--target',
        '0.9',
        '--out',
        path.join(dir, 'two'),
      );
      expect(one.code, one.stderr).toBe(0);
      expect(two.code, two.stderr).toBe(0);
      expect(two.stderr).toMatch(/a\.u8 \(150\) \+ .*b\.u8 \(250\) = 400/);
      expect(two.stdout).toMatch(
        /features: float32, [\d.]+ [KM]B \(800 rows x \d+ cuts; with the 400 sample images \(75\.0 KB\) and a batch of their copies \(12\.0 KB\): [\d.]+ [KM]B of the 1536 MB cap\)/,
      );
      expect(two.stdout).toMatch(/total: [\d.]+ s .* peak memory: \d+ MB/);
      const m1 = JSON.parse(fs.readFileSync(path.join(dir, 'one', 'manifest.json'), 'utf8'));
      const m2 = JSON.parse(fs.readFileSync(path.join(dir, 'two', 'manifest.json'), 'utf8'));
      expect(m2.exits).toEqual(m1.exits);
      expect(m2.calibration.validationAgreement).toBe(m1.calibration.validationAgreement);
    },
  );

  it(
    'images alone over --max-feature-memory: warned at once, before the features, and once',
    { timeout: 240_000 },
    async () => {
      const { dir, model, samples } = writePrepareInputs('selfxit-sources-');
      const out = path.join(dir, 'bundle');
      const r = await cli('prepare', model, '--samples', samples, '--max-feature-memory', '60K', '--out', out);
      expect(r.code, r.stderr).toBe(0);
      const alone = r.stderr.indexOf(
        'warning: Feature memory cap: the 400 sample images (8x8x3: 75.0 KB as uint8) alone exceed the 60.0 KB cap (maxFeatureBytes / --max-feature-memory); they are read',
      );
      expect(alone, r.stderr).toBeGreaterThanOrEqual(0);
      expect(alone).toBeLessThan(r.stderr.indexOf('[features]'));
      expect(r.stderr.split('they are read and held anyway')).toHaveLength(2);
    },
  );

  it('an unreadable source fails before any work, and nothing is written', { timeout: 60_000 }, async () => {
    const { dir, model, samples } = writePrepareInputs('selfxit-sources-');
    const out = path.join(dir, 'bundle');
    const missing = path.join(dir, 'missing.u8');
    const r = await cli('prepare', model, '--samples', samples, '--samples', missing, '--out', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/IO_ERROR.*missing\.u8/);
    expect(r.stderr).not.toMatch(/\[features\]/);
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('prepare under a feature memory cap', () => {
  const model = encodeModel(tinyClassifier());
  const n = 400;
  const data = blobImages(n, 8, 8, 3);
  const run = (maxFeatureBytes?: number, augment?: PrepareOptions['augment']) =>
    prepare({
      model,
      samples: { data, count: n },
      ort: ortNode,
      target: 0.9,
      headKinds: ['pool-linear'],
      ...(maxFeatureBytes !== undefined ? { maxFeatureBytes } : {}),
      ...(augment ? { augment } : {}),
    });

  it('cutmix copies go before candidate cuts', { timeout: 240_000 }, async () => {
    const all = await run(undefined, ['flip', 'cutmix:2']);
    expect(all.manifest.calibration.augment).toEqual(['flip', 'cutmix', 'cutmix']);
    const cuts = all.report.candidates.length;
    // float16 of all cuts with one cutmix copy less: 3 of 4 copies' rows
    // the cap holds the sample images and a batch of their copies too
    expect(all.report.imageBytes).toBe(n * 8 * 8 * 3 + 64 * 8 * 8 * 3);
    // and the float32 probabilities (the teacher's of every row, the out-of-fold ones of the samples); with one copy
    // less, one row of probabilities less per sample
    const k = all.manifest.labels.length;
    expect(all.report.probBytes).toBe((4 + 1) * n * k * 4);
    const held = all.report.imageBytes! + all.report.probBytes! - n * k * 4;
    const one = await run(held + Math.floor((all.report.featureBytes / 2) * 0.75), ['flip', 'cutmix:2']);
    expect(one.manifest.calibration.augment).toEqual(['flip', 'cutmix']);
    expect(one.report.candidates.length).toBe(cuts);
    expect(one.warnings.join('\n')).toMatch(/Feature memory cap: kept 1 of 2 cutmix copies/);
  });

  it(
    'float32 when it fits, float16 past the cap, then fewer candidate cuts, then no copies (said so)',
    { timeout: 240_000 },
    async () => {
      const f32 = await run();
      expect(f32.report.featureStorage).toMatch(/^float32/);
      const bytes = f32.report.featureBytes;
      const held = f32.report.imageBytes! + f32.report.probBytes!;
      // exactly at the cap: images, copies, probabilities and float32 features
      expect((await run(held + bytes)).report.featureStorage).toMatch(/^float32/);
      const cuts = f32.report.candidates.length;
      expect(cuts).toBeGreaterThan(1);
      const f16 = await run(held + bytes - 1);
      expect(f16.report.featureStorage).toMatch(/^float16, .*float32 would take/);
      expect(f16.report.featureBytes).toBe(bytes / 2);
      expect(f16.report.candidates.length).toBe(cuts);
      expect(f16.warnings.join('\n')).not.toMatch(/memory cap/);
      const fewer = await run(held + Math.floor(bytes / 2) - 1);
      expect(fewer.report.candidates.length).toBeLessThan(cuts);
      expect(fewer.report.featureBytes).toBeLessThan(bytes / 2);
      expect(fewer.warnings.join('\n')).toMatch(/Feature memory cap: kept \d+ of \d+ candidate cuts/);
      const tiny = await run(16); // not even one cut's float16 features fit
      expect(tiny.report.candidates.length).toBe(1);
      expect(tiny.manifest.calibration.augment).toEqual([]);
      expect(tiny.warnings.join('\n')).toMatch(
        /no augmented copies \(with the 400 sample images .*\), still over the cap/,
      );
    },
  );

  it(
    'images over the cap never refuse a run: the features get float16 of every cut beside them, a warning names a --limit that fits',
    { timeout: 240_000 },
    async () => {
      const images = n * 8 * 8 * 3;
      const f32 = await run(undefined, []);
      const bare = f32.report.featureBytes / 2; // float16 of every candidate cut, no copies
      // images alone over the cap, from a reader: read and planned, not refused
      let reads = 0;
      const reader = { count: n, read: async (ix: Int32Array) => (reads++, data.subarray(0, ix.length * 192)) };
      const early: string[] = [];
      const onWarning = (w: string) => early.push(`${w} (after ${reads} reads)`);
      const over = await prepare({
        model,
        samples: reader,
        ort: ortNode,
        maxFeatureBytes: images - 1,
        target: 0.9,
        onWarning,
      });
      expect(reads).toBeGreaterThan(0);
      expect(over.report.samples).toBe(n);
      // said before any image is read (a run that dies of memory has shown it), and kept in the warnings
      expect(early).toHaveLength(1);
      expect(early[0]).toMatch(
        /^Feature memory cap: the 400 sample images \(8x8x3: 75\.0 KB as uint8\) alone exceed the 75\.0 KB cap .*--limit \d+ keeps .*\(after 0 reads\)$/,
      );
      expect(over.warnings).toContain(early[0]!.replace(/ \(after 0 reads\)$/, ''));
      // and from the chosen plan, with its real bytes
      const total = over.report.featureBytes + over.report.imageBytes! + over.report.probBytes!;
      expect(over.warnings.join('\n')).toMatch(
        new RegExp(
          `Feature memory cap: the 400 sample images \\(8x8x3: 75\\.0 KB as uint8\\) alone exceed the 75\\.0 KB cap .*this run holds ${(total / 1024).toFixed(1)} KB, more than the cap`,
        ),
      );
      // within the cap by count (a limit): no early warning
      const fewer: string[] = [];
      await prepare({
        model,
        samples: reader,
        ort: ortNode,
        maxFeatureBytes: images - 1,
        limit: 100,
        onWarning: (w) => fewer.push(w),
        target: 0.9,
      });
      expect(fewer).toEqual([]);
      // images within the cap but leaving the features less than that floor: they get the floor, said so
      const cap = bare + images / 2;
      const squeezed = await run(cap, []);
      const probs = squeezed.report.probBytes!; // the teacher's and out-of-fold probabilities, under the cap too
      const warning = squeezed.warnings.find((w) => w.startsWith('Feature memory cap: the ')) ?? '';
      expect(warning).toMatch(/the 400 sample images .* leave too little of the [\d.]+ KB cap/);
      expect(warning).toContain(`this run holds ${((bare + probs + images) / 1024).toFixed(1)} KB, more than the cap`);
      expect(squeezed.report.featureBytes).toBe(bare);
      expect(squeezed.report.candidates.length).toBe(f32.report.candidates.length);
      // the --limit it names keeps the images and those features within the cap: no warning
      const limit = Number(/--limit (\d+) /.exec(warning)?.[1]);
      expect(limit).toBeGreaterThanOrEqual(100);
      expect(limit).toBeLessThan(n);
      const ok = await prepare({
        model,
        samples: reader,
        ort: ortNode,
        maxFeatureBytes: cap,
        limit,
        target: 0.9,
        augment: [],
      });
      expect(ok.report.samples).toBe(limit);
      expect(ok.warnings.join('\n')).not.toMatch(/memory cap/);
    },
  );

  it(
    'under the floor with the default augmentation: every candidate cut in float16 without copies, before fewer cuts',
    { timeout: 240_000 },
    async () => {
      const images = n * 8 * 8 * 3;
      const f32 = await run(undefined, []);
      const bare = f32.report.featureBytes / 2;
      const cuts = f32.report.candidates.length;
      expect(cuts).toBeGreaterThan(1);
      // the floor (float16 of every cut) fits the cap, the images leave less: every cut kept, the flip copies dropped
      const squeezed = await run(bare + images / 2); // default augment ['flip']
      expect(squeezed.manifest.calibration.augment).toEqual([]);
      expect(squeezed.report.candidates.length).toBe(cuts);
      expect(squeezed.report.featureBytes).toBe(bare);
      const text = squeezed.warnings.join('\n');
      const probs = squeezed.report.probBytes!; // (no copies: the samples' teacher and out-of-fold probabilities)
      expect(text).toMatch(/Feature memory cap: no augmented copies \(float16, [\d.]+ KB, every candidate cut/);
      expect(text).toContain(`this run holds ${((bare + probs + images) / 1024).toFixed(1)} KB, more than the cap`);
      expect(text).not.toMatch(/candidate cuts \(/);
      // a plan within the cap: no over-cap warning, whatever was reduced
      const within = await run(bare + probs + images + 1024);
      expect(within.report.featureBytes + within.report.imageBytes! + within.report.probBytes!).toBeLessThanOrEqual(
        bare + probs + images + 1024,
      );
      expect(within.warnings.join('\n')).not.toMatch(/more than the cap/);
    },
  );
});

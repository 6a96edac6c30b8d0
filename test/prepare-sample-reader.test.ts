// Samples read on demand: duplicate images left out before the shuffle (a file given again, exact copies), so that a
// copy cannot sit in another fold than its original; and --limit choosing indices first, reading only those images
// (the same images, in the same order, as shuffling all of them).
import fs from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { prepareCommand } from '../src/cli/prepare.js';
import { loadSampleSources, openSampleSources } from '../src/cli/sample-sources.js';
import { prepare } from '../src/calibrate/prepare.js';
import { selectSamples, shuffleAndLimit, type SampleReader } from '../src/calibrate/samples.js';
import { encodeModel } from '../src/graph/index.js';
import { cliWith, writePrepareInputs } from './fixtures/cli-helpers.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { blobImages, tinyClassifier } from './fixtures/prepare-fixtures.js';

const cli = cliWith({ prepare: prepareCommand });
const shape = { height: 8, width: 8, channels: 3 };
const per = 192;

function writePng(file: string, seed: number): void {
  const png = new PNG({ width: 8, height: 8 });
  for (let i = 0; i < png.data.length; i++) png.data[i] = i % 4 === 3 ? 255 : (i * 31 + seed * 7) & 255;
  fs.writeFileSync(file, PNG.sync.write(png));
}

describe('duplicate samples', () => {
  it('leaves out a file given again (same path, a link, a folder inside another) and exact copies, in order', async () => {
    const { dir, samples } = writePrepareInputs('selfxit-dedupe-');
    const all = fs.readFileSync(samples);
    const copy = path.join(dir, 'copy.u8'); // 10 images copied from calib.u8, 10 new ones
    fs.writeFileSync(copy, Buffer.concat([all.subarray(50 * per, 60 * per), blobImages(10, 8, 8, 3, 9)]));
    const link = path.join(dir, 'link.u8');
    fs.symlinkSync(samples, link);
    const imgs = path.join(dir, 'imgs');
    fs.mkdirSync(path.join(imgs, 'sub'), { recursive: true });
    writePng(path.join(imgs, 'a.png'), 1);
    writePng(path.join(imgs, 'b.png'), 2);
    writePng(path.join(imgs, 'sub', 'c.png'), 1); // the bytes of a.png
    writePng(path.join(imgs, 'sub', 'd.png'), 3);
    const r = await openSampleSources([samples, imgs, samples, link, copy, path.join(imgs, 'sub')], shape, {
      dedupe: true,
    });
    expect(r.total).toBe(400 + 4 + 400 + 400 + 20 + 2);
    expect(r.dropped).toEqual({ sameFile: 800 + 2, copies: 10 + 1 });
    expect(r.count).toBe(400 + 3 + 10);
    const kept = await r.read(Int32Array.from({ length: r.count }, (_, i) => i));
    const whole = await loadSampleSources([samples, imgs, copy], shape);
    const expected = Buffer.concat([
      whole.data.subarray(0, 400 * per), // calib.u8
      whole.data.subarray(400 * per, 402 * per), // a.png, b.png
      whole.data.subarray(403 * per, 404 * per), // d.png (c.png is a copy of a.png)
      whole.data.subarray(414 * per), // the 10 new images of copy.u8
    ]);
    expect(Buffer.from(kept)).toEqual(expected);
    // without duplicates the reader reads what loading every source holds
    const none = await openSampleSources([samples, path.join(imgs, 'sub')], shape, { dedupe: true });
    expect(none.count).toBe(402);
    expect(none.dropped).toEqual({ sameFile: 0, copies: 0 });
  });

  it(
    'prepare --samples f --samples f --samples <copy of f>: the bundle of f alone, and the count printed',
    { timeout: 120_000 },
    async () => {
      const { dir, model, samples } = writePrepareInputs('selfxit-dedupe-');
      const copy = path.join(dir, 'copy.u8');
      fs.copyFileSync(samples, copy);
      const quick = ['--heads', 'pool-linear', '--target', '0.9'];
      const once = await cli('prepare', model, '--samples', samples, ...quick, '--out', path.join(dir, 'once'));
      const three = ['--samples', samples, '--samples', samples, '--samples', copy];
      const thrice = await cli('prepare', model, ...three, ...quick, '--out', path.join(dir, 'thrice'));
      expect(once.code, once.stderr).toBe(0);
      expect(thrice.code, thrice.stderr).toBe(0);
      expect(thrice.stderr).toMatch(
        /samples: 800 duplicate images left out \(400 of a file given again, 400 exact copies of an earlier image or of its mirror\): 400 of 1200 kept/,
      );
      expect(once.stderr).not.toMatch(/duplicate/);
      const manifest = (d: string) => JSON.parse(fs.readFileSync(path.join(dir, d, 'manifest.json'), 'utf8'));
      const [m1, m3] = [manifest('once'), manifest('thrice')];
      expect(m3.calibration.samples).toBe(400);
      expect(m3.exits).toEqual(m1.exits);
      expect(m3.calibration.validationAgreement).toBe(m1.calibration.validationAgreement);
    },
  );
});

describe('duplicate samples by their pixels', () => {
  /** An 8×8 RGB image (`seed`) as RGBA PNG bytes at a deflate level, and its RGB pixels (mirrored with `mirror`). */
  function image(seed: number, mirror = false): Uint8Array {
    const px = new Uint8Array(per);
    for (let y = 0; y < 8; y++)
      for (let x = 0; x < 8; x++)
        for (let c = 0; c < 3; c++)
          px[(y * 8 + (mirror ? 7 - x : x)) * 3 + c] = (y * 37 + x * 11 + c * 5 + seed * 13) & 255;
    return px;
  }
  function png(px: Uint8Array, deflateLevel: number): Buffer {
    const p = new PNG({ width: 8, height: 8 });
    for (let i = 0; i < 64; i++) {
      p.data.set(px.subarray(i * 3, i * 3 + 3), i * 4);
      p.data[i * 4 + 3] = 255;
    }
    return PNG.sync.write(p, { deflateLevel });
  }

  it('leaves out the same picture in other bytes (a re-saved PNG, a raw file), and with flip an image’s mirror', async () => {
    const { dir } = writePrepareInputs('selfxit-dedupe-px-');
    const raw = path.join(dir, 'one.u8');
    fs.writeFileSync(raw, image(5)); // the pixels of p1.png and p2.png
    const imgs = path.join(dir, 'imgs');
    fs.mkdirSync(imgs);
    const [p1, p2] = [png(image(5), 9), png(image(5), 0)]; // deflate level 0: stored, not compressed
    expect(p1.equals(p2)).toBe(false); // other bytes, the same pixels
    fs.writeFileSync(path.join(imgs, 'p1.png'), p1);
    fs.writeFileSync(path.join(imgs, 'p2.png'), p2);
    fs.writeFileSync(path.join(imgs, 'm.png'), png(image(6, true), 6)); // o.png mirrored
    fs.writeFileSync(path.join(imgs, 'o.png'), png(image(6), 6));
    const plain = await openSampleSources([raw, imgs], shape, { dedupe: true });
    expect([plain.total, plain.count, plain.dropped.copies]).toEqual([5, 3, 2]); // one.u8, m.png, o.png
    const flip = await openSampleSources([raw, imgs], shape, { dedupe: true, mirrored: true });
    expect([flip.count, flip.dropped.copies]).toEqual([2, 3]); // one.u8, m.png
    expect(Buffer.from(await flip.read(Int32Array.of(0, 1)))).toEqual(Buffer.concat([image(5), image(6, true)]));
  });
});

describe('duplicate samples in memory', () => {
  it(
    'prepare() on a block (or a stream) with exact copies: the bundle of the block without them, the count in the report',
    { timeout: 120_000 },
    async () => {
      const model = encodeModel(tinyClassifier());
      const base = blobImages(400, 8, 8, 3);
      // images 0-29 again, and image 7 a third time, spread through the block
      const withCopies = Buffer.concat([
        base.subarray(0, 200 * per),
        base.subarray(0, 30 * per),
        base.subarray(200 * per),
        base.subarray(7 * per, 8 * per),
      ]);
      const sel = await selectSamples({ data: withCopies, count: 431 }, shape, 3, 100);
      expect(sel.copies).toBe(31);
      expect(Buffer.from(sel.batch.data)).toEqual(
        Buffer.from(shuffleAndLimit({ data: base, count: 400 }, shape, 3, 100).batch.data),
      );
      const common = { model, ort: ortNode, target: 0.9, headKinds: ['pool-linear' as const], seed: 2 };
      const clean = await prepare({ ...common, samples: { data: base, count: 400 } });
      expect(clean.report.duplicates).toBe(0);
      expect(clean.warnings.join('\n')).not.toMatch(/exact copies/);
      async function* stream() {
        for (let i = 0; i < 431; i += 100)
          yield { data: withCopies.subarray(i * per, Math.min(431, i + 100) * per), count: Math.min(100, 431 - i) };
      }
      for (const samples of [{ data: withCopies, count: 431 }, stream()]) {
        const dup = await prepare({ ...common, samples });
        expect(dup.report.duplicates).toBe(31);
        expect(dup.report.samples).toBe(400);
        expect(dup.warnings.join('\n')).toMatch(/Samples: 31 exact copies of an earlier image left out/);
        expect(dup.manifest.exits).toEqual(clean.manifest.exits);
        for (const [name, bytes] of clean.files) expect(Buffer.from(dup.files.get(name)!)).toEqual(Buffer.from(bytes));
      }
    },
  );
});

describe('samples read on demand', () => {
  const n = 400;
  const data = blobImages(n, 8, 8, 3);
  /** A reader over `data` that records what it was asked for. */
  const reader = (): SampleReader & { asked: number[][] } => {
    const asked: number[][] = [];
    return {
      count: n,
      asked,
      read: (indices) => {
        asked.push([...indices]);
        const out = new Uint8Array(indices.length * per);
        indices.forEach((k, i) => out.set(data.subarray(k * per, (k + 1) * per), i * per));
        return Promise.resolve(out);
      },
    };
  };

  it('the seeded shuffle picks indices first: the same images as shuffling all of them, only those read', async () => {
    for (const limit of [Infinity, 123]) {
      const r = reader();
      const { batch: got, copies } = await selectSamples(r, shape, 7, limit);
      expect(copies).toBe(0);
      const want = shuffleAndLimit({ data, count: n }, shape, 7, limit);
      expect(got.count).toBe(want.batch.count);
      expect(Buffer.from(got.data)).toEqual(Buffer.from(want.batch.data));
      expect(r.asked).toEqual([[...want.indices]]);
    }
  });

  it(
    'prepare on a reader with a limit: reads the limited images once, gives the bundle of the whole block',
    { timeout: 120_000 },
    async () => {
      const model = encodeModel(tinyClassifier());
      const common = { model, ort: ortNode, target: 0.9, headKinds: ['pool-linear' as const], limit: 350, seed: 2 };
      const r = reader();
      const fromReader = await prepare({ ...common, samples: r });
      const fromBlock = await prepare({ ...common, samples: { data, count: n } });
      expect(r.asked.length).toBe(1);
      expect(r.asked[0]!.length).toBe(350);
      expect(fromReader.manifest.exits).toEqual(fromBlock.manifest.exits);
      expect([...fromReader.files.keys()]).toEqual([...fromBlock.files.keys()]);
      for (const [name, bytes] of fromBlock.files)
        expect(Buffer.from(fromReader.files.get(name)!)).toEqual(Buffer.from(bytes));
    },
  );
});

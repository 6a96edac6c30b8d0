// Samples read on demand: duplicate images left out (a file given again before the shuffle, copies as it picks), so that a
// copy cannot sit in another fold than its original; and --limit choosing indices first, reading only those images
// (the same images, in the same order, as shuffling all of them).
import fs from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { prepareCommand } from '../src/cli/prepare.js';
import { loadSampleSources, openSampleSources } from '../src/cli/sample-sources.js';
import { prepare } from '../src/calibrate/prepare.js';
import {
  chooseSamples,
  mirrorInto,
  selectSamples,
  shuffleAndLimit,
  type SampleReader,
} from '../src/calibrate/samples.js';
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
  it("never writes the buffer a caller's reader hands back (a view of its own store), copies or not", async () => {
    // the store holds the images in the order the seeded shuffle asks for them, and the reader hands back a view of it
    const order = chooseSamples(6, 4);
    const store = new Uint8Array(6 * per);
    for (let i = 0; i < store.length; i++) store[i] = (i * 13 + Math.floor(i / per) * 51) & 255;
    store.copyWithin(4 * per, 1 * per, 2 * per); // the 5th image asked for is a copy of the 2nd
    const before = store.slice();
    const r: SampleReader = {
      count: 6,
      read(indices: Int32Array): Promise<Uint8Array> {
        const at = order.indexOf(indices[0]!);
        expect([...indices]).toEqual([...order.subarray(at, at + indices.length)]);
        return Promise.resolve(store.subarray(at * per, (at + indices.length) * per));
      },
    };
    const sel = await selectSamples(r, shape, 4);
    expect(sel.copies).toBe(1);
    expect(sel.batch.count).toBe(5);
    expect(store).toEqual(before);
    expect(sel.batch.data.subarray(4 * per)).toEqual(before.subarray(5 * per)); // the 6th image moved up, in our copy
  });

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
    expect(r.dropped).toEqual({ sameFile: 800 + 2 });
    expect(r.count).toBe(400 + 4 + 20);
    const kept = await r.read(Int32Array.from({ length: r.count }, (_, i) => i));
    const whole = await loadSampleSources([samples, imgs, copy], shape);
    expect(Buffer.from(kept)).toEqual(Buffer.from(whole.data));
    // the exact copies (10 of copy.u8, c.png) are left out as the images are selected
    const sel = await selectSamples(r, shape, 4);
    expect([sel.copies, sel.batch.count]).toEqual([10 + 1, 400 + 3 + 10]);
    // without duplicates the reader reads what loading every source holds
    const none = await openSampleSources([samples, path.join(imgs, 'sub')], shape, { dedupe: true });
    expect(none.count).toBe(402);
    expect(none.dropped).toEqual({ sameFile: 0 });
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
      expect(thrice.stderr).toMatch(/samples: 400 images of a file given again left out: 800 of 1200 kept/);
      expect(thrice.stderr).toMatch(/Samples: 400 exact copies of an earlier image or of its mirror left out/);
      expect(once.stderr).not.toMatch(/given again|exact copies/);
      const manifest = (d: string) => JSON.parse(fs.readFileSync(path.join(dir, d, 'manifest.json'), 'utf8'));
      const [m1, m3] = [manifest('once'), manifest('thrice')];
      expect(m1.calibration.samples).toBe(400);
      expect(m3.calibration.samples).toBe(400);
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
    const r = await openSampleSources([raw, imgs], shape, { dedupe: true });
    expect([r.total, r.count]).toEqual([5, 5]);
    const plain = await selectSamples(r, shape, 1);
    expect([plain.batch.count, plain.copies]).toEqual([3, 2]); // image 5, image 6 and its mirror
    const flip = await selectSamples(r, shape, 1, Infinity, true);
    expect([flip.batch.count, flip.copies]).toEqual([2, 3]); // image 5, image 6 or its mirror
    const keep = Buffer.from(flip.batch.data);
    const five = keep.indexOf(Buffer.from(image(5)));
    expect(five % per).toBe(0);
    const other = keep.subarray(five === 0 ? per : 0, five === 0 ? 2 * per : per);
    expect([Buffer.from(image(6)), Buffer.from(image(6, true))]).toContainEqual(Buffer.from(other));
  });
});

describe('duplicate samples in memory', () => {
  const model = encodeModel(tinyClassifier());
  const common = { model, ort: ortNode, target: 0.9, headKinds: ['pool-linear' as const], seed: 2 };
  /** A reader over the images of `data`. */
  const readerOf = (data: Uint8Array, count: number): SampleReader => ({
    count,
    read: (indices) => {
      const out = new Uint8Array(indices.length * per);
      indices.forEach((k, i) => out.set(data.subarray(k * per, (k + 1) * per), i * per));
      return Promise.resolve(out);
    },
  });
  const distinct = (b: Uint8Array, n: number) =>
    new Set(Array.from({ length: n }, (_, i) => Buffer.from(b.subarray(i * per, (i + 1) * per)).toString('hex'))).size;

  it(
    'prepare() on a block, a stream or a reader with exact copies: each image once, the same bundle, the count in the report',
    { timeout: 120_000 },
    async () => {
      const base = blobImages(400, 8, 8, 3);
      // images 0-29 again, and image 7 a third time, spread through the block
      const withCopies = Buffer.concat([
        base.subarray(0, 200 * per),
        base.subarray(0, 30 * per),
        base.subarray(200 * per),
        base.subarray(7 * per, 8 * per),
      ]);
      const sel = await selectSamples({ data: withCopies, count: 431 }, shape, 3);
      expect([sel.copies, sel.batch.count, distinct(sel.batch.data, 400)]).toEqual([31, 400, 400]);
      const some = await selectSamples({ data: withCopies, count: 431 }, shape, 3, 100);
      expect([some.batch.count, distinct(some.batch.data, 100)]).toEqual([100, 100]);
      // a reader of the same images gives the same samples (the CLI reads its sources so)
      const fromReader = await selectSamples(readerOf(withCopies, 431), shape, 3, 100);
      expect(Buffer.from(fromReader.batch.data)).toEqual(Buffer.from(some.batch.data));
      const clean = await prepare({ ...common, samples: { data: base, count: 400 } });
      expect(clean.report.duplicates).toBe(0);
      expect(clean.warnings.join('\n')).not.toMatch(/exact copies/);
      async function* stream() {
        for (let i = 0; i < 431; i += 100)
          yield { data: withCopies.subarray(i * per, Math.min(431, i + 100) * per), count: Math.min(100, 431 - i) };
      }
      const block = await prepare({ ...common, samples: { data: withCopies, count: 431 } });
      for (const dup of [block, await prepare({ ...common, samples: stream() })]) {
        expect(dup.report.duplicates).toBe(31);
        expect(dup.report.samples).toBe(400);
        expect(dup.warnings.join('\n')).toMatch(
          /Samples: 31 exact copies of an earlier image or of its mirror left out/,
        );
        expect(dup.manifest.exits).toEqual(block.manifest.exits);
        for (const [name, bytes] of block.files) expect(Buffer.from(dup.files.get(name)!)).toEqual(Buffer.from(bytes));
      }
    },
  );

  it(
    'with flip, an image and its mirror are copies (report.duplicates); without augmentation they are not',
    { timeout: 120_000 },
    async () => {
      const base = blobImages(300, 8, 8, 3);
      const mirror = mirrorInto(base.subarray(5 * per, 6 * per), shape, new Uint8Array(per));
      const data = Buffer.concat([base, mirror]);
      const flip = await prepare({ ...common, samples: { data, count: 301 } });
      expect(flip.report.duplicates).toBe(1);
      expect(flip.report.samples).toBe(300);
      const none = await prepare({ ...common, augment: [], samples: { data, count: 301 } });
      expect(none.report.duplicates).toBe(0);
      expect(none.report.samples).toBe(301);
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

// A folder source with --limit decodes only the images the shuffle picks (and as many more as copies among them),
// never every image of the folder: copies of an image's pixels are found among the images chosen.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { describe, expect, it, vi } from 'vitest';
import { openSampleSources } from '../src/cli/sample-sources.js';
import { selectSamples } from '../src/calibrate/samples.js';
import type * as Images from '../src/cli/images.js';

const decodes = vi.hoisted(() => ({ n: 0 }));
vi.mock('../src/cli/images.js', async (importOriginal) => {
  const m = await importOriginal<typeof Images>();
  return {
    ...m,
    decodeImage: (...a: Parameters<typeof m.decodeImage>): ReturnType<typeof m.decodeImage> => {
      decodes.n++;
      return m.decodeImage(...a);
    },
  };
});

const shape = { height: 8, width: 8, channels: 3 };

/** An 8×8 PNG of image `seed`, mirrored left-right with `mirror`. */
function png(seed: number, mirror: boolean): Buffer {
  const p = new PNG({ width: 8, height: 8 });
  for (let y = 0; y < 8; y++)
    for (let x = 0; x < 8; x++) {
      const at = (y * 8 + (mirror ? 7 - x : x)) * 4;
      for (let c = 0; c < 3; c++) p.data[at + c] = (y * 37 + x * 11 + c * 5 + seed * 13) & 255;
      p.data[at + 3] = 255;
    }
  return PNG.sync.write(p);
}

describe('folder samples with a limit', () => {
  it('decode about `limit` images, not the whole folder', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'selfxit-decode-'));
    for (let i = 0; i < 60; i++) fs.writeFileSync(path.join(dir, `i${String(i).padStart(2, '0')}.png`), png(i, false));
    for (let i = 0; i < 60; i++) fs.writeFileSync(path.join(dir, `m${String(i).padStart(2, '0')}.png`), png(i, true));
    decodes.n = 0;
    const r = await openSampleSources([dir], shape, { dedupe: true });
    expect(r.count).toBe(120);
    expect(decodes.n).toBe(0);
    const sel = await selectSamples(r, shape, 3, 8, true);
    expect(sel.batch.count).toBe(8);
    expect(decodes.n).toBe(8 + sel.copies); // the 8 chosen, and one more for each mirror met among them
    expect(decodes.n).toBeLessThan(20);
    // without flip no mirror is a copy: exactly the 8 chosen are decoded
    decodes.n = 0;
    const plain = await selectSamples(r, shape, 3, 8);
    expect([plain.copies, decodes.n]).toEqual([0, 8]);
  });
});

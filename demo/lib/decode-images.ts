// Decodes image files in a worker (createImageBitmap + OffscreenCanvas), resized to H×W, into one uint8 NHWC block
// with 1 (luma, as the SDK computes it) or 3 channels. Undecodable files are skipped and counted.
import { rgbaToChannels } from '../../src/bundle/input.js';
export interface DecodedImages {
  readonly data: Uint8Array;
  readonly count: number;
  readonly skipped: number;
}

export async function decodeImages(
  blobs: readonly Blob[],
  shape: { height: number; width: number; channels: 1 | 3 },
  onProgress?: (done: number) => void,
): Promise<DecodedImages> {
  const { height: h, width: w, channels: c } = shape;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (!ctx) throw new Error('OffscreenCanvas 2D context unavailable');
  const data = new Uint8Array(blobs.length * h * w * c);
  let count = 0;
  let skipped = 0;
  for (let i = 0; i < blobs.length; i++) {
    let bmp: ImageBitmap | undefined;
    try {
      bmp = await createImageBitmap(blobs[i]!, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    } catch {
      skipped++;
      continue;
    }
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(bmp, 0, 0, w, h);
    bmp.close();
    const rgba = ctx.getImageData(0, 0, w, h).data;
    const base = count * h * w * c;
    rgbaToChannels(rgba, h * w, c, data, base);
    count++;
    if (i % 16 === 15) onProgress?.(i + 1);
  }
  onProgress?.(blobs.length);
  return { data: data.subarray(0, count * h * w * c), count, skipped };
}

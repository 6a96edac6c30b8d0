// Sample images for the demo and the bench page: raw uint8 NHWC files fetched once, sliced per image,
// turned into ImageData (what a page would hand to clf.classify) and drawn to small canvases.

/** A block of `count` images `[count, height, width, channels]` uint8 with optional labels. */
export interface ImageSet {
  readonly data: Uint8Array;
  readonly count: number;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  /** True class per image, when known. */
  readonly labels?: Uint8Array;
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`Cannot fetch ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Fetches a raw image file (and its label file) of the given geometry; keeps at most `limit` images. */
export async function fetchImageSet(
  url: string,
  shape: { height: number; width: number; channels: number },
  options: { labelsUrl?: string; limit?: number } = {},
): Promise<ImageSet> {
  const [data, labels] = await Promise.all([
    fetchBytes(url),
    options.labelsUrl ? fetchBytes(options.labelsUrl) : Promise.resolve(undefined),
  ]);
  const per = shape.height * shape.width * shape.channels;
  if (data.length % per !== 0)
    throw new Error(
      `${url}: ${data.length} bytes is not a whole number of ${shape.height}x${shape.width}x${shape.channels} images`,
    );
  const count = Math.min(data.length / per, options.limit ?? Infinity);
  return {
    ...shape,
    data: data.subarray(0, count * per),
    count,
    ...(labels ? { labels: labels.subarray(0, count) } : {}),
  };
}

/** Bytes of image `i` (a view, no copy). */
export function imageBytes(set: ImageSet, i: number): Uint8Array {
  const per = set.height * set.width * set.channels;
  return set.data.subarray(i * per, (i + 1) * per);
}

/** Images `[start, start + n)` as one contiguous view. */
export function imageRange(set: ImageSet, start: number, n: number): Uint8Array {
  const per = set.height * set.width * set.channels;
  return set.data.subarray(start * per, (start + n) * per);
}

/** RGBA pixels of image `i` (grayscale replicated to R=G=B, so the SDK's luma gives back the same bytes). */
export function imageData(set: ImageSet, i: number): ImageData {
  const src = imageBytes(set, i);
  const hw = set.height * set.width;
  const rgba = new Uint8ClampedArray(hw * 4);
  for (let p = 0; p < hw; p++) {
    const o = p * 4;
    if (set.channels === 1) {
      const v = src[p]!;
      rgba[o] = v;
      rgba[o + 1] = v;
      rgba[o + 2] = v;
    } else {
      rgba[o] = src[p * 3]!;
      rgba[o + 1] = src[p * 3 + 1]!;
      rgba[o + 2] = src[p * 3 + 2]!;
    }
    rgba[o + 3] = 255;
  }
  return new ImageData(rgba, set.width, set.height);
}

/** A canvas showing image `i` at its native size (CSS scales it up, pixelated). */
export function imageCanvas(set: ImageSet, i: number): HTMLCanvasElement {
  const canvas = document.createElement('canvas');
  canvas.width = set.width;
  canvas.height = set.height;
  canvas.getContext('2d')?.putImageData(imageData(set, i), 0, 0);
  return canvas;
}

// Test images for a bundle's input size, for the Node and browser engine benches: CIFAR-10's `test` split
// (../shared) for 32x32x3, the shipped Fashion model's test images for 28x28x1; `count` of them spread over the
// class-major file.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SampleBatch } from '../src/bundle/input.js';
import type { InputSpec } from '../src/bundle/manifest.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The test-image file for `input`'s size, or undefined when there is none (another size, or ../shared absent). */
export function testImageFile(input: Pick<InputSpec, 'height' | 'width' | 'channels'>): string | undefined {
  const { height, width, channels } = input;
  const file =
    height === 32 && width === 32 && channels === 3
      ? path.resolve(root, '../shared/data/cifar10/test-u8.bin')
      : height === 28 && width === 28 && channels === 1
        ? path.join(root, 'public/models/fashion-resnet/test-u8.bin')
        : undefined;
  return file && fs.existsSync(file) ? file : undefined;
}

/** Up to `count` test images (uint8 NHWC) for `input`'s size, every 313th of the file (its classes come in runs). */
export function testImages(
  input: Pick<InputSpec, 'height' | 'width' | 'channels'>,
  count: number,
): SampleBatch | undefined {
  const file = testImageFile(input);
  if (!file) return undefined;
  const all = new Uint8Array(fs.readFileSync(file));
  const per = input.height * input.width * input.channels;
  const total = all.length / per;
  const n = Math.min(count, total);
  const data = new Uint8Array(n * per);
  for (let k = 0; k < n; k++) {
    const i = (k * 313 + 17) % total; // class-major files: stride across classes
    data.set(all.subarray(i * per, (i + 1) * per), k * per);
  }
  return { data, count: n };
}

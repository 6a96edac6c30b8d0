// The bundle's validation file: each exit's out-of-fold outputs on the calibration samples (max-softmax and whether
// it agreed with the backbone), so a device can re-plan exits and thresholds by its own timings without the samples.
import { SelfxitError } from '../errors.js';

/** File name inside a bundle. */
export const VALIDATION_FILE = 'validation.bin';

/**
 * Encoding `'u16-score,u8-agree'`: for exit 0, 1, …: `samples` little-endian uint16 scores `round(s · 65535)`,
 * then `samples` bytes 1/0 (agrees with the backbone or not). Size `3 · exits · samples` bytes.
 */
export const VALIDATION_ENCODING = 'u16-score,u8-agree' as const;

/** One exit's validation outputs. */
export interface ValidationExit {
  /** Max-softmax per sample, in [0, 1]. */
  readonly score: Float32Array;
  /** 1 where the exit's argmax equals the backbone's. */
  readonly agree: Uint8Array;
}

/** Encodes the exits' outputs (all over the same samples) as {@link VALIDATION_ENCODING}. */
export function encodeValidation(exits: readonly ValidationExit[]): Uint8Array {
  const n = exits[0]?.score.length ?? 0;
  const out = new Uint8Array(3 * n * exits.length);
  const view = new DataView(out.buffer);
  exits.forEach((e, j) => {
    if (e.score.length !== n || e.agree.length !== n)
      throw new SelfxitError('INTERNAL', `validation exit ${j} has ${e.score.length} samples, expected ${n}`);
    const base = 3 * n * j;
    for (let i = 0; i < n; i++)
      view.setUint16(base + 2 * i, Math.round(Math.min(1, Math.max(0, e.score[i]!)) * 65535), true);
    for (let i = 0; i < n; i++) out[base + 2 * n + i] = e.agree[i] ? 1 : 0;
  });
  return out;
}

/** Decodes {@link encodeValidation}'s bytes (INVALID_BUNDLE when the size does not match). */
export function decodeValidation(bytes: Uint8Array, exits: number, samples: number): ValidationExit[] {
  if (bytes.length !== 3 * exits * samples) {
    throw new SelfxitError(
      'INVALID_BUNDLE',
      `${VALIDATION_FILE} has ${bytes.length} bytes, expected 3 x ${exits} exits x ${samples} samples`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: exits }, (_, j) => {
    const base = 3 * samples * j;
    const score = new Float32Array(samples);
    for (let i = 0; i < samples; i++) score[i] = view.getUint16(base + 2 * i, true) / 65535;
    return { score, agree: bytes.slice(base + 2 * samples, base + 3 * samples) };
  });
}

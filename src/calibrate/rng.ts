// Seeded pseudo-random numbers for calibration: mulberry32 generator, Gaussian draws, shuffles, k-fold splits.
import { SelfxitError } from '../errors.js';

/** A seeded random source. Same seed, same sequence, on every platform. */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Standard normal draw (Box-Muller). */
  normal(): number;
}

/** mulberry32 generator seeded with a 32-bit integer (other numbers are truncated to 32 bits). */
export function createRng(seed: number): Rng {
  let a = (seed | 0) ^ 0x9e3779b9;
  let spare = NaN;
  const next = (): number => {
    a = (a + 0x6d2b79f5) | 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    normal: () => {
      if (!Number.isNaN(spare)) {
        const s = spare;
        spare = NaN;
        return s;
      }
      let u = next();
      while (u <= 1e-300) u = next();
      const v = next();
      const r = Math.sqrt(-2 * Math.log(u));
      spare = r * Math.sin(2 * Math.PI * v);
      return r * Math.cos(2 * Math.PI * v);
    },
  };
}

/** Fisher-Yates shuffle in place. */
export function shuffleInPlace(a: Int32Array | Uint32Array | number[], rng: Rng): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
}

/** A seeded random permutation of `0..n-1`. */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  shuffleInPlace(p, rng);
  return p;
}

/**
 * Assigns each of `n` samples to one of `folds` folds (sizes differ by at most one), in a seeded random order.
 * Returns `foldOf[i]` in `[0, folds)`. Throws INVALID_ARGUMENT when folds < 2 or folds > n.
 */
export function kFoldAssign(n: number, folds: number, seed: number): Int32Array {
  if (!Number.isInteger(folds) || folds < 2 || folds > n) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `k-fold split needs 2 <= folds <= samples, got folds=${folds}, samples=${n}`,
      { folds, n },
    );
  }
  const perm = permutation(n, createRng(seed));
  const foldOf = new Int32Array(n);
  for (let r = 0; r < n; r++) foldOf[perm[r]!] = r % folds;
  return foldOf;
}

/** Indices of samples in fold `f` (`inFold = true`) or in every other fold (`inFold = false`), ascending. */
export function foldIndices(foldOf: Int32Array, f: number, inFold: boolean): Int32Array {
  let count = 0;
  for (let i = 0; i < foldOf.length; i++) if ((foldOf[i] === f) === inFold) count++;
  const out = new Int32Array(count);
  let w = 0;
  for (let i = 0; i < foldOf.length; i++) if ((foldOf[i] === f) === inFold) out[w++] = i;
  return out;
}

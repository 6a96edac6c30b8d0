// Compact storage of pooled feature matrices for head training: float16 (2 bytes, relative error ≤ 2⁻¹¹), uint8
// with a per-feature affine map (1 byte), or uint8 square-root codes over each row's own range (1 byte; rows encoded
// one at a time, as a stream needs), so many images × augmented copies × every candidate cut fit in memory.
// The trainer reads them a row at a time, standardised on the fly (no float32 copy of the matrix is ever made);
// the per-feature moments of that standardisation are computed here too.
import { SelfxitError } from '../errors.js';

/**
 * `[n, d]` features packed one value per 2 bytes (f16) or 1 byte (u8: x ≈ offset[i] + scale[i] · q; u8row:
 * x ≈ rowRange[2r] + rowRange[2r + 1] · (q / 255)², {@link encodeRowU8}).
 */
export interface PackedFeatures {
  readonly format: 'f16' | 'u8' | 'u8row';
  readonly n: number;
  readonly d: number;
  readonly data: Uint16Array | Uint8Array;
  /** u8 only: per-feature offset and step. */
  readonly offset?: Float32Array;
  readonly scale?: Float32Array;
  /** u8row only: per row, its least value and its range (`2n` values). */
  readonly rowRange?: Float32Array;
}

/** A feature matrix as the trainer reads it: plain float32 `[n, d]` or packed. */
export type FeatureRows = Float32Array | PackedFeatures;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Nearest float16 bits of `v` (round to nearest even; overflow to ±Inf; subnormals kept). */
export function toHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

let halfTable: Float32Array | undefined;
/** float16 bits → float32, as a 65,536-entry table (256 KB, built once). */
export function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] =
      e === 0 ? sign * m * 2 ** -24 : e === 0x1f ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  halfTable = t;
  return t;
}

/** Packs `x [n, d]` as float16 or as uint8 with a per-feature min..max map. */
export function packFeatures(x: Float32Array, n: number, d: number, format: 'f16' | 'u8'): PackedFeatures {
  if (!(Number.isInteger(n) && n >= 0 && Number.isInteger(d) && d >= 1) || x.length < n * d)
    throw new SelfxitError('INVALID_ARGUMENT', `cannot pack ${x.length} values as ${n}x${d} features`, { n, d });
  if (format === 'f16') {
    const data = new Uint16Array(n * d);
    for (let i = 0; i < n * d; i++) data[i] = toHalf(x[i]!);
    return { format, n, d, data };
  }
  const lo = new Float32Array(d).fill(Infinity);
  const hi = new Float32Array(d).fill(-Infinity);
  for (let r = 0; r < n; r++)
    for (let i = 0; i < d; i++) {
      const v = x[r * d + i]!;
      if (v < lo[i]!) lo[i] = v;
      if (v > hi[i]!) hi[i] = v;
    }
  const scale = new Float32Array(d);
  for (let i = 0; i < d; i++) {
    if (!(hi[i]! >= lo[i]!)) lo[i] = hi[i] = 0;
    scale[i] = hi[i]! > lo[i]! ? (hi[i]! - lo[i]!) / 255 : 1;
  }
  const data = new Uint8Array(n * d);
  for (let r = 0; r < n; r++)
    for (let i = 0; i < d; i++) data[r * d + i] = Math.round((x[r * d + i]! - lo[i]!) / scale[i]!);
  return { format, n, d, data, offset: lo, scale };
}

/** The largest finite float32. */
const F32_MAX = 3.4028234663852886e38;

/**
 * Encodes one row `src[0 … d)` as uint8 square-root codes over the row's own range (u8row): with lo..hi the row's
 * finite range and R = hi − lo, `dst[dstAt + i] = round(255 · √((x − lo) / R))`, lo and R written to
 * `range[rangeAt]`, `range[rangeAt + 1]`; decoded as lo + R · (q / 255)² ({@link u8rowTable}). A value u² of the way
 * up the range comes back within R · (2u + 1/510) / 510: fine steps near the row's least value, where most pooled
 * ReLU features lie (a linear map over the row's range lost up to 23 % of some features' spread on ResNet-56 pooled
 * features, this one ≤ 4 %: bench/adapt-encoding.ts). Non-finite values clamp to the range's ends (NaN to lo); a
 * constant row comes back exactly. lo and R are kept within float32's finite range (a row spanning more than its max,
 * e.g. [−3e38, 3e38], keeps R = max and clamps values past lo + R to it), so that every row decodes finite.
 */
export function encodeRowU8(
  src: ArrayLike<number>,
  d: number,
  dst: Uint8Array,
  dstAt: number,
  range: Float32Array,
  rangeAt: number,
): void {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < d; i++) {
    const v = src[i]!;
    if (v < lo && v !== -Infinity) lo = v;
    if (v > hi && v !== Infinity) hi = v;
  }
  if (!(hi >= lo)) lo = hi = 0; // no finite value
  // lo and R as stored (float32), so that encoding and decoding use the same ones; both kept finite in float32 (a range
  // wider than its max would store R = Infinity and decode Infinity · 0 = NaN): values past lo + R clamp to it
  range[rangeAt] = Math.min(Math.max(lo, -F32_MAX), F32_MAX);
  range[rangeAt + 1] = Math.min(Math.max(0, Math.min(hi, F32_MAX) - range[rangeAt]!), F32_MAX);
  const off = range[rangeAt]!;
  const r = range[rangeAt + 1]!;
  const inv = r > 0 ? 1 / r : 0;
  for (let i = 0; i < d; i++) {
    const v = src[i]!;
    const t = (v - off) * inv; // NaN for NaN (and for +Inf in a constant row)
    dst[dstAt + i] = t > 0 ? (t < 1 ? Math.round(255 * Math.sqrt(t)) : 255) : v > off ? 255 : 0;
  }
}

let u8rowDecode: Float32Array | undefined;
/** The u8row code → fraction of the row's range: (q / 255)², 256 entries. */
export function u8rowTable(): Float32Array {
  u8rowDecode ??= Float32Array.from({ length: 256 }, (_, q) => (q / 255) ** 2);
  return u8rowDecode;
}

/** Rows in `x` given its width `d` (float32: length / d). */
export function featureRowCount(x: FeatureRows, d: number): number {
  return x instanceof Float32Array ? Math.floor(x.length / d) : x.n;
}

/**
 * A row reader: `read(row, out, at)` writes `(x[row, i] − mean[i]) · invStd[i]` for i < d into `out[at …]`
 * (mean 0 / invStd 1 give the raw values).
 */
export function rowReader(
  x: FeatureRows,
  d: number,
  mean: Float32Array,
  invStd: Float32Array,
): (row: number, out: Float32Array, at: number) => void {
  if (x instanceof Float32Array) {
    return (row, out, at) => {
      const src = row * d;
      for (let i = 0; i < d; i++) out[at + i] = (x[src + i]! - mean[i]!) * invStd[i]!;
    };
  }
  if (x.d !== d) throw new SelfxitError('INVALID_ARGUMENT', `packed features have ${x.d} columns, expected ${d}`);
  if (x.format === 'f16') {
    const t = halfToFloatTable();
    const data = x.data;
    return (row, out, at) => {
      const src = row * d;
      for (let i = 0; i < d; i++) out[at + i] = (t[data[src + i]!]! - mean[i]!) * invStd[i]!;
    };
  }
  if (x.format === 'u8row') {
    // (lo_r + R_r·t[q] − mean)·inv = (lo_r + R_r·t[q])·inv + b
    const b = new Float32Array(d);
    for (let i = 0; i < d; i++) b[i] = -mean[i]! * invStd[i]!;
    const t = u8rowTable();
    const data = x.data;
    const range = x.rowRange!;
    return (row, out, at) => {
      const src = row * d;
      const lo = range[2 * row]!;
      const r = range[2 * row + 1]!;
      for (let i = 0; i < d; i++) out[at + i] = (lo + r * t[data[src + i]!]!) * invStd[i]! + b[i]!;
    };
  }
  // u8: (offset + scale·q − mean)·inv = q·a + b
  const a = new Float32Array(d);
  const b = new Float32Array(d);
  for (let i = 0; i < d; i++) {
    a[i] = x.scale![i]! * invStd[i]!;
    b[i] = (x.offset![i]! - mean[i]!) * invStd[i]!;
  }
  const data = x.data;
  return (row, out, at) => {
    const src = row * d;
    for (let i = 0; i < d; i++) out[at + i] = data[src + i]! * a[i]! + b[i]!;
  };
}

/** Standardisations over all rows, per feature matrix: the folds, the final head and every head kind of a cut share one. */
const allRowsMoments = new WeakMap<
  object,
  { d: number; n: number; print: number; mean: Float32Array; invStd: Float32Array }
>();

/** A cheap fingerprint of a matrix (64 spread values), so a matrix changed in place is not served stale moments. */
function fingerprint(x: FeatureRows): number {
  const data = x instanceof Float32Array ? x : x.data;
  let h = data.length;
  const step = Math.max(1, Math.floor(data.length / 64));
  for (let i = 0; i < data.length; i += step) h = (Math.imul(h, 31) + Math.round(data[i]! * 4096)) | 0;
  return h;
}

/**
 * Per-feature mean and 1/std (float64 sums, two passes) over rows `used` of `x [·, d]`; a feature with no spread
 * gets 1. Computed once per matrix when `used` is every row.
 */
export function standardisation(
  x: FeatureRows,
  used: Int32Array,
  d: number,
): { mean: Float32Array; invStd: Float32Array } {
  const all = used.length === featureRowCount(x, d);
  const print = all ? fingerprint(x) : 0;
  const hit = all ? allRowsMoments.get(x) : undefined;
  if (hit && hit.d === d && hit.n === used.length && hit.print === print) return hit;
  const m = moments(x, used, d);
  if (!all) return m;
  const entry = { d, n: used.length, print, ...m };
  allRowsMoments.set(x, entry);
  return entry;
}

function moments(x: FeatureRows, used: Int32Array, d: number): { mean: Float32Array; invStd: Float32Array } {
  const mu = new Float64Array(d);
  const ss = new Float64Array(d);
  const read = rowReader(x, d, new Float32Array(d), new Float32Array(d).fill(1));
  const row = new Float32Array(d);
  for (const r of used) {
    read(r, row, 0);
    for (let i = 0; i < d; i++) mu[i]! += row[i]!;
  }
  for (let i = 0; i < d; i++) mu[i]! /= used.length;
  for (const r of used) {
    read(r, row, 0);
    for (let i = 0; i < d; i++) {
      const c = row[i]! - mu[i]!;
      ss[i]! += c * c;
    }
  }
  const invStd = new Float32Array(d);
  for (let i = 0; i < d; i++) {
    const sd = Math.sqrt(ss[i]! / used.length);
    invStd[i] = sd > 1e-6 * (Math.abs(mu[i]!) + 1e-6) && sd > 1e-12 ? 1 / sd : 1;
  }
  return { mean: Float32Array.from(mu), invStd };
}

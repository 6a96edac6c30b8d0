// Average and max pooling of NCHW cut maps into head features (the same order as the ONNX head's
// AveragePool/MaxPool → Flatten → Concat); a channels-last (NHWC) map is transposed to NCHW first, as its head does.
import { SelfxitError } from '../errors.js';
import type { MapLayout } from '../graph/map-layout.js';

function checkGrid(h: number, w: number, grid: readonly [number, number], what = 'pooling grid'): void {
  const [gh, gw] = grid;
  if (!(Number.isInteger(gh) && Number.isInteger(gw) && gh >= 1 && gw >= 1 && h % gh === 0 && w % gw === 0)) {
    throw new SelfxitError('INVALID_ARGUMENT', `${what} ${gh}x${gw} must divide the map ${h}x${w}`, {
      h,
      w,
      grid: [gh, gw],
    });
  }
}

/** Checks the map and output sizes of a pooling call; returns the features per sample `c*gh*gw` and the row stride. */
function checkInto(
  map: Float32Array,
  rows: number,
  c: number,
  h: number,
  w: number,
  grid: readonly [number, number],
  out: Float32Array,
  rowOffset: number,
  rowStride: number | undefined,
  colOffset: number,
): { d: number; stride: number } {
  checkGrid(h, w, grid);
  const d = c * grid[0] * grid[1];
  const stride = rowStride ?? d;
  if (map.length < rows * c * h * w) {
    throw new SelfxitError('INVALID_ARGUMENT', `map has ${map.length} values, expected ${rows}x${c}x${h}x${w}`);
  }
  if (!(Number.isInteger(colOffset) && colOffset >= 0 && Number.isInteger(stride) && colOffset + d <= stride)) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `columns [${colOffset}, ${colOffset + d}) do not fit a row of ${stride}`,
      { colOffset, d, rowStride: stride },
    );
  }
  const need = rows > 0 ? (rowOffset + rows - 1) * stride + colOffset + d : 0;
  if (!(Number.isInteger(rowOffset) && rowOffset >= 0) || out.length < need) {
    throw new SelfxitError('INVALID_ARGUMENT', `output holds ${out.length} values, needs ${need}`);
  }
  return { d, stride };
}

/** Copies each sample's raw map (grid `[h, w]`: pooling is the identity) into its output row. */
function copyRows(
  map: Float32Array,
  rows: number,
  chw: number,
  out: Float32Array,
  rowOffset: number,
  stride: number,
  colOffset: number,
): void {
  for (let r = 0; r < rows; r++) out.set(map.subarray(r * chw, (r + 1) * chw), (rowOffset + r) * stride + colOffset);
}

/**
 * Average-pools `rows` samples of an NCHW map `[rows, c, h, w]` (row-major) into blocks of
 * `(h/gh) x (w/gw)` and writes them, flattened NCHW (`c*gh*gw + i*gw + j`), into `out`: sample `r`'s
 * feature `f` goes to `out[(rowOffset + r) * rowStride + colOffset + f]`. `rowStride` defaults to `c*gh*gw`
 * and `colOffset` to 0 (a plain `[n, c*gh*gw]` matrix); a wider stride lets avg and max features share one
 * preallocated `[n, dAvg + dMax]` matrix. Use it to fill such a matrix batch by batch.
 * @throws SelfxitError `INVALID_ARGUMENT` when the grid does not divide the map or the sizes do not fit.
 */
export function poolNCHWInto(
  map: Float32Array,
  rows: number,
  c: number,
  h: number,
  w: number,
  grid: readonly [number, number],
  out: Float32Array,
  rowOffset: number,
  rowStride?: number,
  colOffset = 0,
): void {
  // Numeric twin of maxPoolNCHWInto (deliberate): same checks and loop nest, another reduction; kept as two plain
  // loops so that the hot inner loop has no per-element branch or callback.
  const { d, stride } = checkInto(map, rows, c, h, w, grid, out, rowOffset, rowStride, colOffset);
  const [gh, gw] = grid;
  if (gh === h && gw === w) {
    copyRows(map, rows, d, out, rowOffset, stride, colOffset);
    return;
  }
  const bh = h / gh;
  const bw = w / gw;
  const inv = 1 / (bh * bw);
  const acc = new Float64Array(gw);
  for (let r = 0; r < rows; r++) {
    for (let ch = 0; ch < c; ch++) {
      const src = (r * c + ch) * h * w;
      const dst = (rowOffset + r) * stride + colOffset + ch * gh * gw;
      for (let i = 0; i < gh; i++) {
        acc.fill(0);
        for (let y = i * bh; y < (i + 1) * bh; y++) {
          const rowBase = src + y * w;
          for (let j = 0; j < gw; j++) {
            let s = 0;
            const x0 = rowBase + j * bw;
            for (let x = 0; x < bw; x++) s += map[x0 + x]!;
            acc[j]! += s;
          }
        }
        for (let j = 0; j < gw; j++) out[dst + i * gw + j] = acc[j]! * inv;
      }
    }
  }
}

/**
 * Max-pools `rows` samples of an NCHW map `[rows, c, h, w]` over blocks of `(h/gh) x (w/gw)` (ONNX MaxPool with
 * kernel = stride, GlobalMaxPool for `[1, 1]`, the raw map for `[h, w]`) and writes them, flattened NCHW
 * (`c*gh*gw + i*gw + j`), to `out[(rowOffset + r) * rowStride + colOffset + f]`, exactly like {@link poolNCHWInto}.
 * @throws SelfxitError `INVALID_ARGUMENT` when the grid does not divide the map or the sizes do not fit.
 */
export function maxPoolNCHWInto(
  map: Float32Array,
  rows: number,
  c: number,
  h: number,
  w: number,
  grid: readonly [number, number],
  out: Float32Array,
  rowOffset: number,
  rowStride?: number,
  colOffset = 0,
): void {
  // Numeric twin of poolNCHWInto (deliberate): see there.
  const { d, stride } = checkInto(map, rows, c, h, w, grid, out, rowOffset, rowStride, colOffset);
  const [gh, gw] = grid;
  if (gh === h && gw === w) {
    copyRows(map, rows, d, out, rowOffset, stride, colOffset);
    return;
  }
  const bh = h / gh;
  const bw = w / gw;
  for (let r = 0; r < rows; r++) {
    for (let ch = 0; ch < c; ch++) {
      const src = (r * c + ch) * h * w;
      const dst = (rowOffset + r) * stride + colOffset + ch * gh * gw;
      for (let i = 0; i < gh; i++) {
        const o = dst + i * gw;
        for (let j = 0; j < gw; j++) out[o + j] = -Infinity;
        for (let y = i * bh; y < (i + 1) * bh; y++) {
          const rowBase = src + y * w;
          for (let j = 0; j < gw; j++) {
            let m = out[o + j]!;
            const x0 = rowBase + j * bw;
            for (let x = 0; x < bw; x++) {
              const v = map[x0 + x]!;
              if (v > m) m = v;
            }
            out[o + j] = m;
          }
        }
      }
    }
  }
}

/**
 * Transposes `rows` samples of a channels-last map `[rows, h, w, c]` to NCHW `[rows, c, h, w]` (ONNX Transpose with
 * perm `[0, 3, 1, 2]`), into `out` when it holds them, else into a new array; returns the NCHW map.
 * @throws SelfxitError `INVALID_ARGUMENT` when `map` holds fewer than `rows·h·w·c` values.
 */
export function nhwcToNCHW(
  map: Float32Array,
  rows: number,
  c: number,
  h: number,
  w: number,
  out?: Float32Array,
): Float32Array {
  const size = c * h * w;
  if (map.length < rows * size)
    throw new SelfxitError('INVALID_ARGUMENT', `map has ${map.length} values, expected ${rows}x${h}x${w}x${c}`);
  const dst = out && out.length >= rows * size ? out : new Float32Array(rows * size);
  const hw = h * w;
  for (let r = 0; r < rows; r++) {
    const base = r * size;
    for (let p = 0; p < hw; p++) {
      const src = base + p * c;
      for (let ch = 0; ch < c; ch++) dst[base + ch * hw + p] = map[src + ch]!;
    }
  }
  return dst;
}

/**
 * Head features of `rows` samples, as the ONNX head computes them: the average-pooled map over `grid`, then,
 * when `maxGrid` is given, the max-pooled map over `maxGrid`, both flattened NCHW, written side by side into
 * rows `rowOffset..` of a `[n, dim]` matrix `out` with `dim = c*gh*gw + c*mh*mw` ({@link headFeatureDim}).
 * With `layout` 'NHWC' the map is `[rows, h, w, c]` and is transposed to NCHW first (into `scratch` when it holds
 * `rows·c·h·w` values), so its features are those of the same map stored NCHW.
 */
export function headFeaturesInto(
  map: Float32Array,
  rows: number,
  c: number,
  h: number,
  w: number,
  grid: readonly [number, number],
  maxGrid: readonly [number, number] | undefined,
  out: Float32Array,
  rowOffset: number,
  layout: MapLayout = 'NCHW',
  scratch?: Float32Array,
): void {
  if (layout === 'NHWC') map = nhwcToNCHW(map, rows, c, h, w, scratch);
  const dim = headFeatureDim(c, grid, maxGrid);
  poolNCHWInto(map, rows, c, h, w, grid, out, rowOffset, dim, 0);
  if (maxGrid) maxPoolNCHWInto(map, rows, c, h, w, maxGrid, out, rowOffset, dim, c * grid[0] * grid[1]);
}

/** Features per sample of {@link headFeaturesInto}: `c*gh*gw`, plus `c*mh*mw` with a max grid. */
export function headFeatureDim(
  c: number,
  grid: readonly [number, number],
  maxGrid?: readonly [number, number],
): number {
  return c * grid[0] * grid[1] + (maxGrid ? c * maxGrid[0] * maxGrid[1] : 0);
}

/** Checks that `grid` (and `maxGrid`, when given) divide an `h x w` map. @throws SelfxitError `INVALID_ARGUMENT`. */
export function checkPoolGrids(
  h: number,
  w: number,
  grid: readonly [number, number],
  maxGrid?: readonly [number, number],
): void {
  checkGrid(h, w, grid);
  if (maxGrid) checkGrid(h, w, maxGrid, 'max-pooling grid');
}

/**
 * Average-pools an NCHW map `[n, c, h, w]` into `[n, c*gh*gw]` features (NCHW flatten order). Allocating wrapper of
 * {@link poolNCHWInto}; numeric twin of {@link maxPoolNCHW} (deliberate: one wrapper per kernel).
 */
export function poolNCHW(
  map: Float32Array,
  n: number,
  c: number,
  h: number,
  w: number,
  grid: readonly [number, number],
): Float32Array {
  checkGrid(h, w, grid);
  const out = new Float32Array(n * c * grid[0] * grid[1]);
  poolNCHWInto(map, n, c, h, w, grid, out, 0);
  return out;
}

/** Max-pools an NCHW map `[n, c, h, w]` into `[n, c*gh*gw]` features (NCHW flatten order); twin of {@link poolNCHW}. */
export function maxPoolNCHW(
  map: Float32Array,
  n: number,
  c: number,
  h: number,
  w: number,
  grid: readonly [number, number],
): Float32Array {
  checkGrid(h, w, grid);
  const out = new Float32Array(n * c * grid[0] * grid[1]);
  maxPoolNCHWInto(map, n, c, h, w, grid, out, 0);
  return out;
}

/**
 * Picks the pooling grid `[gh, gw]` (gh divides h, gw divides w) with the most cells such that
 * `c * gh * gw <= maxFeatures` (default 256); ties go to the most square grid, then the taller one.
 * When even `c > maxFeatures`, returns `[1, 1]` (global average pooling).
 */
export function chooseGrid(c: number, h: number, w: number, maxFeatures = 256): [number, number] {
  let best: [number, number] = [1, 1];
  for (let gh = 1; gh <= h; gh++) {
    if (h % gh !== 0) continue;
    for (let gw = 1; gw <= w; gw++) {
      if (w % gw !== 0 || c * gh * gw > maxFeatures) continue;
      const cells = gh * gw;
      const bestCells = best[0] * best[1];
      const sq = Math.abs(gh - gw);
      const bestSq = Math.abs(best[0] - best[1]);
      if (cells > bestCells || (cells === bestCells && (sq < bestSq || (sq === bestSq && gh > best[0]))))
        best = [gh, gw];
    }
  }
  return best;
}

// Average pooling of NCHW cut maps into head features (the same order as the ONNX head's AveragePool→Flatten).
import { SelfxitError } from '../errors.js';

function checkGrid(h: number, w: number, grid: readonly [number, number]): void {
  const [gh, gw] = grid;
  if (!(Number.isInteger(gh) && Number.isInteger(gw) && gh >= 1 && gw >= 1 && h % gh === 0 && w % gw === 0)) {
    throw new SelfxitError('INVALID_ARGUMENT', `pooling grid ${gh}x${gw} must divide the map ${h}x${w}`, { h, w, grid: [gh, gw] });
  }
}

/**
 * Average-pools `rows` samples of an NCHW map `[rows, c, h, w]` (row-major) into blocks of
 * `(h/gh) x (w/gw)` and writes them, flattened NCHW (`c*gh*gw + i*gw + j`), into `out` starting at
 * sample row `rowOffset` (row length `c*gh*gw`). Use it to fill a preallocated `[n, c*gh*gw]` matrix batch by batch.
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
): void {
  checkGrid(h, w, grid);
  const [gh, gw] = grid;
  const d = c * gh * gw;
  if (map.length < rows * c * h * w) {
    throw new SelfxitError('INVALID_ARGUMENT', `map has ${map.length} values, expected ${rows}x${c}x${h}x${w}`);
  }
  if (out.length < (rowOffset + rows) * d) {
    throw new SelfxitError('INVALID_ARGUMENT', `output holds ${out.length} values, needs ${(rowOffset + rows) * d}`);
  }
  const bh = h / gh;
  const bw = w / gw;
  const inv = 1 / (bh * bw);
  const acc = new Float64Array(gw);
  for (let r = 0; r < rows; r++) {
    for (let ch = 0; ch < c; ch++) {
      const src = (r * c + ch) * h * w;
      const dst = (rowOffset + r) * d + ch * gh * gw;
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

/** Average-pools an NCHW map `[n, c, h, w]` into `[n, c*gh*gw]` features (NCHW flatten order). */
export function poolNCHW(map: Float32Array, n: number, c: number, h: number, w: number, grid: readonly [number, number]): Float32Array {
  checkGrid(h, w, grid);
  const out = new Float32Array(n * c * grid[0] * grid[1]);
  poolNCHWInto(map, n, c, h, w, grid, out, 0);
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
      if (cells > bestCells || (cells === bestCells && (sq < bestSq || (sq === bestSq && gh > best[0])))) best = [gh, gw];
    }
  }
  return best;
}

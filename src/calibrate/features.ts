// Feature extraction for calibration: runs the backbone once over the samples with the candidate cuts as
// extra outputs, pools each cut map (average, and optionally max) into a preallocated [n, d] matrix batch by
// batch (full maps are never all held; float32, or float16 packed per batch), and keeps the backbone's softmax.
import { SelfxitError } from '../errors.js';
import type { InputSpec } from '../bundle/manifest.js';
import { encodeModel, withExtraOutputs, type CutPoint, type OnnxModel } from '../graph/index.js';
import type { PoolGrids } from '../graph/head-spec.js';
import type { MapLayout } from '../graph/map-layout.js';
import { dequantizeInto } from '../graph/quant.js';
import type { OrtModule, OrtSessionOptions } from '../ort/types.js';
import { softmaxRow } from '../engine/cascade.js';
import { checkPoolGrids, headFeatureDim, headFeaturesInto } from './pool.js';
import { throwIfAborted, yieldToEventLoop, type ProgressCallback } from './progress.js';
import { inputDims, toModelInput, type SampleBatch } from '../bundle/input.js';
import { toHalf, type FeatureRows, type PackedFeatures } from './feature-store.js';
import type { SampleRows } from './samples.js';
import { checkOutputRows } from './model-io.js';

/** One cut to extract: the cut and the pooling grid (`[h, w]` keeps the full map, as paper heads need). */
export interface FeatureRequest extends PoolGrids {
  readonly cut: CutPoint;
}

/** Pooled features of one cut (`X`: float32, or any {@link FeatureRows} when extracted packed). */
export interface CutFeatures<X extends FeatureRows = Float32Array> extends PoolGrids {
  readonly cut: CutPoint;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  /** Features per sample: `channels * grid[0] * grid[1]`, plus `channels * maxGrid[0] * maxGrid[1]` with a max grid. */
  readonly dim: number;
  /**
   * `[n, dim]` row-major: the average-pooled map in NCHW flatten order, then (with `maxGrid`) the max-pooled
   * map in the same order — the feature order of a HeadSpec with the same `grid` and `maxGrid` (a channels-last
   * cut's map transposed to NCHW first, as its head does).
   */
  readonly x: X;
}

/** How the pooled matrices are held: float32, or float16 (2 bytes a value, relative error ≤ 2⁻¹¹). */
export type FeatureStorage = 'f32' | 'f16';

/** Bytes per stored feature value. */
export const FEATURE_BYTES: Readonly<Record<FeatureStorage, number>> = { f32: 4, f16: 2 };

/** Bytes of a stored feature matrix. */
export function featureMatrixBytes(x: FeatureRows): number {
  return x instanceof Float32Array ? x.byteLength : x.data.byteLength;
}

export interface FeatureSet<X extends FeatureRows = Float32Array> {
  readonly n: number;
  /** Classes. */
  readonly k: number;
  /** Backbone probabilities `[n, k]` (softmax of the logits, or the model's own probabilities). */
  readonly teacher: Float32Array;
  readonly cuts: readonly CutFeatures<X>[];
}

interface ExtractOptions {
  readonly model: OnnxModel;
  readonly requests: readonly FeatureRequest[];
  /** The images: one block, or rows made a run at a time (augmented copies; never all held). */
  readonly samples: SampleBatch | SampleRows;
  readonly input: InputSpec;
  /** Backbone output name and kind. */
  readonly output: string;
  readonly outputKind: 'logits' | 'probabilities';
  readonly classes: number;
  readonly ort: OrtModule;
  /** Rows per backbone run. Default 64. */
  readonly batchSize?: number;
  readonly sessionOptions?: OrtSessionOptions;
  readonly onProgress?: ProgressCallback;
  readonly signal?: AbortSignal;
  /** Storage of the pooled matrices. Default 'f32'. */
  readonly storage?: FeatureStorage;
  /**
   * Allocate the pooled matrices and the teacher on SharedArrayBuffer (worker threads then read them without a copy;
   * the same bytes as otherwise). Default false.
   */
  readonly shared?: boolean;
}

/** BACKEND_UNAVAILABLE: shared features asked for where there is no SharedArrayBuffer. */
export function noSharedMemory(): SelfxitError {
  return new SelfxitError(
    'BACKEND_UNAVAILABLE',
    'the head-trainer pool asks for shared memory, and SharedArrayBuffer is not available here (a browser page needs ' +
      'cross-origin isolation for it)',
  );
}

/** A zeroed buffer of `bytes`, on SharedArrayBuffer when `shared` (BACKEND_UNAVAILABLE where there is none). */
function buffer(bytes: number, shared: boolean | undefined): ArrayBufferLike {
  if (shared && typeof SharedArrayBuffer === 'undefined') throw noSharedMemory();
  return shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
}

/** How a cut's map is read: its layout as the graph tells it ({@link CutPoint.layout}), NCHW when it does not. */
export function cutLayout(cut: Pick<CutPoint, 'layout'>): MapLayout {
  return cut.layout ?? 'NCHW';
}

/** `[C, H, W]` of a 4-D cut: its shape `[N, C, H, W]`, or `[N, H, W, C]` for a channels-last cut ({@link cutLayout}). */
export function cutGeometry(cut: CutPoint): { channels: number; height: number; width: number } {
  const nhwc = cutLayout(cut) === 'NHWC';
  const [, a, b, d] = cut.shape;
  const [c, h, w] = nhwc ? [d, a, b] : [a, b, d];
  if (cut.shape.length !== 4 || typeof c !== 'number' || typeof h !== 'number' || typeof w !== 'number') {
    throw new SelfxitError(
      'SHAPE_UNKNOWN',
      `cut "${cut.tensor}" is not a 4-D map with known C, H, W (shape [${cut.shape.join(', ')}]${nhwc ? ', channels-last' : ''})`,
      { tensor: cut.tensor },
    );
  }
  return { channels: c, height: h, width: w };
}

/**
 * Runs the backbone over every sample once (batches of `batchSize`), pooling each requested cut on the fly.
 * Memory: the pooled matrices (`n * Σ dim * 4` bytes, half that with `storage` 'f16') plus one batch of full maps
 * and one batch of the largest NHWC cut transposed to NCHW (and, from {@link SampleRows}, one batch of images).
 * @throws SelfxitError `INVALID_ARGUMENT` (before any run) when a request's grid or max grid does not divide its cut.
 */
export function extractFeatures(options: ExtractOptions & { storage?: 'f32' }): Promise<FeatureSet>;
export function extractFeatures(options: ExtractOptions): Promise<FeatureSet<FeatureRows>>;
export async function extractFeatures(options: ExtractOptions): Promise<FeatureSet<FeatureRows>> {
  const { samples, input, ort, requests, classes: k, signal } = options;
  const n = samples.count;
  const batchSize = options.batchSize ?? 64;
  const half = options.storage === 'f16';
  const cuts: (CutFeatures<FeatureRows> & { scratch?: Float32Array; deq?: Float32Array })[] = requests.map((r) => {
    const g = cutGeometry(r.cut);
    checkPoolGrids(g.height, g.width, r.grid, r.maxGrid);
    const dim = headFeatureDim(g.channels, r.grid, r.maxGrid);
    const x: FeatureRows = half
      ? ({
          format: 'f16',
          n,
          d: dim,
          data: new Uint16Array(buffer(2 * n * dim, options.shared)),
        } satisfies PackedFeatures)
      : new Float32Array(buffer(4 * n * dim, options.shared));
    return {
      cut: r.cut,
      ...g,
      grid: r.grid,
      ...(r.maxGrid ? { maxGrid: r.maxGrid } : {}),
      dim,
      x,
      ...(half ? { scratch: new Float32Array(batchSize * dim) } : {}),
      ...(r.cut.dequant ? { deq: new Float32Array(batchSize * g.channels * g.height * g.width) } : {}),
    };
  });
  // one batch of an NHWC cut transposed to NCHW, shared by all of them (sized to the largest), as the reservoir does
  const nhwcSize = Math.max(0, ...cuts.map((c) => (cutLayout(c.cut) === 'NHWC' ? c.channels * c.height * c.width : 0)));
  const nchw = nhwcSize > 0 ? new Float32Array(batchSize * nhwcSize) : undefined;
  const teacher = new Float32Array(buffer(4 * n * k, options.shared));
  const model = withExtraOutputs(
    options.model,
    requests.map((r) => r.cut.tensor),
  );
  const session = await ort.InferenceSession.create(encodeModel(model), options.sessionOptions);
  const buf = new Float32Array(batchSize * input.height * input.width * input.channels);
  try {
    for (let start = 0; start < n; start += batchSize) {
      throwIfAborted(signal, 'feature extraction');
      const rows = Math.min(batchSize, n - start);
      const images = 'rows' in samples ? { data: samples.rows(start, rows), count: rows } : samples;
      const x = new ort.Tensor(
        'float32',
        toModelInput(images, images === samples ? start : 0, rows, input, buf).slice(),
        inputDims(input, rows),
      );
      const out = await session.run({ [input.name]: x });
      const logits = out[options.output]?.data;
      if (!(logits instanceof Float32Array) || logits.length !== rows * k) {
        throw new SelfxitError('UNSUPPORTED_MODEL', `backbone output "${options.output}" is not float32 [N, ${k}]`, {
          tensor: options.output,
        });
      }
      checkOutputRows(logits, rows, k, options.outputKind, options.output);
      for (let r = 0; r < rows; r++) {
        const p = options.outputKind === 'logits' ? softmaxRow(logits, r * k, k) : logits.subarray(r * k, (r + 1) * k);
        teacher.set(p, (start + r) * k);
      }
      for (const c of cuts) {
        const map = cutMap(out[c.cut.tensor]?.data, c.cut, c.deq);
        const layout = cutLayout(c.cut);
        if (c.x instanceof Float32Array)
          headFeaturesInto(map, rows, c.channels, c.height, c.width, c.grid, c.maxGrid, c.x, start, layout, nchw);
        else {
          const tmp = c.scratch!;
          headFeaturesInto(map, rows, c.channels, c.height, c.width, c.grid, c.maxGrid, tmp, 0, layout, nchw);
          const dst = c.x.data;
          const at = start * c.dim;
          for (let i = 0; i < rows * c.dim; i++) dst[at + i] = toHalf(tmp[i]!);
        }
      }
      options.onProgress?.({ stage: 'features', done: start + rows, total: n });
      await yieldToEventLoop();
    }
  } finally {
    await session.release();
  }
  return { n, k, teacher, cuts: cuts.map(({ scratch: _scratch, deq: _deq, ...c }) => c) };
}

/** A cut's map as float32: as is, or a quantized one dequantized into `deq` (the head's DequantizeLinear). */
function cutMap(data: unknown, cut: CutPoint, deq: Float32Array | undefined): Float32Array {
  if (data instanceof Float32Array && !cut.dequant) return data;
  if (cut.dequant && deq && (data instanceof Uint8Array || data instanceof Int8Array)) {
    dequantizeInto(data, cut.dequant, deq);
    return deq;
  }
  throw new SelfxitError(
    'UNSUPPORTED_MODEL',
    `cut "${cut.tensor}" is not a float32 tensor${cut.dequant ? ` (nor ${cut.dequant.dtype})` : ''}`,
    { tensor: cut.tensor },
  );
}

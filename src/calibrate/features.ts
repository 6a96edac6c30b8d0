// Feature extraction for calibration: runs the backbone once over the samples with the candidate cuts as
// extra outputs, pools each cut map (average, and optionally max) into a preallocated [n, d] matrix batch by
// batch (full maps are never all held), and keeps the backbone's softmax as the teacher.
import { SelfxitError } from '../errors.js';
import type { InputSpec } from '../bundle/manifest.js';
import { encodeModel, withExtraOutputs, type CutPoint, type OnnxModel } from '../graph/index.js';
import type { OrtModule, OrtSessionOptions } from '../ort/types.js';
import { softmaxRow } from '../engine/cascade.js';
import { checkPoolGrids, headFeatureDim, headFeaturesInto } from './pool.js';
import { throwIfAborted, yieldToEventLoop, type ProgressCallback } from './progress.js';
import { inputDims, toModelInput, type SampleBatch } from '../bundle/input.js';

/** One cut to extract: the cut and the pooling grid (`[h, w]` keeps the full map, as paper heads need). */
export interface FeatureRequest {
  readonly cut: CutPoint;
  /** Average-pooling grid. */
  readonly grid: readonly [number, number];
  /** Max-pooling grid whose features follow the average-pooled ones (HeadSpec `maxGrid`). Absent: none. */
  readonly maxGrid?: readonly [number, number];
}

/** Pooled features of one cut. */
export interface CutFeatures {
  readonly cut: CutPoint;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly grid: readonly [number, number];
  /** Max-pooling grid, when requested. */
  readonly maxGrid?: readonly [number, number];
  /** Features per sample: `channels * grid[0] * grid[1]`, plus `channels * maxGrid[0] * maxGrid[1]` with a max grid. */
  readonly dim: number;
  /**
   * `[n, dim]` row-major: the average-pooled map in NCHW flatten order, then (with `maxGrid`) the max-pooled
   * map in the same order — the feature order of a HeadSpec with the same `grid` and `maxGrid`.
   */
  readonly x: Float32Array;
}

export interface FeatureSet {
  readonly n: number;
  /** Classes. */
  readonly k: number;
  /** Backbone probabilities `[n, k]` (softmax of the logits, or the model's own probabilities). */
  readonly teacher: Float32Array;
  readonly cuts: readonly CutFeatures[];
}

interface ExtractOptions {
  readonly model: OnnxModel;
  readonly requests: readonly FeatureRequest[];
  readonly samples: SampleBatch;
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
}

/** `[C, H, W]` of a 4-D cut shape `[N, C, H, W]`. */
export function cutGeometry(cut: CutPoint): { channels: number; height: number; width: number } {
  const [, c, h, w] = cut.shape;
  if (cut.shape.length !== 4 || typeof c !== 'number' || typeof h !== 'number' || typeof w !== 'number') {
    throw new SelfxitError(
      'SHAPE_UNKNOWN',
      `cut "${cut.tensor}" is not a 4-D map with known C, H, W (shape [${cut.shape.join(', ')}])`,
      { tensor: cut.tensor },
    );
  }
  return { channels: c, height: h, width: w };
}

/**
 * Runs the backbone over every sample once (batches of `batchSize`), pooling each requested cut on the fly.
 * Memory: the pooled matrices (`n * Σ dim * 4` bytes) plus one batch of full maps.
 * @throws SelfxitError `INVALID_ARGUMENT` (before any run) when a request's grid or max grid does not divide its cut.
 */
export async function extractFeatures(options: ExtractOptions): Promise<FeatureSet> {
  const { samples, input, ort, requests, classes: k, signal } = options;
  const n = samples.count;
  const batchSize = options.batchSize ?? 64;
  const cuts: CutFeatures[] = requests.map((r) => {
    const g = cutGeometry(r.cut);
    checkPoolGrids(g.height, g.width, r.grid, r.maxGrid);
    const dim = headFeatureDim(g.channels, r.grid, r.maxGrid);
    return {
      cut: r.cut,
      ...g,
      grid: r.grid,
      ...(r.maxGrid ? { maxGrid: r.maxGrid } : {}),
      dim,
      x: new Float32Array(n * dim),
    };
  });
  const teacher = new Float32Array(n * k);
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
      const x = new ort.Tensor(
        'float32',
        toModelInput(samples, start, rows, input, buf).slice(),
        inputDims(input, rows),
      );
      const out = await session.run({ [input.name]: x });
      const logits = out[options.output]?.data;
      if (!(logits instanceof Float32Array) || logits.length !== rows * k) {
        throw new SelfxitError('UNSUPPORTED_MODEL', `backbone output "${options.output}" is not float32 [N, ${k}]`, {
          tensor: options.output,
        });
      }
      for (let r = 0; r < rows; r++) {
        const p = options.outputKind === 'logits' ? softmaxRow(logits, r * k, k) : logits.subarray(r * k, (r + 1) * k);
        teacher.set(p, (start + r) * k);
      }
      for (const c of cuts) {
        const map = out[c.cut.tensor]?.data;
        if (!(map instanceof Float32Array))
          throw new SelfxitError('UNSUPPORTED_MODEL', `cut "${c.cut.tensor}" is not a float32 tensor`, {
            tensor: c.cut.tensor,
          });
        headFeaturesInto(map, rows, c.channels, c.height, c.width, c.grid, c.maxGrid, c.x, start);
      }
      options.onProgress?.({ stage: 'features', done: start + rows, total: n });
      await yieldToEventLoop();
    }
  } finally {
    await session.release();
  }
  return { n, k, teacher, cuts };
}

// Heads study only: "one cheap convolution before pooling" without back-propagating through it. Each cut gets a
// fixed 1x1 convolution learned without labels — spherical k-means centroids of the map's channel vectors (one
// vector per spatial position, from a few hundred calibration images), each with a threshold at a quantile of its
// responses — then ReLU, global average and global max pooling: `[relu(C·x − t) avg | max]`, 2K features per cut.
// A bag-of-local-patterns encoding (Coates & Ng 2011), run in onnxruntime as extra outputs of the backbone.
import { cutGeometry } from '../src/calibrate/features.js';
import { createRng } from '../src/calibrate/rng.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import {
  BATCH_DIM,
  encodeModel,
  withExtraOutputs,
  type CutPoint,
  type InputSpec,
  type OnnxModel,
  type OrtModule,
  type OrtSessionOptions,
  type SampleBatch,
} from '../src/core.js';
import { withGraph } from '../src/graph/model.js';
import { makeNode, makeTensor, makeValueInfo } from '../src/graph/proto.js';

/** A 1x1 convolution `[K, C]` with bias `-threshold`. */
export interface Encoder {
  readonly k: number;
  readonly c: number;
  readonly weight: Float32Array;
  readonly bias: Float32Array;
}

interface Ctx {
  readonly model: OnnxModel;
  readonly cuts: readonly CutPoint[];
  readonly input: InputSpec;
  readonly ort: OrtModule;
  readonly sessionOptions?: OrtSessionOptions;
}

/** Centroids per cut: 4 per channel, at most 128. */
export const encoderWidth = (channels: number): number => Math.min(128, 4 * channels);

/** Fits one encoder per cut on the first `images` samples; `quantile` of the responses is each unit's threshold. */
export async function fitEncoders(
  ctx: Ctx,
  samples: SampleBatch,
  images = 256,
  quantile = 0.75,
  seed = 0,
): Promise<Encoder[]> {
  const rows = Math.min(images, samples.count);
  const session = await ctx.ort.InferenceSession.create(
    encodeModel(
      withExtraOutputs(
        ctx.model,
        ctx.cuts.map((c) => c.tensor),
      ),
    ),
    ctx.sessionOptions,
  );
  // Every cut's maps of the first `rows` images, [rows, C, H, W].
  const maps = ctx.cuts.map((cut) => {
    const g = cutGeometry(cut);
    return new Float32Array(rows * g.channels * g.height * g.width);
  });
  try {
    for (let s = 0; s < rows; s += 64) {
      const r = Math.min(64, rows - s);
      const x = new ctx.ort.Tensor('float32', toModelInput(samples, s, r, ctx.input).slice(), inputDims(ctx.input, r));
      const out = await session.run({ [ctx.input.name]: x });
      ctx.cuts.forEach((c, i) => maps[i]!.set(out[c.tensor]!.data as Float32Array, (s * maps[i]!.length) / rows));
    }
  } finally {
    await session.release();
  }
  const rng = createRng(seed);
  return ctx.cuts.map((cut, i) => {
    const { channels: c, height: h, width: w } = cutGeometry(cut);
    const k = encoderWidth(c);
    const hw = h * w;
    const total = rows * hw;
    const m = Math.min(total, 40000);
    // Position vectors (channel vectors at random positions), raw and unit-length.
    const raw = new Float32Array(m * c);
    const unit = new Float32Array(m * c);
    const map = maps[i]!;
    for (let j = 0; j < m; j++) {
      const p = m === total ? j : rng.int(total);
      const r = Math.floor(p / hw);
      const pos = p % hw;
      let norm = 0;
      for (let ch = 0; ch < c; ch++) {
        const v = map[r * c * hw + ch * hw + pos]!;
        raw[j * c + ch] = v;
        norm += v * v;
      }
      const inv = norm > 0 ? 1 / Math.sqrt(norm) : 0;
      for (let ch = 0; ch < c; ch++) unit[j * c + ch] = raw[j * c + ch]! * inv;
    }
    // Spherical k-means.
    const cent = new Float32Array(k * c);
    for (let q = 0; q < k; q++) {
      const j = rng.int(m);
      cent.set(unit.subarray(j * c, (j + 1) * c), q * c);
    }
    const assign = new Int32Array(m);
    for (let it = 0; it < 15; it++) {
      for (let j = 0; j < m; j++) {
        let best = 0;
        let bestV = -Infinity;
        for (let q = 0; q < k; q++) {
          let d = 0;
          for (let ch = 0; ch < c; ch++) d += cent[q * c + ch]! * unit[j * c + ch]!;
          if (d > bestV) {
            bestV = d;
            best = q;
          }
        }
        assign[j] = best;
      }
      const sum = new Float64Array(k * c);
      for (let j = 0; j < m; j++) {
        const o = assign[j]! * c;
        for (let ch = 0; ch < c; ch++) sum[o + ch] = sum[o + ch]! + unit[j * c + ch]!;
      }
      for (let q = 0; q < k; q++) {
        let norm = 0;
        for (let ch = 0; ch < c; ch++) norm += sum[q * c + ch]! ** 2;
        if (norm === 0) {
          const j = rng.int(m); // empty cluster: reseed
          cent.set(unit.subarray(j * c, (j + 1) * c), q * c);
        } else for (let ch = 0; ch < c; ch++) cent[q * c + ch] = sum[q * c + ch]! / Math.sqrt(norm);
      }
    }
    // Thresholds: the quantile of each unit's response to the raw vectors.
    const bias = new Float32Array(k);
    const resp = new Float32Array(m);
    for (let q = 0; q < k; q++) {
      for (let j = 0; j < m; j++) {
        let d = 0;
        for (let ch = 0; ch < c; ch++) d += cent[q * c + ch]! * raw[j * c + ch]!;
        resp[j] = d;
      }
      resp.sort();
      bias[q] = -resp[Math.min(m - 1, Math.floor(quantile * m))]!;
    }
    return { k, c, weight: cent, bias };
  });
}

/** `[n, 2K]` per cut: global average then global max of `relu(conv1x1(map))`. */
export async function encodedFeatures(
  ctx: Ctx,
  encoders: readonly Encoder[],
  samples: SampleBatch,
  batchSize = 64,
): Promise<Float32Array[]> {
  const g = ctx.model.proto.graph!;
  const nodes = [...(g.node ?? [])];
  const inits = [...(g.initializer ?? [])];
  const outputs = [...(g.output ?? [])];
  const names: [string, string][] = [];
  ctx.cuts.forEach((cut, i) => {
    const e = encoders[i]!;
    const p = `enc${i}/`;
    inits.push(
      makeTensor(`${p}w`, 'float32', [e.k, e.c, 1, 1], e.weight),
      makeTensor(`${p}b`, 'float32', [e.k], e.bias),
    );
    nodes.push(
      makeNode('Conv', [cut.tensor, `${p}w`, `${p}b`], [`${p}conv`], { kernel_shape: [1, 1] }, `${p}Conv`),
      makeNode('Relu', [`${p}conv`], [`${p}relu`], {}, `${p}Relu`),
      makeNode('GlobalAveragePool', [`${p}relu`], [`${p}avg`], {}, `${p}Avg`),
      makeNode('GlobalMaxPool', [`${p}relu`], [`${p}max`], {}, `${p}Max`),
    );
    outputs.push(
      makeValueInfo(`${p}avg`, 'float32', [BATCH_DIM, e.k, 1, 1]),
      makeValueInfo(`${p}max`, 'float32', [BATCH_DIM, e.k, 1, 1]),
    );
    names.push([`${p}avg`, `${p}max`]);
  });
  const model = withGraph(ctx.model, { ...g, node: nodes, initializer: inits, output: outputs });
  const session = await ctx.ort.InferenceSession.create(encodeModel(model), ctx.sessionOptions);
  const n = samples.count;
  const out = encoders.map((e) => new Float32Array(n * 2 * e.k));
  try {
    for (let s = 0; s < n; s += batchSize) {
      const r = Math.min(batchSize, n - s);
      const x = new ctx.ort.Tensor('float32', toModelInput(samples, s, r, ctx.input).slice(), inputDims(ctx.input, r));
      const res = await session.run({ [ctx.input.name]: x });
      encoders.forEach((e, i) => {
        const a = res[names[i]![0]]!.data as Float32Array;
        const m = res[names[i]![1]]!.data as Float32Array;
        for (let row = 0; row < r; row++) {
          out[i]!.set(a.subarray(row * e.k, (row + 1) * e.k), (s + row) * 2 * e.k);
          out[i]!.set(m.subarray(row * e.k, (row + 1) * e.k), (s + row) * 2 * e.k + e.k);
        }
      });
    }
  } finally {
    await session.release();
  }
  return out;
}

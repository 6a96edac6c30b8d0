// Model analysis for `inspect` and `prepare`: shapes (value_info or an onnxruntime probe at batch 1), MACs, params, cuts.
import { SelfxitError } from '../errors.js';
import type { OrtModule, OrtTensor } from '../ort/types.js';
import { macOperands, nodeMacs, paramStats } from './cost.js';
import { cutDisplayNames, sweepCuts } from './cuts.js';
import { inferDtypes } from './dtypes.js';
import { constTensorOf, type GraphIndex } from './graph-index.js';
import { encodeModel, graphInputs, graphOutputs, type OnnxModel, type TensorInfo } from './model.js';
import { readValueInfo, toNum, typedArrayOf, type DType, type TypedData } from './proto.js';
import { cutDequantization, type Dequantization } from './quant.js';
import { BATCH_DIM, withExtraOutputs } from './split.js';
import { inferMapLayouts } from './layout.js';
import type { MapLayout } from './map-layout.js';

/** A place where the model can be split, with what crosses it and the backbone cost before it. */
export interface CutPoint {
  tensor: string;
  /** Dim 0 is `'batch'` when the model's batch is dynamic. */
  shape: (number | string)[];
  dtype: DType;
  /** Display name, unique per place among the model's cuts (cutDisplayNames; absent: exitName of the tensor). */
  name?: string;
  /** Cumulative MACs per sample of everything before the cut. */
  macs: number;
  /** `macs / total MACs` (0 when the model has no MACs). */
  fraction: number;
  /** uint8/int8 cuts: how a head reads them as float (graph/quant.ts); `dequantMissing` says why it was not found. */
  dequant?: Dequantization;
  dequantMissing?: string;
  /**
   * A 4-D cut's layout as the graph tells it (graph/layout.ts): `'NCHW'`, or `'NHWC'` (channels-last: `shape` is
   * `[N, H, W, C]`). Absent: not 4-D, or the graph does not tell; such a 4-D cut is read as NCHW.
   */
  layout?: MapLayout;
}

/** What {@link analyzeModel} finds in a model: its inputs and outputs, cost, cut points and the shapes it inferred. */
export interface ModelAnalysis {
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  /** MACs per sample (conv/matmul-type ops only; elementwise ops count 0); a fixed batch B > 1 divided out. */
  macs: number;
  /** Parameter count (elements of the initializers the graph reads). */
  params: number;
  paramBytes: number;
  /** Every cut, in topological order. */
  cuts: CutPoint[];
  /** Concrete shapes at batch 1 of every activation, cut, and conv/matmul operand. */
  shapes: Map<string, number[]>;
  /** Element types of the values in `shapes` (and more, where known statically). */
  dtypes: Map<string, DType>;
  /** MACs per node, aligned with `model.proto.graph.node` (dead nodes 0). */
  nodeMacs: number[];
}

/** Options of {@link analyzeModel}. */
export interface AnalyzeOptions {
  /** onnxruntime module used to probe shapes missing from value_info. Without it, missing shapes throw SHAPE_UNKNOWN. */
  ort?: OrtModule;
}

/** Concrete shapes declared in the model (value_info, inputs, outputs, constants), batch symbol replaced by 1. */
function declaredShapes(index: GraphIndex): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  const g = index.graph;
  const inVi = (g.input ?? []).find((i) => i.name === index.input);
  const batchSym = inVi ? readValueInfo(inVi).shape?.[0] : undefined;
  for (const vi of [...(g.input ?? []), ...(g.valueInfo ?? []), ...(g.output ?? [])]) {
    const s = readValueInfo(vi).shape;
    if (!s || !vi.name) continue;
    const c = s.map((d, i) =>
      i === 0 && typeof d === 'string' && (d === batchSym || vi.name === index.input) ? 1 : d,
    );
    if (c.every((d): d is number => typeof d === 'number')) shapes.set(vi.name, c);
  }
  for (const [name, t] of index.initializers) shapes.set(name, (t.dims ?? []).map(toNum));
  return shapes;
}

function zeroData(dtype: DType, n: number): TypedData {
  const data = typedArrayOf(dtype, n);
  if (!data) throw new SelfxitError('UNSUPPORTED_MODEL', `Cannot probe a model whose input is ${dtype}`);
  return data;
}

/** Runs the model once at batch 1 (or the batch its input fixes) on zeros with `tensors` as extra outputs; returns their shapes and types. */
async function probe(
  m: OnnxModel,
  index: GraphIndex,
  tensors: string[],
  ort: OrtModule,
): Promise<Map<string, { shape: number[]; dtype: DType }>> {
  const [info] = graphInputs(m);
  const shape = info!.shape.map((d, i) => {
    if (typeof d === 'number') return d;
    if (i === 0) return 1;
    throw new SelfxitError(
      'SHAPE_UNKNOWN',
      `Input "${info!.name}" has the symbolic dimension "${d}" at axis ${i}; only the batch (axis 0) may be dynamic: give the image size (inspect/prepare --shape H,W,C; prepare's input.height/width/channels)`,
      { tensor: info!.name },
    );
  });
  const probeModel = withExtraOutputs(m, tensors);
  let result: Record<string, OrtTensor>;
  try {
    const session = await ort.InferenceSession.create(encodeModel(probeModel));
    try {
      const n = shape.reduce((a, b) => a * b, 1);
      const feed = {
        [index.input]: new ort.Tensor(info!.dtype as 'float32', zeroData(info!.dtype, n) as Float32Array, shape),
      };
      result = (await session.run(feed)) as Record<string, OrtTensor>;
    } finally {
      await session.release();
    }
  } catch (e) {
    if (e instanceof SelfxitError) throw e;
    throw new SelfxitError(
      'SHAPE_UNKNOWN',
      `Shape probe run with onnxruntime failed: ${e instanceof Error ? e.message : String(e)}`,
      {},
      { cause: e },
    );
  }
  const out = new Map<string, { shape: number[]; dtype: DType }>();
  for (const t of tensors) {
    const v = result[t];
    if (v) out.set(t, { shape: [...v.dims], dtype: v.type as DType });
  }
  return out;
}

/**
 * Analyses a model: inputs/outputs, MACs and params, every cut with its shape, dtype and cumulative MACs.
 * Shapes come from the model's value_info; any missing ones from one onnxruntime run at batch 1 on zeros with
 * the needed tensors added as outputs (`opts.ort`).
 * @throws SelfxitError `SHAPE_UNKNOWN` when shapes are missing and no `ort` is given (or the probe fails);
 *   `UNSUPPORTED_MODEL`, `INVALID_MODEL` from graph indexing.
 */
export async function analyzeModel(m: OnnxModel, opts: AnalyzeOptions = {}): Promise<ModelAnalysis> {
  const sweep = sweepCuts(m);
  const index = sweep.index;
  const inputs = graphInputs(m);
  const outputs = graphOutputs(m);
  const shapes = declaredShapes(index);
  const dtypes = inferDtypes(index);

  // Values whose shapes we need: activations (incl. cuts) and conv/matmul operands.
  const needed = new Set<string>();
  for (const [name, k] of index.kind) if (k === 'act' && name !== index.input) needed.add(name);
  for (const n of index.nodes) for (const o of macOperands(n)) if (o) needed.add(o);
  const missing: string[] = [];
  for (const name of needed) {
    if (shapes.has(name)) continue;
    const ct = constTensorOf(index, name);
    if (ct) shapes.set(name, (ct.dims ?? []).map(toNum));
    else missing.push(name);
  }
  if (missing.length > 0) {
    if (!opts.ort) {
      throw new SelfxitError(
        'SHAPE_UNKNOWN',
        `Shapes of ${missing.length} tensors (e.g. "${missing[0]}") are not in the model's value_info; pass { ort } to probe them`,
        { tensor: missing[0] },
      );
    }
    const found = await probe(m, index, missing, opts.ort);
    for (const [name, { shape, dtype }] of found) {
      shapes.set(name, shape);
      dtypes.set(name, dtype);
    }
  }

  const origIndex = new Map<unknown, number>();
  (index.graph.node ?? []).forEach((n, i) => origIndex.set(n, i));
  const perNode = new Array<number>((index.graph.node ?? []).length).fill(0);
  const cumulative: number[] = [];
  let total = 0;
  // Shapes hold the batch the input fixes (the probe runs at it): MACs per sample divide by it.
  const inShape = inputs[0]?.shape ?? [];
  const batch = inShape.length > 1 && typeof inShape[0] === 'number' && inShape[0] > 1 ? inShape[0] : 1;
  index.nodes.forEach((n) => {
    const c = nodeMacs(n, (name) => shapes.get(name)) / batch;
    perNode[origIndex.get(n)!] = c;
    total += c;
    cumulative.push(total);
  });
  const dynamicBatch = typeof inputs[0]?.shape[0] === 'string';
  const layouts = inferMapLayouts(
    index.nodes,
    (name) => shapes.get(name)?.length,
    (name) => index.kind.get(name) === 'const',
  );
  const cuts: CutPoint[] = sweep.cuts.map((tensor) => {
    const s = shapes.get(tensor);
    const dtype = dtypes.get(tensor);
    if (!s || !dtype)
      throw new SelfxitError('SHAPE_UNKNOWN', `Shape or element type of cut "${tensor}" is unknown`, { tensor });
    const macs = cumulative[sweep.position.get(tensor)!]!;
    const layout = s.length === 4 ? layouts.get(tensor) : undefined;
    return {
      tensor,
      shape: s.map((d, i) => (i === 0 && dynamicBatch ? BATCH_DIM : d)),
      dtype,
      macs,
      fraction: total > 0 ? macs / total : 0,
      ...cutDequantization(index, tensor, dtype),
      ...(layout ? { layout } : {}),
    };
  });
  const names = cutDisplayNames(cuts);
  for (const c of cuts) c.name = names.get(c.tensor)!;
  const { params, paramBytes } = paramStats(index);
  return { inputs, outputs, macs: total, params, paramBytes, cuts, shapes, dtypes, nodeMacs: perNode };
}

/**
 * Backbone MACs per sample of each segment when splitting at `cuts` (in order): differences of cumulative MACs.
 * @throws SelfxitError `INVALID_CUT` for a name that is not in `analysis.cuts`.
 */
export function segmentMacs(analysis: Pick<ModelAnalysis, 'macs' | 'cuts'>, cuts: readonly string[]): number[] {
  const byName = new Map(analysis.cuts.map((c) => [c.tensor, c.macs]));
  const out: number[] = [];
  let prev = 0;
  for (const c of cuts) {
    const m = byName.get(c);
    if (m === undefined) throw new SelfxitError('INVALID_CUT', `"${c}" is not a cut of this model`, { tensor: c });
    out.push(m - prev);
    prev = m;
  }
  out.push(analysis.macs - prev);
  return out;
}

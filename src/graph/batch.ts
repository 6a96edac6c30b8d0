// Fixed-batch models (input `[B, C, H, W]`, output `[B, classes]`, or `[classes]` at B = 1): the batch made dynamic
// where the graph allows it (Reshape targets, Squeeze(0) at B = 1 rewritten), checked by probe runs in onnxruntime.
import { SelfxitError } from '../errors.js';
import type { OrtModule, OrtTensor } from '../ort/types.js';
import { constTensorOf, indexGraph, type GraphIndex } from './graph-index.js';
import { encodeModel, graphInputs, graphOutputs, realInputProtos, withGraph, type OnnxModel } from './model.js';
import { findAttr, makeNode, makeTensor, makeValueInfo, readValueInfo, tensorNumbers, type onnx } from './proto.js';
import { withExtraOutputs } from './split.js';

/** How prepare handles the model's batch: 'dynamic' as given; 'rewritten' (was fixed, made dynamic and checked);
 * 'one' (fixed at 1 and not rewritable: every run takes one image). */
export type BatchMode = 'dynamic' | 'rewritten' | 'one';

/** What {@link resolveBatch} decided: the model to use, the mode, and why (for prepare's warnings). */
export interface BatchResolution {
  readonly model: OnnxModel;
  readonly mode: BatchMode;
  readonly note?: string;
}

/** The batch the model's single input fixes (dim 0 a number, rank > 1), else undefined (dynamic). */
export function fixedBatchOf(m: OnnxModel): number | undefined {
  const inp = graphInputs(m)[0];
  const b = inp && inp.shape.length > 1 ? inp.shape[0] : undefined;
  return typeof b === 'number' ? b : undefined;
}

/** True when the model's single input has batch dim fixed at 1. */
export function hasFixedBatch(m: OnnxModel): boolean {
  return fixedBatchOf(m) === 1;
}

const DYN = 'N';

/** Ranks declared in the model (inputs, value_info, outputs). */
function declaredRanks(g: onnx.IGraphProto): Map<string, number> {
  const ranks = new Map<string, number>();
  for (const vi of [...(g.input ?? []), ...(g.valueInfo ?? []), ...(g.output ?? [])]) {
    const s = readValueInfo(vi).shape;
    if (s && vi.name) ranks.set(vi.name, s.length);
  }
  return ranks;
}

/** Squeeze inputs whose negative axes need the input's rank to tell whether axis 0 is among them. */
function squeezeRankNeeds(m: OnnxModel): string[] {
  const index = indexGraph(m);
  const known = declaredRanks(index.graph);
  const out: string[] = [];
  for (const n of index.nodes) {
    if (n.opType !== 'Squeeze' || (n.domain ?? '') !== '') continue;
    const axes = squeezeAxes(index, n);
    const x = n.input?.[0] ?? '';
    if (axes?.some((a) => a < 0) && !known.has(x)) out.push(x);
  }
  return out;
}

/** A Squeeze node's axes (attribute before opset 13, else constant input); undefined when not given or not constant. */
function squeezeAxes(index: GraphIndex, n: onnx.INodeProto): number[] | undefined {
  const attr = findAttr(n, 'axes');
  if (attr) return (attr.ints ?? []).map(Number);
  const t = n.input?.[1] ? constTensorOf(index, n.input[1]) : undefined;
  return t ? tensorNumbers(t) : undefined;
}

/**
 * The model with a symbolic batch, for a model whose input fixes the batch at B (default: the input's dim 0): input
 * and outputs `[N, ...]` (at B = 1, a rank-1 output gets a batch dim), value_info dropped (shapes are probed again),
 * Reshape targets `[B, ...]` → `[-1, ...]` (or `[0, ...]` when they hold a -1), from an initializer or a Constant
 * (`value` or `value_ints`). At B = 1 also: rank-1 Reshape targets `[d]` → `[-1, d]` (`[-1]` → `[0, -1]`), and Squeeze
 * of axis 0 (or its negative form, the rank from `ranks` or the model's declarations) without it (Identity when no
 * axis is left). Other nodes are kept: whether the result is right is for {@link resolveBatch}'s probe to say.
 */
export function rewriteBatchDynamic(m: OnnxModel, ranks?: ReadonlyMap<string, number>): OnnxModel {
  const index = indexGraph(m);
  const g = m.proto.graph!;
  const batch = fixedBatchOf(m) ?? 1;
  const rankOf = declaredRanks(g);
  for (const [k, v] of ranks ?? []) rankOf.set(k, v);
  const extraInits: onnx.ITensorProto[] = [];
  const replaced = new Map<string, string>();
  let fresh = 0;
  /** A new int64 initializer holding `values` (the old one may be shared). */
  const replacedBases = new Set<string>();
  const newConst = (base: string, values: number[]): string => {
    replacedBases.add(base);
    const name = `${base}_selfxit_batch${fresh++}`;
    extraInits.push(makeTensor(name, 'int64', [values.length], values));
    return name;
  };
  const constValues = (name: string): number[] | undefined => {
    const t = constTensorOf(index, name);
    return t ? tensorNumbers(t) : undefined;
  };
  const nodes: onnx.INodeProto[] = [];
  for (const n of g.node ?? []) {
    if (n.opType === 'Reshape' && (n.domain ?? '') === '') {
      const target = n.input?.[1] ?? '';
      const t = constValues(target);
      if (!t) {
        nodes.push(n);
        continue;
      }
      let nt: number[] | undefined;
      if (t.length > 1 && t[0] === batch) nt = [t.includes(-1) ? 0 : -1, ...t.slice(1)];
      else if (t.length === 1 && batch === 1) nt = t[0] === -1 ? [0, -1] : [-1, t[0]!];
      if (!nt) {
        nodes.push(n);
        continue;
      }
      let name = replaced.get(`${target}:${nt.join(',')}`);
      if (!name) {
        name = newConst(target, nt);
        replaced.set(`${target}:${nt.join(',')}`, name);
      }
      nodes.push({ ...n, input: [n.input![0]!, name, ...(n.input ?? []).slice(2)] });
    } else if (n.opType === 'Squeeze' && (n.domain ?? '') === '' && batch === 1) {
      const attr = findAttr(n, 'axes');
      const given = squeezeAxes(index, n);
      const rank = rankOf.get(n.input?.[0] ?? '');
      const axes = given?.map((a) => (a < 0 && rank !== undefined ? a + rank : a));
      if (!axes || !axes.includes(0)) {
        nodes.push(n);
        continue;
      }
      const rest = axes.filter((a) => a !== 0);
      if (rest.length === 0) {
        if (n.input?.[1]) replacedBases.add(n.input[1]); // the axes, dropped when nothing else reads them
        nodes.push(makeNode('Identity', [n.input![0]!], [...(n.output ?? [])], {}, n.name ?? ''));
      } else if (attr)
        nodes.push({ ...n, attribute: (n.attribute ?? []).map((a) => (a === attr ? { ...a, ints: rest } : a)) });
      else nodes.push({ ...n, input: [n.input![0]!, newConst(n.input![1]!, rest)] });
    } else nodes.push(n);
  }
  // Drop the constants the rewrite orphaned (onnxruntime warns about unused initializers).
  const used = new Set(nodes.flatMap((n) => n.input ?? []));
  const orphan = (name: string): boolean => name.length > 0 && !used.has(name) && replacedBases.has(name);
  const keptNodes = nodes.filter((n) => !(n.opType === 'Constant' && orphan(n.output?.[0] ?? '')));
  const keptInits = [...(g.initializer ?? []), ...extraInits].filter((t) => !orphan(t.name ?? ''));
  const inputName = realInputProtos(m)[0]?.name;
  const withBatch = (vi: onnx.IValueInfoProto, isInput: boolean): onnx.IValueInfoProto => {
    const { dtype, shape } = readValueInfo(vi);
    if (!shape) return vi;
    const s =
      shape.length >= 2 && shape[0] === batch
        ? [DYN, ...shape.slice(1)]
        : isInput || batch !== 1
          ? shape
          : [DYN, ...shape];
    return makeValueInfo(vi.name ?? '', dtype, s);
  };
  return withGraph(m, {
    ...g,
    node: keptNodes,
    initializer: keptInits,
    input: (g.input ?? []).map((vi) => (vi.name === inputName ? withBatch(vi, true) : vi)),
    output: (g.output ?? []).map((vi) => withBatch(vi, false)),
    valueInfo: [],
  });
}

/** Deterministic probe images in [-1, 1]. */
function probeData(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/**
 * Decides how to run a model's batch. A dynamic batch stays as it is. A batch fixed at B is rewritten
 * ({@link rewriteBatchDynamic}) and kept when probe runs of the rewrite at batch 2 and at batch 1 give, row by row,
 * the original model's outputs (relative error ≤ 1e-4) with the batch as dim 0 (so a batch-1 run still gives
 * `[1, ...]`). Otherwise, at B = 1 the original is kept and every run takes one image ('one').
 * @throws SelfxitError `UNSUPPORTED_MODEL` when B > 1 and the batch cannot be made dynamic (prepare and the runtime
 *   run 1 image, or a few, at a time).
 */
export async function resolveBatch(m: OnnxModel, ort: OrtModule): Promise<BatchResolution> {
  const batch = fixedBatchOf(m);
  if (batch === undefined) return { model: m, mode: 'dynamic' };
  const fail = (note: string): BatchResolution => {
    if (batch === 1) return { model: m, mode: 'one', note };
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `The model's input fixes the batch at ${batch} and it could not be made dynamic (${note}); re-export the model with a dynamic batch (or batch 1)`,
      { batch },
    );
  };
  const inp = graphInputs(m)[0]!;
  const dims = inp.shape.map((d) => (typeof d === 'number' ? d : NaN));
  if (inp.dtype !== 'float32' || dims.some((d) => !Number.isFinite(d)))
    return fail('the input is not a float32 tensor of fixed shape');
  const per = dims.slice(1).reduce((a, b) => a * b, 1);
  const rows = Array.from({ length: Math.max(2, batch) }, (_, r) => probeData(per, r + 1));
  /** Probe rows from..from+n-1, one tensor. */
  const concat = (n: number, from: number): Float32Array => {
    const x = new Float32Array(n * per);
    for (let r = 0; r < n; r++) x.set(rows[from + r]!, r * per);
    return x;
  };
  const outName = graphOutputs(m)[0]?.name ?? '';
  const needRanks = batch === 1 ? squeezeRankNeeds(m) : [];
  const ranks = new Map<string, number>();
  const run = async (model: OnnxModel, n: number, from = 0): Promise<OrtTensor> => {
    // A failing probe is an expected outcome: keep onnxruntime's own error log quiet.
    const probed = model === m && needRanks.length > 0 ? withExtraOutputs(m, needRanks) : model;
    const s = await ort.InferenceSession.create(encodeModel(probed), { logSeverityLevel: 4 });
    try {
      const out = await s.run({ [inp.name]: new ort.Tensor('float32', concat(n, from), [n, ...dims.slice(1)]) });
      for (const x of model === m ? needRanks : []) if (out[x]) ranks.set(x, (out[x] as OrtTensor).dims.length);
      const t = out[outName] as OrtTensor | undefined;
      if (!t || !(t.data instanceof Float32Array)) throw new Error(`no float32 output "${outName}"`);
      return t;
    } finally {
      await s.release();
    }
  };
  let rewritten: OnnxModel;
  try {
    // The original's outputs for rows 0 and 1: two runs at batch 1, or rows of one run at its batch.
    const want: Float32Array[] = [];
    if (batch === 1) for (const r of [0, 1]) want.push((await run(m, 1, r)).data as Float32Array);
    else {
      const t = await run(m, batch);
      if (t.dims[0] !== batch) throw new Error(`the output's dim 0 is ${t.dims[0]}, not the batch ${batch}`);
      const k = t.data.length / batch;
      for (const r of [0, 1]) want.push((t.data as Float32Array).slice(r * k, (r + 1) * k));
    }
    rewritten = rewriteBatchDynamic(m, ranks);
    const k = want[0]!.length;
    let scale = 1e-6;
    for (const w of want) for (const v of w) scale = Math.max(scale, Math.abs(v));
    for (const n of [2, 1]) {
      const got = await run(rewritten, n);
      if (got.dims[0] !== n) throw new Error(`output batch is ${got.dims[0]}, not ${n}`);
      const data = got.data as Float32Array;
      if (data.length !== n * k) throw new Error(`${data.length} outputs at batch ${n} for ${k} per image`);
      for (let r = 0; r < n; r++)
        for (let i = 0; i < k; i++)
          if (Math.abs(data[r * k + i]! - want[r]![i]!) > 1e-4 * scale)
            throw new Error(`row ${r} at batch ${n} differs from the original's output at element ${i}`);
    }
  } catch (e) {
    if (e instanceof SelfxitError) throw e;
    const why = e instanceof Error ? e.message : String(e);
    return fail(`a probe of the rewritten graph failed (${why.split('\n')[0]})`);
  }
  return {
    model: rewritten,
    mode: 'rewritten',
    note: `made dynamic (checked by probe runs at batch 2 and 1 against the batch-${batch} model)`,
  };
}

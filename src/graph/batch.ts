// Fixed-batch models (input `[1, C, H, W]`, output `[1, classes]` or `[classes]`): the batch made dynamic where the
// graph allows it (batch-1 Reshape targets and Squeeze(0) rewritten), checked by a probe run at batch 2 in onnxruntime.
import { SelfxitError } from '../errors.js';
import type { OrtModule, OrtTensor } from '../ort/types.js';
import { indexGraph } from './graph-index.js';
import { encodeModel, graphInputs, graphOutputs, realInputProtos, withGraph, type OnnxModel } from './model.js';
import { findAttr, makeNode, makeTensor, makeValueInfo, readValueInfo, tensorNumbers, type onnx } from './proto.js';

/** How prepare handles the model's batch: 'dynamic' as given; 'rewritten' (was fixed at 1, made dynamic and checked);
 * 'one' (fixed at 1 and not rewritable: every run takes one image). */
export type BatchMode = 'dynamic' | 'rewritten' | 'one';

/** What {@link resolveBatch} decided: the model to use, the mode, and why (for prepare's warnings). */
export interface BatchResolution {
  readonly model: OnnxModel;
  readonly mode: BatchMode;
  readonly note?: string;
}

/** True when the model's single input has batch dim fixed at 1. */
export function hasFixedBatch(m: OnnxModel): boolean {
  const inp = graphInputs(m)[0];
  return inp !== undefined && inp.shape.length > 1 && inp.shape[0] === 1;
}

const DYN = 'N';

/**
 * The model with a symbolic batch: input and outputs `[N, ...]` (an output without batch dim gets one), value_info
 * dropped (shapes are probed again), Reshape targets `[1, ...]` → `[-1, ...]` (or `[0, ...]` when they hold a -1),
 * rank-1 Reshape targets `[d]` → `[-1, d]` (`[-1]` → `[0, -1]`), Squeeze of axis 0 without it (Identity when no axis
 * is left). Other nodes are kept: whether the result is right is for {@link resolveBatch}'s probe to say.
 * @returns undefined when a rewrite would need a constant that is not in the graph as an initializer or Constant.
 */
export function rewriteBatchDynamic(m: OnnxModel): OnnxModel | undefined {
  const index = indexGraph(m);
  const g = m.proto.graph!;
  const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
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
    const t = inits.get(name);
    if (t) return tensorNumbers(t);
    const p = index.producer.get(name);
    const n = p === undefined ? undefined : index.nodes[p];
    const v = n?.opType === 'Constant' ? findAttr(n, 'value')?.t : undefined;
    return v ? tensorNumbers(v) : undefined;
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
      if (t.length > 1 && t[0] === 1) nt = [t.includes(-1) ? 0 : -1, ...t.slice(1)];
      else if (t.length === 1) nt = t[0] === -1 ? [0, -1] : [-1, t[0]!];
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
    } else if (n.opType === 'Squeeze' && (n.domain ?? '') === '') {
      const attr = findAttr(n, 'axes');
      const axes = attr ? (attr.ints ?? []).map(Number) : n.input?.[1] ? constValues(n.input[1]) : undefined;
      if (!axes || !axes.includes(0)) {
        nodes.push(n);
        continue;
      }
      const rest = axes.filter((a) => a !== 0);
      if (rest.length === 0) nodes.push(makeNode('Identity', [n.input![0]!], [...(n.output ?? [])], {}, n.name ?? ''));
      else if (attr)
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
    const s = shape.length >= 2 && shape[0] === 1 ? [DYN, ...shape.slice(1)] : isInput ? shape : [DYN, ...shape];
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
 * Decides how to run a model's batch. A dynamic batch stays as it is. A batch fixed at 1 is rewritten
 * ({@link rewriteBatchDynamic}) and kept when a probe run of the rewrite at batch 2 gives, row by row, the original
 * model's outputs at batch 1 (relative error ≤ 1e-4); else the original is kept and every run takes one image ('one').
 */
export async function resolveBatch(m: OnnxModel, ort: OrtModule): Promise<BatchResolution> {
  if (!hasFixedBatch(m)) return { model: m, mode: 'dynamic' };
  const inp = graphInputs(m)[0]!;
  const dims = inp.shape.map((d) => (typeof d === 'number' ? d : NaN));
  if (inp.dtype !== 'float32' || dims.some((d) => !Number.isFinite(d)))
    return { model: m, mode: 'one', note: 'the input is not a float32 tensor of fixed shape' };
  const rewritten = rewriteBatchDynamic(m);
  if (!rewritten) return { model: m, mode: 'one', note: 'the graph could not be rewritten' };
  const per = dims.reduce((a, b) => a * b, 1);
  const rows = [probeData(per, 1), probeData(per, 2)];
  const outName = graphOutputs(m)[0]?.name ?? '';
  const run = async (model: OnnxModel, data: Float32Array, batch: number): Promise<Float32Array> => {
    // A failing probe is an expected outcome: keep onnxruntime's own error log quiet.
    const s = await ort.InferenceSession.create(encodeModel(model), { logSeverityLevel: 4 });
    try {
      const out = await s.run({ [inp.name]: new ort.Tensor('float32', data, [batch, ...dims.slice(1)]) });
      const t = out[outName] as OrtTensor | undefined;
      if (!t || !(t.data instanceof Float32Array)) throw new Error(`no float32 output "${outName}"`);
      if (batch > 1 && t.dims[0] !== batch) throw new Error(`output batch is ${t.dims[0]}, not ${batch}`);
      return t.data;
    } finally {
      await s.release();
    }
  };
  try {
    const want = [await run(m, rows[0]!, 1), await run(m, rows[1]!, 1)];
    const both = new Float32Array(2 * per);
    both.set(rows[0]!, 0);
    both.set(rows[1]!, per);
    const got = await run(rewritten, both, 2);
    const k = want[0]!.length;
    if (got.length !== 2 * k) throw new Error(`${got.length} outputs at batch 2 for ${k} per image`);
    let scale = 1e-6;
    for (const w of want) for (const v of w) scale = Math.max(scale, Math.abs(v));
    for (let r = 0; r < 2; r++)
      for (let i = 0; i < k; i++)
        if (Math.abs(got[r * k + i]! - want[r]![i]!) > 1e-4 * scale)
          throw new Error(`row ${r} differs from the batch-1 output at element ${i}`);
  } catch (e) {
    if (e instanceof SelfxitError) throw e;
    const why = e instanceof Error ? e.message : String(e);
    return { model: m, mode: 'one', note: `a batch-2 probe of the rewritten graph failed (${why.split('\n')[0]})` };
  }
  return {
    model: rewritten,
    mode: 'rewritten',
    note: 'made dynamic (checked by a probe run at batch 2 against batch-1 runs)',
  };
}

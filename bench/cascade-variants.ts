// Graph variants of a bundle's cascade for the exit-cost benchmarks (bench/exit-cost.ts, bench/exit-cost-browser.ts):
// the segments re-joined with or without their heads, the compiled cascade with its heads replaced by constants, and
// with its heads rewritten in exact alternative forms.
import { segmentModels } from '../src/bundle/compiled-cascade.js';
import type { BundleFiles } from '../src/bundle/manifest.js';
import { compileCascade, type CascadePart } from '../src/graph/compile-cascade.js';
import type { OnnxModel } from '../src/graph/index.js';
import { toOpset } from '../src/graph/graph-index.js';
import {
  attrInts,
  makeNode,
  makeTensor,
  makeValueInfo,
  readValueInfo,
  tensorNumbers,
  type onnx,
} from '../src/graph/proto.js';

/** Segments inlined, only the exits in `keep` decided; `heads`: every fused head's probabilities become extra graph
 * outputs. */
export function chainModel(
  bundle: BundleFiles,
  heads: boolean,
  keep: readonly number[] = [],
  headOps?: readonly string[],
): OnnxModel {
  const m = bundle.manifest;
  const parts: CascadePart[] = m.segments.map((s, k) => ({
    model: segmentModels(bundle, k, 1)[0]!,
    output: s.output,
    ...(s.exit !== undefined && keep.includes(s.exit) ? { exit: s.exit, exitOutput: s.exitOutput! } : {}),
  }));
  const model = compileCascade(parts, { end: m.backbone.outputKind, exitCount: m.exits.length });
  const g = model.proto.graph!;
  if (headOps) {
    const isHead = (n: onnx.INodeProto): boolean => /^s\d+\/selfxit_exit\d+_probs\//.test(n.name ?? '');
    g.node = (g.node ?? []).filter((n) => !isHead(n) || headOps.includes(n.opType ?? ''));
  }
  if (heads) {
    m.segments.forEach((s, k) => {
      if (s.exitOutput !== undefined && k < m.segments.length - 1)
        g.output!.push(makeValueInfo(`s${k}/${s.exitOutput}`, 'float32', [1, m.labels.length]));
    });
  } else if (keep.length === 0) {
    // onnxruntime keeps nodes nobody reads: drop the heads' nodes (those the outputs do not need).
    const need = new Set((g.output ?? []).map((o) => o.name ?? ''));
    const nodes = [...(g.node ?? [])].reverse().filter((n) => {
      if (!(n.output ?? []).some((o) => need.has(o))) return false;
      for (const i of n.input ?? []) need.add(i);
      return true;
    });
    g.node = nodes.reverse();
  }
  return model;
}

/** The compiled cascade with every head replaced by a Constant [1, classes] of zeros: what the nested `If`s and
 * decisions cost in the real network without the heads' work. */
export function ifOnlyModel(bundle: BundleFiles): OnnxModel {
  const m = bundle.manifest;
  const parts: CascadePart[] = m.segments.map((s, k) => {
    const model = segmentModels(bundle, k, 1)[0]!;
    if (s.exitOutput === undefined) return { model, output: s.output };
    const g = model.proto.graph!;
    g.node = (g.node ?? []).filter((n) => !(n.name ?? '').startsWith(`${s.exitOutput}/`));
    const zeros = makeTensor('', 'float32', [1, m.labels.length], new Float32Array(m.labels.length));
    g.node.push(makeNode('Constant', [], [s.exitOutput], { value: zeros }));
    g.initializer = (g.initializer ?? []).filter((t) => !(t.name ?? '').startsWith(`${s.exitOutput}/`));
    return { model, output: s.output, exit: s.exit!, exitOutput: s.exitOutput };
  });
  return compileCascade(parts, { end: m.backbone.outputKind, exitCount: m.exits.length });
}

/** Exact rewrites of the fused heads (same probabilities within float rounding), for the exit-cost benchmark. */
export type HeadForm = 'transB0' | 'noConcat' | 'concat4d' | 'reduceMax';

/**
 * The compiled cascade with every fused head rewritten: `transB0` Gemm weights stored `[in, out]`; `noConcat` the
 * first Gemm split over the average and max features (the second adds onto the first through Gemm's C), no Concat;
 * `concat4d` (average and max grids equal) the pooled maps concatenated on channels and flattened once; `reduceMax`
 * MaxPool as Reshape to `[1, C, gh, kh, gw, kw]` + ReduceMax over the cells.
 */
export function headFormModel(bundle: BundleFiles, form: HeadForm): OnnxModel {
  const m = bundle.manifest;
  const parts: CascadePart[] = m.segments.map((s, k) => {
    const model = segmentModels(bundle, k, 1)[0]!;
    if (s.exitOutput === undefined) return { model, output: s.output };
    const g = model.proto.graph!;
    const opset = toOpset(model);
    const isHead = (n: onnx.INodeProto): boolean => (n.name ?? '').startsWith(`${s.exitOutput}/`);
    const weights = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
    const dims = readValueInfo((g.output ?? []).find((o) => o.name === s.output)!).shape!.map(Number);
    const p = `${s.exitOutput}/${form}/`;
    const added: onnx.TensorProto[] = [];
    const tensor = (name: string, dtype: 'float32' | 'int64', d: number[], data: Float32Array | number[]): string => {
      added.push(makeTensor(`${p}${name}`, dtype, d, data));
      return `${p}${name}`;
    };
    const rows = (w: onnx.ITensorProto): [Float32Array, number, number] => {
      const [o, i] = (w.dims ?? []).map(Number) as [number, number];
      return [Float32Array.from(tensorNumbers(w)!), o, i];
    };
    const head = (g.node ?? []).filter(isHead);
    const byOp = (op: string): onnx.INodeProto | undefined => head.find((n) => n.opType === op);
    const [avg, max, concat] = [byOp('AveragePool'), byOp('MaxPool'), byOp('Concat')];
    const rewrite = (n: onnx.INodeProto): onnx.INodeProto[] => {
      if (form === 'transB0' && n.opType === 'Gemm') {
        const [w, o, i] = rows(weights.get(n.input![1]!)!);
        const t = Float32Array.from({ length: o * i }, (_, j) => w[(j % o) * i + Math.floor(j / o)]!);
        return [
          makeNode('Gemm', [n.input![0]!, tensor(`${n.name}/wT`, 'float32', [i, o], t), n.input![2]!], n.output!),
        ];
      }
      if (form === 'noConcat' && concat && n.opType === 'Gemm' && n.input![0] === concat.output![0]) {
        const [w, o, i] = rows(weights.get(n.input![1]!)!);
        const split =
          dims[1]! * (avg ? (dims[2]! * dims[3]!) / attrInts(avg, 'kernel_shape')!.reduce((a, b) => a * b) : 1);
        const part = (from: number, to: number): string => {
          const d = new Float32Array(o * (to - from));
          for (let r = 0; r < o; r++) d.set(w.subarray(r * i + from, r * i + to), r * (to - from));
          return tensor(`w${from}`, 'float32', [o, to - from], d);
        };
        return [
          makeNode('Gemm', [concat.input![0]!, part(0, split), n.input![2]!], [`${p}avg`], { transB: 1 }),
          makeNode('Gemm', [concat.input![1]!, part(split, i), `${p}avg`], n.output!, { transB: 1 }),
        ];
      }
      const sameGrid = avg && max && String(attrInts(avg, 'kernel_shape')) === String(attrInts(max, 'kernel_shape'));
      if (form === 'concat4d' && sameGrid && concat && (n.opType === 'Flatten' || n === concat))
        return n === concat
          ? [
              makeNode('Concat', [avg.output![0]!, max.output![0]!], [`${p}maps`], { axis: 1 }),
              makeNode('Flatten', [`${p}maps`], n.output!, { axis: 1 }),
            ]
          : [];
      if (form === 'reduceMax' && n === max) {
        const [kh, kw] = attrInts(n, 'kernel_shape')!;
        const shape = tensor('cells', 'int64', [6], [1, dims[1]!, dims[2]! / kh!, kh!, dims[3]! / kw!, kw!]);
        const reshape = makeNode('Reshape', [n.input![0]!, shape], [`${p}cellmap`]);
        if (opset >= 18)
          return [
            reshape,
            makeNode('ReduceMax', [`${p}cellmap`, tensor('axes', 'int64', [2], [3, 5])], n.output!, { keepdims: 0 }),
          ];
        return [reshape, makeNode('ReduceMax', [`${p}cellmap`], n.output!, { axes: [3, 5], keepdims: 0 })];
      }
      return [n];
    };
    const nodes = head.flatMap(rewrite).map((n, j) => Object.assign(n, { name: n.name || `${p}${j}` }));
    g.node = [...(g.node ?? []).filter((n) => !isHead(n)), ...nodes];
    g.initializer = [...(g.initializer ?? []), ...added];
    return { model, output: s.output, exit: s.exit!, exitOutput: s.exitOutput };
  });
  return compileCascade(parts, { end: m.backbone.outputKind, exitCount: m.exits.length });
}

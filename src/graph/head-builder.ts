// Turns an exit-head spec (plain weights) into ONNX nodes: a standalone head model, or a head fused onto a segment.
import type { HeadSpec } from './head-spec.js';
import { headInputSize } from './head-spec.js';
import { SelfxitError } from '../errors.js';
import { toOpset } from './graph-index.js';
import { withGraph, type OnnxModel } from './model.js';
import { makeNode, makeTensor, makeValueInfo, pb, readValueInfo, type onnx } from './proto.js';
import { BATCH_DIM } from './split.js';
import { checkDequantization } from './quant.js';

function bad(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_ARGUMENT', `Invalid head spec: ${msg}`, details);
}

function divides(g: readonly [number, number], h: number, w: number): boolean {
  const [gh, gw] = g;
  return Number.isInteger(gh) && Number.isInteger(gw) && gh > 0 && gw > 0 && h % gh === 0 && w % gw === 0;
}

/** Checks a head spec's grid and max grid, layer sizes and weight lengths. @throws SelfxitError `INVALID_ARGUMENT`. */
export function validateHeadSpec(spec: HeadSpec): void {
  const { inHeight: h, inWidth: w } = spec;
  if (!(spec.inChannels > 0 && h > 0 && w > 0)) bad(`input [${spec.inChannels}, ${h}, ${w}] must be positive`);
  if (!divides(spec.grid, h, w)) bad(`grid [${spec.grid[0]}, ${spec.grid[1]}] must divide the input size [${h}, ${w}]`);
  if (
    spec.maxGrid !== undefined &&
    !(Array.isArray(spec.maxGrid) && spec.maxGrid.length === 2 && divides(spec.maxGrid, h, w))
  ) {
    bad(
      `maxGrid [${Array.from(spec.maxGrid as ArrayLike<unknown>).join(', ')}] must divide the input size [${h}, ${w}]`,
    );
  }
  if (spec.layers.length < 1 || spec.layers.length > 2) bad(`expected 1 or 2 dense layers, got ${spec.layers.length}`);
  let want = headInputSize(spec);
  spec.layers.forEach((l, i) => {
    if (l.in !== want) bad(`layer ${i} takes ${l.in} inputs, expected ${want}`);
    if (l.weight.length !== l.in * l.out)
      bad(`layer ${i} weight has ${l.weight.length} values, expected ${l.in}x${l.out}`);
    if (l.bias.length !== l.out) bad(`layer ${i} bias has ${l.bias.length} values, expected ${l.out}`);
    want = l.out;
  });
  if (want !== spec.classes) bad(`last layer has ${want} outputs, expected ${spec.classes} classes`);
  if (!Number.isFinite(spec.logitScale)) bad(`logitScale ${spec.logitScale} is not finite`);
  if (spec.dequant !== undefined) checkDequantization(spec.dequant, 'Invalid head spec', 'INVALID_ARGUMENT');
  if (spec.layout !== undefined && spec.layout !== 'NCHW' && spec.layout !== 'NHWC')
    bad(`layout ${JSON.stringify(spec.layout)} must be "NCHW" or "NHWC"`);
}

/** The `[C, H, W]` part of the cut's shape a head reads, in the cut's layout. */
function headInputDims(spec: HeadSpec): [number, number, number] {
  const { inChannels: c, inHeight: h, inWidth: w } = spec;
  return spec.layout === 'NHWC' ? [h, w, c] : [c, h, w];
}

/** Element type of the cut a head reads: float32, or the quantized type it dequantizes. */
function headInputDtype(spec: HeadSpec): 'float32' | 'uint8' | 'int8' {
  return spec.dequant?.dtype ?? 'float32';
}

/** Nodes and initializers of a head reading `input` and writing probabilities to `output`; names start with `prefix`. */
export function headGraphParts(
  spec: HeadSpec,
  input: string,
  output: string,
  prefix: string,
): { nodes: onnx.NodeProto[]; initializers: onnx.TensorProto[] } {
  validateHeadSpec(spec);
  const nodes: onnx.NodeProto[] = [];
  const inits: onnx.TensorProto[] = [];
  const n = (s: string): string => `${prefix}${s}`;
  let source = input;
  if (spec.dequant) {
    const { scale, zeroPoint, dtype } = spec.dequant;
    inits.push(makeTensor(n('dq.scale'), 'float32', [], [scale]));
    inits.push(makeTensor(n('dq.zero_point'), dtype, [], [zeroPoint]));
    nodes.push(
      makeNode('DequantizeLinear', [input, n('dq.scale'), n('dq.zero_point')], [n('dq')], {}, n('DequantizeLinear')),
    );
    source = n('dq');
  }
  if (spec.layout === 'NHWC') {
    nodes.push(makeNode('Transpose', [source], [n('nchw')], { perm: [0, 3, 1, 2] }, n('Transpose')));
    source = n('nchw');
  }
  // One pooling branch → Flatten(axis 1); returns the flattened tensor's name. `tag` '' (avg) or 'max'.
  const branch = (grid: readonly [number, number], op: 'Average' | 'Max', tag: string): string => {
    const [gh, gw] = grid;
    let x = source;
    if (gh === 1 && gw === 1) {
      nodes.push(makeNode(`Global${op}Pool`, [x], [n(`${tag}pool`)], {}, n(`Global${op}Pool`)));
      x = n(`${tag}pool`);
    } else if (gh !== spec.inHeight || gw !== spec.inWidth) {
      const kh = spec.inHeight / gh;
      const kw = spec.inWidth / gw;
      nodes.push(
        makeNode(`${op}Pool`, [x], [n(`${tag}pool`)], { kernel_shape: [kh, kw], strides: [kh, kw] }, n(`${op}Pool`)),
      );
      x = n(`${tag}pool`);
    }
    nodes.push(makeNode('Flatten', [x], [n(`${tag}flat`)], { axis: 1 }, n(`Flatten${tag ? `_${tag}` : ''}`)));
    return n(`${tag}flat`);
  };
  let x = branch(spec.grid, 'Average', '');
  if (spec.maxGrid) {
    const xm = branch(spec.maxGrid, 'Max', 'max');
    nodes.push(makeNode('Concat', [x, xm], [n('features')], { axis: 1 }, n('Concat')));
    x = n('features');
  }
  spec.layers.forEach((l, i) => {
    if (i > 0) {
      nodes.push(makeNode('Relu', [x], [n(`relu${i}`)], {}, n(`Relu${i}`)));
      x = n(`relu${i}`);
    }
    inits.push(makeTensor(n(`fc${i}.weight`), 'float32', [l.out, l.in], l.weight));
    inits.push(makeTensor(n(`fc${i}.bias`), 'float32', [l.out], l.bias));
    nodes.push(
      makeNode('Gemm', [x, n(`fc${i}.weight`), n(`fc${i}.bias`)], [n(`fc${i}`)], { transB: 1 }, n(`Gemm${i}`)),
    );
    x = n(`fc${i}`);
  });
  if (spec.logitScale !== 1) {
    inits.push(makeTensor(n('logit_scale'), 'float32', [], [spec.logitScale]));
    nodes.push(makeNode('Mul', [x, n('logit_scale')], [n('scaled')], {}, n('Mul')));
    x = n('scaled');
  }
  nodes.push(makeNode('Softmax', [x], [output], { axis: 1 }, n('Softmax')));
  return { nodes, initializers: inits };
}

/** Options of {@link buildHeadModel}: the standalone head's input and output names. */
export interface BuildHeadOptions {
  /** Input name. Default `'features'`. */
  inputName?: string;
  /** Output (probabilities) name. Default `'probs'`. */
  outputName?: string;
}

/**
 * A standalone head model (opset 13): input float32 `[batch, C, H, W]` (`[batch, H, W, C]` with `layout` 'NHWC', read
 * through a Transpose to NCHW; or the `dequant` type, read through a DequantizeLinear first) → output float32
 * `[batch, classes]` probabilities.
 * Pooling: none when `grid == [H, W]`, GlobalAveragePool for `[1, 1]`, else AveragePool with kernel = stride = H/gh, W/gw;
 * then Flatten(axis 1). With `maxGrid`, a second branch the same way with GlobalMaxPool / MaxPool, then
 * Concat(axis 1) of [avg, max]. Then Gemm(transB) → [Relu → Gemm] → Mul(logitScale, skipped when 1) → Softmax(axis 1).
 * @throws SelfxitError `INVALID_ARGUMENT` for an inconsistent spec.
 */
export function buildHeadModel(spec: HeadSpec, opts: BuildHeadOptions = {}): OnnxModel {
  const inputName = opts.inputName ?? 'features';
  const outputName = opts.outputName ?? 'probs';
  const { nodes, initializers } = headGraphParts(spec, inputName, outputName, 'head/');
  const proto = pb.ModelProto.create({
    irVersion: 7,
    producerName: 'selfxit',
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'selfxit_exit_head',
      node: nodes,
      initializer: initializers,
      input: [makeValueInfo(inputName, headInputDtype(spec), [BATCH_DIM, ...headInputDims(spec)])],
      output: [makeValueInfo(outputName, 'float32', [BATCH_DIM, spec.classes])],
    },
  });
  return { proto };
}

/** Options of {@link fuseHead}. */
export interface FuseHeadOptions {
  /** Name of the head's probability output. Default `` `${cut}__exit_probs` `` where cut is the segment's output. */
  outputName?: string;
}

/**
 * Appends an exit head to a segment whose single output is the cut. The fused model has two outputs, in order:
 * the segment's output (the next segment's input) and the head's probabilities `[batch, classes]`.
 * @throws SelfxitError `INVALID_ARGUMENT` when the segment does not have exactly one output, its shape does not match
 *   the spec, or the spec is inconsistent; `UNSUPPORTED_MODEL` when its output is not the head's input type (float32,
 *   or the spec's `dequant` type) or its opset is below 7 (10 with `dequant`).
 */
export function fuseHead(segment: OnnxModel, spec: HeadSpec, opts: FuseHeadOptions = {}): OnnxModel {
  const g = segment.proto.graph;
  const outs = g?.output ?? [];
  if (!g || outs.length !== 1)
    throw new SelfxitError('INVALID_ARGUMENT', `fuseHead needs a segment with exactly one output, got ${outs.length}`);
  const cutInfo = outs[0]!;
  const cut = cutInfo.name ?? '';
  const { dtype, shape } = readValueInfo(cutInfo);
  if (dtype && dtype !== headInputDtype(spec))
    throw new SelfxitError(
      'UNSUPPORTED_MODEL',
      `Cannot fuse a head onto "${cut}": it is ${dtype}, the head reads ${headInputDtype(spec)}${spec.dequant ? '' : " (a quantized cut needs the spec's dequant)"}`,
      { tensor: cut },
    );
  if (shape) {
    const want = headInputDims(spec);
    const ok = shape.length === 4 && want.every((d, i) => typeof shape[i + 1] !== 'number' || shape[i + 1] === d);
    if (!ok)
      bad(`segment output "${cut}" has shape [${shape.join(', ')}], the head expects [N, ${want.join(', ')}]`, {
        tensor: cut,
      });
  }
  const opset = toOpset(segment);
  const need = spec.dequant ? 10 : 7;
  if (opset < need)
    throw new SelfxitError('UNSUPPORTED_MODEL', `Cannot fuse a head into a model of opset ${opset} (needs >= ${need})`);
  const outputName = opts.outputName ?? `${cut}__exit_probs`;
  const prefix = `${outputName}/`;
  const { nodes, initializers } = headGraphParts(spec, cut, outputName, prefix);
  const taken = new Set<string>();
  for (const n of g.node ?? []) for (const o of n.output ?? []) taken.add(o);
  for (const t of g.initializer ?? []) taken.add(t.name ?? '');
  for (const i of g.input ?? []) taken.add(i.name ?? '');
  for (const name of [outputName, ...initializers.map((t) => t.name), ...nodes.flatMap((n) => n.output)]) {
    if (taken.has(name))
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `Head tensor name "${name}" already exists in the segment; pass another outputName`,
        { tensor: name },
      );
  }
  return withGraph(segment, {
    ...g,
    node: [...(g.node ?? []), ...nodes],
    initializer: [...(g.initializer ?? []), ...initializers],
    output: [cutInfo, makeValueInfo(outputName, 'float32', [BATCH_DIM, spec.classes])],
  });
}

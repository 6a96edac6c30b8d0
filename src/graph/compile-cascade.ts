// Compiles a bundle's segment models (exit heads fused on) into ONE ONNX model whose exit decisions are nested `If`
// nodes, so one onnxruntime run replaces a session per segment and the JS decisions; a prefix compiles too (lazy loading).
// Over 400 lines: the two `If` layouts (nested, flat) share the parts' preparation, decisions and endings here.
import { SelfxitError } from '../errors.js';
import { composedModel, mergeModelHeaders, renameGraph } from './compose.js';
import { gatedExit, splitHead, type GraphContent } from './head-gate.js';
import { realInputProtos, type OnnxModel } from './model.js';
import { elemTypeFromDtype, makeNode, makeTensor, pb, readValueInfo, type DType, type onnx } from './proto.js';

/** One segment of the cascade, as the bundle's manifest describes it (SegmentSpec), with its decoded model. */
export interface CascadePart {
  /** The segment model: one real input (the model input, or the previous part's `output`). */
  readonly model: OnnxModel;
  /** Its main output: the cut that feeds the next part, or the backbone output on the bundle's last segment. */
  readonly output: string;
  /** Output of the fused exit head (probabilities `[batch, classes]`), when the segment ends at an exit. */
  readonly exitOutput?: string;
  /** Index of that exit into the thresholds (the manifest's `exits`); required with `exitOutput`. */
  readonly exit?: number;
  /**
   * Output of a fused exit head left out of the model (instead of `exitOutput`): the head is split off and dropped, so
   * the model runs that segment as the backbone does (head-gate.ts splitHead; a head that cannot be split stays,
   * computed and unread). The compiled engine's models for thresholds that disable exits (live pruning) are made so.
   */
  readonly droppedExitOutput?: string;
}

/**
 * What the last part's main output is: the backbone's `'logits'` (softmax in the graph, as the stage engine's
 * softmaxRow) or `'probabilities'` (passed through), both when the last part is the bundle's last segment; or
 * `'continue'` for a prefix: the last part ends at a cut, and an input no exit took returns that activation.
 */
export type CascadeEnd = 'logits' | 'probabilities' | 'continue';

export interface CompileCascadeOptions {
  readonly end: CascadeEnd;
  /** Length of the `thresholds` input: the bundle's exit count (default: the highest exit index in `parts` + 1). */
  readonly exitCount?: number;
  /**
   * How the exits' `If`s are laid out (same inputs, outputs and decisions either way). `'nested'` (default): each
   * exit's else-branch holds the rest of the cascade. `'flat'`: one `If(exited so far)` per stage in sequence, each
   * branch holding one stage (the segments to the next exit, its head and decision) or passing the decided result
   * through. Flat measured no faster in onnxruntime-web and slower once an exit fires (docs/ARCHITECTURE.md, "What a
   * compiled exit costs"); it stays for the benchmarks that compare the two. Flat needs opset 11 or later.
   */
  readonly layout?: 'nested' | 'flat';
  /**
   * Run each exit's head only while its threshold is at most 1 (default true): the fused head is split off its segment
   * and put, with the decision, in `If(threshold > 1)`, so an exit that cannot fire (NEVER_EXIT: device plans, curves)
   * skips its head (~40 µs at 1 thread) for one comparison and one `If` (docs/ARCHITECTURE.md, "What a compiled exit
   * costs"). A head that cannot be split off (see head-gate.ts) runs ungated.
   */
  readonly gateHeads?: boolean;
}

/** Names of the compiled model's inputs and outputs (the image input keeps part 0's input name). */
export const CASCADE_IO = {
  /** float32 `[exitCount]`: fill with {@link cascadeThresholds}. */
  thresholds: 'thresholds',
  /** float32 `[1, classes]`: the exit head's probabilities, or the backbone's; `[0, classes]` on "continue". */
  probabilities: 'probabilities',
  /** int64 `[1]`: the exit taken, {@link EXIT_INDEX_FULL} or {@link EXIT_INDEX_CONTINUE}. */
  exitIndex: 'exit_index',
  /** Prefix models only: the last part's cut activation on "continue", else zero-size (first dim 0). */
  continueActivation: 'continue_activation',
} as const;

/** `exit_index` when the input ran the whole backbone (CascadeResult.exit's -1). */
export const EXIT_INDEX_FULL = -1;
/** `exit_index` of a prefix model when no compiled exit fired: continue from `continue_activation`. */
export const EXIT_INDEX_CONTINUE = -2;

const GRAPH_ATTR = 5;
const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);

/** The smallest float32 >= t (t itself when representable; NaN stays NaN). */
function ceilFloat32(t: number): number {
  const f = Math.fround(t);
  if (!(f < t)) return f; // equal, NaN, or rounded up already
  if (f === 0) return 1.401298464324817e-45; // t in (0, smallest subnormal)
  f32[0] = f;
  i32[0]! += f > 0 ? 1 : -1;
  return f32[0]!;
}

/**
 * The `thresholds` input for per-exit thresholds as the stage engine takes them (JS numbers; a missing entry never
 * fires). Each is rounded UP to a float32, so the graph's float32 `max >= threshold` decides exactly as the stage
 * engine's `max >= threshold` does in double precision (a probability is a float32).
 */
export function cascadeThresholds(thresholds: readonly number[], exitCount: number): Float32Array {
  return Float32Array.from({ length: exitCount }, (_, e) => ceilFloat32(thresholds[e] ?? Infinity));
}

/** @internal */
export function invalid(msg: string, details?: Record<string, unknown>): never {
  throw new SelfxitError('INVALID_BUNDLE', `Cannot compile the cascade: ${msg}`, details);
}

export type Dims = (number | null)[] | undefined; // null: an unnamed (unknown) dim; undefined: rank unknown

/** @internal */
export function valueInfo(name: string, dtype: DType, dims: Dims): onnx.ValueInfoProto {
  const tensorType: onnx.TypeProto.ITensor = { elemType: elemTypeFromDtype(dtype) };
  if (dims) tensorType.shape = { dim: dims.map((d) => (d === null ? {} : { dimValue: d })) };
  return pb.ValueInfoProto.create({ name, type: { tensorType } });
}

/** A part's graph content renamed into its own namespace `s<i>/`, its input bound to `inputName`. */
/** @internal */
export interface Prepared {
  readonly nodes: onnx.INodeProto[];
  readonly initializers: onnx.ITensorProto[];
  readonly sparse: onnx.ISparseTensorProto[];
  readonly valueInfo: onnx.IValueInfoProto[];
  readonly output: string;
  readonly outDtype: DType;
  readonly outDims: Dims;
  readonly exitOutput?: string;
  readonly exit?: number;
  /** The exit head split off the part's content, when it is gated. */
  readonly head?: GraphContent;
}

const RESERVED = new Set<string>(Object.values(CASCADE_IO));
/** The float32 scalar 1 the head gates compare thresholds with. */
export const ONE = 'cascade/one';

function prepare(part: CascadePart, i: number, inputName: string, gate: boolean): Prepared {
  const g = part.model.proto.graph;
  if (!g) invalid(`segment ${i} has no graph`, { segment: i });
  const inputs = realInputProtos(part.model);
  if (inputs.length !== 1)
    invalid(`segment ${i} has ${inputs.length} inputs, expected 1`, { segment: i, inputs: inputs.map((x) => x.name) });
  const own = inputs[0]!.name ?? '';
  const rn = (n: string): string => (n === '' ? '' : n === own ? inputName : `s${i}/${n}`);
  const outs = new Map((g.output ?? []).map((o) => [o.name ?? '', o]));
  const outInfo = outs.get(part.output);
  if (!outInfo) invalid(`segment ${i} has no output "${part.output}"`, { segment: i, tensor: part.output });
  const out = readValueInfo(outInfo);
  if (!out.dtype) invalid(`segment ${i}'s output "${part.output}" has no element type`, { segment: i });
  if (part.exitOutput !== undefined) {
    const ex = outs.get(part.exitOutput);
    if (!ex) invalid(`segment ${i} has no exit output "${part.exitOutput}"`, { segment: i, tensor: part.exitOutput });
    if (readValueInfo(ex).dtype !== 'float32')
      invalid(`segment ${i}'s exit output "${part.exitOutput}" is not float32`, { segment: i });
  }
  const r = renameGraph(g, rn, `s${i}/`);
  const boundary = new Set([inputName]);
  let content: GraphContent = {
    nodes: r.node,
    initializers: r.initializer,
    valueInfo: [...r.valueInfo, ...r.output].filter((v) => !boundary.has(v.name ?? '')),
  };
  const keep = new Set(r.output.map((o) => o.name ?? ''));
  const split =
    gate && part.exitOutput !== undefined && r.sparseInitializer.length === 0
      ? splitHead(content, rn(part.output), rn(part.exitOutput), keep)
      : undefined;
  if (split) content = split.rest;
  if (part.droppedExitOutput !== undefined && part.exitOutput === undefined && r.sparseInitializer.length === 0)
    content = splitHead(content, rn(part.output), rn(part.droppedExitOutput), keep)?.rest ?? content;
  return {
    ...content,
    sparse: r.sparseInitializer,
    ...(split ? { head: split.head } : {}),
    output: rn(part.output),
    outDtype: out.dtype,
    outDims: out.shape?.map((d) => (typeof d === 'number' ? d : null)),
    ...(part.exitOutput !== undefined ? { exitOutput: rn(part.exitOutput), exit: part.exit! } : {}),
  };
}

/** Each part's exit index, or undefined where none is decided: the bundle's last segment's is ignored (as the stage
 * engine does), unless the parts are a prefix. @throws SelfxitError `INVALID_ARGUMENT` for inconsistent exits. */
function honouredExits(parts: readonly CascadePart[], cont: boolean): (number | undefined)[] {
  let prev = -1;
  return parts.map((p, i) => {
    if ((p.exitOutput === undefined) !== (p.exit === undefined))
      throw new SelfxitError('INVALID_ARGUMENT', `segment ${i}: exit and exitOutput go together`, { segment: i });
    if (p.exit === undefined || (!cont && i === parts.length - 1)) return undefined;
    if (!Number.isInteger(p.exit) || p.exit <= prev)
      throw new SelfxitError('INVALID_ARGUMENT', `segment ${i}: exit ${p.exit} must be an integer above ${prev}`);
    return (prev = p.exit);
  });
}

/** Part i's input must take part i-1's output: same element type, same rank and fixed dims (batch aside). */
function checkLink(parts: readonly CascadePart[], prev: Prepared, i: number): void {
  const want = readValueInfo(realInputProtos(parts[i]!.model)[0]!);
  const have = prev.outDims;
  const shapeClash =
    want.shape &&
    have &&
    (want.shape.length !== have.length ||
      want.shape.some((d, k) => k > 0 && typeof d === 'number' && have[k] !== null && have[k] !== d));
  if ((want.dtype && want.dtype !== prev.outDtype) || shapeClash)
    invalid(`segment ${i}'s input does not match segment ${i - 1}'s output "${parts[i - 1]!.output}"`, { segment: i });
}

/** The class count declared by the exit heads' and the backbone's outputs (null when none declares it). */
function classCount(
  parts: readonly CascadePart[],
  exits: readonly (number | undefined)[],
  cont: boolean,
): number | null {
  const found = new Set<number>();
  parts.forEach((p, i) => {
    const names = [
      exits[i] !== undefined ? p.exitOutput : undefined,
      !cont && i === parts.length - 1 ? p.output : undefined,
    ];
    for (const n of names) {
      const d = n ? readValueInfo((p.model.proto.graph!.output ?? []).find((o) => o.name === n)!).shape : undefined;
      if (d?.length === 2 && typeof d[1] === 'number') found.add(d[1]);
      // A batch-1 backbone's `[classes]` output.
      else if (n === p.output && d?.length === 1 && typeof d[0] === 'number') found.add(d[0]);
    }
  });
  if (found.size > 1) invalid(`the exits and the backbone disagree on the class count (${[...found].join(', ')})`);
  return found.size === 1 ? [...found][0]! : null;
}

/**
 * One ONNX model running `parts` (consecutive segments of a bundle) with their exits, for batch 1.
 *
 * Inputs: part 0's input (its name; first dim fixed to 1) and {@link CASCADE_IO}.thresholds, float32 `[exitCount]`
 * (fill it with {@link cascadeThresholds}; new thresholds need no rebuild). Outputs: `probabilities`, `exit_index` and,
 * with `end: 'continue'`, `continue_activation` (see {@link CASCADE_IO}); confidence and label are the max and argmax
 * of `probabilities`, left to the caller as in the stage engine.
 *
 * Structure: part 0 → `If(ReduceMax(exit probs) >= thresholds[e])`, then-branch: the head's probabilities and `e`;
 * else-branch: part 1 → the next `If` …; the innermost else-branch ends the backbone (softmax of logits, exit -1) or,
 * for a prefix, returns the cut activation (exit -2). A part without an exit runs inline before the next. On the
 * bundle's last segment (`end` not 'continue') the exit output, if any, is ignored, as the stage engine does. Every
 * part's tensors, initializers and nodes are renamed `s<i>/…` and live in the branch that runs them. All branches of an
 * `If` produce the same outputs; a branch with nothing to give returns a zero-size tensor of the right rank and type
 * (`probabilities` `[0, classes]`, `continue_activation` `[0, …]`).
 *
 * ONNX `If` needs a scalar condition, hence batch 1: batches keep the stage-by-stage path. Exits whose threshold is
 * above 1 never fire but their heads still run (the stage engine skips reading them).
 * @throws SelfxitError `INVALID_BUNDLE` when the parts cannot be composed (not one input, a missing output, an
 *   activation type or shape mismatch between parts, differing opsets or functions, a reserved name as the input);
 *   `INVALID_ARGUMENT` for no parts, exit indices that are missing, repeated, out of order or >= `exitCount`, or the
 *   'flat' layout below opset 11.
 */
/** @internal Graph content being assembled into one (sub)graph of a compiled model. */
export interface Scope {
  nodes: onnx.INodeProto[];
  initializers: onnx.ITensorProto[];
  sparse: onnx.ISparseTensorProto[];
  valueInfo: onnx.IValueInfoProto[];
}

/** @internal A scope of `nodes` alone. */
export const nodesOnly = (nodes: onnx.INodeProto[]): Scope => ({ nodes, initializers: [], sparse: [], valueInfo: [] });

/** @internal Appends `from`'s content to `s`. */
export function appendScope(s: Scope, from: Scope | Prepared): void {
  s.nodes.push(...from.nodes);
  s.initializers.push(...from.initializers);
  s.sparse.push(...from.sparse);
  s.valueInfo.push(...from.valueInfo);
}

/** @internal An `If` branch (or other subgraph) named `name` of scope `s` with outputs `outs` typed by `outputs`. */
export function branchGraph(
  name: string,
  s: Scope,
  outs: readonly string[],
  outputs: onnx.ValueInfoProto[],
): onnx.GraphProto {
  return pb.GraphProto.create({
    name,
    node: s.nodes,
    initializer: s.initializers,
    sparseInitializer: s.sparse,
    valueInfo: s.valueInfo.filter((v) => !outs.includes(v.name ?? '')),
    output: outputs,
  });
}

/**
 * What both compilers (this file's batch-1 one and compile-batch-cascade.ts's) start from: the parts checked, linked
 * and prepared (renamed into `s<i>/`, heads split off where gated), the exits honoured, the merged model headers.
 * `inputOf(i, prev)`: the name part i > 0 reads (part i-1's output, or what the compiler makes of it). @internal
 */
export interface CascadeSetup {
  readonly prepared: readonly Prepared[];
  readonly exits: readonly (number | undefined)[];
  readonly exitCount: number;
  readonly classes: number | null;
  readonly cont: boolean;
  readonly lastIdx: number;
  readonly inputName: string;
  readonly inputInfo: ReturnType<typeof readValueInfo>;
  readonly inputDtype: DType;
  readonly merged: ReturnType<typeof mergeModelHeaders>;
  readonly opset: number;
  /** Exit e's threshold, float32 [1]: a Split output ({@link thresholdSplit}), or the thresholds input itself. */
  readonly thresholdOf: (e: number) => string;
}

/** @internal See {@link CascadeSetup}. @throws as compileCascade. */
export function setupCascade(
  parts: readonly CascadePart[],
  options: Pick<CompileCascadeOptions, 'end' | 'exitCount' | 'gateHeads'>,
  inputOf: (i: number, prev: Prepared) => string = (_, prev) => prev.output,
): CascadeSetup {
  if (parts.length === 0) throw new SelfxitError('INVALID_ARGUMENT', 'compileCascade needs at least one segment');
  const { end } = options;
  const cont = end === 'continue';
  const lastIdx = parts.length - 1;
  const exits = honouredExits(parts, cont);
  const maxExit = Math.max(-1, ...exits.map((e) => e ?? -1));
  const exitCount = options.exitCount ?? maxExit + 1;
  if (!(Number.isInteger(exitCount) && exitCount > maxExit))
    throw new SelfxitError('INVALID_ARGUMENT', `exitCount ${exitCount} must be an integer above ${maxExit}`);
  const thresholdOf = (e: number): string => (exitCount === 1 ? CASCADE_IO.thresholds : `cascade/threshold${e}`);
  const input0 = realInputProtos(parts[0]!.model);
  if (input0.length !== 1) invalid(`segment 0 has ${input0.length} inputs, expected 1`);
  const inputName = input0[0]!.name ?? '';
  if (RESERVED.has(inputName) || /^(cascade|s\d+)\//.test(inputName))
    invalid(`the input name "${inputName}" is reserved by the compiled model`, { tensor: inputName });
  const inputInfo = readValueInfo(input0[0]!);
  const inputDtype = inputInfo.dtype;
  if (!inputDtype) invalid(`segment 0's input "${inputName}" has no element type`);
  const merged = mergeModelHeaders(parts.map((p) => p.model));
  const opset = merged.opsets.find((o) => o.domain === '')!.version as number;
  const classes = classCount(parts, exits, cont);
  // Gated heads need the class count: a disabled exit gives zero probabilities [1, classes] (never read).
  const gate = (options.gateHeads ?? true) && classes !== null;
  const prepared: Prepared[] = [];
  parts.forEach((p, i) => {
    const prev = prepared[i - 1];
    if (prev) checkLink(parts, prev, i);
    prepared.push(prepare(p, i, prev ? inputOf(i, prev) : inputName, gate && exits[i] !== undefined));
  });
  return {
    prepared,
    exits,
    exitCount,
    classes,
    cont,
    lastIdx,
    inputName,
    inputInfo,
    inputDtype,
    merged,
    opset,
    thresholdOf,
  };
}

/** @internal The top graph's one Split of the thresholds into each exit's [1] (none when there is one exit or none). */
export function thresholdSplit(c: CascadeSetup): onnx.NodeProto | undefined {
  if (!c.exits.some((e) => e !== undefined) || c.exitCount <= 1) return undefined;
  const outs = Array.from({ length: c.exitCount }, (_, e) => c.thresholdOf(e));
  const attrs: Record<string, number> = c.opset >= 18 ? { axis: 0, num_outputs: c.exitCount } : { axis: 0 };
  return makeNode('Split', [CASCADE_IO.thresholds], outs, attrs, 'cascade/thresholds/Split');
}

/** @internal The float32 scalar 1 gated heads compare their threshold with, when a part has a gated head. */
export function gateOne(c: CascadeSetup): onnx.TensorProto | undefined {
  return c.prepared.some((p, i) => p.head && c.exits[i] !== undefined)
    ? makeTensor(ONE, 'float32', [], [1])
    : undefined;
}

export function compileCascade(parts: readonly CascadePart[], options: CompileCascadeOptions): OnnxModel {
  const setup = setupCascade(parts, options);
  const { prepared, exits, exitCount, classes, cont, lastIdx, inputName, merged, opset, thresholdOf } = setup;
  const { end } = options;
  // A flat stage's If passes a zero-size activation beside a full one; If before opset 11 needs equal branch shapes.
  if (options.layout === 'flat' && opset < 11)
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `the 'flat' cascade layout needs opset 11 or later (the model imports opset ${opset}, whose If needs its branches' shapes to agree): use the 'nested' layout`,
      { opset },
    );
  const gate = (options.gateHeads ?? true) && classes !== null;

  const last = prepared[lastIdx]!;
  const contRest = last.outDims?.slice(1);
  const outTypes: { dtype: DType; dims: Dims }[] = [
    { dtype: 'float32', dims: [cont ? null : 1, classes] },
    { dtype: 'int64', dims: [1] },
    ...(cont ? [{ dtype: last.outDtype, dims: contRest ? [null, ...contRest] : undefined }] : []),
  ];
  const outInfos = (names: readonly string[]): onnx.ValueInfoProto[] =>
    names.map((n, k) => valueInfo(n, outTypes[k]!.dtype, outTypes[k]!.dims));
  const constant = (name: string, t: onnx.TensorProto): onnx.NodeProto =>
    makeNode('Constant', [], [name], { value: t }, `cascade/${name}`);
  const exitConst = (name: string, e: number): onnx.NodeProto => constant(name, makeTensor('', 'int64', [1], [e]));
  const zeroProbs = (name: string): onnx.NodeProto =>
    constant(name, makeTensor('', 'float32', [0, classes ?? 0], new Float32Array(0)));
  const zeroCont = (name: string): onnx.NodeProto =>
    constant(name, makeTensor('', last.outDtype, [0, ...(contRest ?? []).map((d) => d ?? 0)], []));

  // fire (`cascade/exit<e>/fire`) = max probability >= threshold e: a [1] bool (If takes any one-element condition).
  // The thresholds were split once at the top (thresholdOf), so an exit costs ReduceMax, the comparison and the If.
  // A gated head (p.head) runs with its decision inside If(threshold > 1) (head-gate.ts), writing the same two values.
  const decide = (p: Prepared, e: number): onnx.NodeProto[] => {
    const t = `cascade/exit${e}/`;
    const rule = (probs: string, fire: string): onnx.NodeProto[] => {
      const max = makeNode('ReduceMax', [probs], [`${t}max`], { keepdims: 0 }, `${t}ReduceMax`);
      if (opset >= 12)
        return [max, makeNode('GreaterOrEqual', [`${t}max`, thresholdOf(e)], [fire], {}, `${t}GreaterOrEqual`)];
      return [
        max,
        makeNode('Less', [`${t}max`, thresholdOf(e)], [`${t}below`], {}, `${t}Less`),
        makeNode('Not', [`${t}below`], [fire], {}, `${t}Not`),
      ];
    };
    if (!p.head) return rule(p.exitOutput!, `${t}fire`);
    return gatedExit({
      prefix: t,
      threshold: thresholdOf(e),
      one: ONE,
      head: p.head,
      probs: p.exitOutput!,
      fire: `${t}fire`,
      decide: rule,
      outputInfos: (probs, fire) => [valueInfo(probs, 'float32', [1, classes]), valueInfo(fire, 'bool', [1])],
      noProbs: (name) => constant(name, makeTensor('', 'float32', [1, classes!], new Float32Array(classes!))),
    });
  };
  // A prefix where no exit fired: no probabilities, exit index "continue", the cut activation `from`.
  const continueNodes = (outs: readonly string[], from: string): onnx.NodeProto[] => [
    zeroProbs(outs[0]!),
    exitConst(outs[1]!, EXIT_INDEX_CONTINUE),
    makeNode('Identity', [from], [outs[2]!], {}, `cascade/${outs[2]}`),
  ];
  const branch = (name: string, s: Scope, outs: readonly string[], infos = outInfos): onnx.GraphProto =>
    branchGraph(name, s, outs, infos(outs));
  const append = appendScope;

  // The graph content from part i on, writing the outputs `outs` (probabilities, exit index[, continue activation]).
  // `p`: part i as prepared (flat layout: re-bound to the activation its stage receives).
  const scope = (i: number, outs: readonly string[], p = prepared[i]!): Scope => {
    const s = nodesOnly([]);
    append(s, p);
    const [probs, exitIdx] = outs as [string, string];
    const endHere = (): void => {
      if (cont) return void s.nodes.push(...continueNodes(outs, p.output));
      let x = p.output;
      // Batch 1: any other rank (e.g. a batch-1 model's `[classes]`, or `[1, classes, 1, 1]`) becomes [1, classes].
      if (p.outDims?.length !== 2) {
        s.nodes.push(
          constant('cascade/final_shape', makeTensor('', 'int64', [2], [1, -1])),
          makeNode('Reshape', [x, 'cascade/final_shape'], ['cascade/final_row'], {}, 'cascade/final_Reshape'),
        );
        x = 'cascade/final_row';
      }
      const op = end === 'logits' ? 'Softmax' : 'Identity';
      s.nodes.push(makeNode(op, [x], [probs], op === 'Softmax' ? { axis: 1 } : {}, `cascade/final_${op}`));
      s.nodes.push(exitConst(exitIdx, EXIT_INDEX_FULL));
    };
    const e = exits[i];
    if (e === undefined) {
      if (i === lastIdx) endHere();
      else {
        append(s, scope(i + 1, outs));
      }
      return s;
    }
    const t = `cascade/exit${e}/`;
    s.nodes.push(...decide(p, e));
    const thenOuts = outs.map((_, k) => `${t}then/${['probabilities', 'exit_index', 'continue'][k]}`);
    const then = nodesOnly([
      makeNode('Identity', [p.exitOutput!], [thenOuts[0]!], {}, `${t}then/Identity`),
      exitConst(thenOuts[1]!, e),
      ...(cont ? [zeroCont(thenOuts[2]!)] : []),
    ]);
    const elseOuts = outs.map((_, k) => `${t}else/${['probabilities', 'exit_index', 'continue'][k]}`);
    // The last part of a prefix continues from its cut when its exit does not fire.
    const other = i === lastIdx ? nodesOnly(continueNodes(elseOuts, p.output)) : scope(i + 1, elseOuts);
    const ifNode = makeNode('If', [`${t}fire`], outs, {}, `${t}If`);
    ifNode.attribute = [
      pb.AttributeProto.create({ name: 'then_branch', type: GRAPH_ATTR, g: branch(`exit${e}_then`, then, thenOuts) }),
      pb.AttributeProto.create({ name: 'else_branch', type: GRAPH_ATTR, g: branch(`exit${e}_else`, other, elseOuts) }),
    ];
    s.nodes.push(ifNode);
    return s;
  };

  // Flat layout: the parts grouped into stages, each ending at a part with a decided exit, or at the last part. Stage
  // 0 runs at the top; stage k > 0 is If(exited after stage k-1, then: pass the decided result through, else: the
  // stage's parts, head and decision). A stage carries (probabilities, exit index, exited, cut activation); the last
  // stage writes the model's outputs as `scope` ends the cascade. Each branch holds one stage, never the whole tail.
  const flat = (outs: readonly string[]): Scope => {
    const stages: number[][] = [[]];
    prepared.forEach((_, i) => {
      stages[stages.length - 1]!.push(i);
      if (exits[i] !== undefined && i < lastIdx) stages.push([]);
    });
    interface Carry {
      probs: string;
      exitIdx: string;
      exited: string;
      act: string;
    }
    let carry: Carry | undefined;
    let top: Scope | undefined;
    stages.forEach((idx, k) => {
      const s = nodesOnly([]);
      const final = k === stages.length - 1;
      const end = idx[idx.length - 1]!;
      // A stage's first part reads the activation the previous stage carried out of its If.
      const part = (i: number): Prepared =>
        carry && i === idx[0] ? prepare(parts[i]!, i, carry.act, gate && exits[i] !== undefined) : prepared[i]!;
      for (const i of final ? idx.slice(0, -1) : idx) append(s, part(i));
      const p = part(end);
      const e = exits[end]!;
      const t = `cascade/stage${k}/`;
      const kinds = ['probabilities', 'exit_index', 'exited', 'activation'];
      const stateOuts = final ? outs : kinds.map((n) => `${t}${n}`);
      const actDims: Dims = p.outDims ? [null, ...p.outDims.slice(1)] : undefined;
      const types = final
        ? outTypes
        : [outTypes[0]!, outTypes[1]!, { dtype: 'bool' as const, dims: [1] }, { dtype: p.outDtype, dims: actDims }];
      const infos = (names: readonly string[]): onnx.ValueInfoProto[] =>
        names.map((n, j) => valueInfo(n, types[j]!.dtype, types[j]!.dims));
      // Inside a branch the stage writes its own names, and the If gives them the stage's names.
      const inBranch = (names: readonly string[]): string[] => names.map((n) => (carry ? `${t}else/${n}` : n));
      let produced: readonly string[];
      if (final) {
        append(s, scope(end, inBranch(outs), p));
        produced = inBranch(outs);
      } else {
        s.nodes.push(...decide(p, e), exitConst(`cascade/exit${e}/index`, e));
        produced = [p.exitOutput!, `cascade/exit${e}/index`, `cascade/exit${e}/fire`, p.output];
      }
      if (!carry) top = s;
      else {
        const elseOuts = produced;
        const thenOuts = stateOuts.map((n) => `${t}then/${n}`);
        // Already exited: the result so far passes through; a zero-size activation (or continue_activation).
        const from = final ? [carry.probs, carry.exitIdx] : [carry.probs, carry.exitIdx, carry.exited];
        const then = nodesOnly(
          thenOuts.map((n, j) =>
            j < from.length
              ? makeNode('Identity', [from[j]!], [n], {}, n)
              : final
                ? zeroCont(n)
                : constant(n, makeTensor('', p.outDtype, [0, ...(p.outDims?.slice(1) ?? []).map((d) => d ?? 0)], [])),
          ),
        );
        const ifNode = makeNode('If', [carry.exited], stateOuts, {}, `${t}If`);
        ifNode.attribute = [
          pb.AttributeProto.create({
            name: 'then_branch',
            type: GRAPH_ATTR,
            g: branch(`stage${k}_then`, then, thenOuts, infos),
          }),
          pb.AttributeProto.create({
            name: 'else_branch',
            type: GRAPH_ATTR,
            g: branch(`stage${k}_else`, s, elseOuts, infos),
          }),
        ];
        top!.nodes.push(ifNode);
      }
      produced = carry ? stateOuts : produced;
      carry = { probs: produced[0]!, exitIdx: produced[1]!, exited: produced[2]!, act: produced[3]! };
    });
    return top!;
  };

  const outNames = [CASCADE_IO.probabilities, CASCADE_IO.exitIndex, ...(cont ? [CASCADE_IO.continueActivation] : [])];
  const top = options.layout === 'flat' ? flat(outNames) : scope(0, outNames);
  // One Split of the thresholds into [1] tensors at the top, read by the exits from their branches (outer scope):
  // one kernel in all instead of a Gather per exit (each kernel dispatch costs µs in onnxruntime-web).
  const split = thresholdSplit(setup);
  if (split) top.nodes.unshift(split);
  const one = gateOne(setup);
  if (one) top.initializers.push(one);
  const inInfo = setup.inputInfo;
  const inDims: Dims = inInfo.shape?.map((d, k) => (k === 0 ? 1 : typeof d === 'number' ? d : null));
  const graph = pb.GraphProto.create({
    name: 'selfxit_compiled_cascade',
    node: top.nodes,
    initializer: top.initializers,
    sparseInitializer: top.sparse,
    valueInfo: top.valueInfo,
    input: [valueInfo(inputName, setup.inputDtype, inDims), valueInfo(CASCADE_IO.thresholds, 'float32', [exitCount])],
    output: outInfos(outNames),
  });
  return composedModel(merged, graph);
}

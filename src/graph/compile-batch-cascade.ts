// Compiles a bundle's segment models (exit heads fused on) into ONE ONNX model for batches: each exit keeps the rows
// that go on with `Compress`, so one onnxruntime run replaces the stage engine's run per segment, its activations read
// out of and copied back into WebAssembly memory, and its JS decisions; the rows' results come out in exit order with
// their input row. A prefix compiles too (lazy loading: the rows no compiled exit took continue from the cut).
import { composedModel } from './compose.js';
import {
  appendScope,
  branchGraph,
  CASCADE_IO,
  EXIT_INDEX_FULL,
  gateOne,
  invalid,
  nodesOnly,
  ONE,
  setupCascade,
  thresholdSplit,
  valueInfo,
  type CascadePart,
  type CompileCascadeOptions,
  type Dims,
  type Prepared,
  type Scope,
} from './compile-cascade.js';
import type { OnnxModel } from './model.js';
import { makeNode, makeTensor, pb, type DType, type onnx } from './proto.js';

/** Names of the batch model's inputs and outputs (the image input keeps part 0's input name). */
export const BATCH_CASCADE_IO = {
  /** float32 `[exitCount]`: fill with cascadeThresholds (compile-cascade.ts), as for the batch-1 model. */
  thresholds: CASCADE_IO.thresholds,
  /** float32 `[k, classes]`: the probabilities of each row that got a result (exit head's or backbone's), in exit order. */
  probabilities: CASCADE_IO.probabilities,
  /** int64 `[k]`: the exit each of those rows took, or EXIT_INDEX_FULL. */
  exitIndex: CASCADE_IO.exitIndex,
  /** int64 `[k]`: the input row of each of those rows. */
  rowIndex: 'row_index',
  /** Prefix models only: the cut activation `[m, …]` of the rows no compiled exit took (zero-size when none). */
  continueActivation: CASCADE_IO.continueActivation,
  /** Prefix models only: int64 `[m]`, the input row of each row of `continue_activation`. */
  continueRows: 'continue_rows',
} as const;

export type CompileBatchCascadeOptions = Pick<CompileCascadeOptions, 'end' | 'exitCount' | 'gateHeads'>;

const GRAPH_ATTR = 5;

/**
 * One ONNX model running `parts` (consecutive segments of a bundle) with their exits on a batch of any size.
 *
 * Inputs: part 0's input (its name, first dim free) and `thresholds` as the batch-1 model's. Outputs: see
 * {@link BATCH_CASCADE_IO}; every input row is in exactly one of `row_index` and (prefix) `continue_rows`.
 *
 * Structure: `rows` = 0 .. n-1; part 0 → at its exit: the max probability of each row against the exit's threshold,
 * `Compress` of the probabilities and rows that leave and of the activation and rows that go on, then
 * `If(any row goes on)` whose then-branch holds the rest of the cascade from part 1 on those rows, and the exit's rows
 * are concatenated before the rest's. The innermost branch ends the backbone (softmax of logits, exit -1) or, for a
 * prefix, returns the cut activation and its rows. With `gateHeads` (default true) each head runs only while its
 * threshold is at most 1 (else the rows all go on, the head skipped), as in the batch-1 model. Decisions are the stage
 * engine's: a row leaves at the first exit whose max probability >= its threshold (thresholds rounded up to float32).
 * @throws SelfxitError as compileCascade; `INVALID_BUNDLE` also when the class count is not declared, the last
 *   segment's output has no batch dim, or the opset is below 11 (`Range`, `Compress` on any axis).
 */
export function compileBatchCascade(parts: readonly CascadePart[], options: CompileBatchCascadeOptions): OnnxModel {
  // Part i reads the rows its predecessor's exit let go on; or its predecessor's output when that has no exit.
  const goAct = (e: number): string => `cascade/exit${e}/go_act`;
  const setup = setupCascade(parts, options, (i, prev) => (prev.exit !== undefined ? goAct(prev.exit) : prev.output));
  const { prepared, exits, exitCount, classes, cont, lastIdx, inputName, merged, opset, thresholdOf } = setup;
  if (classes === null) invalid('the exits and the backbone declare no class count, which a batch model needs');
  if (opset < 11) invalid(`a batch model needs opset 11 or later (the model imports opset ${opset})`, { opset });
  if (inputName === BATCH_CASCADE_IO.rowIndex || inputName === BATCH_CASCADE_IO.continueRows)
    invalid(`the input name "${inputName}" is reserved by the batch model`, { tensor: inputName });
  // setupCascade ignores the last part's exit unless the parts are a prefix (as the stage engine does).
  const exitOf = (i: number): number | undefined => exits[i];
  const last = prepared[lastIdx]!;
  if (!cont && last.outDims !== undefined && last.outDims.length < 2)
    invalid(`the last segment's output "${parts[lastIdx]!.output}" has no batch dim`, { segment: lastIdx });
  const contRest = last.outDims?.slice(1);

  const types: { dtype: DType; dims: Dims }[] = [
    { dtype: 'float32', dims: [null, classes] },
    { dtype: 'int64', dims: [null] },
    { dtype: 'int64', dims: [null] },
    ...(cont
      ? [
          { dtype: last.outDtype, dims: contRest ? [null, ...contRest] : undefined },
          { dtype: 'int64' as const, dims: [null] },
        ]
      : []),
  ];
  const infos = (names: readonly string[]): onnx.ValueInfoProto[] =>
    names.map((n, k) => valueInfo(n, types[k]!.dtype, types[k]!.dims));
  const constant = (name: string, t: onnx.TensorProto): onnx.NodeProto =>
    makeNode('Constant', [], [name], { value: t }, `cascade/${name}`);
  const emptyI64 = (name: string): onnx.NodeProto => constant(name, makeTensor('', 'int64', [0], []));
  const emptyProbs = (name: string): onnx.NodeProto =>
    constant(name, makeTensor('', 'float32', [0, classes], new Float32Array(0)));
  const emptyCont = (name: string): onnx.NodeProto =>
    constant(name, makeTensor('', last.outDtype, [0, ...(contRest ?? []).map((d) => d ?? 0)], []));
  /** `[k]` int64 filled with `value`, k the length of `like` (an int64 `[k]`). */
  const column = (name: string, like: string, value: number): onnx.NodeProto[] => [
    makeNode('Shape', [like], [`${name}/shape`], {}, `${name}/Shape`),
    makeNode(
      'ConstantOfShape',
      [`${name}/shape`],
      [name],
      { value: makeTensor('', 'int64', [1], [value]) },
      `${name}/ConstantOfShape`,
    ),
  ];
  const branch = branchGraph;
  const ifNode = (
    name: string,
    cond: string,
    outs: readonly string[],
    then: onnx.GraphProto,
    other: onnx.GraphProto,
  ) => {
    const n = makeNode('If', [cond], outs, {}, name);
    n.attribute = [
      pb.AttributeProto.create({ name: 'then_branch', type: GRAPH_ATTR, g: then }),
      pb.AttributeProto.create({ name: 'else_branch', type: GRAPH_ATTR, g: other }),
    ];
    return n;
  };
  const append = appendScope;

  // Exit e of part p on the rows `rows`: writes `${t}probs` / `${t}rows` (the rows that leave) and go_act / `${t}go_rows`.
  const decide = (p: Prepared, e: number, rows: string): onnx.INodeProto[] => {
    const t = `cascade/exit${e}/`;
    const outs = [`${t}probs`, `${t}rows`, goAct(e), `${t}go_rows`];
    const rule = (probs: string, names: readonly string[], at: string): onnx.NodeProto[] => {
      const max = `${at}max`;
      const fire = `${at}fire`;
      const stay = `${at}stay`;
      const reduce =
        opset >= 18
          ? [
              constant(`${at}axis1`, makeTensor('', 'int64', [1], [1])),
              makeNode('ReduceMax', [probs, `${at}axis1`], [max], { keepdims: 0 }, `${at}ReduceMax`),
            ]
          : [makeNode('ReduceMax', [probs], [max], { axes: [1], keepdims: 0 }, `${at}ReduceMax`)];
      const compare =
        opset >= 12
          ? [makeNode('GreaterOrEqual', [max, thresholdOf(e)], [fire], {}, `${at}GreaterOrEqual`)]
          : [
              makeNode('Less', [max, thresholdOf(e)], [`${at}below`], {}, `${at}Less`),
              makeNode('Not', [`${at}below`], [fire], {}, `${at}Not`),
            ];
      const compress = (x: string, cond: string, out: string): onnx.NodeProto =>
        makeNode('Compress', [x, cond], [out], { axis: 0 }, `${out}/Compress`);
      return [
        ...reduce,
        ...compare,
        makeNode('Not', [fire], [stay], {}, `${at}Not_fire`),
        compress(probs, fire, names[0]!),
        compress(rows, fire, names[1]!),
        compress(p.output, stay, names[2]!),
        compress(rows, stay, names[3]!),
      ];
    };
    if (!p.head) return rule(p.exitOutput!, outs, t);
    // Gated: If(threshold > 1) then every row goes on and none leaves, else the head and the rule.
    const on = `${t}on/`;
    const onOuts = outs.map((n) => `${on}${n.slice(t.length)}`);
    const offOuts = outs.map((n) => `${t}off/${n.slice(t.length)}`);
    const headScope = nodesOnly([...p.head.nodes, ...rule(p.exitOutput!, onOuts, on)]);
    headScope.initializers.push(...p.head.initializers);
    headScope.valueInfo.push(...p.head.valueInfo);
    const gateInfos = (names: readonly string[]): onnx.ValueInfoProto[] => [
      valueInfo(names[0]!, 'float32', [null, classes]),
      valueInfo(names[1]!, 'int64', [null]),
      valueInfo(names[2]!, p.outDtype, p.outDims ? [null, ...p.outDims.slice(1)] : undefined),
      valueInfo(names[3]!, 'int64', [null]),
    ];
    const off = nodesOnly([
      emptyProbs(offOuts[0]!),
      emptyI64(offOuts[1]!),
      makeNode('Identity', [p.output], [offOuts[2]!], {}, `${t}off/Identity_act`),
      makeNode('Identity', [rows], [offOuts[3]!], {}, `${t}off/Identity_rows`),
    ]);
    return [
      makeNode('Greater', [thresholdOf(e), ONE], [`${t}disabled`], {}, `${t}Greater`),
      ifNode(
        `${t}gate`,
        `${t}disabled`,
        outs,
        branch(`exit${e}_off`, off, offOuts, gateInfos(offOuts)),
        branch(`exit${e}_on`, headScope, onOuts, gateInfos(onOuts)),
      ),
    ];
  };

  // Nothing left to give: zero-size outputs of the right rank and type.
  const emptyOuts = (outs: readonly string[]): onnx.NodeProto[] => [
    emptyProbs(outs[0]!),
    emptyI64(outs[1]!),
    emptyI64(outs[2]!),
    ...(cont ? [emptyCont(outs[3]!), emptyI64(outs[4]!)] : []),
  ];

  // The graph content from part i on, for the rows `rows` (int64 [n]) whose activation part i reads, writing `outs`.
  const scope = (i: number, rows: string, outs: readonly string[]): Scope => {
    const p = prepared[i]!;
    const s = nodesOnly([]);
    append(s, p);
    const e = exitOf(i);
    if (e === undefined) {
      if (i < lastIdx) {
        append(s, scope(i + 1, rows, outs));
      } else if (cont) {
        s.nodes.push(
          emptyProbs(outs[0]!),
          emptyI64(outs[1]!),
          emptyI64(outs[2]!),
          makeNode('Identity', [p.output], [outs[3]!], {}, `cascade/${outs[3]}`),
          makeNode('Identity', [rows], [outs[4]!], {}, `cascade/${outs[4]}`),
        );
      } else {
        let x = p.output;
        if (p.outDims?.length !== 2) {
          s.nodes.push(makeNode('Flatten', [x], ['cascade/final_rows'], { axis: 1 }, 'cascade/final_Flatten'));
          x = 'cascade/final_rows';
        }
        const op = options.end === 'logits' ? 'Softmax' : 'Identity';
        s.nodes.push(makeNode(op, [x], [outs[0]!], op === 'Softmax' ? { axis: 1 } : {}, `cascade/final_${op}`));
        s.nodes.push(...column(outs[1]!, rows, EXIT_INDEX_FULL));
        s.nodes.push(makeNode('Identity', [rows], [outs[2]!], {}, `cascade/final_rows_Identity`));
      }
      return s;
    }
    const t = `cascade/exit${e}/`;
    s.nodes.push(...decide(p, e, rows));
    s.nodes.push(...column(`${t}exit`, `${t}rows`, e));
    if (i === lastIdx) {
      // The last part of a prefix: the rows its exit did not take continue from its cut.
      s.nodes.push(
        makeNode('Identity', [`${t}probs`], [outs[0]!], {}, `${t}out_probs`),
        makeNode('Identity', [`${t}exit`], [outs[1]!], {}, `${t}out_exit`),
        makeNode('Identity', [`${t}rows`], [outs[2]!], {}, `${t}out_rows`),
        makeNode('Identity', [goAct(e)], [outs[3]!], {}, `${t}out_cont`),
        makeNode('Identity', [`${t}go_rows`], [outs[4]!], {}, `${t}out_cont_rows`),
      );
      return s;
    }
    // Any row left: the rest of the cascade runs on them; else it gives nothing.
    const kinds = ['probabilities', 'exit_index', 'row_index', 'continue', 'continue_rows'].slice(0, outs.length);
    const restOuts = kinds.map((k) => `${t}rest/${k}`);
    const thenOuts = kinds.map((k) => `${t}then/${k}`);
    const elseOuts = kinds.map((k) => `${t}else/${k}`);
    s.nodes.push(
      makeNode('Shape', [`${t}go_rows`], [`${t}left`], {}, `${t}Shape_left`),
      constant(`${t}zero`, makeTensor('', 'int64', [1], [0])),
      makeNode('Greater', [`${t}left`, `${t}zero`], [`${t}any_left`], {}, `${t}Greater_left`),
      ifNode(
        `${t}If`,
        `${t}any_left`,
        restOuts,
        branch(`exit${e}_rest`, scope(i + 1, `${t}go_rows`, thenOuts), thenOuts, infos(thenOuts)),
        branch(`exit${e}_none_left`, nodesOnly(emptyOuts(elseOuts)), elseOuts, infos(elseOuts)),
      ),
      makeNode('Concat', [`${t}probs`, restOuts[0]!], [outs[0]!], { axis: 0 }, `${t}Concat_probs`),
      makeNode('Concat', [`${t}exit`, restOuts[1]!], [outs[1]!], { axis: 0 }, `${t}Concat_exit`),
      makeNode('Concat', [`${t}rows`, restOuts[2]!], [outs[2]!], { axis: 0 }, `${t}Concat_rows`),
      ...(cont
        ? [
            makeNode('Identity', [restOuts[3]!], [outs[3]!], {}, `${t}Identity_cont`),
            makeNode('Identity', [restOuts[4]!], [outs[4]!], {}, `${t}Identity_cont_rows`),
          ]
        : []),
    );
    return s;
  };

  const outNames = [
    BATCH_CASCADE_IO.probabilities,
    BATCH_CASCADE_IO.exitIndex,
    BATCH_CASCADE_IO.rowIndex,
    ...(cont ? [BATCH_CASCADE_IO.continueActivation, BATCH_CASCADE_IO.continueRows] : []),
  ];
  // rows = Range(0, n): n from the input's shape.
  const rows = 'cascade/rows';
  const top = nodesOnly([
    makeNode('Shape', [inputName], ['cascade/input_shape'], {}, 'cascade/input_Shape'),
    constant('cascade/dim0', makeTensor('', 'int64', [], [0])),
    makeNode('Gather', ['cascade/input_shape', 'cascade/dim0'], ['cascade/n'], { axis: 0 }, 'cascade/n_Gather'),
    constant('cascade/start', makeTensor('', 'int64', [], [0])),
    constant('cascade/step', makeTensor('', 'int64', [], [1])),
    makeNode('Range', ['cascade/start', 'cascade/n', 'cascade/step'], [rows], {}, 'cascade/rows_Range'),
  ]);
  append(top, scope(0, rows, outNames));
  const split = thresholdSplit(setup);
  if (split) top.nodes.unshift(split);
  const one = gateOne(setup);
  if (one) top.initializers.push(one);
  const inDims: Dims = setup.inputInfo.shape?.map((d, k) => (k === 0 ? null : typeof d === 'number' ? d : null));
  const graph = pb.GraphProto.create({
    name: 'selfxit_compiled_batch_cascade',
    node: top.nodes,
    initializer: top.initializers,
    sparseInitializer: top.sparse,
    valueInfo: top.valueInfo,
    input: [
      valueInfo(inputName, setup.inputDtype, inDims),
      valueInfo(BATCH_CASCADE_IO.thresholds, 'float32', [exitCount]),
    ],
    output: infos(outNames),
  });
  return composedModel(merged, graph);
}

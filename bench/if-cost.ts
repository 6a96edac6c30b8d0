// Micro-benchmark of onnxruntime-web's (WASM, Node, 1 thread) fixed costs that a compiled cascade pays per exit, on a
// tiny synthetic network (20 × Conv 3x3 + Relu on [1, 8, 8, 8]) so that the per-run overheads are not lost in noise:
// an extra input and output, one `If` with trivial branches, the network's tail inside nested `If` else-branches or
// split over a flat sequence of `If`s (one stage per branch, as compileCascade lays it out),
// interleaved run by run. Prints median µs and the extra over the plain network.
//
//   npx tsx bench/if-cost.ts [--runs N]   (env IF_C, IF_HW, IF_DEPTH: channels, size, layers; default 8, 8, 20)
import * as ortWeb from 'onnxruntime-web/wasm';
import { intFlag } from './args.js';
import { encodeModel } from '../src/graph/index.js';
import { makeNode, makeTensor, makeValueInfo, pb, type onnx } from '../src/graph/proto.js';
import type { OrtModule, OrtSessionOptions, OrtTensor } from '../src/ort/types.js';

const ort = ortWeb as unknown as OrtModule;
ortWeb.env.wasm.numThreads = 1;
const RUNS = intFlag(process.argv.slice(2), '--runs', 2000);

const C = Number(process.env.IF_C ?? 8);
const HW = Number(process.env.IF_HW ?? 8);
const DEPTH = Number(process.env.IF_DEPTH ?? 20);
const SHAPE = [1, C, HW, HW];
const GRAPH_ATTR = 5;

let seed = 1;
const rand = (n: number): Float32Array =>
  Float32Array.from({ length: n }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * 0.3);

/** Conv+Relu layers from..to-1 reading `input`; returns nodes, initializers and the last output's name. */
function layers(
  from: number,
  to: number,
  input: string,
): { nodes: onnx.NodeProto[]; inits: onnx.TensorProto[]; out: string } {
  const nodes: onnx.NodeProto[] = [];
  const inits: onnx.TensorProto[] = [];
  let x = input;
  for (let l = from; l < to; l++) {
    inits.push(
      makeTensor(`w${l}`, 'float32', [C, C, 3, 3], rand(C * C * 9)),
      makeTensor(`b${l}`, 'float32', [C], rand(C)),
    );
    nodes.push(makeNode('Conv', [x, `w${l}`, `b${l}`], [`c${l}`], { pads: [1, 1, 1, 1] }, `Conv${l}`));
    nodes.push(makeNode('Relu', [`c${l}`], [`r${l}`], {}, `Relu${l}`));
    x = `r${l}`;
  }
  return { nodes, inits, out: x };
}

const vi = (name: string, dtype: 'float32' | 'int64' = 'float32', shape: number[] = SHAPE): onnx.ValueInfoProto =>
  makeValueInfo(name, dtype, shape);

function model(
  nodes: onnx.NodeProto[],
  inits: onnx.TensorProto[],
  outputs: onnx.ValueInfoProto[],
  thr: boolean,
): Uint8Array {
  return encodeModel({
    proto: pb.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: {
        name: 'g',
        node: nodes,
        initializer: inits,
        input: [vi('x'), ...(thr ? [vi('t', 'float32', [5])] : [])],
        output: outputs,
      },
    }),
  });
}

/** `fire = ReduceMax(x) >= t[k]` nodes (k-th threshold). */
function decision(x: string, k: number, p: string): { nodes: onnx.NodeProto[]; inits: onnx.TensorProto[] } {
  return {
    inits: [makeTensor(`${p}k`, 'int64', [], [k % 5])],
    nodes: [
      makeNode('Gather', ['t', `${p}k`], [`${p}thr`], { axis: 0 }),
      makeNode('ReduceMax', [x], [`${p}max`], { keepdims: 0 }),
      makeNode('GreaterOrEqual', [`${p}max`, `${p}thr`], [`${p}fire`]),
    ],
  };
}

function ifNode(cond: string, out: string, p: string, then: onnx.IGraphProto, els: onnx.IGraphProto): onnx.NodeProto {
  const n = makeNode('If', [cond], [out], {}, `${p}If`);
  n.attribute = [
    pb.AttributeProto.create({ name: 'then_branch', type: GRAPH_ATTR, g: then }),
    pb.AttributeProto.create({ name: 'else_branch', type: GRAPH_ATTR, g: els }),
  ];
  return n;
}

/** The network with `exits` nested `If`s after layers at even spacing: then → Identity of the cut; else → the rest. */
/** `onConstant`: the decision reads `t` (5 floats), not the activation, as the real cascade's decision reads 10 probabilities. */
function nested(exits: number, onConstant = false): Uint8Array {
  const cuts = Array.from({ length: exits }, (_, e) => Math.round(((e + 1) * DEPTH) / (exits + 1)));
  const scope = (
    e: number,
    from: number,
    input: string,
    out: string,
  ): { nodes: onnx.NodeProto[]; inits: onnx.TensorProto[] } => {
    const to = e < exits ? cuts[e]! : DEPTH;
    const body = layers(from, to, input);
    if (e === exits) {
      body.nodes.push(makeNode('Identity', [body.out], [out]));
      return body;
    }
    const p = `e${e}/`;
    const d = decision(onConstant ? `${p}zeros` : body.out, e, p);
    if (onConstant) d.inits.push(makeTensor(`${p}zeros`, 'float32', [5], new Float32Array(5)));
    const inner = scope(e + 1, to, body.out, `${p}else_out`);
    const then = pb.GraphProto.create({
      name: `${p}then`,
      node: [makeNode('Identity', [body.out], [`${p}then_out`])],
      output: [vi(`${p}then_out`)],
    });
    const els = pb.GraphProto.create({
      name: `${p}else`,
      node: inner.nodes,
      initializer: inner.inits,
      output: [vi(`${p}else_out`)],
    });
    return {
      nodes: [...body.nodes, ...d.nodes, ifNode(`${p}fire`, out, p, then, els)],
      inits: [...body.inits, ...d.inits],
    };
  };
  const s = scope(0, 0, 'x', 'y');
  return model(s.nodes, s.inits, [vi('y')], true);
}

/** The same exits as {@link nested}, laid out flat (compileCascade's default): a sequence of `If(exited so far)`, each
 * else-branch running one stage (its layers and decision), each then-branch passing the result through with a
 * zero-size activation; the result, the exited flag and the activation are carried from one `If` to the next. */
function flat(exits: number): Uint8Array {
  const cuts = Array.from({ length: exits }, (_, e) => Math.round(((e + 1) * DEPTH) / (exits + 1)));
  const first = layers(0, cuts[0]!, 'x');
  const d0 = decision(first.out, 0, 'e0/');
  const nodes = [...first.nodes, ...d0.nodes];
  const inits = [...first.inits, ...d0.inits];
  let carry = { res: first.out, fire: 'e0/fire', act: first.out };
  for (let e = 1; e <= exits; e++) {
    const p = `s${e}/`;
    const last = e === exits;
    const body = layers(cuts[e - 1]!, last ? DEPTH : cuts[e]!, carry.act);
    const d = last ? undefined : decision(body.out, e, p);
    const outs = last ? ['y'] : [`${p}res`, `${p}fire`, `${p}act`];
    const infos = (names: string[]): onnx.ValueInfoProto[] =>
      names.map((n, k) =>
        k === 1 ? makeValueInfo(n, 'bool', []) : k === 2 ? makeValueInfo(n, 'float32', ['n', C, HW, HW]) : vi(n),
      );
    const thenOuts = outs.map((n) => `${p}then/${n}`);
    const elseOuts = outs.map((n) => `${p}else/${n}`);
    const then = pb.GraphProto.create({
      name: `${p}then`,
      node: [
        makeNode('Identity', [carry.res], [thenOuts[0]!]),
        ...(last
          ? []
          : [
              makeNode('Identity', [carry.fire], [thenOuts[1]!]),
              makeNode('Constant', [], [thenOuts[2]!], {
                value: makeTensor('', 'float32', [0, C, HW, HW], new Float32Array(0)),
              }),
            ]),
      ],
      output: infos(thenOuts),
    });
    const els = pb.GraphProto.create({
      name: `${p}else`,
      node: [
        ...body.nodes,
        ...(d?.nodes ?? []),
        makeNode('Identity', [body.out], [elseOuts[0]!]),
        ...(last
          ? []
          : [makeNode('Identity', [`${p}fire`], [elseOuts[1]!]), makeNode('Identity', [body.out], [elseOuts[2]!])]),
      ],
      initializer: [...body.inits, ...(d?.inits ?? [])],
      output: infos(elseOuts),
    });
    const n = ifNode(carry.fire, outs[0]!, p, then, els);
    n.output = outs;
    nodes.push(n);
    carry = { res: outs[0]!, fire: outs[1]!, act: outs[2]! };
  }
  return model(nodes, inits, [vi('y')], true);
}

/** 200 Relu on a tiny tensor after the network, inline or inside one `If`'s else-branch: per-node cost in each. */
function cheapNodes(inIf: boolean): Uint8Array {
  const body = layers(0, DEPTH, 'x');
  const relus: onnx.NodeProto[] = [makeNode('ReduceMax', [body.out], ['m0'], { axes: [2, 3], keepdims: 0 })];
  for (let i = 0; i < 200; i++) relus.push(makeNode(i % 2 ? 'Relu' : 'Neg', [`m${i}`], [`m${i + 1}`]));
  if (!inIf) return model([...body.nodes, ...relus], body.inits, [vi('m200', 'float32', [1, C])], true);
  const d = decision(body.out, 0, 'd/');
  const then = pb.GraphProto.create({
    name: 't',
    node: [makeNode('Identity', ['m0'], ['tz'])],
    output: [vi('tz', 'float32', [1, C])],
  });
  const els = pb.GraphProto.create({
    name: 'e',
    node: [...relus.slice(1), makeNode('Identity', ['m200'], ['ez'])],
    output: [vi('ez', 'float32', [1, C])],
  });
  return model(
    [...body.nodes, relus[0]!, ...d.nodes, ifNode('d/fire', 'z', 'd/', then, els)],
    [...body.inits, ...d.inits],
    [vi('z', 'float32', [1, C])],
    true,
  );
}

function variants(): [string, Uint8Array, boolean][] {
  const plain = layers(0, DEPTH, 'x');
  const withOut = (extra: onnx.NodeProto[], outs: onnx.ValueInfoProto[], thr: boolean): Uint8Array =>
    model([...plain.nodes, ...extra, makeNode('Identity', [plain.out], ['y'])], plain.inits, [vi('y'), ...outs], thr);
  const d = decision(plain.out, 0, 'd/');
  const trivialIf = ifNode(
    'd/fire',
    'z',
    'd/',
    pb.GraphProto.create({ name: 't', node: [makeNode('Identity', [plain.out], ['tz'])], output: [vi('tz')] }),
    pb.GraphProto.create({ name: 'e', node: [makeNode('Identity', [plain.out], ['ez'])], output: [vi('ez')] }),
  );
  return [
    ['plain', withOut([], [], false), false],
    ['+ unused thresholds input', withOut([], [], true), true],
    [
      '+ int64 Constant output',
      withOut(
        [makeNode('Constant', [], ['k'], { value: makeTensor('', 'int64', [1], [3]) })],
        [vi('k', 'int64', [1])],
        false,
      ),
      false,
    ],
    [
      '+ decision (Gather, ReduceMax, >=) as output',
      model(
        [...plain.nodes, ...d.nodes, makeNode('Identity', [plain.out], ['y'])],
        [...plain.inits, ...d.inits],
        [vi('y'), makeValueInfo('d/fire', 'bool', [])],
        true,
      ),
      true,
    ],
    [
      '+ decision + 1 trivial If (Identity branches)',
      model(
        [...plain.nodes, ...d.nodes, trivialIf, makeNode('Identity', [plain.out], ['y'])],
        [...plain.inits, ...d.inits],
        [vi('y'), vi('z')],
        true,
      ),
      true,
    ],
    ['1 nested If (tail in else)', nested(1), true],
    ['2 nested If', nested(2), true],
    ['5 nested If', nested(5), true],
    ['10 nested If', nested(10), true],
    ['1 flat If (= 1 nested)', flat(1), true],
    ['2 flat If', flat(2), true],
    ['5 flat If', flat(5), true],
    ['10 flat If', flat(10), true],
    ['5 nested If, decisions on a constant', nested(5, true), true],
    ['+ 200 cheap nodes (Neg/Relu on [1, C]) inline', cheapNodes(false), true],
    ['+ the 200 cheap nodes in an If else-branch', cheapNodes(true), true],
  ];
}

async function main(): Promise<void> {
  const base: OrtSessionOptions = {
    graphOptimizationLevel: 'all',
    ...(process.env.IF_OPTIONS ? (JSON.parse(process.env.IF_OPTIONS) as OrtSessionOptions) : {}),
  };
  const x = new ort.Tensor('float32', rand(C * HW * HW), SHAPE);
  const t = new ort.Tensor('float32', new Float32Array(5).fill(Infinity), [5]);
  const vs: { name: string; run: () => Promise<unknown> }[] = [];
  for (const [name, bytes, thr] of variants()) {
    const s = await ort.InferenceSession.create(bytes, base);
    const feeds: Record<string, OrtTensor> = thr ? { x, t } : { x };
    vs.push({
      name,
      run: async () => {
        const out = await s.run(feeds);
        for (const o of Object.values(out)) void o.data;
      },
    });
  }
  for (const v of vs) for (let i = 0; i < 50; i++) await v.run();
  const times = vs.map(() => [] as number[]);
  for (let i = 0; i < RUNS; i++)
    for (let j = 0; j < vs.length; j++) {
      const k = (i + j) % vs.length;
      const c0 = process.cpuUsage(); // this process's CPU time: leaves out other processes on a loaded machine
      await vs[k]!.run();
      const c = process.cpuUsage(c0);
      times[k]!.push((c.user + c.system) / 1000);
    }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const m0 = median(times[0]!);
  console.log(
    `onnxruntime-web WASM 1 thread (Node), ${DEPTH} x Conv3x3+Relu on [${SHAPE.join(', ')}], ${RUNS} runs each`,
  );
  console.log('| variant | median µs | extra µs |');
  console.log('|---|---:|---:|');
  vs.forEach((v, k) => {
    const m = median(times[k]!);
    console.log(`| ${v.name} | ${(m * 1000).toFixed(1)} | ${((m - m0) * 1000).toFixed(1)} |`);
  });
}

await main();

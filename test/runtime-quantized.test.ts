// Quantized models never run on WebGPU (onnxruntime-web's WebGPU backend computes their ops wrongly, with no error):
// quantizedOps() on real graphs (If/Loop bodies too), and the runtime in Node, onnxruntime-node posing as WebGPU, on
// tiny bundles with a QuantizeLinear → DequantizeLinear pair in one segment: the manifest's backbone.quantized, or for a
// bundle without it each segment's bytes, moves every segment to WASM before WebGPU runs a quantized one.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { InferenceSession } from 'onnxruntime-common';
import * as ortNode from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { decodeModel, encodeModel, quantizedOps, sha256Hex, type OnnxModel } from '../src/graph/index.js';
import { makeNode, makeTensor, pb } from '../src/graph/proto.js';
import { MAX_SUBGRAPH_DEPTH, UNKNOWN_DEPTH } from '../src/graph/quant-ops.js';
import type { InitRequest, WireResult } from '../src/protocol.js';
import { noCache, prunedKey, type PrunedRecord } from '../src/runtime/cache.js';
import { LearnRuntime } from '../src/runtime/learn-runtime.js';
import { noLearnStore } from '../src/runtime/learn-store.js';
import { loadOrt, type OrtHandle, type OrtWeb } from '../src/runtime/ort-backend.js';
import { BundleRuntime } from '../src/runtime/runtime.js';
import { quantizedGraph, residualGraph } from './fixtures/graphs.js';
import { prunedCache } from './fixtures/pruned-cache.js';
import { qopClassifier } from './fixtures/quant-graphs.js';
import { loadOrtNode, serveTinyBundles, tinyInitRequest, type TinyServer } from './fixtures/tiny-server.js';

/** A float graph whose only quantized ops are in the `then_branch` of an If (`op` 'If') or a Loop body. */
function nestedQuantized(op: 'If' | 'Loop'): OnnxModel {
  const inner = quantizedGraph().model.proto.graph!;
  const body = pb.GraphProto.create({ ...inner, input: [], name: 'body' });
  const floatBody = pb.GraphProto.create({ name: 'else', node: [makeNode('Identity', ['x'], ['y'])], output: [] });
  const GRAPH = pb.AttributeProto.AttributeType.GRAPH;
  const attrs =
    op === 'If'
      ? [
          pb.AttributeProto.create({ name: 'then_branch', type: GRAPH, g: body }),
          pb.AttributeProto.create({ name: 'else_branch', type: GRAPH, g: floatBody }),
        ]
      : [pb.AttributeProto.create({ name: 'body', type: GRAPH, g: body })];
  const node = pb.NodeProto.create({ opType: op, input: ['cond'], output: ['out'], attribute: attrs });
  return {
    proto: pb.ModelProto.create({
      irVersion: 7,
      opsetImport: [{ domain: '', version: 13 }],
      graph: { name: 'outer', node: [makeNode('Relu', ['x'], ['r']), node], initializer: [] },
    }),
  };
}

describe('quantizedOps (graph/quant-ops.ts)', () => {
  it('names the quantized op types of QOperator and QDQ-style graphs, none of a float one', () => {
    expect(quantizedOps(encodeModel(qopClassifier()))).toEqual([
      'DequantizeLinear',
      'QLinearAdd',
      'QLinearConv',
      'QLinearGlobalAveragePool',
      'QuantizeLinear',
    ]);
    expect(quantizedOps(encodeModel(quantizedGraph('int8').model))).toEqual([
      'DequantizeLinear',
      'QLinearConv',
      'QuantizeLinear',
    ]);
    expect(quantizedOps(encodeModel(residualGraph().model))).toEqual([]);
  });

  it('finds them inside If and Loop bodies', () => {
    for (const op of ['If', 'Loop'] as const)
      expect(quantizedOps(encodeModel(nestedQuantized(op)))).toEqual([
        'DequantizeLinear',
        'QLinearConv',
        'QuantizeLinear',
      ]);
  });

  it('reads a truncated model as far as it goes, without throwing', () => {
    const bytes = encodeModel(qopClassifier());
    for (const n of [0, 1, 7, 100, bytes.length >> 1, bytes.length - 1])
      expect(() => quantizedOps(bytes.subarray(0, n))).not.toThrow();
    expect(quantizedOps(Uint8Array.of(0xff, 0xff, 0xff))).toEqual([]);
  });

  it('finds them in model-local functions (ModelProto field 25)', () => {
    const fn = (op: string): Uint8Array =>
      wire(25, wire(1, new TextEncoder().encode('f')), wire(7, wire(4, new TextEncoder().encode(op))));
    const float = encodeModel(residualGraph().model);
    expect(quantizedOps(Uint8Array.from([...float, ...fn('QuantizeLinear')]))).toEqual(['QuantizeLinear']);
    expect(quantizedOps(Uint8Array.from([...float, ...fn('Relu')]))).toEqual([]);
  });

  it('subgraphs nested deeper than MAX_SUBGRAPH_DEPTH: no stack overflow, read as quantized (WASM)', () => {
    expect(quantizedOps(nestedGraphs(MAX_SUBGRAPH_DEPTH, 'QuantizeLinear'))).toEqual(['QuantizeLinear']);
    expect(quantizedOps(nestedGraphs(MAX_SUBGRAPH_DEPTH, 'Relu'))).toEqual([]);
    expect(quantizedOps(nestedGraphs(MAX_SUBGRAPH_DEPTH + 1, 'Relu'))).toEqual([UNKNOWN_DEPTH]);
    expect(quantizedOps(nestedGraphs(5000, 'Relu'))).toEqual([UNKNOWN_DEPTH]);
  });
});

/** A length-delimited protobuf field `field` holding the concatenated `parts`. */
function wire(field: number, ...parts: Uint8Array[]): Uint8Array {
  const body = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  parts.reduce((at, p) => (body.set(p, at), at + p.length), 0);
  const varint = (v: number): number[] => {
    const out: number[] = [];
    for (; v >= 0x80; v = Math.floor(v / 128)) out.push((v & 0x7f) | 0x80);
    return [...out, v];
  };
  const head = [...varint(field * 8 + 2), ...varint(body.length)];
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** Model bytes whose graph nests `depth` If-style subgraphs (attribute g), the innermost with one `op` node. */
function nestedGraphs(depth: number, op: string): Uint8Array {
  const text = new TextEncoder();
  let graph = wire(1, wire(4, text.encode(op)));
  for (let d = 0; d < depth; d++) graph = wire(1, wire(4, text.encode('If')), wire(5, wire(6, graph)));
  return wire(7, graph);
}

/**
 * Segment bytes with `out` (its main output) passed through QuantizeLinear → DequantizeLinear (uint8, scale 0.05, zero
 * point `zp`): the same outputs to 0.025, now holding quantized ops.
 */
function withQdqOutput(bytes: Uint8Array, out: string, zp: number): Uint8Array {
  const m = decodeModel(bytes);
  const g = m.proto.graph!;
  for (const n of g.node ?? []) n.output = (n.output ?? []).map((o) => (o === out ? `${out}_f` : o));
  g.initializer = [
    ...(g.initializer ?? []),
    makeTensor('qdq_scale', 'float32', [], [0.05]),
    makeTensor('qdq_zp', 'uint8', [], [zp]),
  ];
  g.node = [
    ...(g.node ?? []),
    makeNode('QuantizeLinear', [`${out}_f`, 'qdq_scale', 'qdq_zp'], [`${out}_q`], {}, 'qdq_q'),
    makeNode('DequantizeLinear', [`${out}_q`, 'qdq_scale', 'qdq_zp'], [out], {}, 'qdq_dq'),
  ];
  return encodeModel(m);
}

/** Sessions made and released on the fake WebGPU (onnxruntime-node on the CPU while the handle says 'webgpu'). */
interface GpuLog {
  created: number;
  released: number;
  /** Runs of a WASM session fed a tensor marked as a GPU buffer (with `located`). */
  gpuFedToWasm?: number;
}

/**
 * `located`: the outputs WebGPU sessions are asked to keep on the GPU come back marked 'gpu-buffer', and a session
 * made after the switch to WASM given such a tensor computes on zeros instead (a WASM session cannot read a GPU buffer;
 * whether onnxruntime then throws is not relied on).
 */
async function gpuHandle(log: GpuLog, located = false): Promise<OrtHandle> {
  const handle: OrtHandle = { ...(await loadOrtNode()), backend: 'webgpu' };
  const create = async (bytes: Uint8Array, options: InferenceSession.SessionOptions): Promise<InferenceSession> => {
    const { preferredOutputLocation: onGpu, ...cpuOptions } = options;
    const session = await ortNode.InferenceSession.create(bytes, cpuOptions);
    if (located) markGpu(session, handle.backend === 'webgpu' ? Object.keys(onGpu ?? {}) : undefined, log);
    if (handle.backend !== 'webgpu') return session;
    log.created++;
    const release = session.release.bind(session);
    session.release = () => (log.released++, release());
    return session;
  };
  return Object.assign(handle, { ort: { ...ortNode, InferenceSession: { create } } as unknown as OrtWeb });
}

/** See {@link gpuHandle}'s `located`: `gpuOutputs` marked on a WebGPU session; undefined: a WASM session. */
function markGpu(session: InferenceSession, gpuOutputs: readonly string[] | undefined, log: GpuLog): void {
  const run = session.run.bind(session) as (feeds: InferenceSession.FeedsType) => Promise<InferenceSession.ReturnType>;
  session.run = (async (feeds: InferenceSession.FeedsType) => {
    const onGpu = Object.values(feeds).some((t) => t.location === 'gpu-buffer');
    if (!gpuOutputs && onGpu) log.gpuFedToWasm = (log.gpuFedToWasm ?? 0) + 1;
    // a WebGPU session reads the (CPU) values of a tensor marked as on the GPU; a WASM one sees zeros
    const plain = (t: ortNode.Tensor): ortNode.Tensor =>
      t.location !== 'gpu-buffer'
        ? t
        : gpuOutputs
          ? new ortNode.Tensor(t.type, t.data as Float32Array, t.dims)
          : new ortNode.Tensor(t.type, new Float32Array(t.data.length), t.dims);
    const out = await run(Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, plain(t)])));
    if (!gpuOutputs) return out;
    for (const name of gpuOutputs) if (out[name]) Object.defineProperty(out[name], 'location', { value: 'gpu-buffer' });
    return out;
  }) as typeof session.run;
}

describe('the runtime runs quantized bundles on WASM, never WebGPU', () => {
  let tiny: TinyServer;
  const requests: string[] = [];
  /** WASM results of each variant bundle (batch of the 64 tiny inputs). */
  const reference = new Map<string, WireResult[]>();

  /** tiny/ copied as `name`/ with segment `seg` given a Q/DQ pair (none: -1) and `backbone.quantized` as given. */
  async function variant(name: string, seg: number, quantized: boolean | undefined): Promise<void> {
    const src = path.join(tiny.dir, 'tiny');
    const manifest = JSON.parse(readFileSync(path.join(src, 'manifest.json'), 'utf8')) as BundleManifest;
    const dir = path.join(tiny.dir, name);
    mkdirSync(dir, { recursive: true });
    const segments = await Promise.all(
      manifest.segments.map(async (s, i) => {
        let bytes: Uint8Array = new Uint8Array(readFileSync(path.join(src, s.file)));
        if (i === seg) bytes = withQdqOutput(bytes, s.output, i === manifest.segments.length - 1 ? 128 : 0);
        writeFileSync(path.join(dir, s.file), bytes);
        return { ...s, sha256: await sha256Hex(bytes), bytes: bytes.length };
      }),
    );
    const backbone = { ...manifest.backbone, ...(quantized !== undefined ? { quantized } : {}) };
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...manifest, backbone, segments }));
  }

  const request = (bundle: string, over: Partial<InitRequest> = {}): InitRequest =>
    tinyInitRequest(tiny.base, bundle, { backend: 'webgpu', cache: false, ...over });

  /** Every tiny input as one batch, then input 0 alone (the compiled engine). */
  async function classifyAll(rt: BundleRuntime): Promise<WireResult[]> {
    const thresholds = rt.manifest.exits.map((e) => e.threshold);
    const inputs = tiny.inputs.map((data) => ({ kind: 'tensor' as const, data: data.slice() }));
    const batch = await rt.classify({ inputs, thresholds, probabilities: false });
    const one = await rt.classify({ inputs: inputs.slice(0, 1), thresholds, probabilities: false });
    return [...batch, ...one].map(({ index, exit }) => ({ index, exit }) as WireResult);
  }

  beforeAll(async () => {
    tiny = await serveTinyBundles((p) => requests.push(p));
    await variant('q0-legacy', 0, undefined);
    await variant('q2-legacy', 2, undefined);
    await variant('q0-false', 0, false);
    await variant('float-flagged', -1, true);
    for (const name of ['q0-legacy', 'q2-legacy', 'tiny']) {
      const rt = await BundleRuntime.open(request(name, { backend: 'wasm' }), () => {}, { loadOrt: loadOrtNode });
      reference.set(name, await classifyAll(rt));
      await rt.dispose();
    }
  }, 60_000);
  afterAll(() => tiny?.close());

  it('a bundle without backbone.quantized, Q/DQ in segment 0: WASM from the start, segment 0 fetched once', async () => {
    const log = { created: 0, released: 0 };
    requests.length = 0;
    const rt = await BundleRuntime.open(request('q0-legacy'), () => {}, { loadOrt: () => gpuHandle(log) });
    const state = rt.state();
    expect(state.backend).toBe('wasm');
    expect(state.fallbackReason).toBe(
      "the model has quantized ops (DequantizeLinear, QuantizeLinear), which onnxruntime-web's WebGPU backend " +
        'computes wrongly (onnxruntime#32578), so it runs on WASM',
    );
    expect(log.created).toBe(0);
    expect(requests.filter((p) => p.endsWith('/q0-legacy/segment-0.onnx'))).toHaveLength(1);
    expect(await classifyAll(rt)).toEqual(reference.get('q0-legacy'));
    expect(log.created).toBe(0);
    await rt.dispose();
  });

  it('Q/DQ only in the last segment: WebGPU until it loads, then every segment on WASM (WebGPU sessions released)', async () => {
    const log = { created: 0, released: 0 };
    requests.length = 0;
    const rt = await BundleRuntime.open(request('q2-legacy'), () => {}, { loadOrt: () => gpuHandle(log) });
    expect(rt.state().backend).toBe('webgpu'); // float segment 0: as before
    expect(log.created).toBeGreaterThan(0);
    expect(await classifyAll(rt)).toEqual(reference.get('q2-legacy'));
    const state = rt.state();
    expect(state.backend).toBe('wasm');
    expect(state.fallbackReason).toMatch(/quantized ops \(DequantizeLinear, QuantizeLinear\).*onnxruntime#32578/);
    expect(log.released).toBe(log.created); // segments 0 and 1 and the compiled model, released by the switch
    await rt.dispose();
    expect(requests.filter((p) => p.endsWith('/q2-legacy/segment-2.onnx'))).toHaveLength(1);
  });

  it('live pruning after the switch to WASM: the WASM key, written with what WASM learned only (not the WebGPU memory)', async () => {
    const wasm = await BundleRuntime.open(request('q2-legacy', { backend: 'wasm' }), () => {}, {
      loadOrt: loadOrtNode,
    });
    const hash = wasm.manifestHash;
    await wasm.dispose();
    const cache = prunedCache();
    const gpuKey = prunedKey(hash, 'webgpu');
    const other = [0.999, 0.999]; // remembered on WebGPU for thresholds this test never sends
    const gpuRecord: PrunedRecord = {
      version: 1,
      manifestHash: hash,
      backend: 'webgpu',
      entries: [{ thresholds: other, pruned: [0, 1], probes: [0, 1].map(() => ({ n: 0, left: 0 })) }],
    };
    cache.records.set(gpuKey, structuredClone(gpuRecord));
    const rt = await BundleRuntime.open(request('q2-legacy', { cache: true }), () => {}, {
      cache,
      loadOrt: () => gpuHandle({ created: 0, released: 0 }),
    });
    expect(rt.state().backend).toBe('webgpu');
    const ones = rt.manifest.exits.map(() => 1); // nothing leaves: every input loads segment 2, then WASM
    for (let c = 0; c < 200; c++)
      await rt.classify({
        inputs: [{ kind: 'tensor', data: tiny.inputs[c % 64]!.slice() }],
        thresholds: ones,
        probabilities: false,
      });
    expect(rt.state()).toMatchObject({ backend: 'wasm', prunedExits: [0, 1] });
    await rt.dispose();
    expect(cache.records.get(gpuKey)).toEqual(gpuRecord);
    const written = cache.records.get(prunedKey(hash, 'wasm'));
    expect(written?.backend).toBe('wasm');
    expect(written?.entries.map((e) => e.thresholds)).toEqual([ones]);
  });

  it('a switch during a call whose earlier segments left their output on the GPU: the call runs again on WASM', async () => {
    const inputs = tiny.inputs.map((data) => ({ kind: 'tensor' as const, data: data.slice() }));
    const wasm = await BundleRuntime.open(request('q2-legacy', { backend: 'wasm' }), () => {}, {
      loadOrt: loadOrtNode,
    });
    const ones = wasm.manifest.exits.map(() => 1); // nothing leaves: segment 1's GPU output goes to segment 2 as it is
    const answers = (rs: readonly WireResult[]): number[][] =>
      rs.map((r) => [r.index, r.exit, ...(r.probabilities ?? []).map((p) => Math.round(p * 1e4))]);
    const want = answers(await wasm.classify({ inputs, thresholds: ones, probabilities: true }));
    await wasm.dispose();
    const log: GpuLog = { created: 0, released: 0 };
    const rt = await BundleRuntime.open(request('q2-legacy'), () => {}, { loadOrt: () => gpuHandle(log, true) });
    expect(answers(await rt.classify({ inputs, thresholds: ones, probabilities: true }))).toEqual(want);
    expect(log.gpuFedToWasm).toBeGreaterThan(0); // it did happen, and that run's outputs were not used
    expect(rt.state().backend).toBe('wasm');
    await rt.dispose();
  });

  it('Q/DQ found in a later segment is remembered per bundle version: the next open asks loadOrt for WASM at once', async () => {
    const found = new Map<string, readonly string[]>();
    const cache = {
      ...noCache,
      getQuantized: async (hash: string) => (found.has(hash) ? [...found.get(hash)!] : undefined),
      putQuantized: async (hash: string, ops: readonly string[]) => void found.set(hash, [...ops]),
    };
    const asked: (string | undefined)[] = [];
    const open = (): Promise<BundleRuntime> =>
      BundleRuntime.open(request('q2-legacy'), () => {}, {
        cache,
        loadOrt: async (_req, wasmOnly) => {
          asked.push(wasmOnly);
          return wasmOnly
            ? { ...(await loadOrtNode()), fallbackReason: wasmOnly }
            : gpuHandle({ created: 0, released: 0 });
        },
      });
    const first = await open();
    expect(first.state().backend).toBe('webgpu');
    expect(await classifyAll(first)).toEqual(reference.get('q2-legacy'));
    expect(first.state().backend).toBe('wasm');
    await first.dispose();
    expect([...found.values()]).toEqual([['DequantizeLinear', 'QuantizeLinear']]);
    const second = await open();
    expect(asked).toEqual([undefined, expect.stringMatching(/quantized ops \(DequantizeLinear, QuantizeLinear\)/)]);
    expect(second.state()).toMatchObject({ backend: 'wasm', fallbackReason: asked[1] });
    await second.dispose();
  });

  it('a float bundle without the field stays on WebGPU, with the same results', async () => {
    const log = { created: 0, released: 0 };
    const rt = await BundleRuntime.open(request('tiny'), () => {}, { loadOrt: () => gpuHandle(log) });
    expect(await classifyAll(rt)).toEqual(reference.get('tiny'));
    expect(rt.state().backend).toBe('webgpu');
    expect(rt.state().fallbackReason).toBeUndefined();
    await rt.dispose();
  });

  it('backbone.quantized decides without looking at the bytes: true asks loadOrt for WASM, false keeps WebGPU', async () => {
    const asked: (string | undefined)[] = [];
    const log = { created: 0, released: 0 };
    // a loader that ignores the request still gets its sessions moved to WASM by the pool
    const flagged = await BundleRuntime.open(request('float-flagged'), () => {}, {
      loadOrt: async (_req, wasmOnly) => (asked.push(wasmOnly), await gpuHandle(log)),
    });
    expect(asked[0]).toMatch(/quantized ops \(backbone\.quantized in the manifest\).*onnxruntime#32578.*WASM$/);
    expect(flagged.state()).toMatchObject({ backend: 'wasm', fallbackReason: asked[0] });
    expect(log.created).toBe(0);
    await flagged.dispose();
    const trusted = await BundleRuntime.open(request('q0-false'), () => {}, {
      loadOrt: async (_req, wasmOnly) => (asked.push(wasmOnly), await gpuHandle(log)),
    });
    expect(asked[1]).toBeUndefined();
    expect(trusted.state().backend).toBe('webgpu');
    await trusted.dispose();
  });

  it('loadOrt with a reason to run on WASM: the WASM build, that reason, whatever backend was asked for', async () => {
    const reason = 'quantized';
    for (const backend of ['webgpu', 'auto'] as const)
      expect(await loadOrt({ backend, threads: 1 }, reason)).toMatchObject({ backend: 'wasm', fallbackReason: reason });
    expect(await loadOrt({ backend: 'wasm', threads: 1 }, reason)).toMatchObject({ fallbackReason: undefined });
  });

  it('learning on a plain quantized model: WASM, the ops named', async () => {
    writeFileSync(path.join(tiny.dir, 'qop.onnx'), encodeModel(qopClassifier()));
    const asked: (string | undefined)[] = [];
    const rt = await LearnRuntime.open(
      request('tiny', {
        manifestUrl: `${tiny.base}/qop.onnx`,
        learn: { options: { minSamples: 400 }, input: { mean: [0.5], std: [0.25] }, persist: false },
      }),
      () => {},
      {
        learnStore: noLearnStore,
        cache: noCache,
        loadOrt: async (_req, wasmOnly) => {
          asked.push(wasmOnly);
          const log = { created: 0, released: 0 };
          return wasmOnly ? { ...(await loadOrtNode()), fallbackReason: wasmOnly } : gpuHandle(log);
        },
      },
    );
    expect(asked[0]).toMatch(/^the model has quantized ops \(DequantizeLinear, QLinearAdd, QLinearConv, /);
    expect(rt.state()).toMatchObject({ backend: 'wasm', fallbackReason: asked[0] });
    await rt.dispose();
  });
});

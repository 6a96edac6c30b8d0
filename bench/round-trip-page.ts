// Page of the round-trip micro-benchmark (bench/round-trip.ts): the page → worker → page cost of one classify() at
// batch 1, interleaved image by image against the cheapest round trips (a plain postMessage and a comlink echo worker)
// and the bench's baseline worker (the full model, comlink). Round trip = page time − the worker's own time.
import type { BundleManifest } from '../src/bundle/manifest.js';
import { load as loadB, type Classifier, type ClassifyResult } from '../src/index.js';
import { BufferPool } from '../src/page/buffer-pool.js';
import { ClassifierImpl as ImplB } from '../src/page/classifier.js';
import type { ClassifierTransport } from '../src/page/transport.js';
import type { RuntimeState } from '../src/protocol.js';
import { createWorkerApi as apiB } from '../src/runtime/api.js';
import { ClassifierImpl as ImplA, createWorkerApi as apiA, load as loadA } from './round-trip-base.js';
import { Baseline } from '../demo/lib/baseline.js';
import { fetchImageSet, imageData, imageRange } from '../demo/lib/samples.js';
import * as Comlink from 'comlink';

export interface RoundTripConfig {
  readonly manifestUrl: string;
  readonly imagesUrl: string;
  readonly images: number;
  readonly threads: number;
  /** Interleaved passes over the images (one result row set per pass). */
  readonly passes: number;
  /** Every side in the page's thread, over MessageChannels (no worker threads): the CPU work of both ends. */
  readonly inThread: boolean;
  /** Untimed calls of every side before the passes (live pruning's warm-up in the worst case). */
  readonly warmup: number;
  /** Measure only the sides whose name contains one of these (default: all). */
  readonly only?: readonly string[];
  /** Calls per timed block of the page alone (A and B over a transport that answers at once); 0: not measured. */
  readonly pageAlone?: number;
}

/** The page's SDK alone: µs per classify() call (a block of calls timed as a whole), per input kind and side. */
export interface PageAloneStats {
  readonly input: string;
  readonly side: 'A' | 'B';
  /** One value per block, in the order run. */
  readonly usPerCall: readonly number[];
}

/** Per side and pass: mean and median page time and round trip (page − worker), and the profiled split. */
export interface SideStats {
  readonly side: string;
  readonly pass: number;
  readonly pageMs: number;
  readonly roundTripMs: number;
  readonly roundTripP50: number;
  readonly roundTripP90: number;
  /** Mean of the round trips without the slowest 10 % (the loaded machine's stalls). */
  readonly roundTripTrimmed: number;
  readonly toWorkerMs?: number;
  readonly fromWorkerMs?: number;
  /**
   * Profiled SDK calls: median of page time − the worker's onnxruntime runs (profile `runMs`), i.e. all the SDK's own
   * work at both ends and the messages (in the page thread: the CPU work alone), onnxruntime's `session.run` left out.
   */
  readonly outsideRunP50?: number;
  /** Profiled SDK calls: median of the worker's onnxruntime runs (profile `runMs`: queue jobs, feeds and readback included). */
  readonly runP50?: number;
  /** Profiled SDK calls: median of the worker's span (received → reply) − its onnxruntime runs: the bench's "SDK in the worker". */
  readonly workerOutsideRunP50?: number;
  /** Page work before the message is posted, and after the reply arrived (means). */
  readonly sendMs: number;
  readonly receiveMs: number;
}

const absoluteNow = (): number => performance.timeOrigin + performance.now();

/**
 * When the page last posted to a worker and when a worker's message last arrived (before any listener ran): wraps
 * postMessage and the 'message' listeners of Workers and MessagePorts, so that the page's own work on either side of the two
 * messages can be told from the time in transit and in the worker. Calls are made one at a time.
 */
const marks = { postAt: 0, arriveAt: 0 };
function installMarks(): void {
  const post = Worker.prototype.postMessage as (this: Worker, ...a: unknown[]) => void;
  Worker.prototype.postMessage = function (this: Worker, ...a: unknown[]) {
    marks.postAt = performance.now();
    post.apply(this, a);
  } as typeof Worker.prototype.postMessage;
  const add = Worker.prototype.addEventListener as (this: Worker, ...a: unknown[]) => void;
  Worker.prototype.addEventListener = function (this: Worker, type: string, fn: unknown, ...rest: unknown[]) {
    const listener =
      type === 'message' && typeof fn === 'function'
        ? (ev: Event): void => {
            marks.arriveAt = performance.now();
            (fn as (e: Event) => void).call(this, ev);
          }
        : fn;
    add.call(this, type, listener, ...rest);
  } as typeof Worker.prototype.addEventListener;
  // the same for MessagePorts (the SDK's classify port): posts, and the onmessage handler
  const portPost = MessagePort.prototype.postMessage as (this: MessagePort, ...a: unknown[]) => void;
  MessagePort.prototype.postMessage = function (this: MessagePort, ...a: unknown[]) {
    marks.postAt = performance.now();
    portPost.apply(this, a);
  } as typeof MessagePort.prototype.postMessage;
  const onmessage = Object.getOwnPropertyDescriptor(MessagePort.prototype, 'onmessage')!;
  Object.defineProperty(MessagePort.prototype, 'onmessage', {
    ...onmessage,
    set(this: MessagePort, fn: ((ev: MessageEvent) => void) | null) {
      const wrapped = fn
        ? (ev: MessageEvent): void => {
            marks.arriveAt = performance.now();
            fn.call(this, ev);
          }
        : null;
      onmessage.set!.call(this, wrapped);
    },
  });
}
installMarks();
const mean = (v: readonly number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
const quantile = (v: readonly number[], q: number): number =>
  [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(v.length * q))]!;
const trimmed = (v: readonly number[]): number =>
  mean([...v].sort((a, b) => a - b).slice(0, Math.ceil(v.length * 0.9)));

interface Sample {
  page: number;
  worker: number;
  send?: number;
  receive?: number;
  to?: number;
  from?: number;
  run?: number;
}

type Call = (img: ImageData, i: number) => Promise<Sample>;

/** `load()` with its worker replaced by `api` served on a MessageChannel in this thread (as the unit tests do). */
async function loadInThread(
  loadFn: typeof loadB,
  api: ReturnType<typeof apiB>,
  url: string,
  options: Parameters<typeof loadB>[1],
): Promise<Classifier> {
  const channel = new MessageChannel();
  Comlink.expose(api, channel.port1);
  const worker = Object.assign(channel.port2, { terminate: () => channel.port2.close() });
  const real = globalThis.Worker;
  globalThis.Worker = class {
    constructor() {
      return worker;
    }
  } as unknown as typeof Worker;
  try {
    return await loadFn(url, options);
  } finally {
    globalThis.Worker = real;
  }
}

/** The echoes: a worker, or in this thread a MessagePort answering like the 'raw' or comlink echo worker. */
function echoWorker(name: string, inThread: boolean): Worker {
  if (!inThread) return new Worker(new URL('./round-trip.worker.ts', import.meta.url), { type: 'module', name });
  const channel = new MessageChannel();
  const reply = (data: Uint8ClampedArray): { index: number; confidence: number } => ({
    index: data[0]!,
    confidence: 1,
  });
  const end = channel.port1;
  if (name === 'raw')
    end.onmessage = (ev: MessageEvent<{ id: number; data: Uint8ClampedArray; port?: MessagePort }>) => {
      const port = ev.data.port;
      if (port)
        port.onmessage = (e: MessageEvent<{ id: number; data: Uint8ClampedArray }>) =>
          port.postMessage({ id: e.data.id, ...reply(e.data.data) });
      else end.postMessage({ id: ev.data.id, ...reply(ev.data.data) });
    };
  else Comlink.expose({ run: reply }, end);
  return Object.assign(channel.port2, { terminate: () => channel.port2.close() }) as unknown as Worker;
}

/**
 * A transport that answers every call at once (a new result object per input, as a reply's deserialisation makes),
 * giving the inputs' buffers back as the worker does (a build that has no `spares` ignores them).
 */
function instantTransport(manifest: BundleManifest): ClassifierTransport {
  const spares = new BufferPool();
  const state: RuntimeState = {
    backend: 'wasm',
    threads: 1,
    crossOriginIsolated: false,
    sessions: manifest.segments.map(() => true),
    cachedSegments: manifest.segments.map(() => false),
    manifestFromCache: false,
    cacheEnabled: false,
  };
  let n = 0;
  return {
    state,
    spares,
    classify: (request) => {
      for (const w of request.inputs)
        if (w.kind === 'tensor' || w.kind === 'pixels') spares.give(w.data.buffer as ArrayBuffer);
      return Promise.resolve(
        request.inputs.map(() => ({
          index: n % manifest.labels.length,
          confidence: 0.9,
          exit: (n++ % (manifest.exits.length + 1)) - 1,
          stages: [0.1, 0.2],
          totalMs: 0.3,
        })),
      );
    },
    plan: () => Promise.reject(new Error('no plan here')),
    dispose: () => Promise.resolve(),
    fail: () => {},
  };
}

/**
 * The page's own work per classify() (conversion, checks, promise hops, results), A against B in alternating blocks of
 * `calls` calls over {@link instantTransport}: an ImageData (also a 224 x 224 one), a preprocessed Float32Array and a
 * canvas of the model's size.
 */
async function pageAlone(
  manifest: BundleManifest,
  image: ImageData,
  calls: number,
  blocks: number,
): Promise<PageAloneStats[]> {
  const opened = { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/manifest.json' };
  const sides = [
    ['A', new ImplA(instantTransport(manifest), opened)],
    ['B', new ImplB(instantTransport(manifest), opened)],
  ] as const;
  const { channels, height, width } = manifest.input;
  const canvas = document.createElement('canvas');
  [canvas.width, canvas.height] = [image.width, image.height];
  canvas.getContext('2d')!.putImageData(image, 0, 0);
  const large = new ImageData(224, 224);
  const inputs = [
    ['ImageData', image],
    ['ImageData 224 x 224', large],
    ['Float32Array', new Float32Array(channels * height * width).fill(0.5)],
    ['HTMLCanvasElement (createImageBitmap per call)', canvas],
  ] as const;
  const out: PageAloneStats[] = [];
  for (const [input, value] of inputs) {
    const times = { A: [] as number[], B: [] as number[] };
    for (let b = 0; b < blocks + 1; b++) {
      for (const [side, clf] of b % 2 === 0 ? sides : [...sides].reverse()) {
        const t0 = performance.now();
        const n = value instanceof HTMLCanvasElement ? Math.ceil(calls / 10) : calls; // ~10 times slower
        for (let k = 0; k < n; k++) await clf.classify(value);
        if (b > 0) times[side].push(((performance.now() - t0) * 1000) / n); // block 0 warms up
      }
    }
    out.push({ input, side: 'A', usPerCall: times.A }, { input, side: 'B', usPerCall: times.B });
  }
  return out;
}

async function run(config: RoundTripConfig): Promise<{
  stats: SideStats[];
  agree: number;
  engines: string[];
  pruned: string[];
  alone: PageAloneStats[];
}> {
  const manifestUrl = new URL(config.manifestUrl, document.baseURI).href;
  const manifest = (await (await fetch(manifestUrl)).json()) as {
    input: { height: number; width: number; channels: number; name: string; layout: 'NCHW' | 'NHWC' };
    backbone: { file: string; outputKind: 'logits' | 'probabilities' };
  };
  const images = await fetchImageSet(config.imagesUrl, manifest.input, { limit: config.images });
  const wasmPaths = new URL('ort/', document.baseURI).href;
  const opts = { backend: 'wasm' as const, threads: config.threads, cache: false, wasmPaths };
  const clfA = config.inThread ? await loadInThread(loadA, apiA(), manifestUrl, opts) : await loadA(manifestUrl, opts);
  const clfB = config.inThread ? await loadInThread(loadB, apiB(), manifestUrl, opts) : await loadB(manifestUrl, opts);
  const full = config.inThread
    ? undefined
    : await Baseline.create({
        model: new URL(manifest.backbone.file, manifestUrl).href,
        input: manifest.input as Parameters<typeof Baseline.create>[0]['input'],
        backend: 'wasm',
        threads: config.threads,
        wasmPaths,
        outputKind: manifest.backbone.outputKind,
      });
  const raw = echoWorker('raw', config.inThread);
  const comlinkEcho = Comlink.wrap<{ run(d: Uint8ClampedArray): { index: number; confidence: number } }>(
    echoWorker('comlink', config.inThread),
  );
  const channel = new MessageChannel();
  raw.postMessage({ port: channel.port2 }, [channel.port2]);
  let nextId = 1;
  const pending = new Map<number, (v: unknown) => void>();
  const answer = (ev: MessageEvent<{ id: number }>): void => {
    pending.get(ev.data.id)?.(ev.data);
    pending.delete(ev.data.id);
  };
  if (config.inThread) (raw as unknown as MessagePort).onmessage = answer;
  else raw.addEventListener('message', answer);
  channel.port1.onmessage = answer;
  const rawCall = (to: Worker | MessagePort, data: Uint8ClampedArray): Promise<unknown> =>
    new Promise((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      const copy = data.slice();
      to.postMessage({ id, data: copy }, [copy.buffer]);
    });
  const labels = { A: new Int32Array(images.count), B: new Int32Array(images.count) };
  const sdk =
    (clf: Classifier, which: 'A' | 'B', profile: boolean): Call =>
    async (img, i) => {
      const calledAt = absoluteNow();
      const t0 = performance.now();
      const r: ClassifyResult = await clf.classify(img, profile ? { profile: true } : {});
      const page = performance.now() - t0;
      const doneAt = absoluteNow();
      labels[which][i] = r.index;
      const p = r.timings.profile;
      return p
        ? { page, worker: p.replyAt - p.recvAt, to: p.recvAt - calledAt, from: doneAt - p.replyAt, run: p.runMs }
        : { page, worker: r.timings.totalMs };
    };
  const all: ([string, Call] | undefined)[] = [
    [
      'postMessage echo',
      async (img) => {
        const t0 = performance.now();
        await rawCall(raw, img.data);
        return { page: performance.now() - t0, worker: 0 };
      },
    ],
    [
      'MessagePort echo',
      async (img) => {
        const t0 = performance.now();
        await rawCall(channel.port1, img.data);
        return { page: performance.now() - t0, worker: 0 };
      },
    ],
    [
      'comlink echo',
      async (img) => {
        const t0 = performance.now();
        const copy = img.data.slice();
        await comlinkEcho.run(Comlink.transfer(copy, [copy.buffer]));
        return { page: performance.now() - t0, worker: 0 };
      },
    ],
    full && [
      'full model (bench baseline)',
      async (_img, i) => {
        const r = await full.run(imageRange(images, i, 1), 1);
        return { page: r.pageMs, worker: r.workerMs, run: r.runMs };
      },
    ],
    ['selfxit A', sdk(clfA, 'A', false)],
    ['selfxit B', sdk(clfB, 'B', false)],
    ['selfxit A (profiled)', sdk(clfA, 'A', true)],
    ['selfxit B (profiled)', sdk(clfB, 'B', true)],
  ];
  const sides = all.filter(
    (s): s is [string, Call] => s !== undefined && (!config.only || config.only.some((o) => s[0].includes(o))),
  );
  const inputs = Array.from({ length: images.count }, (_, i) => imageData(images, i));
  const alone = config.pageAlone
    ? await pageAlone(
        (await (await fetch(manifestUrl)).json()) as BundleManifest,
        inputs[0]!,
        config.pageAlone,
        config.passes * 4,
      )
    : [];
  for (let w = 0; w < config.warmup; w++)
    for (const [, call] of sides) await call(inputs[w % inputs.length]!, w % inputs.length);
  const stats: SideStats[] = [];
  for (let pass = 0; pass < config.passes; pass++) {
    const samples = sides.map(() => [] as Sample[]);
    for (let i = 0; i < images.count; i++) {
      // rotate the order, and reverse every other image, so that no side always follows the same one
      const r = i % sides.length;
      const order = [...sides.keys()].map((k) => (k + r) % sides.length);
      if ((i >> 1) % 2 === 1) order.reverse();
      for (const k of order) {
        const t0 = performance.now();
        const sample = await sides[k]![1](inputs[i]!, i);
        const t1 = performance.now();
        samples[k]!.push({ ...sample, send: marks.postAt - t0, receive: t1 - marks.arriveAt });
      }
    }
    sides.forEach(([side], k) => {
      const s = samples[k]!;
      const trips = s.map((x) => x.page - x.worker);
      const to = s.map((x) => x.to).filter((x): x is number => x !== undefined);
      const from = s.map((x) => x.from).filter((x): x is number => x !== undefined);
      const outside = s.filter((x) => x.run !== undefined).map((x) => x.page - x.run!);
      const workerOutside = s.filter((x) => x.run !== undefined).map((x) => x.worker - x.run!);
      stats.push({
        side,
        pass,
        pageMs: mean(s.map((x) => x.page)),
        roundTripMs: mean(trips),
        roundTripP50: quantile(trips, 0.5),
        roundTripP90: quantile(trips, 0.9),
        roundTripTrimmed: trimmed(trips),
        ...(to.length ? { toWorkerMs: mean(to), fromWorkerMs: mean(from) } : {}),
        ...(outside.length
          ? {
              outsideRunP50: quantile(outside, 0.5),
              workerOutsideRunP50: quantile(workerOutside, 0.5),
              runP50: quantile(
                s.filter((x) => x.run !== undefined).map((x) => x.run!),
                0.5,
              ),
            }
          : {}),
        sendMs: quantile(
          s.map((x) => x.send!),
          0.5,
        ),
        receiveMs: quantile(
          s.map((x) => x.receive!),
          0.5,
        ),
      });
    });
  }
  let agree = 0;
  for (let i = 0; i < images.count; i++) if (labels.A[i] === labels.B[i]) agree++;
  const engines = [clfA.info().engine, clfB.info().engine];
  const pruned = [clfA, clfB].map((c) => String(c.info().prunedExits ?? '-'));
  await clfA.dispose();
  await clfB.dispose();
  await full?.dispose();
  raw.terminate();
  return { stats, agree: agree / images.count, engines, pruned, alone };
}

declare global {
  interface Window {
    selfxitRoundTrip: { run: typeof run };
  }
}
window.selfxitRoundTrip = { run };

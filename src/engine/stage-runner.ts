// The one onnxruntime StageRunner: `selfxit eval` (onnxruntime-node), the worker (onnxruntime-web) and device timing all
// run segments through it, so the CLI and the browser make the same decisions by construction. Sessions come lazily from
// a pluggable SessionProvider; onnxruntime is injected (ort/types.ts).
import type { BundleManifest } from '../bundle/manifest.js';
import { SelfxitError } from '../errors.js';
import type { OrtModule, OrtSession, OrtTensor } from '../ort/types.js';
import type { StageOutput, StageRunner } from './cascade.js';

/** Where the runner gets segment sessions: the worker loads them via fetch / cache / IndexedDB, `selfxit eval` from files in memory. */
export interface SessionProvider {
  /** Session of segment `segment`, loaded on first need. */
  session(segment: number): Promise<OrtSession>;
}

/** Runs ORT calls one at a time (the worker's SerialQueue: concurrent create()/run() calls fail or hang in ORT-web). */
export interface OrtCallQueue {
  run<T>(job: () => Promise<T> | T): Promise<T>;
}

/** No queue: each call runs when made (onnxruntime-node takes concurrent calls). */
const direct: OrtCallQueue = { run: async (job) => job() };

/** Sessions loaded once per segment by `load`: concurrent callers share one load; a failed load is tried again on the next call. */
export class LazySessions implements SessionProvider {
  private readonly loads = new Map<number, Promise<OrtSession>>();

  constructor(private readonly load: (segment: number) => Promise<OrtSession>) {}

  session(segment: number): Promise<OrtSession> {
    let p = this.loads.get(segment);
    if (!p) {
      p = this.load(segment).catch((e: unknown) => {
        if (this.loads.get(segment) === p) this.loads.delete(segment);
        throw e;
      });
      this.loads.set(segment, p);
    }
    return p;
  }

  /** Forgets every session; returns the loads, done or in flight, for the caller to release. */
  clear(): Promise<OrtSession>[] {
    const all = [...this.loads.values()];
    this.loads.clear();
    return all;
  }

  /**
   * Forgets every session and releases each one that loads (waiting for loads in flight), through `queue`.
   * @throws the first release error, once every session was tried.
   */
  async releaseAll(queue: OrtCallQueue = direct): Promise<void> {
    let error: { e: unknown } | undefined;
    for (const p of this.clear()) {
      const s = await p.catch(() => undefined); // a failed load has nothing to release
      if (s) await queue.run(() => s.release()).catch((e: unknown) => (error ??= { e }));
    }
    if (error) throw error.e;
  }
}

/** What the runner needs: tensors, the bundle's manifest, its sessions, and the queue every ORT call goes through. */
interface OrtStageRunnerOptions {
  readonly Tensor: OrtModule['Tensor'];
  readonly manifest: BundleManifest;
  readonly sessions: SessionProvider;
  /** Default: none (each call runs when made). */
  readonly queue?: OrtCallQueue;
}

/** The outputs of one run of a segment (see {@link OrtStageRunner.runSegment}). */
interface SegmentRun {
  /** Every output the run returned (GPU ones are the caller's to dispose). */
  readonly outputs: Readonly<Record<string, OrtTensor>>;
  /** The activation for the next segment, or the backbone output on the last one. */
  readonly main: OrtTensor;
  /** The exit output, when fetched. */
  readonly exit?: OrtTensor;
}

/**
 * A float32 tensor's values on the CPU, for use inside the caller's queue job; `consume`: a GPU tensor's buffer is freed
 * after the download (getData(true)).
 */
export async function tensorData(t: OrtTensor, what: string, consume = false): Promise<Float32Array> {
  if (t.type !== 'float32') throw new SelfxitError('INVALID_BUNDLE', `${what} is ${t.type}, expected float32`);
  if (t.location === 'cpu' || t.location === 'cpu-pinned') return t.data as Float32Array;
  return (await t.getData(consume)) as Float32Array;
}

/** Element arrays an activation between segments may hold: float32, or a quantized model's uint8/int8 cut. */
type ActivationData = Float32Array | Uint8Array | Int8Array;

/** Copies rows of a row-major `[rows, ...]` array, keeping its type (batch shrinking on CPU data). */
function selectRowsOf<T extends ActivationData>(data: T, keep: readonly number[], rows: number): T {
  const per = data.length / rows;
  const out = new (data.constructor as new (n: number) => T)(keep.length * per);
  keep.forEach((r, i) => out.set(data.subarray(r * per, (r + 1) * per), i * per));
  return out;
}

/** An activation's values on the CPU (float32, uint8 or int8), inside the caller's queue job; GPU: as tensorData. */
async function activationData(t: OrtTensor, consume: boolean): Promise<ActivationData> {
  if (t.type !== 'float32' && t.type !== 'uint8' && t.type !== 'int8')
    throw new SelfxitError('INVALID_BUNDLE', `activation is ${t.type}, expected float32, uint8 or int8`);
  if (t.location === 'cpu' || t.location === 'cpu-pinned') return t.data as ActivationData;
  return (await t.getData(consume)) as ActivationData;
}

/**
 * StageRunner over onnxruntime sessions; activations are ORT tensors. Where a tensor lives decides the rest, so the
 * WebGPU specifics need no second runner: a session made with `gpu-buffer` outputs (the worker on WebGPU) keeps the
 * next-stage activation on the GPU, only the exit heads' probabilities in use and the final output are read back, and
 * batch shrinking downloads the activation once, keeps the rows on the CPU and uploads them with the next run (small for
 * the cut tensors of image classifiers; batch 1 never shrinks). CPU tensors (WASM, onnxruntime-node) are read in place.
 */
export class OrtStageRunner implements StageRunner<OrtTensor> {
  readonly Tensor: OrtModule['Tensor'];
  readonly manifest: BundleManifest;
  /** The queue every ORT call of this runner goes through. */
  readonly queue: OrtCallQueue;
  private readonly sessions: SessionProvider;

  constructor(options: OrtStageRunnerOptions) {
    this.Tensor = options.Tensor;
    this.manifest = options.manifest;
    this.sessions = options.sessions;
    this.queue = options.queue ?? direct;
  }

  /** Session of segment `s` from the provider (loaded on first need). */
  session(s: number): Promise<OrtSession> {
    return this.sessions.session(s);
  }

  /** The exit output a run of segment `s` can fetch: its fused head's, never on the last segment. */
  exitOutput(s: number): string | undefined {
    return s < this.manifest.segments.length - 1 ? this.manifest.segments[s]?.exitOutput : undefined;
  }

  /**
   * Runs segment `s` once on `session`, fetching its main output and, with `withExit`, its exit output (when it has one).
   * Makes no queue job of its own: call it inside one.
   * @throws SelfxitError INVALID_BUNDLE when an output is missing.
   */
  async runSegment(session: OrtSession, s: number, input: OrtTensor, withExit: boolean): Promise<SegmentRun> {
    const seg = this.manifest.segments[s];
    if (!seg) throw new SelfxitError('INTERNAL', `no segment ${s}`);
    const exitName = withExit ? this.exitOutput(s) : undefined;
    const outputs = await session.run({ [seg.input]: input }, exitName ? [seg.output, exitName] : [seg.output]);
    const main = outputs[seg.output];
    if (!main)
      throw new SelfxitError('INVALID_BUNDLE', `segment ${s} (${seg.file}) produced no output "${seg.output}"`);
    if (!exitName) return { outputs, main };
    const exit = outputs[exitName];
    if (!exit)
      throw new SelfxitError('INVALID_BUNDLE', `segment ${s} (${seg.file}) produced no exit output "${exitName}"`);
    return { outputs, main, exit };
  }

  /**
   * Runs segment `s`; with `readExit` false the exit output is not fetched (no GPU → CPU readback on WebGPU). A bundle
   * whose backbone takes one image per run (manifest `backbone.batch` 'one') runs the rows one by one.
   */
  async runStage(s: number, input: OrtTensor, rows: number, readExit = true): Promise<StageOutput<OrtTensor>> {
    // (`?.`: hand-assembled manifests in tests may lack `backbone`)
    if (rows > 1 && this.manifest.backbone?.batch === 'one') return this.runRowByRow(s, input, rows, readExit);
    const seg = this.manifest.segments[s];
    if (!seg) throw new SelfxitError('INTERNAL', `no segment ${s}`);
    const session = await this.session(s);
    const run = await this.queue.run(() => this.runSegment(session, s, input, readExit));
    if (s === this.manifest.segments.length - 1)
      return { final: await this.read(run.main, `segment ${s} output "${seg.output}"`) };
    if (!run.exit) return { next: run.main };
    return { next: run.main, exitProbs: await this.read(run.exit, `segment ${s} exit output "${seg.exitOutput}"`) };
  }

  /** {@link runStage} one row at a time (batch-1 segments); outputs gathered on the CPU. */
  private async runRowByRow(
    s: number,
    input: OrtTensor,
    rows: number,
    readExit: boolean,
  ): Promise<StageOutput<OrtTensor>> {
    // (a quantized model's activations are uint8/int8: kept as they are, as selectRows keeps them)
    const data = await this.readActivation(input, false);
    const per = data.length / rows;
    const parts: StageOutput<OrtTensor>[] = [];
    for (let r = 0; r < rows; r++) {
      const x = this.tensorOf(data.slice(r * per, (r + 1) * per), [1, ...input.dims.slice(1)]);
      parts.push(await this.runStage(s, x, 1, readExit));
    }
    const cat = <T extends ActivationData>(xs: T[]): T => {
      const out = new (xs[0]!.constructor as new (n: number) => T)(xs.reduce((a, x) => a + x.length, 0));
      let at = 0;
      for (const x of xs) {
        out.set(x, at);
        at += x.length;
      }
      return out;
    };
    if (parts[0]!.final) return { final: cat(parts.map((p) => p.final!)) };
    const next: ActivationData[] = [];
    for (const p of parts) {
      next.push((await this.readActivation(p.next!, true)).slice());
      this.release(p.next!);
    }
    const first = parts[0]!.next!;
    const out: StageOutput<OrtTensor> = { next: this.tensorOf(cat(next), [rows, ...first.dims.slice(1)]) };
    return parts[0]!.exitProbs ? { ...out, exitProbs: cat(parts.map((p) => p.exitProbs!)) } : out;
  }

  async selectRows(activation: OrtTensor, keep: readonly number[], rows: number): Promise<OrtTensor> {
    // The cascade drops the activation after this; once downloaded it reads as a CPU tensor, so release() could no
    // longer tell that it held a GPU buffer: free it here.
    const cpu = activation.location === 'cpu' || activation.location === 'cpu-pinned';
    const data = cpu
      ? await activationData(activation, true)
      : await this.queue.run(() => activationData(activation, true));
    return this.tensorOf(selectRowsOf(data, keep, rows), [keep.length, ...activation.dims.slice(1)]);
  }

  /** A CPU tensor of an activation's values, of their element type. */
  private tensorOf(data: ActivationData, dims: readonly number[]): OrtTensor {
    if (data instanceof Uint8Array) return new this.Tensor('uint8', data, dims);
    if (data instanceof Int8Array) return new this.Tensor('int8', data, dims);
    return new this.Tensor('float32', data, dims);
  }

  /** {@link activationData}; a GPU download in a queue job of its own (it is an ORT call). */
  private readActivation(t: OrtTensor, consume: boolean): Promise<ActivationData> {
    if (t.location === 'cpu' || t.location === 'cpu-pinned') return activationData(t, false);
    return this.queue.run(() => activationData(t, consume));
  }

  release(activation: OrtTensor): void {
    if (activation.location !== 'cpu' && activation.location !== 'cpu-pinned') activation.dispose();
  }

  /** {@link tensorData}; a GPU download in a queue job of its own (it is an ORT call). */
  private read(t: OrtTensor, what: string, consume = false): Promise<Float32Array> {
    if (t.location === 'cpu' || t.location === 'cpu-pinned') return tensorData(t, what);
    return this.queue.run(() => tensorData(t, what, consume));
  }
}

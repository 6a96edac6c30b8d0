// The cascade's StageRunner on onnxruntime (web or node): runs one segment session per stage through the
// worker's single ORT queue, reads back only the exit probabilities in use and final logits, shrinks batches between stages.
import type { InferenceSession, Tensor } from 'onnxruntime-common';
import type { BundleManifest } from '../bundle/manifest.js';
import type { StageOutput, StageRunner } from '../engine/cascade.js';
import { selectRowsF32 } from '../engine/cascade.js';
import { SelfxitError } from '../errors.js';
import type { SerialQueue } from './queue.js';

/** What the runner needs: tensors, the queue, and the session of a segment (created lazily by the caller). */
export interface OrtStageRunnerDeps {
  readonly Tensor: typeof Tensor;
  readonly manifest: BundleManifest;
  readonly queue: SerialQueue;
  /** Session for segment `s`, fetched and created on first need. */
  session(s: number): Promise<InferenceSession>;
}

/** A tensor's values on the CPU; `consume`: a GPU tensor's buffer is freed after the download (getData(true)). */
async function readFloat32(t: Tensor, what: string, queue: SerialQueue, consume = false): Promise<Float32Array> {
  if (t.type !== 'float32') throw new SelfxitError('INVALID_BUNDLE', `${what} is ${t.type}, expected float32`);
  if (t.location === 'cpu' || t.location === 'cpu-pinned') return t.data as Float32Array;
  return (await queue.run(() => t.getData(consume))) as Float32Array;
}

/**
 * StageRunner over onnxruntime sessions. Activations are ORT tensors; on WebGPU the next-stage output
 * stays a GPU buffer, and batch shrinking downloads it, keeps the rows on the CPU and uploads them again
 * with the next run (small for the cut tensors of image classifiers; batch 1 never shrinks).
 */
export class OrtStageRunner implements StageRunner<Tensor> {
  constructor(private readonly deps: OrtStageRunnerDeps) {}

  /** Runs segment `s`; with `readExit` false the exit output is not fetched (no GPU → CPU readback on WebGPU). */
  async runStage(s: number, input: Tensor, _rows: number, readExit = true): Promise<StageOutput<Tensor>> {
    const { manifest, queue } = this.deps;
    const seg = manifest.segments[s];
    if (!seg) throw new SelfxitError('INTERNAL', `no segment ${s}`);
    const session = await this.deps.session(s);
    const last = s === manifest.segments.length - 1;
    const withExit = !last && readExit && seg.exitOutput !== undefined;
    const fetches = withExit ? [seg.output, seg.exitOutput!] : [seg.output];
    const out = await queue.run(() => session.run({ [seg.input]: input }, fetches));
    const main = out[seg.output];
    if (!main)
      throw new SelfxitError('INVALID_BUNDLE', `segment ${s} (${seg.file}) produced no output "${seg.output}"`);
    if (last) return { final: await readFloat32(main, `segment ${s} output "${seg.output}"`, queue) };
    if (!withExit || !seg.exitOutput) return { next: main };
    const probs = out[seg.exitOutput];
    if (!probs)
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `segment ${s} (${seg.file}) produced no exit output "${seg.exitOutput}"`,
      );
    return { next: main, exitProbs: await readFloat32(probs, `segment ${s} exit output "${seg.exitOutput}"`, queue) };
  }

  async selectRows(activation: Tensor, keep: readonly number[], rows: number): Promise<Tensor> {
    // The cascade drops the activation after this; once downloaded it reads as a CPU tensor, so release() could no
    // longer tell that it held a GPU buffer: free it here.
    const data = await readFloat32(activation, 'activation', this.deps.queue, true);
    return new this.deps.Tensor('float32', selectRowsF32(data, keep, rows), [keep.length, ...activation.dims.slice(1)]);
  }

  release(activation: Tensor): void {
    if (activation.location !== 'cpu' && activation.location !== 'cpu-pinned') activation.dispose();
  }
}

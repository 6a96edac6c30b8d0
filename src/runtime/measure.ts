// Times each stage (segment plus fused head) at batch 1 on the backend in use, on real activations: what device plans are made from.
import type { InferenceSession, Tensor } from 'onnxruntime-common';
import type { BundleManifest } from '../bundle/manifest.js';
import type { StageTimings } from '../calibrate/device-plan.js';
import { argmaxRow } from '../engine/cascade.js';
import { SelfxitError } from '../errors.js';
import { inputDims, inputSize } from './preprocess.js';
import type { SerialQueue } from './queue.js';

/** Timed runs per stage and kind of run that {@link measureStages} makes by default. */
export const DEFAULT_MEASURE_RUNS = 10;

/** Untimed runs per stage before the timed ones. */
export const WARMUP_RUNS = 2;

/** What the measurement needs: tensors, the worker's ORT queue, and each segment's session (created lazily by the caller). */
export interface MeasureDeps {
  readonly Tensor: typeof Tensor;
  readonly manifest: BundleManifest;
  readonly queue: SerialQueue;
  /** Session for segment `s`, fetched and created on first need. */
  session(s: number): Promise<InferenceSession>;
  /** Clock in ms. Default `performance.now`. */
  readonly now?: () => number;
}

/** Median of a non-empty list (mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new SelfxitError('INTERNAL', 'median of no values');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * One stage's timing from its run times: `stageMs` = median of the runs that fetched only the main output;
 * `decisionMs` = median of the paired differences `withExit[r] - mainOnly[r]` (run r of each kind, made one after the
 * other, so a slow drift of the machine's speed cancels), clipped at 0; 0 when the stage has no exit (`withExit`
 * undefined).
 * @throws SelfxitError INTERNAL when `withExit` is not paired with `mainOnly` (another length).
 */
export function stageTiming(mainOnly: readonly number[], withExit: readonly number[] | undefined): { stageMs: number; decisionMs: number } {
  const stageMs = median(mainOnly);
  if (!withExit) return { stageMs, decisionMs: 0 };
  if (withExit.length !== mainOnly.length) throw new SelfxitError('INTERNAL', `${withExit.length} runs with the exit output, ${mainOnly.length} without`);
  return { stageMs, decisionMs: Math.max(0, median(withExit.map((t, r) => t - mainOnly[r]!))) };
}

/**
 * Waits until a run's main output exists on the device that holds it: a CPU tensor is ready; a GPU one is read back
 * (getData(true) also frees its buffer; the tensor then reads as a CPU one, so disposeGpu skips it).
 */
async function waitFor(t: Tensor): Promise<void> {
  if (t.location === 'gpu-buffer') await t.getData(true);
}

function disposeGpu(out: Readonly<Record<string, Tensor>>, keep?: Tensor): void {
  for (const t of Object.values(out)) if (t !== keep && t.location === 'gpu-buffer') t.dispose();
}

/**
 * Measures every stage: creates each segment's session first (through `deps.session`, so loading, integrity checks
 * and progress are as for classify), then per segment at batch 1 on a real activation (segment 0: zeros of the input
 * dims; segment s > 0: segment s-1's output on that input) makes {@link WARMUP_RUNS} untimed runs, then `runs` timed
 * runs fetching only the main output, each followed by one fetching the main and the exit output (reading the exit
 * probabilities back and taking their argmax, as the cascade does). See {@link stageTiming}. Every ORT call goes through `deps.queue`,
 * timed inside its job (waiting for other jobs is not counted); GPU outputs are disposed.
 *
 * On WebGPU a run returns before the GPU has finished when its main output stays on the GPU. So that a stage's time
 * holds its GPU work (and not only the submission, with the wait landing on whatever reads back next), both kinds of
 * timed runs there also read the main output back inside the timing: `stageMs` includes one activation readback,
 * and `decisionMs` is what reading the exit output adds on top of that.
 * @param runs timed runs per stage and kind, an integer >= 1. Default {@link DEFAULT_MEASURE_RUNS}.
 * @throws SelfxitError INVALID_ARGUMENT for a bad `runs`, INVALID_BUNDLE when a segment lacks an output, and whatever
 * loading a segment throws.
 */
export async function measureStages(deps: MeasureDeps, runs = DEFAULT_MEASURE_RUNS): Promise<StageTimings> {
  if (!(Number.isInteger(runs) && runs >= 1)) throw new SelfxitError('INVALID_ARGUMENT', `runs must be an integer >= 1, got ${String(runs)}`);
  const { manifest, queue, Tensor: T } = deps;
  const now = deps.now ?? (() => performance.now());
  const k = manifest.labels.length;
  const sessions: InferenceSession[] = [];
  for (let s = 0; s < manifest.segments.length; s++) sessions.push(await deps.session(s));

  const stageMs: number[] = [];
  const decisionMs: number[] = [];
  let input: Tensor = new T('float32', new Float32Array(inputSize(manifest.input)), inputDims(manifest.input, 1));
  try {
    for (let s = 0; s < manifest.segments.length; s++) {
      const seg = manifest.segments[s]!;
      const session = sessions[s]!;
      const last = s === manifest.segments.length - 1;
      const exitName = !last ? seg.exitOutput : undefined;
      const mainOnly = [seg.output];
      const both = exitName ? [seg.output, exitName] : undefined;
      const feeds = { [seg.input]: input };
      const main = (out: Readonly<Record<string, Tensor>>): Tensor => {
        const t = out[seg.output];
        if (!t) throw new SelfxitError('INVALID_BUNDLE', `segment ${s} (${seg.file}) produced no output "${seg.output}"`);
        return t;
      };

      let next: Tensor | undefined;
      try {
        // Warm-up; the first run's main output is the next segment's input.
        for (let w = 0; w < WARMUP_RUNS; w++) {
          const out = await queue.run(() => session.run(feeds, both ?? mainOnly));
          const m = main(out);
          if (w === 0 && !last) next = m;
          disposeGpu(out, next);
        }
        const timed = async (fetches: readonly string[], exit: string | undefined): Promise<number> => {
          const { out, ms } = await queue.run(async () => {
            const t0 = now();
            const o = await session.run(feeds, fetches);
            await waitFor(main(o));
            if (exit) {
              const probs = o[exit];
              if (!probs) throw new SelfxitError('INVALID_BUNDLE', `segment ${s} (${seg.file}) produced no exit output "${exit}"`);
              const data = (await probs.getData()) as Float32Array;
              argmaxRow(data, 0, k);
            }
            return { out: o, ms: now() - t0 };
          });
          disposeGpu(out);
          return ms;
        };
        // The two kinds of runs alternate, so that both see the same state of the machine (see stageTiming).
        const mainTimes: number[] = [];
        const exitTimes: number[] | undefined = both ? [] : undefined;
        for (let r = 0; r < runs; r++) {
          mainTimes.push(await timed(mainOnly, undefined));
          if (both && exitTimes) exitTimes.push(await timed(both, exitName));
        }
        const t = stageTiming(mainTimes, exitTimes);
        stageMs.push(t.stageMs);
        decisionMs.push(t.decisionMs);
      } catch (e) {
        if (next?.location === 'gpu-buffer') next.dispose();
        throw e;
      }
      if (next) {
        if (input.location === 'gpu-buffer') input.dispose();
        input = next;
      }
    }
  } finally {
    if (input.location === 'gpu-buffer') input.dispose();
  }
  return { stageMs, decisionMs };
}

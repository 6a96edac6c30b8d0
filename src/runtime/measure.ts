// Times each stage (segment plus fused head) at batch 1 on the backend in use, on real activations: what device plans are made from.
import type { InferenceSession, Tensor } from 'onnxruntime-common';
import type { BundleManifest } from '../bundle/manifest.js';
import type { StageTimings } from '../policy/device-plan.js';
import { argmaxRow } from '../engine/cascade.js';
import { SelfxitError } from '../errors.js';
import { inputDims, inputSize } from './preprocess.js';
import type { SerialQueue } from './queue.js';

/** Timed passes through the segments per kind of run (main output only / with the exit output) that {@link measureStages} makes by default. */
export const DEFAULT_MEASURE_RUNS = 10;

/** Untimed passes through the segments before the timed ones. */
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
 * `decisionMs` = median of the paired differences `withExit[r] - mainOnly[r]` (the runs of pass r of each kind, made
 * one after the other, so a slow drift of the machine's speed cancels), clipped at 0; 0 when the stage has no exit
 * (`withExit` undefined).
 * @throws SelfxitError INTERNAL when `withExit` is not paired with `mainOnly` (another length).
 */
export function stageTiming(
  mainOnly: readonly number[],
  withExit: readonly number[] | undefined,
): { stageMs: number; decisionMs: number } {
  const stageMs = median(mainOnly);
  if (!withExit) return { stageMs, decisionMs: 0 };
  if (withExit.length !== mainOnly.length)
    throw new SelfxitError('INTERNAL', `${withExit.length} runs with the exit output, ${mainOnly.length} without`);
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
 * and progress are as for classify), then runs every segment at batch 1 on a real activation (segment 0: zeros of the
 * input dims; segment s > 0: segment s-1's output of the first warm-up pass) in passes through the segments in order,
 * as the cascade runs them: {@link WARMUP_RUNS} untimed passes, then `runs` pairs of timed passes, one fetching only
 * each segment's main output and one also fetching its exit output (reading the exit probabilities back and taking
 * their argmax, as the cascade does), in the order main/exit, exit/main, main/exit, …. Timing segments in cascade order
 * (not one segment many times in a row) keeps the caches and the thread pool in the state a classify call finds them.
 * See {@link stageTiming}. Every ORT call goes through `deps.queue`, timed inside its job (waiting for other jobs is
 * not counted); GPU outputs are disposed.
 *
 * On WebGPU a run returns before the GPU has finished when its main output stays on the GPU. So that a stage's time
 * holds its GPU work (and not only the submission, with the wait landing on whatever reads back next), both kinds of
 * timed runs there also read the main output back inside the timing: `stageMs` includes one activation readback,
 * and `decisionMs` is what reading the exit output adds on top of that.
 * @param runs timed passes per kind, an integer >= 1. Default {@link DEFAULT_MEASURE_RUNS}.
 * @throws SelfxitError INVALID_ARGUMENT for a bad `runs`, INVALID_BUNDLE when a segment lacks an output, and whatever
 * loading a segment throws.
 */
export async function measureStages(deps: MeasureDeps, runs = DEFAULT_MEASURE_RUNS): Promise<StageTimings> {
  if (!(Number.isInteger(runs) && runs >= 1))
    throw new SelfxitError('INVALID_ARGUMENT', `runs must be an integer >= 1, got ${String(runs)}`);
  const { manifest, queue, Tensor: T } = deps;
  const now = deps.now ?? (() => performance.now());
  const k = manifest.labels.length;
  const n = manifest.segments.length;
  const sessions: InferenceSession[] = [];
  for (let s = 0; s < n; s++) sessions.push(await deps.session(s));

  const stages = manifest.segments.map((seg, s) => {
    const exitName = s < n - 1 ? seg.exitOutput : undefined;
    return { seg, exitName, mainOnly: [seg.output], both: exitName ? [seg.output, exitName] : undefined };
  });
  const main = (s: number, out: Readonly<Record<string, Tensor>>): Tensor => {
    const { seg } = stages[s]!;
    const t = out[seg.output];
    if (!t) throw new SelfxitError('INVALID_BUNDLE', `segment ${s} (${seg.file}) produced no output "${seg.output}"`);
    return t;
  };
  // inputs[s]: segment s's input; segment s+1's is segment s's main output in the first warm-up pass.
  const inputs: Tensor[] = [
    new T('float32', new Float32Array(inputSize(manifest.input)), inputDims(manifest.input, 1)),
  ];
  /** One timed run of segment `s`; `withExit` also reads its exit output (when it has one). */
  const timed = async (s: number, withExit: boolean): Promise<number> => {
    const { seg, exitName, mainOnly, both } = stages[s]!;
    const exit = withExit ? exitName : undefined;
    const { out, ms } = await queue.run(async () => {
      const t0 = now();
      const o = await sessions[s]!.run({ [seg.input]: inputs[s]! }, exit && both ? both : mainOnly);
      await waitFor(main(s, o));
      if (exit) {
        const probs = o[exit];
        if (!probs)
          throw new SelfxitError('INVALID_BUNDLE', `segment ${s} (${seg.file}) produced no exit output "${exit}"`);
        const data = (await probs.getData()) as Float32Array;
        argmaxRow(data, 0, k);
      }
      return { out: o, ms: now() - t0 };
    });
    disposeGpu(out);
    return ms;
  };

  try {
    for (let w = 0; w < WARMUP_RUNS; w++) {
      for (let s = 0; s < n; s++) {
        const { seg, mainOnly, both } = stages[s]!;
        const out = await queue.run(() => sessions[s]!.run({ [seg.input]: inputs[s]! }, both ?? mainOnly));
        const m = main(s, out);
        const keep = w === 0 && s < n - 1 ? m : undefined;
        if (keep) inputs.push(keep);
        disposeGpu(out, keep);
      }
    }
    // Pairs of passes, main/exit then exit/main, … so that a machine whose every other pass is slow (a thread pool
    // alternating between spinning and sleeping) does not slow only one kind.
    const mainTimes: number[][] = stages.map(() => []);
    const exitTimes: number[][] = stages.map(() => []);
    for (let r = 0; r < runs; r++) {
      for (const withExit of r % 2 === 0 ? [false, true] : [true, false]) {
        for (let s = 0; s < n; s++) {
          const ms = await timed(s, withExit);
          (withExit && stages[s]!.exitName ? exitTimes : mainTimes)[s]!.push(ms);
        }
      }
    }
    const t = stages.map((st, s) => stageTiming(mainTimes[s]!, st.exitName ? exitTimes[s] : undefined));
    return { stageMs: t.map((x) => x.stageMs), decisionMs: t.map((x) => x.decisionMs) };
  } finally {
    for (const x of inputs) if (x.location === 'gpu-buffer') x.dispose();
  }
}

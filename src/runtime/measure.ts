// Times each stage (segment plus fused head) at batch 1 on the backend and engine in use, on real activations: what
// device plans are made from (the stage engine segment by segment, the compiled engine by where its one run leaves
// and what each exit in use adds).
import type { BundleManifest } from '../bundle/manifest.js';
import type { StageTimings } from '../policy/device-plan.js';
import { argmaxRow } from '../engine/cascade.js';
import { tensorData, type OrtStageRunner } from '../engine/stage-runner.js';
import { SelfxitError } from '../errors.js';
import type { OrtSession, OrtTensor } from '../ort/types.js';
import { inputDims, inputSize } from './preprocess.js';

/** Timed passes through the segments per kind of run (main output only / with the exit output) that {@link measureStages} makes by default. */
const DEFAULT_MEASURE_RUNS = 10;

/** Untimed passes through the segments before the timed ones. */
export const WARMUP_RUNS = 2;

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
async function waitFor(t: OrtTensor): Promise<void> {
  if (t.location === 'gpu-buffer') await t.getData(true);
}

function disposeGpu(out: Readonly<Record<string, OrtTensor>>, keep?: OrtTensor): void {
  for (const t of Object.values(out)) if (t !== keep && t.location === 'gpu-buffer') t.dispose();
}

/**
 * Measures every stage with the runner's segment runs ({@link OrtStageRunner.runSegment}): creates each segment's
 * session first (through the runner's session provider, so loading, integrity checks and progress are as for classify),
 * then runs every segment at batch 1 on a real activation (segment 0: zeros of the input dims; segment s > 0: segment
 * s-1's output of the first warm-up pass) in passes through the segments in order, as the cascade runs them:
 * {@link WARMUP_RUNS} untimed passes, then `runs` pairs of timed passes, one fetching only each segment's main output
 * and one also fetching its exit output (reading the exit probabilities back and taking their argmax, as the cascade
 * does), in the order main/exit, exit/main, main/exit, …. Timing segments in cascade order (not one segment many times
 * in a row) keeps the caches and the thread pool in the state a classify call finds them. See {@link stageTiming}. Every
 * ORT call goes through the runner's queue, timed inside its job (waiting for other jobs is not counted); GPU outputs
 * are disposed.
 *
 * On WebGPU a run returns before the GPU has finished when its main output stays on the GPU. So that a stage's time
 * holds its GPU work (and not only the submission, with the wait landing on whatever reads back next), both kinds of
 * timed runs there also read the main output back inside the timing: `stageMs` includes one activation readback,
 * and `decisionMs` is what reading the exit output adds on top of that.
 * @param runs timed passes per kind, an integer >= 1. Default {@link DEFAULT_MEASURE_RUNS}.
 * @param now clock in ms. Default `performance.now`.
 * @throws SelfxitError INVALID_ARGUMENT for a bad `runs`, INVALID_BUNDLE when a segment lacks an output, and whatever
 * loading a segment throws.
 */
export async function measureStages(
  runner: OrtStageRunner,
  runs = DEFAULT_MEASURE_RUNS,
  now: () => number = () => performance.now(),
): Promise<StageTimings> {
  if (!(Number.isInteger(runs) && runs >= 1))
    throw new SelfxitError('INVALID_ARGUMENT', `runs must be an integer >= 1, got ${String(runs)}`);
  const { manifest, queue } = runner;
  const k = manifest.labels.length;
  const n = manifest.segments.length;
  const sessions: OrtSession[] = [];
  for (let s = 0; s < n; s++) sessions.push(await runner.session(s));
  const hasExit = manifest.segments.map((_, s) => runner.exitOutput(s) !== undefined);

  // inputs[s]: segment s's input; segment s+1's is segment s's main output in the first warm-up pass.
  const inputs: OrtTensor[] = [
    new runner.Tensor('float32', new Float32Array(inputSize(manifest.input)), inputDims(manifest.input, 1)),
  ];
  /** One timed run of segment `s`; `withExit` also reads its exit output (when it has one). */
  const timed = async (s: number, withExit: boolean): Promise<number> => {
    const { out, ms } = await queue.run(async () => {
      const t0 = now();
      const run = await runner.runSegment(sessions[s]!, s, inputs[s]!, withExit);
      await waitFor(run.main);
      if (run.exit) argmaxRow(await tensorData(run.exit, `segment ${s} exit output`), 0, k); // as the cascade reads it
      return { out: run.outputs, ms: now() - t0 };
    });
    disposeGpu(out);
    return ms;
  };

  try {
    for (let w = 0; w < WARMUP_RUNS; w++) {
      for (let s = 0; s < n; s++) {
        const run = await queue.run(() => runner.runSegment(sessions[s]!, s, inputs[s]!, true));
        const keep = w === 0 && s < n - 1 ? run.main : undefined;
        if (keep) inputs.push(keep);
        disposeGpu(run.outputs, keep);
      }
    }
    // Pairs of passes, main/exit then exit/main, … so that a machine whose every other pass is slow (a thread pool
    // alternating between spinning and sleeping) does not slow only one kind.
    const mainTimes: number[][] = hasExit.map(() => []);
    const exitTimes: number[][] = hasExit.map(() => []);
    for (let r = 0; r < runs; r++) {
      for (const withExit of r % 2 === 0 ? [false, true] : [true, false]) {
        for (let s = 0; s < n; s++) {
          const ms = await timed(s, withExit);
          (withExit && hasExit[s] ? exitTimes : mainTimes)[s]!.push(ms);
        }
      }
    }
    const t = hasExit.map((e, s) => stageTiming(mainTimes[s]!, e ? exitTimes[s] : undefined));
    return { stageMs: t.map((x) => x.stageMs), decisionMs: t.map((x) => x.decisionMs) };
  } finally {
    for (const x of inputs) if (x.location === 'gpu-buffer') x.dispose();
  }
}

/**
 * Stage timings of the compiled engine from its measured cumulative times: `leaveMs[j]` = one run that leaves at exit
 * j (exits in manifest order, each at the end of its segment), `fullMs` = one run through every segment (no exit
 * fires), and, when measured, `exitMs[j]` = what passing exit j in use costs (its head, decision and `If`; see
 * {@link measureCompiled}). The backbone's time to exit j is `leaveMs[j] - exitMs[j]` (leaving runs the head);
 * each exit's segment gets the time from the previous exit's point to its own (segments between exits get 0: their
 * time lands on the next measured segment, so every cumulative time stays right), the last segment the rest;
 * differences are clipped at 0. `decisionMs` is 0 everywhere (the compiled model decides inside its run: that cost is
 * in `exitMs`, or without it in the stages); `exitMs` goes to the exits' segments (0 elsewhere).
 * @throws SelfxitError INTERNAL when `leaveMs` or `exitMs` does not have one time per exit.
 */
export function compiledStageTimings(
  manifest: Pick<BundleManifest, 'segments' | 'exits'>,
  leaveMs: readonly number[],
  fullMs: number,
  exitMs?: readonly number[],
): StageTimings {
  const { segments, exits } = manifest;
  if (leaveMs.length !== exits.length || (exitMs && exitMs.length !== exits.length))
    throw new SelfxitError(
      'INTERNAL',
      `${leaveMs.length} exit times and ${exitMs?.length ?? 'no'} exit costs for ${exits.length} exits`,
    );
  const stageMs = segments.map(() => 0);
  const perExit = segments.map(() => 0);
  let before = 0;
  exits.forEach((e, j) => {
    const at = Math.max(before, leaveMs[j]! - (exitMs?.[j] ?? 0));
    stageMs[e.segment] = at - before;
    perExit[e.segment] = exitMs?.[j] ?? 0;
    before = at;
  });
  stageMs[segments.length - 1]! += Math.max(0, fullMs - before);
  return { stageMs, decisionMs: segments.map(() => 0), ...(exitMs ? { exitMs: perExit } : {}) };
}

/** Timed passes of {@link measureCompiled} by default (each a pair of runs per exit and one more). */
const DEFAULT_COMPILED_RUNS = 16;

/**
 * Mean of the fastest eighth (at least two, or the one there is) of a non-empty list of run times: the time of a run
 * that nothing else on the machine slowed down. On a loaded machine run times are bimodal or worse (another process took
 * the core: 2x, 3x, …), so a median of 10 to 20 runs flips between the modes, and under heavy load fewer than a quarter
 * of the runs are clean. Measured on a 2-core machine that other jobs loaded (ResNet-20, WASM, 1 thread): at load ≈ 3.5
 * an exit's cost from the fastest 2, 3 or 4 of 16 runs varies alike (sd ≈ 45 µs), the median of paired differences 3–6x
 * as much; at load ≈ 6 in Chromium the fastest 4 of 16 held a slowed run and put 0.3 ms on a 0.05 ms exit, the fastest 2
 * did not.
 */
export function fastMean(values: readonly number[]): number {
  if (values.length === 0) throw new SelfxitError('INTERNAL', 'fastMean of no values');
  const k = Math.min(values.length, Math.max(2, Math.ceil(values.length / 8)));
  const s = [...values].sort((a, b) => a - b).slice(0, k);
  return s.reduce((a, b) => a + b, 0) / s.length;
}

/** One timed run of the compiled model: its ms and the exit it left at (the model's exit index; -1: ran through). */
export interface CompiledRun {
  readonly ms: number;
  readonly exit: number;
}

/** {@link measureCompiled}'s timings, with the exits whose cost could not be measured. */
export interface CompiledTimings extends StageTimings {
  /**
   * Exits (manifest order) whose "in use but passed" run left there (on the zero input its head's float32 maximum
   * probability rounds to exactly 1, which threshold 1 takes): their pair is not used, `exitMs` is 0 at their segment
   * and their head's time stays in that segment's `stageMs`, as in plans made before `exitMs`. Usually empty.
   */
  readonly unmeasuredExits: readonly number[];
}

/**
 * Measures the compiled engine for a device plan: `runOnce(thresholds)` times one run of the compiled model (all
 * segments, the heads of its disabled exits gated off: see {@link CompiledEngine.withGated}) with the given per-exit
 * thresholds and says where it left. Points, per pass in cascade order: leaving at exit 0 (threshold 0 there: its max
 * probability always passes; the other exits off, so their heads do not run), then per exit j a pair: exit j in use but
 * passed (threshold 1: its head runs, an input leaves only at a probability of exactly 1) with the next exit leaving
 * (the last exit: running through), and the same run with exit j off (= the next exit's leaving point, or running
 * through with every exit off), the pair's order alternating from pass to pass. {@link WARMUP_RUNS} untimed passes, then
 * `runs` timed ones. Each point's time is the {@link fastMean} of its runs; an exit's cost `exitMs[j]` is the difference
 * of its pair's points, clipped at 0 (the runs stop at the next exit, so a short run's noise). When a passed run left at
 * exit j after all, the pair is not used (see {@link CompiledTimings.unmeasuredExits}). The points go to
 * {@link compiledStageTimings}.
 * @throws SelfxitError INVALID_ARGUMENT for a bad `runs`.
 */
export async function measureCompiled(
  manifest: Pick<BundleManifest, 'segments' | 'exits'>,
  runOnce: (thresholds: readonly number[]) => Promise<CompiledRun>,
  runs = DEFAULT_COMPILED_RUNS,
): Promise<CompiledTimings> {
  if (!(Number.isInteger(runs) && runs >= 1))
    throw new SelfxitError('INVALID_ARGUMENT', `runs must be an integer >= 1, got ${String(runs)}`);
  const e = manifest.exits.length;
  const set = (values: Readonly<Record<number, number>>): number[] =>
    manifest.exits.map((_, i) => values[i] ?? Infinity);
  // Points 0 .. e-1: leave at j; e: run through; e+1 .. 2e: exit j passed, the next exit leaving (or running through).
  const points = [
    ...manifest.exits.map((_, j) => set({ [j]: 0 })),
    set({}),
    ...manifest.exits.map((_, j) => set(j + 1 < e ? { [j]: 1, [j + 1]: 0 } : { [j]: 1 })),
  ];
  /** The point that point e+1+j is paired with: exit j off, the rest the same. */
  const without = (j: number): number => (j + 1 < e ? j + 1 : e);
  const times: number[][] = points.map(() => []);
  const left = new Set<number>(); // exits whose passed run left there
  for (let r = 0; r < WARMUP_RUNS + runs; r++) {
    const order = [0]; // leaving at exit 0 (without exits: running through), then the pairs
    for (let j = 0; j < e; j++) order.push(...(r % 2 === 0 ? [e + 1 + j, without(j)] : [without(j), e + 1 + j]));
    for (const p of order) {
      const { ms, exit } = await runOnce(points[p]!);
      if (p > e && exit === p - e - 1) left.add(exit);
      if (r >= WARMUP_RUNS) times[p]!.push(ms);
    }
  }
  const at = times.map(fastMean);
  const exitMs = manifest.exits.map((_, j) => (left.has(j) ? 0 : Math.max(0, at[e + 1 + j]! - at[without(j)]!)));
  const unmeasuredExits = [...left].sort((a, b) => a - b);
  return { ...compiledStageTimings(manifest, at.slice(0, e), at[e]!, exitMs), unmeasuredExits };
}

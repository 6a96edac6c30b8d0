// Stage timing for device plans (measure.ts) over the engine's stage runner, on fake sessions with a virtual clock.
import type { InferenceSession, Tensor } from 'onnxruntime-common';
import * as ortNode from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import {
  compiledStageTimings,
  fastMean,
  type CompiledRun,
  measureCompiled,
  median,
  measureStages,
  stageTiming,
  WARMUP_RUNS,
} from '../src/runtime/measure.js';
import { SerialQueue } from '../src/runtime/queue.js';
import { OrtStageRunner } from '../src/engine/stage-runner.js';

const T = ortNode.Tensor as unknown as typeof Tensor;
const K = 3;

/** 3 segments: an exit fused into segment 0, none in segment 1, segment 2 the last. */
const manifest = {
  input: { name: 'x0', height: 2, width: 2, channels: 1, layout: 'NCHW', mean: [0], std: [1] },
  labels: ['a', 'b', 'c'],
  segments: [
    { file: 's0.onnx', input: 'x0', output: 'x1', exit: 0, exitOutput: 'p0' },
    { file: 's1.onnx', input: 'x1', output: 'x2' },
    { file: 's2.onnx', input: 'x2', output: 'logits' },
  ],
  exits: [{ segment: 0 }],
} as unknown as BundleManifest;

interface Call {
  readonly segment: number;
  readonly input: Tensor;
  readonly fetches: readonly string[];
  readonly main: Tensor;
}

/** Fake sessions: segment s costs (s + 1) ms on the virtual clock, reading its exit output 0.5 ms more. */
function fakeSessions(clock: { t: number }, calls: Call[]): InferenceSession[] {
  return manifest.segments.map((seg, s) => {
    const run = async (feeds: Record<string, Tensor>, fetches: readonly string[]): Promise<Record<string, Tensor>> => {
      const input = feeds[seg.input]!;
      const main = new T('float32', new Float32Array(4), [1, 4]);
      calls.push({ segment: s, input, fetches: [...fetches], main });
      clock.t += s + 1;
      const out: Record<string, Tensor> = { [seg.output]: main };
      if (seg.exitOutput && fetches.includes(seg.exitOutput)) {
        clock.t += 0.5;
        out[seg.exitOutput] = new T('float32', Float32Array.from([0.2, 0.5, 0.3]), [1, K]);
      }
      return out;
    };
    return { run } as unknown as InferenceSession;
  });
}

/** The worker's runner over `session` (through a SerialQueue, as in the worker). */
function runnerOf(session: (s: number) => Promise<InferenceSession>): OrtStageRunner {
  return new OrtStageRunner({ Tensor: T, manifest, queue: new SerialQueue(), sessions: { session } });
}

describe('measureStages', () => {
  it('median and stageTiming: median of main-only runs; decision = median of paired differences, clipped at 0', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(() => median([])).toThrow();
    expect(stageTiming([1, 2, 3], [1.5, 9, 3.5])).toEqual({ stageMs: 2, decisionMs: 0.5 });
    // A machine that slows down by 4 ms during the measurement (from the third run with the exit on): most pairs still
    // show the 0.5 ms the exit adds, where the difference of the two medians would give 4.5.
    expect(stageTiming([1, 1, 1, 5, 5], [1.5, 1.5, 5.5, 5.5, 5.5])).toEqual({ stageMs: 1, decisionMs: 0.5 });
    expect(stageTiming([2, 2, 2], [1, 1, 1])).toEqual({ stageMs: 2, decisionMs: 0 });
    expect(stageTiming([5], undefined)).toEqual({ stageMs: 5, decisionMs: 0 });
    expect(() => stageTiming([1, 2], [1])).toThrow(/1 runs with the exit output, 2 without/);
  });

  it('creates every session first, feeds each segment the previous one’s output, times passes of main-only and main+exit runs', async () => {
    const clock = { t: 0 };
    const calls: Call[] = [];
    const sessions = fakeSessions(clock, calls);
    const created: number[] = [];
    const runs = 4;
    const timings = await measureStages(
      runnerOf(async (s) => {
        created.push(s);
        expect(calls).toHaveLength(0); // every session exists before the first run
        return sessions[s]!;
      }),
      runs,
      () => clock.t,
    );
    expect(created).toEqual([0, 1, 2]);
    expect(timings).toEqual({ stageMs: [1, 2, 3], decisionMs: [0.5, 0, 0] });
    const of = (s: number) => calls.filter((c) => c.segment === s);
    // segment 0: warm-ups with both outputs, then pairs of passes, main only and main + exit, in the order AB BA AB BA;
    // segments 1, 2: main only in every pass
    expect(of(0).map((c) => c.fetches.join('+'))).toEqual([
      ...Array(WARMUP_RUNS).fill('x1+p0'),
      'x1',
      'x1+p0',
      'x1+p0',
      'x1',
      'x1',
      'x1+p0',
      'x1+p0',
      'x1',
    ]);
    expect(of(1).map((c) => c.fetches.join('+'))).toEqual(Array(WARMUP_RUNS + 2 * runs).fill('x2'));
    expect(of(2)).toHaveLength(WARMUP_RUNS + 2 * runs);
    // passes through the segments in cascade order: 0, 1, 2, 0, 1, 2, …
    expect(calls.map((c) => c.segment)).toEqual(
      Array(WARMUP_RUNS + 2 * runs)
        .fill([0, 1, 2])
        .flat(),
    );
    // segment 0 runs on zeros of the input dims at batch 1; every run of segment s+1 on one output of segment s
    expect(of(0)[0]!.input.dims).toEqual([1, 1, 2, 2]);
    expect(Array.from(of(0)[0]!.input.data as Float32Array)).toEqual([0, 0, 0, 0]);
    for (const s of [1, 2]) {
      const inputs = new Set(of(s).map((c) => c.input));
      expect(inputs.size).toBe(1);
      expect(of(s - 1)[0]!.main).toBe([...inputs][0]); // the first warm-up's output
    }
  });

  it('a machine whose every other pass is 4 ms slower per run slows both kinds of runs alike: the decision cost stays 0.5 ms', async () => {
    const clock = { t: 0 };
    const calls: Call[] = [];
    const sessions = fakeSessions(clock, calls).map((session) => ({
      run: async (feeds: Record<string, Tensor>, fetches: readonly string[]) => {
        const out = await session.run(feeds, fetches);
        const pass = calls.filter((c) => c.segment === 0).length; // a pass starts with segment 0
        if (pass % 2 === 0) clock.t += 4; // the 2nd, 4th, … pass of the measurement
        return out;
      },
    })) as unknown as InferenceSession[];
    const timings = await measureStages(
      runnerOf(async (s) => sessions[s]!),
      4,
      () => clock.t,
    );
    // segment 0: main runs 1, 5, 1, 5 ms (median 3); paired differences +4.5, −3.5, +4.5, −3.5 (median 0.5), where
    // main, exit, main, exit, … would put every exit run on a slow slot and give 4.5
    expect(timings.stageMs[0]).toBe(3);
    expect(timings.decisionMs[0]).toBe(0.5);
  });

  it('on GPU outputs: the main output is read back inside the timing, and every GPU buffer is freed once', async () => {
    const clock = { t: 0 };
    const all: FakeGpuTensor[] = [];
    const inputs: unknown[][] = [[], [], []];
    class FakeGpuTensor {
      location = 'gpu-buffer';
      readonly type = 'float32';
      readonly dims = [1, 4];
      freed = 0;
      async getData(release?: boolean): Promise<Float32Array> {
        clock.t += 3; // the wait for the GPU
        this.location = 'cpu';
        if (release) this.freed++;
        return new Float32Array(4);
      }
      dispose(): void {
        if (this.location === 'gpu-buffer') this.freed++;
      }
    }
    const sessions = manifest.segments.map((seg, s) => ({
      run: async (feeds: Record<string, unknown>, fetches: readonly string[]) => {
        inputs[s]!.push(feeds[seg.input]);
        clock.t += s + 1;
        const last = s === manifest.segments.length - 1;
        const main = last ? new T('float32', new Float32Array(3), [1, 3]) : new FakeGpuTensor();
        if (main instanceof FakeGpuTensor) all.push(main);
        const out: Record<string, unknown> = { [seg.output]: main };
        if (seg.exitOutput && fetches.includes(seg.exitOutput)) {
          clock.t += 0.5; // reading the exit output (a CPU output: the run waits and downloads it)
          out[seg.exitOutput] = new T('float32', Float32Array.from([0.2, 0.5, 0.3]), [1, K]);
        }
        return out;
      },
    })) as unknown as InferenceSession[];
    const timings = await measureStages(
      runnerOf(async (s) => sessions[s]!),
      3,
      () => clock.t,
    );
    expect(timings).toEqual({ stageMs: [4, 5, 3], decisionMs: [0.5, 0, 0] });
    expect(all.length).toBe(2 * (WARMUP_RUNS + 3 + 3)); // segments 0 and 1: warm-up passes + both kinds of passes
    expect(all.map((t) => t.freed)).toEqual(all.map(() => 1));
    expect(new Set(inputs[1]).size).toBe(1);
    expect(inputs[1]![0]).toBe(all[0]); // segment 1 ran on segment 0's first warm-up output
  });

  it('rejects a bad run count', async () => {
    const runner = runnerOf(async () => ({}) as InferenceSession);
    await expect(measureStages(runner, 0)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(measureStages(runner, 1.5)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('measureCompiled (device plans on the compiled engine)', () => {
  /** 4 segments, exits at the ends of segments 0 and 2 (segment 1 has none), segment 3 the last. */
  const four = {
    segments: [{ exit: 0 }, {}, { exit: 1 }, {}],
    exits: [{ segment: 0 }, { segment: 2 }],
  } as unknown as BundleManifest;

  /**
   * A virtual compiled model of `four`: segments 2, 3, 4, 5 ms; exit 0's head 0.5 ms, exit 1's 0.25 ms (run where the
   * exit is in use and reached: threshold <= 1); a run leaves at the first exit whose threshold is 0, or at an exit in
   * use in `saturated` (its probability rounds to 1); every fifth run 50 ms slower (another process took the core).
   */
  function virtualModel(saturated: ReadonlySet<number> = new Set()): {
    runOnce: (th: readonly number[]) => Promise<CompiledRun>;
    seen: string[];
  } {
    const cum = [2, 5, 9, 14];
    const head = [0.5, 0.25];
    const seen: string[] = [];
    let call = 0;
    const runOnce = async (th: readonly number[]): Promise<CompiledRun> => {
      seen.push(th.map((t) => (t === 0 ? '0' : t === 1 ? '1' : 'x')).join(''));
      const exit = th.findIndex((t, i) => t === 0 || (t <= 1 && saturated.has(i)));
      const end = exit < 0 ? 3 : four.exits[exit]!.segment;
      const heads = four.exits.reduce((a, x, i) => a + (th[i]! <= 1 && x.segment <= end ? head[i]! : 0), 0);
      const noise = call++ % 5 === 3 ? 50 : 0; // the fastest eighth leaves them out
      return { ms: cum[end]! + heads + noise, exit };
    };
    return { runOnce, seen };
  }

  it('times leaving at each exit, each exit passed beside it off, and turns them into stage and exit costs', async () => {
    const { runOnce, seen } = virtualModel();
    const timings = await measureCompiled(four, runOnce, 8);
    // per pass: leave at exit 0, then the pairs (exit 0 passed, exit 1 leaving | exit 1 leaving), (exit 1 passed |
    // every exit off), in the other order on the next pass
    expect(seen.slice(0, 10)).toEqual(['0x', '10', 'x0', 'x1', 'xx', '0x', 'x0', '10', 'xx', 'x1']);
    expect(seen).toHaveLength(5 * (WARMUP_RUNS + 8));
    expect(timings.stageMs.map((t) => +t.toFixed(9))).toEqual([2, 0, 7, 5]);
    expect(timings.exitMs!.map((t) => +t.toFixed(9))).toEqual([0.5, 0, 0.25, 0]);
    expect(timings.decisionMs).toEqual([0, 0, 0, 0]);
    expect(timings.unmeasuredExits).toEqual([]);
  });

  it('an exit whose passed run leaves there (probability 1 on the zero input): its pair unused, said, its head in its stage', async () => {
    const { runOnce } = virtualModel(new Set([0]));
    const timings = await measureCompiled(four, runOnce, 8);
    expect(timings.unmeasuredExits).toEqual([0]);
    // exit 0's head (0.5 ms) stays in segment 0, exit 1 is measured as before
    expect(timings.stageMs.map((t) => +t.toFixed(9))).toEqual([2.5, 0, 6.5, 5]);
    expect(timings.exitMs!.map((t) => +t.toFixed(9))).toEqual([0, 0, 0.25, 0]);
    // the last exit too: its passed run leaves instead of running through
    const last = await measureCompiled(four, virtualModel(new Set([1])).runOnce, 8);
    expect(last.unmeasuredExits).toEqual([1]);
    expect(last.exitMs!.map((t) => +t.toFixed(9))).toEqual([0.5, 0, 0, 0]);
  });

  it('fastMean: the mean of the fastest eighth, at least two', () => {
    expect(fastMean([5, 1, 9, 2, 50, 3, 7, 4])).toBe(1.5);
    expect(fastMean([...Array.from({ length: 20 }, (_, i) => 10 + i), 2, 3, 4, 5])).toBe(3); // 24 runs: the fastest 3
    expect(fastMean([3])).toBe(3);
    expect(() => fastMean([])).toThrow();
  });

  it('clips a later point measured faster than an earlier one, so every time stays >= 0', () => {
    expect(compiledStageTimings(four, [3, 2.5], 2).stageMs).toEqual([3, 0, 0, 0]);
    expect(compiledStageTimings(four, [3, 2.5], 2).exitMs).toBeUndefined(); // not measured: none reported
    expect(compiledStageTimings(four, [3, 5], 6, [1, 0.5]).stageMs).toEqual([2, 0, 2.5, 1.5]);
    expect(() => compiledStageTimings(four, [1], 2)).toThrow(/2 exits/);
    expect(() => compiledStageTimings(four, [1, 2], 2, [0])).toThrow(/2 exits/);
  });

  it('rejects a bad run count', async () => {
    await expect(measureCompiled(four, async () => ({ ms: 1, exit: -1 }), 0)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});

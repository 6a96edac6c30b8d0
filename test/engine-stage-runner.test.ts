// The one onnxruntime StageRunner (engine/stage-runner.ts) on fake sessions: fetches, the queue, output checks, row
// selection on CPU and GPU tensors, and the lazy session provider.
import type { InferenceSession, Tensor } from 'onnxruntime-common';
import * as ortNode from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { LazySessions, OrtStageRunner, type OrtCallQueue } from '../src/engine/stage-runner.js';

const T = ortNode.Tensor as unknown as typeof Tensor;

/** 2 segments: an exit fused into segment 0, segment 1 the last. */
const manifest = {
  input: { name: 'x0', height: 1, width: 2, channels: 1, layout: 'NCHW', mean: [0], std: [1] },
  labels: ['a', 'b', 'c'],
  segments: [
    { file: 's0.onnx', input: 'x0', output: 'x1', exit: 0, exitOutput: 'p0' },
    { file: 's1.onnx', input: 'x1', output: 'logits' },
  ],
  exits: [{ segment: 0 }],
} as unknown as BundleManifest;

/** Fake sessions recording each run's fetches; `omit` drops an output from the results. */
function fakeSessions(fetched: string[][], omit?: string): InferenceSession[] {
  return manifest.segments.map((seg) => {
    const run = async (feeds: Record<string, Tensor>, fetches: readonly string[]) => {
      fetched.push([...fetches]);
      const rows = feeds[seg.input]!.dims[0]!;
      const out: Record<string, Tensor> = {};
      for (const name of fetches) {
        if (name !== omit) out[name] = new T('float32', new Float32Array(rows * 3).fill(1 / 3), [rows, 3]);
      }
      return out;
    };
    return { run } as unknown as InferenceSession;
  });
}

/** A queue counting its jobs. */
function countingQueue(): OrtCallQueue & { jobs: number } {
  const q = {
    jobs: 0,
    async run<R>(job: () => Promise<R> | R): Promise<R> {
      q.jobs++;
      return job();
    },
  };
  return q;
}

function runner(sessions: InferenceSession[], queue?: OrtCallQueue): OrtStageRunner {
  return new OrtStageRunner({
    Tensor: T,
    manifest,
    sessions: { session: async (s) => sessions[s]! },
    ...(queue ? { queue } : {}),
  });
}

const x = new T('float32', new Float32Array(4), [2, 1, 1, 2]);

describe('OrtStageRunner', () => {
  it('fetches the exit output only when asked to, every run through the queue', async () => {
    const fetched: string[][] = [];
    const queue = countingQueue();
    const r = runner(fakeSessions(fetched), queue);
    const read = await r.runStage(0, x, 2);
    expect(fetched.at(-1)).toEqual(['x1', 'p0']);
    expect(read.exitProbs).toHaveLength(6);
    const skipped = await r.runStage(0, x, 2, false);
    expect(fetched.at(-1)).toEqual(['x1']);
    expect(skipped.exitProbs).toBeUndefined();
    expect(skipped.next).toBeDefined();
    expect(queue.jobs).toBe(2); // CPU outputs are read in place, without a job of their own
    const last = await r.runStage(1, x, 2);
    expect(fetched.at(-1)).toEqual(['logits']);
    expect(last.final).toHaveLength(6);
    expect(last.next).toBeUndefined();
  });

  it('a missing output is INVALID_BUNDLE, naming the segment file and the output', async () => {
    await expect(runner(fakeSessions([], 'p0')).runStage(0, x, 2)).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
      message: 'segment 0 (s0.onnx) produced no exit output "p0"',
    });
    await expect(runner(fakeSessions([], 'x1')).runStage(0, x, 2, false)).rejects.toMatchObject({
      code: 'INVALID_BUNDLE',
      message: 'segment 0 (s0.onnx) produced no output "x1"',
    });
    await expect(runner(fakeSessions([])).runStage(2, x, 2)).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('selects rows of a CPU activation; a GPU one is downloaded once (its buffer freed) and released only on the GPU', async () => {
    const r = runner(fakeSessions([]));
    const act = new T('float32', Float32Array.from([0, 1, 2, 3, 4, 5]), [3, 2]);
    const kept = await r.selectRows(act, [0, 2], 3);
    expect(kept.dims).toEqual([2, 2]);
    expect(Array.from(kept.data as Float32Array)).toEqual([0, 1, 4, 5]);
    let freed = 0;
    let disposed = 0;
    const gpu = {
      type: 'float32',
      location: 'gpu-buffer',
      dims: [3, 2],
      async getData(release?: boolean) {
        if (release) freed++;
        return Float32Array.from([0, 1, 2, 3, 4, 5]);
      },
      dispose() {
        disposed++;
      },
    } as unknown as Tensor;
    const fromGpu = await r.selectRows(gpu, [1], 3);
    expect(Array.from(fromGpu.data as Float32Array)).toEqual([2, 3]);
    expect(fromGpu.location).toBe('cpu');
    expect(freed).toBe(1);
    r.release(gpu);
    r.release(fromGpu);
    expect(disposed).toBe(1);
    const ints = new T('int32', Int32Array.from([1, 2]), [2, 1]);
    await expect(r.selectRows(ints, [0], 2)).rejects.toMatchObject({ code: 'INVALID_BUNDLE' });
  });
});

describe('LazySessions', () => {
  const fake = (id: number) => ({
    id,
    released: 0,
    release: async function (this: { released: number }) {
      this.released++;
    },
  });

  it('loads each segment once for concurrent callers, tries a failed load again, releases what loaded', async () => {
    const loads: number[] = [];
    const made: ReturnType<typeof fake>[] = [];
    let failNext = true;
    const lazy = new LazySessions(async (s) => {
      loads.push(s);
      if (s === 1 && failNext) {
        failNext = false;
        throw new Error('no');
      }
      const f = fake(s);
      made.push(f);
      return f as unknown as InferenceSession;
    });
    const [a, b] = await Promise.all([lazy.session(0), lazy.session(0)]);
    expect(a).toBe(b);
    await expect(lazy.session(1)).rejects.toThrow('no');
    await lazy.session(1);
    expect(loads).toEqual([0, 1, 1]);
    const queue = countingQueue();
    await lazy.releaseAll(queue);
    expect(made.map((f) => f.released)).toEqual([1, 1]);
    expect(queue.jobs).toBe(2);
    await lazy.session(0); // forgotten by releaseAll: loaded again
    expect(loads).toEqual([0, 1, 1, 0]);
  });
});

// The per-call profile (runtime/profile.ts) with overlapping profiled calls on one onnxruntime queue: each counts the
// jobs that end while it is attached; one call's end does not stop another's counting.
import { describe, expect, it } from 'vitest';
import { CallProfiler } from '../src/runtime/profile.js';
import { SerialQueue } from '../src/runtime/queue.js';

const job = (ms: number) => () => new Promise<void>((r) => setTimeout(r, ms));

describe('CallProfiler', () => {
  it('two overlapping profiled calls: each counts its jobs; the first one ending leaves the second counting', async () => {
    const queue = new SerialQueue();
    const first = new CallProfiler();
    const second = new CallProfiler();
    first.attach(queue);
    await queue.run(job(5)); // the first call's run, before the second started
    second.attach(queue);
    await queue.run(job(5)); // while both are attached: both count it
    first.detach();
    await queue.run(job(5)); // the second call's run after the first ended
    second.detach();
    await queue.run(job(1)); // unprofiled
    const [a, b] = [first.done(), second.done()];
    expect(a.runs).toBe(2);
    expect(b.runs).toBe(2);
    expect(b.runMs).toBeGreaterThan(5);
    expect(queue.observer).toBeUndefined();
  });
});

// SerialQueue: one ORT call at a time, in order, and a failing job does not block the next ones.
import { describe, expect, it } from 'vitest';
import { SerialQueue } from '../src/runtime/queue.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SerialQueue', () => {
  it('runs jobs one at a time in submission order', async () => {
    const q = new SerialQueue();
    let running = 0;
    let maxRunning = 0;
    const order: number[] = [];
    const jobs = [30, 5, 15, 0, 10].map((ms, i) =>
      q.run(async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await tick(ms);
        order.push(i);
        running--;
        return i * 10;
      }),
    );
    expect(q.size).toBe(5);
    expect(await Promise.all(jobs)).toEqual([0, 10, 20, 30, 40]);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(maxRunning).toBe(1);
    expect(q.size).toBe(0);
  });

  it('passes a failure to its caller only and keeps going', async () => {
    const q = new SerialQueue();
    const a = q.run(async () => {
      throw new Error('boom');
    });
    const b = q.run(() => 'after');
    await expect(a).rejects.toThrow('boom');
    await expect(b).resolves.toBe('after');
  });
});

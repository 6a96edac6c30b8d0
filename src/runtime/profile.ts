// Per-call time breakdown of classify() (ClassifyOptions `profile`, for the bench and debugging): performance.now()
// laps and the queue's job times, collected only for a profiled call; unprofiled calls make none of these marks.
import type { CallProfile } from '../protocol.js';
import type { SerialQueue } from './queue.js';

/** Absolute ms, comparable between the page and its worker. */
export const absoluteNow = (): number => performance.timeOrigin + performance.now();

/** The profilers attached to each queue: calls may overlap, so the queue's one observer slot tells them all. */
const attached = new WeakMap<SerialQueue, Set<CallProfiler>>();

/** Collects one call's {@link CallProfile}: laps between marks, plus the queue's jobs while attached. */
export class CallProfiler {
  readonly recvAt = absoluteNow();
  private last = performance.now();
  private runMs = 0;
  private runs = 0;
  private queueMs = 0;
  /** Time added with {@link add} while attached. */
  private inside = 0;
  private readonly laps = { preprocessMs: 0, readbackMs: 0, decisionMs: 0, replyMs: 0 };
  private queue: SerialQueue | undefined;

  /** Adds the time since the previous mark to `part`. */
  lap(part: keyof CallProfiler['laps']): void {
    const now = performance.now();
    this.laps[part] += now - this.last;
    this.last = now;
  }

  /** Adds `ms` measured by the caller to `part` (inside the attached span: taken out of the decisions' time). */
  add(part: 'readbackMs', ms: number): void {
    this.laps[part] += ms;
    this.inside += ms;
  }

  /**
   * Counts `queue`'s jobs (wait and run time) from now until {@link detach}. Profiled calls that overlap each count every
   * job that ends while they are attached (the queue does not know whose a job is).
   */
  attach(queue: SerialQueue): void {
    this.queue = queue;
    this.inside = 0;
    let profilers = attached.get(queue);
    if (!profilers) attached.set(queue, (profilers = new Set()));
    profilers.add(this);
    const all = profilers;
    queue.observer = (waitMs, runMs) => {
      for (const p of all) p.observe(waitMs, runMs);
    };
  }

  private observe(waitMs: number, runMs: number): void {
    this.queueMs += waitMs;
    this.runMs += runMs;
    this.runs++;
  }

  /**
   * Stops counting jobs; the time since the last mark, less the jobs' wait and run time and the readback time added
   * meanwhile, is the decisions' (cascade logic between runs).
   */
  detach(): void {
    const profilers = this.queue && attached.get(this.queue);
    profilers?.delete(this);
    if (this.queue && profilers?.size === 0) this.queue.observer = undefined;
    this.queue = undefined;
    const now = performance.now();
    this.laps.decisionMs += Math.max(0, now - this.last - this.runMs - this.queueMs - this.inside);
    this.last = now;
  }

  /**
   * Adds the parts of a step timed elsewhere and ending now: a nested call's profile (the runtime a learning classifier
   * serves through; its `replyMs` counts as decisions here) or runs timed by the caller. The time since the last mark
   * that they do not cover counts as queueing (waits and promise hops).
   */
  absorb(p: Partial<Omit<CallProfile, 'recvAt' | 'replyAt'>>): void {
    const now = performance.now();
    const [pre, run, queue, readback] = [p.preprocessMs ?? 0, p.runMs ?? 0, p.queueMs ?? 0, p.readbackMs ?? 0];
    const decision = (p.decisionMs ?? 0) + (p.replyMs ?? 0);
    this.laps.preprocessMs += pre;
    this.laps.readbackMs += readback;
    this.laps.decisionMs += decision;
    this.runMs += run;
    this.runs += p.runs ?? 0;
    this.queueMs += queue + Math.max(0, now - this.last - (pre + run + queue + readback + decision));
    this.last = now;
  }

  /** The profile, with `replyMs` up to now; `replyAt` is now. */
  done(): CallProfile {
    this.lap('replyMs');
    return {
      recvAt: this.recvAt,
      replyAt: absoluteNow(),
      runMs: this.runMs,
      runs: this.runs,
      queueMs: this.queueMs,
      ...this.laps,
    };
  }
}

// Progress events and cancellation for calibration: a discriminated union the caller can render
// (CLI line, page progress bar) and a helper that throws ABORTED when the caller's signal fires.
import { SelfxitError } from '../errors.js';

/** Calibration steps, in the order they run. */
export type PrepareStage = 'features' | 'heads' | 'thresholds' | 'bundle';

/**
 * One progress event. `done` only grows within a stage and reaches `total` when the stage ends.
 * - `features`: samples run through the backbone (`total` = sample count).
 * - `heads`: head trainings finished (`total` = candidate cuts x head kinds).
 * - `thresholds`: exit subsets / thresholds evaluated (`total` is 1 when the math does it in one go).
 * - `bundle`: bundle files written (`total` = segment files + backbone copy).
 */
export interface PrepareProgress {
  readonly stage: PrepareStage;
  readonly done: number;
  readonly total: number;
  /** Short human detail, e.g. the cut being trained. */
  readonly detail?: string;
}

/** Receives {@link PrepareProgress} events (`prepare`'s `onProgress`). */
export type ProgressCallback = (event: PrepareProgress) => void;

/** Throws `ABORTED` when the signal has fired. Call between units of work. */
export function throwIfAborted(signal: AbortSignal | undefined, during: string): void {
  if (signal?.aborted) throw new SelfxitError('ABORTED', `Calibration cancelled during ${during}`, { stage: during });
}

/** Yields to the event loop so a UI thread or an abort signal can be served between heavy steps. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Wall-clock timer per named step, in seconds (rounded to ms). */
export class StepTimer {
  private readonly now: () => number;
  private readonly seconds: Record<string, number> = {};
  constructor(now: () => number = () => performance.now()) {
    this.now = now;
  }
  /** Runs `fn`, adding its duration to `step`. */
  async time<T>(step: string, fn: () => Promise<T>): Promise<T> {
    const t0 = this.now();
    try {
      return await fn();
    } finally {
      this.seconds[step] = Math.round(((this.seconds[step] ?? 0) + (this.now() - t0) / 1000) * 1000) / 1000;
    }
  }
  /** Timings so far, `step -> seconds`. */
  toJSON(): Record<string, number> {
    return { ...this.seconds };
  }
}

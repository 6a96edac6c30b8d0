// Deadlines and cancellation on the page: a timeout (fixed, or on inactivity) and an AbortSignal turned into TIMEOUT and
// ABORTED SelfxitErrors.
import { SelfxitError } from '../errors.js';

/** The error an aborted signal gives (ABORTED, its reason in the message). */
export function abortError(signal: AbortSignal, what: string): SelfxitError {
  const reason = signal.reason instanceof Error ? `: ${signal.reason.message}` : '';
  return new SelfxitError('ABORTED', `${what} was aborted${reason}`);
}

/**
 * Calls `onStop` with TIMEOUT once `timeoutMs` passed (0: never) or with ABORTED when `signal` aborts; returns the
 * function that stops watching.
 */
export function watchDeadline(
  what: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  onStop: (e: SelfxitError) => void,
): () => void {
  const timer =
    timeoutMs > 0
      ? setTimeout(
          () => onStop(new SelfxitError('TIMEOUT', `${what} did not finish within ${timeoutMs} ms`, { timeoutMs })),
          timeoutMs,
        )
      : undefined;
  const onAbort = (): void => onStop(abortError(signal!, what));
  signal?.addEventListener('abort', onAbort, { once: true });
  return () => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  };
}

/** A deadline on inactivity ({@link watchInactivity}). */
export interface InactivityDeadline {
  /** Restarts the clock: the work showed progress. */
  touch(): void;
  /** Stops watching. */
  stop(): void;
}

/**
 * Calls `onStop` with TIMEOUT once `timeoutMs` passed without a {@link InactivityDeadline.touch} (0: never), or with
 * ABORTED when `signal` aborts.
 */
export function watchInactivity(
  what: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  onStop: (e: SelfxitError) => void,
): InactivityDeadline {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const expire = (): void =>
    onStop(new SelfxitError('TIMEOUT', `${what} made no progress for ${timeoutMs} ms`, { timeoutMs }));
  const touch = (): void => {
    if (stopped || timeoutMs <= 0) return;
    clearTimeout(timer);
    timer = setTimeout(expire, timeoutMs);
  };
  touch();
  const stopAbort = watchDeadline(what, 0, signal, onStop);
  return {
    touch,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
      stopAbort();
    },
  };
}

/** `promise`, or ABORTED as soon as `signal` aborts (what it waits for goes on, its result dropped). */
export async function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return promise;
  let stop = (): void => {};
  const aborted = new Promise<never>((_, reject) => {
    stop = watchDeadline(what, 0, signal, reject);
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    stop();
  }
}

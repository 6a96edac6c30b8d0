// Deadlines and cancellation on the page: a timeout and an AbortSignal turned into TIMEOUT and ABORTED SelfxitErrors.
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

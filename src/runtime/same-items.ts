// Element-wise array equality for the worker's per-call checks (state snapshots, thresholds tensors): a plain loop, no
// closure or copy, as it runs on every classify() call.

/** Whether two arrays hold the same items (`===`), in order. */
export function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// A batch on its way to the worker: inputs converted (page/inputs.ts) and sent in parts of bounded size, one part
// running in the worker while the page converts the next, so that a batch of large images is never all decoded at once.
import { SelfxitError, isSelfxitError } from '../errors.js';
import type { WireInput, WireResult } from '../protocol.js';
import type { BufferPool } from './buffer-pool.js';
import { dropTransfers, toWireInput } from './inputs.js';

/**
 * Bytes of converted inputs in one part of a batch (at least 2 inputs a part): a 12-MP photo decodes to 48 MB, so 100
 * of them are sent about 2 at a time instead of 4.8 GB at once; 32 x 32 images (4 KB) never come near it.
 */
export const PART_BYTES = 64 * 2 ** 20;

/** Bytes a converted input holds until it reaches the worker (a Blob is decoded there, one at a time). */
function wireBytes(w: WireInput): number {
  switch (w.kind) {
    case 'bitmap':
      return w.bitmap.width * w.bitmap.height * 4;
    case 'blob':
      return w.blob.size;
    default:
      return w.data.byteLength;
  }
}

/** Inputs converted and not sent yet, from input `start` on. */
class Part {
  readonly wires: WireInput[] = [];
  readonly transfers: Transferable[] = [];
  bytes = 0;
  constructor(readonly start: number) {}
  /** Closes the bitmaps created for it (the part will not be sent). */
  drop(): void {
    dropTransfers(this.transfers);
  }
}

/** How {@link sendInParts} reads a result's `totalMs` and makes one with the batch's total instead (several parts only). */
export interface PartTiming<R> {
  totalMs(r: R): number;
  withTotal(r: R, totalMs: number): R;
}

const wireTiming: PartTiming<Pick<WireResult, 'totalMs'>> = {
  totalMs: (r) => r.totalMs,
  withTotal: (r, totalMs) => ({ ...r, totalMs }),
};

/** `e` of input `i` of a batch of `n`: its message and details name the input (`inputIndex`), as the worker does. */
function atInput(e: unknown, i: number, n: number): unknown {
  if (!(e instanceof SelfxitError) || n < 2) return e;
  const message = e.message.replace(/^input \d+: /, '');
  return new SelfxitError(e.code, `input ${i}: ${message}`, { ...e.details, inputIndex: i }, { cause: e.cause });
}

/**
 * Converts `inputs` and sends them with `send`, in parts of about `partBytes` (every part but the last ends past it;
 * a batch under it goes as one part, as before); returns the results in input order. `check` runs after each input is
 * converted and before each part is sent (it throws DISPOSED or ABORTED: nothing more is converted or sent). An error of a part's input rejects with that
 * input's index in the batch (`details.inputIndex`); the results of parts already run are dropped. With several
 * parts, every result's `totalMs` is their sum (the worker's time for the whole batch), read and set through `timing`
 * (results of another shape than {@link WireResult}'s: the classifier's, built once per reply). Inputs are copied into
 * `pool`'s buffers where it has some of their size (page/inputs.ts).
 * @throws SelfxitError INVALID_INPUT (an input that cannot be converted), or what `send` or `check` throw.
 */
export async function sendInParts<R = WireResult>(
  inputs: readonly unknown[],
  send: (wires: WireInput[], transfers: Transferable[]) => Promise<readonly R[]>,
  check: () => void,
  partBytes = PART_BYTES,
  timing: PartTiming<R> = wireTiming as unknown as PartTiming<R>,
  pool?: BufferPool,
): Promise<R[]> {
  const n = inputs.length;
  const results: (readonly R[])[] = [];
  /** The part in the worker; settled with undefined or the error it rejected with (an input's index mapped). */
  let running: Promise<unknown> = Promise.resolve(undefined);
  const waitRunning = async (): Promise<void> => {
    const e = await running;
    if (e !== undefined) throw e;
  };
  const dispatch = async (part: Part): Promise<void> => {
    try {
      await waitRunning();
      check();
    } catch (e) {
      part.drop();
      throw e;
    }
    running = send(part.wires, part.transfers).then(
      (r) => void results.push(r),
      (e: unknown) => {
        // The worker names an input by its index in the part (parts have 2 inputs or more, unless the batch has 1).
        const local = isSelfxitError(e) ? e.details?.inputIndex : undefined;
        return typeof local === 'number' && part.start > 0 ? atInput(e, part.start + local, n) : e;
      },
    );
  };
  let part = new Part(0);
  for (let i = 0; i < n; i++) {
    try {
      const converted = toWireInput(inputs[i], pool);
      const { wire, transfer } = converted instanceof Promise ? await converted : converted;
      part.wires.push(wire);
      part.transfers.push(...transfer);
      part.bytes += wireBytes(wire);
    } catch (e) {
      part.drop();
      throw atInput(e, i, n);
    }
    try {
      check(); // disposed or aborted meanwhile: convert no more
    } catch (e) {
      part.drop();
      throw e;
    }
    if (part.bytes >= partBytes && part.wires.length >= 2 && n - i - 1 >= 2) {
      await dispatch(part);
      part = new Part(i + 1);
    }
  }
  await dispatch(part);
  await waitRunning();
  if (results.length < 2) return results.length === 1 ? [...results[0]!] : [];
  const totalMs = results.reduce((a, r) => a + (r[0] ? timing.totalMs(r[0]) : 0), 0);
  return results.flat().map((r) => timing.withTotal(r, totalMs));
}

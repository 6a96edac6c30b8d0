// The shared-memory lane for classify() (load option `sharedMemory`), imported by both src/page and src/runtime: one
// SharedArrayBuffer per worker holding a control word, one request and then its answer. A postMessage hop costs
// ~0.15–0.2 ms each way in Chromium (bench/transport.mjs: 0.33–0.45 ms per round trip at 2 ms of work, against
// 0.08–0.10 ms with Atomics.notify / Atomics.waitAsync both ways), a fixed cost that batch-1 calls of a small model
// pay in full. Both sides wait with Atomics.waitAsync (never Atomics.wait: the worker keeps serving comlink and the
// classify port meanwhile, the page's main thread may not block).
//
// The control word says who owns the rest of the buffer: the page while it is IDLE, ANSWER or ON_PORT, the worker while
// it is REQUEST. One call at a time: calls made while the lane is taken, and calls it cannot carry (bitmaps, blobs,
// inputs over its size), go by the classify port as before. The worker answers here only when the reply is plain
// results (no new runtime state, no error, and it fits); otherwise it answers on the port, by id, and sets ON_PORT.
// CLOSED ends the worker's loop (the page's client failed or was disposed); the worker sets ANSWER only if the word is
// still REQUEST (compareExchange), so a closed lane stays closed.
import type { CallProfile, ClassifyRequest, WireInput, WireResult } from './protocol.js';

/** The control word's values. */
export const LANE = { IDLE: 0, REQUEST: 1, ANSWER: 2, ON_PORT: 3, CLOSED: 4 } as const;
export type LaneState = (typeof LANE)[keyof typeof LANE];

/** Header: Int32 words [control, call id, words capacity, data bytes capacity], padded to 64 bytes. */
const HEADER_BYTES = 64;
const CONTROL = 0;
const CALL_ID = 1;
const WORDS = 2;
const DATA_BYTES = 3;

/** Default capacity: 40,000 float64 words (a batch of 32 with 1,000 classes' probabilities) and 1 MiB of inputs. */
export const LANE_WORDS = 40_000;
export const LANE_DATA_BYTES = 2 ** 20;

/** The profile's fields in their order on the lane (the compiler checks that every key of CallProfile is here). */
const PROFILE_KEYS = [
  'recvAt',
  'replyAt',
  'preprocessMs',
  'runMs',
  'runs',
  'queueMs',
  'readbackMs',
  'decisionMs',
  'replyMs',
] as const satisfies readonly (keyof CallProfile)[];
type MissingProfileKey = Exclude<keyof CallProfile, (typeof PROFILE_KEYS)[number]>;
const everyProfileKey: MissingProfileKey extends never ? true : never = true;
void everyProfileKey;

const KIND_TENSOR = 0;
const KIND_PIXELS = 1;

/** Atomics.waitAsync where it exists (Chrome 87+, working from 91; Safari 16.4+, Firefox 145+, Node 16+); the lib types lack it. */
type WaitAsync = (
  a: Int32Array,
  index: number,
  value: number,
) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsyncOf = (): WaitAsync | undefined => {
  const w = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;
  return typeof w === 'function' ? w.bind(Atomics) : undefined;
};

/**
 * Chromium 87–90 have an Atomics.waitAsync whose promises a notify from another thread may never settle (Chromium issue
 * 1167541; Emscripten polyfills it below 91): a lane call there could wait for its deadline.
 */
function faultyWaitAsync(): boolean {
  const ua = (globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent ?? '';
  const chromium = /Chrom(?:e|ium)\/(\d+)\./.exec(ua);
  return chromium !== null && Number(chromium[1]) < 91;
}

/**
 * Whether this context can serve a lane: SharedArrayBuffer (a cross-origin isolated page or worker) that may be sent
 * (structured clone refuses it where the context is not isolated, as postMessage would) and a working Atomics.waitAsync.
 */
export function laneSupported(): boolean {
  if (
    typeof SharedArrayBuffer !== 'function' ||
    (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === false ||
    waitAsyncOf() === undefined ||
    faultyWaitAsync()
  )
    return false;
  try {
    if (typeof structuredClone === 'function') structuredClone(new SharedArrayBuffer(8));
    return true;
  } catch {
    return false;
  }
}

/** A new lane of the given capacity (the page makes it and hands it to the worker with `connect`). */
export function createLane(words = LANE_WORDS, dataBytes = LANE_DATA_BYTES): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(HEADER_BYTES + words * 8 + dataBytes);
  const head = new Int32Array(sab, 0, 4);
  head[WORDS] = words;
  head[DATA_BYTES] = dataBytes;
  return sab;
}

/** Views of one lane. */
export class LaneView {
  readonly control: Int32Array;
  readonly words: Float64Array;
  readonly data: Uint8Array;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.control = new Int32Array(buffer, 0, 4);
    const words = this.control[WORDS]!;
    const bytes = this.control[DATA_BYTES]!;
    if (!(words > 0 && bytes >= 0 && HEADER_BYTES + words * 8 + bytes <= buffer.byteLength))
      throw new RangeError(`not a selfxit lane (${buffer.byteLength} bytes, ${words} words, ${bytes} data bytes)`);
    this.words = new Float64Array(buffer, HEADER_BYTES, words);
    this.data = new Uint8Array(buffer, HEADER_BYTES + words * 8, bytes);
  }

  get state(): number {
    return Atomics.load(this.control, CONTROL);
  }

  get callId(): number {
    return Atomics.load(this.control, CALL_ID);
  }

  /** Sets the control word and wakes the other side. */
  set(state: LaneState): void {
    Atomics.store(this.control, CONTROL, state);
    Atomics.notify(this.control, CONTROL);
  }

  /**
   * Sets `to` only if the word is `from` now, and wakes the other side unless `wake` is false (the page's return to
   * IDLE: the worker waits for REQUEST, which wakes it); returns whether it did.
   */
  swap(from: LaneState, to: LaneState, wake = true): boolean {
    if (Atomics.compareExchange(this.control, CONTROL, from, to) !== from) return false;
    if (wake) Atomics.notify(this.control, CONTROL);
    return true;
  }

  /**
   * Resolves with the control word once it is one of `wanted` (at once when it already is). Waits with
   * Atomics.waitAsync on the value it read, so a change between the read and the wait is never missed.
   */
  async until(wanted: readonly number[]): Promise<number> {
    const waitAsync = waitAsyncOf();
    if (!waitAsync) throw new Error('Atomics.waitAsync is not available');
    for (;;) {
      const now = Atomics.load(this.control, CONTROL);
      if (wanted.includes(now)) return now;
      const w = waitAsync(this.control, CONTROL, now);
      if (w.async) await w.value;
    }
  }
}

const align4 = (n: number): number => (n + 3) & ~3;

/** Words of a request's header: flags, thresholds, and five per input. */
const requestWords = (r: ClassifyRequest): number => 3 + r.thresholds.length + 5 * r.inputs.length;

/**
 * Whether `request` can go by a lane of `view`'s capacity: tensors and pixels only (bitmaps and blobs cross by
 * message), and they fit.
 */
export function fitsRequest(view: LaneView, request: ClassifyRequest): boolean {
  if (request.inputs.length === 0 || requestWords(request) > view.words.length) return false;
  let bytes = 0;
  for (const w of request.inputs) {
    if (w.kind !== 'tensor' && w.kind !== 'pixels') return false;
    bytes = align4(bytes) + w.data.byteLength;
  }
  return bytes <= view.data.length;
}

/** Writes call `id`'s request (copies of its inputs) into the lane; the caller checked {@link fitsRequest}. */
export function writeRequest(view: LaneView, id: number, request: ClassifyRequest): void {
  const w = view.words;
  let i = 0;
  w[i++] = (request.probabilities ? 1 : 0) | (request.profile ? 2 : 0);
  w[i++] = request.thresholds.length;
  for (const t of request.thresholds) w[i++] = t;
  w[i++] = request.inputs.length;
  let offset = 0;
  for (const input of request.inputs) {
    if (input.kind !== 'tensor' && input.kind !== 'pixels') throw new RangeError(`a ${input.kind} input has no lane`);
    offset = align4(offset);
    const bytes = new Uint8Array(input.data.buffer, input.data.byteOffset, input.data.byteLength);
    view.data.set(bytes, offset);
    w[i++] = input.kind === 'tensor' ? KIND_TENSOR : KIND_PIXELS;
    w[i++] = input.kind === 'pixels' ? input.width : 0;
    w[i++] = input.kind === 'pixels' ? input.height : 0;
    w[i++] = offset;
    w[i++] = input.data.length;
    offset += bytes.length;
  }
  Atomics.store(view.control, CALL_ID, id);
}

/** Reads the request in the lane, its inputs copied out (the runtime may keep them past the call). */
export function readRequest(view: LaneView): { readonly id: number; readonly request: ClassifyRequest } {
  const w = view.words;
  let i = 0;
  const flags = w[i++]!;
  const thresholds: number[] = [];
  for (let n = w[i++]!; n > 0; n--) thresholds.push(w[i++]!);
  const inputs: WireInput[] = [];
  for (let n = w[i++]!; n > 0; n--) {
    const kind = w[i++]!;
    const width = w[i++]!;
    const height = w[i++]!;
    const offset = w[i++]!;
    const length = w[i++]!;
    const at = view.data.byteOffset + offset;
    if (kind === KIND_TENSOR) {
      const data = new Float32Array(length);
      data.set(new Float32Array(view.buffer, at, length));
      inputs.push({ kind: 'tensor', data });
    } else {
      const data = new Uint8ClampedArray(length);
      data.set(new Uint8ClampedArray(view.buffer, at, length));
      inputs.push({ kind: 'pixels', width, height, data });
    }
  }
  const request: ClassifyRequest = {
    inputs,
    thresholds,
    probabilities: (flags & 1) !== 0,
    ...((flags & 2) !== 0 ? { profile: true } : {}),
  };
  return { id: view.callId, request };
}

/** Words an answer of `results` takes. */
function answerWords(results: readonly WireResult[]): number {
  let n = 2 + PROFILE_KEYS.length;
  for (const r of results) n += 6 + r.stages.length + (r.probabilities?.length ?? 0);
  return n;
}

/** Writes the answer into the lane; false (nothing to rely on written) when it does not fit. */
export function writeAnswer(view: LaneView, results: readonly WireResult[]): boolean {
  if (answerWords(results) > view.words.length) return false;
  const w = view.words;
  let i = 0;
  w[i++] = results.length;
  const profile = results[0]?.profile;
  w[i++] = profile ? 1 : 0;
  for (const k of PROFILE_KEYS) w[i++] = profile?.[k] ?? NaN;
  for (const r of results) {
    w[i++] = r.index;
    w[i++] = r.confidence;
    w[i++] = r.exit;
    w[i++] = r.totalMs;
    w[i++] = r.stages.length;
    for (const s of r.stages) w[i++] = s;
    const p = r.probabilities;
    w[i++] = p ? p.length : -1;
    if (p) {
      w.set(p, i);
      i += p.length;
    }
  }
  return true;
}

/** Reads the answer in the lane (one profile object shared by the results, as the worker made it). */
export function readAnswer(view: LaneView): WireResult[] {
  const w = view.words;
  let i = 0;
  const n = w[i++]!;
  const hasProfile = w[i++] === 1;
  let profile: Record<string, number> | undefined;
  if (hasProfile) profile = {};
  for (const k of PROFILE_KEYS) {
    const v = w[i++]!;
    if (profile && !Number.isNaN(v)) profile[k] = v;
  }
  const results: WireResult[] = [];
  for (let r = 0; r < n; r++) {
    const index = w[i++]!;
    const confidence = w[i++]!;
    const exit = w[i++]!;
    const totalMs = w[i++]!;
    const stages: number[] = [];
    for (let s = w[i++]!; s > 0; s--) stages.push(w[i++]!);
    const np = w[i++]!;
    const result: { -readonly [K in keyof WireResult]: WireResult[K] } = { index, confidence, exit, stages, totalMs };
    if (np >= 0) {
      result.probabilities = Float32Array.from(w.subarray(i, i + np));
      i += np;
    }
    if (profile) result.profile = profile as unknown as CallProfile;
    results.push(result);
  }
  return results;
}

// The key on-device learning recognises an exact repeat of an input by: a 52-bit hash of its preprocessed tensor (the
// float32 bits the model runs on; the same pixels preprocess to the same bits). The reservoir stores an input once
// (reservoir.ts): a copy in another fold would be judged by a head that trained on its twin, and the fit's out-of-fold
// agreement would read high (prepare drops exact copies of its samples for the same reason, calibrate/samples.ts).
// Two 32-bit multiply-xor lanes over the words in one pass (even words in one, odd in the other), mixed at the end:
// measured 2.1-2.3 µs for a 32×32×3 input and 0.11-0.14 ms for a 224×224×3 one on the shared 2-core dev machine under
// load (load average ~9; not measured idle), paid only for inputs offered to the reservoir, each of which costs a
// full-model run (CIFAR ResNet-56: 5.3 ms for one row). Inputs that differ only in even (or only in odd) words share a
// key with a chance of about 2^-32; a shared key only drops a sample.

/** Final avalanche of a 32-bit lane (murmur3's fmix32). */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * The key of `length` float32 values of `data` from `offset` (one preprocessed input): an integer in [0, 2^52), equal
 * for equal bits, different for inputs that differ in one word.
 */
export function inputKey(data: Float32Array, offset: number, length: number): number {
  const w = new Int32Array(data.buffer, data.byteOffset + 4 * offset, length);
  let a = 0x811c9dc5 ^ length;
  let b = 0x2545f491;
  // even words into one lane, odd into the other (independent chains: twice the throughput of both lanes on every
  // word); each step a bijection of its lane for a given word, so inputs that differ in one word always differ
  const even = length & ~1;
  for (let i = 0; i < even; i += 2) {
    a = Math.imul(a ^ w[i]!, 0x01000193);
    b = Math.imul(b ^ w[i + 1]!, 0x5bd1e995);
  }
  if (even < length) a = Math.imul(a ^ w[even]!, 0x01000193);
  return fmix(a) * 2 ** 20 + (fmix(b ^ length) >>> 12);
}

/** The key of each of `rows` inputs of `size` floats in `data`. */
export function inputKeys(data: Float32Array, rows: number, size: number): Float64Array {
  const keys = new Float64Array(rows);
  for (let r = 0; r < rows; r++) keys[r] = inputKey(data, r * size, size);
  return keys;
}

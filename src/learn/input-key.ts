// The key on-device learning recognises an exact repeat of an input by: a 52-bit hash of its preprocessed tensor (the
// float32 bits the model runs on; the same pixels preprocess to the same bits). The reservoir stores an input once
// (reservoir.ts): a copy in another fold would be judged by a head that trained on its twin, and the fit's out-of-fold
// agreement would read high (prepare drops exact copies of its samples for the same reason, calibrate/samples.ts).
// Two 32-bit multiply-xor lanes over the words in one pass, mixed at the end: ~1.3 ns a word on V8 (a 32×32×3 input
// ~4 µs, a 224×224×3 one ~0.2 ms), paid only for inputs offered to the reservoir, each of which costs a full-model run.

/** Final avalanche of a 32-bit lane (murmur3's fmix32). */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * The key of `length` float32 values of `data` from `offset` (one preprocessed input): an integer in [0, 2^52), equal
 * for equal bits; two different inputs share one with a chance of about 2^-52.
 */
export function inputKey(data: Float32Array, offset: number, length: number): number {
  const w = new Int32Array(data.buffer, data.byteOffset + 4 * offset, length);
  let a = 0x811c9dc5 ^ length;
  let b = 0x2545f491;
  for (let i = 0; i < length; i++) {
    // each step a bijection of each lane for a given word: inputs that differ in one word always differ in `a`
    const x = w[i]!;
    a = Math.imul(a ^ x, 0x01000193);
    b = Math.imul(b ^ (b >>> 15) ^ x, 0x5bd1e995);
  }
  return fmix(a) * 2 ** 20 + (fmix(b ^ length) >>> 12);
}

/** The key of each of `rows` inputs of `size` floats in `data`. */
export function inputKeys(data: Float32Array, rows: number, size: number): Float64Array {
  const keys = new Float64Array(rows);
  for (let r = 0; r < rows; r++) keys[r] = inputKey(data, r * size, size);
  return keys;
}

// The key on-device learning recognises an exact repeat of an input by: a 52-bit hash of its preprocessed tensor (the
// float32 bits the model runs on; the same pixels preprocess to the same bits). The reservoir stores an input once
// (reservoir.ts): a copy in another fold would be judged by a head that trained on its twin, and the fit's out-of-fold
// agreement would read high (prepare drops exact copies of its samples for the same reason, calibrate/samples.ts).
// Two murmur3 lanes over the words in one pass (even words in one, odd in the other), mixed at the end: each word is
// mixed (multiply, rotate, multiply) before it enters its lane, and the lane rotated after, so that a change in a
// word's top bit (a sign flip) reaches every bit (a plain multiply-xor keeps it in bit 31, where two such flips cancel:
// x and -x shared a key). Measured: see docs/API.md (learning); paid only for inputs offered to the reservoir, each of
// which costs a full-model run (CIFAR ResNet-56: 5.3 ms for one row). A shared key only drops a sample.

/** Final avalanche of a 32-bit lane (murmur3's fmix32). */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** One word into a lane (murmur3's body: the word mixed, then the lane rotated and stepped). */
function step(h: number, word: number): number {
  let k = Math.imul(word, 0xcc9e2d51);
  k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
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
  // word); each step a bijection of its lane for a given word (and of the word for a given lane), so inputs that
  // differ in one word always differ
  const even = length & ~1;
  for (let i = 0; i < even; i += 2) {
    a = step(a, w[i]!);
    b = step(b, w[i + 1]!);
  }
  if (even < length) a = step(a, w[even]!);
  return fmix(a ^ length) * 2 ** 20 + (fmix(b ^ length) >>> 12);
}

/** The key of each of `rows` inputs of `size` floats in `data`. */
export function inputKeys(data: Float32Array, rows: number, size: number): Float64Array {
  const keys = new Float64Array(rows);
  for (let r = 0; r < rows; r++) keys[r] = inputKey(data, r * size, size);
  return keys;
}

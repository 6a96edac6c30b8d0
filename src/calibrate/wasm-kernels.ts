// Matrix kernels of head training, as a tiny WebAssembly SIMD module assembled here from its opcodes (no toolchain,
// no download; the same bytes run in Node and in a browser worker), with a plain-JS twin of identical semantics
// used where WebAssembly SIMD is missing and as the reference in tests.
//
// All matrices live in one linear memory (`KernelMemory.f32`), addressed by float index. Two kernels:
//  - gemm: C[M, N] += A[M, K] · B[K, N], row-major with leading dimensions; M % 4 == 0 and N % 8 == 0
//    (callers pad), a 4×8 register-blocked microkernel (eight f32x4 accumulators); gemmTN the same with A
//    stored transposed (weight gradients Xᵀ·G without a transpose).
//  - adamw: one AdamW step over `count` (% 4 == 0) parameters with their gradient and moments.

/** A float32 workspace with the two kernels. Offsets and sizes are in floats; views change when memory grows. */
export interface KernelMemory {
  /** 'wasm-simd' or 'js'. */
  readonly backend: 'wasm-simd' | 'js';
  /** The whole workspace (re-read after `reserve`: growing replaces the buffer). */
  readonly f32: Float32Array;
  /** Makes room for `floats` floats from offset 0 (existing contents kept). */
  reserve(floats: number): void;
  /** C[M,N] += A[M,K]·B[K,N] (row-major, leading dimensions lda/ldb/ldc); needs M % 4 == 0, N % 8 == 0. */
  readonly gemm: Gemm;
  /** C[M,N] += Aᵀ·B with A stored `[K, lda]` (A[i, k] at a + k·lda + i); same constraints. */
  readonly gemmTN: Gemm;
  /**
   * AdamW over `count` (% 4 == 0) floats: m ← b1·m + (1−b1)·g; v ← b2·v + (1−b2)·g²;
   * w ← w − lr·(m·c1)/(√(v·c2) + eps) − decay·w.
   */
  adamw(w: number, g: number, m: number, v: number, count: number, h: AdamStep): void;
}

/** `(M, N, K, a, lda, b, ldb, c, ldc)`: float offsets a/b/c into the workspace, leading dimensions in floats. */
export type Gemm = (
  m: number,
  n: number,
  k: number,
  a: number,
  lda: number,
  b: number,
  ldb: number,
  c: number,
  ldc: number,
) => void;

/** Scalars of one AdamW step: `c1`, `c2` the bias corrections 1/(1−βᵗ); `decay` = lr·weight decay. */
export interface AdamStep {
  readonly lr: number;
  readonly b1: number;
  readonly b2: number;
  readonly c1: number;
  readonly c2: number;
  readonly eps: number;
  readonly decay: number;
}

// ---------------------------------------------------------------- a minimal assembler

function uleb(v: number): number[] {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}
function sleb(v: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}
const str = (s: string): number[] => [...uleb(s.length), ...Array.from(s, (ch) => ch.charCodeAt(0))];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];

const I32 = 0x7f;
const F32 = 0x7d;
const V128 = 0x7b;
const get = (i: number): number[] => [0x20, ...uleb(i)];
const set = (i: number): number[] => [0x21, ...uleb(i)];
const tee = (i: number): number[] => [0x22, ...uleb(i)];
const i32c = (v: number): number[] => [0x41, ...sleb(v)];
const I32_ADD = [0x6a];
const I32_SUB = [0x6b];
const I32_MUL = [0x6c];
const I32_SHL = [0x74];
const I32_LT_S = [0x48];
const simd = (op: number): number[] => [0xfd, ...uleb(op)];
const f32load = (off = 0): number[] => [0x2a, 2, ...uleb(off)];
const v128load = (off = 0): number[] => [...simd(0x00), 0, ...uleb(off)];
const v128store = (off = 0): number[] => [...simd(0x0b), 0, ...uleb(off)];
const V128_ZERO = [...simd(0x0c), ...new Array<number>(16).fill(0)];
const F32X4_SPLAT = simd(0x13);
const F32X4_ADD = simd(0xe4);
const F32X4_SUB = simd(0xe5);
const F32X4_MUL = simd(0xe6);
const F32X4_DIV = simd(0xe7);
const F32X4_SQRT = simd(0xe3);
const LOOP = [0x03, 0x40];
const END = [0x0b];
const brIf = (depth: number): number[] => [0x0d, ...uleb(depth)];
/** `local[i] += delta` (i32). */
const bump = (i: number, delta: number[]): number[] => [...get(i), ...delta, ...I32_ADD, ...set(i)];
/** Byte address `base + index·4` from locals. */
const addr4 = (base: number, index: number[]): number[] => [...get(base), ...index, ...i32c(2), ...I32_SHL, ...I32_ADD];

/**
 * gemm(M, N, K, a, lda, b, ldb, c, ldc): byte pointers a/b/c, leading dimensions in floats. `transA`: A is stored
 * transposed ([K, lda] row-major, A[i, k] at a[k·lda + i]), so one f32x4 load brings four rows' values.
 */
function gemmBody(transA: boolean): number[] {
  // params 0..8: M N K a lda b ldb c ldc; i32 locals 9..: i j kk pa0 pa1 pa2 pa3 pb pc ldaB ldbB ldcB;
  // v128 locals: acc0..acc7, b0, b1, s.
  const [M, N, K, A, LDA, B, LDB, C, LDC] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [I, J, KK, PA0, PA1, PA2, PA3, PB, PC, LDAB, LDBB, LDCB] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20];
  const ACC = [21, 22, 23, 24, 25, 26, 27, 28];
  const [B0, B1, S, AV] = [29, 30, 31, 32];
  const code: number[] = [];
  const p = (...xs: number[][]): void => {
    for (const x of xs) code.push(...x);
  };
  p(
    get(LDA),
    i32c(2),
    I32_SHL,
    set(LDAB),
    get(LDB),
    i32c(2),
    I32_SHL,
    set(LDBB),
    get(LDC),
    i32c(2),
    I32_SHL,
    set(LDCB),
  );
  p(i32c(0), set(I), LOOP); // rows, 4 at a time
  p(i32c(0), set(J), LOOP); // columns, 8 at a time
  for (const acc of ACC) p(V128_ZERO, set(acc));
  if (transA) p(addr4(A, get(I)), set(PA0));
  else {
    p(addr4(A, [...get(I), ...get(LDA), ...I32_MUL]), tee(PA0), get(LDAB), I32_ADD, tee(PA1));
    p(get(LDAB), I32_ADD, tee(PA2), get(LDAB), I32_ADD, set(PA3));
  }
  p(addr4(B, get(J)), set(PB), get(K), set(KK));
  p(LOOP); // the reduction
  p(get(PB), v128load(0), set(B0), get(PB), v128load(16), set(B1));
  if (transA) p(get(PA0), v128load(), set(AV));
  [PA0, PA1, PA2, PA3].forEach((pa, r) => {
    if (transA) p(get(AV), get(AV), broadcastLane(r), set(S));
    else p(get(pa), f32load(), F32X4_SPLAT, set(S));
    p(get(ACC[2 * r]!), get(S), get(B0), F32X4_MUL, F32X4_ADD, set(ACC[2 * r]!));
    p(get(ACC[2 * r + 1]!), get(S), get(B1), F32X4_MUL, F32X4_ADD, set(ACC[2 * r + 1]!));
  });
  if (transA) p(bump(PA0, get(LDAB)), bump(PB, get(LDBB)));
  else p(bump(PA0, i32c(4)), bump(PA1, i32c(4)), bump(PA2, i32c(4)), bump(PA3, i32c(4)), bump(PB, get(LDBB)));
  p(get(KK), i32c(1), I32_SUB, tee(KK), brIf(0), END);
  // C += accumulators
  p(addr4(C, [...get(I), ...get(LDC), ...I32_MUL, ...get(J), ...I32_ADD]), set(PC));
  for (let r = 0; r < 4; r++) {
    for (let h = 0; h < 2; h++) {
      p(get(PC), get(PC), v128load(16 * h), get(ACC[2 * r + h]!), F32X4_ADD, v128store(16 * h));
    }
    p(bump(PC, get(LDCB)));
  }
  p(bump(J, i32c(8)), get(J), get(N), I32_LT_S, brIf(0), END);
  p(bump(I, i32c(4)), get(I), get(M), I32_LT_S, brIf(0), END);
  const locals = vec([
    [...uleb(12), I32],
    [...uleb(12), V128],
  ]);
  return [...locals, ...code, ...END];
}

/** i8x16.shuffle of (v, v) that broadcasts f32 lane `l` to all four lanes. */
const broadcastLane = (l: number): number[] => [
  ...simd(0x0d),
  ...Array.from({ length: 16 }, (_, i) => 4 * l + (i % 4)),
];

/** adamw(w, g, m, v, count, lr, b1, b2, c1, c2, eps, decay): byte pointers, count % 4 == 0. */
function adamBody(): number[] {
  const [W, G, MM, VV, COUNT, LR, B1, B2, C1, C2, EPS, DECAY] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const [OFF, END_] = [12, 13];
  const [VLR, VB1, VB1C, VB2, VB2C, VC1, VC2, VEPS, VDEC, GV, MV, VV2, WV] = [
    14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
  ];
  const code: number[] = [];
  const p = (...xs: number[][]): void => {
    for (const x of xs) code.push(...x);
  };
  const splat = (src: number[], dst: number): void => p(src, F32X4_SPLAT, set(dst));
  splat(get(LR), VLR);
  splat(get(B1), VB1);
  splat([0x43, ...new Uint8Array(new Float32Array([1]).buffer), ...get(B1), 0x93], VB1C); // 1 − b1
  splat(get(B2), VB2);
  splat([0x43, ...new Uint8Array(new Float32Array([1]).buffer), ...get(B2), 0x93], VB2C); // 1 − b2
  splat(get(C1), VC1);
  splat(get(C2), VC2);
  splat(get(EPS), VEPS);
  splat(get(DECAY), VDEC);
  p(i32c(0), set(OFF), get(COUNT), i32c(2), I32_SHL, set(END_), LOOP);
  const at = (base: number): number[] => [...get(base), ...get(OFF), ...I32_ADD];
  p(at(G), v128load(), set(GV));
  // m = b1·m + (1−b1)·g
  p(at(MM), get(VB1), at(MM), v128load(), F32X4_MUL, get(VB1C), get(GV), F32X4_MUL, F32X4_ADD, tee(MV), v128store());
  // v = b2·v + (1−b2)·g·g
  p(at(VV), get(VB2), at(VV), v128load(), F32X4_MUL, get(VB2C), get(GV), get(GV), F32X4_MUL, F32X4_MUL, F32X4_ADD);
  p(tee(VV2), v128store());
  // w = w − lr·(m·c1)/(√(v·c2) + eps) − decay·w
  p(at(W), v128load(), set(WV), at(W), get(WV));
  p(get(VLR), get(MV), get(VC1), F32X4_MUL, F32X4_MUL);
  p(get(VV2), get(VC2), F32X4_MUL, F32X4_SQRT, get(VEPS), F32X4_ADD, F32X4_DIV, F32X4_SUB);
  p(get(VDEC), get(WV), F32X4_MUL, F32X4_SUB, v128store());
  p(bump(OFF, i32c(16)), get(OFF), get(END_), I32_LT_S, brIf(0), END);
  const locals = vec([
    [...uleb(2), I32],
    [...uleb(13), V128],
  ]);
  return [...locals, ...code, ...END];
}

function moduleBytes(): Uint8Array<ArrayBuffer> {
  const gemmType = [0x60, ...vec(new Array<number[]>(9).fill([I32])), 0];
  const adamType = [0x60, ...vec([...new Array<number[]>(5).fill([I32]), ...new Array<number[]>(7).fill([F32])]), 0];
  const body = (b: number[]): number[] => [...uleb(b.length), ...b];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec([gemmType, adamType])),
    ...section(2, vec([[...str('env'), ...str('memory'), 0x02, 0x00, ...uleb(1)]])),
    ...section(3, vec([uleb(0), uleb(1), uleb(0)])),
    ...section(
      7,
      vec([
        [...str('gemm'), 0x00, ...uleb(0)],
        [...str('adamw'), 0x00, ...uleb(1)],
        [...str('gemmTN'), 0x00, ...uleb(2)],
      ]),
    ),
    ...section(10, vec([body(gemmBody(false)), body(adamBody()), body(gemmBody(true))])),
  ]);
}

// ---------------------------------------------------------------- JS twin

/**
 * Plain-JS gemm with the kernels' semantics (float32 storage): C[M,N] += A·B with A[i, k] at
 * `f[a + i·aRow + k·aCol]` (gemm: aRow = lda, aCol = 1; gemmTN: aRow = 1, aCol = lda).
 */
export function gemmJs(
  f: Float32Array,
  m: number,
  n: number,
  k: number,
  a: number,
  aRow: number,
  aCol: number,
  b: number,
  ldb: number,
  c: number,
  ldc: number,
): void {
  for (let i = 0; i < m; i++) {
    const ci = c + i * ldc;
    for (let kk = 0; kk < k; kk++) {
      const s = f[a + i * aRow + kk * aCol]!;
      if (s === 0) continue;
      const bk = b + kk * ldb;
      for (let j = 0; j < n; j++) f[ci + j]! += s * f[bk + j]!;
    }
  }
}

function adamJs(f: Float32Array, w: number, g: number, m: number, v: number, count: number, h: AdamStep): void {
  for (let i = 0; i < count; i++) {
    const gi = f[g + i]!;
    const mi = h.b1 * f[m + i]! + (1 - h.b1) * gi;
    const vi = h.b2 * f[v + i]! + (1 - h.b2) * gi * gi;
    f[m + i] = mi;
    f[v + i] = vi;
    const wi = f[w + i]!;
    f[w + i] = wi - (h.lr * (mi * h.c1)) / (Math.sqrt(vi * h.c2) + h.eps) - h.decay * wi;
  }
}

class JsMemory implements KernelMemory {
  readonly backend = 'js' as const;
  f32 = new Float32Array(0);
  reserve(floats: number): void {
    if (floats <= this.f32.length) return;
    const next = new Float32Array(Math.max(floats, Math.ceil(this.f32.length * 1.5)));
    next.set(this.f32);
    this.f32 = next;
  }
  readonly gemm: Gemm = (m, n, k, a, lda, b, ldb, c, ldc) => gemmJs(this.f32, m, n, k, a, lda, 1, b, ldb, c, ldc);
  readonly gemmTN: Gemm = (m, n, k, a, lda, b, ldb, c, ldc) => gemmJs(this.f32, m, n, k, a, 1, lda, b, ldb, c, ldc);
  adamw(w: number, g: number, m: number, v: number, count: number, h: AdamStep): void {
    adamJs(this.f32, w, g, m, v, count, h);
  }
}

// ---------------------------------------------------------------- WebAssembly

type GemmFn = (...args: number[]) => void;

class WasmMemory implements KernelMemory {
  readonly backend = 'wasm-simd' as const;
  private readonly memory: WebAssembly.Memory;
  private readonly gemmFn: GemmFn;
  private readonly adamFn: GemmFn;
  private readonly gemmTNFn: GemmFn;
  private view: Float32Array;
  constructor(module: WebAssembly.Module) {
    this.memory = new WebAssembly.Memory({ initial: 1 });
    const inst = new WebAssembly.Instance(module, { env: { memory: this.memory } });
    this.gemmFn = inst.exports.gemm as GemmFn;
    this.adamFn = inst.exports.adamw as GemmFn;
    this.gemmTNFn = inst.exports.gemmTN as GemmFn;
    this.view = new Float32Array(this.memory.buffer);
  }
  get f32(): Float32Array {
    if (this.view.buffer !== this.memory.buffer) this.view = new Float32Array(this.memory.buffer);
    return this.view;
  }
  reserve(floats: number): void {
    const bytes = floats * 4;
    const have = this.memory.buffer.byteLength;
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / 65536));
  }
  readonly gemm: Gemm = (m, n, k, a, lda, b, ldb, c, ldc) => {
    if (m > 0 && n > 0 && k > 0) this.gemmFn(m, n, k, a * 4, lda, b * 4, ldb, c * 4, ldc);
  };
  readonly gemmTN: Gemm = (m, n, k, a, lda, b, ldb, c, ldc) => {
    if (m > 0 && n > 0 && k > 0) this.gemmTNFn(m, n, k, a * 4, lda, b * 4, ldb, c * 4, ldc);
  };
  adamw(w: number, g: number, m: number, v: number, count: number, h: AdamStep): void {
    if (count <= 0) return;
    this.adamFn(w * 4, g * 4, m * 4, v * 4, count, h.lr, h.b1, h.b2, h.c1, h.c2, h.eps, h.decay);
  }
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled SIMD module, or null where WebAssembly or its SIMD is unavailable. */
function wasmModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  compiled = null;
  try {
    if (typeof WebAssembly === 'object') {
      const bytes = moduleBytes();
      if (WebAssembly.validate(bytes)) compiled = new WebAssembly.Module(bytes);
    }
  } catch {
    compiled = null;
  }
  return compiled;
}

/**
 * A new kernel workspace: WebAssembly SIMD where available (Node ≥ 16.4, every current browser), else plain JS
 * (`backend` says which). `prefer: 'js'` forces the JS twin.
 */
export function createKernelMemory(prefer: 'auto' | 'js' = 'auto'): KernelMemory {
  const mod = prefer === 'auto' ? wasmModule() : null;
  return mod ? new WasmMemory(mod) : new JsMemory();
}

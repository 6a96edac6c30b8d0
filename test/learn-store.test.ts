// Where on-device learning keeps its state (runtime/learn-store.ts), over an in-memory stand-in for the object store
// idb-keyval drives: a round trip; entries of another schema or model discarded (deleted, never used); an unreadable
// entry a miss; a full quota or no IndexedDB turns persistence off with the reason, and never throws; an empty
// reservoir restored; two workers saving and loading one model at once never lose a whole state.
import type { UseStore } from 'idb-keyval';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { LearnerState } from '../src/learn/learner.js';
import type { InputSpec } from '../src/bundle/manifest.js';
import { analyzeModel } from '../src/graph/index.js';
import {
  BLOCK_BYTES,
  IdbLearnStore,
  LEARN_SCHEMA,
  LEGACY_NCHW_SCHEMA,
  legacyLearnSchema,
  ORPHAN_MS,
} from '../src/runtime/learn-store.js';
import { kerasInput, kerasNet } from './fixtures/nhwc-graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';

/**
 * An object store in memory: requests complete in a later task, as IndexedDB's do, and a transaction once its last
 * request did (requests made in a request's success callback keep it open). No isolation between transactions.
 */
function memoryStore(opts: { failPut?: string; failGet?: boolean; putsBeforeFail?: number } = {}): {
  use: UseStore;
  data: Map<string, unknown>;
} {
  const data = new Map<string, unknown>();
  let puts = 0;
  const use: UseStore = (_mode, callback) =>
    Promise.resolve().then(() => {
      const transaction = {} as { oncomplete?: () => void };
      let pending = 0;
      let done = false;
      const check = () =>
        setTimeout(() => {
          if (pending > 0 || done) return;
          done = true;
          transaction.oncomplete?.();
        }, 0);
      const request = (run: () => unknown) => {
        const req = {} as { result?: unknown; error?: unknown; onsuccess?: () => void; onerror?: () => void };
        pending++;
        setTimeout(() => {
          try {
            req.result = run();
            req.onsuccess?.call(req);
          } catch (e) {
            req.error = e;
            req.onerror?.call(req);
          }
          pending--;
          check();
        }, 0);
        return req;
      };
      check();
      return callback({
        transaction,
        get: (k: string) =>
          request(() => {
            if (opts.failGet) throw new DOMException('read failed', 'UnknownError');
            return structuredClone(data.get(k));
          }),
        put: (v: unknown, k: string) => {
          if (opts.failPut && puts++ >= (opts.putsBeforeFail ?? 0))
            throw new DOMException('The quota has been exceeded.', opts.failPut);
          data.set(k, structuredClone(v));
        },
        getAllKeys: () => request(() => [...data.keys()]),
        delete: (k: string) => void data.delete(k),
      } as unknown as IDBObjectStore);
    });
  return { use, data };
}

/** A reservoir of `n` rows: two cuts of 3 and 700 features, 2 classes (row i holds i everywhere, codes mod 256). */
function reservoir(n: number): LearnerState['reservoir'] {
  const fill = <T extends Uint8Array | Float32Array>(a: T, d: number): T => {
    for (let i = 0; i < a.length; i++) a[i] = Math.floor(i / d) % (a instanceof Uint8Array ? 256 : Infinity);
    return a;
  };
  return {
    seen: n + 5,
    size: n,
    repeats: 4,
    fresh: 3,
    features: [fill(new Uint8Array(n * 3), 3), fill(new Uint8Array(n * 700), 700)],
    ranges: [fill(new Float32Array(n * 2), 2), fill(new Float32Array(n * 2), 2).map((v) => v + 0.5)],
    teacher: fill(new Float32Array(n * 2), 2),
    keys: Float64Array.from({ length: n }, (_, i) => (i % 3 === 2 ? NaN : i * 2 ** 40 + 7)),
  };
}

const state = { fits: 2, verifying: 7, reservoir: reservoir(2) } as unknown as LearnerState;

/** Whether two states are equal, their typed arrays compared as bytes (toEqual is slow on millions of elements). */
function same(a: LearnerState | undefined, b: LearnerState): boolean {
  const bytes = (x: ArrayBufferView) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  const ra = a?.reservoir;
  const rb = b.reservoir;
  return (
    ra !== undefined &&
    ra.features.length === rb.features.length &&
    ra.features.every((f, i) => f instanceof Uint8Array && bytes(f).equals(bytes(rb.features[i]!))) &&
    ra.ranges.length === rb.ranges.length &&
    ra.ranges.every((f, i) => bytes(f).equals(bytes(rb.ranges[i]!))) &&
    bytes(ra.teacher).equals(bytes(rb.teacher)) &&
    ra.keys instanceof Float64Array &&
    bytes(ra.keys).equals(bytes(rb.keys)) &&
    JSON.stringify({ ...a, reservoir: { ...ra, features: 0, ranges: 0, teacher: 0, keys: 0 } }) ===
      JSON.stringify({ ...b, reservoir: { ...rb, features: 0, ranges: 0, teacher: 0, keys: 0 } })
  );
}

describe('IdbLearnStore', () => {
  it('round-trips the state per model hash; another schema or model is discarded, never used', async () => {
    const m = memoryStore();
    const s = new IdbLearnStore(() => m.use);
    await s.save('aaa', state);
    expect(s.enabled).toBe(true);
    expect(await s.load('aaa')).toEqual(state);
    expect(await s.load('bbb')).toBeUndefined();

    const entry = m.data.get('learn:aaa') as { schema: number; modelHash: string };
    expect(entry.schema).toBe(LEARN_SCHEMA);
    // an entry written by an older selfxit (schema 5: float16 reservoir rows): deleted with its blocks, never misread
    await s.save('aaa', state);
    m.data.set('learn:aaa', { ...(m.data.get('learn:aaa') as object), schema: LEARN_SCHEMA - 1 });
    expect(await s.load('aaa')).toBeUndefined();
    expect(m.data.size).toBe(0);
    // a block of float16 rows (Uint16Array, no ranges) under the current schema: the whole state is discarded
    await s.save('aaa', state);
    const bk = [...m.data.keys()].find((k) => k.startsWith('learn:aaa:block:'))!;
    const b = m.data.get(bk) as { rows: number; features: Uint8Array[]; teacher: Float32Array };
    m.data.set(bk, { rows: b.rows, features: b.features.map((f) => new Uint16Array(f)), teacher: b.teacher });
    expect(await s.load('aaa')).toBeUndefined();
    expect(m.data.size).toBe(0);
    await s.save('aaa', state);
    // an entry that names another model (or no state): deleted
    m.data.set('learn:aaa', { ...entry, modelHash: 'ccc' });
    expect(await s.load('aaa')).toBeUndefined();
    expect(m.data.has('learn:aaa')).toBe(false);
    m.data.set('learn:aaa', { ...entry, state: null });
    expect(await s.load('aaa')).toBeUndefined();
    expect(m.data.has('learn:aaa')).toBe(false);

    await s.save('aaa', state);
    await s.clear('aaa');
    expect(m.data.size).toBe(0);
    expect(s.enabled).toBe(true);
  });

  it('writes the reservoir in blocks of about BLOCK_BYTES, keeps only the last save, discards a state missing one', async () => {
    const m = memoryStore();
    const s = new IdbLearnStore(() => m.use);
    const rowBytes = 3 + 700 + 2 * 8 + 4 * 2;
    const n = Math.ceil((2.5 * BLOCK_BYTES) / rowBytes); // three blocks
    const big = { ...state, reservoir: reservoir(n) } as LearnerState;
    await s.save('aaa', big);
    const blocks = () => [...m.data.keys()].filter((k) => k.startsWith('learn:aaa:block:'));
    expect(blocks()).toHaveLength(3);
    for (const k of blocks()) {
      const b = m.data.get(k) as { features: Uint8Array[]; ranges: Float32Array[]; teacher: Float32Array };
      const sum = (a: readonly ArrayBufferView[]): number => a.reduce((t, f) => t + f.byteLength, 0);
      expect(sum(b.features) + sum(b.ranges) + b.teacher.byteLength).toBeLessThanOrEqual(BLOCK_BYTES);
    }
    expect(same(await s.load('aaa'), big)).toBe(true);
    // a second save replaces the first one's blocks; a smaller reservoir needs fewer
    await s.save('aaa', state);
    expect(blocks()).toHaveLength(1);
    expect(same(await s.load('aaa'), state)).toBe(true);
    expect(same(await s.load('aaa'), big)).toBe(false);
    await s.save('aaa', big);
    // a block lost (its save cleared meanwhile): the whole state is discarded, its entry and blocks deleted
    m.data.delete(blocks()[1]!);
    expect(await s.load('aaa')).toBeUndefined();
    expect(m.data.size).toBe(0);
  });

  it('an unreadable entry is a miss; a full quota or no IndexedDB turns persistence off and says why', async () => {
    const unreadable = memoryStore({ failGet: true });
    const r = new IdbLearnStore(() => unreadable.use);
    await r.save('aaa', state);
    expect(await r.load('aaa')).toBeUndefined();
    expect(r.enabled).toBe(true);

    const full = new IdbLearnStore(() => memoryStore({ failPut: 'QuotaExceededError' }).use);
    await full.save('aaa', state);
    expect(full.enabled).toBe(false);
    expect(full.reason).toMatch(/^storage quota exceeded/);
    await full.save('aaa', state); // never throws, writes nothing more
    expect(await full.load('aaa')).toBeUndefined();

    const other = new IdbLearnStore(() => memoryStore({ failPut: 'UnknownError' }).use);
    await other.save('aaa', state);
    expect(other.reason).toMatch(/^storage write failed/);

    const none = new IdbLearnStore(() => {
      throw new Error('IndexedDB is not available');
    });
    expect(await none.load('aaa')).toBeUndefined();
    expect(none.enabled).toBe(false);
    expect(none.reason).toMatch(/no storage: IndexedDB is not available/);
  });
});

describe('IdbLearnStore, an empty reservoir and two workers at once', () => {
  afterEach(() => vi.restoreAllMocks());
  /** A state of `n` rows whose counts and teacher rows depend on `seen` (two workers' states differ everywhere). */
  const withSeen = (n: number, seen: number) => {
    const r = reservoir(n);
    r.teacher.forEach((v, i) => (r.teacher[i] = v + seen));
    return { ...state, reservoir: { ...r, seen } } as unknown as LearnerState;
  };
  const blocks = (m: { data: Map<string, unknown> }) => [...m.data.keys()].filter((k) => k.includes(':block:')).sort();
  const named = (m: { data: Map<string, unknown> }) =>
    [...(m.data.get('learn:aaa') as { state: { reservoir: { blocks: string[] } } }).state.reservoir.blocks].sort();

  it('an empty reservoir (a drift restart) is stored with its cuts and restored, the rest of the state with it', async () => {
    const m = memoryStore();
    const s = new IdbLearnStore(() => m.use);
    const empty = { ...state, reservoir: reservoir(0) } as LearnerState;
    await s.save('aaa', empty);
    expect(blocks(m)).toEqual([]);
    const back = await s.load('aaa');
    expect(back?.reservoir.features.map((f) => f.length)).toEqual([0, 0]);
    expect(same(back, empty)).toBe(true);
  });

  it('two workers saving at once (same clock) leave one whole state and only its blocks', async () => {
    vi.spyOn(Date, 'now').mockReturnValue(1_000_000);
    const m = memoryStore();
    const [a, b] = [new IdbLearnStore(() => m.use), new IdbLearnStore(() => m.use)];
    const rowBytes = 3 + 700 + 2 * 8 + 4 * 2;
    const n = Math.ceil((2.5 * BLOCK_BYTES) / rowBytes);
    const [sa, sb] = [withSeen(n, n + 1), withSeen(2, n + 2)]; // three blocks, one
    await Promise.all([a.save('aaa', sa), b.save('aaa', sb)]);
    const got = await a.load('aaa');
    expect(same(got, sa) || same(got, sb)).toBe(true);
    expect(blocks(m)).toEqual(named(m));
  });

  it('a load while another worker replaces the state reads one whole state and deletes nothing valid', async () => {
    const m = memoryStore();
    const [a, b] = [new IdbLearnStore(() => m.use), new IdbLearnStore(() => m.use)];
    const rowBytes = 3 + 700 + 2 * 8 + 4 * 2;
    const n = Math.ceil((2.5 * BLOCK_BYTES) / rowBytes);
    const [sa, sb] = [withSeen(n, n + 1), withSeen(n, n + 2)];
    await a.save('aaa', sa);
    const saving = b.save('aaa', sb);
    const loads: Promise<LearnerState | undefined>[] = [];
    for (let i = 0; i < 12; i++) {
      loads.push(a.load('aaa'));
      await new Promise((r) => setTimeout(r, 0));
    }
    await saving;
    for (const got of await Promise.all(loads)) expect(same(got, sa) || same(got, sb)).toBe(true);
    expect(same(await a.load('aaa'), sb)).toBe(true);
    expect(blocks(m)).toEqual(named(m));
  });

  it('a broken entry is discarded without the blocks of another save; a save deletes blocks of saves cut short', async () => {
    const m = memoryStore();
    const s = new IdbLearnStore(() => m.use);
    await s.save('aaa', state);
    const lost = named(m)[0]!;
    m.data.delete(lost); // its save was cleared meanwhile (a reset in another tab)
    const now = Date.now();
    const writing = `learn:aaa:block:${now}-other1:0`; // another worker's save under way
    const cutShort = `learn:aaa:block:${now - ORPHAN_MS - 1}-gone1:0`; // a save whose worker ended
    m.data.set(writing, {}).set(cutShort, {});
    expect(await s.load('aaa')).toBeUndefined();
    expect([...m.data.keys()].sort()).toEqual([cutShort, writing].sort());
    await s.save('aaa', state);
    expect(blocks(m)).toEqual([...named(m), writing].sort());
    expect(same(await s.load('aaa'), state)).toBe(true);
  });
});

describe('IdbLearnStore: failed and hung writes, the input spec', () => {
  const rowBytes = 3 + 700 + 2 * 8 + 4 * 2;
  const big = { ...state, reservoir: reservoir(Math.ceil((2.5 * BLOCK_BYTES) / rowBytes)) } as LearnerState; // 3 blocks
  const blocks = (m: { data: Map<string, unknown> }) => [...m.data.keys()].filter((k) => k.includes(':block:'));

  it('a save failing on the quota midway deletes the blocks it wrote; blocks of saves cut short go before a write', async () => {
    const m = memoryStore({ failPut: 'QuotaExceededError', putsBeforeFail: 2 });
    const s = new IdbLearnStore(() => m.use);
    await s.save('aaa', big);
    expect(s.reason).toMatch(/^storage quota exceeded/);
    expect(blocks(m)).toEqual([]); // not left for an hour
    // a save cut short (its worker ended) an hour ago: swept before the next writes, which then fail on the quota
    const cutShort = `learn:aaa:block:${Date.now() - ORPHAN_MS - 1}-gone1:0`;
    const n = memoryStore({ failPut: 'QuotaExceededError' });
    n.data.set(cutShort, {});
    await new IdbLearnStore(() => n.use).save('aaa', state);
    expect(blocks(n)).toEqual([]);
  });

  it('a hung IndexedDB: load, save and clear give up after the timeout; learning goes on in memory, and says why', async () => {
    const hung: UseStore = () => new Promise(() => {});
    const s = new IdbLearnStore(() => hung, 50);
    const within = <T>(p: Promise<T>) =>
      Promise.race([p, new Promise<never>((_, no) => setTimeout(() => no(new Error('hung')), 2000))]);
    expect(await within(s.load('aaa'))).toBeUndefined();
    expect(s.enabled).toBe(false);
    expect(s.reason).toMatch(/timed out.*in memory/);
    await within(s.save('aaa', state));
    await within(s.clear('aaa'));
    // a write that hangs (reads fine): the save gives up, persistence off
    const m = memoryStore();
    const w = new IdbLearnStore(
      () => (mode, cb) => (mode === 'readwrite' ? new Promise(() => {}) : m.use(mode, cb)),
      50,
    );
    await within(w.save('aaa', state));
    expect(w.reason).toMatch(/^storage timed out/);
    // a reset then still asks for the entry's delete (IndexedDB runs it after the write it hangs on, should that
    // complete late: a reset never comes back)
    let writes = 0;
    const h = new IdbLearnStore(
      () => (mode, cb) => (mode === 'readwrite' ? (writes++, new Promise(() => {})) : m.use(mode, cb)),
      50,
    );
    await within(h.save('aaa', state));
    const before = writes;
    await within(h.clear('aaa'));
    expect(writes).toBe(before + 1);
  });

  it('a schema-9 state (before NHWC cuts were pooled as such) is restored for an all-NCHW model, discarded for an NHWC one', async () => {
    expect(LEGACY_NCHW_SCHEMA).toBe(9);
    for (const layout of ['NCHW', 'NHWC'] as const) {
      const { cuts } = await analyzeModel(kerasNet(layout), { ort: ortNode });
      const legacy = legacyLearnSchema(cuts);
      const m = memoryStore();
      const s = new IdbLearnStore(() => m.use);
      const spec = kerasInput(layout);
      await s.save('aaa', state, spec);
      m.data.set('learn:aaa', { ...(m.data.get('learn:aaa') as object), schema: LEGACY_NCHW_SCHEMA });
      if (layout === 'NCHW') {
        expect(legacy).toBe(LEGACY_NCHW_SCHEMA);
        expect(await s.load('aaa', spec, legacy)).toEqual(state);
        // the next save writes the current schema
        await s.save('aaa', state, spec);
        expect((m.data.get('learn:aaa') as { schema: number }).schema).toBe(LEARN_SCHEMA);
      } else {
        expect(legacy).toBeUndefined();
        expect(await s.load('aaa', spec, legacy)).toBeUndefined();
        expect(m.data.size).toBe(0); // discarded with its blocks
      }
    }
    // an older schema still is discarded whatever the model
    const m = memoryStore();
    const s = new IdbLearnStore(() => m.use);
    await s.save('aaa', state);
    m.data.set('learn:aaa', { ...(m.data.get('learn:aaa') as object), schema: LEGACY_NCHW_SCHEMA - 1 });
    expect(await s.load('aaa', undefined, LEGACY_NCHW_SCHEMA)).toBeUndefined();
    expect(m.data.size).toBe(0);
  });

  it('keeps the input spec: a state saved with another (normalisation, layout) is discarded; the target is in the state', async () => {
    const m = memoryStore();
    const s = new IdbLearnStore(() => m.use);
    const spec: InputSpec = { name: 'x', height: 28, width: 28, channels: 1, layout: 'NCHW', mean: [0.3], std: [0.35] };
    await s.save('aaa', { ...state, target: 0.98 }, spec);
    expect((await s.load('aaa', { ...spec }))?.target).toBe(0.98);
    expect(await s.load('aaa', { ...spec, mean: [0.5] })).toBeUndefined();
    expect(m.data.size).toBe(0); // discarded, never used
    await s.save('aaa', state, spec);
    expect(await s.load('aaa', { ...spec, layout: 'NHWC' })).toBeUndefined();
    expect(LEARN_SCHEMA).toBeGreaterThanOrEqual(9);
  });
});

// Where on-device learning keeps its state (runtime/learn-store.ts), over an in-memory stand-in for the object store
// idb-keyval drives: a round trip; entries of another schema or model discarded (deleted, never used); an unreadable
// entry a miss; a full quota or no IndexedDB turns persistence off with the reason, and never throws.
import type { UseStore } from 'idb-keyval';
import { describe, expect, it } from 'vitest';
import type { LearnerState } from '../src/learn/learner.js';
import { BLOCK_BYTES, IdbLearnStore, LEARN_SCHEMA } from '../src/runtime/learn-store.js';

/** An object store in memory: requests and transactions complete in a later task, as IndexedDB's do. */
function memoryStore(opts: { failPut?: string; failGet?: boolean } = {}): {
  use: UseStore;
  data: Map<string, unknown>;
} {
  const data = new Map<string, unknown>();
  const request = (run: () => unknown) => {
    const req = {} as { result?: unknown; error?: unknown; onsuccess?: () => void; onerror?: () => void };
    setTimeout(() => {
      try {
        req.result = run();
        req.onsuccess?.();
      } catch (e) {
        req.error = e;
        req.onerror?.();
      }
    }, 0);
    return req;
  };
  const use: UseStore = (_mode, callback) =>
    Promise.resolve().then(() => {
      const transaction = {} as { oncomplete?: () => void };
      setTimeout(() => transaction.oncomplete?.(), 0);
      return callback({
        transaction,
        get: (k: string) =>
          request(() => {
            if (opts.failGet) throw new DOMException('read failed', 'UnknownError');
            return structuredClone(data.get(k));
          }),
        put: (v: unknown, k: string) => {
          if (opts.failPut) throw new DOMException('The quota has been exceeded.', opts.failPut);
          data.set(k, structuredClone(v));
        },
        getAllKeys: () => request(() => [...data.keys()]),
        delete: (k: string) => void data.delete(k),
      } as unknown as IDBObjectStore);
    });
  return { use, data };
}

/** A reservoir of `n` rows: two cuts of 3 and 700 features, 2 classes (row i holds i everywhere). */
function reservoir(n: number): LearnerState['reservoir'] {
  const fill = <T extends Uint16Array | Float32Array>(a: T, d: number): T => {
    for (let i = 0; i < a.length; i++) a[i] = Math.floor(i / d);
    return a;
  };
  return {
    seen: n + 5,
    size: n,
    fresh: 3,
    features: [fill(new Uint16Array(n * 3), 3), fill(new Uint16Array(n * 700), 700)],
    teacher: fill(new Float32Array(n * 2), 2),
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
    ra.features.every((f, i) => bytes(f).equals(bytes(rb.features[i]!))) &&
    bytes(ra.teacher).equals(bytes(rb.teacher)) &&
    JSON.stringify({ ...a, reservoir: { ...ra, features: 0, teacher: 0 } }) ===
      JSON.stringify({ ...b, reservoir: { ...rb, features: 0, teacher: 0 } })
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
    // an entry written by an older selfxit (schema before the drift verification was kept): deleted
    m.data.set('learn:aaa', { ...entry, schema: LEARN_SCHEMA - 1 });
    expect(await s.load('aaa')).toBeUndefined();
    expect(m.data.has('learn:aaa')).toBe(false);
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
    const rowBytes = 2 * (3 + 700) + 4 * 2;
    const n = Math.ceil((2.5 * BLOCK_BYTES) / rowBytes); // three blocks
    const big = { ...state, reservoir: reservoir(n) } as LearnerState;
    await s.save('aaa', big);
    const blocks = () => [...m.data.keys()].filter((k) => k.startsWith('learn:aaa:block:'));
    expect(blocks()).toHaveLength(3);
    for (const k of blocks()) {
      const b = m.data.get(k) as { features: Uint16Array[]; teacher: Float32Array };
      expect(b.features.reduce((a, f) => a + f.byteLength, 0) + b.teacher.byteLength).toBeLessThanOrEqual(BLOCK_BYTES);
    }
    expect(same(await s.load('aaa'), big)).toBe(true);
    // a second save replaces the first one's blocks; a smaller reservoir needs fewer
    await s.save('aaa', state);
    expect(blocks()).toHaveLength(1);
    expect(same(await s.load('aaa'), state)).toBe(true);
    expect(same(await s.load('aaa'), big)).toBe(false);
    await s.save('aaa', big);
    // a block lost (or another save's): the whole state is discarded, every entry of the model deleted
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

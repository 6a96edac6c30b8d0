// Where on-device learning keeps its state (runtime/learn-store.ts), over an in-memory stand-in for the object store
// idb-keyval drives: a round trip; entries of another schema or model discarded (deleted, never used); an unreadable
// entry a miss; a full quota or no IndexedDB turns persistence off with the reason, and never throws.
import type { UseStore } from 'idb-keyval';
import { describe, expect, it } from 'vitest';
import type { LearnerState } from '../src/learn/learner.js';
import { IdbLearnStore, LEARN_SCHEMA } from '../src/runtime/learn-store.js';

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
        delete: (k: string) => void data.delete(k),
      } as unknown as IDBObjectStore);
    });
  return { use, data };
}

const state = {
  fits: 2,
  verifying: 7,
  reservoir: { teacher: new Float32Array([0.25, 0.75]) },
} as unknown as LearnerState;

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

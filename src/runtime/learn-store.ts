// Where on-device learning keeps its state across page loads: one IndexedDB entry per model hash (idb-keyval,
// database `selfxit-learn`), schema-versioned, its reservoir rows in blocks of ~4 MB beside it (each write clones one
// block, so a save of a 128 MiB reservoir never holds the worker for the whole clone). A read that fails or finds
// another schema or model, or a missing or malformed block, is a miss (that entry and its blocks are deleted); a write
// that fails (quota, private mode) turns persistence off, and learning goes on in memory. Every IndexedDB operation is
// waited for at most the bundle cache's timeout (cache.ts settleWithin): a hung IndexedDB turns persistence off too. An
// entry is kept with the input spec its features were computed with: another spec's is discarded. Two workers (tabs)
// may save and load one model at once: an entry and its blocks are read in one transaction, and a save deletes only the
// blocks of the entry it replaced, its own when it fails, and blocks of saves cut short once older than ORPHAN_MS.
import { createStore, del, delMany, get, keys, set, type UseStore } from 'idb-keyval';
import type { InputSpec } from '../bundle/manifest.js';
import type { CutPoint } from '../graph/analyze.js';
import type { LearnerState } from '../learn/learner.js';
import type { ReservoirState } from '../learn/reservoir.js';
import { CACHE_OP_TIMEOUT_MS, settleWithin, StorageTimeout } from './cache.js';

/** Operation timeouts a block write (~4 MB) may take before IndexedDB counts as hung (a slow disk is not a hang). */
const BLOCK_WRITE_TIMEOUTS = 3;

/** Bump when {@link LearnerState} or the stored layout changes shape: older entries are discarded, never used. */
export const LEARN_SCHEMA = 10; // 10: a channels-last model's cuts pooled over H and W (its older rows were pooled
// over the wrong axes, with dims that may match); 9: input keys of another hash (a sign flip reaches every bit; a schema 8 key would
// not match its input again), the fit backoff saved, the key index counted in the byte cap (fewer rows); 8: each
// row's input key (exact repeats are not stored again: older reservoirs may hold them); 7: the input spec stored (and
// the learner's target in the state); 6: reservoir rows as uint8 with a per-row range (was float16); 5: the
// reservoir's cut count stored (an empty one has no block); 4:
// reservoir rows in blocks; 3: the drift verification

/**
 * The schema before {@link LEARN_SCHEMA} 10, whose states are still read for a model with no channels-last cut: 10
 * changed only how NHWC cuts are pooled, so a schema-9 state of an all-NCHW model is a schema-10 one (the next save
 * writes 10). A model with an NHWC cut discards it (its rows were pooled over the wrong axes).
 */
export const LEGACY_NCHW_SCHEMA = 9;

/** The older schema a model's saved state may still be read at: {@link LEGACY_NCHW_SCHEMA} when no cut is NHWC. */
export function legacyLearnSchema(cuts: readonly Pick<CutPoint, 'layout'>[]): number | undefined {
  return cuts.some((c) => c.layout === 'NHWC') ? undefined : LEGACY_NCHW_SCHEMA;
}

/** Bytes of reservoir rows per stored block (about). */
export const BLOCK_BYTES = 4 << 20;

/** Blocks not named by the entry and older than this are left by a save cut short (the worker ended): deleted. */
export const ORPHAN_MS = 3_600_000;

/**
 * The reservoir as the main entry holds it: its counts, its number of cuts (an empty reservoir has no block to tell)
 * and the keys of its row blocks, in row order.
 */
type StoredReservoir = Omit<ReservoirState, 'features' | 'ranges' | 'teacher' | 'keys'> & {
  readonly cuts: number;
  readonly blocks: readonly string[];
};

/** One persisted entry. */
export interface StoredLearning {
  readonly schema: number;
  readonly modelHash: string;
  /** The input spec (normalisation, layout, size) the stored features were computed with. */
  readonly input?: InputSpec;
  readonly savedAt: number;
  readonly state: Omit<LearnerState, 'reservoir'> & { readonly reservoir: StoredReservoir };
}

/** Rows [from, from + rows) of a reservoir: features and their per-row ranges per cut, then the teacher and keys. */
interface StoredBlock {
  readonly rows: number;
  readonly features: readonly Uint8Array[];
  readonly ranges: readonly Float32Array[];
  readonly teacher: Float32Array;
  readonly keys: Float64Array;
}

/** What the learn runtime needs of a store. Never throws. */
export interface LearnStore {
  /** False once a write failed (or there is no storage); `reason` says why. */
  readonly enabled: boolean;
  readonly reason: string | undefined;
  /**
   * The state saved for `modelHash` with this `input` spec (one saved with another is discarded), at
   * {@link LEARN_SCHEMA} or, when given, at `legacySchema` (one this model reads as the current: see
   * {@link legacyLearnSchema}); any other schema is discarded.
   */
  load(modelHash: string, input?: InputSpec, legacySchema?: number): Promise<LearnerState | undefined>;
  save(modelHash: string, state: LearnerState, input?: InputSpec): Promise<void>;
  clear(modelHash: string): Promise<void>;
  /** Turns persistence off with `reason` (a save that failed before its write: the runtime's copy of the state). */
  disable(reason: string): void;
}

/** The IndexedDB store (database `selfxit-learn`, store `state`); throws where there is no IndexedDB. */
function openLearnStore(): UseStore {
  if (typeof indexedDB === 'undefined') throw new Error('IndexedDB is not available');
  return createStore('selfxit-learn', 'state');
}

const key = (modelHash: string): string => `learn:${modelHash}`;
/** Every block of `modelHash` starts with this (one save's blocks also share its save id). */
const blockPrefix = (modelHash: string): string => `learn:${modelHash}:block:`;

/** The block keys an entry names (none for an entry of another layout). */
function blocksOf(v: unknown, modelHash: string): string[] {
  const b = (v as Partial<StoredLearning> | undefined)?.state?.reservoir?.blocks;
  return Array.isArray(b)
    ? b.filter((k): k is string => typeof k === 'string' && k.startsWith(blockPrefix(modelHash)))
    : [];
}

/** When the save that wrote block `k` started (NaN when `k` is not a block key of this layout). */
const blockTime = (k: string, modelHash: string): number =>
  Number(k.slice(blockPrefix(modelHash).length).split('-')[0]);

/** The part of an input spec stored features depend on, comparable as text. */
const inputKey = (i: InputSpec | undefined): string =>
  JSON.stringify(i ? [i.name, i.height, i.width, i.channels, i.layout, i.mean, i.std] : null);

/**
 * The entry at `k` and the blocks it names, read in one transaction (so no save can replace them in between);
 * `touch()` after each request completed.
 */
function readEntry(
  store: UseStore,
  k: string,
  modelHash: string,
  touch: () => void,
): Promise<{ entry: unknown; blocks: unknown[] }> {
  return store(
    'readonly',
    (s) =>
      new Promise((resolve, reject) => {
        const r = s.get(k);
        r.onerror = () => reject(r.error);
        r.onsuccess = () => {
          touch();
          const names = blocksOf(r.result, modelHash);
          const blocks: unknown[] = [];
          let left = names.length;
          if (left === 0) resolve({ entry: r.result, blocks });
          names.forEach((n, i) => {
            const b = s.get(n);
            b.onerror = () => reject(b.error);
            b.onsuccess = () => {
              touch();
              blocks[i] = b.result;
              if (--left === 0) resolve({ entry: r.result, blocks });
            };
          });
        };
      }),
  );
}

/**
 * In one read-write transaction, the entry at `k` replaced by `next(entry)` (undefined: deleted; the entry itself:
 * kept); resolves with the entry it found (undefined: none, or unreadable) once the transaction completed.
 */
function replaceEntry(store: UseStore, k: string, next: (cur: unknown) => unknown): Promise<unknown> {
  return store(
    'readwrite',
    (s) =>
      new Promise((resolve, reject) => {
        const r = s.get(k);
        // an entry that cannot be read (not deserialisable) is replaced as if there were none
        r.onerror = (e) => {
          e?.preventDefault(); // the transaction goes on
          write(undefined);
        };
        r.onsuccess = () => write(r.result);
        const write = (cur: unknown): void => {
          try {
            const v = next(cur);
            s.transaction.oncomplete = () => resolve(cur);
            s.transaction.onabort = s.transaction.onerror = () => reject(s.transaction.error);
            if (v === undefined) s.delete(k);
            else if (v !== cur) s.put(v, k);
          } catch (e) {
            reject(e);
          }
        };
      }),
  );
}

/** The reservoir's rows cut into blocks of about {@link BLOCK_BYTES}. */
function toBlocks(r: ReservoirState): StoredBlock[] {
  const n = r.size;
  if (n === 0) return [];
  const dims = r.features.map((f) => f.length / n);
  const k = r.teacher.length / n;
  const rowBytes = dims.reduce((a, d) => a + d + 8, 0) + 4 * k + 8;
  const per = Math.max(1, Math.floor(BLOCK_BYTES / rowBytes));
  const blocks: StoredBlock[] = [];
  for (let at = 0; at < n; at += per) {
    const end = Math.min(n, at + per);
    blocks.push({
      rows: end - at,
      features: r.features.map((f, i) => f.subarray(at * dims[i]!, end * dims[i]!)),
      ranges: r.ranges.map((a) => a.subarray(2 * at, 2 * end)),
      teacher: r.teacher.subarray(at * k, end * k),
      keys: r.keys.subarray(at, end),
    });
  }
  return blocks;
}

/** The reservoir from its stored blocks; undefined when one is missing or does not fit the others. */
function fromBlocks(s: StoredReservoir, blocks: readonly unknown[]): ReservoirState | undefined {
  const ok = (b: unknown): b is StoredBlock =>
    typeof b === 'object' &&
    b !== null &&
    Number.isInteger((b as StoredBlock).rows) &&
    Array.isArray((b as StoredBlock).features) &&
    (b as StoredBlock).features.every((f) => f instanceof Uint8Array) &&
    Array.isArray((b as StoredBlock).ranges) &&
    (b as StoredBlock).ranges.every((a) => a instanceof Float32Array) &&
    (b as StoredBlock).teacher instanceof Float32Array &&
    (b as StoredBlock).keys instanceof Float64Array;
  const cuts = s.cuts;
  if (!Number.isInteger(cuts) || cuts < 0 || !blocks.every(ok)) return undefined;
  const n = blocks.reduce((a, b) => a + b.rows, 0);
  if (n !== s.size || !blocks.every((b) => b.features.length === cuts && b.ranges.length === cuts)) return undefined;
  const join = <T extends Uint8Array | Float32Array | Float64Array>(
    parts: readonly T[],
    make: (len: number) => T,
  ): T => {
    const out = make(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };
  const features = Array.from({ length: cuts }, (_, i) =>
    join(
      blocks.map((b) => b.features[i]!),
      (l) => new Uint8Array(l),
    ),
  );
  const ranges = Array.from({ length: cuts }, (_, i) =>
    join(
      blocks.map((b) => b.ranges[i]!),
      (l) => new Float32Array(l),
    ),
  );
  const teacher = join(
    blocks.map((b) => b.teacher),
    (l) => new Float32Array(l),
  );
  const keys = join(
    blocks.map((b) => b.keys),
    (l) => new Float64Array(l),
  );
  // the learner checks every length against its own cuts and classes (Learner.restore)
  return { seen: s.seen, size: s.size, repeats: s.repeats, fresh: s.fresh, features, ranges, teacher, keys };
}

/**
 * A learn store in IndexedDB; `openStore` is a test seam (e.g. a store whose writes fail), `timeoutMs` the longest one
 * operation (one request of a read) is waited for.
 */
export class IdbLearnStore implements LearnStore {
  private store: UseStore | undefined;
  reason: string | undefined;
  /** Set once an operation timed out: IndexedDB hangs, nothing more is asked of it (not even a clear). */
  private hung = false;
  /** Saves so far (part of each save's id). */
  private saves = 0;

  constructor(
    private readonly openStore: () => UseStore = openLearnStore,
    private readonly timeoutMs = CACHE_OP_TIMEOUT_MS,
  ) {}

  get enabled(): boolean {
    return this.reason === undefined;
  }

  private open(): UseStore | undefined {
    if (this.reason) return undefined;
    try {
      this.store ??= this.openStore();
      return this.store;
    } catch (e) {
      this.reason = `no storage: ${e instanceof Error ? e.message : String(e)}`;
      return undefined;
    }
  }

  /** One IndexedDB operation, within the timeout (cache.ts settleWithin); a timeout marks the storage hung. */
  private async op<T>(what: string, work: (touch: () => void) => Promise<T>, ms = this.timeoutMs): Promise<T> {
    try {
      return await settleWithin(ms, what, work);
    } catch (e) {
      if (e instanceof StorageTimeout) this.hung = true;
      throw e;
    }
  }

  async load(modelHash: string, input?: InputSpec, legacySchema?: number): Promise<LearnerState | undefined> {
    const store = this.open();
    if (!store) return undefined;
    try {
      const { entry, blocks } = await this.op('read', (touch) => readEntry(store, key(modelHash), modelHash, touch));
      const v = entry as Partial<StoredLearning> | undefined;
      if (v === undefined) return undefined;
      const r = v.state?.reservoir;
      if (
        (v.schema === LEARN_SCHEMA || (legacySchema !== undefined && v.schema === legacySchema)) &&
        v.modelHash === modelHash &&
        inputKey(v.input) === inputKey(input) &&
        typeof v.state === 'object' &&
        v.state !== null &&
        typeof r === 'object' &&
        r !== null &&
        Array.isArray(r.blocks) &&
        r.blocks.length === blocks.length // every name a block key of this model
      ) {
        const reservoir = fromBlocks(r, blocks);
        if (reservoir) return { ...v.state, reservoir };
      }
      // another schema, model or input spec, or a block missing (its save was cleared meanwhile): discarded, never
      // used; only this entry (if no other worker replaced it since) and its blocks, never another worker's
      const dropped = await this.op('write', () =>
        replaceEntry(store, key(modelHash), (cur) => (cur === undefined || sameEntry(cur, v) ? undefined : cur)),
      );
      if (dropped !== undefined && sameEntry(dropped, v)) {
        const names = blocksOf(v, modelHash);
        if (names.length > 0) await this.op('write', () => delMany(names, store));
      }
      return undefined;
    } catch (e) {
      // a hung IndexedDB: learning goes on in memory, and says why (as after a failed write)
      if (e instanceof StorageTimeout) this.disable(`storage timed out (${e.message}): learning goes on in memory`);
      return undefined;
    }
  }

  /**
   * Deletes the blocks of saves cut short (not named by the entry, older than {@link ORPHAN_MS}), then writes the
   * reservoir's blocks (one write each, under a new save id: its time and a random part, unique across workers), then
   * the main entry naming them (so a save cut short leaves the previous one whole), then deletes the blocks of the
   * entry it replaced; never the blocks another worker is writing. A save that fails deletes the blocks it wrote.
   */
  async save(modelHash: string, state: LearnerState, input?: InputSpec): Promise<void> {
    const store = this.open();
    if (!store) return;
    const savedAt = Date.now();
    const id = `${blockPrefix(modelHash)}${savedAt}-${Math.random().toString(36).slice(2, 10)}${++this.saves}:`;
    const names: string[] = [];
    try {
      await this.deleteOrphans(store, modelHash, savedAt);
      const { features, ranges: _a, teacher: _t, keys: _k, ...counts } = state.reservoir;
      for (const [i, b] of toBlocks(state.reservoir).entries()) {
        names.push(`${id}${i}`);
        // a block is ~4 MB: a slow disk gets BLOCK_WRITE_TIMEOUTS timeouts before IndexedDB counts as hung
        await this.op('write', () => set(`${id}${i}`, b, store), BLOCK_WRITE_TIMEOUTS * this.timeoutMs);
      }
      const entry: StoredLearning = {
        schema: LEARN_SCHEMA,
        modelHash,
        ...(input ? { input } : {}),
        savedAt,
        state: { ...state, reservoir: { ...counts, cuts: features.length, blocks: names } },
      };
      const replaced = await this.op('write', () => replaceEntry(store, key(modelHash), () => entry));
      const keep = new Set(names);
      const stale = blocksOf(replaced, modelHash).filter((k) => !keep.has(k));
      if (stale.length > 0) await this.op('write', () => delMany(stale, store));
    } catch (e) {
      const name = e instanceof Error ? e.name : '';
      const why =
        name === 'QuotaExceededError'
          ? 'storage quota exceeded'
          : e instanceof StorageTimeout
            ? 'storage timed out'
            : 'storage write failed';
      this.disable(`${why}: ${e instanceof Error ? e.message : String(e)}`);
      // its blocks are no use (unless the entry naming them was written: then they are that entry's)
      if (names.length > 0 && !this.hung) await this.deleteUnnamed(store, modelHash, names);
    }
  }

  /**
   * Deletes the blocks of saves cut short: not named by the entry, older than {@link ORPHAN_MS} (or of no layout).
   * Best effort (an unreadable entry leaves them), but a timeout throws: IndexedDB hangs.
   */
  private async deleteOrphans(store: UseStore, modelHash: string, now: number): Promise<void> {
    try {
      const named = new Set(blocksOf(await this.op('read', () => get(key(modelHash), store)), modelHash));
      const orphans = (await this.op('read', () => keys(store))).filter(
        (k): k is string =>
          typeof k === 'string' &&
          k.startsWith(blockPrefix(modelHash)) &&
          !named.has(k) &&
          !(now - blockTime(k, modelHash) < ORPHAN_MS), // NaN (another layout's key) too
      );
      if (orphans.length > 0) await this.op('write', () => delMany(orphans, store));
    } catch (e) {
      if (e instanceof StorageTimeout) throw e;
    }
  }

  /** Deletes `blocks` (a failed save's) unless the entry names them; never throws. */
  private async deleteUnnamed(store: UseStore, modelHash: string, blocks: readonly string[]): Promise<void> {
    try {
      const named = new Set(blocksOf(await this.op('read', () => get(key(modelHash), store)), modelHash));
      const mine = blocks.filter((k) => !named.has(k));
      if (mine.length > 0) await this.op('write', () => delMany(mine, store));
    } catch {
      // left for a later save's orphan sweep
    }
  }

  disable(reason: string): void {
    this.reason ??= reason;
  }

  /**
   * Deletes the entry of `modelHash` and every block of it (also once writes failed: a reset must not come back; when
   * IndexedDB hangs, the entry only: its blocks are orphans a later save sweeps).
   */
  async clear(modelHash: string): Promise<void> {
    const store = this.store ?? this.open();
    if (!store) return;
    if (this.hung) {
      // one delete of the entry, not waited for (a reset returns at once): IndexedDB runs it after the write it hangs
      // on, if that ever completes, so a reset never comes back with a save that completed late
      void this.op('write', () => del(key(modelHash), store)).catch(() => undefined);
      return;
    }
    try {
      const all = await this.op('read', () => keys(store));
      const blocks = all.filter((k) => typeof k === 'string' && k.startsWith(blockPrefix(modelHash)));
      await this.op('write', () => delMany([key(modelHash), ...blocks], store));
    } catch {
      if (!this.hung) await this.op('write', () => del(key(modelHash), store)).catch(() => undefined);
    }
  }
}

/** Whether two entries are one save's (the same time and blocks). */
function sameEntry(a: unknown, b: unknown): boolean {
  const id = (v: unknown) => {
    const e = v as Partial<StoredLearning> | undefined;
    return JSON.stringify([e?.savedAt, e?.state?.reservoir?.blocks]);
  };
  return id(a) === id(b);
}

/** No persistence (`learn.persist: false`, `cache: false`). */
export const noLearnStore: LearnStore = {
  enabled: false,
  reason: 'persistence is off',
  load: async () => undefined,
  save: async () => {},
  clear: async () => {},
  disable: () => {},
};

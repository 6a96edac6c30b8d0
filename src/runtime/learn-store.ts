// Where on-device learning keeps its state across page loads: one IndexedDB entry per model hash (idb-keyval,
// database `selfxit-learn`), schema-versioned. A read that fails or finds another schema or model is a miss (the
// entry is deleted); a write that fails (quota, private mode) turns persistence off, and learning goes on in memory.
import { createStore, del, get, set, type UseStore } from 'idb-keyval';
import type { LearnerState } from '../learn/learner.js';

/** Bump when {@link LearnerState} changes shape: older entries are discarded, never used. */
export const LEARN_SCHEMA = 3; // 3: the drift verification (audits left, confirmed drifts)

/** One persisted entry. */
export interface StoredLearning {
  readonly schema: number;
  readonly modelHash: string;
  readonly savedAt: number;
  readonly state: LearnerState;
}

/** What the learn runtime needs of a store. Never throws. */
export interface LearnStore {
  /** False once a write failed (or there is no storage); `reason` says why. */
  readonly enabled: boolean;
  readonly reason: string | undefined;
  load(modelHash: string): Promise<LearnerState | undefined>;
  save(modelHash: string, state: LearnerState): Promise<void>;
  clear(modelHash: string): Promise<void>;
}

/** The IndexedDB store (database `selfxit-learn`, store `state`); throws where there is no IndexedDB. */
function openLearnStore(): UseStore {
  if (typeof indexedDB === 'undefined') throw new Error('IndexedDB is not available');
  return createStore('selfxit-learn', 'state');
}

const key = (modelHash: string): string => `learn:${modelHash}`;

/** A learn store in IndexedDB; `openStore` is a test seam (e.g. a store whose writes fail). */
export class IdbLearnStore implements LearnStore {
  private store: UseStore | undefined;
  reason: string | undefined;

  constructor(private readonly openStore: () => UseStore = openLearnStore) {}

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

  async load(modelHash: string): Promise<LearnerState | undefined> {
    const store = this.open();
    if (!store) return undefined;
    try {
      const v = (await get(key(modelHash), store)) as Partial<StoredLearning> | undefined;
      if (v === undefined) return undefined;
      if (v.schema === LEARN_SCHEMA && v.modelHash === modelHash && typeof v.state === 'object' && v.state !== null)
        return v.state;
      await del(key(modelHash), store); // another schema or model: discarded, never used
      return undefined;
    } catch {
      return undefined;
    }
  }

  async save(modelHash: string, state: LearnerState): Promise<void> {
    const store = this.open();
    if (!store) return;
    const entry: StoredLearning = { schema: LEARN_SCHEMA, modelHash, savedAt: Date.now(), state };
    try {
      await set(key(modelHash), entry, store);
    } catch (e) {
      const name = e instanceof Error ? e.name : '';
      this.reason = `${name === 'QuotaExceededError' ? 'storage quota exceeded' : 'storage write failed'}: ${e instanceof Error ? e.message : String(e)}`;
    }
  }

  async clear(modelHash: string): Promise<void> {
    const store = this.open();
    if (store) await del(key(modelHash), store).catch(() => undefined);
  }
}

/** No persistence (`learn.persist: false`, `cache: false`). */
export const noLearnStore: LearnStore = {
  enabled: false,
  reason: 'persistence is off',
  load: async () => undefined,
  save: async () => {},
  clear: async () => {},
};

// The worker's local cache: manifests by URL, segment (and validation file) bytes by sha256 and device plans per
// manifest hash, backend, thread count and engine, compiled cascades per manifest hash, backend and prefix, live exit
// pruning's remembered state per manifest hash and backend, in IndexedDB (idb-keyval).
// A small swappable interface; a storage failure (no IndexedDB, private mode, a request that never completes) turns it
// into no cache, a failed write (quota) into a read-only one; a slow write is only waited for less.
import { createStore, del, delMany, get, keys, set, type UseStore } from 'idb-keyval';
import type { DevicePlan } from '../policy/device-plan.js';
import type { PrunedMemory } from '../policy/exit-pruning.js';
import { sha256Hex } from '../graph/hash.js';

/** A manifest as cached for one bundle URL. */
export interface CachedManifest {
  /** sha256 (hex) of `text`. */
  readonly hash: string;
  readonly text: string;
  /** Date.now() when it was fetched. */
  readonly storedAt: number;
  /** Set when a file it lists no longer matches it (the bundle was replaced): the next load fetches the manifest. */
  readonly outdated?: boolean;
}

/**
 * What the runtime needs from a cache. Methods never throw: a failed read is a miss, a failed write is dropped.
 * {@link putSegment} and {@link putCompiled} say whether the entry landed: false when the write was dropped (writes off,
 * a failure) or abandoned (timed out: it may still land, unknown): the runtime then keeps what it would read back.
 */
export interface BundleCache {
  /** False once caching is off or storage failed: nothing more is written (reads may go on after a failed write). */
  readonly enabled: boolean;
  getManifest(url: string): Promise<CachedManifest | undefined>;
  putManifest(url: string, entry: CachedManifest): Promise<void>;
  deleteManifest(url: string): Promise<void>;
  /** `bytes`: the size expected (the manifest's), which a cache may wait for longer (`Infinity`: unknown, large?). */
  getSegment(sha256: string, bytes?: number): Promise<Uint8Array | undefined>;
  /** Resolves true once `bytes` are stored, false when the write did not land or is not known to have. */
  putSegment(sha256: string, bytes: Uint8Array): Promise<boolean>;
  deleteSegments(sha256s: readonly string[]): Promise<void>;
  /** sha256 of every cached segment. */
  segmentKeys(): Promise<Set<string>>;
  /** The device plan stored under {@link planKey}, if any (a malformed entry is a miss). */
  getPlan(key: string): Promise<DevicePlan | undefined>;
  putPlan(key: string, plan: DevicePlan): Promise<void>;
  /** Drops every plan (compiled model, pruned record) made for the bundle version with this manifest hash. */
  deletePlans(manifestHash: string): Promise<void>;
  /**
   * The compiled model stored under {@link compiledKey}, unverified (the caller checks its sha256); optional.
   * `bytes`: about the size expected, which a cache may wait for longer (`Infinity`: unknown, maybe large).
   */
  getCompiled?(key: string, bytes?: number): Promise<CachedCompiled | undefined>;
  /** Resolves true once `entry` is stored, false when the write did not land or is not known to have. */
  putCompiled?(key: string, entry: CachedCompiled): Promise<boolean>;
  deleteCompiled?(key: string): Promise<void>;
  /** Live exit pruning's remembered state stored under {@link prunedKey} (a malformed entry is a miss); optional. */
  getPruned?(key: string): Promise<PrunedRecord | undefined>;
  putPruned?(key: string, record: PrunedRecord): Promise<void>;
  /**
   * The quantized op types found in a segment of the bundle version with this manifest hash (a bundle without
   * `backbone.quantized`), remembered so that its next open loads onnxruntime for WASM at once; optional.
   */
  getQuantized?(manifestHash: string): Promise<string[] | undefined>;
  putQuantized?(manifestHash: string, ops: readonly string[]): Promise<void>;
}

/**
 * Live exit pruning's remembered state (policy/exit-pruning.ts {@link PrunedMemory}) for one bundle version and
 * backend: per requested-thresholds vector (the last few), the exits pruned and the probe counts since. Only exits
 * from the back, so it can change an answer only toward the full model's; the runtime checks each entry again.
 */
export interface PrunedRecord {
  readonly version: 1;
  readonly manifestHash: string;
  readonly backend: string;
  /** Most recent first. */
  readonly entries: readonly PrunedMemory[];
}

/** A compiled cascade (runtime/compiled-engine.ts) as cached: its ONNX bytes and their sha256 (hex), checked on read. */
export interface CachedCompiled {
  readonly sha256: string;
  readonly bytes: Uint8Array;
}

/**
 * Cache key of a compiled cascade of segments 0 .. count - 1: `compiled:<manifestHash>:<backend>:<count>:v<format>`
 * (bump COMPILED_FORMAT when the compiler's output changes, so no older model is reused).
 */
export function compiledKey(manifestHash: string, backend: string, count: number): string {
  return `${COMPILED_PREFIX}${manifestHash}:${backend}:${count}:v${COMPILED_FORMAT}`;
}

/**
 * The compiled model cached under `key` (about `bytes` long: a read waited for by size) when its bytes match its sha256;
 * a corrupt entry is deleted (the caller rebuilds it), never returned.
 */
export async function verifiedCompiled(
  cache: BundleCache,
  key: string,
  bytes: number,
): Promise<Uint8Array | undefined> {
  const entry = await cache.getCompiled?.(key, bytes);
  if (!entry) return undefined;
  if ((await sha256Hex(entry.bytes)) === entry.sha256) return entry.bytes;
  await cache.deleteCompiled?.(key);
  return undefined;
}

/** Cache key of live exit pruning's remembered state: `pruned:<manifestHash>:<backend>`. */
export function prunedKey(manifestHash: string, backend: string): string {
  return `${PRUNED_PREFIX}${manifestHash}:${backend}`;
}

/**
 * Cache key of a device plan: `plan:<manifestHash>:<backend>:<threads>:<engine>` (its times were measured on that
 * engine: the compiled cascade and the stage engine price exits differently). Keys of older versions, without the
 * engine, are never read again: IdbBundleCache deletes one on the first miss of its key with the engine (else it goes
 * with the bundle version's other plans).
 */
export function planKey(manifestHash: string, backend: string, threads: number, engine: 'compiled' | 'stages'): string {
  return `${PLAN_PREFIX}${manifestHash}:${backend}:${threads}:${engine}`;
}

/** The key an older selfxit stored `key`'s plan under (`plan:<manifestHash>:<backend>:<threads>`), if a plan's. */
function legacyPlanKey(key: string): string | undefined {
  const m = /^(plan:.+):(?:compiled|stages)$/.exec(key);
  return m ? m[1] : undefined;
}

const isNumberArray = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => typeof x === 'number');

/** A stored record of version 1 with the manifest hash and backend it was made for (plans, pruned records). */
const isRecordFor = (v: unknown): v is { version: 1; manifestHash: string; backend: string } => {
  const r = v as { version?: unknown; manifestHash?: unknown; backend?: unknown } | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    r.version === 1 &&
    typeof r.manifestHash === 'string' &&
    typeof r.backend === 'string'
  );
};

/** Shape check of a stored plan (written by this or another selfxit version). */
export function isDevicePlan(v: unknown): v is DevicePlan {
  if (!isRecordFor(v)) return false;
  const p = v as Partial<DevicePlan>;
  return (
    typeof p.threads === 'number' &&
    (p.engine === undefined || p.engine === 'compiled' || p.engine === 'stages') &&
    typeof p.measuredAt === 'string' &&
    typeof p.target === 'number' &&
    typeof p.timings === 'object' &&
    p.timings !== null &&
    isNumberArray(p.timings.stageMs) &&
    isNumberArray(p.timings.decisionMs) &&
    (p.timings.exitMs === undefined || isNumberArray(p.timings.exitMs)) &&
    Array.isArray(p.enabled) &&
    p.enabled.every((x) => typeof x === 'boolean') &&
    isNumberArray(p.thresholds) &&
    p.thresholds.length === p.enabled.length &&
    typeof p.expectedAgreement === 'number' &&
    typeof p.expectedMacsFraction === 'number' &&
    typeof p.expectedMsFraction === 'number' &&
    Array.isArray(p.curve)
  );
}

/** Shape check of a stored pruned record (each entry's fit to the bundle is the pruner's check). */
export function isPrunedRecord(v: unknown): v is PrunedRecord {
  if (!isRecordFor(v)) return false;
  const r = v as Partial<PrunedRecord>;
  return (
    Array.isArray(r.entries) &&
    r.entries.every(
      (e: Partial<PrunedMemory> | null) =>
        typeof e === 'object' &&
        e !== null &&
        isNumberArray(e.thresholds) &&
        isNumberArray(e.pruned) &&
        Array.isArray(e.probes) &&
        e.probes.every(
          (c) => typeof c === 'object' && c !== null && typeof c.n === 'number' && typeof c.left === 'number',
        ),
    )
  );
}

/** The cache used with `cache: false`: remembers nothing. */
export const noCache: BundleCache = {
  enabled: false,
  getManifest: async () => undefined,
  putManifest: async () => {},
  deleteManifest: async () => {},
  getSegment: async () => undefined,
  putSegment: async () => false,
  deleteSegments: async () => {},
  segmentKeys: async () => new Set(),
  getPlan: async () => undefined,
  putPlan: async () => {},
  deletePlans: async () => {},
};

const MANIFEST_PREFIX = 'manifest:';
const SEGMENT_PREFIX = 'segment:';
const PLAN_PREFIX = 'plan:';
const COMPILED_PREFIX = 'compiled:';
const PRUNED_PREFIX = 'pruned:';
const QUANTIZED_PREFIX = 'quantized:';
// 2: thresholds split once at the top (no Gather per exit); 3: the exit-free model is the source graph (no thresholds
// input, the backbone's own output: a v2 one wants a thresholds input that the engine no longer feeds it)
const COMPILED_FORMAT = 3;

/** Opens the idb-keyval store a {@link IdbBundleCache} uses; may throw (caught: the cache turns itself off). */
type OpenStore = (dbName: string, storeName: string) => UseStore;

/** The IndexedDB store `storeName` in database `dbName` (opened lazily by idb-keyval on first request). */
const openIndexedDbStore: OpenStore = (dbName, storeName) => {
  if (typeof indexedDB === 'undefined') throw new Error('IndexedDB is not available');
  return createStore(dbName, storeName);
};

/**
 * Manifests marked outdated in this worker (URL → manifest hash), also where the write of the mark failed (writes off):
 * the load's retry then fetches the new manifest instead of meeting the replaced file again.
 */
const outdatedHere = new Map<string, string>();

/** How long one IndexedDB operation may take before it counts as failed (and is no longer waited for). */
export const CACHE_OP_TIMEOUT_MS = 5_000;
/**
 * A read of a large entry (a segment, a compiled model) is given one more operation timeout per this many bytes
 * expected: 5 s per 25 MB at the default, a slow phone's storage (a 150 MB segment: 35 s), so a slow read is not taken
 * for dead storage (which would turn the cache off and fetch the segment and every later one again).
 */
export const READ_BYTES_PER_TIMEOUT = 25 * 2 ** 20;
/**
 * The longest a read is waited for, in operation timeouts (60 s at the default: a 275 MB entry, or one of unknown size
 * passed as `Infinity`): under load()'s 120 s `timeoutMs`, so a hung read still falls back to the network in time.
 */
export const MAX_READ_TIMEOUTS = 12;
/** A write unsettled for this many operation timeouts means IndexedDB hangs: reads timing out behind it count. */
const WRITE_STUCK_TIMEOUTS = 3;

/** What {@link settleWithin} rejects with when the operation took too long. */
export class StorageTimeout extends Error {
  override readonly name = 'StorageTimeout';
}

/**
 * `work(touch)`, or a {@link StorageTimeout} once it went `ms` without settling or calling `touch()` (each call, e.g.
 * one per request of a transaction, restarts the clock). A stalled operation is abandoned, not stopped (IndexedDB may
 * still complete it later).
 */
export async function settleWithin<T>(ms: number, what: string, work: (touch: () => void) => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stall: (e: Error) => void = () => {};
  const stalled = new Promise<never>((_, reject) => (stall = reject));
  const touch = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => stall(new StorageTimeout(`IndexedDB ${what} timed out`)), ms);
  };
  touch();
  try {
    return await Promise.race([work(touch), stalled]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * IndexedDB cache (database `selfxit`, store `bundles`). The store is opened on first use, never at import. A read
 * that fails or does not complete within the timeout (longer for a large entry: {@link READ_BYTES_PER_TIMEOUT}) disables
 * it for the rest of the session (the storage is
 * unusable: blocked, private mode); a write that fails (quota full) disables writes only, so what is cached can still
 * be read (offline, a lazily loaded segment). A write that times out is abandoned, not failed (a large compiled model
 * on a slow disk may still land), and a read that times out behind a write of this cache IndexedDB is still doing is
 * one miss: either turns storage off only once a write has been under way for WRITE_STUCK_TIMEOUTS timeouts
 * (IndexedDB hangs).
 */
export class IdbBundleCache implements BundleCache {
  private store: UseStore | undefined;
  private readsOff = false;
  private writesOff = false;
  /**
   * Start times (performance.now()) of the writes of this cache IndexedDB has not settled yet: it serves a read queued
   * behind one only after it.
   */
  private readonly writing = new Set<{ readonly at: number }>();
  /** Keys of older versions' plans deleted (or tried) by this cache: once each. */
  private readonly legacyDropped = new Set<string>();

  /**
   * `openStore` is a test seam (e.g. a store whose writes hit the quota); the default opens IndexedDB. `timeoutMs`:
   * the longest one operation is waited for.
   */
  constructor(
    private readonly dbName = 'selfxit',
    private readonly storeName = 'bundles',
    private readonly openStore: OpenStore = openIndexedDbStore,
    private readonly timeoutMs = CACHE_OP_TIMEOUT_MS,
  ) {}

  get enabled(): boolean {
    return !this.writesOff;
  }

  /**
   * The longest a read of about `bytes` is waited for: one operation timeout, plus one per READ_BYTES_PER_TIMEOUT, at
   * most {@link MAX_READ_TIMEOUTS} (`Infinity`: a size not known that may be large).
   */
  private readLimit(bytes: number | undefined): number {
    const extra = typeof bytes === 'number' && bytes > 0 ? bytes / READ_BYTES_PER_TIMEOUT : 0;
    return this.timeoutMs * Math.min(1 + extra, MAX_READ_TIMEOUTS);
  }

  private async op<T>(
    kind: 'read' | 'write',
    fallback: T,
    fn: (store: UseStore) => Promise<T>,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    if (this.readsOff || (kind === 'write' && this.writesOff)) return fallback;
    // A read that times out behind a write of ours (a large compiled model on a slow disk) is a miss, not dead storage,
    // while that write is young: one unsettled for WRITE_STUCK_TIMEOUTS timeouts means IndexedDB hangs.
    const behindWrite = kind === 'read' && !this.writeStuck();
    try {
      const store = (this.store ??= this.openStore(this.dbName, this.storeName));
      const work = fn(store);
      if (kind === 'write') {
        // kept until IndexedDB settles it, also past its timeout
        const entry = { at: performance.now() };
        this.writing.add(entry);
        const done = (): void => void this.writing.delete(entry);
        work.then(done, done);
      }
      return await settleWithin(timeoutMs, kind, () => work);
    } catch (e) {
      // Storage is optional: quota errors, private browsing and blocked IndexedDB all degrade to less or no cache. A
      // stalled request is abandoned (it may still complete: a late write only caches a verified file). A write that
      // times out is not a failed one (a large compiled model on a slow disk): writes stay on unless one of ours has
      // been unsettled for WRITE_STUCK_TIMEOUTS timeouts (IndexedDB hangs).
      if (e instanceof StorageTimeout && (behindWrite || (kind === 'write' && !this.writeStuck()))) return fallback;
      if (kind === 'read' || !this.store) this.readsOff = true;
      this.writesOff = true;
      return fallback;
    }
  }

  /** Whether a write of ours has been unsettled for WRITE_STUCK_TIMEOUTS timeouts (true too when none is under way). */
  private writeStuck(): boolean {
    let oldest = Infinity;
    for (const w of this.writing) oldest = Math.min(oldest, w.at);
    return oldest === Infinity || performance.now() - oldest >= WRITE_STUCK_TIMEOUTS * this.timeoutMs;
  }

  getManifest(url: string): Promise<CachedManifest | undefined> {
    return this.op('read', undefined, async (s) => {
      const v = await get<CachedManifest>(MANIFEST_PREFIX + url, s);
      if (!v || typeof v.hash !== 'string' || typeof v.text !== 'string' || typeof v.storedAt !== 'number')
        return undefined;
      return outdatedHere.get(url) === v.hash ? { ...v, outdated: true } : v;
    });
  }

  putManifest(url: string, entry: CachedManifest): Promise<void> {
    if (entry.outdated) outdatedHere.set(url, entry.hash);
    return this.op('write', undefined, (s) => set(MANIFEST_PREFIX + url, entry, s));
  }

  getSegment(sha256: string, bytes?: number): Promise<Uint8Array | undefined> {
    return this.op(
      'read',
      undefined,
      async (s) => {
        const v = await get<unknown>(SEGMENT_PREFIX + sha256, s);
        return v instanceof Uint8Array ? v : undefined;
      },
      this.readLimit(bytes),
    );
  }

  putSegment(sha256: string, bytes: Uint8Array): Promise<boolean> {
    return this.op('write', false, (s) => set(SEGMENT_PREFIX + sha256, bytes, s).then(() => true));
  }

  deleteSegments(sha256s: readonly string[]): Promise<void> {
    if (sha256s.length === 0) return Promise.resolve();
    return this.op('write', undefined, (s) =>
      delMany(
        sha256s.map((h) => SEGMENT_PREFIX + h),
        s,
      ),
    );
  }

  segmentKeys(): Promise<Set<string>> {
    return this.op('read', new Set<string>(), async (s) => {
      const all = await keys<IDBValidKey>(s);
      const out = new Set<string>();
      for (const k of all)
        if (typeof k === 'string' && k.startsWith(SEGMENT_PREFIX)) out.add(k.slice(SEGMENT_PREFIX.length));
      return out;
    });
  }

  deleteManifest(url: string): Promise<void> {
    return this.op('write', undefined, (s) => del(MANIFEST_PREFIX + url, s));
  }

  /** The entry under `key` when `valid` accepts it, else a miss. */
  private getValid<T>(key: string, valid: (v: unknown) => v is T): Promise<T | undefined> {
    return this.op('read', undefined, async (s) => {
      const v = await get<unknown>(key, s);
      return valid(v) ? v : undefined;
    });
  }

  /** A miss also deletes the plan an older selfxit stored without the engine in its key (never read again). */
  async getPlan(key: string): Promise<DevicePlan | undefined> {
    const plan = await this.getValid(key, isDevicePlan);
    const legacy = legacyPlanKey(key);
    if (plan === undefined && legacy !== undefined && !this.legacyDropped.has(legacy)) {
      this.legacyDropped.add(legacy);
      void this.op('write', undefined, (s) => del(legacy, s)); // not waited for: the load goes on
    }
    return plan;
  }

  putPlan(key: string, plan: DevicePlan): Promise<void> {
    return this.op('write', undefined, (s) => set(key, plan, s));
  }

  deletePlans(manifestHash: string): Promise<void> {
    return this.op('write', undefined, async (s) => {
      const prefixes = [PLAN_PREFIX, COMPILED_PREFIX, PRUNED_PREFIX, QUANTIZED_PREFIX].map(
        (p) => `${p}${manifestHash}:`,
      );
      const stale = (await keys<IDBValidKey>(s)).filter(
        (k) => typeof k === 'string' && prefixes.some((p) => k.startsWith(p)),
      );
      if (stale.length > 0) await delMany(stale, s);
    });
  }

  /**
   * A miss also deletes the model an older selfxit stored under the same key in another format (`:v<format>`, or none
   * for the first): never read again, each about as large as the model, it would only hold quota.
   */
  async getCompiled(key: string, bytes?: number): Promise<CachedCompiled | undefined> {
    const found = await this.op(
      'read',
      undefined,
      async (s) => {
        const v = await get<Partial<CachedCompiled>>(key, s);
        return v && typeof v.sha256 === 'string' && v.bytes instanceof Uint8Array
          ? { sha256: v.sha256, bytes: v.bytes }
          : undefined;
      },
      this.readLimit(bytes),
    );
    const format = `:v${COMPILED_FORMAT}`;
    if (
      found === undefined &&
      key.startsWith(COMPILED_PREFIX) &&
      key.includes(format) &&
      !this.legacyDropped.has(key)
    ) {
      this.legacyDropped.add(key);
      const older = Array.from({ length: COMPILED_FORMAT - 1 }, (_, f) =>
        key.replace(format, f === 0 ? '' : `:v${f + 1}`),
      );
      void this.op('write', undefined, (s) => delMany(older, s)); // not waited for: the load goes on
    }
    return found;
  }

  putCompiled(key: string, entry: CachedCompiled): Promise<boolean> {
    return this.op('write', false, (s) => set(key, entry, s).then(() => true));
  }

  deleteCompiled(key: string): Promise<void> {
    return this.op('write', undefined, (s) => del(key, s));
  }

  getPruned(key: string): Promise<PrunedRecord | undefined> {
    return this.getValid(key, isPrunedRecord);
  }

  putPruned(key: string, record: PrunedRecord): Promise<void> {
    return this.op('write', undefined, (s) => set(key, record, s));
  }

  getQuantized(manifestHash: string): Promise<string[] | undefined> {
    const isOps = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
    return this.getValid(`${QUANTIZED_PREFIX}${manifestHash}:`, isOps);
  }

  putQuantized(manifestHash: string, ops: readonly string[]): Promise<void> {
    return this.op('write', undefined, (s) => set(`${QUANTIZED_PREFIX}${manifestHash}:`, [...ops], s));
  }
}

// A BundleCache held in memory: how a bundle learned in the worker (assembled there, never fetched) is opened by the
// ordinary BundleRuntime — its manifest and segments are "cached", so nothing is fetched and every sha256 is checked.
import type { BundleManifest } from '../bundle/manifest.js';
import type { DevicePlan } from '../policy/device-plan.js';
import type { BundleCache, CachedCompiled, CachedManifest } from './cache.js';

/** An in-memory BundleCache holding one learned bundle (and whatever the runtime caches beside it). */
export class MemoryBundleCache implements BundleCache {
  readonly enabled = true;
  private readonly manifests = new Map<string, CachedManifest>();
  private readonly segments = new Map<string, Uint8Array>();
  private readonly plans = new Map<string, DevicePlan>();
  private readonly compiled = new Map<string, CachedCompiled>();

  /** Holds a learned bundle: its manifest text under `url`, its files by sha256. */
  hold(
    url: string,
    text: string,
    hash: string,
    manifest: BundleManifest,
    files: ReadonlyMap<string, Uint8Array>,
  ): void {
    this.manifests.set(url, { hash, text, storedAt: Date.now() });
    for (const s of manifest.segments) {
      const bytes = files.get(s.file);
      if (bytes) this.segments.set(s.sha256, bytes);
    }
  }

  getManifest = async (url: string): Promise<CachedManifest | undefined> => this.manifests.get(url);
  putManifest = async (url: string, e: CachedManifest): Promise<void> => void this.manifests.set(url, e);
  deleteManifest = async (url: string): Promise<void> => void this.manifests.delete(url);
  getSegment = async (h: string): Promise<Uint8Array | undefined> => this.segments.get(h);
  putSegment = async (h: string, b: Uint8Array): Promise<void> => void this.segments.set(h, b);
  deleteSegments = async (hs: readonly string[]): Promise<void> => hs.forEach((h) => this.segments.delete(h));
  segmentKeys = async (): Promise<Set<string>> => new Set(this.segments.keys());
  getPlan = async (key: string): Promise<DevicePlan | undefined> => this.plans.get(key);
  putPlan = async (key: string, plan: DevicePlan): Promise<void> => void this.plans.set(key, plan);
  deletePlans = async (): Promise<void> => this.plans.clear();
  getCompiled = async (key: string): Promise<CachedCompiled | undefined> => this.compiled.get(key);
  putCompiled = async (key: string, e: CachedCompiled): Promise<void> => void this.compiled.set(key, e);
  deleteCompiled = async (key: string): Promise<void> => void this.compiled.delete(key);
}

// The bundles of on-device learning: a learned bundle assembled in the worker (never fetched) and the BundleCache held
// in memory through which the ordinary BundleRuntime opens it (its manifest and segments are "cached", so nothing is
// fetched and every sha256 is checked); the bundle learning starts from (`load(bundleUrl, { learn })`); and the model
// bytes learning runs on (a plain model or the bundle's backbone.onnx), kept in the bundle cache for offline loads.
import type { BundleManifest } from '../bundle/manifest.js';
import { SelfxitError, isSelfxitError } from '../errors.js';
import { sha256Hex } from '../graph/index.js';
import { assembleLearned, type LearnedExits, type Learner } from '../learn/learner.js';
import type { DevicePlan } from '../policy/device-plan.js';
import type { InitRequest } from '../protocol.js';
import { BundleSource, isOutage, loadManifest, type Progress } from './bundle-source.js';
import { fetchBytes } from './fetch-file.js';
import { IdbBundleCache, noCache, type BundleCache, type CachedCompiled, type CachedManifest } from './cache.js';

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
  putSegment = async (h: string, b: Uint8Array): Promise<boolean> => (this.segments.set(h, b), true);
  deleteSegments = async (hs: readonly string[]): Promise<void> => hs.forEach((h) => this.segments.delete(h));
  segmentKeys = async (): Promise<Set<string>> => new Set(this.segments.keys());
  getPlan = async (key: string): Promise<DevicePlan | undefined> => this.plans.get(key);
  putPlan = async (key: string, plan: DevicePlan): Promise<void> => void this.plans.set(key, plan);
  deletePlans = async (): Promise<void> => this.plans.clear();
  getCompiled = async (key: string): Promise<CachedCompiled | undefined> => this.compiled.get(key);
  putCompiled = async (key: string, e: CachedCompiled): Promise<boolean> => (this.compiled.set(key, e), true);
  deleteCompiled = async (key: string): Promise<void> => void this.compiled.delete(key);
}

/** The cache a learning load keeps model bytes in (the bundle cache; none with `cache: false`). */
export const learnCache = (req: InitRequest, deps: { readonly cache?: BundleCache }): BundleCache =>
  deps.cache ?? (req.cache === false ? noCache : new IdbBundleCache());

/**
 * The bundle at `req.manifestUrl` that learning starts from: its manifest (cache first, as any load; the cached copy
 * when offline) and its full model (`backbone.file`, which learning needs: the audit and the fits run the whole model),
 * from the cache by sha256 (re-verified; a corrupt copy is dropped and fetched again) or fetched, checked against the
 * manifest's sha256 and cached.
 * @throws SelfxitError LEARNING_UNAVAILABLE when the bundle has no backbone file or the server has none (404, 410);
 * FETCH_FAILED, INVALID_BUNDLE, INTEGRITY_ERROR.
 */
export async function bundleModel(
  req: InitRequest,
  progress: Progress,
  cache: BundleCache,
): Promise<{ manifest: BundleManifest; hash: string; bytes: Uint8Array; sha256: string }> {
  const loaded = await loadManifest(req.manifestUrl, req, cache, Date.now(), progress);
  if (!loaded.manifest.backbone.file)
    throw new SelfxitError(
      'LEARNING_UNAVAILABLE',
      'this bundle has no backbone file (the full model), which learning needs: prepare it with the backbone included',
      { manifestUrl: req.manifestUrl },
    );
  const source = new BundleSource(loaded.manifest, req.manifestUrl, cache, progress, new Set(), loaded.hash);
  const bytes = await source.backboneBytes().catch((e: unknown) => {
    // a deployment that left the backbone file out (the plain runtime never fetches it): not a network failure
    if (!isSelfxitError(e, 'FETCH_FAILED') || !(e.details?.status === 404 || e.details?.status === 410)) throw e;
    throw new SelfxitError(
      'LEARNING_UNAVAILABLE',
      `this bundle's backbone file (${loaded.manifest.backbone.file}), which learning needs, is not on the server ` +
        `(HTTP ${String(e.details.status)}): deploy it beside the manifest to load the bundle with { learn }`,
      { manifestUrl: req.manifestUrl, url: e.details.url, status: e.details.status },
      { cause: e },
    );
  });
  await loaded.commit(); // a fetched manifest is cached once its backbone arrived (learning loads it offline)
  return { manifest: loaded.manifest, hash: loaded.hash, bytes, sha256: loaded.manifest.backbone.sha256 };
}

/** Where a plain model's last fetched bytes are cached (with their sha256, checked on read). */
export const plainModelKey = (url: string): string => `learn-model:${url}`;

/**
 * The plain model at `url` (`load(modelUrl, { learn })`): fetched (a plain URL has no manifest to say whether it
 * changed) and cached with its sha256; when the network fails (offline, or a server error) the cached copy, if its
 * bytes still match their sha256 (a corrupt copy is dropped, never used).
 * @throws SelfxitError FETCH_FAILED when neither the network nor the cache has it.
 */
export async function plainModel(
  url: string,
  cache: BundleCache,
  progress: Progress,
): Promise<{ bytes: Uint8Array; sha256: string }> {
  const file = url.split('/').pop() || 'model.onnx';
  progress({ status: 'initiate', file });
  progress({ status: 'download', file });
  const key = plainModelKey(url);
  let bytes: Uint8Array;
  try {
    bytes = await fetchBytes(url, {
      onProgress: (loaded, total) =>
        progress({ status: 'progress', file, loaded, total, progress: total > 0 ? (100 * loaded) / total : NaN }),
    });
  } catch (e) {
    // its size unknown (nothing fetched) and possibly large: waited for the longest (IdbBundleCache MAX_READ_TIMEOUTS)
    const cached = isOutage(e) ? await cache.getCompiled?.(key, Infinity) : undefined;
    if (!cached) throw e;
    if ((await sha256Hex(cached.bytes)) !== cached.sha256) {
      await cache.deleteCompiled?.(key); // corrupt in storage: never used
      throw e;
    }
    progress({ status: 'done', file, fromCache: true });
    return { bytes: cached.bytes, sha256: cached.sha256 };
  }
  progress({ status: 'done', file, fromCache: false });
  const sha256 = await sha256Hex(bytes);
  if ((await cache.getCompiled?.(key, bytes.length))?.sha256 !== sha256)
    await cache.putCompiled?.(key, { sha256, bytes });
  return { bytes, sha256 };
}

/** Where a learned bundle is "cached" (never fetched: every file is in its MemoryBundleCache). */
export const learnedUrl = (modelHash: string, hash: string): string =>
  `https://selfxit.invalid/learned/${modelHash}/${hash}/manifest.json`;

/**
 * The bundle of `learned` exits in memory (no backbone.onnx, no validation file), or without them the full model as
 * one segment, as served before a fit; its manifest text and that text's sha256.
 */
export async function learnedBundle(
  learner: Learner,
  modelBytes: Uint8Array,
  learned: LearnedExits | undefined,
): Promise<{ manifest: BundleManifest; files: Map<string, Uint8Array>; text: string; hash: string }> {
  const { manifest, files } = await assembleLearned(learner.model, modelBytes, learned, learner.options, false);
  const text = JSON.stringify(manifest);
  return { manifest, files, text, hash: await sha256Hex(text) };
}

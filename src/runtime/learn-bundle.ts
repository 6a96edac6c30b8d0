// The bundles of on-device learning: a learned bundle assembled in the worker (never fetched) and the BundleCache held
// in memory through which the ordinary BundleRuntime opens it (its manifest and segments are "cached", so nothing is
// fetched and every sha256 is checked); and the bundle learning starts from (`load(bundleUrl, { learn })`).
import type { BundleManifest } from '../bundle/manifest.js';
import { assembleBundle } from '../bundle/write-bundle.js';
import { SelfxitError } from '../errors.js';
import { sha256Hex } from '../graph/index.js';
import { noExitSummary, type LearnedExits, type Learner } from '../learn/learner.js';
import type { DevicePlan } from '../policy/device-plan.js';
import type { InitRequest } from '../protocol.js';
import { loadManifest, type Progress } from './bundle-source.js';
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

/**
 * The bundle at `req.manifestUrl` that learning starts from: its manifest (cache first, as any load) and the URL of its
 * full model (`backbone.file`, which learning needs: the audit and the fits run the whole model).
 * @throws SelfxitError LEARNING_UNAVAILABLE when the bundle has no backbone file; FETCH_FAILED, INVALID_BUNDLE.
 */
export async function bundleModel(
  req: InitRequest,
  progress: Progress,
  deps: { readonly cache?: BundleCache },
): Promise<{ manifest: BundleManifest; hash: string; modelUrl: string }> {
  const cache = deps.cache ?? (req.cache === false ? noCache : new IdbBundleCache());
  const loaded = await loadManifest(req.manifestUrl, req, cache, Date.now(), progress);
  const file = loaded.manifest.backbone.file;
  if (!file)
    throw new SelfxitError(
      'LEARNING_UNAVAILABLE',
      'this bundle has no backbone file (the full model), which learning needs: prepare it with the backbone included',
      { manifestUrl: req.manifestUrl },
    );
  return { manifest: loaded.manifest, hash: loaded.hash, modelUrl: new URL(file, req.manifestUrl).href };
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
  const lm = learner.model;
  const { manifest, files } = await assembleBundle({
    modelBytes,
    model: lm.model,
    analysis: lm.analysis,
    input: lm.io.input,
    labels: lm.labels,
    output: lm.io.output,
    outputKind: lm.io.outputKind,
    exits: learned?.exits ?? [],
    calibration: learned?.summary ?? noExitSummary(learner.options),
    generator: 'selfxit learn',
    includeBackbone: false,
  });
  const text = JSON.stringify(manifest);
  return { manifest, files, text, hash: await sha256Hex(text) };
}

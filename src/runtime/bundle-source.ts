// Bundle loading and caching in the worker: the manifest (cache first, validated, cached once a load succeeded, a new
// version evicting the old one's files and plans; the cached copy when offline) and the files it lists (segments,
// validation.bin) from the cache or fetched, sha256-checked, cached; a mismatch fetches the file again past the HTTP
// cache, then re-checks the manifest (bundle replaced?). A manifest fetched to replace a cached one revalidates the HTTP
// cache's copy (docs/DEPLOY.md: the headers bundle files should have).
import { validateManifest, type BundleManifest } from '../bundle/manifest.js';
import { decodeValidation, VALIDATION_ENCODING, type ValidationExit } from '../bundle/validation-file.js';
import { SelfxitError } from '../errors.js';
import type { InitRequest, ProgressInfo } from '../protocol.js';
import type { BundleCache } from './cache.js';
import { fetchBytes, fetchText } from './fetch-file.js';
import { sha256Hex } from '../graph/hash.js';

export type Progress = (p: ProgressInfo) => void;

export interface LoadedManifest {
  readonly manifest: BundleManifest;
  readonly hash: string;
  readonly fromCache: boolean;
  /** From the cache although older than `manifestMaxAgeMs`, because fetching it failed (offline, server error). */
  readonly stale: boolean;
  /** Caches a fetched manifest (evicting what a new version replaces): called once the load succeeded. */
  commit(): Promise<void>;
}

const nothingToCommit = async (): Promise<void> => {};

/** A fetch failure the cached manifest may stand in for: no network (status 0) or a server error (5xx). */
export function isOutage(e: unknown): boolean {
  if (!(e instanceof SelfxitError) || e.code !== 'FETCH_FAILED') return false;
  const status = e.details?.status;
  return typeof status === 'number' && (status === 0 || status >= 500);
}

/**
 * The manifest in `text`, validated.
 * @throws SelfxitError INVALID_BUNDLE: not JSON (an HTML page, as an app server's fallback route answers a wrong URL,
 * is told as such: `details.html`), or not a valid manifest.
 */
export function parseManifest(text: string, url: string): BundleManifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const html = text.trimStart().startsWith('<');
    const hint = html ? ': the server answered HTML (a page, not the manifest): check the bundle URL' : '';
    throw new SelfxitError(
      'INVALID_BUNDLE',
      `Invalid bundle manifest at ${url}: not JSON (${(e as Error).message})${hint}`,
      { url, ...(html ? { html: true } : {}) },
      { cause: e },
    );
  }
  try {
    return validateManifest(json);
  } catch (e) {
    if (!(e instanceof SelfxitError)) throw e;
    const message = e.message.replace(/^Invalid bundle manifest:/, `Invalid bundle manifest at ${url}:`);
    throw new SelfxitError(e.code, message, { ...e.details, url }, { cause: e });
  }
}

/** sha256 of the files a manifest lists that the cache keeps by content: segments, the validation file, the backbone file
 * (cached when learning from the bundle needs it). */
function contentHashes(m: Partial<BundleManifest>): string[] {
  const all: unknown[] = [
    ...(m.segments ?? []).map((s) => s.sha256),
    m.calibration?.validation?.sha256,
    m.backbone?.file ? m.backbone.sha256 : undefined,
  ];
  return all.filter((h): h is string => typeof h === 'string');
}

/** A bundle file the runtime fetches: name, sha256 and announced size; `segment` for segment files. */
interface BundleFile {
  readonly file: string;
  readonly sha256: string;
  /** Exact size (the fetch stops past it), 0 = not known. */
  readonly bytes: number;
  readonly url: string;
  readonly segment?: number;
  /** When `bytes` is 0: about how large it is, for how long its cache read is waited for (IdbBundleCache). */
  readonly sizeHint?: number;
}

/**
 * Manifest for `url`: the cached copy unless reload/expired/outdated (marked so, or its hash is
 * `req.avoidManifestHash`), else fetched and validated; when that fetch fails
 * for lack of network or a server error, the cached copy however old ({@link LoadedManifest.stale}). A fetched
 * manifest is cached by {@link LoadedManifest.commit}, which the caller runs once the load succeeded.
 */
export async function loadManifest(
  url: string,
  req: InitRequest,
  cache: BundleCache,
  now: number,
  progress: Progress,
): Promise<LoadedManifest> {
  const file = 'manifest.json';
  progress({ status: 'initiate', file });
  const cached = req.cache === 'reload' ? undefined : await cache.getManifest(url);
  // outdated: marked so in the cache, or named by the request (the mark is an IndexedDB write: it may not have landed)
  const outdated = cached !== undefined && (cached.outdated === true || cached.hash === req.avoidManifestHash);
  const fromCache = (stale: boolean): LoadedManifest | undefined => {
    if (!cached || outdated) return undefined;
    try {
      const manifest = parseManifest(cached.text, url);
      progress({ status: 'done', file, fromCache: true });
      return { manifest, hash: cached.hash, fromCache: true, stale, commit: nothingToCommit };
    } catch {
      return undefined; // written by another selfxit version: fetch it again
    }
  };
  if (cached && now - cached.storedAt <= req.manifestMaxAgeMs) {
    const fresh = fromCache(false);
    if (fresh) return fresh;
    await cache.deleteManifest(url);
  }
  progress({ status: 'download', file });
  let text: string;
  try {
    // Reloading, or replacing a cached manifest (expired, outdated, unreadable): a copy in the HTTP cache may be the
    // very version being replaced, so the server is asked (a conditional request when it sends validators).
    text = await fetchText(url, { revalidate: req.cache === 'reload' || cached !== undefined });
  } catch (e) {
    const old = isOutage(e) ? fromCache(true) : undefined;
    if (old) return old;
    throw e;
  }
  const manifest = parseManifest(text, url);
  const hash = await sha256Hex(text);
  const commit = async (): Promise<void> => {
    const previous = cached ?? (req.cache === 'reload' ? await cache.getManifest(url) : undefined);
    if (previous && previous.hash !== hash) {
      // A new bundle version at the same URL: drop the old version's plans, and its segments (and validation file)
      // that the new one does not use.
      await cache.deletePlans(previous.hash);
      try {
        const old = JSON.parse(previous.text) as Partial<BundleManifest>;
        const keep = new Set(contentHashes(manifest));
        const stale = contentHashes(old).filter((h) => !keep.has(h));
        await cache.deleteSegments(stale);
      } catch {
        // an unreadable old manifest has nothing to evict
      }
    }
    await cache.putManifest(url, { hash, text, storedAt: now });
  };
  progress({ status: 'done', file, fromCache: false });
  return { manifest, hash, fromCache: false, stale: false, commit };
}

/** The sha256 the manifest now on the server lists for `file`, `null` when it lists no such file; undefined when unknown. */
async function currentSha256(manifestUrl: string, file: string): Promise<string | null | undefined> {
  try {
    const m = parseManifest(await fetchText(manifestUrl, { revalidate: true }), manifestUrl);
    const v = m.calibration.validation;
    const listed = [...m.segments, ...(v ? [v] : []), m.backbone].find((f) => f.file === file);
    return listed ? listed.sha256 : null;
  } catch {
    return undefined;
  }
}

/** The files of one open bundle: segment bytes and the validation outputs, from the cache or fetched and verified. */
export class BundleSource {
  /** Whether each segment's bytes are known to be in the cache (for the page's `info()`, and before letting bytes go). */
  readonly cachedSegments: boolean[];
  private readonly segmentUrls: string[];

  constructor(
    readonly manifest: BundleManifest,
    readonly manifestUrl: string,
    private readonly cache: BundleCache,
    private readonly progress: Progress,
    cachedKeys: ReadonlySet<string>,
    /** sha256 of the manifest's text: a `bundleChanged` error names it (`details.manifestHash`), a re-open avoids it. */
    private readonly manifestHash?: string,
  ) {
    this.cachedSegments = manifest.segments.map((s) => cachedKeys.has(s.sha256));
    this.segmentUrls = manifest.segments.map((s) => new URL(s.file, manifestUrl).href);
  }

  /** Segment `s`'s bytes (reported from 'initiate' to 'done', unless `report` is false: read again for a rebuild). */
  segmentBytes(s: number, { report = true }: { readonly report?: boolean } = {}): Promise<Uint8Array> {
    const seg = this.manifest.segments[s];
    if (!seg) return Promise.reject(new SelfxitError('INTERNAL', `no segment ${s}`));
    if (report) this.progress({ status: 'initiate', file: seg.file, segment: s });
    const f = { file: seg.file, sha256: seg.sha256, bytes: seg.bytes, url: this.segmentUrls[s]!, segment: s };
    return this.fileBytes(f, report ? this.progress : () => {});
  }

  /** A bundle file's bytes: from the cache (re-verified) or fetched, sha256-checked and cached by content hash. */
  private async fileBytes(f: BundleFile, progress: Progress = this.progress): Promise<Uint8Array> {
    const { file, sha256: expected, url } = f;
    const at = f.segment === undefined ? {} : { segment: f.segment };
    const cached = await this.cache.getSegment(expected, f.bytes || f.sizeHint);
    if (cached) {
      if ((await sha256Hex(cached)) === expected) {
        if (f.segment !== undefined) this.cachedSegments[f.segment] = true;
        progress({ status: 'done', file, ...at, fromCache: true });
        return cached;
      }
      await this.cache.deleteSegments([expected]); // corrupted in storage: fetch again
      if (f.segment !== undefined) this.cachedSegments[f.segment] = false;
    }
    progress({ status: 'download', file, ...at });
    const fetchFile = (reload: boolean): Promise<Uint8Array> =>
      fetchBytes(url, {
        expectedBytes: f.bytes,
        reload,
        onProgress: (loaded, total) =>
          progress({
            status: 'progress',
            file,
            ...at,
            loaded,
            total,
            progress: total > 0 ? (100 * loaded) / total : Number.NaN,
          }),
      });
    // A body longer than the manifest says (fetchBytes stopped it) is a file other than the one listed, as a wrong hash is.
    const fetched = async (reload: boolean): Promise<{ bytes?: Uint8Array; actual: string }> => {
      try {
        const got = await fetchFile(reload);
        return { bytes: got, actual: await sha256Hex(got) };
      } catch (e) {
        if (!(e instanceof SelfxitError && e.code === 'INTEGRITY_ERROR' && e.details?.tooLong === true)) throw e;
        return { actual: `(more than ${f.bytes} bytes)` };
      }
    };
    let got = await fetched(false);
    // The HTTP cache may hold the file's previous version (replaced in place under the same name): once more from
    // the server before deciding.
    if (got.actual !== expected) got = await fetched(true);
    const bytes = got.bytes;
    if (got.actual !== expected || !bytes) throw await this.mismatch(f, got.actual);
    const stored = await this.cache.putSegment(expected, bytes);
    if (f.segment !== undefined) this.cachedSegments[f.segment] = stored;
    progress({ status: 'done', file, ...at, fromCache: false });
    return bytes;
  }

  /**
   * The error for a file whose sha256 is not the manifest's, also when fetched past the HTTP cache. The manifest is
   * fetched once more (revalidating any HTTP cache): when it now lists another sha256 for the file, the bundle was replaced since this one was loaded, and
   * the cached manifest is marked outdated (the next load fetches the new one); the error says so
   * (`details.bundleChanged: true`, with the outdated manifest's `manifestHash`), and the page re-opens the bundle
   * asking the new worker to avoid that manifest (InitRequest `avoidManifestHash`: the mark may not have landed).
   */
  private async mismatch(f: BundleFile, actual: string): Promise<SelfxitError> {
    const { file, sha256: expected, url } = f;
    const at = f.segment === undefined ? {} : { segment: f.segment };
    const what = f.segment === undefined ? file : `segment ${f.segment}`;
    const details = { url, file, ...at, expected, actual };
    const message = `${what} (${url}) has sha256 ${actual}, the manifest says ${expected}`;
    const now = await currentSha256(this.manifestUrl, file);
    if (now === undefined || now === expected) return new SelfxitError('INTEGRITY_ERROR', message, details);
    const cached = await this.cache.getManifest(this.manifestUrl);
    // (the cached copy may already be the new version, cached by another page)
    if (cached?.text.includes(expected)) await this.cache.putManifest(this.manifestUrl, { ...cached, outdated: true });
    return new SelfxitError(
      'INTEGRITY_ERROR',
      `${message}: the bundle at ${this.manifestUrl} was replaced since it was loaded; load it again`,
      { ...details, bundleChanged: true, ...(this.manifestHash ? { manifestHash: this.manifestHash } : {}) },
    );
  }

  /** The full model (`backbone.file`, which learning from the bundle needs), from the cache (re-verified) or fetched,
   * sha256-checked against the manifest and cached: so learning from a bundle also starts offline. */
  backboneBytes(): Promise<Uint8Array> {
    const { file, sha256 } = this.manifest.backbone;
    if (!file) return Promise.reject(new SelfxitError('INTERNAL', 'the bundle has no backbone file'));
    this.progress({ status: 'initiate', file });
    // its size is not in the manifest: about that of the segments (the backbone split, plus the fused heads)
    const sizeHint = this.manifest.segments.reduce((n, s) => n + s.bytes, 0);
    return this.fileBytes({ file, sha256, bytes: 0, sizeHint, url: new URL(file, this.manifestUrl).href });
  }

  /** The bundle's validation outputs: validation.bin from the cache or fetched (sha256-verified), decoded. */
  async validation(): Promise<ValidationExit[]> {
    const { manifest, manifestUrl } = this;
    if (manifest.exits.length === 0) return [];
    const v = manifest.calibration.validation;
    if (!v) {
      const why =
        manifest.calibration.mode === 'paper'
          ? 'paper-mode bundles carry none: prepare the model in selfxit mode'
          : 'run `selfxit prepare` again with this selfxit version';
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `the bundle at ${manifestUrl} has no validation file (calibration.validation), which a device plan needs: ${why}`,
        {
          url: manifestUrl,
          mode: manifest.calibration.mode,
        },
      );
    }
    if (
      typeof v.file !== 'string' ||
      typeof v.sha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(v.sha256) ||
      !(Number.isInteger(v.samples) && v.samples > 0)
    ) {
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `the bundle at ${manifestUrl} has a malformed calibration.validation entry`,
        { url: manifestUrl },
      );
    }
    if (v.encoding !== VALIDATION_ENCODING) {
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `${v.file} has encoding ${JSON.stringify(v.encoding)}; this selfxit reads "${VALIDATION_ENCODING}"`,
        { url: manifestUrl, file: v.file },
      );
    }
    const url = new URL(v.file, manifestUrl).href;
    this.progress({ status: 'initiate', file: v.file });
    const bytes = await this.fileBytes({ file: v.file, sha256: v.sha256, bytes: v.bytes, url });
    return decodeValidation(bytes, manifest.exits.length, v.samples);
  }
}

// Bundle folders on disk for the CLI: write one all-or-nothing (via writeDirAtomic) and read one back with sha256 checks.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SelfxitError } from '../errors.js';
import { MANIFEST_FILE, MANIFEST_FORMAT, type BundleFiles, type BundleManifest } from '../bundle/manifest.js';
import { readBundle } from '../bundle/read-bundle.js';
import { writeDirAtomic } from './node-io.js';

/** The report `prepare --report` writes beside a bundle: dropped with the older bundle it describes. */
const REPORT_FILE = 'report.html';

const plainName = (v: unknown): v is string =>
  typeof v === 'string' && v !== '' && !v.includes('/') && !v.includes('\\') && !v.startsWith('.');

/**
 * The files of the older bundle in `dir`: its manifest.json and the files that manifest names (segments, backbone
 * copy, validation file) and report.html. Only manifest.json when that is not a selfxit bundle manifest (format
 * "selfxit-bundle"), nothing when `dir` has none: then no other file of the folder counts as the bundle's, and only
 * the files being written are replaced.
 */
export async function oldBundleFiles(dir: string): Promise<Set<string>> {
  let m: unknown;
  try {
    m = JSON.parse(await fs.readFile(path.join(dir, MANIFEST_FILE), 'utf8'));
  } catch {
    return new Set();
  }
  if ((m as { format?: unknown } | null)?.format !== MANIFEST_FORMAT) return new Set([MANIFEST_FILE]);
  const o = m as {
    segments?: unknown;
    backbone?: { file?: unknown };
    calibration?: { validation?: { file?: unknown } };
  };
  const named: unknown[] = [
    ...(Array.isArray(o.segments) ? o.segments.map((s: { file?: unknown } | null) => s?.file) : []),
    o.backbone?.file,
    o.calibration?.validation?.file,
  ];
  return new Set([MANIFEST_FILE, REPORT_FILE, ...named.filter(plainName)]);
}

/**
 * Writes `manifest.json`, every bundle file and `extra` files (e.g. report.html) into `dir`: a temp folder beside
 * `dir` first, then swapped in whole (an existing folder is renamed aside and deleted after the swap; see
 * {@link writeDirAtomic}). Of the files already there, only those of the older bundle ({@link oldBundleFiles}: the
 * ones its manifest names) are dropped when the new bundle does not write them; every other file (your models,
 * notes, sample files) is kept. On failure the old folder stays as it was.
 */
export async function writeBundleDir(
  dir: string,
  manifest: BundleManifest,
  files: ReadonlyMap<string, Uint8Array>,
  extra: ReadonlyMap<string, Uint8Array | string> = new Map(),
): Promise<void> {
  const all = new Map<string, Uint8Array | string>([[MANIFEST_FILE, `${JSON.stringify(manifest, null, 2)}\n`]]);
  for (const [name, bytes] of [...files, ...extra]) {
    if (!plainName(name)) throw new SelfxitError('INTERNAL', `bundle file name "${name}" is not a plain file name`);
    all.set(name, bytes);
  }
  const stale = await oldBundleFiles(dir);
  await writeDirAtomic(dir, all, { removeStale: (name) => stale.has(name), last: MANIFEST_FILE });
}

/** Reads a bundle folder (manifest, segments, backbone copy), checking every file's sha256 unless `verify` is false. */
export async function readBundleDir(dir: string, options: { verify?: boolean } = {}): Promise<BundleFiles> {
  return readBundle(async (name) => {
    const p = path.join(dir, name);
    try {
      const b = await fs.readFile(p);
      return new Uint8Array(b.buffer, b.byteOffset, b.length);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (name === MANIFEST_FILE)
        throw new SelfxitError(
          'INVALID_BUNDLE',
          `"${dir}" is not a selfxit bundle: ${MANIFEST_FILE} cannot be read (${why})`,
          { path: p },
          { cause: e },
        );
      throw new SelfxitError('IO_ERROR', `Cannot read bundle file "${p}": ${why}`, { path: p }, { cause: e });
    }
  }, options);
}

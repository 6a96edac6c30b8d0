// Bundle folders on disk for the CLI: write one all-or-nothing (via writeDirAtomic) and read one back with sha256 checks.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SelfxitError } from '../errors.js';
import { MANIFEST_FILE, type BundleFiles, type BundleManifest } from '../bundle/manifest.js';
import { readBundle } from '../bundle/read-bundle.js';
import { writeDirAtomic } from './node-io.js';

/** Files a bundle folder may hold from an earlier write (removed when a new bundle replaces it). */
const BUNDLE_FILE = /^(manifest\.json|report\.html|validation\.bin|.*\.onnx)$/;

/**
 * Writes `manifest.json`, every bundle file and `extra` files (e.g. report.html) into `dir`: a temp folder beside
 * `dir` first, then swapped in whole (an existing folder is renamed aside and deleted after the swap; see
 * {@link writeDirAtomic}); files of an older bundle that the new one does not write (segments, validation.bin,
 * report.html) are dropped, other files in the folder are kept. On failure the old folder stays as it was.
 */
export async function writeBundleDir(
  dir: string,
  manifest: BundleManifest,
  files: ReadonlyMap<string, Uint8Array>,
  extra: ReadonlyMap<string, Uint8Array | string> = new Map(),
): Promise<void> {
  const all = new Map<string, Uint8Array | string>([[MANIFEST_FILE, `${JSON.stringify(manifest, null, 2)}\n`]]);
  for (const [name, bytes] of [...files, ...extra]) {
    if (name.includes('/') || name.includes('\\') || name.startsWith('.'))
      throw new SelfxitError('INTERNAL', `bundle file name "${name}" is not a plain file name`);
    all.set(name, bytes);
  }
  await writeDirAtomic(dir, all, { removeStale: (name) => BUNDLE_FILE.test(name), last: MANIFEST_FILE });
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

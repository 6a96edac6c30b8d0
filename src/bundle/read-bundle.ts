// Reads a bundle through a file loader (fs, fetch, a Map): parses and validates the manifest, loads
// every segment, the backbone copy and the validation file, and checks each file's sha256. Pure: no Node or DOM imports.
import { SelfxitError } from '../errors.js';
import { MANIFEST_FILE, validateManifest, type BundleFiles } from './manifest.js';
import { sha256Hex } from '../graph/index.js';

/** Loads one bundle file by its name relative to the manifest. */
export type BundleLoader = (file: string) => Promise<Uint8Array>;

/**
 * Reads a bundle. `verify` (default true) checks every file's sha256 against the manifest
 * (INTEGRITY_ERROR naming the file on mismatch).
 */
export async function readBundle(load: BundleLoader, options: { verify?: boolean } = {}): Promise<BundleFiles> {
  const raw = await load(MANIFEST_FILE);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(raw));
  } catch (e) {
    throw new SelfxitError('INVALID_BUNDLE', `${MANIFEST_FILE} is not valid JSON: ${(e as Error).message}`, undefined, {
      cause: e,
    });
  }
  const manifest = validateManifest(parsed);
  const wanted: { file: string; sha256: string | undefined }[] = manifest.segments.map((s) => ({
    file: s.file,
    sha256: s.sha256,
  }));
  if (manifest.backbone.file) wanted.push({ file: manifest.backbone.file, sha256: manifest.backbone.sha256 });
  const validation = manifest.calibration.validation;
  if (validation) wanted.push({ file: validation.file, sha256: validation.sha256 });
  const files = new Map<string, Uint8Array>();
  for (const { file, sha256 } of wanted) {
    const bytes = await load(file);
    if (options.verify !== false && sha256 !== undefined) {
      const got = await sha256Hex(bytes);
      if (got !== sha256)
        throw new SelfxitError('INTEGRITY_ERROR', `${file}: sha256 ${got} does not match the manifest (${sha256})`, {
          file,
          expected: sha256,
          actual: got,
        });
    }
    files.set(file, bytes);
  }
  return { manifest, files };
}

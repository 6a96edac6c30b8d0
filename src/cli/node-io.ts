// Node-only file and runtime helpers for the CLI: read a model, load onnxruntime-node, write an output folder atomically.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { SelfxitError } from '../errors.js';
import type { OrtModule } from '../ort/types.js';

function ioError(what: string, p: string, e: unknown): SelfxitError {
  const reason = e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e);
  return new SelfxitError('IO_ERROR', `${what} "${p}": ${reason}`, { path: p }, { cause: e });
}

/** Reads a whole file. @throws SelfxitError `IO_ERROR`. */
export async function readFileBytes(p: string): Promise<Uint8Array> {
  try {
    const buf = await fsp.readFile(p);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    throw ioError('Cannot read', p, e);
  }
}

/** onnxruntime-node as an {@link OrtModule}. @throws SelfxitError `BACKEND_UNAVAILABLE`. */
export async function loadOrtNode(): Promise<OrtModule> {
  try {
    return (await import('onnxruntime-node')) as unknown as OrtModule;
  } catch (e) {
    throw new SelfxitError('BACKEND_UNAVAILABLE', `onnxruntime-node could not be loaded: ${e instanceof Error ? e.message : String(e)}`, {}, { cause: e });
  }
}

export interface WriteDirOptions {
  /** Files already in `dir` for which this returns true, and that are not being written, are removed (stale outputs). */
  removeStale?: (name: string) => boolean;
  /** When `dir` already exists, this file is moved in last (e.g. a manifest that names the others). */
  last?: string;
}

/**
 * Writes `files` (name → content) into `dir` all-or-nothing: everything goes to a temporary sibling folder first,
 * then the folder is renamed into place. When `dir` already exists (it may hold other files of the user's), each
 * file is moved in by a rename, `opts.last` after all others, so a reader never sees that file before the ones it
 * names (it may see old ones, which a manifest's sha256 catches). On failure the temporary folder and any parent
 * folders this call created are removed.
 * @throws SelfxitError `IO_ERROR` naming the path.
 */
export async function writeDirAtomic(dir: string, files: ReadonlyMap<string, Uint8Array | string>, opts: WriteDirOptions = {}): Promise<void> {
  const target = path.resolve(dir);
  let exists = false;
  try {
    const st = await fsp.stat(target);
    if (!st.isDirectory()) throw new SelfxitError('IO_ERROR', `Cannot write to "${dir}": it exists and is not a folder`, { path: dir });
    exists = true;
  } catch (e) {
    if (e instanceof SelfxitError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw ioError('Cannot write to', dir, e);
  }
  const parent = path.dirname(target);
  let createdParent: string | undefined;
  try {
    createdParent = await fsp.mkdir(parent, { recursive: true });
  } catch (e) {
    throw ioError('Cannot create the output folder', dir, e);
  }
  const tmp = path.join(parent, `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await fsp.mkdir(tmp);
    for (const [name, content] of files) await fsp.writeFile(path.join(tmp, name), content);
    if (!exists) {
      await fsp.rename(tmp, target);
    } else {
      const order = [...files.keys()].sort((a, b) => Number(a === opts.last) - Number(b === opts.last));
      for (const name of order) await fsp.rename(path.join(tmp, name), path.join(target, name));
      await fsp.rmdir(tmp);
      if (opts.removeStale) {
        for (const name of await fsp.readdir(target)) {
          if (!files.has(name) && opts.removeStale(name)) await fsp.rm(path.join(target, name), { force: true });
        }
      }
    }
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    if (createdParent) await fsp.rm(createdParent, { recursive: true, force: true }).catch(() => undefined);
    throw ioError('Cannot write to', dir, e);
  }
}

// Node-only file and runtime helpers for the CLI: read a model, load onnxruntime-node, write an output folder atomically.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { isSelfxitError, SelfxitError } from '../errors.js';
import { analyzeModel, type ModelAnalysis, type OnnxModel } from '../graph/index.js';
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

/** Imports onnxruntime-node; a parameter of {@link loadOrtNode} so that tests can stand in for a missing install. */
export type OrtNodeImporter = () => Promise<unknown>;

// A dynamic import, and `onnxruntime-node` stays external in dist/cli.js: the package is an optional peer
// dependency, so the CLI must start (and `--help`, usage errors, ... work) without it.
const importOrtNode: OrtNodeImporter = () => import('onnxruntime-node');

const INSTALL_HINT = 'npm install onnxruntime-node';

/** True when `e` says that the package `onnxruntime-node` itself cannot be found (not one of its own imports). */
function isOrtNodeMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') return false;
  return /Cannot find (?:package|module) ['"]onnxruntime-node['"]/.test(e instanceof Error ? e.message : String(e));
}

function isOrtModule(m: unknown): m is OrtModule {
  const o = m as { InferenceSession?: { create?: unknown }; Tensor?: unknown } | null | undefined;
  return typeof o?.InferenceSession?.create === 'function' && typeof o.Tensor === 'function';
}

/**
 * onnxruntime-node as an {@link OrtModule}, imported on first use. It is an optional peer dependency of selfxit:
 * the commands that run a model (`prepare`, `eval`, `report --samples`, and `inspect`/`split` on a model whose
 * value_info lacks shapes) need it; everything else works without it.
 * @throws SelfxitError `BACKEND_UNAVAILABLE` when it is not installed or cannot be loaded; the message says to
 *   run `npm install onnxruntime-node`.
 */
export async function loadOrtNode(importer: OrtNodeImporter = importOrtNode): Promise<OrtModule> {
  let mod: unknown;
  try {
    mod = await importer();
  } catch (e) {
    if (isOrtNodeMissing(e)) {
      throw new SelfxitError(
        'BACKEND_UNAVAILABLE',
        `onnxruntime-node is not installed. The selfxit CLI runs models with it (an optional peer dependency of selfxit); install it next to selfxit: ${INSTALL_HINT}`,
        { package: 'onnxruntime-node' },
        { cause: e },
      );
    }
    const reason = e instanceof Error ? e.message : String(e);
    throw new SelfxitError(
      'BACKEND_UNAVAILABLE',
      `onnxruntime-node could not be loaded (${reason}); (re)install it: ${INSTALL_HINT}`,
      { package: 'onnxruntime-node' },
      { cause: e },
    );
  }
  if (!isOrtModule(mod)) {
    throw new SelfxitError(
      'BACKEND_UNAVAILABLE',
      `onnxruntime-node was loaded but has no InferenceSession/Tensor; (re)install it: ${INSTALL_HINT}`,
      { package: 'onnxruntime-node' },
    );
  }
  return mod;
}

/**
 * {@link analyzeModel} for the CLI: when the model's value_info declares every shape it needs, onnxruntime-node is
 * never loaded; otherwise it is loaded (by `importer`) to probe the missing shapes.
 * @throws SelfxitError `BACKEND_UNAVAILABLE` when shapes are missing and onnxruntime-node is not installed; the
 *   errors of {@link analyzeModel}.
 */
export async function analyzeModelNode(
  model: OnnxModel,
  importer: OrtNodeImporter = importOrtNode,
): Promise<ModelAnalysis> {
  try {
    return await analyzeModel(model);
  } catch (e) {
    if (!isSelfxitError(e, 'SHAPE_UNKNOWN')) throw e;
  }
  return analyzeModel(model, { ort: await loadOrtNode(importer) });
}

/** The file-system calls {@link writeDirAtomic} makes; tests inject failing ones. */
export type DirFs = Pick<
  typeof fsp,
  'stat' | 'realpath' | 'mkdir' | 'writeFile' | 'readdir' | 'rename' | 'rm' | 'link' | 'cp' | 'chmod'
>;

export interface WriteDirOptions {
  /** Files already in `dir` for which this returns true, and that are not being written, are dropped (stale outputs). */
  removeStale?: (name: string) => boolean;
  /** Written after all other files (e.g. a manifest that names the others): on the one path that moves files into an
   * existing folder one by one (see {@link writeDirAtomic}), a reader never sees it before the files it names. */
  last?: string;
  /** File-system functions to use instead of node:fs/promises (tests). */
  fs?: Partial<DirFs>;
}

/** errno codes of a folder that cannot be renamed away, e.g. a mount point (a bind-mounted output folder). */
const UNMOVABLE = new Set(['EBUSY', 'EXDEV']);

/**
 * Writes `files` (name → content) into `dir` all-or-nothing, whole folder at a time:
 * 1. everything is written into a temporary sibling folder (`.<name>.tmp-…`);
 * 2. when `dir` already exists, the entries of it that are neither rewritten nor stale (`opts.removeStale`), e.g. the
 *    user's notes, are carried into the temporary folder (hard links, else copies), and `dir` is renamed aside to
 *    `.<name>.old-…`;
 * 3. the temporary folder is renamed to `dir`, then the old folder is deleted.
 * A reader sees the old folder or the new one, never a mix (for an instant between the two renames, none). On any
 * failure the old folder is put back untouched, and the temporary folder and any parent folders this call created
 * are removed. `dir` a symlink: the folder it points to is replaced. The one exception is a `dir` that cannot be
 * renamed (a mount point: EBUSY, EXDEV): then each file is moved into it by a rename, `opts.last` after all others,
 * and stale files are removed afterwards (a failure midway can leave old and new files side by side).
 * @throws SelfxitError `IO_ERROR` naming the path (and where the old folder was left if it could not be put back).
 */
export async function writeDirAtomic(
  dir: string,
  files: ReadonlyMap<string, Uint8Array | string>,
  opts: WriteDirOptions = {},
): Promise<void> {
  const fs: DirFs = { ...fsp, ...opts.fs };
  let target = path.resolve(dir);
  let existingMode: number | undefined;
  try {
    const st = await fs.stat(target);
    if (!st.isDirectory())
      throw new SelfxitError('IO_ERROR', `Cannot write to "${dir}": it exists and is not a folder`, { path: dir });
    existingMode = st.mode & 0o7777;
    target = await fs.realpath(target);
  } catch (e) {
    if (e instanceof SelfxitError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw ioError('Cannot write to', dir, e);
  }
  const exists = existingMode !== undefined;
  const parent = path.dirname(target);
  let createdParent: string | undefined;
  try {
    createdParent = await fs.mkdir(parent, { recursive: true });
  } catch (e) {
    throw ioError('Cannot create the output folder', dir, e);
  }
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = path.join(parent, `.${path.basename(target)}.tmp-${tag}`);
  const old = path.join(parent, `.${path.basename(target)}.old-${tag}`);
  const order = [...files.keys()].sort((a, b) => Number(a === opts.last) - Number(b === opts.last));
  let aside = false; // the old folder is at `old`, not at `target`
  try {
    await fs.mkdir(tmp);
    for (const name of order) await fs.writeFile(path.join(tmp, name), files.get(name)!);
    if (!exists) {
      await fs.rename(tmp, target);
      return;
    }
    for (const entry of await fs.readdir(target, { withFileTypes: true })) {
      if (files.has(entry.name) || opts.removeStale?.(entry.name)) continue;
      await carryOver(fs, path.join(target, entry.name), path.join(tmp, entry.name), entry.isFile());
    }
    await fs.chmod(tmp, existingMode!);
    try {
      await fs.rename(target, old);
    } catch (e) {
      if (!UNMOVABLE.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
      await moveFilesInto(fs, tmp, target, order, files, opts.removeStale);
      return;
    }
    aside = true;
    await fs.rename(tmp, target);
    aside = false;
    // The new folder is in place; an old folder that cannot be deleted is only clutter.
    await fs.rm(old, { recursive: true, force: true }).catch(() => undefined);
  } catch (e) {
    let restoreFailed: unknown;
    if (aside) await fs.rename(old, target).catch((r: unknown) => (restoreFailed = r));
    await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    if (createdParent) await fs.rm(createdParent, { recursive: true, force: true }).catch(() => undefined);
    if (restoreFailed !== undefined) {
      const err = ioError('Cannot write to', dir, e);
      throw new SelfxitError(
        'IO_ERROR',
        `${err.message}; the previous folder could not be put back and is at "${old}"`,
        { path: dir, previous: old },
        { cause: e },
      );
    }
    throw ioError('Cannot write to', dir, e);
  }
}

/** Puts an entry of the old folder into the new one: a hard link for a file (the same file, as a move would keep
 * it), else a copy (folders, links, file systems without hard links). */
async function carryOver(fs: DirFs, from: string, to: string, isFile: boolean): Promise<void> {
  if (isFile) {
    try {
      await fs.link(from, to);
      return;
    } catch {
      // fall through to a copy
    }
  }
  await fs.cp(from, to, {
    recursive: true,
    preserveTimestamps: true,
    verbatimSymlinks: true,
    errorOnExist: true,
    force: false,
  });
}

/** The fallback for an output folder that cannot be renamed: moves the files of `tmp` into it one by one (`order`,
 * the `last` file last), removes stale files, then the empty `tmp`. */
async function moveFilesInto(
  fs: DirFs,
  tmp: string,
  target: string,
  order: readonly string[],
  files: ReadonlyMap<string, unknown>,
  removeStale: ((name: string) => boolean) | undefined,
): Promise<void> {
  for (const name of order) await fs.rename(path.join(tmp, name), path.join(target, name));
  if (removeStale) {
    for (const name of await fs.readdir(target)) {
      if (!files.has(name) && removeStale(name)) await fs.rm(path.join(target, name), { force: true, recursive: true });
    }
  }
  await fs.rm(tmp, { recursive: true, force: true });
}

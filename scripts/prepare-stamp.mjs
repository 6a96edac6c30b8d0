// Shared by scripts/demo.mjs and scripts/bench.mjs: what decides whether a prepared bundle is still current —
// file hashes and a hash of the sources `selfxit prepare` runs — and a child-process runner.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** sha256 (hex) of a file. */
export async function sha256File(file) {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/** Hash of the sources that decide what prepare writes, so that a changed calibrator rebuilds the bundle. */
export async function sourceHash() {
  const h = createHash('sha256');
  const walk = async (dir) => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else if (e.name.endsWith('.ts')) h.update(full.slice(root.length)).update(await readFile(full));
    }
  };
  for (const d of ['src/graph', 'src/calibrate', 'src/bundle', 'src/cli'])
    if (existsSync(path.join(root, d))) await walk(path.join(root, d));
  return h.digest('hex');
}

/** Runs a command in the repository root with inherited stdio; rejects on a non-zero exit. */
export function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: root, stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(undefined) : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}`)),
    );
  });
}

// Playwright global setup: builds the package (the tests load dist/ as a consumer would) and writes the
// uncalibrated test bundles to e2e/.bundles/. SELFXIT_E2E_SKIP_BUILD=1 reuses an existing dist/.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeTinyBundles } from './fixtures/tiny-bundles.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export default async function globalSetup(): Promise<void> {
  const skip = process.env.SELFXIT_E2E_SKIP_BUILD === '1' && existsSync(path.join(root, 'dist/selfxit.js')) && existsSync(path.join(root, 'dist/selfxit.iife.js'));
  if (!skip) {
    // esm + iife + ort are what the pages load; core/cli/types are not needed by the browser tests.
    execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs'), 'esm', 'iife', 'ort'], { cwd: root, stdio: 'inherit' });
  }
  const { counts } = await writeTinyBundles(path.join(root, 'e2e/.bundles'));
  console.log(`test bundles written to e2e/.bundles (tiny: ${counts.join('/')} samples leave at exit 0 / exit 1 / backbone)`);
}

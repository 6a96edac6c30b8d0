// Playwright global setup: builds the package (the tests load dist/ as a consumer would) and the prepare test worker
// (e2e/.build/), and writes the uncalibrated test bundles and the calibrated MobileNet-style ones to e2e/.bundles/. SELFXIT_E2E_SKIP_BUILD=1 reuses an
// existing dist/ and e2e/.build/ (each is still built when missing).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildPrepareWorker, PREPARE_WORKER } from './fixtures/build-prepare-worker.js';
import { writeMobileBundles } from './fixtures/mobile-bundles.js';
import { writeTinyBundles } from './fixtures/tiny-bundles.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export default async function globalSetup(): Promise<void> {
  const reuse = process.env.SELFXIT_E2E_SKIP_BUILD === '1';
  const skip =
    reuse && existsSync(path.join(root, 'dist/selfxit.js')) && existsSync(path.join(root, 'dist/selfxit.iife.js'));
  if (!skip) {
    // esm + iife + ort are what the pages load; core/cli/types are not needed by the browser tests.
    execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs'), 'esm', 'iife', 'ort'], {
      cwd: root,
      stdio: 'inherit',
    });
  }
  // e2e/prepare.spec.ts: prepare() from src/core.ts bundled for a module worker (it runs ORT from dist/ort/).
  if (!(reuse && existsSync(path.join(root, PREPARE_WORKER)))) {
    const t0 = Date.now();
    await buildPrepareWorker(root);
    console.log(`built ${PREPARE_WORKER} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const { counts } = await writeTinyBundles(path.join(root, 'e2e/.bundles'));
  console.log(
    `test bundles written to e2e/.bundles (tiny: ${counts.join('/')} samples leave at exit 0 / exit 1 / backbone)`,
  );
  const t0 = Date.now();
  const mobile = await writeMobileBundles(path.join(root, 'e2e/.bundles'));
  console.log(
    `MobileNet-style bundles prepared in ${((Date.now() - t0) / 1000).toFixed(1)} s (samples per exit, backbone last: ${Object.entries(
      mobile,
    )
      .map(([k, v]) => `${k} ${v.join('/')}`)
      .join(', ')})`,
  );
}

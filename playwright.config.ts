// Playwright: Debian's Chromium (never a downloaded browser), one worker (2-core machine), and a cross-origin
// isolated static server for dist/, the e2e pages and test bundles. WebGPU runs on SwiftShader with --enable-unsafe-webgpu.
// The server's port is a free one the OS gives (SELFXIT_E2E_PORT chooses one instead); a server already there is never
// reused, since it could be someone else's.
import { execFileSync } from 'node:child_process';
import { defineConfig } from '@playwright/test';

/** Listens on `port` (0: any free one) for a moment in a child process; prints the port, or exits 1 when it is taken. */
const PROBE =
  "const s=require('net').createServer();s.once('error',e=>{console.error(e.code);process.exit(1)});" +
  "s.listen(Number(process.argv[1]),'127.0.0.1',()=>{console.log(s.address().port);s.close()})";

function probePort(port: number): number | undefined {
  try {
    return Number(execFileSync(process.execPath, ['-e', PROBE, String(port)], { encoding: 'utf8', stdio: 'pipe' }));
  } catch {
    return undefined;
  }
}

/**
 * The e2e server's port: SELFXIT_E2E_PORT when set (it must be free), else a free port from the OS. Chosen once in the
 * runner and handed to the workers (which load this file again) through the environment they inherit.
 */
function e2ePort(): number {
  const chosen = process.env.SELFXIT_E2E_PORT_CHOSEN;
  if (chosen) return Number(chosen);
  const asked = process.env.SELFXIT_E2E_PORT;
  let port: number | undefined;
  if (asked !== undefined && asked !== '') {
    port = Number(asked);
    if (!(Number.isInteger(port) && port > 0 && port < 65536))
      throw new Error(`SELFXIT_E2E_PORT=${asked} is not a port number`);
    if (probePort(port) === undefined)
      throw new Error(
        `SELFXIT_E2E_PORT=${asked}: another process listens on 127.0.0.1:${asked}; ` +
          'unset SELFXIT_E2E_PORT to use a free port, or name a free one',
      );
  } else {
    port = probePort(0);
    if (port === undefined) throw new Error('no free TCP port on 127.0.0.1 for the e2e server (SELFXIT_E2E_PORT)');
  }
  process.env.SELFXIT_E2E_PORT_CHOSEN = String(port);
  return port;
}

const port = e2ePort();

export default defineConfig({
  testDir: 'e2e',
  testMatch: '**/*.spec.ts',
  globalSetup: './e2e/global-setup.ts',
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 120_000,
  expect: { timeout: 10_000 },
  reporter: [['list']],
  outputDir: 'test-results',
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    browserName: 'chromium',
    headless: true,
    launchOptions: {
      executablePath: process.env.SELFXIT_CHROMIUM ?? '/usr/bin/chromium',
      // --enable-unsafe-webgpu alone gives navigator.gpu a SwiftShader adapter here (headless, no GPU);
      // --enable-features=Vulkan / --use-angle=swiftshader / --use-webgpu-adapter=swiftshader were not needed.
      args: [
        '--enable-unsafe-webgpu',
        '--no-sandbox',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
    trace: 'off',
  },
  webServer: {
    command: 'node e2e/serve.mjs',
    url: `http://127.0.0.1:${port}/__health`,
    env: { SELFXIT_E2E_PORT: String(port) },
    reuseExistingServer: false,
    timeout: 30_000,
    stdout: 'ignore',
    stderr: 'pipe',
  },
});

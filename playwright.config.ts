// Playwright: Debian's Chromium (never a downloaded browser), one worker (2-core machine), and a cross-origin
// isolated static server for dist/, the e2e pages and test bundles. WebGPU runs on SwiftShader with --enable-unsafe-webgpu.
import { defineConfig } from '@playwright/test';

const port = Number(process.env.SELFXIT_E2E_PORT ?? 47613);

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

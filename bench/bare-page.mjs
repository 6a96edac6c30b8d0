// A bench page without the SDK (bench/turns.mjs, bench/transport.mjs): serves `mounts` on 127.0.0.1 (cross-origin
// isolated, as scripts/static-server.mjs does), opens `pagePath` in Debian's Chromium, waits for `window.ready`, runs
// `fn(page)`, and closes both whatever happens.
import { chromium } from 'playwright';
import { serveStatic } from '../scripts/static-server.mjs';

export async function withBarePage({ port = 0, mounts, pagePath }, fn) {
  const server = await serveStatic({ port, mounts });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => console.error('page error:', e.message));
    await page.goto(`${server.url}${pagePath}`);
    if (!(await page.evaluate(() => crossOriginIsolated))) throw new Error('the page is not cross-origin isolated');
    await page.waitForFunction(() => window.ready === true);
    return await fn(page);
  } finally {
    await browser.close();
    await server.close();
  }
}

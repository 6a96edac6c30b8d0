// playwright.config.ts picks the e2e server's port: a free one from the OS by default, so `npm test` works while another
// process holds a port (47613, the old fixed one, included); SELFXIT_E2E_PORT names one, and a taken one fails with a
// message naming the variable. It never reuses a server already there.
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';

interface LoadedConfig {
  readonly use?: { readonly baseURL?: string };
  readonly webServer?: {
    readonly url?: string;
    readonly reuseExistingServer?: boolean;
    readonly env?: Record<string, string>;
  };
}

/** Holds `port` on 127.0.0.1 (0: any) until closed; undefined when someone else already holds it. */
async function hold(port: number): Promise<net.Server | undefined> {
  const server = net.createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function loadConfig(env: Record<string, string | undefined>): Promise<LoadedConfig> {
  vi.resetModules();
  for (const [k, v] of Object.entries(env)) vi.stubEnv(k, v);
  return ((await import('../playwright.config.js')) as { default: LoadedConfig }).default;
}

const portOf = (url: string | undefined): number => Number(new URL(url!).port);

describe('playwright.config.ts e2e port', () => {
  const held: net.Server[] = [];
  afterEach(async () => {
    vi.unstubAllEnvs();
    await Promise.all(held.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  it('by default picks a free port, not 47613 while another process holds it, and never reuses a server', async () => {
    const other = await hold(47613); // undefined: someone else holds it already, which is the case to survive too
    if (other) held.push(other);
    const config = await loadConfig({ SELFXIT_E2E_PORT: undefined, SELFXIT_E2E_PORT_CHOSEN: undefined });
    const port = portOf(config.use?.baseURL);
    expect(port).not.toBe(47613);
    expect(portOf(config.webServer?.url)).toBe(port);
    expect(config.webServer?.env?.SELFXIT_E2E_PORT).toBe(String(port));
    expect(config.webServer?.reuseExistingServer).toBe(false);
    const mine = await hold(port);
    expect(mine, `port ${port} should be free`).toBeDefined();
    held.push(mine!);
  });

  it('SELFXIT_E2E_PORT chooses the port; a taken one fails naming the variable', async () => {
    const probe = (await hold(0))!;
    const free = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const config = await loadConfig({ SELFXIT_E2E_PORT: String(free), SELFXIT_E2E_PORT_CHOSEN: undefined });
    expect(portOf(config.use?.baseURL)).toBe(free);

    const taken = (await hold(0))!;
    held.push(taken);
    const port = (taken.address() as net.AddressInfo).port;
    await expect(loadConfig({ SELFXIT_E2E_PORT: String(port), SELFXIT_E2E_PORT_CHOSEN: undefined })).rejects.toThrow(
      /SELFXIT_E2E_PORT/,
    );
  });
});

// The findings of an integrator's review (packaging and first use): the default worker on another origin (a script tag
// or an app's assets on a CDN) starts through the same-origin blob module, as `workerUrl` does.
import { resolveObjectURL } from 'node:buffer';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import { literalWorkerUrl, WorkerClient } from '../src/page/worker-client.js';
import { closeFakeWorkers, fakeWorkerApi, stubWorkers } from './fixtures/page-fakes.js';

afterEach(() => {
  closeFakeWorkers();
  vi.unstubAllGlobals();
});

describe('the default worker on another origin', () => {
  it('starts through a same-origin blob module that imports the URL the bundler wrote', async () => {
    const fakes = stubWorkers([fakeWorkerApi()]);
    const Fake = globalThis.Worker;
    const asked: string[] = [];
    // A browser: a worker script on another origin than the page's throws a SecurityError.
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/app/' });
    vi.stubGlobal(
      'Worker',
      class {
        constructor(u: string | URL, o?: WorkerOptions) {
          asked.push(String(u));
          if (!String(u).startsWith('blob:') && new URL(String(u)).origin !== 'https://page.test')
            throw new DOMException(`Script at '${String(u)}' cannot be accessed from origin`, 'SecurityError');
          return new Fake(u, o);
        }
      },
    );
    const literal = literalWorkerUrl()!;
    expect(literal.href).toMatch(/\/runtime\/worker\.ts$/); // this module is the source here
    expect(globalThis.Worker).not.toBe(Fake); // the stand-in put back
    const client = WorkerClient.start(undefined);
    expect(asked).toEqual([literal.href, expect.stringMatching(/^blob:/)]);
    const shim = await resolveObjectURL(asked[1]!)!.text();
    expect(shim).toBe(`import ${JSON.stringify(literal.href)};`);
    expect(fakes).toHaveLength(1);
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a SecurityError for a worker on the page origin (a policy that refuses it) is not retried', () => {
    vi.stubGlobal('location', { origin: 'null', href: 'file:///app/' }); // the literal is a file: URL here
    let n = 0;
    vi.stubGlobal(
      'Worker',
      class {
        constructor() {
          n++;
          throw new DOMException('blocked', 'SecurityError');
        }
      },
    );
    expect(() => WorkerClient.start(undefined)).toThrow(
      expect.objectContaining({ code: 'RUNTIME_FILES_UNAVAILABLE', message: expect.stringMatching(/: blocked$/) }),
    );
    expect(n).toBe(1);
  });
});

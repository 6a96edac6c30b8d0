// The findings of an integrator's review (packaging and first use): the default worker on another origin (a script tag
// or an app's assets on a CDN) starts through the same-origin blob module, as `workerUrl` does; the exports map
// gives the worker and onnxruntime files by subpath; CSP refusals and a learn load's missing onnxruntime files are
// told as such; a bundle on another origin without CORS and an HTML page for a manifest are named in the message.
import { resolveObjectURL } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import { literalWorkerUrl, startAt, WorkerClient } from '../src/page/worker-client.js';
import type { InitRequest } from '../src/protocol.js';
import * as ortNode from 'onnxruntime-node';
import { isOutage, parseManifest } from '../src/runtime/bundle-source.js';
import { networkError } from '../src/runtime/fetch-file.js';
import { LearnRuntime } from '../src/runtime/learn-runtime.js';
import { runtimeFilesError, type OrtHandle } from '../src/runtime/ort-backend.js';
import { fashionLearnRequest, MemoryLearnStore, modelDir } from './fixtures/learn-runtime.js';
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
    // The page is on another origin than the module (a file: URL here): the worker is never tried there directly,
    // whether the browser would throw a SecurityError at once (Chromium) or fail it later with an error event.
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/app/' });
    class Stub {
      constructor(u: string | URL, o?: WorkerOptions) {
        asked.push(String(u));
        return new Fake(u, o);
      }
    }
    vi.stubGlobal('Worker', Stub);
    const literal = literalWorkerUrl()!;
    expect(literal.href).toMatch(/\/runtime\/worker\.ts$/); // this module is the source here
    expect(asked).toEqual([]); // recorded, not started
    expect(globalThis.Worker).toBe(Stub); // the stand-in put back
    const client = WorkerClient.start(undefined);
    expect(asked).toEqual([expect.stringMatching(/^blob:/)]);
    const shim = await resolveObjectURL(asked[0]!)!.text();
    expect(shim).toBe(`import ${JSON.stringify(literal.href)};`);
    expect(fakes).toHaveLength(1);
    client.fail(new SelfxitError('DISPOSED', 'done'));
  });

  it('a default worker the bundler made classic (webpack 5: `type: undefined`) starts through a classic blob that importScripts it', async () => {
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/app/' });
    const asked: [string, WorkerOptions | undefined][] = [];
    vi.stubGlobal(
      'Worker',
      class {
        constructor(u: string | URL, o?: WorkerOptions) {
          asked.push([String(u), o]);
        }
      },
    );
    const started = startAt(new URL('https://cdn.test/app/100.js'), false);
    expect(asked).toEqual([[expect.stringMatching(/^blob:/), { name: 'selfxit' }]]);
    expect(await resolveObjectURL(asked[0]![0])!.text()).toBe('importScripts("https://cdn.test/app/100.js");');
    expect(started.crossOrigin?.href).toBe('https://cdn.test/app/100.js');
    URL.revokeObjectURL(started.blobUrl!);
  });

  it('frozen globals (SES): the URL cannot be recorded, the literal starts the worker and its own error is told', () => {
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/app/' });
    const failing = class {
      constructor() {
        throw new DOMException('the original error', 'SecurityError');
      }
    };
    const native = Object.getOwnPropertyDescriptor(globalThis, 'Worker');
    Object.defineProperty(globalThis, 'Worker', { value: failing, writable: false, configurable: true });
    try {
      expect(literalWorkerUrl()).toBeUndefined();
      expect(() => WorkerClient.start(undefined)).toThrow(
        expect.objectContaining({
          code: 'RUNTIME_FILES_UNAVAILABLE',
          message: expect.stringMatching(/: the original error$/),
        }),
      );
    } finally {
      if (native) Object.defineProperty(globalThis, 'Worker', native);
      else delete (globalThis as { Worker?: unknown }).Worker;
    }
  });

  it("the default worker's recorded URL on another origin is the one asked when it fails; no answer names CORS", async () => {
    vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
    const fakes = stubWorkers([fakeWorkerApi()]);
    vi.stubGlobal('location', { origin: 'https://page.test', href: 'https://page.test/app/' });
    const client = WorkerClient.start(undefined);
    const pending = client.init({} as InitRequest);
    fakes[0]!.worker.dispatchEvent(new Event('error'));
    await expect(pending).rejects.toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: literalWorkerUrl()!.href, crossOrigin: true },
      message: expect.stringMatching(/Access-Control-Allow-Origin/),
    });
    await expect(pending).rejects.toThrow(`from ${literalWorkerUrl()!.href} (the worker file your bundler emitted`);
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

describe("the package's exports", () => {
  it('resolve the worker and the onnxruntime files by subpath (selfxit/dist/…), as well as the entries', () => {
    // the package as installed: package.json and empty stand-ins for the files it names (no build needed)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'selfxit-exports-'));
    const pkg = path.join(dir, 'node_modules/selfxit');
    const files = [
      'dist/selfxit.js',
      'dist/core.js',
      'dist/selfxit.iife.js',
      'dist/selfxit.worker.js',
      'dist/ort/ort.min.mjs',
      'dist/ort/ort-wasm-simd-threaded.wasm',
      'dist/types/index.d.ts',
      'dist/types/core.d.ts',
    ];
    for (const f of files) {
      fs.mkdirSync(path.dirname(path.join(pkg, f)), { recursive: true });
      fs.writeFileSync(path.join(pkg, f), '');
    }
    fs.copyFileSync(new URL('../package.json', import.meta.url), path.join(pkg, 'package.json'));
    try {
      const names = [
        'selfxit',
        'selfxit/core',
        'selfxit/script',
        'selfxit/dist/selfxit.worker.js',
        'selfxit/dist/ort/ort.min.mjs',
        'selfxit/dist/ort/ort-wasm-simd-threaded.wasm',
      ];
      // import.meta.resolve (ESM: what Vite and Node's import follow) and require.resolve (CommonJS)
      const script = `for (const n of ${JSON.stringify(names)}) console.log(import.meta.resolve(n));`;
      const esm = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' });
      const want = ['selfxit.js', 'core.js', 'selfxit.iife.js', 'selfxit.worker.js', 'ort/ort.min.mjs'];
      expect(esm.trim().split('\n')).toEqual(
        [...want, 'ort/ort-wasm-simd-threaded.wasm'].map((f) => pathToFileURL(path.join(pkg, 'dist', f)).href),
      );
      // TypeScript's moduleResolution "node" (node10), which reads no exports: typesVersions maps selfxit/core
      const node10 = { moduleResolution: ts.ModuleResolutionKind.Node10 };
      const typesOf = (name: string): string | undefined =>
        ts.resolveModuleName(name, path.join(dir, 'index.ts'), node10, ts.sys).resolvedModule?.resolvedFileName;
      expect(typesOf('selfxit')).toBe(path.join(pkg, 'dist/types/index.d.ts'));
      expect(typesOf('selfxit/core')).toBe(path.join(pkg, 'dist/types/core.d.ts'));
      const require = createRequire(path.join(dir, 'index.js'));
      expect(require.resolve('selfxit/dist/selfxit.worker.js')).toBe(path.join(pkg, 'dist/selfxit.worker.js'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a Content-Security-Policy that refuses WebAssembly', () => {
  const files = ['https://x.test/ort/ort-wasm-simd-threaded.mjs', 'https://x.test/ort/ort-wasm-simd-threaded.wasm'];
  it.each([
    [
      'Chromium',
      "no available backend found. ERR: [wasm] RuntimeError: Aborted(CompileError: WebAssembly.instantiate(): Compiling or instantiating WebAssembly module violates the following Content Security policy directive because 'unsafe-eval' is not an allowed source of script in the following Content Security Policy directive: \"script-src 'self'\".)",
    ],
    [
      'Firefox',
      'no available backend found. ERR: [wasm] CompileError: call to WebAssembly.instantiate() blocked by CSP',
    ],
    [
      'Safari',
      "Refused to create a WebAssembly object because 'unsafe-eval' or 'wasm-unsafe-eval' is not an allowed source of script",
    ],
  ])('%s: the message says which policy to change, not where to serve the files', (_, message) => {
    const e = runtimeFilesError('segment 0', new Error(message), files);
    expect(e).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE', details: { csp: true, files } });
    expect(e.message).toMatch(/Content-Security-Policy.*script-src 'wasm-unsafe-eval'/);
    expect(e.message).not.toMatch(/wasmPaths/);
  });

  it("a script served with a MIME type that is not JavaScript (Chromium's 'Refused to execute') is no CSP", () => {
    const message =
      "no available backend found. ERR: Refused to execute script from 'https://x.test/ort/ort-wasm-simd-threaded.mjs' " +
      "because its MIME type ('text/html') is not executable, and strict MIME type checking is enabled.";
    const e = runtimeFilesError('segment 0', new Error(message), files);
    expect(e.details).not.toHaveProperty('csp');
    expect(e.message).toMatch(/wasmPaths/);
  });

  it('a file that is missing still says where to serve it', () => {
    const e = runtimeFilesError('segment 0', new Error('no available backend found. Failed to fetch'), files);
    expect(e.message).toMatch(/wasmPaths/);
    expect(e.details).not.toHaveProperty('csp');
  });
});

describe("a learn load whose onnxruntime files cannot be loaded (the shape probe is onnxruntime's first session)", () => {
  it('fails with RUNTIME_FILES_UNAVAILABLE naming the file, not SHAPE_UNKNOWN', async () => {
    const model = fs.readFileSync(path.join(modelDir, 'model.onnx'));
    vi.stubGlobal('fetch', async () => new Response(model, { status: 200 }));
    const glue = 'https://x.test/nowhere/ort-wasm-simd-threaded.mjs';
    const noBackend = new Error(
      `no available backend found. ERR: [wasm] TypeError: Failed to fetch dynamically imported module: ${glue}`,
    );
    const ort = {
      ...ortNode,
      InferenceSession: { create: () => Promise.reject(noBackend) },
    } as unknown as OrtHandle['ort'];
    const loadOrt = async (): Promise<OrtHandle> => ({
      ort,
      backend: 'wasm',
      threads: 1,
      fallbackReason: undefined,
      runtimeFiles: [glue, 'https://x.test/nowhere/ort-wasm-simd-threaded.wasm'],
    });
    const req = fashionLearnRequest('https://x.test', {}, { persist: false });
    const e = await LearnRuntime.open(req, () => {}, { loadOrt, learnStore: new MemoryLearnStore() }).catch(
      (x: unknown) => x,
    );
    expect(e).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE', details: { url: glue } });
    expect((e as Error).message).toMatch(/onnxruntime's files could not be loaded.*wasmPaths/);
  });
});

describe('bundle fetch and manifest messages that point the right way', () => {
  const failed = new TypeError('Failed to fetch');
  it('a network failure of a file on another origin names a missing Access-Control-Allow-Origin too', () => {
    vi.stubGlobal('location', { href: 'https://app.test/page/', origin: 'https://app.test' });
    const e = networkError('https://cdn.test/b/manifest.json', failed);
    expect(e).toMatchObject({ code: 'FETCH_FAILED', details: { status: 0, crossOrigin: true } });
    expect(e.message).toMatch(/offline, or the server sends no Access-Control-Allow-Origin for https:\/\/app\.test/);
    expect(isOutage(e)).toBe(true); // an offline device looks the same: the cached manifest may still stand in
  });

  it('on the same origin (or with no page origin, as in Node): network error or offline only', () => {
    vi.stubGlobal('location', { href: 'https://app.test/page/', origin: 'https://app.test' });
    const same = networkError('/b/manifest.json', failed);
    expect(same.message).toMatch(/\(network error or offline\)$/);
    expect(same.details).not.toHaveProperty('crossOrigin');
    vi.unstubAllGlobals();
    expect(networkError('https://cdn.test/b/manifest.json', failed).details).not.toHaveProperty('crossOrigin');
  });

  it('a manifest URL answered with an HTML page (an app fallback route) says so', () => {
    const url = 'https://app.test/route/bundle/manifest.json';
    let e: unknown;
    try {
      parseManifest('\n<!doctype html><html><body>app</body></html>', url);
    } catch (x) {
      e = x;
    }
    expect(e).toMatchObject({ code: 'INVALID_BUNDLE', details: { url, html: true } });
    expect((e as Error).message).toMatch(/not JSON .*: the server answered HTML .*check the bundle URL$/s);
    expect(() => parseManifest('{"version": ', url)).toThrow(expect.objectContaining({ details: { url } }));
  });
});

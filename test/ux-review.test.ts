// The findings of a "new user" review: the plain-.onnx hint names the input normalisation and a learning load left at
// mean 0 / std 1 warns (learning(), console, CLI); unknown load() options are refused with a suggestion; a missing worker
// and an onnxruntime build that cannot be imported name the URL (with what the server answered); package.json resolves
// for require() and ships docs/.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { prepareCommand } from '../src/cli/prepare.js';
import { runCli } from '../src/cli/dispatch.js';
import { load } from '../src/page/classifier.js';
import { resolveLoadOptions } from '../src/page/options.js';
import { builtWorkerUrl, WorkerClient } from '../src/page/worker-client.js';
import type { LearningState, WorkerApi } from '../src/protocol.js';
import { ortImportError } from '../src/runtime/ort-backend.js';
import type { LoadOptions } from '../src/types.js';
import { writePrepareInputs } from './fixtures/cli-helpers.js';
import { closeFakeWorkers, fakeWorkerApi, manifest, state0, stubWorkers } from './fixtures/page-fakes.js';

afterEach(() => {
  closeFakeWorkers();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

const MODEL = 'https://x.test/m/model.onnx';
const quiet = { workerUrl: 'https://x.test/selfxit.worker.js', heartbeatMs: 0, callTimeoutMs: 0 } as const;

describe('a plain .onnx model and its input normalisation', () => {
  it("the hint of a plain model loaded without learn names learn.input's mean and std", () => {
    expect(() => resolveLoadOptions(MODEL)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/input: \{ mean, std \}/) }),
    );
  });

  it('learning a plain model with mean/std left at their defaults warns; set, or from a bundle, it does not', () => {
    expect(resolveLoadOptions(MODEL, { learn: true }).warnings).toEqual([
      expect.stringMatching(/learn\.input\.mean and learn\.input\.std not set.*mean 0, std 1/),
    ]);
    expect(resolveLoadOptions(MODEL, { learn: { input: { mean: [0.5] } } }).warnings).toEqual([
      expect.stringMatching(/learn\.input\.std not set.*std 1/),
    ]);
    expect(resolveLoadOptions(MODEL, { learn: { input: { mean: [0.5], std: [0.25] } } }).warnings).toEqual([]);
    expect(resolveLoadOptions('https://x.test/b/', { learn: true }).warnings).toEqual([]);
  });

  /** A worker that reports a learning state (as a runtime loaded with `learn` does). */
  function learningApi(): WorkerApi {
    const learning = {
      ...{ samplesSeen: 0, fits: 0, exitsOn: false, exits: 0, version: 1, modelHash: 'm' },
      ...{ thresholds: [0.9, 0.9], target: 0.99, expectedAgreement: 1, macsFraction: 1 },
    } as unknown as LearningState;
    return { ...fakeWorkerApi(), init: async () => ({ manifest, manifestHash: 'h', state: { ...state0, learning } }) };
  }

  it('load() warns once on the console and learning() reports the warning', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    stubWorkers([learningApi(), learningApi()]);
    const clf = await load(MODEL, { ...quiet, learn: true });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toMatch(/^selfxit: learn\.input\.mean/);
    expect(clf.learning().warnings).toEqual([expect.stringMatching(/must match how the model was trained/)]);
    clf.learning();
    expect(warn).toHaveBeenCalledTimes(1);
    await clf.dispose();
    const set = await load(MODEL, { ...quiet, learn: { input: { mean: [0.5], std: [0.5] } } });
    expect(set.learning().warnings).toBeUndefined();
    expect(warn).toHaveBeenCalledTimes(1);
    await set.dispose();
  });

  it('selfxit prepare without --mean/--std warns on stderr that the default 0/1 normalisation is used', async () => {
    const { dir, model, samples } = writePrepareInputs('selfxit-ux-');
    const run = async (...extra: string[]): Promise<string> => {
      let stderr = '';
      const io = { stdout: () => {}, stderr: (t: string) => (stderr += t) };
      const argv = ['prepare', model, '--samples', samples, '--limit', '200', '--target', '0.9'];
      const code = await runCli([...argv, '--out', path.join(dir, 'b'), ...extra], { prepare: prepareCommand }, io);
      expect(code, stderr).toBe(0);
      return stderr;
    };
    expect(await run()).toMatch(
      /warning: --mean \(0\) and --std \(1\) not given.*must match how the model was trained/,
    );
    expect(await run('--mean', '0.5')).toMatch(/warning: --std \(1\) not given/);
    expect(await run('--mean', '0.5', '--std', '0.25')).not.toMatch(/not given/);
  });
});

describe('unknown load() options', () => {
  const refused = (options: object) => () => resolveLoadOptions('https://x.test/b/', options as LoadOptions);

  it('are refused with INVALID_ARGUMENT, naming the option meant', () => {
    expect(refused({ workerURL: '/w.js' })).toThrow(
      expect.objectContaining({
        code: 'INVALID_ARGUMENT',
        message: 'workerURL is not a load() option (did you mean workerUrl?)',
      }),
    );
    expect(refused({ treads: 2 })).toThrow(
      expect.objectContaining({ message: 'treads is not a load() option (did you mean threads?)' }),
    );
    expect(refused({ colour: 'red' })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: 'colour is not a load() option' }),
    );
    expect(refused({ ...quiet, backend: 'wasm', threads: 2 })).not.toThrow();
  });

  it('learn.inputs is refused naming learn.input', () => {
    expect(() => resolveLoadOptions(MODEL, { learn: { inputs: { mean: [0.5] } } as never })).toThrow(
      expect.objectContaining({
        code: 'INVALID_ARGUMENT',
        message: 'learn.inputs is not a learn option (did you mean input?)',
      }),
    );
  });
});

describe('runtime files that cannot be loaded name their URL', () => {
  it('the default worker URL is stated only where it is the one fetched: the plain dist/ and script-tag builds', () => {
    expect(builtWorkerUrl('https://x.test/lib/selfxit.js')).toBe('https://x.test/lib/selfxit.worker.js');
    expect(builtWorkerUrl('https://x.test/js/selfxit.iife.js')).toBe('https://x.test/js/selfxit.worker.js');
    expect(builtWorkerUrl('http://localhost:5173/node_modules/selfxit/dist/selfxit.js?v=3')).toBe(
      'http://localhost:5173/node_modules/selfxit/dist/selfxit.worker.js',
    );
    // an app's bundler emitted the worker under its own (hashed) name: no guess
    expect(builtWorkerUrl('https://x.test/assets/index-3f2a9c.js')).toBeUndefined();
    expect(builtWorkerUrl('file:///app/node_modules/selfxit/dist/selfxit.js')).toBeUndefined(); // webpack's inlined path
    expect(builtWorkerUrl('')).toBeUndefined();
  });

  it('a worker started without workerUrl from bundled code that fails: no guessed URL, the generic wording', async () => {
    const workers = stubWorkers([fakeWorkerApi()]);
    const client = WorkerClient.start(undefined); // this module is the source here, as in an app's bundle
    const pending = client.init({} as never);
    workers[0]!.worker.dispatchEvent(new Event('error')); // before the worker ever answered
    const e = await pending.catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE' });
    expect((e as { details: object }).details).not.toHaveProperty('url');
    expect((e as Error).message).toMatch(/could not be started from the worker file your bundler emitted for selfxit/);
    expect((e as Error).message).not.toMatch(/selfxit\.worker\.js next to/);
  });

  it('a worker started from workerUrl that fails names that URL in the message and details.url', async () => {
    vi.stubGlobal('fetch', async () => Promise.reject(new TypeError('Failed to fetch'))); // the server is gone
    const workers = stubWorkers([fakeWorkerApi()]);
    const client = WorkerClient.start(new URL('https://x.test/w/selfxit.worker.js'));
    const pending = client.init({} as never);
    workers[0]!.worker.dispatchEvent(new Event('error'));
    const e = await pending.catch((x: unknown) => x);
    expect(e).toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url: 'https://x.test/w/selfxit.worker.js' },
    });
    expect((e as Error).message).toContain('from https://x.test/w/selfxit.worker.js');
    expect((e as Error).message).not.toContain('could not be fetched'); // no answer tells nothing
  });

  const url = 'https://x.test/assets/ort/ort.wasm.min.mjs';
  const importFailure = new TypeError(`Failed to fetch dynamically imported module: ${url}`);
  const files = ['https://x.test/ort/ort-wasm-simd-threaded.mjs', 'https://x.test/ort/ort-wasm-simd-threaded.wasm'];
  const serve = (status: number, contentType: string) =>
    vi.stubGlobal('fetch', async () => new Response('x', { status, headers: { 'content-type': contentType } }));

  it('an onnxruntime build served with a wrong MIME type: the message and details say what the server answered', async () => {
    serve(200, 'text/plain');
    const e = await ortImportError(importFailure, files);
    expect(e).toMatchObject({
      code: 'RUNTIME_FILES_UNAVAILABLE',
      details: { url, status: 200, contentType: 'text/plain', files: [url, ...files] },
    });
    expect(e.message).toMatch(/HTTP 200 with content-type "text\/plain".*text\/javascript/);
    expect(e.message).not.toMatch(/wasmPaths/);
  });

  it('a missing onnxruntime build: the status; no URL in the message: the generic error', async () => {
    serve(404, 'text/html');
    const e = await ortImportError(importFailure, files);
    expect(e).toMatchObject({ details: { url, status: 404 } });
    expect(e.message).toMatch(/HTTP 404.*dist\/ort\//);
    const generic = await ortImportError(new TypeError('Importing a module script failed.'), files);
    expect(generic).toMatchObject({ code: 'RUNTIME_FILES_UNAVAILABLE', details: { files } });
  });
});

describe('package.json', () => {
  const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    exports: Record<string, string | Record<string, string>>;
    files: string[];
  };

  it('every export with an import condition has a default one (require.resolve), and docs/ ships', () => {
    for (const [name, entry] of Object.entries(pkg.exports)) {
      if (typeof entry === 'string') continue;
      expect(entry.default, name).toBe(entry.import);
      expect(Object.keys(entry).at(-1), name).toBe('default');
    }
    expect(pkg.files).toContain('docs');
  });
});

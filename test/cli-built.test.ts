// The built CLI (bin/selfxit.js → dist/cli.js) as a consumer runs it: with onnxruntime-node (this repo), and from a
// simulated install that has only package.json's `dependencies` (onnxruntime-node is an optional peer dependency).
// Also the CLI's Node-side inputs: the onnxruntime-node loader and labels files.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSelfxitError, type SelfxitError } from '../src/errors.js';
import { readLabelFile } from '../src/cli/images.js';
import { analyzeModelNode, loadOrtNode } from '../src/cli/node-io.js';
import { chainGraph, residualGraph } from './fixtures/graphs.js';
import { cli, repoRoot, tempDir } from './fixtures/cli-helpers.js';
import { rejection } from './fixtures/rejection.js';

const dir = tempDir('selfxit-built-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const cliJs = path.join(repoRoot, 'dist/cli.js');
const binJs = path.join(repoRoot, 'bin/selfxit.js');
const fashion = path.join(repoRoot, 'public/models/fashion-resnet');
const fashionModel = path.join(fashion, 'model.onnx');

/** Newest modification time of any file under `d`. */
function newestMtime(d: string): number {
  let t = 0;
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

/**
 * dist/cli.js is built by `npm ci` (prepare → npm run build). When it is missing or older than src/, rebuild just
 * that target (`node scripts/build.mjs cli`, a few seconds) so the test runs the current sources; a failed build
 * fails the test with the build's output.
 */
function ensureBuiltCli(): void {
  if (fs.existsSync(cliJs) && fs.statSync(cliJs).mtimeMs >= newestMtime(path.join(repoRoot, 'src'))) return;
  const why = fs.existsSync(cliJs) ? 'is older than src/' : 'is missing';
  console.log(`[cli-built] dist/cli.js ${why}: running node scripts/build.mjs cli`);
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'scripts/build.mjs'), 'cli'], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 240_000,
  });
  if (r.status !== 0 || !fs.existsSync(cliJs)) {
    throw new Error(
      `dist/cli.js ${why} and \`node scripts/build.mjs cli\` failed (exit ${r.status}); run \`npm run build\`:\n${r.stdout}\n${r.stderr}`,
    );
  }
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
function node(args: string[], cwd: string): Run {
  const r = spawnSync(process.execPath, args, { cwd, encoding: 'utf8', timeout: 150_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

interface InspectJson {
  inputs: { name: string; dtype: string; shape: (number | string)[] }[];
  outputs: { name: string; dtype: string; shape: (number | string)[] }[];
  macs: number;
  params: number;
  cuts: { tensor: string; shape: (number | string)[]; dtype: string; macs: number; fraction: number }[];
}

beforeAll(ensureBuiltCli, 300_000);

describe('built CLI: node bin/selfxit.js', () => {
  it("inspect <shipped model> --json: one JSON object, the model card's MACs, same as the source CLI", async () => {
    const r = node([binJs, 'inspect', path.relative(repoRoot, fashionModel), '--json'], repoRoot);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as InspectJson;
    expect(Object.keys(j)).toEqual(['inputs', 'outputs', 'macs', 'params', 'cuts']);
    const card = JSON.parse(fs.readFileSync(path.join(fashion, 'model.json'), 'utf8')) as {
      input: string;
      output: string;
      shape: number[];
      macs: number;
    };
    const [h, w, c] = card.shape as [number, number, number];
    expect(j.inputs).toEqual([{ name: card.input, dtype: 'float32', shape: ['batch', c, h, w] }]);
    expect(j.outputs.map((o) => o.name)).toEqual([card.output]);
    expect(j.macs).toBe(card.macs);
    expect(j.params).toBeGreaterThan(0);
    const tensors = j.cuts.map((k) => k.tensor);
    expect(tensors).toContain('/stage3/stage3.1/Relu_1_output_0');
    for (const k of j.cuts) {
      expect(k.dtype).toBe('float32');
      expect(k.shape[0]).toBe('batch');
      expect(k.fraction).toBeCloseTo(k.macs / j.macs, 12);
    }
    // the bundle and the sources agree
    const src = await cli('inspect', fashionModel, '--json');
    expect(src.code).toBe(0);
    expect(j).toEqual(JSON.parse(src.stdout));
  }, 60_000);

  it('prepare --threads 2 trains on dist/head-worker.js: the bundle of --threads 1', () => {
    const calib = path.join(fashion, 'calib-u8.bin');
    const run = (threads: number): Run & { out: string } => {
      const out = path.join(dir, `threads-${threads}`);
      const args = ['prepare', fashionModel, '--samples', calib, '--shape', '28,28,1', '--mean', '0.286'];
      const r = node(
        [binJs, ...args, '--std', '0.353', '--limit', '600', '--threads', String(threads), '--out', out],
        dir,
      );
      return { ...r, out };
    };
    const [one, two] = [run(1), run(2)];
    expect(one.code, one.stderr).toBe(0);
    expect(two.code, two.stderr).toBe(0);
    expect(two.stdout).toMatch(/head training: 2 threads/);
    const files = fs.readdirSync(one.out).filter((f) => f !== 'manifest.json');
    expect(files.length).toBeGreaterThan(1);
    for (const f of files)
      expect(fs.readFileSync(path.join(two.out, f)).equals(fs.readFileSync(path.join(one.out, f))), f).toBe(true);
    // the manifests differ only in their date and timings
    const strip = (d: string): unknown => {
      const m = JSON.parse(fs.readFileSync(path.join(d, 'manifest.json'), 'utf8')) as Record<string, unknown> & {
        calibration: Record<string, unknown>;
      };
      return { ...m, createdAt: 0, calibration: { ...m.calibration, timings: 0 } };
    };
    expect(strip(two.out)).toEqual(strip(one.out));
  }, 180_000);

  it('error path: exit 1 with error [CODE], usage errors exit 2', () => {
    const text = path.join(dir, 'notes.onnx');
    fs.writeFileSync(text, 'not a model\n');
    const bad = node([binJs, 'inspect', text], repoRoot);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/^error \[INVALID_MODEL\]: /);
    expect(node([binJs, 'inspect', '--nope'], repoRoot).code).toBe(2);
  });
});

describe('built CLI in a consumer install without onnxruntime-node', () => {
  /**
   * <tmp>/consumer/node_modules/selfxit holds copies of package.json, bin/ and the CLI's dist files (copies, so that
   * module resolution starts there and not in this repo); every package in `dependencies` is a link into this
   * repo's node_modules. onnxruntime-node and all devDependencies are absent, as after `npm install selfxit`.
   */
  function consumer(): string {
    const root = path.join(dir, 'consumer');
    const pkgDir = path.join(root, 'node_modules/selfxit');
    fs.mkdirSync(path.join(pkgDir, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(pkgDir, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(pkgDir, 'package.json'));
    fs.copyFileSync(binJs, path.join(pkgDir, 'bin/selfxit.js'));
    // dist/cli.js, the head-trainer pool's worker dist/head-worker.js and the chunks they share (dist/cli-*.js)
    for (const f of fs.readdirSync(path.dirname(cliJs)).filter((f) => /^(cli(-.+)?|head-worker)\.js$/.test(f)))
      fs.copyFileSync(path.join(path.dirname(cliJs), f), path.join(pkgDir, 'dist', f));
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      peerDependencies?: Record<string, string>;
      peerDependenciesMeta?: Record<string, { optional?: boolean }>;
    };
    expect(pkg.peerDependencies?.['onnxruntime-node']).toBeDefined();
    expect(pkg.peerDependenciesMeta?.['onnxruntime-node']?.optional).toBe(true);
    expect(Object.keys(pkg.dependencies)).not.toContain('onnxruntime-node');
    for (const name of Object.keys(pkg.dependencies)) {
      const link = path.join(root, 'node_modules', name);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(path.join(repoRoot, 'node_modules', name), link, 'dir');
    }
    return root;
  }

  it('starts (--help, usage errors) and says to npm install onnxruntime-node when a command needs it', () => {
    const root = consumer();
    const bin = path.join(root, 'node_modules/selfxit/bin/selfxit.js');
    const help = node([bin, '--help'], root);
    expect(help.stderr).toBe('');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/inspect/);
    expect(node([bin, 'inspect', '--bogus'], root).code).toBe(2);
    // the shipped model declares no intermediate shapes: inspect must probe them with onnxruntime-node
    const r = node([bin, 'inspect', fashionModel, '--json'], root);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^error \[BACKEND_UNAVAILABLE\]: onnxruntime-node is not installed.*npm install onnxruntime-node/,
    );
    const s = node([bin, 'split', fashionModel, '--cuts', 'all', '--out', path.join(root, 'segments')], root);
    expect(s.code).toBe(1);
    expect(s.stderr).toMatch(/^error \[BACKEND_UNAVAILABLE\]: .*npm install onnxruntime-node/);
    expect(fs.existsSync(path.join(root, 'segments'))).toBe(false);
  }, 60_000);
});

describe('loadOrtNode / analyzeModelNode', () => {
  const missing = (): Promise<unknown> =>
    Promise.reject(
      Object.assign(new Error(`Cannot find package 'onnxruntime-node' imported from ${cliJs}`), {
        code: 'ERR_MODULE_NOT_FOUND',
      }),
    );

  it('loads onnxruntime-node when installed', async () => {
    const ort = await loadOrtNode();
    expect(typeof ort.InferenceSession.create).toBe('function');
    expect(typeof ort.Tensor).toBe('function');
  });

  it('BACKEND_UNAVAILABLE with the install command when missing, broken, or not an onnxruntime module', async () => {
    const cases: [() => Promise<unknown>, RegExp][] = [
      [missing, /^onnxruntime-node is not installed.*npm install onnxruntime-node$/],
      [
        () => Promise.reject(new Error('libonnxruntime.so.1: cannot open shared object file')),
        /could not be loaded \(libonnxruntime\.so\.1: .*\); \(re\)install it: npm install onnxruntime-node$/,
      ],
      [() => Promise.resolve({ default: {} }), /no InferenceSession\/Tensor.*npm install onnxruntime-node$/],
    ];
    for (const [importer, msg] of cases) {
      const e = await rejection(loadOrtNode(importer));
      expect(isSelfxitError(e, 'BACKEND_UNAVAILABLE'), String(e)).toBe(true);
      expect((e as Error).message).toMatch(msg);
    }
  });

  it('analyzeModelNode loads onnxruntime-node only when value_info lacks shapes', async () => {
    let imports = 0;
    const counting = (): Promise<unknown> => {
      imports++;
      return missing();
    };
    const declared = await analyzeModelNode(chainGraph(30, true), counting);
    expect(declared.cuts).toHaveLength(29);
    expect(imports).toBe(0);
    await expect(analyzeModelNode(residualGraph().model, counting)).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
    });
    expect(imports).toBe(1);
    const probed = await analyzeModelNode(residualGraph().model);
    expect(probed.cuts.map((c) => c.tensor)).toEqual(residualGraph().cuts);
  });
});

describe('readLabelFile', () => {
  const names = ['a', 'b', 'c', 'd'];
  const write = (name: string, content: Uint8Array | string): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, content);
    return p;
  };

  it('one uint8 class index per sample: every index must be below the number of classes', async () => {
    const ok = write('ok.u8', new Uint8Array([0, 3, 1, 2, 3]));
    expect(Array.from(await readLabelFile(ok, 5, names))).toEqual([0, 3, 1, 2, 3]);
    const bad = write('bad.u8', new Uint8Array([0, 3, 4, 2, 9]));
    const e = await rejection(readLabelFile(bad, 5, names));
    expect(isSelfxitError(e, 'INVALID_ARGUMENT'), String(e)).toBe(true);
    expect((e as Error).message).toMatch(/bad\.u8: .*sample 2 has class 4, and the model has 4 classes \(0\.\.3\)/);
    expect((e as SelfxitError).details).toMatchObject({ sample: 2, label: 4, classes: 4 });
  });

  it('the shipped test labels fit its 10 classes; the same bytes do not fit 5', async () => {
    const file = path.join(fashion, 'test-labels.u8');
    const bytes = fs.readFileSync(file);
    const classes = fs
      .readFileSync(path.join(fashion, 'labels.txt'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '');
    const labels = await readLabelFile(file, bytes.length, classes);
    expect(Array.from(labels)).toEqual(Array.from(bytes));
    await expect(readLabelFile(file, bytes.length, classes.slice(0, 5))).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });

  it('text labels: names or indices, out-of-range indices rejected the same way', async () => {
    expect(Array.from(await readLabelFile(write('ok.txt', 'b\n3\na\n'), 3, names))).toEqual([1, 3, 0]);
    await expect(readLabelFile(write('bad.txt', 'b\n4\na\n'), 3, names)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});

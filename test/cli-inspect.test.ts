// `selfxit inspect`: JSON and table output, exit codes and error messages, and speed on a 5,000-node chain.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chainGraph, GraphBuilder, residualGraph } from './fixtures/graphs.js';
import { cli, cliProcess, repoRoot, tempDir, writeBadModels, writeModel } from './fixtures/cli-helpers.js';

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const residual = residualGraph();
const residualPath = writeModel(dir, 'residual.onnx', residual.model);
const resnet20 = path.resolve(repoRoot, '../shared/models/cifar10-resnet20.onnx');
const hasShared = fs.existsSync(resnet20);
if (!hasShared) console.warn(`[cli-inspect] skipping the ResNet-20 subprocess test: ${resnet20} is absent`);

describe('selfxit inspect', () => {
  it('--json prints exactly one JSON object with inputs, outputs, macs, params and cuts', async () => {
    const r = await cli('inspect', residualPath, '--json');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(j)).toEqual(['inputs', 'outputs', 'macs', 'params', 'cuts']);
    expect(j.inputs).toEqual([{ name: 'x', dtype: 'float32', shape: ['N', 3, 8, 8] }]);
    expect(j.outputs).toEqual([{ name: 'logits', dtype: 'float32', shape: ['N', 5] }]);
    const cuts = j.cuts as { tensor: string; shape: unknown[]; dtype: string; macs: number; fraction: number }[];
    expect(cuts.map((c) => c.tensor)).toEqual(residual.cuts);
    // 4-D cuts say their layout (the graph's: Conv, GlobalAveragePool); the flattened one has none
    for (const c of cuts)
      expect(Object.keys(c)).toEqual(
        c.shape.length === 4
          ? ['tensor', 'shape', 'dtype', 'macs', 'fraction', 'layout']
          : ['tensor', 'shape', 'dtype', 'macs', 'fraction'],
      );
    expect(cuts[0]).toEqual({
      tensor: 'c1',
      shape: ['batch', 8, 8, 8],
      dtype: 'float32',
      macs: 8 * 8 * 8 * 27,
      fraction: (8 * 8 * 8 * 27) / (j.macs as number),
      layout: 'NCHW',
    });
  });

  it('human output is an aligned table listing every cut', async () => {
    const r = await cli('inspect', residualPath);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    const header = lines.findIndex((l) => /#\s+tensor\s+shape\s+layout\s+dtype\s+MACs before\s+fraction/.test(l));
    expect(header).toBeGreaterThan(0);
    const rows = lines.slice(header + 1, header + 1 + residual.cuts.length);
    const col = lines[header]!.indexOf('shape');
    rows.forEach((row, i) => {
      expect(row).toContain(residual.cuts[i]);
      expect(row.indexOf('[batch')).toBe(col);
      expect(row.length).toBe(lines[header]!.length);
    });
    expect(r.stdout).toMatch(/MACs\s+\S+ .*per sample/);
    expect(r.stdout).toMatch(/cuts\s+6/);
  });

  it('--help exits 0; usage errors exit 2', async () => {
    const h = await cli('inspect', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/Usage: selfxit inspect <model.onnx> \[--json\]/);
    expect((await cli('inspect')).code).toBe(2);
    const bad = await cli('inspect', residualPath, '--bogus');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--bogus/);
    expect((await cli('inspect', residualPath, 'extra')).code).toBe(2);
    expect((await cli('nope')).code).toBe(2);
    expect((await cli()).code).toBe(2);
    const top = await cli('--help');
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/inspect .*\n.*split/);
  });

  it('errors: missing file, not ONNX, truncated, two inputs → exit 1 with error [CODE]', async () => {
    const { text, truncated, two } = writeBadModels(dir);
    const cases: [string, string, RegExp][] = [
      [path.join(dir, 'missing.onnx'), 'IO_ERROR', /missing\.onnx.*ENOENT/],
      [text, 'INVALID_MODEL', /not a valid ONNX model|Not a valid ONNX model/i],
      [truncated, 'INVALID_MODEL', /truncated/],
      [two, 'UNSUPPORTED_MODEL', /exactly one input/],
    ];
    for (const [file, code, msg] of cases) {
      const r = await cli('inspect', file, '--json');
      expect(r.code, file).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(new RegExp(`^error \\[${code}\\]: `));
      expect(r.stderr).toMatch(msg);
    }
  });

  it('a symbolic height/width: SHAPE_UNKNOWN saying --shape; --shape H,W,C (and --layout) fixes it', async () => {
    const g = new GraphBuilder(21);
    const x = g.input('x', 'float32', ['N', 3, 'H', 'W']);
    const r1 = g.op('Relu', [g.conv(x, 3, 8, 3)], {}, 'block1');
    g.gemm(g.op('Flatten', [g.op('GlobalAveragePool', [r1])], { axis: 1 }), 8, 4, 'logits');
    g.output('logits', 'float32', ['N', 4]);
    const p = writeModel(dir, 'dynhw.onnx', g.build());
    const bare = await cli('inspect', p, '--json');
    expect(bare.code).toBe(1);
    expect(bare.stderr).toMatch(/^error \[SHAPE_UNKNOWN\]: .*--shape H,W,C/);
    const r = await cli('inspect', p, '--json', '--shape', '8,6,3');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { inputs: { shape: unknown[] }[]; macs: number };
    expect(j.inputs[0]!.shape).toEqual(['N', 3, 8, 6]);
    expect(j.macs).toBe(8 * 6 * 8 * 27 + 8 * 4);
    const nhwc = await cli('inspect', p, '--json', '--shape', '8,6,3', '--layout', 'NHWC');
    expect(nhwc.code).toBe(1);
    expect(nhwc.stderr).toMatch(/^error \[INVALID_ARGUMENT\]: .*fixes it at 3/);
    expect((await cli('inspect', p, '--layout', 'NCHW')).stderr).toMatch(/--layout goes with --shape/);
  });

  // Scale, not speed: the time is logged, not asserted (a loaded machine takes ~15–60 s probing 5,000 outputs with
  // ORT); a quadratic blow-up would still run into the test's timeout.
  it('5,000-node chain: inspect --json lists every cut', async () => {
    const p = writeModel(dir, 'chain.onnx', chainGraph(5000));
    const t0 = performance.now();
    const r = await cli('inspect', p, '--json');
    const ms = performance.now() - t0;
    console.log(`inspect --json on a 5,000-node chain (shapes probed with ORT): ${ms.toFixed(0)} ms in-process`);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { cuts: unknown[] }).cuts).toHaveLength(4999);
  }, 180_000);

  it.skipIf(!hasShared)(
    'subprocess on ResNet-20: exit 0, JSON, 40.6 M MACs',
    () => {
      const t0 = performance.now();
      const r = cliProcess('inspect', resnet20, '--json');
      console.log(
        `tsx src/cli/main.ts inspect cifar10-resnet20.onnx --json: ${(performance.now() - t0).toFixed(0)} ms`,
      );
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const j = JSON.parse(r.stdout) as { macs: number; cuts: unknown[] };
      expect(Math.abs(j.macs - 40.6e6) / 40.6e6).toBeLessThan(0.02);
      expect(j.cuts.length).toBeGreaterThanOrEqual(10);
      const bad = cliProcess('inspect', path.join(dir, 'missing.onnx'));
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^error \[IO_ERROR\]/);
      expect(cliProcess('inspect', '--nope').code).toBe(2);
    },
    60_000,
  );
});

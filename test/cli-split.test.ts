// `selfxit split`: segment files + index.json, chained fidelity, and all-or-nothing behaviour on errors.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeModel, graphInputs, graphOutputs } from '../src/graph/index.js';
import { dynamicReshapeGraph, GraphBuilder, residualGraph } from './fixtures/graphs.js';
import { cli, cliProcess, tempDir, writeBadModels, writeModel } from './fixtures/cli-helpers.js';
import { maxAbsDiff, randomInput, run, runChain } from './fixtures/ort-helpers.js';

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const residual = residualGraph();
const residualPath = writeModel(dir, 'residual.onnx', residual.model);

interface Index {
  segments: { file: string; input: string; output: string }[];
}
const readIndex = (out: string): Index => JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8')) as Index;
const loadSegments = (out: string): ReturnType<typeof decodeModel>[] =>
  readIndex(out).segments.map((s) => decodeModel(fs.readFileSync(path.join(out, s.file))));

describe('selfxit split', () => {
  it('writes segment files and index.json in graph order (cuts given in any order)', async () => {
    const out = path.join(dir, 'out-a');
    const r = await cli('split', residualPath, '--cuts', 'y, r1', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Wrote 3 segments/);
    expect(fs.readdirSync(out).sort()).toEqual([
      'index.json',
      'segment-000.onnx',
      'segment-001.onnx',
      'segment-002.onnx',
    ]);
    expect(readIndex(out)).toEqual({
      segments: [
        { file: 'segment-000.onnx', input: 'x', output: 'r1' },
        { file: 'segment-001.onnx', input: 'r1', output: 'y' },
        { file: 'segment-002.onnx', input: 'y', output: 'logits' },
      ],
    });
    const segs = loadSegments(out);
    readIndex(out).segments.forEach((s, i) => {
      expect(graphInputs(segs[i]!).map((t) => t.name)).toEqual([s.input]);
      expect(graphOutputs(segs[i]!).map((t) => t.name)).toEqual([s.output]);
    });
    const x = randomInput([3, 3, 8, 8]);
    expect(maxAbsDiff(await runChain(segs, x), (await run(residual.model, x)).logits!)).toBeLessThanOrEqual(1e-5);
  });

  it('--cuts all splits at every cut; re-splitting into the same folder removes stale segments', async () => {
    const out = path.join(dir, 'out-all');
    const f = dynamicReshapeGraph();
    const p = writeModel(dir, 'dyn.onnx', f.model);
    expect((await cli('split', p, '--cuts', 'all', '--out', out)).code).toBe(0);
    expect(readIndex(out).segments).toHaveLength(f.cuts.length + 1);
    const x = randomInput([2, ...f.inputShape]);
    expect(maxAbsDiff(await runChain(loadSegments(out), x), (await run(f.model, x)).logits!)).toBeLessThanOrEqual(1e-5);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'keep me');
    expect((await cli('split', p, '--cuts', 'r2', '--out', out)).code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['index.json', 'notes.txt', 'segment-000.onnx', 'segment-001.onnx']);
  });

  it("re-splitting removes only the segments the old index.json names; a user's own segment-NNN.onnx stays", async () => {
    const out = path.join(dir, 'out-keep');
    const f = dynamicReshapeGraph();
    const p = writeModel(dir, 'dyn-keep.onnx', f.model);
    expect((await cli('split', p, '--cuts', 'all', '--out', out)).code).toBe(0);
    expect(readIndex(out).segments.length).toBeGreaterThan(2);
    /** Puts the user's own `mine` into `folder`, splits into it at r2: the two new segments, `mine` kept as it was. */
    const splitBeside = async (folder: string, mine: string): Promise<void> => {
      fs.writeFileSync(path.join(folder, mine), 'mine');
      expect((await cli('split', p, '--cuts', 'r2', '--out', folder)).code).toBe(0);
      expect(fs.readdirSync(folder).sort()).toEqual(['index.json', 'segment-000.onnx', 'segment-001.onnx', mine]);
      expect(fs.readFileSync(path.join(folder, mine), 'utf8')).toBe('mine');
    };
    await splitBeside(out, 'segment-900.onnx');
    // no index.json: nothing there counts as an old segment
    const bare = path.join(dir, 'out-bare');
    fs.mkdirSync(bare);
    await splitBeside(bare, 'segment-005.onnx');
  });

  it('INVALID_CUT: exit 1, names the tensor, writes nothing', async () => {
    const out = path.join(dir, 'out-bad');
    const r = await cli('split', residualPath, '--cuts', 'r1,c2', '--out', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error \[INVALID_CUT\]: .*"c2"/);
    expect(fs.existsSync(out)).toBe(false);
    // an existing folder is left untouched
    const kept = path.join(dir, 'out-kept');
    fs.mkdirSync(kept);
    fs.writeFileSync(path.join(kept, 'segment-000.onnx'), 'old');
    expect((await cli('split', residualPath, '--cuts', 'nope', '--out', kept)).code).toBe(1);
    expect(fs.readdirSync(kept)).toEqual(['segment-000.onnx']);
    expect(fs.readFileSync(path.join(kept, 'segment-000.onnx'), 'utf8')).toBe('old');
  });

  it('bad models: not ONNX, truncated, two inputs → typed error, exit 1, nothing written', async () => {
    const bad = tempDir('selfxit-split-bad-');
    try {
      const { text, truncated, two } = writeBadModels(bad);
      const kept = path.join(bad, 'kept');
      fs.mkdirSync(kept);
      fs.writeFileSync(path.join(kept, 'segment-000.onnx'), 'old');
      const before = fs.readdirSync(bad).sort();
      const cases: [string, string, string, RegExp][] = [
        [text, 'r1', 'INVALID_MODEL', /not a valid ONNX model/i],
        [truncated, 'r1', 'INVALID_MODEL', /truncated/],
        [two, 'all', 'UNSUPPORTED_MODEL', /exactly one input/],
      ];
      for (const [file, cuts, code, msg] of cases) {
        for (const out of [path.join(bad, 'out'), kept]) {
          const r = await cli('split', file, '--cuts', cuts, '--out', out);
          expect(r.code, `${file} → ${out}`).toBe(1);
          expect(r.stdout).toBe('');
          expect(r.stderr).toMatch(new RegExp(`^error \\[${code}\\]: `));
          expect(r.stderr).toMatch(msg);
        }
      }
      // no output folder, no temp folder, the existing folder untouched
      expect(fs.readdirSync(bad).sort()).toEqual(before);
      expect(fs.readdirSync(kept)).toEqual(['segment-000.onnx']);
      expect(fs.readFileSync(path.join(kept, 'segment-000.onnx'), 'utf8')).toBe('old');
    } finally {
      fs.rmSync(bad, { recursive: true, force: true });
    }
  });

  it('IO_ERROR when the output folder cannot be written; no temp files left behind', async () => {
    const blocker = path.join(dir, 'a-file');
    fs.writeFileSync(blocker, 'x');
    const before = fs.readdirSync(dir).sort();
    for (const out of [path.join(blocker, 'out'), blocker]) {
      const r = await cli('split', residualPath, '--cuts', 'r1', '--out', out);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error \[IO_ERROR\]: .*a-file/);
    }
    expect(fs.readdirSync(dir).sort()).toEqual(before);
  });

  it('--cut takes a name whole (a comma in a tensor name), repeatable and with --cuts', async () => {
    const g = new GraphBuilder(11);
    const x = g.input('x', 'float32', ['N', 3, 8, 8]);
    const r1 = g.op('Relu', [g.conv(x, 3, 4, 3, { out: 'c1' })], {}, 'r,1');
    const y = g.op('Relu', [g.conv(r1, 4, 4, 3, { out: 'c2' })], {}, 'y');
    const f = g.op('Flatten', [g.op('GlobalAveragePool', [y], {}, 'gap')], { axis: 1 }, 'flat');
    g.gemm(f, 4, 3, 'logits');
    g.output('logits', 'float32', ['N', 3]);
    const p = writeModel(dir, 'comma.onnx', g.build());
    const out = path.join(dir, 'out-comma');
    const r = await cli('split', p, '--cut', 'r,1', '--cuts', 'gap', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readIndex(out).segments.map((s) => [s.input, s.output])).toEqual([
      ['x', 'r,1'],
      ['r,1', 'gap'],
      ['gap', 'logits'],
    ]);
    // In the list the name is two names, neither of them a tensor.
    const listed = await cli('split', p, '--cuts', 'r,1', '--out', path.join(dir, 'out-comma2'));
    expect(listed.code).toBe(1);
    expect(listed.stderr).toMatch(/INVALID_CUT/);
    for (const args of [
      ['split', p, '--cuts', 'all', '--cut', 'r,1', '--out', out],
      ['split', p, '--cut', '', '--out', out],
    ]) {
      const u = await cli(...args);
      expect(u.code, args.join(' ')).toBe(2);
    }
  });

  it('usage errors exit 2', async () => {
    const out = path.join(dir, 'out-usage');
    for (const args of [
      ['split', residualPath, '--out', out],
      ['split', residualPath, '--cuts', 'r1'],
      ['split', residualPath, '--cuts', 'r1,,y', '--out', out],
      ['split', '--cuts', 'r1', '--out', out],
      ['split', residualPath, '--cuts'],
    ]) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^error: /);
    }
    expect(fs.existsSync(out)).toBe(false);
    const h = await cli('split', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/--cuts <list>/);
  });

  it('runs as a subprocess (tsx src/cli/main.ts)', () => {
    const out = path.join(dir, 'out-proc');
    const r = cliProcess('split', residualPath, '--cuts', 'a,gap', '--out', out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readIndex(out).segments.map((s) => s.output)).toEqual(['a', 'gap', 'logits']);
    const bad = cliProcess('split', residualPath, '--cuts', 'c3', '--out', path.join(dir, 'out-proc2'));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^error \[INVALID_CUT\]/);
    expect(fs.existsSync(path.join(dir, 'out-proc2'))).toBe(false);
  }, 30_000);
});

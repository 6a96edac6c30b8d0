// runCascade: exit decisions, batch shrinking and result order, on a CPU StageRunner over plain arrays.
import { describe, expect, it } from 'vitest';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { runCascade, softmaxRow, type StageRunner } from '../src/engine/cascade.js';

const K = 3;

/** A 3-segment bundle with exits fused into segments 0 and 1. */
function manifest(thresholds: [number, number]): BundleManifest {
  const seg = (i: number, exit?: number) => ({
    file: `s${i}.onnx`,
    sha256: '0'.repeat(64),
    bytes: 1,
    macs: 1,
    headMacs: exit === undefined ? 0 : 1,
    input: `x${i}`,
    output: `x${i + 1}`,
    ...(exit === undefined ? {} : { exit, exitOutput: `p${i}` }),
  });
  const exit = (i: number) => ({
    name: `e${i}`,
    cut: `x${i + 1}`,
    segment: i,
    headKind: 'pool-linear' as const,
    threshold: thresholds[i]!,
    macsFraction: 0.3 * (i + 1),
    expectedShare: 0.3,
    headParams: 1,
    headMacs: 1,
  });
  return {
    format: 'selfxit-bundle',
    version: 1,
    generator: 'test',
    createdAt: '',
    backbone: { sha256: '0'.repeat(64), macs: 3, params: 0, output: 'logits', outputKind: 'logits' },
    input: { name: 'x0', height: 1, width: 1, channels: 1, layout: 'NCHW', mean: [0], std: [1] },
    labels: ['a', 'b', 'c'],
    segments: [seg(0, 0), seg(1, 1), seg(2)],
    exits: [exit(0), exit(1)],
    calibration: {
      samples: 0,
      target: 0.99,
      rule: 'max-softmax',
      mode: 'selfxit',
      folds: 5,
      seed: 0,
      validationAgreement: 1,
      expectedMacsFraction: 1,
      candidates: [],
      curve: [],
      costUnit: 'macs',
    },
  };
}

/**
 * Activations are row ids (Float32Array of original indices). Exit head of stage s gives row r the
 * probabilities `conf[s][r]` on class (r % K); the final stage gives logits favouring class (r+1) % K.
 */
function runner(conf: number[][], seen: number[][]): StageRunner<Float32Array> {
  return {
    async runStage(segment, input, rows) {
      expect(input.length).toBe(rows);
      seen.push(Array.from(input));
      if (segment === 2) {
        const fin = new Float32Array(rows * K);
        input.forEach((id, r) => (fin[r * K + ((id + 1) % K)] = 5));
        return { final: fin };
      }
      const probs = new Float32Array(rows * K);
      input.forEach((id, r) => {
        const c = conf[segment]![id]!;
        for (let j = 0; j < K; j++) probs[r * K + j] = j === id % K ? c : (1 - c) / (K - 1);
      });
      return { next: input.slice(), exitProbs: probs };
    },
    async selectRows(act, keep, rows) {
      expect(act.length).toBe(rows);
      return Float32Array.from(keep, (r) => act[r]!); // one value per row
    },
  };
}

describe('runCascade', () => {
  const conf = [
    [0.95, 0.2, 0.5, 0.99, 0.4],
    [0.1, 0.95, 0.4, 0.1, 0.8],
  ];
  const input = Float32Array.from([0, 1, 2, 3, 4]);

  it('leaves at the first exit whose max probability reaches its threshold, and shrinks the batch', async () => {
    const seen: number[][] = [];
    const res = await runCascade(manifest([0.9, 0.75]), runner(conf, seen), input, 5);
    expect(res.map((r) => r.exit)).toEqual([0, 1, -1, 0, 1]);
    expect(res.map((r) => r.index)).toEqual([0, 1, 0, 0, 1]); // row 2 ran the backbone: class (2+1)%3
    expect(seen).toEqual([[0, 1, 2, 3, 4], [1, 2, 4], [2]]);
    expect(res[0]!.confidence).toBeCloseTo(0.95, 6);
    const expected = softmaxRow(Float32Array.from([5, 0, 0]), 0, 3);
    expect(Array.from(res[2]!.probs)).toEqual(Array.from(expected));
  });

  it('thresholds override: above 1 nobody exits, 0 everyone exits at the first exit', async () => {
    const none = await runCascade(manifest([0.9, 0.75]), runner(conf, []), input, 5, { thresholds: [2, 2] });
    expect(none.every((r) => r.exit === -1)).toBe(true);
    const seen: number[][] = [];
    const all = await runCascade(manifest([0.9, 0.75]), runner(conf, seen), input, 5, { thresholds: [0, 0] });
    expect(all.every((r) => r.exit === 0)).toBe(true);
    expect(seen.length).toBe(1); // deeper stages never ran
  });

  it('does not ask for the output of an exit whose threshold is above 1, and decides the same', async () => {
    const flags: [number, boolean | undefined][] = [];
    const base = runner(conf, []);
    // A runner that honours readExit (leaves exitProbs out) and records what it was asked.
    const lean: StageRunner<Float32Array> = {
      ...base,
      async runStage(segment, input, rows, readExit) {
        flags.push([segment, readExit]);
        const out = await base.runStage(segment, input, rows);
        return readExit === false && out.next ? { next: out.next } : out;
      },
    };
    for (const th of [
      [1.0000001, 0.75],
      [2, 2],
      [0.9, 0.75],
    ] as [number, number][]) {
      flags.length = 0;
      const got = await runCascade(manifest([0.9, 0.75]), lean, input, 5, { thresholds: th });
      const want = await runCascade(manifest([0.9, 0.75]), runner(conf, []), input, 5, { thresholds: th });
      expect(got.map((r) => [r.exit, r.index])).toEqual(want.map((r) => [r.exit, r.index]));
      expect(flags).toEqual(
        [
          [0, th[0]! <= 1],
          [1, th[1]! <= 1],
          [2, false],
        ].slice(0, flags.length),
      );
    }
    const skipped = await runCascade(manifest([0.9, 0.75]), lean, input, 5, { thresholds: [1.0000001, 0.75] });
    expect(skipped.some((r) => r.exit === 0)).toBe(false);
  });

  it('reports stage timings and row counts', async () => {
    const stages: [number, number][] = [];
    let t = 0;
    await runCascade(manifest([0.9, 0.75]), runner(conf, []), input, 5, {
      onStage: (s, rows) => stages.push([s, rows]),
      now: () => t++,
    });
    expect(stages).toEqual([
      [0, 5],
      [1, 3],
      [2, 1],
    ]);
  });
});

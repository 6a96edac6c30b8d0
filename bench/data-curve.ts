// Issue 13's attribution study: how much of the MACs gain with more unlabeled images comes from the heads and how much
// from the thresholds. For each bundle `prepare` wrote (heads fit on N images, exits and thresholds chosen on their
// cross-fitted outputs), the exits and thresholds are chosen again, with the same rule and policy code, on a FIXED set
// of pool images that no bundle's heads saw; both choices are then replayed on `test` (every exit head's outputs
// recorded once, as `selfxit eval` replays them), so the difference between them is the threshold effect at N, and the
// fixed-set column across N is the head effect with the threshold sample held constant.
//
//   npx tsx bench/data-curve.ts [--fixed 5000] [--exclude-limit 20000] [--json out.json] <bundle dir> [<bundle dir> …]
//
// The fixed set: `--fixed` images of ../shared/data/cifar10/pool-u8.bin, drawn (seed 1) among those that a
// `prepare --samples calib-u8.bin --samples pool-u8.bin --limit <exclude-limit>` run (seed 0) did not use, so it is
// disjoint from every bundle made from calib alone or from calib + pool with that limit or less.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortNode from 'onnxruntime-node';
import type { BundleFiles, BundleManifest, CurvePoint } from '../src/bundle/manifest.js';
import { inputDims, toModelInput } from '../src/bundle/input.js';
import { runCascade, type StageRunner } from '../src/engine/cascade.js';
import { bundleStageRunner } from '../src/calibrate/evaluate.js';
import { shuffleAndLimit, type SampleBatch } from '../src/calibrate/samples.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { readLabelFile } from '../src/cli/images.js';
import { loadSamples } from '../src/cli/sample-sources.js';
import { CLI_SESSION_OPTIONS } from '../src/cli/prepare.js';
import { exitScores, simulateCascade, type CascadeCosts, type ExitScores } from '../src/policy/cascade-sim.js';
import { pickCurvePoint } from '../src/policy/curve.js';
import { mapExitScores, rawThresholdOnSamples, scoreMaps, selectExitsWithRule } from '../src/policy/exit-rule.js';
import { NEVER_EXIT, chooseThresholds, thresholdCurve } from '../src/policy/thresholds.js';
import type { OrtModule, OrtTensor } from '../src/ort/types.js';
import { replayTop1 } from './cascade-replay.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const data = path.resolve(root, '../shared/data/cifar10');
const ort = ortNode as unknown as OrtModule;
const SHAPE = { height: 32, width: 32, channels: 3 } as const;
const TARGETS = [0.99, 0.985] as const;
const CALIB_COUNT = 10_000;

/** Every exit head's outputs on `samples` (no row leaves: thresholds at +∞) and the backbone's argmax through the
 * segment chain, as ExitScores against that argmax. */
async function allHeadScores(
  bundle: BundleFiles,
  samples: SampleBatch,
): Promise<{ exits: ExitScores[]; teacher: Int32Array }> {
  const m = bundle.manifest;
  const k = m.labels.length;
  const n = samples.count;
  const spec = m.input;
  const probs = m.exits.map(() => new Float32Array(n * k));
  const teacher = new Int32Array(n);
  const { runner, sessions } = bundleStageRunner(ort, bundle, CLI_SESSION_OPTIONS);
  const batch = 256;
  const buf = new Float32Array(batch * spec.height * spec.width * spec.channels);
  try {
    for (let start = 0; start < n; start += batch) {
      const rows = Math.min(batch, n - start);
      const x = new ort.Tensor('float32', toModelInput(samples, start, rows, spec, buf).slice(), inputDims(spec, rows));
      const recorder: StageRunner<OrtTensor> = {
        runStage: async (s, a, r) => {
          const out = await runner.runStage(s, a, r, true);
          const e = m.segments[s]!.exit;
          if (e !== undefined && out.exitProbs) probs[e]!.set(out.exitProbs.subarray(0, r * k), start * k);
          return out;
        },
        selectRows: (a, keep, r) => runner.selectRows(a, keep, r),
      };
      const res = await runCascade(m, recorder, x, rows, { thresholds: m.exits.map(() => Infinity) });
      res.forEach((r, i) => (teacher[start + i] = r.index));
    }
  } finally {
    await sessions.releaseAll();
  }
  return { exits: probs.map((p) => exitScores(p, n, k, teacher)), teacher };
}

/** The cascade costs of a bundle's exits in MACs (backbone up to each exit's cut, its head), as prepare counted them. */
function bundleCosts(m: BundleManifest): CascadeCosts {
  const at: number[] = [];
  const head: number[] = [];
  let acc = 0;
  for (const seg of m.segments) {
    acc += seg.macs;
    if (seg.exit !== undefined) {
      at[seg.exit] = acc;
      head[seg.exit] = seg.headMacs;
    }
  }
  return { backboneCostAt: at, headCost: head, fullCost: m.backbone.macs };
}

interface Measured {
  readonly target: number;
  readonly reached: boolean;
  readonly expectedAgreement: number;
  readonly expectedMacs: number;
  readonly macs: number;
  readonly agreement: number;
  readonly top1: number;
  readonly exitShares: number[];
}

/** A curve's point for `target` (as eval/setTarget pick it) replayed on test's recorded head outputs. */
function measure(
  curve: readonly CurvePoint[],
  samples: number,
  nExits: number,
  target: number,
  test: { exits: ExitScores[]; labels: Int32Array; segPred: Int32Array },
  costs: CascadeCosts,
): Measured {
  const { point, reached } = pickCurvePoint(curve, target, { samples, exits: nExits });
  const all = test.exits.map((_, j) => j);
  const o = simulateCascade(test.exits, all, point.thresholds, costs);
  const top1 = replayTop1(test.exits, all, point.thresholds, test.segPred, test.labels);
  return {
    target,
    reached,
    expectedAgreement: point.agreement,
    expectedMacs: point.macsFraction,
    macs: o.macsFraction,
    agreement: o.agreement,
    top1: top1.cascade,
    exitShares: o.exitShares,
  };
}

/** The heads' frontier on test: the cheapest point of the given curves whose agreement ON TEST meets `target` (the
 * knob chosen with hindsight, no margin) — what these heads give whatever the threshold sample. */
function frontier(
  curves: readonly (readonly CurvePoint[])[],
  target: number,
  test: { exits: ExitScores[]; labels: Int32Array; segPred: Int32Array },
  costs: CascadeCosts,
): Measured {
  const nExits = test.exits.length;
  const all = test.exits.map((_, j) => j);
  const onTest = curves.flat().map((p) => ({ ...p, ...simulateCascade(test.exits, all, p.thresholds, costs) }));
  return measure(onTest, 0, nExits, target, test, costs);
}

/** Widens thresholds of `subset` (bundle exit indices) to every exit of the bundle, NEVER_EXIT elsewhere. */
function widen(nExits: number, subset: readonly number[], th: readonly number[]): number[] {
  const out = new Array<number>(nExits).fill(NEVER_EXIT);
  subset.forEach((j, s) => (out[j] = th[s]!));
  return out;
}

/**
 * Thresholds for the bundle's own exits chosen again on the fixed set: the rule's score maps fit on its outputs, the
 * knob curve over `points` quantiles plus the exact knob meeting each target with the margin (chooseThresholds), each
 * knob turned into max-softmax thresholds as prepare does. Only the thresholds' sample changes, not the heads or exits.
 */
function thresholdsOnFixed(
  m: BundleManifest,
  fixed: readonly ExitScores[],
  costs: CascadeCosts,
  points: number,
): CurvePoint[] {
  const rule = m.calibration.thresholdRule ?? 'cost-calibrated';
  const remaining = fixed.map((_, j) => (costs.fullCost - costs.backboneCostAt[j]!) / costs.fullCost);
  const maps = scoreMaps(rule, fixed, remaining);
  const mapped = fixed.map((e, j) => mapExitScores(e, maps[j]!));
  const all = fixed.map((_, j) => j);
  const exact = TARGETS.map((target) => chooseThresholds(mapped, all, costs, { target }).knob);
  return thresholdCurve(mapped, all, costs, { points, extraKnobs: exact }).map((p) => {
    const th = all.map((j) => rawThresholdOnSamples(fixed[j]!, mapped[j]!, maps[j]!, p.knob));
    const o = simulateCascade(fixed, all, th, costs);
    return {
      knob: p.knob,
      thresholds: th,
      agreement: o.agreement,
      macsFraction: o.macsFraction,
      exitShares: o.exitShares,
    };
  });
}

/** Exits and thresholds chosen again on the fixed set's outputs (selectExitsWithRule among the bundle's exits, prepare's
 * rule, target and default per-exit overhead); its curve in the bundle's exit indexing. */
function selectionOnFixed(
  m: BundleManifest,
  fixed: readonly ExitScores[],
  costs: CascadeCosts,
  points: number,
): { curve: CurvePoint[]; kept: string[] } {
  const sel = selectExitsWithRule(fixed, costs, {
    target: m.calibration.target,
    overhead: 0.01 * costs.fullCost, // prepare's default overheadFraction
    rule: m.calibration.thresholdRule ?? 'cost-calibrated',
    curvePoints: points,
  });
  return {
    curve: sel.curve.map((p) => ({ ...p, thresholds: widen(m.exits.length, sel.selected, p.thresholds) })),
    kept: sel.selected.map((j) => m.exits[j]!.name),
  };
}

/** The fixed threshold set: `count` pool images (seed 1) among those a calib+pool `--limit excludeLimit` run left out. */
async function fixedSet(count: number, excludeLimit: number): Promise<SampleBatch> {
  const pool = await loadSamples(path.join(data, 'pool-u8.bin'), SHAPE);
  const total = CALIB_COUNT + pool.count;
  // prepare's shuffle depends only on the count and the seed: replay it on a 1-byte-per-image stand-in.
  const used = shuffleAndLimit(
    { data: new Uint8Array(total), count: total },
    { height: 1, width: 1, channels: 1 },
    0,
    excludeLimit,
  ).indices;
  const taken = new Uint8Array(pool.count);
  for (const i of used) if (i >= CALIB_COUNT) taken[i - CALIB_COUNT] = 1;
  const per = SHAPE.height * SHAPE.width * SHAPE.channels;
  const freeIdx = [...taken.keys()].filter((i) => taken[i] === 0);
  const free = new Uint8Array(freeIdx.length * per);
  freeIdx.forEach((src, i) => free.set(pool.data.subarray(src * per, (src + 1) * per), i * per));
  return shuffleAndLimit({ data: free, count: freeIdx.length }, SHAPE, 1, count).batch;
}

function parseArgs(argv: readonly string[]): { dirs: string[]; fixed: number; excludeLimit: number; json?: string } {
  const dirs: string[] = [];
  let fixed = 5000;
  let excludeLimit = 20_000;
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--fixed') fixed = Number(argv[++i]);
    else if (a === '--exclude-limit') excludeLimit = Number(argv[++i]);
    else if (a === '--json') json = argv[++i];
    else dirs.push(a);
  }
  if (dirs.length === 0 || !(fixed > 0) || !(excludeLimit >= 0))
    throw new Error('usage: data-curve.ts [--fixed N] [--exclude-limit N] [--json out.json] <bundle dir> …');
  return { dirs, fixed, excludeLimit, ...(json ? { json } : {}) };
}

const pct = (x: number, d = 2): string => (100 * x).toFixed(d);

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const fixed = await fixedSet(args.fixed, args.excludeLimit);
  const test = await loadSamples(path.join(data, 'test-u8.bin'), SHAPE);
  const records: unknown[] = [];
  console.log(
    `fixed threshold set: ${fixed.count} pool images outside a calib+pool --limit ${args.excludeLimit} draw; measured on ${test.count} test images\n`,
  );
  console.log(
    '| bundle | N | exits | target | prepare: MACs (agreement, top-1 Δ) | thresholds on fixed set | exits + thresholds on fixed set | frontier on test | exits kept on fixed set |',
  );
  console.log('|---|---:|---|---:|---:|---:|---:|---:|---|');
  for (const dir of args.dirs) {
    const t0 = performance.now();
    const bundle = await readBundleDir(dir);
    const m = bundle.manifest;
    const labels = await readLabelFile(path.join(data, 'test-labels.u8'), test.count, m.labels);
    const costs = bundleCosts(m);
    const onFixed = await allHeadScores(bundle, fixed);
    const onTest = await allHeadScores(bundle, test);
    let bbOk = 0;
    for (let i = 0; i < test.count; i++) if (onTest.teacher[i] === labels[i]) bbOk++;
    const bbTop1 = bbOk / test.count;
    const testView = { exits: onTest.exits, labels, segPred: onTest.teacher };
    const onlyThresholds = thresholdsOnFixed(m, onFixed.exits, costs, 100);
    const reselected = selectionOnFixed(m, onFixed.exits, costs, 100);
    const dense = [
      thresholdsOnFixed(m, onFixed.exits, costs, 2000),
      selectionOnFixed(m, onFixed.exits, costs, 2000).curve,
      m.calibration.curve,
    ];
    const rows = TARGETS.map((target) => ({
      prepare: measure(m.calibration.curve, m.calibration.samples, m.exits.length, target, testView, costs),
      fixed: measure(onlyThresholds, fixed.count, m.exits.length, target, testView, costs),
      fixedSelection: measure(reselected.curve, fixed.count, m.exits.length, target, testView, costs),
      frontier: frontier(dense, target, testView, costs),
    }));
    const name = path.basename(dir);
    for (const r of rows) {
      const cell = (x: Measured): string =>
        `${x.macs.toFixed(3)} (${pct(x.agreement)} %, ${(100 * (x.top1 - bbTop1)).toFixed(2)})${x.reached ? '' : ' not reached'}`;
      console.log(
        `| ${name} | ${m.calibration.samples} | ${m.exits.map((e) => e.name).join(', ')} | ${r.prepare.target} | ${cell(r.prepare)} | ${cell(r.fixed)} | ${cell(r.fixedSelection)} | ${cell(r.frontier)} | ${reselected.kept.join(', ')} |`,
      );
    }
    records.push({
      bundle: name,
      samples: m.calibration.samples,
      exits: m.exits.map((e) => e.name),
      fixedExits: reselected.kept,
      backboneTop1: bbTop1,
      rows,
      seconds: Math.round((performance.now() - t0) / 1000),
    });
  }
  if (args.json)
    fs.writeFileSync(
      args.json,
      JSON.stringify({ fixed: args.fixed, excludeLimit: args.excludeLimit, records }, null, 1),
    );
}

await main();

// What a device plan measures of each exit's cost on the compiled engine (onnxruntime-web WASM, Node, 1 thread), and
// what that changes in the exits it chooses: measureCompiled (as clf.plan() runs it: the gated compiled model) repeated
// a few times (its spread, its wall time), checked against a long paired measurement of the worst case (every exit in
// use at threshold 1 vs every exit off: the sum of the exits' costs), then planExits with the measured exit costs and
// without them (the plan before: exits free beyond their decision) at the bundle's target.
//
// --overheads a,b: also prepare's MACs-based selection among the bundle's exits with a per-exit overhead of each
// fraction of the backbone (prepare's default 0.01), and its expected time under the first measurement.
//
//   npx tsx bench/plan-exit-cost.ts [bundleDir] [--repeats R] [--runs N] [--check C] [--overheads 0.01,0.026]
//
// Default bundle: bench/.bundles/resnet20, else ../main/bench/.bundles/resnet20.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortWeb from 'onnxruntime-web/wasm';
import { intFlag, stringFlag } from './args.js';
import { compileBundleCascade, segmentModels } from '../src/bundle/compiled-cascade.js';
import { inputDims } from '../src/bundle/input.js';
import { NEVER_EXIT } from '../src/bundle/manifest.js';
import { decodeValidation } from '../src/bundle/validation-file.js';
import { readBundleDir } from '../src/cli/bundle-fs.js';
import { CASCADE_IO, cascadeThresholds } from '../src/graph/compile-cascade.js';
import { encodeModel } from '../src/graph/index.js';
import type { OrtModule } from '../src/ort/types.js';
import { simulateCascade } from '../src/policy/cascade-sim.js';
import { planExits, type StageTimings } from '../src/policy/device-plan.js';
import { measureCompiled, median } from '../src/runtime/measure.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ort = ortWeb as unknown as OrtModule;
ortWeb.env.wasm.numThreads = 1;
const args = process.argv.slice(2);
const REPEATS = intFlag(args, '--repeats', 3);
const RUNS = intFlag(args, '--runs', 16); // measureCompiled's default
const CHECK = intFlag(args, '--check', 200);
const OVERHEADS = (stringFlag(args, '--overheads') ?? '').split(',').filter(Boolean).map(Number);
const dir =
  args[0] ??
  [path.join(root, 'bench/.bundles/resnet20'), path.resolve(root, '../main/bench/.bundles/resnet20')].find((d) =>
    fs.existsSync(path.join(d, 'manifest.json')),
  );
if (!dir) throw new Error('no bundle: pass a bundle directory');

const fmt = (xs: readonly number[], d = 3): string => xs.map((x) => x.toFixed(d)).join(' ');

async function main(): Promise<void> {
  const bundle = await readBundleDir(dir!);
  const m = bundle.manifest;
  const e = m.exits.length;
  const bytes = encodeModel(compileBundleCascade(m, segmentModels(bundle, 0, m.segments.length), 0, 'nested', true));
  const session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all' });
  const x = new ort.Tensor('float32', new Float32Array(inputDims(m.input, 1).reduce((a, b) => a * b, 1)), [
    ...inputDims(m.input, 1),
  ]);
  const timeRun = async (thresholds: readonly number[]): Promise<{ ms: number; exit: number }> => {
    const t = new ort.Tensor('float32', cascadeThresholds(thresholds, e), [e]);
    const t0 = performance.now();
    const out = await session.run({ [m.segments[0]!.input]: x, [CASCADE_IO.thresholds]: t });
    const exit = Number(out[CASCADE_IO.exitIndex]!.data[0]);
    return { ms: performance.now() - t0, exit };
  };
  const runOnce = async (thresholds: readonly number[]): Promise<number> => (await timeRun(thresholds)).ms;
  for (let w = 0; w < 5; w++) await runOnce(m.exits.map(() => 1));
  console.log(`${path.basename(dir!)}: ${e} exits (${m.exits.map((x) => x.name).join(', ')}), ${RUNS} passes`);

  const measured: StageTimings[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const t0 = performance.now();
    const t = await measureCompiled(m, timeRun, RUNS);
    const s = (performance.now() - t0) / 1000;
    const ex = m.exits.map((x) => t.exitMs![x.segment]!);
    const un = t.unmeasuredExits.length > 0 ? `; unmeasured exits ${t.unmeasuredExits.join(',')}` : '';
    console.log(`measure ${r + 1}: ${s.toFixed(2)} s; exitMs ${fmt(ex)}; stageMs ${fmt(t.stageMs)}${un}`);
    measured.push(t);
  }

  // The worst case by long paired runs: every exit in use (1) vs every exit off; Σ exit costs.
  const on = m.exits.map(() => 1);
  const off = m.exits.map(() => NEVER_EXIT);
  const diffs: number[] = [];
  const full: number[] = [];
  for (let i = 0; i < CHECK; i++) {
    const [a, b] = i % 2 ? [await runOnce(on), await runOnce(off)] : [0, 0];
    const [b2, a2] = i % 2 ? [0, 0] : [await runOnce(off), await runOnce(on)];
    diffs.push(i % 2 ? a - b : a2 - b2);
    full.push(i % 2 ? b : b2);
  }
  const sum = (t: StageTimings): number => m.exits.reduce((acc, x) => acc + t.exitMs![x.segment]!, 0);
  console.log(
    `check (${CHECK} pairs): every exit in use − every exit off = ${median(diffs).toFixed(3)} ms median ` +
      `(${((median(diffs) / median(full)) * 100).toFixed(1)} % of ${median(full).toFixed(3)} ms); ` +
      `Σ exitMs per measurement: ${fmt(measured.map(sum))}`,
  );

  const validation = decodeValidation(
    new Uint8Array(bundle.files.get(m.calibration.validation!.file)!),
    e,
    m.calibration.samples,
  );
  const opts = { target: m.calibration.target, manifestHash: 'h', backend: 'wasm', threads: 1 };
  for (const [r, t] of measured.entries()) {
    // The plan before: each exit's cost inside the stage it leaves at, passing it free (what measureCompiled gave).
    const before: StageTimings = { stageMs: leaveStages(t), decisionMs: t.decisionMs };
    for (const [name, timings] of [
      ['with exit costs', t],
      ['exits free (before)', before],
    ] as const) {
      const p = planExits(m, validation, timings, opts);
      console.log(
        `plan ${r + 1} ${name}: exits ${p.enabled.map((b) => (b ? 1 : 0)).join('')}, MACs ${p.expectedMacsFraction.toFixed(3)}, ` +
          `agreement ${p.expectedAgreement.toFixed(4)}, expected ms fraction ${p.expectedMsFraction.toFixed(3)}`,
      );
    }
  }
  await session.release();

  // prepare's choice by MACs with a per-exit overhead (a fraction of the backbone), among the bundle's exits
  const macs = m.backbone.macs;
  for (const f of OVERHEADS) {
    const byMacs: StageTimings = {
      stageMs: m.segments.map((g) => g.macs / macs),
      decisionMs: m.segments.map(() => 0),
      exitMs: m.segments.map((g) => (g.exit !== undefined ? f + g.headMacs / macs : 0)),
    };
    const p = planExits(m, validation, byMacs, opts);
    const used = p.enabled.map((b) => (b ? 1 : 0)).join('');
    const t = measured[0]!;
    const total = t.stageMs.reduce((a, b) => a + b, 0);
    // its expected ms under the measured costs: the same exits and thresholds, priced by the first measurement
    const sel = m.exits.map((_, j) => j).filter((j) => p.enabled[j]);
    const o = simulateCascade(
      validation.map((v) => ({
        n: v.score.length,
        score: v.score,
        pred: new Int32Array(v.score.length),
        agree: v.agree,
      })),
      sel,
      sel.map((j) => p.thresholds[j]!),
      {
        backboneCostAt: m.exits.map((x) => t.stageMs.slice(0, x.segment + 1).reduce((a, b) => a + b, 0)),
        headCost: m.exits.map((x) => t.exitMs![x.segment]!),
        fullCost: total,
      },
    );
    console.log(
      `prepare overhead ${f}: exits ${used}, MACs ${p.expectedMacsFraction.toFixed(3)}, agreement ${p.expectedAgreement.toFixed(4)}, ` +
        `expected ms fraction under measurement 1: ${o.macsFraction.toFixed(3)}`,
    );
  }

  /** Stage times with each exit's cost moved into its segment (the cumulative leaving times), no exitMs. */
  function leaveStages(t: StageTimings): number[] {
    let prev = 0; // the cost of the last exit before segment i (it leaves from there)
    return t.stageMs.map((s, i) => {
      const h = m.segments[i]!.exit !== undefined ? t.exitMs![i]! : undefined;
      const out = s + (h ?? 0) - (h !== undefined || i === t.stageMs.length - 1 ? prev : 0);
      if (h !== undefined) prev = h;
      return out;
    });
  }
}

await main();

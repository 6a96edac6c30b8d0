// `selfxit eval` core: runs a bundle exactly as the runtime does (runCascade over the engine's OrtStageRunner, sessions
// from its segment files in memory, batch shrinking), plus the full backbone and every exit head, and measures
// agreement, accuracy and MACs. Pure: onnxruntime is injected; works in Node and in a worker.
import { SelfxitError } from '../errors.js';
import type { BundleFiles, BundleManifest } from '../bundle/manifest.js';
import { argmaxRow, runCascade, type StageRunner } from '../engine/cascade.js';
import { LazySessions, OrtStageRunner } from '../engine/stage-runner.js';
import type { OrtModule, OrtSession, OrtSessionOptions, OrtTensor } from '../ort/types.js';
import { checkBatch } from './samples.js';
import { inputDims, toModelInput, type SampleBatch } from '../bundle/input.js';
import { throwIfAborted } from './progress.js';
import { pickCurvePoint } from '../policy/curve.js';

/** Options of {@link evaluateBundle}. */
export interface EvaluateOptions {
  readonly bundle: BundleFiles;
  /** uint8 NHWC images of the manifest's input size. */
  readonly samples: SampleBatch;
  /** Ground-truth class per sample, for accuracy (optional). */
  readonly labels?: Int32Array;
  readonly ort: OrtModule;
  /** Rows per cascade call. Default 256. */
  readonly batchSize?: number;
  /** Re-choose thresholds from the manifest's curve for this agreement target. */
  readonly target?: number;
  /** Explicit per-exit thresholds (wins over `target`). */
  readonly thresholds?: readonly number[];
  /** Also measure these agreement targets (thresholds re-chosen from the curve, as setTarget does) by replaying the
   * recorded head outputs: `targetCurve` in the result. */
  readonly targets?: readonly number[];
  readonly sessionOptions?: OrtSessionOptions;
  readonly onProgress?: (done: number, total: number) => void;
  readonly signal?: AbortSignal;
}

/** What {@link evaluateBundle} measures. Fractions are in [0, 1]. */
export interface EvaluationResult {
  readonly samples: number;
  /** Cascade prediction == full backbone prediction. */
  readonly agreement: number;
  /** Cascade top-1 vs labels (null without labels). */
  readonly accuracy: number | null;
  /** Full backbone top-1 vs labels (null without labels). */
  readonly backboneAccuracy: number | null;
  /** Mean per-sample MACs of the cascade (backbone segments run + heads evaluated) / backbone MACs. */
  readonly macsFraction: number;
  /**
   * MACs fraction if every sample left at the first exit whose head argmax agrees with the backbone
   * (heads passed on the way included; samples no head gets right pay the whole cascade path).
   */
  readonly oracleMacsFraction: number;
  /** Share of samples leaving at each exit; the last entry is the backbone (no exit). */
  readonly exitShares: readonly number[];
  /** Agreement with the backbone of the samples leaving at each exit (NaN where none left). */
  readonly exitAgreement: readonly number[];
  /** Exit names, in order. */
  readonly exitNames: readonly string[];
  /** Thresholds used. */
  readonly thresholds: readonly number[];
  /**
   * Samples where the batch-shrinking cascade differs from a replay of the all-heads pass (same exit
   * rule on the per-exit probabilities). 0 expected; a few near a threshold can come from batch-size
   * dependent float rounding in the backend.
   */
  readonly replayMismatches: number;
  /** One entry per requested target (`options.targets`), in order. */
  readonly targetCurve?: readonly TargetMeasurement[];
  /** Wall time in ms: cascade, all-heads pass, full backbone. */
  readonly timingsMs: { readonly cascade: number; readonly allHeads: number; readonly backbone: number };
}

/** The cascade at the thresholds re-chosen for one target: what calibration expected and what was measured. */
export interface TargetMeasurement {
  readonly target: number;
  readonly thresholds: readonly number[];
  /** Whether a curve point met the target (else the most agreeing one was used). */
  readonly reached: boolean;
  /** Validation agreement and MACs fraction of the curve point (calibration's expectation). */
  readonly expectedAgreement: number;
  readonly expectedMacsFraction: number;
  readonly agreement: number;
  readonly accuracy: number | null;
  readonly macsFraction: number;
  readonly exitShares: readonly number[];
}

function requireFile(bundle: BundleFiles, file: string): Uint8Array {
  const bytes = bundle.files.get(file);
  if (!bytes) throw new SelfxitError('INVALID_BUNDLE', `bundle file ${file} is missing`, { file });
  return bytes;
}

/** Per-sample MACs to decide at exit `e` (or -1: the whole backbone), including every head passed. */
export function cumulativeMacs(manifest: BundleManifest): { exits: number[]; backbone: number } {
  const exits: number[] = new Array(manifest.exits.length).fill(0);
  let acc = 0;
  for (const seg of manifest.segments) {
    acc += seg.macs + seg.headMacs;
    if (seg.exit !== undefined) exits[seg.exit] = acc;
  }
  return { exits, backbone: acc };
}

/**
 * The engine's stage runner over a bundle's files in memory (sessions created on first use; `sessions.releaseAll()`
 * frees them). `selfxit eval`, the compiled-cascade tests and benchmarks run bundles through it.
 */
export function bundleStageRunner(
  ort: OrtModule,
  bundle: BundleFiles,
  sessionOptions?: OrtSessionOptions,
): { runner: OrtStageRunner; sessions: LazySessions } {
  const m = bundle.manifest;
  const sessions = new LazySessions((s) =>
    ort.InferenceSession.create(requireFile(bundle, m.segments[s]!.file), sessionOptions),
  );
  return { runner: new OrtStageRunner({ Tensor: ort.Tensor, manifest: m, sessions }), sessions };
}

/** The backbone's output on `rows` inputs (row by row when it takes one image per run, `backbone.batch` 'one'). */
async function runBackbone(
  ort: OrtModule,
  backbone: OrtSession,
  x: OrtTensor,
  rows: number,
  inputName: string,
  m: BundleManifest,
): Promise<Float32Array> {
  const k = m.labels.length;
  const logitsOf = (out: Record<string, OrtTensor>, n: number): Float32Array => {
    const logits = out[m.backbone.output]?.data as Float32Array | undefined;
    if (!logits) throw new SelfxitError('INVALID_BUNDLE', `backbone has no output "${m.backbone.output}"`);
    if (logits.length !== n * k)
      throw new SelfxitError(
        'INVALID_BUNDLE',
        `backbone output "${m.backbone.output}" has ${logits.length / n} classes per image but the manifest lists ${k} labels`,
        { classes: logits.length / n, labels: k },
      );
    return logits;
  };
  if (m.backbone.batch !== 'one' || rows === 1) return logitsOf(await backbone.run({ [inputName]: x }), rows);
  const data = x.data as Float32Array;
  const per = data.length / rows;
  const all = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const one = new ort.Tensor('float32', data.slice(r * per, (r + 1) * per), [1, ...x.dims.slice(1)]);
    all.set(logitsOf(await backbone.run({ [inputName]: one }), 1), r * k);
  }
  return all;
}

/**
 * Evaluates a bundle on samples: the real cascade (runCascade, batch shrinking), a pass through every
 * stage without exiting (all exit heads' probabilities, for the oracle and a consistency replay), and
 * the full backbone (`manifest.backbone.file`) for agreement and backbone accuracy.
 */
export async function evaluateBundle(options: EvaluateOptions): Promise<EvaluationResult> {
  const { bundle, samples, labels, ort, signal } = options;
  const m = bundle.manifest;
  const spec = m.input;
  checkBatch(samples, { height: spec.height, width: spec.width, channels: spec.channels }, 'eval samples');
  if (labels && labels.length !== samples.count) {
    throw new SelfxitError('INVALID_ARGUMENT', `${labels.length} labels for ${samples.count} samples`);
  }
  if (!m.backbone.file)
    throw new SelfxitError('INVALID_BUNDLE', 'the bundle has no backbone copy (backbone.file) to compare against');
  const k = m.labels.length;
  const nExits = m.exits.length;
  const thresholds =
    options.thresholds ??
    (options.target !== undefined
      ? pickCurvePoint(m.calibration.curve, options.target, { samples: m.calibration.samples, exits: m.exits.length })
          .point.thresholds
      : m.exits.map((e) => e.threshold));
  if (thresholds.length !== nExits)
    throw new SelfxitError('INVALID_ARGUMENT', `${thresholds.length} thresholds for ${nExits} exits`);
  const batchSize = options.batchSize ?? 256;
  // The segments from the bundle's files in memory, every session created up front (in order), then the backbone's.
  const { runner, sessions } = bundleStageRunner(ort, bundle, options.sessionOptions);
  let backbone: OrtSession;
  try {
    for (let s = 0; s < m.segments.length; s++) await sessions.session(s);
    backbone = await ort.InferenceSession.create(requireFile(bundle, m.backbone.file), options.sessionOptions);
  } catch (e) {
    await sessions.releaseAll();
    throw e;
  }
  const n = samples.count;
  const cascadePred = new Int32Array(n);
  const cascadeExit = new Int32Array(n);
  const backbonePred = new Int32Array(n);
  const headPred = Array.from({ length: nExits }, () => new Int32Array(n));
  const headScore = Array.from({ length: nExits }, () => new Float32Array(n));
  const segPred = new Int32Array(n); // backbone prediction through the segment chain
  const t = { cascade: 0, allHeads: 0, backbone: 0 };
  const buf = new Float32Array(batchSize * spec.height * spec.width * spec.channels);
  try {
    for (let start = 0; start < n; start += batchSize) {
      throwIfAborted(signal, 'eval');
      const rows = Math.min(batchSize, n - start);
      const x = new ort.Tensor('float32', toModelInput(samples, start, rows, spec, buf).slice(), inputDims(spec, rows));
      let t0 = performance.now();
      const res = await runCascade(m, runner, x, rows, { thresholds });
      t.cascade += performance.now() - t0;
      res.forEach((r, i) => {
        cascadePred[start + i] = r.index;
        cascadeExit[start + i] = r.exit;
      });
      // every stage, nobody exits: record each head's probabilities
      t0 = performance.now();
      const recorder: StageRunner<OrtTensor> = {
        runStage: async (s, a, r) => {
          const out = await runner.runStage(s, a, r, true); // every head is read, although no threshold lets a row leave
          const e = m.segments[s]!.exit;
          if (e !== undefined && out.exitProbs) {
            for (let i = 0; i < r; i++) {
              const { index, value } = argmaxRow(out.exitProbs, i * k, k);
              headPred[e]![start + i] = index;
              headScore[e]![start + i] = value;
            }
          }
          return out;
        },
        selectRows: (a, keep, r) => runner.selectRows(a, keep, r),
      };
      const all = await runCascade(m, recorder, x, rows, { thresholds: thresholds.map(() => Infinity) });
      t.allHeads += performance.now() - t0;
      all.forEach((r, i) => (segPred[start + i] = r.index));
      t0 = performance.now();
      const logits = await runBackbone(ort, backbone, x, rows, spec.name, m);
      t.backbone += performance.now() - t0;
      for (let i = 0; i < rows; i++) backbonePred[start + i] = argmaxRow(logits, i * k, k).index;
      options.onProgress?.(start + rows, n);
    }
  } finally {
    await sessions.releaseAll();
    await backbone.release();
  }
  const cost = cumulativeMacs(m);
  const exitCounts = new Array(nExits + 1).fill(0);
  const exitAgree = new Array(nExits + 1).fill(0);
  let agree = 0;
  let correct = 0;
  let bbCorrect = 0;
  let macs = 0;
  let oracleMacs = 0;
  let replayMismatches = 0;
  for (let i = 0; i < n; i++) {
    const e = cascadeExit[i]!;
    const slot = e < 0 ? nExits : e;
    exitCounts[slot]++;
    const ok = cascadePred[i] === backbonePred[i];
    if (ok) {
      agree++;
      exitAgree[slot]++;
    }
    if (labels) {
      if (cascadePred[i] === labels[i]) correct++;
      if (backbonePred[i] === labels[i]) bbCorrect++;
    }
    macs += e < 0 ? cost.backbone : cost.exits[e]!;
    // replay: first exit whose score passes its threshold
    let replay = -1;
    for (let j = 0; j < nExits; j++) {
      if (headScore[j]![i]! >= thresholds[j]!) {
        replay = j;
        break;
      }
    }
    const replayPred = replay < 0 ? segPred[i] : headPred[replay]![i];
    if (replay !== e || replayPred !== cascadePred[i]) replayMismatches++;
    let oracle = -1;
    for (let j = 0; j < nExits; j++) {
      if (headPred[j]![i] === backbonePred[i]) {
        oracle = j;
        break;
      }
    }
    oracleMacs += oracle < 0 ? cost.backbone : cost.exits[oracle]!;
  }
  const bbMacs = m.backbone.macs;
  const measureTarget = (target: number): TargetMeasurement => {
    const { point, reached } = pickCurvePoint(m.calibration.curve, target, {
      samples: m.calibration.samples,
      exits: nExits,
    });
    const shares = new Array<number>(nExits + 1).fill(0);
    let ag = 0;
    let ok = 0;
    let mac = 0;
    for (let i = 0; i < n; i++) {
      let j = 0;
      while (j < nExits && !(headScore[j]![i]! >= point.thresholds[j]!)) j++;
      const pred = j < nExits ? headPred[j]![i]! : segPred[i]!;
      shares[j]!++;
      if (pred === backbonePred[i]) ag++;
      if (labels && pred === labels[i]) ok++;
      mac += j < nExits ? cost.exits[j]! : cost.backbone;
    }
    return {
      target,
      thresholds: [...point.thresholds],
      reached,
      expectedAgreement: point.agreement,
      expectedMacsFraction: point.macsFraction,
      agreement: n ? ag / n : NaN,
      accuracy: labels && n ? ok / n : null,
      macsFraction: n ? mac / n / bbMacs : NaN,
      exitShares: shares.map((c) => (n ? c / n : NaN)),
    };
  };
  return {
    samples: n,
    agreement: n ? agree / n : NaN,
    accuracy: labels && n ? correct / n : null,
    backboneAccuracy: labels && n ? bbCorrect / n : null,
    macsFraction: n ? macs / n / bbMacs : NaN,
    oracleMacsFraction: n ? oracleMacs / n / bbMacs : NaN,
    exitShares: exitCounts.map((c: number) => (n ? c / n : NaN)),
    exitAgreement: exitCounts.map((c: number, j) => (c ? exitAgree[j] / c : NaN)),
    exitNames: m.exits.map((e) => e.name),
    thresholds: [...thresholds],
    replayMismatches,
    ...(options.targets ? { targetCurve: options.targets.map(measureTarget) } : {}),
    timingsMs: { cascade: Math.round(t.cascade), allHeads: Math.round(t.allHeads), backbone: Math.round(t.backbone) },
  };
}

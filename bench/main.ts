// Benchmark page: measures the early-exit bundle, on one or more engines (compiled, stage by stage), against the original
// model (one plain onnxruntime-web session), interleaved in the same page (image by image, or in blocks of calls:
// BenchConfig.interleave), same backend and threads.
// scripts/bench.mjs calls window.selfxitBench.run(config) once per configuration and collects the JSON it returns (one
// result per engine). Batch-1 calls are profiled (classify's `profile` option) for the per-part time breakdown.
// Over 400 lines: the result types, the per-engine accumulator and the one interleaved loop stay together so that each
// field of the record sits next to the code that measures it.
import { load, type BundleManifest, type CallProfile, type Classifier, type ClassifyResult } from '../src/index.js';
import { Baseline } from '../demo/lib/baseline.js';
import { fetchImageSet, imageData, imageRange, type ImageSet } from '../demo/lib/samples.js';
import { mean, summary } from '../demo/lib/stats.js';

/** Untimed calls of each side before measuring when a configuration names none ({@link BenchConfig.warmup}). */
export const WARMUP_DEFAULT = 100;

/** One measured configuration. URLs are relative to the page. */
export interface BenchConfig {
  readonly name: string;
  readonly manifestUrl: string;
  /** Original ONNX model (the baseline). */
  readonly modelUrl: string;
  readonly imagesUrl: string;
  readonly labelsUrl?: string;
  readonly images: number;
  readonly backend: 'wasm' | 'webgpu';
  readonly threads: number;
  readonly batch: number;
  /**
   * Untimed calls of each side before measuring. Default {@link WARMUP_DEFAULT}: each side is a fresh worker, whose
   * lazily loaded segments, compiled models, onnxruntime arenas and WebAssembly tiers settle in its first calls
   * (scripts/bench.mjs also has Chromium tier WebAssembly up eagerly: BENCH_JS_FLAGS).
   */
  readonly warmup?: number;
  /** One warm-up call only: the run is for label agreement, not timing (WebGPU on SwiftShader). */
  readonly correctnessOnly?: boolean;
  /** Also return every image's predicted class of both sides (to compare backends). */
  readonly returnLabels?: boolean;
  /** Also return every measured call's page ms of each side and of the full model, in call order (to see tails). */
  readonly returnCallMs?: boolean;
  /**
   * Make this device's plan (clf.plan(): stage times measured here) before measuring, and classify under it; a list:
   * per engine of `engines` (e.g. the same engine twice, before and after its plan, interleaved).
   */
  readonly devicePlan?: boolean | readonly boolean[];
  /** load() option `engine` (batch 1: the cascade model; batches: the batch model on WASM). Default: load()'s ('auto'). */
  readonly engine?: 'compiled' | 'stages' | 'auto';
  /**
   * Several engines measured in one run, each its own classifier, interleaved with each other and the full model (one
   * result per engine, all against the same full-model calls). Overrides `engine`.
   */
  readonly engines?: readonly ('compiled' | 'stages' | 'auto')[];
  /** Per engine of `engines`: the result's variant name. */
  readonly variants?: readonly string[];
  /** Per engine of `engines`: load() option `pruneExits` (live exit pruning). Default: load()'s (on). */
  readonly pruneExits?: readonly boolean[];
  /** Per engine of `engines`: load() option `sharedMemory` (classify() through shared memory). Default: load()'s (on). */
  readonly sharedMemory?: readonly boolean[];
  /** Variant name of a single-engine run. */
  readonly variant?: string;
  /** Agreement target to classify at (clf.setTarget(), or the plan's target): thresholds re-chosen from the bundle's curve. Default: the bundle's own. */
  readonly target?: number;
  /**
   * How the sides take turns. 'image' (the default): every side classifies the same image (or batch) before the next
   * one, in ABBA order. 'block': each side classifies `block` consecutive calls, then waits `pauseMs` before the next
   * side's turn, the sides' order rotating and reversing per block: every classifier then runs as it would alone in
   * an app (its caches warm, the other workers' onnxruntime threads asleep), which per-image turns never allow when each
   * side's worker holds a pool of WASM threads.
   */
  readonly interleave?: 'image' | 'block';
  /** Calls per side and turn with `interleave: 'block'`. Default 10. */
  readonly block?: number;
  /** Idle ms after each side's block (`interleave: 'block'`), so that the last worker's threads stop spinning. Default 20. */
  readonly pauseMs?: number;
}

type Stats = { mean: number; p50: number; p95: number };

/**
 * Mean ms per batch-1 call of each part of `clf.classify()`, page to page: `toWorkerMs` (page: input conversion and
 * postMessage, until the worker's classify() starts), the worker's parts ({@link CallProfile}), `fromWorkerMs` (the
 * reply's state, the message back and the page's result), and `pageMs` (the whole call as the page timed it).
 */
export interface Breakdown {
  readonly calls: number;
  readonly pageMs: number;
  readonly toWorkerMs: number;
  readonly preprocessMs: number;
  readonly queueMs: number;
  readonly runMs: number;
  /** Mean onnxruntime queue jobs (session runs) per call. */
  readonly runs: number;
  readonly readbackMs: number;
  readonly decisionMs: number;
  readonly replyMs: number;
  readonly fromWorkerMs: number;
}

/** The full model's call, split the same way as far as its worker reports: round trip, preprocessing + rest, run. */
export interface FullBreakdown {
  readonly pageMs: number;
  readonly roundTripMs: number;
  readonly workerOtherMs: number;
  readonly runMs: number;
}

export interface BenchResult {
  readonly variant: string;
  readonly config: BenchConfig;
  readonly backend: string;
  readonly threads: number;
  readonly crossOriginIsolated: boolean;
  /** Engine in use (info().engine at batch 1, info().batchEngine for batches), and why not the compiled one (batch 1). */
  readonly engine: string;
  readonly engineFallbackReason?: string;
  /** How its classify() calls reached the worker (info().transport). */
  readonly transport: 'shared-memory' | 'message';
  readonly images: number;
  /** Per-image latency (page-side round trip; for batches, the batch's time / batch size), ms. */
  readonly early: Stats;
  readonly full: Stats;
  /** Early / full of each statistic (mean of early / mean of full, p50 / p50, p95 / p95). */
  readonly ratio: Stats;
  /** Same, measured inside the workers (cascade total vs preprocess + session.run). */
  readonly earlyWorker: Stats;
  readonly fullWorker: Stats;
  /** Per segment: mean ms per call that ran it (the batch's run), how many calls and how many images ran it. */
  readonly stages: { readonly meanMs: number; readonly calls: number; readonly rows: number }[];
  /** Full model: mean session.run ms per call. */
  readonly fullRunMs: number;
  readonly macsFraction: number;
  readonly agreement: number;
  readonly accuracy: { readonly early: number; readonly full: number } | null;
  /** Share of images per exit (…, last = whole backbone). */
  readonly exitShares: number[];
  readonly exitNames: string[];
  /** Each exit's MACs fraction (the backbone's MACs up to its cut, and its head's). */
  readonly exitMacsFractions?: readonly number[];
  readonly thresholds: number[];
  readonly expectedMacsFraction: number;
  readonly validationAgreement: number;
  readonly wallSeconds: number;
  /** Untimed calls of each side before the measured ones (see {@link BenchConfig.warmup}). */
  readonly warmupCalls: number;
  /** Live exit pruning (load() option `pruneExits`) and the exits it had off after the warm-up and at the end. */
  readonly pruneExits: boolean;
  readonly prunedAtStart: readonly number[];
  readonly prunedAtEnd: readonly number[];
  /** The device plan classified under (`devicePlan`): exits used, expected ms and MACs fractions, stage times. */
  readonly plan?: {
    readonly enabled: readonly boolean[];
    readonly expectedMsFraction: number;
    readonly expectedMacsFraction: number;
    readonly stageMs: readonly number[];
    readonly decisionMs: readonly number[];
    readonly exitMs?: readonly number[];
    readonly seconds: number;
  };
  /** Per-image predicted classes, when `returnLabels`. */
  readonly labels?: { readonly early: number[]; readonly full: number[] };
  /**
   * Per measured call, when `returnCallMs`: page ms of this side and of the full model; at batch 1 also the exit each
   * image took (the exit count: none) and each call's onnxruntime ms (this side's profiled runs; the full model's run).
   */
  readonly callMs?: {
    readonly early: number[];
    readonly full: number[];
    readonly exits?: number[];
    readonly earlyRun?: number[];
    readonly fullRun?: number[];
  };
  /** Batch 1: where the time of one call goes (means over the measured calls). */
  readonly breakdown?: Breakdown;
  readonly fullBreakdown?: FullBreakdown;
}

const imageCache = new Map<string, Promise<ImageSet>>();

function log(line: string): void {
  console.log(`[bench] ${line}`);
  const el = document.getElementById('log');
  if (el) el.textContent += `${line}\n`;
}

function ratio(a: Stats, b: Stats): Stats {
  return { mean: a.mean / b.mean, p50: a.p50 / b.p50, p95: a.p95 / b.p95 };
}

/** Absolute ms, comparable with the worker's CallProfile times. */
const absoluteNow = (): number => performance.timeOrigin + performance.now();

/** What one early-exit side (one engine's classifier) accumulates. */
class EarlySide {
  readonly ms: number[] = [];
  readonly workerMs: number[] = [];
  /** Each profiled call's onnxruntime ms (batch 1). */
  readonly runMs: number[] = [];
  readonly stageSum: number[];
  readonly stageRows: number[];
  readonly stageCalls: number[];
  readonly idx: Int32Array;
  readonly exitOf: Int32Array;
  readonly macs: Float64Array;
  private parts: Record<keyof Breakdown, number> | undefined;

  constructor(
    readonly variant: string,
    readonly clf: Classifier,
    segments: number,
    n: number,
  ) {
    this.stageSum = new Array<number>(segments).fill(0);
    this.stageRows = new Array<number>(segments).fill(0);
    this.stageCalls = new Array<number>(segments).fill(0);
    this.idx = new Int32Array(n);
    this.exitOf = new Int32Array(n);
    this.macs = new Float64Array(n);
  }

  reset(): void {
    this.ms.length = this.workerMs.length = this.runMs.length = 0;
    this.stageSum.fill(0);
    this.stageRows.fill(0);
    this.stageCalls.fill(0);
    this.parts = undefined;
  }

  record(start: number, rows: number, res: ClassifyResult[], ms: number, exits: number, timing: Timing): void {
    res.forEach((r, j) => {
      this.idx[start + j] = r.index;
      this.exitOf[start + j] = r.exit.index < 0 ? exits : r.exit.index;
      this.macs[start + j] = r.exit.macsFraction;
      r.timings.stages.forEach((_, s) => (this.stageRows[s]! += 1));
    });
    // Segment times are per call (the batch's run of that segment): count each once.
    for (let s = 0; s < this.stageSum.length; s++) {
      const times = res.map((r) => r.timings.stages[s]).filter((v): v is number => v !== undefined);
      if (times.length) {
        this.stageSum[s]! += Math.max(...times);
        this.stageCalls[s]! += 1;
      }
    }
    this.ms.push(ms / rows);
    this.workerMs.push(res[0]!.timings.totalMs / rows);
    const p: CallProfile | undefined = res[0]!.timings.profile;
    if (p && rows === 1) this.addProfile(p, ms, timing);
  }

  private addProfile(p: CallProfile, pageMs: number, t: Timing): void {
    const parts = (this.parts ??= {
      calls: 0,
      pageMs: 0,
      toWorkerMs: 0,
      preprocessMs: 0,
      queueMs: 0,
      runMs: 0,
      runs: 0,
      readbackMs: 0,
      decisionMs: 0,
      replyMs: 0,
      fromWorkerMs: 0,
    });
    parts.calls += 1;
    parts.pageMs += pageMs;
    this.runMs.push(p.runMs);
    parts.toWorkerMs += p.recvAt - t.calledAt;
    parts.fromWorkerMs += t.doneAt - p.replyAt;
    for (const k of ['preprocessMs', 'queueMs', 'runMs', 'runs', 'readbackMs', 'decisionMs', 'replyMs'] as const)
      parts[k] += p[k];
  }

  breakdown(): Breakdown | undefined {
    const p = this.parts;
    if (!p || p.calls === 0) return undefined;
    const out = { ...p };
    for (const k of Object.keys(out) as (keyof Breakdown)[]) if (k !== 'calls') out[k] /= p.calls;
    return out;
  }
}

interface Timing {
  readonly calledAt: number;
  readonly doneAt: number;
}

/** `ms` rounded to whole µs. */
const microseconds = (ms: number): number => Math.round(ms * 1000) / 1000;

/** The sides' order for interleaved call `c`: rotations, each followed by its reverse (ABBA over any number of sides). */
function order<T>(sides: readonly T[], c: number): T[] {
  const r = Math.floor(c / 2) % sides.length;
  const base = [...sides.slice(r), ...sides.slice(0, r)];
  return c % 2 === 0 ? base : base.reverse();
}

async function run(config: BenchConfig): Promise<BenchResult[]> {
  const started = performance.now();
  const manifestUrl = new URL(config.manifestUrl, document.baseURI).href;
  const manifest = (await (await fetch(manifestUrl)).json()) as BundleManifest;
  const key = `${config.imagesUrl}|${config.images}`;
  if (!imageCache.has(key)) {
    imageCache.set(
      key,
      fetchImageSet(config.imagesUrl, manifest.input, {
        ...(config.labelsUrl ? { labelsUrl: config.labelsUrl } : {}),
        limit: config.images,
      }),
    );
  }
  const images = await imageCache.get(key)!;
  const n = images.count - (images.count % config.batch);
  const wasmPaths = new URL('ort/', document.baseURI).href;
  const engines: readonly ('compiled' | 'stages' | 'auto' | undefined)[] = config.engines ?? [config.engine];
  const variants = config.variants ?? [config.variant ?? 'selfxit'];
  const k = manifest.exits.length;
  const sides: EarlySide[] = [];
  let baseline: Baseline | undefined;
  try {
    for (const [i, engine] of engines.entries()) {
      const clf = await load(manifestUrl, {
        backend: config.backend,
        threads: config.threads,
        cache: false,
        wasmPaths,
        ...(engine ? { engine } : {}),
        ...(config.pruneExits?.[i] !== undefined ? { pruneExits: config.pruneExits[i] } : {}),
        ...(config.sharedMemory?.[i] !== undefined ? { sharedMemory: config.sharedMemory[i] } : {}),
      });
      sides.push(new EarlySide(variants[i] ?? `engine ${engine ?? 'auto'}`, clf, manifest.segments.length, n));
    }
    baseline = await Baseline.create({
      model: new URL(config.modelUrl, document.baseURI).href,
      input: manifest.input,
      backend: sides[0]!.clf.backend,
      threads: config.threads,
      wasmPaths,
      outputKind: manifest.backbone.outputKind,
    });
    const full = baseline;
    const plans = new Map<EarlySide, NonNullable<BenchResult['plan']>>();
    for (const [i, side] of sides.entries()) {
      if (Array.isArray(config.devicePlan) ? config.devicePlan[i] : config.devicePlan) {
        const t0 = performance.now();
        const p = await side.clf.plan(config.target !== undefined ? { target: config.target } : {});
        const plan = {
          enabled: p.enabled,
          expectedMsFraction: p.expectedMsFraction,
          expectedMacsFraction: p.expectedMacsFraction,
          stageMs: p.timings.stageMs,
          decisionMs: p.timings.decisionMs,
          ...(p.timings.exitMs ? { exitMs: p.timings.exitMs } : {}),
          seconds: (performance.now() - t0) / 1000,
        };
        plans.set(side, plan);
        log(
          `${config.name} (${side.variant}): device plan in ${plan.seconds.toFixed(1)} s, exits used ${p.enabled.map((e) => (e ? 1 : 0)).join('')}, expected ms fraction ${p.expectedMsFraction.toFixed(3)}`,
        );
      } else if (config.target !== undefined) side.clf.setTarget(config.target);
    }

    const fullMs: number[] = [];
    const fullWorkerMs: number[] = [];
    const fullRunMs: number[] = [];
    const fullIdx = new Int32Array(n);
    const profile = config.batch === 1 && !config.correctnessOnly;

    const inputs = (start: number, rows: number): ImageData[] =>
      Array.from({ length: rows }, (_, r) => imageData(images, start + r));
    const earlyCall = async (side: EarlySide, start: number, rows: number): Promise<void> => {
      const batch = inputs(start, rows);
      const options = profile ? { profile: true } : {};
      const calledAt = absoluteNow();
      const t0 = performance.now();
      const res = rows === 1 ? [await side.clf.classify(batch[0]!, options)] : await side.clf.classifyBatch(batch);
      const dt = performance.now() - t0;
      side.record(start, rows, res, dt, k, { calledAt, doneAt: absoluteNow() });
    };
    const fullCall = async (start: number, rows: number): Promise<void> => {
      const r = await full.run(imageRange(images, start, rows), rows);
      r.indices.forEach((v, j) => (fullIdx[start + j] = v));
      fullMs.push(r.pageMs / rows);
      fullWorkerMs.push(r.workerMs / rows);
      fullRunMs.push(r.runMs);
    };
    const call = (side: EarlySide | 'full', start: number): Promise<void> =>
      side === 'full' ? fullCall(start, config.batch) : earlyCall(side, start, config.batch);
    const all: (EarlySide | 'full')[] = [...sides, 'full'];

    // Warm-up (untimed): sessions, kernels, thread pools, JIT tiers, lazily loaded segments, live pruning.
    const warmupCalls = config.correctnessOnly ? 1 : (config.warmup ?? WARMUP_DEFAULT);
    for (let w = 0; w < warmupCalls; w++) {
      const start = (w * config.batch) % Math.max(1, n - config.batch + 1);
      for (const side of all) await call(side, start);
    }
    fullMs.length = fullWorkerMs.length = fullRunMs.length = 0;
    for (const side of sides) side.reset();
    const prunedAtStart = new Map(sides.map((s) => [s, s.clf.info().prunedExits]));

    // Interleaved, the order rotating and reversing (ABBA for two sides) so that drift and caching favour none: per
    // call (every side the same image in turn) or per block of calls (each side alone for `block` calls, then idle).
    const perTurn = config.interleave === 'block' ? Math.max(1, Math.floor(config.block ?? 10)) : 1;
    const pause = config.interleave === 'block' ? Math.max(0, config.pauseMs ?? 20) : 0;
    const calls = Math.ceil(n / config.batch);
    for (let turn = 0, done = 0; done < calls; turn++, done += perTurn) {
      const starts = Array.from({ length: Math.min(perTurn, calls - done) }, (_, j) => (done + j) * config.batch);
      for (const side of order(all, turn)) {
        for (const start of starts) await call(side, start);
        if (pause > 0) await new Promise((r) => setTimeout(r, pause));
      }
      const before = Math.floor(done / 50);
      if (Math.floor((done + starts.length) / 50) > before)
        log(`${config.name}: ${(done + starts.length) * config.batch}/${n}`);
    }

    const fullStats = summary(fullMs);
    const fullWorker = summary(fullWorkerMs);
    const fullRun = mean(fullRunMs);
    const fullBreakdown: FullBreakdown = {
      pageMs: fullStats.mean,
      roundTripMs: fullStats.mean - fullWorker.mean,
      workerOtherMs: fullWorker.mean - fullRun,
      runMs: fullRun,
    };
    return sides.map((side) => {
      const counts = new Array<number>(k + 1).fill(0);
      side.exitOf.forEach((e) => (counts[e]! += 1));
      let agree = 0;
      let accE = 0;
      let accF = 0;
      for (let i = 0; i < n; i++) {
        if (side.idx[i] === fullIdx[i]) agree++;
        if (images.labels) {
          if (side.idx[i] === images.labels[i]) accE++;
          if (fullIdx[i] === images.labels[i]) accF++;
        }
      }
      const info = side.clf.info();
      const early = summary(side.ms);
      const plan = plans.get(side);
      const breakdown = side.breakdown();
      const result: BenchResult = {
        variant: side.variant,
        config,
        backend: side.clf.backend,
        threads: info.threads,
        crossOriginIsolated,
        engine: config.batch > 1 ? info.batchEngine : info.engine,
        ...(info.engineFallbackReason ? { engineFallbackReason: info.engineFallbackReason } : {}),
        transport: info.transport,
        images: n,
        early,
        full: fullStats,
        ratio: ratio(early, fullStats),
        earlyWorker: summary(side.workerMs),
        fullWorker,
        stages: side.stageSum.map((sum, i) => ({
          meanMs: side.stageCalls[i] ? sum / side.stageCalls[i]! : 0,
          calls: side.stageCalls[i]!,
          rows: side.stageRows[i]!,
        })),
        fullRunMs: fullRun,
        macsFraction: mean(Array.from(side.macs)),
        agreement: agree / n,
        accuracy: images.labels ? { early: accE / n, full: accF / n } : null,
        exitShares: counts.map((x) => x / n),
        exitNames: manifest.exits.map((e) => e.name),
        exitMacsFractions: manifest.exits.map((e) => e.macsFraction),
        thresholds: info.exits.map((e) => e.threshold),
        ...(plan ? { plan } : {}),
        expectedMacsFraction: manifest.calibration.expectedMacsFraction,
        validationAgreement: manifest.calibration.validationAgreement,
        wallSeconds: (performance.now() - started) / 1000,
        warmupCalls,
        pruneExits: config.pruneExits?.[sides.indexOf(side)] !== false,
        prunedAtStart: prunedAtStart.get(side) ?? [],
        prunedAtEnd: info.prunedExits,
        ...(config.returnLabels ? { labels: { early: Array.from(side.idx), full: Array.from(fullIdx) } } : {}),
        // µs resolution: the page's clock is coarser (5 µs in an isolated page), the rest is float noise in the record.
        ...(config.returnCallMs
          ? {
              callMs: {
                early: side.ms.map(microseconds),
                full: fullMs.map(microseconds),
                ...(config.batch === 1 && side.runMs.length === n
                  ? {
                      exits: Array.from(side.exitOf),
                      earlyRun: side.runMs.map(microseconds),
                      fullRun: fullRunMs.map(microseconds),
                    }
                  : {}),
              },
            }
          : {}),
        ...(breakdown ? { breakdown, fullBreakdown } : {}),
      };
      log(
        `${config.name} ${side.variant} (${result.engine}): early ${early.mean.toFixed(3)} ms, full ${fullStats.mean.toFixed(3)} ms, ratio ${result.ratio.mean.toFixed(3)}, ` +
          `agreement ${(result.agreement * 100).toFixed(2)}%, macs ${result.macsFraction.toFixed(3)}`,
      );
      return result;
    });
  } finally {
    for (const side of sides) await side.clf.dispose();
    await baseline?.dispose();
  }
}

declare global {
  interface Window {
    selfxitBench: { run(config: BenchConfig): Promise<BenchResult[]>; webgpu(): Promise<string | null> };
  }
}

window.selfxitBench = {
  run,
  /** Adapter description when WebGPU is available, else null. */
  async webgpu() {
    const a = await navigator.gpu?.requestAdapter().catch(() => null);
    return a ? `${a.info.vendor} ${a.info.architecture} ${a.info.description}`.trim() : null;
  },
};
log('ready');

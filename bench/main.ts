// Benchmark page: measures the early-exit bundle against the original model (one plain onnxruntime-web session),
// interleaved image by image in the same page, same backend and threads. scripts/bench.mjs calls
// window.selfxitBench.run(config) once per configuration and collects the JSON it returns.
import { load, type BundleManifest } from '../src/index.js';
import { Baseline } from '../demo/lib/baseline.js';
import { fetchImageSet, imageData, imageRange, type ImageSet } from '../demo/lib/samples.js';
import { mean, summary } from '../demo/lib/stats.js';

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
  /** Untimed calls of each side before measuring. Default 8. */
  readonly warmup?: number;
  /** One warm-up call only: the run is for label agreement, not timing (WebGPU on SwiftShader). */
  readonly correctnessOnly?: boolean;
  /** Also return every image's predicted class of both sides (to compare backends). */
  readonly returnLabels?: boolean;
  /** Make this device's plan (clf.plan(): stage times measured here) before measuring, and classify under it. */
  readonly devicePlan?: boolean;
  /** load() option `engine` (batch-1 calls; batches always run stage by stage). Default: load()'s ('auto'). */
  readonly engine?: 'compiled' | 'stages' | 'auto';
  /** Agreement target to classify at (clf.setTarget(), or the plan's target): thresholds re-chosen from the bundle's curve. Default: the bundle's own. */
  readonly target?: number;
}

type Stats = { mean: number; p50: number; p95: number };

export interface BenchResult {
  readonly config: BenchConfig;
  readonly backend: string;
  readonly threads: number;
  readonly crossOriginIsolated: boolean;
  /** Engine of batch-1 calls in use (info().engine), and why not the compiled one when it fell back. */
  readonly engine: string;
  readonly engineFallbackReason?: string;
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
  readonly thresholds: number[];
  readonly expectedMacsFraction: number;
  readonly validationAgreement: number;
  readonly wallSeconds: number;
  /** The device plan classified under (`devicePlan`): exits used, expected ms and MACs fractions, stage times. */
  readonly plan?: {
    readonly enabled: readonly boolean[];
    readonly expectedMsFraction: number;
    readonly expectedMacsFraction: number;
    readonly stageMs: readonly number[];
    readonly decisionMs: readonly number[];
    readonly seconds: number;
  };
  /** Per-image predicted classes, when `returnLabels`. */
  readonly labels?: { readonly early: number[]; readonly full: number[] };
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

async function run(config: BenchConfig): Promise<BenchResult> {
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
  const clf = await load(manifestUrl, {
    backend: config.backend,
    threads: config.threads,
    cache: false,
    wasmPaths,
    ...(config.engine ? { engine: config.engine } : {}),
  });
  const baseline = await Baseline.create({
    model: new URL(config.modelUrl, document.baseURI).href,
    input: manifest.input,
    backend: clf.backend,
    threads: config.threads,
    wasmPaths,
    outputKind: manifest.backbone.outputKind,
  });
  try {
    let plan: BenchResult['plan'];
    if (config.devicePlan) {
      const t0 = performance.now();
      const p = await clf.plan(config.target !== undefined ? { target: config.target } : {});
      plan = {
        enabled: p.enabled,
        expectedMsFraction: p.expectedMsFraction,
        expectedMacsFraction: p.expectedMacsFraction,
        stageMs: p.timings.stageMs,
        decisionMs: p.timings.decisionMs,
        seconds: (performance.now() - t0) / 1000,
      };
      log(
        `${config.name}: device plan in ${plan.seconds.toFixed(1)} s, exits used ${p.enabled.map((e) => (e ? 1 : 0)).join('')}, expected ms fraction ${p.expectedMsFraction.toFixed(3)}`,
      );
    }
    if (config.target !== undefined && !config.devicePlan) clf.setTarget(config.target);
    const info = clf.info();
    const k = manifest.exits.length;
    const earlyMs: number[] = [];
    const fullMs: number[] = [];
    const earlyWorkerMs: number[] = [];
    const fullWorkerMs: number[] = [];
    const fullRunMs: number[] = [];
    const stageSum = new Array<number>(manifest.segments.length).fill(0);
    const stageRows = new Array<number>(manifest.segments.length).fill(0);
    const stageCalls = new Array<number>(manifest.segments.length).fill(0);
    const earlyIdx = new Int32Array(n);
    const fullIdx = new Int32Array(n);
    const exitOf = new Int32Array(n);
    const macs = new Float64Array(n);

    const inputs = (start: number, rows: number): ImageData[] =>
      Array.from({ length: rows }, (_, r) => imageData(images, start + r));
    const earlyCall = async (start: number, rows: number): Promise<void> => {
      const batch = inputs(start, rows);
      const t0 = performance.now();
      const res = rows === 1 ? [await clf.classify(batch[0]!)] : await clf.classifyBatch(batch);
      const dt = performance.now() - t0;
      res.forEach((r, j) => {
        earlyIdx[start + j] = r.index;
        exitOf[start + j] = r.exit.index < 0 ? k : r.exit.index;
        macs[start + j] = r.exit.macsFraction;
        r.timings.stages.forEach((_, s) => (stageRows[s]! += 1));
      });
      // Segment times are per call (the batch's run of that segment): count each once.
      for (let s = 0; s < stageSum.length; s++) {
        const times = res.map((r) => r.timings.stages[s]).filter((v): v is number => v !== undefined);
        if (times.length) {
          stageSum[s]! += Math.max(...times);
          stageCalls[s]! += 1;
        }
      }
      earlyMs.push(dt / rows);
      earlyWorkerMs.push(res[0]!.timings.totalMs / rows);
    };
    const fullCall = async (start: number, rows: number): Promise<void> => {
      const r = await baseline.run(imageRange(images, start, rows), rows);
      r.indices.forEach((v, j) => (fullIdx[start + j] = v));
      fullMs.push(r.pageMs / rows);
      fullWorkerMs.push(r.workerMs / rows);
      fullRunMs.push(r.runMs);
    };

    // Warm-up (untimed): sessions, kernels, thread pools, JIT.
    const warm = config.correctnessOnly ? 1 : (config.warmup ?? 8);
    for (let w = 0; w < warm; w++) {
      const start = (w * config.batch) % Math.max(1, n - config.batch + 1);
      await earlyCall(start, config.batch);
      await fullCall(start, config.batch);
    }
    earlyMs.length = fullMs.length = earlyWorkerMs.length = fullWorkerMs.length = fullRunMs.length = 0;
    stageSum.fill(0);
    stageRows.fill(0);
    stageCalls.fill(0);

    // Interleaved, alternating which side goes first (ABBA) so drift and caching favour neither.
    for (let c = 0, start = 0; start < n; c++, start += config.batch) {
      if (c % 2 === 0) {
        await earlyCall(start, config.batch);
        await fullCall(start, config.batch);
      } else {
        await fullCall(start, config.batch);
        await earlyCall(start, config.batch);
      }
      if (c % 50 === 49) log(`${config.name}: ${start + config.batch}/${n}`);
    }

    const counts = new Array<number>(k + 1).fill(0);
    exitOf.forEach((e) => (counts[e]! += 1));
    let agree = 0;
    let accE = 0;
    let accF = 0;
    for (let i = 0; i < n; i++) {
      if (earlyIdx[i] === fullIdx[i]) agree++;
      if (images.labels) {
        if (earlyIdx[i] === images.labels[i]) accE++;
        if (fullIdx[i] === images.labels[i]) accF++;
      }
    }
    const early = summary(earlyMs);
    const full = summary(fullMs);
    const result: BenchResult = {
      config,
      backend: clf.backend,
      threads: info.threads,
      crossOriginIsolated,
      engine: info.engine,
      ...(info.engineFallbackReason ? { engineFallbackReason: info.engineFallbackReason } : {}),
      images: n,
      early,
      full,
      ratio: ratio(early, full),
      earlyWorker: summary(earlyWorkerMs),
      fullWorker: summary(fullWorkerMs),
      stages: stageSum.map((s, i) => ({
        meanMs: stageCalls[i] ? s / stageCalls[i]! : 0,
        calls: stageCalls[i]!,
        rows: stageRows[i]!,
      })),
      fullRunMs: mean(fullRunMs),
      macsFraction: mean(Array.from(macs)),
      agreement: agree / n,
      accuracy: images.labels ? { early: accE / n, full: accF / n } : null,
      exitShares: counts.map((x) => x / n),
      exitNames: manifest.exits.map((e) => e.name),
      thresholds: info.exits.map((e) => e.threshold),
      ...(plan ? { plan } : {}),
      expectedMacsFraction: manifest.calibration.expectedMacsFraction,
      validationAgreement: manifest.calibration.validationAgreement,
      wallSeconds: (performance.now() - started) / 1000,
      ...(config.returnLabels ? { labels: { early: Array.from(earlyIdx), full: Array.from(fullIdx) } } : {}),
    };
    log(
      `${config.name}: early ${early.mean.toFixed(3)} ms, full ${full.mean.toFixed(3)} ms, ratio ${result.ratio.mean.toFixed(3)}, ` +
        `agreement ${(result.agreement * 100).toFixed(2)}%, macs ${result.macsFraction.toFixed(3)}`,
    );
    return result;
  } finally {
    await clf.dispose();
    await baseline.dispose();
  }
}

declare global {
  interface Window {
    selfxitBench: { run(config: BenchConfig): Promise<BenchResult>; webgpu(): Promise<string | null> };
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

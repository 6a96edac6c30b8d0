// Page of `npm run bench:adapt`: one learning classifier (load() of the plain .onnx with `learn`) and one plain
// full-model onnxruntime session (the reference), fed the same images one by one, interleaved. scripts/bench-adapt.mjs
// calls init() once and step() once per window; step() returns the window's sums (bench/adapt-report.ts).
import { load, type Classifier, type LearnOptions } from '../src/index.js';
import { Baseline } from '../demo/lib/baseline.js';
import { fetchImageSet, imageBytes, imageData, type ImageSet } from '../demo/lib/samples.js';
import { shiftImage, type AdaptPhase, type AdaptWindow, type Shift } from './adapt-report.js';

export interface AdaptInit {
  readonly modelUrl: string;
  /** Image files by name (uint8 NHWC). */
  readonly sets: Readonly<Record<string, string>>;
  readonly threads: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly labels: readonly string[];
  readonly learn: LearnOptions;
}

export interface AdaptStep {
  readonly phase: AdaptPhase;
  readonly start: number;
  readonly set: string;
  readonly indices: readonly number[];
  readonly shift?: Shift;
}

let clf: Classifier | undefined;
let full: Baseline | undefined;
const sets = new Map<string, ImageSet>();

async function init(c: AdaptInit): Promise<{ backend: string; threads: number; crossOriginIsolated: boolean }> {
  const shape = { height: 32, width: 32, channels: 3 } as const;
  for (const [name, url] of Object.entries(c.sets)) sets.set(name, await fetchImageSet(url, shape));
  const wasmPaths = new URL('ort/', document.baseURI).href;
  const model = new URL(c.modelUrl, document.baseURI).href;
  clf = await load(model, {
    backend: 'wasm',
    threads: c.threads,
    wasmPaths,
    cache: false,
    learn: { ...c.learn, input: { mean: [...c.mean], std: [...c.std] }, labels: [...c.labels] },
  });
  full = await Baseline.create({
    model,
    input: { name: 'input', ...shape, layout: 'NCHW', mean: c.mean, std: c.std },
    backend: 'wasm',
    threads: c.threads,
    wasmPaths,
    outputKind: 'logits',
  });
  const info = clf.info();
  return { backend: info.backend, threads: info.threads, crossOriginIsolated: globalThis.crossOriginIsolated };
}

async function step(s: AdaptStep): Promise<AdaptWindow> {
  if (!clf || !full) throw new Error('init() first');
  const set = sets.get(s.set);
  if (!set) throw new Error(`no image set ${s.set}`);
  let agreed = 0,
    onImages = 0,
    onAgreed = 0,
    early = 0,
    earlyAgreed = 0,
    macs = 0,
    sdkMs = 0,
    fullMs = 0,
    fitsDone = 0,
    fitSeconds = 0;
  const events: AdaptWindow['events'][number][] = [];
  let before = clf.learning();
  for (const [k, i] of s.indices.entries()) {
    const raw = imageBytes(set, i);
    const bytes = s.shift ? shiftImage(raw, set.height, set.width, set.channels, s.shift) : raw;
    const img = imageData({ data: bytes, count: 1, height: set.height, width: set.width, channels: set.channels }, 0);
    // interleaved, the side that goes first alternating
    const sdk = async (): Promise<{ index: number; exit: number; macs: number; ms: number }> => {
      const t0 = performance.now();
      const r = await clf!.classify(img);
      return { index: r.index, exit: r.exit.index, macs: r.exit.macsFraction, ms: performance.now() - t0 };
    };
    const ref = async (): Promise<{ index: number; ms: number }> => {
      const r = await full!.run(bytes, 1);
      return { index: r.indices[0]!, ms: r.pageMs };
    };
    let a, b;
    if (k % 2 === 0) {
      a = await sdk();
      b = await ref();
    } else {
      b = await ref();
      a = await sdk();
    }
    const same = a.index === b.index ? 1 : 0;
    agreed += same;
    if (before.exitsOn) {
      onImages++;
      onAgreed += same;
    }
    if (a.exit >= 0) {
      early++;
      earlyAgreed += same;
    }
    macs += a.macs;
    sdkMs += a.ms;
    fullMs += b.ms;
    const after = clf.learning();
    if (after.fits > before.fits) {
      fitsDone += after.fits - before.fits;
      fitSeconds += after.lastFitSeconds ?? 0;
      events.push({ at: k, kind: 'fit' });
    }
    if (after.exitsOn && !before.exitsOn) events.push({ at: k, kind: 'on' });
    if (!after.exitsOn && before.exitsOn) events.push({ at: k, kind: 'off' });
    if (after.tightenings > before.tightenings) events.push({ at: k, kind: 'tighten' });
    if ((after.drift?.alarms ?? 0) > (before.drift?.alarms ?? 0)) events.push({ at: k, kind: 'drift' });
    before = after;
  }
  const l = before;
  return {
    phase: s.phase,
    start: s.start,
    images: s.indices.length,
    agreed,
    onImages,
    onAgreed,
    early,
    earlyAgreed,
    macs,
    sdkMs,
    fullMs,
    fitsDone,
    fitSeconds,
    events,
    sdk: {
      exitsOn: l.exitsOn,
      fits: l.fits,
      samplesSeen: l.samplesSeen,
      samplesStored: l.samplesStored,
      tightenings: l.tightenings,
      driftAlarms: l.drift?.alarms ?? 0,
      driftRestarts: l.drift?.restarts ?? 0,
      fitTarget: l.fitTarget,
      expectedMacsFraction: l.macsFraction,
      audit: {
        agreement: l.audit.agreement,
        lowerBound: l.audit.lowerBound,
        upperBound: l.audit.upperBound,
        audited: l.audit.audited,
        totalAudited: l.audit.totalAudited,
        recentAudited: l.audit.recentAudited,
        recentAgreement: l.audit.recentAudited ? l.audit.recentAgreed / l.audit.recentAudited : 1,
      },
    },
  };
}

async function dispose(): Promise<void> {
  await clf?.dispose();
  await full?.dispose();
}

declare global {
  interface Window {
    selfxitAdapt: {
      init: typeof init;
      step: typeof step;
      dispose: typeof dispose;
      learning(): unknown;
    };
  }
}

window.selfxitAdapt = { init, step, dispose, learning: () => clf?.learning() };

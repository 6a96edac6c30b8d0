// "Learn on this device" panel of the demo: loads the shipped plain model (model.onnx, no bundle) with `learn` on,
// streams its test and calibration images (every second one mirrored) as traffic, and shows what clf.learning() says
// as it goes (samples seen, fits, exits on/off, the audited agreement with its lower bound, MACs saved) with a chart
// over time. State is exposed on window.selfxitLearnDemo for the e2e test.
import { load, type Classifier, type LearningInfo } from '../src/index.js';
import { lineChart } from './charts.js';
import { fetchImageSet, imageData, type ImageSet } from './lib/samples.js';

const MODEL_DIR = new URL('models/fashion-resnet/', document.baseURI).href;
const WASM_PATHS = new URL('ort/', document.baseURI).href;
/** Images per point of the chart. */
const BUCKET = 50;

/** One point of the chart: after `seen` streamed images. */
interface LearnPoint {
  readonly seen: number;
  /** Audited agreement and its lower bound (NaN before the first audit since the exits last changed). */
  readonly audit: number;
  readonly lower: number;
  /** 1 − mean MACs fraction of the bucket's served images. */
  readonly macsSaved: number;
  readonly exitsOn: boolean;
}

interface LearnDemoState {
  status: 'idle' | 'loading' | 'running' | 'stopped' | 'error';
  streamed: number;
  points: LearnPoint[];
  learning?: LearningInfo;
  error?: string;
}

declare global {
  interface Window {
    selfxitLearnDemo: LearnDemoState;
  }
}

const state: LearnDemoState = { status: 'idle', streamed: 0, points: [] };
window.selfxitLearnDemo = state;

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from the page`);
  return node as T;
};

const pct = (v: number, digits = 1): string => (Number.isFinite(v) ? `${(v * 100).toFixed(digits)}%` : '–');

/** Image `i` of the traffic: test then calibration images, cycling; odd `i` mirrored left to right. */
function trafficImage(sets: readonly ImageSet[], i: number): ImageData {
  const total = sets.reduce((s, x) => s + x.count, 0);
  let n = (i >> 1) % total;
  let set = sets[0]!;
  for (const s of sets) {
    if (n < s.count) {
      set = s;
      break;
    }
    n -= s.count;
  }
  const img = imageData(set, n);
  if (i & 1) {
    const { width, height, data } = img;
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width >> 1; x++)
        for (let c = 0; c < 4; c++) {
          const a = (y * width + x) * 4 + c;
          const b = (y * width + (width - 1 - x)) * 4 + c;
          const t = data[a]!;
          data[a] = data[b]!;
          data[b] = t;
        }
  }
  return img;
}

export function setupLearnMode(): void {
  const ui = {
    start: $<HTMLButtonElement>('learn-start'),
    reset: $<HTMLButtonElement>('learn-reset'),
    status: $('learn-status'),
    seen: $('l-seen'),
    fits: $('l-fits'),
    exits: $('l-exits'),
    audit: $('l-audit'),
    auditSub: $('l-audit-sub'),
    macs: $('l-macs'),
    chart: $('chart-learn'),
  };
  let clf: Classifier | undefined;
  let sets: ImageSet[] = [];
  let running = false;

  const show = (l: LearningInfo): void => {
    state.learning = l;
    ui.seen.textContent = l.samplesSeen.toLocaleString('en-US');
    ui.fits.textContent = `${l.fits}${l.fitting ? ' (fitting…)' : ''}`;
    ui.exits.textContent = l.cannotLearn ? 'cannot learn' : l.exitsOn ? `on (${l.exits})` : 'off';
    const a = l.audit;
    const driftNote = (x: LearningInfo): string =>
      x.drift?.alarms ? ` · drift alarms ${x.drift.alarms} (exits re-learned on the new traffic)` : '';
    ui.audit.textContent = a.audited ? pct(a.agreement, 2) : '–';
    ui.auditSub.textContent = a.audited
      ? `lower bound ${pct(a.lowerBound, 2)} · ${a.audited} audits · target ${pct(l.target, 1)}${driftNote(l)}`
      : `no audits yet · target ${pct(l.target, 1)}${driftNote(l)}`;
    const last = state.points[state.points.length - 1];
    ui.macs.textContent = last ? pct(last.macsSaved) : '–';
    ui.status.textContent =
      (l.cannotLearn ? `Serving the full model: ${l.cannotLearn}. ` : '') +
      (l.restored ? 'Restored what this device learned before. ' : '') +
      (l.persists ? 'Kept in IndexedDB.' : `Not persisted${l.persistReason ? `: ${l.persistReason}` : ''}.`);
  };

  const draw = (): void =>
    lineChart(ui.chart, {
      x: state.points.map((p) => p.seen),
      series: [
        { name: 'audited agreement', color: 'var(--c-accent)' },
        { name: 'its lower bound', color: 'var(--c-curve)' },
        { name: 'MACs saved', color: 'var(--c-full)' },
      ],
      values: [
        state.points.map((p) => p.audit),
        state.points.map((p) => p.lower),
        state.points.map((p) => p.macsSaved),
      ],
      xLabel: 'images streamed',
      label: 'Audited agreement and MACs saved over the streamed images',
    });

  async function open(): Promise<Classifier> {
    if (clf) return clf;
    state.status = 'loading';
    ui.status.textContent = 'Loading the plain model (no bundle)…';
    const meta = (await (await fetch(new URL('model.json', MODEL_DIR))).json()) as {
      shape: [number, number, number];
      mean: number[];
      std: number[];
    };
    const labels = (await (await fetch(new URL('labels.txt', MODEL_DIR))).text())
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean);
    const shape = { height: meta.shape[0], width: meta.shape[1], channels: meta.shape[2] };
    sets = [
      await fetchImageSet(new URL('test-u8.bin', MODEL_DIR).href, shape),
      await fetchImageSet(new URL('calib-u8.bin', MODEL_DIR).href, shape),
    ];
    clf = await load(new URL('model.onnx', MODEL_DIR).href, {
      backend: 'wasm',
      wasmPaths: WASM_PATHS,
      learn: {
        input: { mean: meta.mean, std: meta.std },
        labels,
        // a small, quick fit for a demo: 500 samples, 4 candidate cuts, linear heads
        minSamples: 500,
        maxCandidates: 4,
        headKinds: ['pool-linear'],
      },
    });
    return clf;
  }

  async function stream(): Promise<void> {
    const c = await open();
    state.status = 'running';
    ui.start.textContent = 'Pause';
    ui.reset.disabled = false;
    let macs = 0;
    let n = 0;
    while (running) {
      const r = await c.classify(trafficImage(sets, state.streamed));
      state.streamed++;
      macs += r.exit.macsFraction;
      n++;
      if (n === BUCKET) {
        const l = c.learning();
        const audited = l.audit.audited > 0;
        state.points.push({
          seen: state.streamed,
          audit: audited ? l.audit.agreement : NaN,
          lower: audited ? l.audit.lowerBound : NaN,
          macsSaved: 1 - macs / n,
          exitsOn: l.exitsOn,
        });
        macs = 0;
        n = 0;
        show(l);
        draw();
        // yield to the page so it stays responsive
        await new Promise((res) => setTimeout(res, 0));
      }
    }
    state.status = 'stopped';
    ui.start.textContent = 'Resume learning';
  }

  ui.start.addEventListener('click', () => {
    if (running) {
      running = false;
      return;
    }
    running = true;
    stream().catch((e: unknown) => {
      running = false;
      state.status = 'error';
      state.error = e instanceof Error ? e.message : String(e);
      ui.status.textContent = `Error: ${state.error}`;
      ui.start.textContent = 'Start learning';
    });
  });
  ui.reset.addEventListener('click', () => {
    void (async () => {
      if (!clf) return;
      running = false;
      await clf.resetLearning();
      state.points = [];
      state.streamed = 0;
      draw();
      show(clf.learning());
      ui.status.textContent = 'Forgot everything learned (also in IndexedDB).';
    })().catch((e: unknown) => {
      state.status = 'error';
      state.error = e instanceof Error ? e.message : String(e);
      ui.status.textContent = `Error: the reset failed: ${state.error}`;
    });
  });
  ui.start.disabled = false;
  draw();
}

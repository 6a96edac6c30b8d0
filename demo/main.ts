// Demo page: loads the bundle prepared from the shipped Fashion-MNIST ResNet, classifies a gallery of test images
// with early exits and with the full model (interleaved), draws the charts, and wires the target slider, the
// backend switch, the device plan (with its cost table for `selfxit prepare --cost-table`) and the
// bring-your-own-model panel (and the "learn on this device" panel, demo/learn-mode.ts).
import { load, type Classifier, type DevicePlan, type TargetChoice } from '../src/index.js';
import type { BundleManifest, CurvePoint } from '../src/bundle/manifest.js';
import { costTableFromPlan } from '../src/policy/device-plan.js';
import { barChart, costBar, histogram, tradeoffChart } from './charts.js';
import { Baseline } from './lib/baseline.js';
import { fetchImageSet, imageBytes, imageCanvas, imageData, type ImageSet } from './lib/samples.js';
import { mean } from './lib/stats.js';
import { setupByom } from './byom.js';
import { setupLearnMode } from './learn-mode.js';
import { exitColor, FULL_COLOR, chooseCurvePoint } from './lib/ui.js';

const BUNDLE_URL = new URL('bundle/manifest.json', document.baseURI).href;
const MODEL_DIR = new URL('models/fashion-resnet/', document.baseURI).href;
const WASM_PATHS = new URL('ort/', document.baseURI).href;
const GALLERY_SIZE = 48;

type BackendChoice = 'wasm' | 'webgpu';

/** One image's outcome in a run. */
interface Row {
  readonly truth: number | undefined;
  readonly early: { index: number; confidence: number; exit: number; macsFraction: number; ms: number };
  readonly full: { index: number; confidence: number; ms: number };
}

/** Summary of the last finished run, also exposed on window for the e2e test. */
interface RunSummary {
  readonly target: number;
  readonly count: number;
  readonly backend: string;
  readonly agreement: number;
  readonly accuracyEarly: number;
  readonly accuracyFull: number;
  readonly macsFraction: number;
  /** Share of images per exit slot (exits…, full model last). */
  readonly exitShares: number[];
  /** Exit slot per image (exits.length = full model). */
  readonly exits: number[];
  readonly meanMsEarly: number;
  readonly meanMsFull: number;
  readonly expected?: CurvePoint;
}

interface DemoState {
  status: 'loading' | 'running' | 'ready' | 'error';
  runs: number;
  last?: RunSummary;
  error?: string;
  /** The device plan in use (after "Plan for this device"), until the backend changes. */
  plan?: {
    backend: string;
    threads: number;
    enabled: readonly boolean[];
    expectedMsFraction: number;
    expectedMacsFraction: number;
  };
}

declare global {
  interface Window {
    selfxitDemo: DemoState;
  }
}

const state: DemoState = { status: 'loading', runs: 0 };
window.selfxitDemo = state;

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from the page`);
  return node as T;
};

const ui = {
  target: $<HTMLInputElement>('target'),
  targetValue: $<HTMLOutputElement>('target-value'),
  targetExpect: $('target-expect'),
  count: $<HTMLSelectElement>('count'),
  rerun: $<HTMLButtonElement>('rerun'),
  status: $('status'),
  progress: $('progress-bar'),
  backendNote: $('backend-note'),
  pillBackend: $('pill-backend'),
  pillThreads: $('pill-threads'),
  pillIsolated: $('pill-isolated'),
  gallery: $('gallery'),
  plan: $<HTMLButtonElement>('plan'),
  planDownload: $<HTMLButtonElement>('plan-download'),
  planNote: $('plan-note'),
  backends: [...document.querySelectorAll<HTMLInputElement>('input[name="backend"]')],
};

let manifest: BundleManifest;
let images: ImageSet;
let classNames: readonly string[] = [];
let clf: Classifier | undefined;
let baseline: Baseline | undefined;
let runToken = 0;
let currentPoint: CurvePoint | undefined;
/** The device plan made on the current classifier (its thresholds are in use), if any. */
let devicePlan: DevicePlan | undefined;
const tiles: { root: HTMLElement; label: HTMLElement; conf: HTMLElement; chip: HTMLElement; ms: HTMLElement }[] = [];

function setStatus(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
}

function setProgress(fraction: number): void {
  ui.progress.style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
}

const pct = (v: number, digits = 1): string => (Number.isFinite(v) ? `${(v * 100).toFixed(digits)}%` : '–');
const ms = (v: number): string => (Number.isFinite(v) ? `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms` : '–');
const exitName = (slot: number): string =>
  slot >= manifest.exits.length ? 'full' : (manifest.exits[slot]?.name ?? `exit ${slot}`);

function setControlsEnabled(on: boolean): void {
  ui.target.disabled = !on;
  ui.count.disabled = !on;
  ui.rerun.disabled = !on;
  ui.plan.disabled = !on;
  ui.planDownload.disabled = !on || !devicePlan;
  for (const b of ui.backends) b.disabled = !on || (b.value === 'webgpu' && b.dataset.unavailable === 'true');
}

function threadCount(): number {
  return crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
}

async function webgpuAvailable(): Promise<boolean> {
  try {
    return !!(await navigator.gpu?.requestAdapter());
  } catch {
    return false;
  }
}

/** (Re)creates the early-exit classifier and the full-model baseline on `backend`. */
async function openBackend(backend: BackendChoice): Promise<void> {
  const threads = threadCount();
  await Promise.all([clf?.dispose(), baseline?.dispose()]);
  clf = undefined;
  baseline = undefined;
  setPlan(undefined);
  setStatus(`Loading the bundle on ${backend.toUpperCase()}…`);
  clf = await load(BUNDLE_URL, {
    backend,
    threads,
    wasmPaths: WASM_PATHS,
    cache: false,
    onProgress: (p) => {
      if (p.status === 'progress' && p.total > 0) setProgress(p.loaded / p.total);
    },
  });
  const fullModel = manifest.backbone.file
    ? new URL(manifest.backbone.file, BUNDLE_URL).href
    : new URL('model.onnx', MODEL_DIR).href;
  // Same backend the SDK ended up on (it may have fallen back from WebGPU to WASM), same thread count.
  baseline = await Baseline.create({
    model: fullModel,
    input: manifest.input,
    backend: clf.backend,
    threads,
    wasmPaths: WASM_PATHS,
    outputKind: manifest.backbone.outputKind,
  });
  const info = clf.info();
  ui.pillBackend.textContent = `backend: ${clf.backend}`;
  ui.pillBackend.classList.add('on');
  ui.pillThreads.textContent = `threads: ${info.threads}`;
  const software = clf.backend === 'webgpu' && (await isSoftwareAdapter());
  ui.backendNote.textContent =
    clf.backend !== backend
      ? `${backend.toUpperCase()} unavailable, using ${clf.backend.toUpperCase()}.`
      : software
        ? 'Running on WEBGPU with a software adapter (no GPU found): slow, minutes for a few hundred images. WASM is much faster here.'
        : `Running on ${clf.backend.toUpperCase()}.`;
  applyTarget(Number(ui.target.value));
}

/** True when the page's WebGPU adapter is a software one (SwiftShader, llvmpipe): `isFallbackAdapter` or its name. */
async function isSoftwareAdapter(): Promise<boolean> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  const adapter = await gpu?.requestAdapter().catch(() => null);
  if (!adapter) return false;
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const legacy = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return (
    info.isFallbackAdapter === true ||
    legacy === true ||
    /swiftshader|llvmpipe|software/i.test(`${info.vendor} ${info.architecture} ${info.description}`)
  );
}

/** The knob curve thresholds are chosen from: the device plan's when one is in use, else the bundle's. */
function activeCurve(): readonly CurvePoint[] {
  return devicePlan?.curve ?? manifest.calibration.curve;
}

/** Re-chooses the thresholds for `target` from the bundle's (or the device plan's) curve and shows the expected trade-off. */
function applyTarget(target: number): void {
  ui.targetValue.textContent = `${(target * 100).toFixed(2)}%`;
  const choice: TargetChoice | undefined = clf?.setTarget(target);
  currentPoint = chooseCurvePoint(activeCurve(), choice?.thresholds);
  ui.targetExpect.textContent = !choice
    ? ''
    : choice.reached
      ? `Expected from calibration: ${pct(choice.agreement, 2)} agreement at ${pct(choice.macsFraction)} of the MACs.`
      : `No point of the calibration curve reaches this target; using the most faithful one (${pct(choice.agreement, 2)} agreement).`;
  drawTradeoff();
}

function buildGallery(): void {
  ui.gallery.replaceChildren();
  tiles.length = 0;
  for (let i = 0; i < Math.min(GALLERY_SIZE, images.count); i++) {
    const root = document.createElement('div');
    root.className = 'tile pending';
    const label = document.createElement('div');
    label.className = 'label';
    label.textContent = '…';
    const conf = document.createElement('div');
    conf.className = 'conf';
    conf.append(document.createElement('div'));
    const row = document.createElement('div');
    row.className = 'row';
    const chip = document.createElement('span');
    chip.className = 'chip';
    const msEl = document.createElement('span');
    row.append(chip, msEl);
    root.append(imageCanvas(images, i), label, conf, row);
    ui.gallery.append(root);
    tiles.push({ root, label, conf, chip, ms: msEl });
  }
}

function updateTile(i: number, r: Row): void {
  const t = tiles[i];
  if (!t) return;
  t.root.classList.remove('pending');
  t.label.textContent = classNames[r.early.index] ?? String(r.early.index);
  const wrong = r.truth !== undefined && r.truth !== r.early.index;
  t.label.classList.toggle('wrong', wrong);
  t.label.title =
    r.truth !== undefined
      ? `true class: ${classNames[r.truth] ?? r.truth}; full model: ${classNames[r.full.index] ?? r.full.index}`
      : '';
  (t.conf.firstElementChild as HTMLElement).style.width = `${(r.early.confidence * 100).toFixed(0)}%`;
  t.conf.title = `confidence ${pct(r.early.confidence)}`;
  t.chip.textContent = exitName(r.early.exit);
  t.chip.style.background = r.early.exit >= manifest.exits.length ? FULL_COLOR : exitColor(r.early.exit);
  t.ms.textContent = `${r.early.ms.toFixed(2)} / ${r.full.ms.toFixed(2)} ms`;
  t.ms.title = 'early exit / full model, page-side latency';
}

/** Classifies the first `count` test images with the cascade and the full model, interleaved (ABBA order). */
async function run(): Promise<void> {
  const token = ++runToken;
  const c = clf;
  const b = baseline;
  if (!c || !b) return;
  const count = Math.min(Number(ui.count.value), images.count);
  const target = Number(ui.target.value);
  state.status = 'running';
  setStatus(`Classifying ${count} images (early exits and full model, interleaved)…`);
  for (const t of tiles) t.root.classList.add('pending');
  const rows: Row[] = [];
  for (let i = 0; i < count; i++) {
    const input = imageData(images, i);
    const bytes = imageBytes(images, i);
    const runEarly = async (): Promise<Row['early']> => {
      const t0 = performance.now();
      const r = await c.classify(input);
      const elapsed = performance.now() - t0;
      return {
        index: r.index,
        confidence: r.confidence,
        exit: r.exit.index < 0 ? manifest.exits.length : r.exit.index,
        macsFraction: r.exit.macsFraction,
        ms: elapsed,
      };
    };
    const runFull = async (): Promise<Row['full']> => {
      const r = await b.run(bytes, 1);
      return { index: r.indices[0]!, confidence: r.confidences[0]!, ms: r.pageMs };
    };
    let early: Row['early'];
    let full: Row['full'];
    if (i % 2 === 0) {
      early = await runEarly();
      full = await runFull();
    } else {
      full = await runFull();
      early = await runEarly();
    }
    if (token !== runToken) return; // a newer run started
    const row: Row = { truth: images.labels?.[i], early, full };
    rows.push(row);
    updateTile(i, row);
    if (i % 16 === 15 || i === count - 1) {
      setProgress((i + 1) / count);
      await new Promise((r) => requestAnimationFrame(() => r(undefined)));
    }
  }
  const summary = summarize(rows, target, c.backend);
  state.last = summary;
  state.runs += 1;
  state.status = 'ready';
  render(rows, summary);
  setStatus(
    `Classified ${count} images on ${c.backend.toUpperCase()} at a ${pct(target, 2)} agreement target. ` +
      `Early exits: ${ms(summary.meanMsEarly)} per image, full model: ${ms(summary.meanMsFull)}.`,
  );
}

function summarize(rows: readonly Row[], target: number, backend: string): RunSummary {
  const slots = manifest.exits.length + 1;
  const counts = new Array<number>(slots).fill(0);
  for (const r of rows) counts[r.early.exit]! += 1;
  const labeled = rows.filter((r) => r.truth !== undefined);
  return {
    target,
    count: rows.length,
    backend,
    agreement: mean(rows.map((r) => (r.early.index === r.full.index ? 1 : 0))),
    accuracyEarly: mean(labeled.map((r) => (r.early.index === r.truth ? 1 : 0))),
    accuracyFull: mean(labeled.map((r) => (r.full.index === r.truth ? 1 : 0))),
    macsFraction: mean(rows.map((r) => r.early.macsFraction)),
    exitShares: counts.map((n) => n / Math.max(1, rows.length)),
    exits: rows.map((r) => r.early.exit),
    meanMsEarly: mean(rows.map((r) => r.early.ms)),
    meanMsFull: mean(rows.map((r) => r.full.ms)),
    ...(currentPoint ? { expected: currentPoint } : {}),
  };
}

function render(rows: readonly Row[], s: RunSummary): void {
  $('m-agreement').textContent = pct(s.agreement);
  $('m-agreement-sub').textContent = currentPoint
    ? `expected ${pct(currentPoint.agreement)} · target ${pct(s.target, 2)}`
    : `target ${pct(s.target, 2)}`;
  $('m-accuracy').textContent = pct(s.accuracyEarly);
  $('m-accuracy-sub').textContent = `full model ${pct(s.accuracyFull)} · ${s.count} labelled images`;
  $('m-macs').textContent = pct(1 - s.macsFraction, 0);
  $('m-macs-sub').textContent = `${pct(s.macsFraction, 0)} of the full model's MACs per image`;
  $('m-latency').textContent = ms(s.meanMsEarly);
  $('m-latency-sub').textContent =
    `full model ${ms(s.meanMsFull)} · ratio ${(s.meanMsEarly / s.meanMsFull).toFixed(2)}`;

  const categories = [...manifest.exits.map((e) => e.name), 'full'];
  barChart($('chart-exits'), {
    label: 'Share of images per exit',
    categories,
    series: [
      { name: 'measured', color: 'var(--c-early)' },
      { name: 'expected (calibration)', color: 'var(--c-curve)' },
    ],
    values: [s.exitShares, currentPoint ? [...currentPoint.exitShares] : []],
    max: 1,
    format: (v) => `${Math.round(v * 100)}%`,
  });
  histogram($('chart-latency'), {
    label: 'Latency per image',
    unit: 'ms per image (page-side round trip)',
    series: [
      { name: `early exits (mean ${ms(s.meanMsEarly)})`, color: 'var(--c-early)' },
      { name: `full model (mean ${ms(s.meanMsFull)})`, color: 'var(--c-full)' },
    ],
    samples: [rows.map((r) => r.early.ms), rows.map((r) => r.full.ms)],
  });
  drawTradeoff();
  const parts = manifest.exits.map((e, k) => ({
    name: e.name,
    value: (s.exitShares[k] ?? 0) * e.macsFraction,
    color: exitColor(k),
  }));
  const fullCost =
    (s.exitShares[manifest.exits.length] ?? 0) *
    (1 + manifest.exits.reduce((a, e) => a + e.headMacs, 0) / manifest.backbone.macs);
  parts.push({ name: 'full model', value: fullCost, color: FULL_COLOR });
  parts.push({ name: 'saved', value: Math.max(0, 1 - parts.reduce((a, p) => a + p.value, 0)), color: '#d0d5dd' });
  costBar($('chart-macs'), { label: 'MACs per image by exit', parts });
  renderExitTable(rows, s);
}

function renderExitTable(rows: readonly Row[], s: RunSummary): void {
  const table = document.createElement('table');
  table.className = 'exit-table';
  table.innerHTML =
    '<thead><tr><th>exit</th><th>MACs to decide</th><th>threshold</th><th>share</th><th>agrees</th></tr></thead>';
  const body = document.createElement('tbody');
  const thresholds = clf?.info().exits.map((e) => e.threshold) ?? manifest.exits.map((e) => e.threshold);
  for (let k = 0; k <= manifest.exits.length; k++) {
    const here = rows.filter((r) => r.early.exit === k);
    const e = manifest.exits[k];
    const tr = document.createElement('tr');
    const thr = e ? (thresholds[k] ?? e.threshold) : undefined;
    const cells = [
      exitName(k),
      e ? pct(e.macsFraction) : pct(1 + manifest.exits.reduce((a, x) => a + x.headMacs, 0) / manifest.backbone.macs),
      thr === undefined ? '—' : thr > 1 ? 'off' : thr.toFixed(3),
      pct(s.exitShares[k] ?? 0),
      here.length ? pct(mean(here.map((r) => (r.early.index === r.full.index ? 1 : 0)))) : '—',
    ];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(body);
  $('exit-table').replaceChildren(table);
}

function drawTradeoff(): void {
  const s = state.last;
  tradeoffChart($('chart-tradeoff'), {
    label: 'Expected agreement vs MACs fraction',
    points: activeCurve().map((p) => ({ x: p.macsFraction, y: p.agreement })),
    ...(currentPoint ? { current: { x: currentPoint.macsFraction, y: currentPoint.agreement } } : {}),
    ...(s ? { measured: { x: s.macsFraction, y: s.agreement } } : {}),
  });
}

/** Shows (or clears) the device plan in use and enables its cost-table download. */
function setPlan(plan: DevicePlan | undefined): void {
  devicePlan = plan;
  ui.planDownload.disabled = !plan;
  if (!plan) {
    delete state.plan;
    ui.planNote.textContent =
      'Times each stage on this backend (clf.plan()) and re-chooses the exits and thresholds for the target; the cost table is the JSON that "selfxit prepare --cost-table" reads.';
    return;
  }
  state.plan = {
    backend: plan.backend,
    threads: plan.threads,
    enabled: plan.enabled,
    expectedMsFraction: plan.expectedMsFraction,
    expectedMacsFraction: plan.expectedMacsFraction,
  };
  const used = manifest.exits.filter((_, j) => plan.enabled[j]).map((e) => e.name);
  ui.planNote.textContent =
    `Plan for ${plan.backend.toUpperCase()}, ${plan.threads} thread${plan.threads === 1 ? '' : 's'}: exits ${used.join(', ') || 'none'}; ` +
    `stages ${plan.timings.stageMs.map((t) => t.toFixed(2)).join(' / ')} ms; expected time per image ${pct(plan.expectedMsFraction)} of running all stages, ${pct(plan.expectedMacsFraction)} of the MACs.`;
}

/** Makes this device's plan for the current target (stage times measured in the worker) and classifies again under it. */
async function planDevice(): Promise<void> {
  const c = clf;
  if (!c) return;
  setStatus(`Timing each stage on ${c.backend.toUpperCase()} and re-choosing the exits…`);
  const plan = await c.plan({
    target: Number(ui.target.value),
    onProgress: (p) => {
      if (p.status === 'progress' && p.total > 0) setProgress(p.loaded / p.total);
    },
  });
  if (c !== clf) return; // the backend changed meanwhile
  setPlan(plan);
  applyTarget(Number(ui.target.value));
  await run();
}

/** Saves the plan's measured times as `selfxit prepare --cost-table` JSON. */
function downloadCostTable(): void {
  if (!devicePlan) return;
  const table = costTableFromPlan(manifest, devicePlan);
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([`${JSON.stringify(table, null, 2)}\n`], { type: 'application/json' }));
  a.download = `selfxit-cost-table-${devicePlan.backend}-${devicePlan.threads}t.json`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function guarded(task: () => Promise<void>): Promise<void> {
  setControlsEnabled(false);
  try {
    await task();
  } catch (e) {
    state.status = 'error';
    state.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    setStatus(state.error, true);
    console.warn(e);
  } finally {
    setControlsEnabled(true);
  }
}

async function main(): Promise<void> {
  ui.pillIsolated.textContent = crossOriginIsolated ? 'cross-origin isolated' : 'not isolated (1 thread)';
  const res = await fetch(BUNDLE_URL);
  if (!res.ok)
    throw new Error(
      `No bundle at ${BUNDLE_URL} (HTTP ${res.status}): start the demo with \`npm run demo\`, which prepares it.`,
    );
  manifest = (await res.json()) as BundleManifest;
  const labelsText = await fetch(new URL('labels.txt', MODEL_DIR)).then((r) => (r.ok ? r.text() : ''));
  classNames = manifest.labels.length
    ? manifest.labels
    : labelsText
        .split('\n')
        .map((s) => s.trim())
        .filter(Boolean);
  images = await fetchImageSet(new URL('test-u8.bin', MODEL_DIR).href, manifest.input, {
    labelsUrl: new URL('test-labels.u8', MODEL_DIR).href,
  });
  buildGallery();

  const agreements = manifest.calibration.curve.map((p) => p.agreement);
  const lo = Math.max(0.5, Math.floor(Math.min(...agreements, manifest.calibration.target) * 200) / 200);
  ui.target.min = String(lo);
  ui.target.max = '1';
  ui.target.value = String(manifest.calibration.target);

  const gpu = await webgpuAvailable();
  const gpuRadio = ui.backends.find((b) => b.value === 'webgpu');
  if (gpuRadio && !gpu) {
    gpuRadio.dataset.unavailable = 'true';
    gpuRadio.parentElement?.setAttribute('title', 'WebGPU is not available in this browser');
  }

  await openBackend('wasm');
  await run();

  ui.target.addEventListener('input', () => applyTarget(Number(ui.target.value)));
  ui.target.addEventListener('change', () => void guarded(run));
  ui.count.addEventListener('change', () => void guarded(run));
  ui.rerun.addEventListener('click', () => void guarded(run));
  ui.plan.addEventListener('click', () => void guarded(planDevice));
  ui.planDownload.addEventListener('click', downloadCostTable);
  for (const radio of ui.backends) {
    radio.addEventListener('change', () => {
      if (!radio.checked) return;
      void guarded(async () => {
        await openBackend(radio.value as BackendChoice);
        await run();
      });
    });
  }
}

void guarded(main);
setupByom();
setupLearnMode();

// "Bring your own model" panel: an ONNX classifier + a folder of unlabeled images → calibration in a worker (with
// progress) → the new bundle opened with load() (served from Cache Storage by the demo's service worker, since
// load() takes URLs) → the user's images classified with their new exits; the bundle downloads as a zip.
import * as Comlink from 'comlink';
import { zipSync, strToU8 } from 'fflate';
import { load, type Classifier } from '../src/index.js';
import type { BundleManifest } from '../src/bundle/manifest.js';
import { MANIFEST_FILE } from '../src/bundle/manifest.js';
import { fromErrorPayload } from '../src/errors.js';
import { minimumSamples } from '../src/calibrate/prepare.js';
import type { ByomProgress, ByomWorkerApi } from './lib/byom-protocol.js';
import { exitColor, FULL_COLOR } from './lib/ui.js';

/** Cache Storage bucket the service worker (byom-sw.ts) answers /byom/… from. */
const CACHE = 'selfxit-demo-byom';
const IMAGE_EXT = /\.(png|jpe?g|gif|webp|bmp|avif)$/i;
const SHOWN = 24;
const STAGE_NAMES: Record<ByomProgress['stage'], string> = {
  decode: 'Decoding images',
  features: 'Running the model on the images',
  heads: 'Training exit heads',
  thresholds: 'Choosing exits and thresholds',
  bundle: 'Writing the bundle',
};

const byId = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

function parseList(text: string): number[] | undefined {
  const xs = text
    .split(/[,\s]+/)
    .filter(Boolean)
    .map(Number);
  return xs.length && xs.every(Number.isFinite) ? xs : undefined;
}

function parseShape(text: string): { height: number; width: number; channels: 1 | 3 } | undefined {
  const xs = parseList(text);
  if (!xs || xs.length !== 3 || (xs[2] !== 1 && xs[2] !== 3)) return undefined;
  return { height: xs[0]!, width: xs[1]!, channels: xs[2] };
}

/** Makes the folder served by the service worker; resolves with its URL. */
async function publish(manifest: BundleManifest, files: ReadonlyMap<string, Uint8Array>): Promise<string> {
  if (!('serviceWorker' in navigator))
    throw new Error('this browser has no service workers, which the demo uses to serve an in-memory bundle');
  await navigator.serviceWorker.register(new URL('byom-sw.js', document.baseURI), { scope: './' });
  await navigator.serviceWorker.ready;
  const base = new URL(`byom/${Date.now().toString(36)}/`, document.baseURI).href;
  const cache = await caches.open(CACHE);
  for (const key of await cache.keys()) await cache.delete(key); // keep only the latest bundle
  const headers = (type: string): HeadersInit => ({
    'Content-Type': type,
    'Cross-Origin-Resource-Policy': 'same-origin',
  });
  await cache.put(
    new URL(MANIFEST_FILE, base).href,
    new Response(JSON.stringify(manifest), { headers: headers('application/json') }),
  );
  for (const [name, bytes] of files) {
    await cache.put(
      new URL(name, base).href,
      new Response(bytes as Uint8Array<ArrayBuffer>, { headers: headers('application/octet-stream') }),
    );
  }
  return new URL(MANIFEST_FILE, base).href;
}

/** Wires the panel. Nothing runs until the user picks files. */
export function setupByom(): void {
  const modelInput = byId<HTMLInputElement>('byom-model');
  const folderInput = byId<HTMLInputElement>('byom-folder');
  const filesInput = byId<HTMLInputElement>('byom-files');
  const runBtn = byId<HTMLButtonElement>('byom-run');
  const cancelBtn = byId<HTMLButtonElement>('byom-cancel');
  const downloadBtn = byId<HTMLButtonElement>('byom-download');
  const status = byId<HTMLElement>('byom-status');
  const bar = byId<HTMLElement>('byom-progress-bar');
  const summary = byId<HTMLElement>('byom-summary');
  const gallery = byId<HTMLElement>('byom-gallery');
  let worker: Worker | undefined;
  let clf: Classifier | undefined;
  let bundle: { manifest: BundleManifest; files: Map<string, Uint8Array> } | undefined;

  const targetInput = byId<HTMLInputElement>('byom-target');
  // One source at a time: picking a folder clears a file pick and the other way round, so a calibration never runs on a
  // leftover mix of two data sets.
  let source: HTMLInputElement | undefined;
  let cleared = '';
  const images = (): File[] =>
    [...(source?.files ?? [])].filter((f) => f.type.startsWith('image/') || IMAGE_EXT.test(f.name));
  const minimum = (): number => {
    const t = Number(targetInput.value);
    return t > 0 && t <= 1 ? minimumSamples(t) : minimumSamples(0.99);
  };
  const say = (text: string, error = false): void => {
    status.textContent = text;
    status.classList.toggle('error', error);
  };
  const refresh = (): void => {
    const n = images().length;
    const min = minimum();
    runBtn.disabled = !modelInput.files?.length || n < min || worker !== undefined;
    if (worker) return;
    const picked = `${n} image${n === 1 ? '' : 's'} selected${source ? ` (${source === folderInput ? 'folder' : 'files'})` : ''}`;
    const need = n < min ? `: at least ${min} are needed for target ${targetInput.value}.` : '.';
    say(
      (modelInput.files?.length ? `${picked}${need}` : `Choose a model and at least ${min} images.`) +
        (cleared ? ` ${cleared}` : ''),
      n > 0 && n < min,
    );
  };
  for (const [input, other] of [
    [folderInput, filesInput],
    [filesInput, folderInput],
  ] as const) {
    input.addEventListener('change', () => {
      source = input.files?.length ? input : undefined;
      cleared = '';
      if (source && other.files?.length) {
        cleared = `The earlier ${other === folderInput ? 'folder' : 'file'} pick was cleared: one source at a time.`;
        other.value = '';
      }
      refresh();
    });
  }
  for (const input of [modelInput, targetInput]) input.addEventListener('change', refresh);

  const stop = (): void => {
    worker?.terminate();
    worker = undefined;
    cancelBtn.hidden = true;
    refresh();
  };
  cancelBtn.addEventListener('click', () => {
    stop();
    bar.style.width = '0';
    say('Calibration cancelled.');
  });

  byId<HTMLFormElement>('byom-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    void (async () => {
      const modelFile = modelInput.files?.[0];
      const files = images();
      if (!modelFile || files.length === 0) return;
      const mean = parseList(byId<HTMLInputElement>('byom-mean').value);
      const std = parseList(byId<HTMLInputElement>('byom-std').value);
      const shapeText = byId<HTMLInputElement>('byom-shape').value.trim();
      const shape = shapeText ? parseShape(shapeText) : undefined;
      const target = Number(targetInput.value);
      const labels = byId<HTMLInputElement>('byom-labels')
        .value.split(/[,\n]/)
        .map((l) => l.trim())
        .filter((l) => l.length > 0);
      if (!mean || !std) return say('Mean and std must be comma-separated numbers.', true);
      if (shapeText && !shape) return say('Input shape must be H,W,C with C = 1 or 3 (e.g. 32,32,3).', true);
      await clf?.dispose();
      clf = undefined;
      bundle = undefined;
      downloadBtn.disabled = true;
      gallery.replaceChildren();
      summary.replaceChildren();
      worker = new Worker(new URL('./lib/byom.worker.ts', import.meta.url), { type: 'module', name: 'selfxit-byom' });
      cancelBtn.hidden = false;
      refresh();
      say(`Calibrating on ${files.length} images…`);
      const api = Comlink.wrap<ByomWorkerApi>(worker);
      try {
        const reply = await api.prepare(
          {
            model: new Uint8Array(await modelFile.arrayBuffer()),
            images: files,
            ...(shape ? { shape } : {}),
            mean,
            std,
            target,
            ...(labels.length ? { labels } : {}),
            threads: crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1,
            wasmPaths: new URL('ort/', document.baseURI).href,
          },
          Comlink.proxy((p: ByomProgress) => {
            bar.style.width = `${Math.round((p.total ? p.done / p.total : 0) * 100)}%`;
            say(`${STAGE_NAMES[p.stage]}… ${p.done}/${p.total}${p.detail ? ` · ${p.detail}` : ''}`);
          }),
        );
        if (!reply.ok) throw fromErrorPayload(reply.error);
        bundle = { manifest: reply.manifest, files: reply.files };
        stop();
        bar.style.width = '100%';
        downloadBtn.disabled = false;
        const m = reply.manifest;
        const c = m.calibration;
        summary.innerHTML = '';
        const p = document.createElement('p');
        p.textContent =
          `Calibrated on ${reply.images} images in ${reply.seconds.toFixed(1)} s: ${m.exits.length} exit${m.exits.length === 1 ? '' : 's'} ` +
          `(${m.exits.map((e) => `${e.name} at ${(e.macsFraction * 100).toFixed(0)}% MACs`).join(', ') || 'none worth it'}); ` +
          `expected ${(c.validationAgreement * 100).toFixed(2)}% agreement at ${(c.expectedMacsFraction * 100).toFixed(0)}% of the MACs.`;
        summary.append(p);
        say('Loading the new bundle…');
        clf = await load(await publish(m, reply.files), {
          backend: 'wasm',
          cache: false,
          wasmPaths: new URL('ort/', document.baseURI).href,
        });
        await classifyShown(files.slice(0, SHOWN));
        say(
          `Done. Showing ${Math.min(SHOWN, files.length)} of your images classified with the new exits (backend: ${clf.backend}).`,
        );
      } catch (e) {
        stop();
        say(e instanceof Error ? `${e.name}: ${e.message}` : String(e), true);
      } finally {
        api[Comlink.releaseProxy]();
      }
    })();
  });

  async function classifyShown(files: readonly File[]): Promise<void> {
    if (!clf) return;
    for (const file of files) {
      const r = await clf.classify(file);
      const tile = document.createElement('div');
      tile.className = 'tile';
      const img = document.createElement('img');
      img.src = URL.createObjectURL(file);
      img.alt = file.name;
      img.style.cssText = 'width:100%;aspect-ratio:1;object-fit:cover;border-radius:6px';
      const label = document.createElement('div');
      label.className = 'label';
      label.textContent = r.label;
      label.title = file.name;
      const row = document.createElement('div');
      row.className = 'row';
      const chip = document.createElement('span');
      chip.className = 'chip';
      chip.textContent = r.exit.index < 0 ? 'full' : r.exit.name;
      chip.style.background = r.exit.index < 0 ? FULL_COLOR : exitColor(r.exit.index);
      const conf = document.createElement('span');
      conf.textContent = `${(r.confidence * 100).toFixed(0)}% · ${r.timings.totalMs.toFixed(1)} ms`;
      row.append(chip, conf);
      tile.append(img, label, row);
      gallery.append(tile);
    }
  }

  downloadBtn.addEventListener('click', () => {
    if (!bundle) return;
    const entries: Record<string, Uint8Array> = { [MANIFEST_FILE]: strToU8(JSON.stringify(bundle.manifest, null, 2)) };
    for (const [name, bytes] of bundle.files) entries[name] = bytes;
    const zip = zipSync(entries, { level: 6 });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([zip as Uint8Array<ArrayBuffer>], { type: 'application/zip' }));
    a.download = 'selfxit-bundle.zip';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  });
}

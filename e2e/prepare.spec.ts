// prepare() parity: the same calibration (shipped Fashion-MNIST ResNet, 300 samples, target 0.98, seed 7) in a browser
// module worker on onnxruntime-web WASM and in Node on onnxruntime-node must pick the same exits and near-equal thresholds.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect } from '@playwright/test';
import { prepare, type PrepareProgress } from '../src/core.js';
import { CLI_SESSION_OPTIONS } from '../src/cli/prepare.js';
import { loadOrtNode } from '../src/cli/node-io.js';
import {
  caseOptions,
  MODEL_DIR,
  toOutcome,
  type CaseFiles,
  type ModelMeta,
  type PageResult,
  type PrepareJob,
  type PrepareOutcome,
} from './fixtures/prepare-case.js';
import { diffs, structure } from './fixtures/prepare-parity.js';

declare global {
  interface Window {
    prepareReady?: boolean;
    prepareInWorker(job: PrepareJob): Promise<PageResult>;
  }
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Tolerances. The two runs share every input and all of prepare's JS (head training, thresholds, selection); only the
 * backbone features come from different ORT builds (MLAS native vs WASM SIMD), which round float32 differently.
 * Measured here: at 300 samples thresholds differ by 3e-8 (half a float32 ulp at 0.99), candidate mean scores by 4e-7,
 * exit shares and agreements not at all (at 400 samples: thresholds bit-identical, mean scores 5e-8); the bundle files
 * without a head are byte-identical, those with one differ only in float bits of the head weights. So: exits, head
 * kinds, segments, candidates and progress exactly equal; thresholds and mean scores within 1e-4; exit shares and
 * agreements within one sample (1/n), as a score within float error of a threshold may cross it.
 */
const SCORE_TOL = 1e-4;
const STAGES = ['features', 'heads', 'thresholds', 'bundle'] as const;

function readCaseFiles(): CaseFiles {
  const dir = path.join(root, 'public/models', MODEL_DIR);
  const meta = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8')) as ModelMeta;
  const bytes = (name: string): Uint8Array => new Uint8Array(readFileSync(path.join(dir, name)));
  return {
    meta,
    model: bytes('model.onnx'),
    calib: bytes(meta.calib),
    labelsText: readFileSync(path.join(dir, meta.labels), 'utf8'),
  };
}

/** The CLI's way: onnxruntime-node with CLI_SESSION_OPTIONS. */
async function prepareInNode(progress: PrepareProgress[]): Promise<PrepareOutcome> {
  const files = readCaseFiles();
  const ort = await loadOrtNode();
  const t0 = performance.now();
  const r = await prepare({
    ...caseOptions(files),
    ort,
    sessionOptions: CLI_SESSION_OPTIONS,
    onProgress: (e) => progress.push(e),
  });
  return toOutcome(r, files, (performance.now() - t0) / 1000);
}

test(`prepare in a browser worker (onnxruntime-web WASM) matches Node (onnxruntime-node): same exits, thresholds within ${SCORE_TOL}, shares/agreement within 1/n`, async ({
  page,
}) => {
  await page.goto('/e2e/pages/prepare.html');
  await page.waitForFunction(() => window.prepareReady === true, null, { timeout: 15_000 });
  const job: PrepareJob = { modelBase: `/models/${MODEL_DIR}/`, wasmPaths: '/dist/ort/', threads: 2 };
  const nodeProgress: PrepareProgress[] = [];
  // Both at once (the browser runs in its own processes): the wall time is about one run, not two.
  const [web, node] = await Promise.all([
    page.evaluate((j) => window.prepareInWorker(j), job),
    prepareInNode(nodeProgress),
  ]);
  if (web.type === 'error') throw new Error(`prepare in the worker failed: ${web.error.code}: ${web.error.message}`);
  expect(web.type).toBe('done');
  if (web.type !== 'done') return;
  expect(web.crossOriginIsolated, 'the page is cross-origin isolated (threaded WASM)').toBe(true);
  expect(web.numThreads).toBe(2);

  // Progress reached the page: every stage, in order, each ending at done === total; the same events as in Node.
  const stages = [...new Set(web.progress.map((p) => p.stage))];
  expect(stages).toEqual([...STAGES]);
  for (const stage of STAGES) {
    const events = web.progress.filter((p) => p.stage === stage);
    expect(
      events.every((p, i) => i === 0 || p.done >= events[i - 1]!.done),
      `${stage}: done never decreases`,
    ).toBe(true);
    expect(events.at(-1)!.done, `${stage}: ends at total`).toBe(events.at(-1)!.total);
  }
  // one backbone pass over the samples and their augmented copies (calibration.augment, e.g. ['flip'])
  const copies = 1 + (node.manifest.calibration.augment?.length ?? 0);
  expect(web.progress.find((p) => p.stage === 'features')!.total).toBe(copies * node.manifest.calibration.samples);
  expect(web.progress).toEqual(nodeProgress);

  const n = node.manifest.calibration.samples;
  const d = diffs(node, web);
  const identicalFiles = Object.keys(node.fileSha256).filter((f) => node.fileSha256[f] === web.fileSha256[f]);
  const measured = {
    samples: n,
    exits: node.manifest.exits.map((e) => `${e.name}:${e.headKind}@${e.threshold.toFixed(6)}`),
    diffs: d,
    identicalFiles,
    seconds: { node: node.seconds, web: web.seconds },
  };
  test.info().annotations.push({ type: 'parity', description: JSON.stringify(measured) });
  console.log(`prepare parity: ${JSON.stringify(measured)}`);

  expect(node.manifest.exits.length, 'the case yields at least one exit').toBeGreaterThan(0);
  expect(structure(web), 'same inputs, exits (cut, head kind), segments, candidates and file sizes').toEqual(
    structure(node),
  );
  expect(web.warnings).toEqual(node.warnings);
  expect(d.threshold, `thresholds within ${SCORE_TOL}`).toBeLessThanOrEqual(SCORE_TOL);
  expect(d.candidateMeanScore, `candidate mean scores within ${SCORE_TOL}`).toBeLessThanOrEqual(SCORE_TOL);
  for (const k of [
    'expectedShare',
    'validationAgreement',
    'expectedMacsFraction',
    'agreementLowerBound',
    'candidateAgreement',
  ] as const) {
    expect(d[k], `${k} within one sample (1/${n})`).toBeLessThanOrEqual(1 / n + 1e-12);
  }
});

// Renders one `npm run bench` record (bench/results/*.json) as the Markdown results section of BENCHMARKS.md:
// per-model tables, the ResNet-56 goals with pass/miss margins, where the time goes, and the WebGPU check.
// Usage without re-measuring: node bench/report.mjs bench/results/<file>.json

const f2 = (v) => (Number.isFinite(v) ? v.toFixed(2) : '–');
const f3 = (v) => (Number.isFinite(v) ? v.toFixed(3) : '–');
const pct = (v, d = 1) => (Number.isFinite(v) ? `${(v * 100).toFixed(d)} %` : '–');
const triple = (s, f = f2) => `${f(s.mean)} / ${f(s.p50)} / ${f(s.p95)}`;

/** Goals of the issue for ResNet-56, WASM, batch 1 at >= 98.5 % agreement. */
export const GOALS = { model: 'resnet56', agreement: 0.985, ratio: 0.8, worstCase: 1.05 };

function table(rows) {
  const head = '| setup | threads | batch | images | early-exit ms mean / p50 / p95 | full model ms mean / p50 / p95 | ratio mean / p50 / p95 | MACs | agreement | top-1 early / full | exit shares (…, full) |';
  const sep = '|---|---:|---:|---:|---|---|---|---:|---:|---|---|';
  const lines = rows.map((r) =>
    [
      r.variant,
      r.threads,
      r.config.batch,
      r.images,
      triple(r.early),
      triple(r.full),
      triple(r.ratio, f3),
      pct(r.macsFraction),
      pct(r.agreement, 2),
      r.accuracy ? `${pct(r.accuracy.early)} / ${pct(r.accuracy.full)}` : '–',
      r.exitShares.map((s) => Math.round(s * 100)).join(' / ') + ' %',
    ].join(' | '),
  );
  return [head, sep, ...lines.map((l) => `| ${l} |`)].join('\n');
}

function stageLine(r) {
  return r.stages.map((s, i) => `seg ${i}: ${f2(s.meanMs)} ms × ${s.calls}`).join(', ');
}

function goals(record) {
  const rows = record.results.filter((r) => r.model === GOALS.model && r.config.batch === 1 && r.config.backend === 'wasm');
  if (rows.length === 0) return '';
  const out = [`### Goals: ResNet-56, WASM, batch 1, agreement ≥ ${pct(GOALS.agreement)}`, ''];
  out.push('| setup | threads | agreement | ratio (mean) | goal ≤ ' + f2(GOALS.ratio) + ' | MACs fraction | ratio − MACs | worst case ratio (mean) | goal ≤ ' + f2(GOALS.worstCase) + ' |');
  out.push('|---|---:|---:|---:|---|---:|---:|---:|---|');
  const threads = [...new Set(rows.map((r) => r.threads))];
  const verdict = (v, goal) => (!Number.isFinite(v) ? '–' : v <= goal ? `met (${f3(goal - v)} under)` : `**missed by ${f3(v - goal)}** (${pct(v / goal - 1)} over)`);
  for (const variant of ['selfxit', 'selfxit+plan']) {
    for (const t of threads) {
      const s = rows.find((r) => r.variant === variant && r.threads === t);
      if (!s) continue;
      const w = rows.find((r) => r.variant === 'worst-case' && r.threads === t);
      const agreeOk = s.agreement >= GOALS.agreement ? pct(s.agreement, 2) : `**${pct(s.agreement, 2)}** (below ${pct(GOALS.agreement)})`;
      out.push(`| ${variant} | ${t} | ${agreeOk} | ${f3(s.ratio.mean)} | ${verdict(s.ratio.mean, GOALS.ratio)} | ${f3(s.macsFraction)} | ${f3(s.ratio.mean - s.macsFraction)} | ${w ? f3(w.ratio.mean) : '–'} | ${w ? verdict(w.ratio.mean, GOALS.worstCase) : '–'} |`);
    }
  }
  const planned = rows.filter((r) => r.plan);
  if (planned.length) {
    out.push('', 'Device plans measured in the bench page: ' + planned.map((r) => `${r.threads} thread${r.threads === 1 ? '' : 's'}: exits used ${r.plan.enabled.map((e, i) => (e ? r.exitNames[i] : null)).filter(Boolean).join(', ')}; stage ms ${r.plan.stageMs.map(f2).join(' / ')}; decision ms ${r.plan.decisionMs.map(f2).join(' / ')}; expected ms fraction ${f3(r.plan.expectedMsFraction)} (${f2(r.plan.seconds)} s to plan)`).join('; ') + '.');
  }
  out.push('', '**Where the time goes** (inside the workers; the cascade reports each segment\'s wall time per call):', '');
  for (const r of rows) {
    const exits = r.exitNames.length;
    const overhead = r.earlyWorker.mean - r.fullWorker.mean;
    out.push(
      `- ${r.variant}, ${r.threads} thread${r.threads === 1 ? '' : 's'}: cascade ${f2(r.earlyWorker.mean)} ms vs full ${f2(r.fullWorker.mean)} ms per image in the worker ` +
        `(session.run alone ${f2(r.fullRunMs)} ms); page-side round trips ${f2(r.early.mean)} vs ${f2(r.full.mean)} ms. Segments: ${stageLine(r)}.` +
        (r.variant === 'worst-case' && exits > 0 ? ` No input exits here, so the difference (${f2(overhead)} ms) is the cost of ${exits} head${exits === 1 ? '' : 's'} and ${r.stages.length - 1} extra segment boundar${r.stages.length === 2 ? 'y' : 'ies'}: ${f2(overhead / exits)} ms per exit.` : ''),
    );
  }
  return out.join('\n');
}

const VARIANT_TITLES = {
  selfxit: 'selfxit (default: avg+max pooled heads, flip copies, cost-calibrated thresholds)',
  maxsoftmax: 'pooled max-softmax (average-pooled heads, no copies, one shared threshold)',
  paper: 'paper (its heads at fixed exits; thresholds re-chosen from its curve)',
};

/** Target → expected (validation) → measured (test) agreement → top-1 → MACs, per variant, and prepare's time per step. */
function curves(record) {
  const models = Object.keys(record.curves ?? {});
  if (models.length === 0) return '';
  const out = [
    '### Agreement target → achieved agreement → MACs (calibrated on `calib`, measured on `test`)',
    '',
    'Each bundle is prepared once at target 0.99; for every other target its thresholds are re-chosen from the bundle\'s calibration curve with the same confidence margin (what `setTarget()` does on a device), then measured on the test images (`selfxit eval --targets`). Exits stay those selected for 0.99. Expected = out-of-fold validation agreement on the calibration images; measured = agreement with the full model on the test images.',
    '',
  ];
  for (const key of models) {
    const title = record.models.find((m) => m.key === key)?.title ?? key;
    const v = record.curves[key];
    const any = Object.values(v)[0];
    out.push(`#### ${title} — ${any.samples} test images, backbone top-1 ${pct(any.backboneAccuracy, 2)}`, '');
    out.push('| variant | target | expected agreement | measured agreement | top-1 | MACs fraction |', '|---|---:|---:|---:|---:|---:|');
    for (const [variant, c] of Object.entries(v)) {
      for (const t of c.targetCurve) {
        out.push(`| ${variant} | ${f3(t.target)} | ${pct(t.expectedAgreement, 2)} | ${pct(t.agreement, 2)} | ${pct(t.accuracy, 2)} | ${f3(t.macsFraction)}${t.reached ? '' : ' (target not reached)'} |`);
      }
    }
    out.push('');
    out.push('| variant | exits | calibration images | prepare time | steps |', '|---|---|---:|---:|---|');
    for (const [variant, c] of Object.entries(v)) {
      const steps = Object.entries(c.prepareSteps).map(([k, s2]) => `${k} ${s2.toFixed(0)} s`).join(', ');
      out.push(`| ${variant} | ${c.exits.join(', ') || 'none'} | ${c.calibrationSamples} | ${Number.isFinite(c.prepareSeconds) ? `${c.prepareSeconds.toFixed(0)} s` : '–'} | ${steps} |`);
    }
    out.push('', Object.keys(v).map((k) => `- **${k}**: ${VARIANT_TITLES[k] ?? k}`).join('\n'), '');
  }
  return out.join('\n');
}

function webgpu(record) {
  const rows = record.results.filter((r) => r.variant === 'webgpu-correctness');
  if (rows.length === 0) return '';
  const out = ['### WebGPU (correctness only)', '', `Adapter: ${rows[0].adapter}. Software rendering: the timings mean nothing and are not reported.`, ''];
  out.push('| model | images | backend used | early exit vs full (WebGPU) | early exit WebGPU vs WASM | full WebGPU vs WASM |', '|---|---:|---|---:|---:|---:|');
  for (const r of rows) out.push(`| ${r.model} | ${r.images} | ${r.backend} | ${pct(r.agreement, 2)} | ${pct(r.crossBackend.earlyWebgpuVsWasm, 2)} | ${pct(r.crossBackend.fullWebgpuVsWasm, 2)} |`);
  return out.join('\n');
}

/** The Markdown section for one record. */
export function renderMarkdown(record, resultFile) {
  const m = record.machine;
  const out = [
    `## Results of ${record.date.slice(0, 10)}`,
    '',
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; ${m.os}; ${m.chromium}; Node ${m.node}. Load average at the end: ${m.loadAverage.map((x) => x.toFixed(2)).join(', ')}.`,
    `- Command: \`${record.command}\` (${Math.round(record.seconds)} s). Raw data: \`${resultFile}\`.`,
    '- Latency per image, ms: page-side round trip of `clf.classify()` (early exits, the SDK worker) and of the original model as one plain onnxruntime-web session in its own worker, same backend, threads and preprocessing, interleaved image by image in ABBA order. Batch 32: the batch time / 32. Ratio = early exit / full for each statistic. Agreement = same top-1 class as the full model on the same test images (never used for calibration).',
    '- Setups: **selfxit** = `prepare` defaults (target 0.99); **selfxit+plan** = the same bundle after `clf.plan()` on this machine (stage times measured in the page\'s worker, exits and thresholds re-chosen for the same target); **worst case** = the same bundle with every threshold above 1 (all heads run, no input exits); **paper** = `prepare --mode paper --threshold 0.9` (the paper\'s heads at fixed exits).',
    '',
  ];
  for (const model of record.models) {
    const rows = record.results.filter((r) => r.model === model.key && r.variant !== 'webgpu-correctness');
    if (rows.length === 0) continue;
    out.push(`### ${model.title}`, '');
    out.push(
      `Backbone ${(model.backboneMacs / 1e6).toFixed(1)} M MACs; selfxit exits: ${model.exits.map((e) => `${e.name} (${pct(e.macsFraction, 0)} MACs, threshold ${f3(e.threshold)})`).join(', ') || 'none'}; calibrated on ${model.calibrationSamples} images, target ${pct(model.target)}.`,
      '',
    );
    out.push(table(rows), '');
  }
  const g = goals(record);
  if (g) out.push(g, '');
  const c = curves(record);
  if (c) out.push(c, '');
  const w = webgpu(record);
  if (w) out.push(w, '');
  return out.join('\n');
}

// CLI: re-render a saved record.
if (import.meta.url === `file://${process.argv[1]}`) {
  const { readFile } = await import('node:fs/promises');
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node bench/report.mjs bench/results/<file>.json');
    process.exit(1);
  }
  console.log(renderMarkdown(JSON.parse(await readFile(file, 'utf8')), file));
}

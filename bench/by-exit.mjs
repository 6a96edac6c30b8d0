#!/usr/bin/env node
// Where a batch-1 ratio's excess over the MACs fraction lies, exit by exit: reads an `npm run bench` record made with
// BENCH_CALL_MS=1 (each measured call's page ms and onnxruntime ms of each side and of the full model, and the exit each
// image took) and, for each early-exit result, groups the calls by exit (report.mjs exitBreakdown). For each exit:
// calls, the side's onnxruntime ms and page ms against the full model's on the same images, and what the group adds to
// the side's ratio beyond the exit's MACs fraction ((side − MACs fraction × full) / the full model's mean over all calls).
//
//   node bench/by-exit.mjs bench/results/<record>.json [--variant selfxit]
import { readFileSync } from 'node:fs';
import { exitBreakdown } from './report.mjs';

const args = process.argv.slice(2);
const file = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--variant');
const at = args.indexOf('--variant');
const only = at >= 0 ? args[at + 1] : undefined;
if (!file || (at >= 0 && !only)) {
  console.error('usage: node bench/by-exit.mjs <record.json> [--variant <name>]');
  process.exit(2);
}
const record = JSON.parse(readFileSync(file, 'utf8'));
const f3 = (v) => (Number.isFinite(v) ? v.toFixed(3) : '–');
const signed = (v) => (v >= 0 ? '+' : '−') + Math.abs(v).toFixed(3);

let shown = 0;
for (const r of record.results ?? []) {
  if (only !== undefined && r.variant !== only) continue;
  const x = exitBreakdown(r);
  if (!x) continue;
  shown++;
  console.log(
    `\n${r.config?.name ?? r.model} ${r.variant} (${r.engine}, ${r.threads} thread${r.threads === 1 ? '' : 's'}): ` +
      `${x.calls} calls; onnxruntime ratio ${f3(x.runRatio)}, page ratio ${f3(x.pageRatio)}, MACs fraction ${f3(r.macsFraction)}`,
  );
  console.log(
    '| exit | MACs fraction | calls | onnxruntime ms: side / full (ratio) | page ms: side / full (ratio) | onnxruntime excess | page excess |',
  );
  console.log('|---|---:|---:|---|---|---:|---:|');
  for (const g of x.groups)
    console.log(
      `| ${g.name} | ${f3(g.macsFraction)} | ${g.calls} | ${g.run.early.toFixed(2)} / ${g.run.full.toFixed(2)} (${f3(g.run.early / g.run.full)}) | ` +
        `${g.page.early.toFixed(2)} / ${g.page.full.toFixed(2)} (${f3(g.page.early / g.page.full)}) | ${signed(g.runExcess)} | ${signed(g.pageExcess)} |`,
    );
  console.log(`| all | ${f3(r.macsFraction)} | ${x.calls} | | | ${signed(x.runExcess)} | ${signed(x.pageExcess)} |`);
}
if (!shown) {
  console.error(`${file}: no batch-1 result with per-call exits (run the bench with BENCH_CALL_MS=1)`);
  process.exit(1);
}

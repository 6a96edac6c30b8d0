// BENCHMARKS.md sections on the engines, for bench/report.mjs: the compiled-cascade goals (latency ratio against the
// MACs fraction at batch 1 and 32, ResNet-20's speed-up, the worst case) with met / missed-by verdicts and where a missed
// ratio's time goes, the per-part time of one classify() on each engine, and the int8 models' light set. Pure.
import { judge } from './report.mjs';

const f2 = (v) => (Number.isFinite(v) ? v.toFixed(2) : '–');
const f3 = (v) => (Number.isFinite(v) ? v.toFixed(3) : '–');
const signed3 = (v) => (Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(3)}` : '–');
const pct = (v, d = 1) => (Number.isFinite(v) ? `${(v * 100).toFixed(d)} %` : '–');

/**
 * Goals of the compiled cascade, WASM, the bundle's own target, ratios of one run: at batch 1 the latency ratio at most
 * the MACs fraction + `batch1[model]`, ResNet-20's ratio at most `resnet20Ratio`, the worst case (nothing exits) at most
 * `worstCase`; at batch > 1 the ratio per image at most the MACs fraction + `batchN`.
 */
export const ENGINE_GOALS = {
  batch1: { resnet56: 0.03, resnet20: 0.03, fashion: 0.05 },
  resnet20Ratio: 0.9,
  worstCase: 1.03,
  batchN: 0.05,
};

const TITLES = { resnet56: 'ResNet-56', resnet20: 'ResNet-20', fashion: 'Fashion-MNIST (shipped)' };
const wasm = (r) => r.config?.backend === 'wasm';
const find = (record, model, variant, threads, batch) =>
  (record.results ?? []).find(
    (r) => r.model === model && r.variant === variant && r.threads === threads && r.config?.batch === batch && wasm(r),
  );

/**
 * ratio − MACs fraction of a profiled batch-1 run split into three groups that add up to it: messages between page and
 * worker, the worker's own work outside onnxruntime, onnxruntime's runs; each (early − MACs fraction × full) / full
 * page mean. `unaccounted`: what the profile does not cover (clock differences between page and worker, rounding).
 */
export function gapParts(r) {
  const b = r.breakdown;
  const f = r.fullBreakdown;
  if (!b || !f) return null;
  const F = r.full.mean;
  const m = r.macsFraction;
  const share = (early, full) => (early - m * full) / F;
  const messages = share(b.toWorkerMs + b.fromWorkerMs, f.roundTripMs);
  const worker = share(b.preprocessMs + b.queueMs + b.readbackMs + b.decisionMs + b.replyMs, f.workerOtherMs);
  const runs = share(b.runMs, f.runMs);
  const gap = r.ratio.mean - m;
  return { gap, messages, worker, runs, unaccounted: gap - messages - worker - runs };
}

function whereLine(r) {
  const g = gapParts(r);
  if (!g) return 'no profile in this record';
  return `messages page ↔ worker ${signed3(g.messages)}, worker outside onnxruntime ${signed3(g.worker)}, onnxruntime runs ${signed3(g.runs)}${Math.abs(g.unaccounted) >= 0.0005 ? `, unaccounted ${signed3(g.unaccounted)}` : ''}`;
}

/** The goal rows of one model: [goal text, compiled run, goal value, stage run (same page loop) or null]. */
function goalChecks(record, model, threads) {
  const rows = [];
  const tol = ENGINE_GOALS.batch1[model];
  for (const t of threads) {
    const c = find(record, model, 'selfxit', t, 1);
    if (c) {
      const s = find(record, model, 'selfxit-stages', t, 1);
      rows.push({
        t,
        batch: 1,
        goal: `ratio ≤ MACs ${f3(c.macsFraction)} + ${f2(tol)}`,
        r: c,
        limit: c.macsFraction + tol,
        s,
      });
      if (model === 'resnet20')
        rows.push({
          t,
          batch: 1,
          goal: `ratio ≤ ${f2(ENGINE_GOALS.resnet20Ratio)}`,
          r: c,
          limit: ENGINE_GOALS.resnet20Ratio,
          s,
        });
    }
    const w = find(record, model, 'worst-case', t, 1);
    if (w)
      rows.push({
        t,
        batch: 1,
        goal: `worst case ≤ ${f2(ENGINE_GOALS.worstCase)}`,
        r: w,
        limit: ENGINE_GOALS.worstCase,
        s: find(record, model, 'worst-case-stages', t, 1),
      });
    for (const b of [...new Set((record.results ?? []).map((r) => r.config?.batch))].filter((x) => x > 1).sort()) {
      const x = find(record, model, 'selfxit', t, b);
      if (x)
        rows.push({
          t,
          batch: b,
          goal: `ratio per image ≤ MACs ${f3(x.macsFraction)} + ${f2(ENGINE_GOALS.batchN)}`,
          r: x,
          limit: x.macsFraction + ENGINE_GOALS.batchN,
          s: find(record, model, 'selfxit-stages', t, b),
        });
    }
  }
  return rows;
}

/** Compiled-cascade goals with verdicts; for each missed batch-1 goal, where the ratio's excess over MACs goes. */
export function engineGoals(record) {
  const models = Object.keys(ENGINE_GOALS.batch1).filter((k) => (record.models ?? []).some((m) => m.key === k));
  if (models.length === 0) return '';
  const threads = [...new Set((record.results ?? []).filter(wasm).map((r) => r.threads))].sort();
  const out = [
    '### Compiled cascade goals (WASM, the bundle’s own target; ratios measured side by side in one run)',
    '',
    'The compiled engine (batch 1: one onnxruntime model with the exits inside as `If`; batches: the batch model, whose exits `Compress` the rows that go on) and the stage engine (a session per segment, decisions in JS) run interleaved with the full model in the same loop (records before 2026-12-07 18:00 ran batches stage by stage only).',
    '',
    '| model | threads | batch | goal | compiled ratio (mean) | verdict | stage engine, same run |',
    '|---|---:|---:|---|---:|---|---:|',
  ];
  const missed = [];
  for (const model of models) {
    for (const row of goalChecks(record, model, threads)) {
      const j = judge(row.r.ratio.mean, row.limit);
      if (j.met === false && row.batch === 1) missed.push({ model, ...row });
      out.push(
        `| ${TITLES[model]} | ${row.t} | ${row.batch} | ${row.goal} | ${f3(row.r.ratio.mean)} | ${j.text} | ${row.s ? f3(row.s.ratio.mean) : row.batch > 1 && row.r.engine === 'stages' ? '(batches: stage engine)' : '–'} |`,
      );
    }
  }
  if (missed.length) {
    out.push(
      '',
      'Where a missed batch-1 ratio goes: ratio − MACs fraction split into (early − MACs fraction × full) / full mean, per part of the per-call profile below:',
      '',
    );
    const seen = new Set();
    for (const x of missed) {
      const key = `${x.model}|${x.r.variant}|${x.t}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(
        `- ${TITLES[x.model]}, ${x.r.variant}, ${x.t} thread${x.t === 1 ? '' : 's'}: ratio − MACs ${signed3(x.r.ratio.mean - x.r.macsFraction)} = ${whereLine(x.r)}.`,
      );
    }
  }
  return out.join('\n');
}

/** The per-part time of one batch-1 classify() on each engine, beside the full model's call. */
export function breakdownSection(record) {
  const rows = (record.results ?? []).filter((r) => r.breakdown && wasm(r));
  if (rows.length === 0) return '';
  const out = [
    '### Where one classify() goes (batch 1, WASM, ms per call, means over the measured calls)',
    '',
    'Each measured call is profiled (`classify(x, { profile: true })`): → worker = from the call on the page until the worker’s classify() starts (input conversion, the message, the worker’s event loop); preprocess = pixels → model input; queue = waiting and promise hops before each onnxruntime job; runs = the onnxruntime jobs (session.run with its copies into and out of the WASM heap; how many per call); readback = reading the exit outputs (compiled engine; the stage engine’s is in decisions); decisions = exit decisions and cascade bookkeeping between runs; reply = building the reply; ← worker = the message back and the page’s result. The full model’s worker reports only its whole time and its session.run.',
    '',
    '| model | setup | threads | page total | → worker | preprocess | queue | runs (per call) | readback | decisions | reply | ← worker | full model: page / round trip / worker rest / run |',
    '|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    const b = r.breakdown;
    const f = r.fullBreakdown ?? {};
    out.push(
      `| ${r.model} | ${r.variant} (${r.engine ?? '–'}) | ${r.threads} | ${f2(b.pageMs)} | ${f3(b.toWorkerMs)} | ${f3(b.preprocessMs)} | ${f3(b.queueMs)} | ${f2(b.runMs)} (${f2(b.runs)}) | ${f3(b.readbackMs)} | ${f3(b.decisionMs)} | ${f3(b.replyMs)} | ${f3(b.fromWorkerMs)} | ${f2(f.pageMs)} / ${f3(f.roundTripMs)} / ${f3(f.workerOtherMs)} / ${f2(f.runMs)} |`,
    );
  }
  return out.join('\n');
}

/** The light set (int8 models): compiled engine vs the full model at batch 1; says when prepare gave no exits. */
export function lightSection(record) {
  const light = (record.models ?? []).filter((m) => m.light);
  const skipped = (record.skipped ?? []).filter((s) => s.key.includes('-q'));
  if (light.length === 0 && skipped.length === 0) return '';
  const out = ['### int8 ResNet-56 (light set: batch 1, compiled engine vs the full int8 model, WASM)', ''];
  for (const m of light) {
    const rows = (record.results ?? []).filter((r) => r.model === m.key && wasm(r));
    const exits = m.exits ?? [];
    out.push(
      `**${m.title}**: ${
        exits.length === 0
          ? '**prepare gave no exits**: the bundle is the model alone, so the ratio is what the SDK adds to one plain session.'
          : `exits ${exits.map((e) => `${e.name} (${pct(e.macsFraction, 0)} MACs)`).join(', ')}.`
      }`,
      '',
      '| threads | images | ratio (mean) | MACs fraction | ratio − MACs | agreement | exit shares (…, full) |',
      '|---:|---:|---:|---:|---:|---:|---|',
      ...rows.map(
        (r) =>
          `| ${r.threads} | ${r.images} | ${f3(r.ratio.mean)} | ${f3(r.macsFraction)} | ${signed3(r.ratio.mean - r.macsFraction)} | ${pct(r.agreement, 2)} | ${(r.exitShares ?? []).map((s) => Math.round(s * 100)).join(' / ')} % |`,
      ),
      '',
    );
  }
  for (const s of skipped) out.push(`- ${s.title ?? s.key}: left out — ${s.reason}`);
  return out.join('\n');
}

// Renders one `npm run bench` record (bench/results/*.json) as the Markdown results section of BENCHMARKS.md:
// per-model tables, the compiled-cascade goals and per-call breakdown (report-engines.mjs), the latency, calibration and MACs goals with met / missed-by verdicts, where the time goes (latency
// ratio vs MACs fraction, split into its parts), the calibration curves and the WebGPU check. Pure: record in, Markdown out;
// every number comes from the record, so a record without ../shared (only the shipped model) renders too.
// Usage without re-measuring: node bench/report.mjs bench/results/<file>.json
// Over 400 lines: one renderer per BENCHMARKS.md section, kept in one file because they share the formatters, the goal
// constants and the per-run breakdown (ratioBreakdown) that several sections quote.

import { breakdownSection, engineGoals, lightSection } from './report-engines.mjs';

const f2 = (v) => (Number.isFinite(v) ? v.toFixed(2) : '–');
const f3 = (v) => (Number.isFinite(v) ? v.toFixed(3) : '–');
const pct = (v, d = 1) => (Number.isFinite(v) ? `${(v * 100).toFixed(d)} %` : '–');
const points = (v) => (Number.isFinite(v) ? `${(v * 100).toFixed(2)} points` : '–');
const signedPoints = (v) => (Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${Math.abs(v * 100).toFixed(2)} points` : '–');
const signed3 = (v) => (Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(3)}` : '–');
const seconds = (v) => (Number.isFinite(v) ? `${v.toFixed(0)} s` : '–');
const triple = (s, f = f2) => (s ? `${f(s.mean)} / ${f(s.p50)} / ${f(s.p95)}` : '–');
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/**
 * Latency goals for ResNet-56, WASM, batch 1 at >= 98.5 % agreement: the latency ratio, the worst case, the path
 * towards `ratioPath`, and the latency ratio within `ratioVsMacs` of the MACs fraction.
 */
export const LATENCY_GOALS = {
  model: 'resnet56',
  agreement: 0.985,
  ratio: 0.8,
  ratioPath: 0.6,
  worstCase: 1.05,
  ratioVsMacs: 0.04,
};

/** Calibration goals (ResNet-56 calibrated on `calib`, measured on `test`, target 0.99): agreement, top-1, MACs, prepare time. */
export const CALIBRATION_GOALS = {
  model: 'resnet56',
  target: 0.99,
  agreement: 0.987,
  top1Points: 0.003,
  macs: 0.81,
  prepareSeconds: 600,
};

/** MACs goals at target 0.99: MACs fraction per model, with the calibration goals' agreement and top-1 conditions. */
export const MACS_GOALS = {
  target: 0.99,
  agreement: 0.987,
  top1Points: 0.003,
  macs: { resnet56: 0.72, resnet20: 0.78 },
};

const TITLES = { resnet56: 'ResNet-56', resnet20: 'ResNet-20', fashion: 'Fashion-MNIST ResNet' };

/**
 * A goal check. `cmp` is how `value` must compare with `goal`; the margin is printed with `fmt`.
 * Returns `{ met: true | false | null, text }` (null: not measured).
 */
export function judge(value, goal, cmp = '<=', fmt = f3) {
  if (!Number.isFinite(value)) return { met: null, text: 'not measured' };
  const eps = 1e-12;
  const met =
    cmp === '<=' ? value <= goal + eps : cmp === '<' ? value < goal : cmp === '>=' ? value >= goal - eps : value > goal;
  const d = Math.abs(value - goal);
  const side = cmp.startsWith('<') ? 'under' : 'above';
  // A margin that rounds to zero at the printed precision is said as "< 0.001", never "missed by 0.000".
  const margin = fmt(d) === fmt(0) && d > 0 ? `< ${fmt(0.001)}` : fmt(d);
  return { met, text: met ? `met (${margin} ${side})` : `**missed by ${margin}**` };
}

function table(rows) {
  const head =
    '| setup | threads | batch | images | early-exit ms mean / p50 / p95 | full model ms mean / p50 / p95 | ratio mean / p50 / p95 | MACs | agreement | top-1 early / full | exit shares (…, full) |';
  const sep = '|---|---:|---:|---:|---|---|---|---:|---:|---|---|';
  const lines = rows.map((r) =>
    [
      r.variant,
      r.threads,
      r.config?.batch ?? '–',
      r.images,
      triple(r.early),
      triple(r.full),
      triple(r.ratio, f3),
      pct(r.macsFraction),
      pct(r.agreement, 2),
      r.accuracy ? `${pct(r.accuracy.early)} / ${pct(r.accuracy.full)}` : '–',
      (r.exitShares ?? []).map((s) => Math.round(s * 100)).join(' / ') + ' %',
    ].join(' | '),
  );
  return [head, sep, ...lines.map((l) => `| ${l} |`)].join('\n');
}

function stageLine(r) {
  return (r.stages ?? []).map((s, i) => `seg ${i}: ${f2(s.meanMs)} ms × ${s.calls}`).join(', ');
}

/** ResNet-56 (LATENCY_GOALS.model), WASM, batch 1 rows of the latency runs. */
function goalRows(record) {
  return (record.results ?? []).filter(
    (r) => r.model === LATENCY_GOALS.model && r.config?.batch === 1 && r.config?.backend === 'wasm',
  );
}

/** Mean ms per image of the cascade's segments (each segment's mean per call × calls / images). */
export function segmentMsPerImage(r) {
  if (!r.stages?.length || !(r.images > 0)) return NaN;
  return r.stages.reduce((a, s) => a + s.meanMs * s.calls, 0) / r.images;
}

/** Mean number of exits an image passes (reads and decides): the rows that ran each segment ending at an exit. */
export function exitsPassedPerImage(r) {
  if (!r.stages?.length || !(r.images > 0)) return NaN;
  return r.stages.slice(0, -1).reduce((a, s) => a + s.rows, 0) / r.images;
}

/**
 * The worst-case run (thresholds at exactly 1) of the same thread count: what splitting into sessions and the fused
 * heads cost. `splitMs`: its segments vs one session.run of the whole model, per image; `headMs`: the part the heads'
 * MACs account for; `perExitMs`: the rest (session boundaries, readbacks, decisions) per exit; `workerPerExitMs`:
 * cascade vs full model inside the workers, per exit.
 */
export function worstCaseOverhead(w) {
  if (!w) return null;
  const exits = w.exitNames?.length ?? Math.max(0, (w.stages?.length ?? 1) - 1);
  const seg = segmentMsPerImage(w);
  const splitMs = seg - w.fullRunMs;
  const headMs = (w.macsFraction - 1) * w.fullRunMs;
  return {
    exits,
    segMs: seg,
    splitMs,
    headMs,
    perExitMs: exits > 0 ? (seg - w.macsFraction * w.fullRunMs) / exits : NaN,
    workerPerExitMs: exits > 0 ? (w.earlyWorker.mean - w.fullWorker.mean) / exits : NaN,
    exited: 1 - (w.exitShares?.[w.exitShares.length - 1] ?? 1),
  };
}

/**
 * The worst case that prices `r`'s exits: same threads and engine, live pruning off when the record has it (with pruning
 * the worst case runs the exit-free model once every exit is off, so it prices no exit). Undefined when none ran.
 */
export function worstFor(rows, r) {
  const same = rows.filter(
    (w) => w.variant.startsWith('worst-case') && w.threads === r.threads && w.engine === r.engine,
  );
  return same.find((w) => w.pruneExits === false) ?? same[0];
}

/**
 * Batch 1 with BENCH_CALL_MS=1 (the record has each image's exit and each call's onnxruntime and page ms of the side and
 * of the full model): the calls grouped by exit (the last group: no exit). Per group: calls, means, the ratios on the
 * same images, and what the group adds to the side's ratio beyond its MACs fraction ((side − MACs fraction × full) /
 * the full model's mean over every call). Null without that data.
 */
export function exitBreakdown(r) {
  const c = r.callMs;
  if (!c?.exits || !c.earlyRun || !c.fullRun || !r.exitMacsFractions) return null;
  const n = c.exits.length;
  if (!n || c.earlyRun.length !== n || c.fullRun.length !== n || c.early.length !== n || c.full.length !== n)
    return null;
  const mean = (a) => a.reduce((x, v) => x + v, 0) / a.length;
  const names = [...(r.exitNames ?? r.exitMacsFractions.map((_, e) => `exit ${e}`)), 'no exit'];
  const macs = [...r.exitMacsFractions, 1];
  const fullRun = mean(c.fullRun);
  const fullPage = mean(c.full);
  const groups = [];
  for (let e = 0; e < macs.length; e++) {
    const ids = [];
    for (let i = 0; i < n; i++) if (c.exits[i] === e) ids.push(i);
    if (!ids.length) continue;
    const pick = (a) => mean(ids.map((i) => a[i]));
    const run = { early: pick(c.earlyRun), full: pick(c.fullRun) };
    const page = { early: pick(c.early), full: pick(c.full) };
    groups.push({
      exit: e,
      name: names[e],
      macsFraction: macs[e],
      calls: ids.length,
      run,
      page,
      runExcess: ((run.early - macs[e] * run.full) * ids.length) / n / fullRun,
      pageExcess: ((page.early - macs[e] * page.full) * ids.length) / n / fullPage,
    });
  }
  return {
    calls: n,
    runRatio: mean(c.earlyRun) / fullRun,
    pageRatio: mean(c.early) / fullPage,
    groups,
    runExcess: groups.reduce((x, g) => x + g.runExcess, 0),
    pageExcess: groups.reduce((x, g) => x + g.pageExcess, 0),
  };
}

/**
 * ratio.mean − macsFraction of one run split into parts that add up to it exactly (ms per image, as fractions of the
 * full model's page-side mean F): page↔worker round trip, worker time outside the segments, and segments vs the
 * MACs-proportional share of the full model's session.run (itself split into per-exit overhead and the rest).
 */
export function ratioBreakdown(r, worst) {
  const F = r.full.mean;
  const m = r.macsFraction;
  const seg = segmentMsPerImage(r);
  const roundTrip = { early: r.early.mean - r.earlyWorker.mean, full: r.full.mean - r.fullWorker.mean };
  const workerOther = { early: r.earlyWorker.mean - seg, full: r.fullWorker.mean - r.fullRunMs };
  const part = (p) => (p.early - m * p.full) / F;
  const passed = exitsPassedPerImage(r);
  const w = worstCaseOverhead(worst);
  const exitOverheadMs = w && Number.isFinite(w.perExitMs) ? passed * w.perExitMs : NaN;
  return {
    F,
    gap: r.ratio.mean - m,
    roundTrip: { ...roundTrip, share: part(roundTrip) },
    workerOther: { ...workerOther, share: part(workerOther) },
    segments: { early: seg, full: r.fullRunMs, share: (seg - m * r.fullRunMs) / F },
    passed,
    exitOverhead: { ms: exitOverheadMs, share: exitOverheadMs / F },
    rest: { share: (seg - m * r.fullRunMs - exitOverheadMs) / F },
    worst: w,
  };
}

/** Latency goal at batch 1: ratio and worst case per selfxit setup, the worst case's exit shares, device plans, where the time goes. */
function latencyGoal(record) {
  const rows = goalRows(record);
  if (rows.length === 0) return '';
  const out = [`### Latency goal at batch 1: ResNet-56, WASM, agreement ≥ ${pct(LATENCY_GOALS.agreement)}`, ''];
  out.push(
    '| setup | threads | agreement | ratio (mean) | goal ≤ ' +
      f2(LATENCY_GOALS.ratio) +
      ' | MACs fraction | ratio − MACs | worst case ratio (mean) | goal ≤ ' +
      f2(LATENCY_GOALS.worstCase) +
      ' |',
  );
  out.push('|---|---:|---:|---:|---|---:|---:|---:|---|');
  const threads = [...new Set(rows.map((r) => r.threads))];
  // selfxit at the calibration target, at the goal's target (setTarget), and under the device plan
  const variants = [...new Set(rows.map((r) => r.variant).filter((v) => v.startsWith('selfxit')))];
  for (const variant of variants) {
    for (const t of threads) {
      const s = rows.find((r) => r.variant === variant && r.threads === t);
      if (!s) continue;
      const w = rows.find((r) => r.variant === 'worst-case' && r.threads === t);
      const agreeOk =
        s.agreement >= LATENCY_GOALS.agreement
          ? pct(s.agreement, 2)
          : `**${pct(s.agreement, 2)}** (below ${pct(LATENCY_GOALS.agreement)})`;
      out.push(
        `| ${variant} | ${t} | ${agreeOk} | ${f3(s.ratio.mean)} | ${judge(s.ratio.mean, LATENCY_GOALS.ratio).text} | ${f3(s.macsFraction)} | ${f3(s.ratio.mean - s.macsFraction)} | ${w ? f3(w.ratio.mean) : '–'} | ${w ? judge(w.ratio.mean, LATENCY_GOALS.worstCase).text : '–'} |`,
      );
    }
  }
  const worst = rows.filter((r) => r.variant === 'worst-case');
  if (worst.length) {
    out.push(
      '',
      'Worst case = every threshold at exactly 1: every exit output is read back and decided on, and only a probability that rounds to 1 in float32 leaves. Its exit shares, so that an input that still exited is visible:',
      '',
    );
    for (const w of worst) {
      const names = [...(w.exitNames ?? []), 'full'];
      const exited = 1 - (w.exitShares?.[w.exitShares.length - 1] ?? 1);
      const count = Math.round(exited * w.images);
      out.push(
        `- ${plural(w.threads, 'thread')}: ${(w.exitShares ?? []).map((s, i) => `${names[i] ?? `exit ${i}`} ${pct(s, 1)}`).join(', ')} — ` +
          (count === 0
            ? `no input exited (of ${w.images}).`
            : `**${count} of ${w.images} inputs still exited** (${pct(exited, 2)}); the worst-case times include them.`),
      );
    }
  }
  const planned = rows.filter((r) => r.plan);
  if (planned.length) {
    out.push(
      '',
      'Device plans measured in the bench page: ' +
        planned
          .map(
            (r) =>
              `${r.variant} (${r.engine ?? 'stages'} engine timed), ${plural(r.threads, 'thread')}: exits used ${
                r.plan.enabled
                  .map((e, i) => (e ? r.exitNames[i] : null))
                  .filter(Boolean)
                  .join(', ') || 'none'
              }; stage ms ${r.plan.stageMs.map(f2).join(' / ')}; decision ms ${r.plan.decisionMs.map(f2).join(' / ')}; expected ms fraction ${f3(r.plan.expectedMsFraction)} (${f2(r.plan.seconds)} s to plan)`,
          )
          .join('; ') +
        '.',
    );
  }
  out.push(
    '',
    "**Where the time goes** (inside the workers; the cascade reports each segment's wall time per call):",
    '',
  );
  for (const r of rows) {
    const exits = r.exitNames?.length ?? 0;
    const overhead = r.earlyWorker.mean - r.fullWorker.mean;
    out.push(
      `- ${r.variant}, ${plural(r.threads, 'thread')}: cascade ${f2(r.earlyWorker.mean)} ms vs full ${f2(r.fullWorker.mean)} ms per image in the worker ` +
        `(session.run alone ${f2(r.fullRunMs)} ms); page-side round trips ${f2(r.early.mean)} vs ${f2(r.full.mean)} ms. Segments: ${stageLine(r)}.` +
        (r.variant.startsWith('worst-case') && r.pruneExits !== false && (r.prunedAtEnd?.length ?? 0) > 0
          ? ` Live pruning had turned ${r.prunedAtEnd.length === exits ? 'every exit' : `${r.prunedAtEnd.length} of ${plural(exits, 'exit')}`} off here, so this does not price ${r.prunedAtEnd.length === exits ? 'the exits' : 'those'} (the no-pruning worst case does).`
          : r.variant.startsWith('worst-case') && r.engine !== 'stages' && exits > 0
            ? ` Every exit is read and decided here and (almost) no input leaves, so the difference (${f2(overhead)} ms) is the cost of ${plural(exits, 'head')}, their readbacks and decisions, and ${r.stages.length - 1} extra segment boundar${r.stages.length === 2 ? 'y' : 'ies'}: ${f2(overhead / exits)} ms per exit.`
            : ''),
    );
  }
  return out.join('\n');
}

/** Latency ratio within LATENCY_GOALS.ratioVsMacs of the MACs fraction; where the difference goes; the path to LATENCY_GOALS.ratioPath. */
function ratioVsMacs(record) {
  const all = goalRows(record);
  const rows = all.filter((r) => r.variant.startsWith('selfxit'));
  if (rows.length === 0) return '';
  const out = [
    `### Latency ratio vs MACs fraction goal (ResNet-56, WASM, batch 1; goal: ratio − MACs fraction ≤ ${f2(LATENCY_GOALS.ratioVsMacs)})`,
    '',
  ];
  out.push(
    '| setup | threads | ratio (mean) | MACs fraction | ratio − MACs | verdict |',
    '|---|---:|---:|---:|---:|---|',
  );
  for (const r of rows)
    out.push(
      `| ${r.variant} | ${r.threads} | ${f3(r.ratio.mean)} | ${f3(r.macsFraction)} | ${f3(r.ratio.mean - r.macsFraction)} | ${judge(r.ratio.mean - r.macsFraction, LATENCY_GOALS.ratioVsMacs).text} |`,
    );
  for (const r of rows) {
    if (judge(r.ratio.mean - r.macsFraction, LATENCY_GOALS.ratioVsMacs).met !== false) continue;
    const worst = worstFor(all, r);
    const b = ratioBreakdown(r, worst);
    const m = r.macsFraction;
    out.push(
      '',
      `**Where the ${f3(b.gap)} goes** (${r.variant}, ${plural(r.threads, 'thread')}): ms per image; each part's share of the ratio is (early − MACs fraction × full) / ${f2(b.F)} ms (the full model's page-side mean), so the parts add up to ratio − MACs fraction.`,
      '',
      '| part | early exit, ms | full model, ms | share of ratio − MACs |',
      '|---|---:|---:|---:|',
      `| page ↔ worker round trip (page mean − worker mean) | ${f2(b.roundTrip.early)} | ${f2(b.roundTrip.full)} | ${signed3(b.roundTrip.share)} |`,
      `| in the worker, outside the segments (preprocessing, messaging; full: worker − session.run) | ${f2(b.workerOther.early)} | ${f2(b.workerOther.full)} | ${signed3(b.workerOther.share)} |`,
      `| segments (sum per image) vs MACs fraction × the full model's session.run | ${f2(b.segments.early)} | ${f2(m * b.segments.full)} | ${signed3(b.segments.share)} |`,
      `| total | ${f2(r.early.mean)} | ${f2(m * r.full.mean)} | ${signed3(b.gap)} |`,
      '',
    );
    const w = b.worst;
    if (w) {
      out.push(
        `- Splitting into sessions + fused heads (${worst.variant}, same threads and engine): its segments take ${f2(w.segMs)} ms per image vs ${f2(worst.fullRunMs)} ms for one session.run of the whole model (${signed3(w.splitMs)} ms); ` +
          `the heads' MACs account for ${f2(w.headMs)} ms of that, the rest is ${f2(w.perExitMs)} ms per exit (session boundary, readback, decision; inside the worker ${f2(w.workerPerExitMs)} ms per exit, ${worst.pruneExits === false ? `all ${plural(w.exits, 'exit')} read` : 'live pruning on: the exits it turned off were not read'}).`,
        `- Here an image passes ${f2(b.passed)} exits on average: × ${f2(w.perExitMs)} ms = ${f2(b.exitOverhead.ms)} ms, ${signed3(b.exitOverhead.share)} of the ratio; the segments' remaining ${signed3(b.rest.share)} is time not proportional to MACs (per-segment efficiency at batch 1).`,
      );
    } else {
      out.push(
        `- No worst-case run with ${plural(r.threads, 'thread')} in this record: the per-exit overhead is not separated from the segments.`,
      );
    }
    const x = exitBreakdown(r);
    if (x) {
      const none = x.groups.find((g) => g.exit === r.exitMacsFractions.length);
      out.push(
        `- By exit (onnxruntime time over the full model's on the same images, the exit's MACs fraction and calls in brackets; \`node bench/by-exit.mjs\` prints the table): ` +
          x.groups
            .map((g) => `${g.name} ${f3(g.run.early / g.run.full)} (${f3(g.macsFraction)}, ${g.calls})`)
            .join(', ') +
          `; onnxruntime time over the MACs fraction ${signed3(x.runExcess)} of the ratio` +
          (none ? `, ${signed3(none.runExcess)} of it from the calls that took no exit.` : '.'),
      );
    }
    const plan = rows.find((p) => p.variant === 'selfxit+plan' && p.threads === r.threads && p.plan);
    if (plan) {
      const stageSum = plan.plan.stageMs.reduce((a, x) => a + x, 0);
      const predicted = (plan.plan.expectedMsFraction * stageSum) / plan.fullRunMs;
      out.push(
        `- Device plan (${plural(r.threads, 'thread')}): expected ms fraction ${f3(plan.plan.expectedMsFraction)} of running every segment; × (segments ${f2(stageSum)} ms / one session.run ${f2(plan.fullRunMs)} ms) = ${f3(predicted)} expected against the plain model, ` +
          `measured ratio ${f3(plan.ratio.mean)} (${signed3(plan.ratio.mean - predicted)}: page and worker overheads the plan does not time) at MACs fraction ${f3(plan.macsFraction)}.`,
      );
    }
  }
  // The path towards LATENCY_GOALS.ratioPath, from the best selfxit run (lowest ratio) at batch 1.
  const best = rows
    .filter(
      (r) => r.variant.startsWith('selfxit') && !r.variant.includes('plan') && r.agreement >= LATENCY_GOALS.agreement,
    )
    .sort((a, b) => a.ratio.mean - b.ratio.mean)[0];
  if (best) out.push('', pathParagraph(record, best, worstFor(all, best)));
  return out.join('\n');
}

/** A generated paragraph: what a ratio <= LATENCY_GOALS.ratioPath would need, from the measured parts. */
function pathParagraph(record, r, worst) {
  const goal = LATENCY_GOALS.ratioPath;
  const b = ratioBreakdown(r, worst);
  const m = r.macsFraction;
  const head = `**Towards a ratio ≤ ${f2(goal)}** (selfxit, ${plural(r.threads, 'thread')}, today ${f3(r.ratio.mean)} at MACs fraction ${f3(m)}): `;
  if (r.ratio.mean <= goal) return `${head}reached (${f3(goal - r.ratio.mean)} under).`;
  const parts = [];
  const needMacs = goal - b.gap;
  parts.push(
    needMacs > 0
      ? `with today's gap of ${f3(b.gap)} over the MACs fraction it needs a MACs fraction ≤ ${f3(needMacs)} (${f3(m - needMacs)} below today's); with the gap at the ${f2(LATENCY_GOALS.ratioVsMacs)} tolerance, ≤ ${f3(goal - LATENCY_GOALS.ratioVsMacs)}.`
      : `today's gap of ${f3(b.gap)} alone exceeds ${f2(goal)}: no MACs fraction reaches it without cutting the overheads.`,
  );
  const needGap = goal - m;
  const fixed = b.roundTrip.share + b.workerOther.share; // round trip and worker extras, as shares of the ratio
  if (needGap <= 0) {
    parts.push(
      `At today's MACs fraction (${f3(m)}, above ${f2(goal)}) no cut in overheads reaches it: the exits have to leave earlier or more often.`,
    );
  } else if (b.worst && Number.isFinite(b.worst.perExitMs) && b.passed > 0) {
    // ratio = m + fixed + rest + passed × perExit / F  →  perExit needed for ratio = goal at today's MACs fraction.
    const perExitNeeded = ((needGap - fixed - b.rest.share) * b.F) / b.passed;
    parts.push(
      perExitNeeded >= 0
        ? `At today's MACs fraction it needs the gap ≤ ${f3(needGap)}: round trip and worker extras take ${signed3(fixed)}, the segments' non-MACs rest ${signed3(b.rest.share)}, so the per-exit overhead would have to fall from ${f2(b.worst.perExitMs)} to ≤ ${f2(perExitNeeded)} ms (${f2(b.passed)} exits passed per image).`
        : `At today's MACs fraction it needs the gap ≤ ${f3(needGap)}, but round trip and worker extras (${signed3(fixed)}) and the segments' non-MACs rest (${signed3(b.rest.share)}) exceed that even with no per-exit overhead: the MACs fraction has to fall.`,
    );
  } else {
    parts.push(`At today's MACs fraction it needs the gap ≤ ${f3(needGap)} (today ${f3(b.gap)}).`);
  }
  const oracle = record.curves?.[LATENCY_GOALS.model]?.selfxit?.asShipped?.oracleMacsFraction;
  if (Number.isFinite(oracle))
    parts.push(
      `For scale: the oracle of the same heads (each image leaves at the first head that agrees with the full model) needs a MACs fraction of ${f3(oracle)} on the test images.`,
    );
  return head + parts.join(' ');
}

/** The operating point of a bundle variant at `target`: as shipped when prepared for it, else re-chosen from its curve. */
function atTarget(c, variant, target) {
  if (!c) return null;
  if (variant !== 'paper' && c.asShipped && Math.abs(c.asShipped.target - target) < 1e-9)
    return { ...c.asShipped, source: 'as shipped' };
  const t = (c.targetCurve ?? []).find((p) => Math.abs(p.target - target) < 1e-9);
  return t ? { ...t, source: `thresholds re-chosen from the curve${t.reached ? '' : ', target not reached'}` } : null;
}

const top1Delta = (p, c) =>
  p && Number.isFinite(p.accuracy) && Number.isFinite(c?.backboneAccuracy) ? p.accuracy - c.backboneAccuracy : NaN;
const opLine = (p, c) =>
  p ? `${pct(p.agreement, 2)} agreement, top-1 ${signedPoints(top1Delta(p, c))}, MACs ${f3(p.macsFraction)}` : '–';

/** Calibration goal: ResNet-56 at target 0.99, next to the paper's setup (fixed 0.9) and the pooled max-softmax baseline. */
function calibrationGoal(record) {
  const v = record.curves?.[CALIBRATION_GOALS.model];
  if (!v?.selfxit) return '';
  const s = v.selfxit;
  const p = atTarget(s, 'selfxit', CALIBRATION_GOALS.target);
  const paper = v.paper?.asShipped ? { ...v.paper.asShipped } : null;
  const base = atTarget(v.maxsoftmax, 'maxsoftmax', CALIBRATION_GOALS.target);
  const out = [
    `### Calibration goal at target ${CALIBRATION_GOALS.target}: ResNet-56 (calibrated on ${s.calibrationSamples ?? '–'} \`calib\` images, measured on ${s.samples} \`test\` images)`,
    '',
  ];
  if (!p) return out.concat([`The selfxit bundle was not measured at target ${CALIBRATION_GOALS.target}.`]).join('\n');
  const d = top1Delta(p, s);
  const steps = (c) =>
    Object.entries(c?.prepareSteps ?? {})
      .map(([k, x]) => `${k} ${seconds(x)}`)
      .join(', ') || '–';
  const col = (c, pt, f) => (c && pt ? f(c, pt) : '–');
  out.push(
    `| criterion | goal | selfxit (${p.source}) | verdict | paper (as shipped, fixed 0.9) | pooled max-softmax |`,
    '|---|---|---:|---|---:|---:|',
    `| test agreement | ≥ ${pct(CALIBRATION_GOALS.agreement, 2)} | ${pct(p.agreement, 2)} | ${judge(p.agreement, CALIBRATION_GOALS.agreement, '>=', points).text} | ${col(v.paper, paper, (_, x) => pct(x.agreement, 2))} | ${col(v.maxsoftmax, base, (_, x) => pct(x.agreement, 2))} |`,
    `| top-1 vs backbone (${pct(s.backboneAccuracy, 2)}) | within ${points(CALIBRATION_GOALS.top1Points)} | ${signedPoints(d)} (${pct(p.accuracy, 2)}) | ${judge(d, -CALIBRATION_GOALS.top1Points, '>=', points).text} | ${col(v.paper, paper, (c, x) => signedPoints(top1Delta(x, c)))} | ${col(v.maxsoftmax, base, (c, x) => signedPoints(top1Delta(x, c)))} |`,
    `| MACs fraction | < ${f2(CALIBRATION_GOALS.macs)} | ${f3(p.macsFraction)} | ${judge(p.macsFraction, CALIBRATION_GOALS.macs, '<').text} | ${col(v.paper, paper, (_, x) => f3(x.macsFraction))} | ${col(v.maxsoftmax, base, (_, x) => f3(x.macsFraction))} |`,
    `| oracle MACs fraction (same heads) | – | ${f3(s.asShipped?.oracleMacsFraction)} | – | ${f3(paper?.oracleMacsFraction)} | ${f3(v.maxsoftmax?.asShipped?.oracleMacsFraction)} |`,
    `| \`prepare\` time (${s.calibrationSamples ?? '–'} images) | ≤ ${seconds(CALIBRATION_GOALS.prepareSeconds)} | ${seconds(s.prepareSeconds)} | ${judge(s.prepareSeconds, CALIBRATION_GOALS.prepareSeconds, '<=', seconds).text} | ${seconds(v.paper?.prepareSeconds)} | ${seconds(v.maxsoftmax?.prepareSeconds)} |`,
    '',
    `\`prepare\` steps: selfxit ${steps(s)}${v.paper ? `; paper ${steps(v.paper)}` : ''}${v.maxsoftmax ? `; max-softmax ${steps(v.maxsoftmax)}` : ''}. The time is the wall time of the \`selfxit prepare\` process (loading the model and images included) of the run that made the cached bundle.`,
  );
  if (paper)
    out.push(
      '',
      `The paper's setup keeps its fixed threshold 0.9 (target recorded only); its exit shares on the test images: ${(paper.exitShares ?? []).map((x) => pct(x, 1)).join(' / ')} (…, full).`,
    );
  return out.join('\n');
}

/** MACs goal: MACs per model at target 0.99 with the calibration goals' agreement and top-1 conditions, beside max-softmax and paper. */
function macsGoal(record) {
  const curves = record.curves ?? {};
  const keys = Object.keys(MACS_GOALS.macs);
  if (!keys.some((k) => curves[k]?.selfxit)) return '';
  const out = [
    `### MACs goal at target ${MACS_GOALS.target}: stronger exits (test agreement ≥ ${pct(MACS_GOALS.agreement, 2)}, top-1 within ${points(MACS_GOALS.top1Points)} of the backbone)`,
    '',
  ];
  out.push(
    '| model | MACs goal | test agreement | top-1 vs backbone | MACs fraction | verdict | pooled max-softmax at 0.99 | paper at 0.99 (re-chosen) |',
    '|---|---:|---:|---:|---:|---|---|---|',
  );
  for (const key of keys) {
    const v = curves[key];
    const goal = MACS_GOALS.macs[key];
    if (!v?.selfxit) {
      out.push(`| ${TITLES[key] ?? key} | ≤ ${f2(goal)} | – | – | – | not in this record | – | – |`);
      continue;
    }
    const p = atTarget(v.selfxit, 'selfxit', MACS_GOALS.target);
    if (!p) {
      out.push(`| ${TITLES[key] ?? key} | ≤ ${f2(goal)} | – | – | – | not measured at ${MACS_GOALS.target} | – | – |`);
      continue;
    }
    const d = top1Delta(p, v.selfxit);
    const checks = [
      ['agreement', judge(p.agreement, MACS_GOALS.agreement, '>=', points)],
      ['top-1', judge(d, -MACS_GOALS.top1Points, '>=', points)],
      ['MACs', judge(p.macsFraction, goal, '<=')],
    ];
    const missed = checks.filter(([, j]) => j.met === false);
    const unknown = checks.filter(([, j]) => j.met === null);
    const verdict = missed.length
      ? missed.map(([name, j]) => `${name} ${j.text}`).join('; ')
      : unknown.length
        ? `not measured: ${unknown.map(([n]) => n).join(', ')}`
        : `met (MACs ${f3(goal - p.macsFraction)} under)`;
    out.push(
      `| ${TITLES[key] ?? key} | ≤ ${f2(goal)} | ${pct(p.agreement, 2)} | ${signedPoints(d)} | ${f3(p.macsFraction)} | ${verdict} | ${opLine(atTarget(v.maxsoftmax, 'maxsoftmax', MACS_GOALS.target), v.maxsoftmax)} | ${opLine(atTarget(v.paper, 'paper', MACS_GOALS.target), v.paper)} |`,
    );
  }
  out.push(
    '',
    'The curves below give every target; heads, thresholds and plans are fit on `calib` only, the `test` images are used only here.',
  );
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
    "Each bundle is prepared once at target 0.99; for every other target its thresholds are re-chosen from the bundle's calibration curve with the same confidence margin (what `setTarget()` does on a device), then measured on the test images (`selfxit eval --targets`). Exits stay those selected for 0.99. Expected = out-of-fold validation agreement on the calibration images; measured = agreement with the full model on the test images.",
    '',
  ];
  for (const key of models) {
    const title = (record.models ?? []).find((m) => m.key === key)?.title ?? key;
    const v = record.curves[key];
    const any = Object.values(v)[0];
    if (!any) continue;
    out.push(`#### ${title} — ${any.samples} test images, backbone top-1 ${pct(any.backboneAccuracy, 2)}`, '');
    out.push(
      '| variant | target | expected agreement | measured agreement | top-1 | MACs fraction |',
      '|---|---:|---:|---:|---:|---:|',
    );
    for (const [variant, c] of Object.entries(v)) {
      for (const t of c.targetCurve ?? []) {
        out.push(
          `| ${variant} | ${f3(t.target)} | ${pct(t.expectedAgreement, 2)} | ${pct(t.agreement, 2)} | ${pct(t.accuracy, 2)} | ${f3(t.macsFraction)}${t.reached ? '' : ' (target not reached)'} |`,
        );
      }
    }
    out.push('');
    out.push('| variant | exits | calibration images | prepare time | steps |', '|---|---|---:|---:|---|');
    for (const [variant, c] of Object.entries(v)) {
      const steps = Object.entries(c.prepareSteps ?? {})
        .map(([k, s2]) => `${k} ${s2.toFixed(0)} s`)
        .join(', ');
      out.push(
        `| ${variant} | ${(c.exits ?? []).join(', ') || 'none'} | ${c.calibrationSamples ?? '–'} | ${seconds(c.prepareSeconds)} | ${steps} |`,
      );
    }
    out.push(
      '',
      Object.keys(v)
        .map((k) => `- **${k}**: ${VARIANT_TITLES[k] ?? k}`)
        .join('\n'),
      '',
    );
  }
  return out.join('\n');
}

function webgpu(record) {
  const rows = (record.results ?? []).filter((r) => r.variant === 'webgpu-correctness');
  if (rows.length === 0) return '';
  const out = [
    '### WebGPU (correctness only)',
    '',
    `Adapter: ${rows[0].adapter}. Software rendering: the timings mean nothing and are not reported.`,
    '',
  ];
  out.push(
    '| model | images | backend used | early exit vs full (WebGPU) | early exit WebGPU vs WASM | full WebGPU vs WASM |',
    '|---|---:|---|---:|---:|---:|',
  );
  for (const r of rows)
    out.push(
      `| ${r.model} | ${r.images} | ${r.backend} | ${pct(r.agreement, 2)} | ${pct(r.crossBackend?.earlyWebgpuVsWasm, 2)} | ${pct(r.crossBackend?.fullWebgpuVsWasm, 2)} |`,
    );
  return out.join('\n');
}

/**
 * Shared memory vs messages: per model, thread count and batch (WASM; batch 1: the compiled engine at the bundle's
 * thresholds), classify() through the shared-memory lane (the default on a cross-origin isolated page) beside the same
 * classifier with every call by message (`sharedMemory: false`), in the same loop.
 */
export function transportSection(record) {
  const rows = [];
  for (const r of record.results ?? []) {
    if (r.variant !== 'selfxit' || r.backend !== 'wasm') continue;
    const o = (record.results ?? []).find(
      (x) =>
        x.model === r.model &&
        x.variant === 'selfxit-message' &&
        x.threads === r.threads &&
        x.config?.batch === r.config?.batch,
    );
    if (o) rows.push({ r, o });
  }
  if (rows.length === 0) return '';
  const out = [
    '### classify() through shared memory vs by message (WASM; batch 1: compiled engine; both in the same loop)',
    '',
    '| model | threads | batch | transport (as reported) | ratio (mean / p50) | by message: ratio (mean / p50) | shared ÷ message (mean) | ms per image saved (mean) |',
    '|---|---:|---:|---|---:|---:|---:|---:|',
  ];
  for (const { r, o } of rows)
    out.push(
      `| ${TITLES[r.model] ?? r.model} | ${r.threads} | ${r.config?.batch ?? 1} | ${r.transport ?? '?'} / ${o.transport ?? '?'} | ${f3(r.ratio.mean)} / ${f3(r.ratio.p50)} | ${f3(o.ratio.mean)} / ${f3(o.ratio.p50)} | ${f3(r.early.mean / o.early.mean)} | ${f3(o.early.mean - r.early.mean)} |`,
    );
  out.push(
    '',
    'Shared memory: the input and the answer cross in a SharedArrayBuffer and both sides wake with `Atomics.notify` / `Atomics.waitAsync` (src/shared-lane.ts); by message: `postMessage` each way. The same decisions either way. A batch is one call, so its saving is spread over its images.',
  );
  return out.join('\n');
}

/**
 * Live exit pruning: per model and thread count (WASM, batch 1), the compiled engine with pruning (the default) beside
 * the same engine without it, measured in the same loop, at the bundle's thresholds and in the worst case.
 */
export function pruningSection(record) {
  const pairs = [
    ['selfxit', 'selfxit-noprune', "bundle's thresholds"],
    ['worst-case', 'worst-case-noprune', 'worst case (every threshold at 1)'],
  ];
  const rows = [];
  for (const r of record.results ?? []) {
    const pair = pairs.find(([a]) => r.variant === a);
    if (!pair || r.config?.batch !== 1 || r.backend !== 'wasm') continue;
    const o = (record.results ?? []).find(
      (x) => x.model === r.model && x.variant === pair[1] && x.threads === r.threads && x.config?.batch === 1,
    );
    if (o) rows.push({ r, o, traffic: pair[2] });
  }
  if (rows.length === 0) return '';
  const names = (r, list) => (list?.length ? list.map((e) => r.exitNames?.[e] ?? `exit ${e}`).join(', ') : 'none');
  const out = [
    '### Live exit pruning (WASM, batch 1, compiled engine; with and without pruning in the same loop)',
    '',
    '| model | threads | traffic | ratio with pruning (mean / p50) | without (mean / p50) | with ÷ without (mean) | pruned after warm-up → at the end | agreement with / without |',
    '|---|---:|---|---:|---:|---:|---|---:|',
  ];
  for (const { r, o, traffic } of rows)
    out.push(
      `| ${TITLES[r.model] ?? r.model} | ${r.threads} | ${traffic} | ${f3(r.ratio.mean)} / ${f3(r.ratio.p50)} | ${f3(o.ratio.mean)} / ${f3(o.ratio.p50)} | ${f3(r.early.mean / o.early.mean)} | ${names(r, r.prunedAtStart)} → ${names(r, r.prunedAtEnd)} | ${pct(r.agreement, 2)} / ${pct(o.agreement, 2)} |`,
    );
  const warm = [...new Set(rows.map((x) => x.r.warmupCalls ?? x.r.config?.warmup ?? 8))];
  out.push(
    '',
    `Warm-up: ${warm.join(' / ')} untimed calls of each side before measuring (the worst case's is long enough for pruning to reach its steady state: an exit is pruned once the upper 99.9 % bound of its share of leaving inputs, over at least 64 inputs, is below break-even). With pruning on, 1 call in 32 is a probe that runs every exit in use, so the pruned worst case includes those.`,
  );
  return out.join('\n');
}

/** How the measured sides took turns (BENCH_INTERLEAVE): the measured results' configs say; older records were per image. */
export function turnsText(record) {
  const c = record.results.find((r) => r.config && !r.config.correctnessOnly)?.config;
  return c?.interleave === 'block'
    ? `interleaved in blocks: each side ${c.block} consecutive calls, then ${c.pauseMs} ms idle, the sides' order rotating and reversing per block (BENCH_INTERLEAVE=block)`
    : 'interleaved image by image in ABBA order';
}

/** The Markdown section for one record. Pure: nothing is read or written. */
export function renderMarkdown(record, resultFile) {
  const m = record.machine ?? {};
  const out = [
    `## Results of ${String(record.date ?? '').slice(0, 10)}`,
    '',
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; ${m.os}; ${m.chromium}${m.jsFlags ? ` (\`--js-flags=${m.jsFlags}\`)` : ''}; Node ${m.node}. Load average at the end: ${(m.loadAverage ?? []).map((x) => x.toFixed(2)).join(', ')}.`,
    `- Command: \`${record.command}\` (${Math.round(record.seconds)} s${record.phases ? `: prepare ${seconds(record.phases.prepareSeconds)}, curves ${seconds(record.phases.curvesSeconds)}, page measurements ${seconds(record.phases.measureSeconds)}` : ''}). Raw data: \`${resultFile}\`.`,
    ...(record.models?.some((x) => Number.isFinite(x.images))
      ? [
          `- Test images per configuration: ${record.models.map((x) => `${x.key} ${x.images}`).join(', ')} (batch 32: the largest multiple of 32).`,
        ]
      : []),
    ...(record.models?.some((x) => x.pool)
      ? [
          `- Bundles prepared on \`calib\` + \`pool\` (BENCH_POOL=1): ${record.models
            .filter((x) => x.pool)
            .map((x) => `${x.key} (${x.calibrationSamples} images)`)
            .join(', ')}; the max-softmax and paper variants on \`calib\` only.`,
        ]
      : []),
    ...(record.reusedBundles?.length
      ? [
          `- **Bundles reused although prepare's inputs changed since they were made** (BENCH_REUSE_BUNDLES=1): ${record.reusedBundles.join(', ')}.`,
        ]
      : []),
    `- Latency per image, ms: page-side round trip of \`clf.classify()\` (early exits, the SDK worker) and of the original model as one plain onnxruntime-web session in its own worker, same backend, threads and preprocessing, ${turnsText(record)}. Batch 32: the batch time / 32. Ratio = early exit / full for each statistic. Agreement = same top-1 class as the full model on the same test images (never used for calibration).`,
    '- Setups: **selfxit** = `prepare` defaults (target 0.99), compiled engine (batch 1: the cascade model with `If` exits; batches: the batch model, which keeps the rows that go on with `Compress`); **selfxit-stages**, **worst-case-stages** = the same on the stage engine, interleaved in the same loop; **selfxit-noprune**, **worst-case-noprune** = the compiled engine with live exit pruning off (`pruneExits: false`; the other setups prune, the default), in the same loop; **selfxit-message** = the same classifier with every call by message (`sharedMemory: false`; at batch 1 the compiled engine; the other setups go through shared memory, the default on this cross-origin isolated page), in the same loop; **selfxit@T** = the same bundle with thresholds re-chosen for target T by `clf.setTarget(T)` (the latency goals are at ≥ ' +
      pct(LATENCY_GOALS.agreement) +
      " agreement); **selfxit+plan** = the same bundle after `clf.plan()` on this machine (stage times measured in the page's worker, exits and thresholds re-chosen for the same target); **worst case** = the same bundle with every threshold at exactly 1 (every exit output is read back and decided on, so all heads, readbacks and decisions are paid; only a probability that rounds to 1 in float32 leaves, and its exit shares below show whether any input did); **paper** = `prepare --mode paper --threshold 0.9` (the paper's heads at fixed exits).",
    '',
  ];
  for (const model of record.models ?? []) {
    const rows = (record.results ?? []).filter((r) => r.model === model.key && r.variant !== 'webgpu-correctness');
    if (rows.length === 0) continue;
    out.push(`### ${model.title}`, '');
    out.push(
      `Backbone ${(model.backboneMacs / 1e6).toFixed(1)} M MACs; selfxit exits: ${(model.exits ?? []).map((e) => `${e.name} (${pct(e.macsFraction, 0)} MACs, threshold ${f3(e.threshold)})`).join(', ') || 'none'}; calibrated on ${model.calibrationSamples} images, target ${pct(model.target)}.`,
      '',
    );
    out.push(table(rows), '');
  }
  if (!(record.models ?? []).some((x) => x.key === LATENCY_GOALS.model)) {
    out.push(
      `ResNet-56 is not in this record (\`../shared\` absent, or left out by BENCH_MODELS): the latency, calibration and MACs goals are not evaluated.`,
      '',
    );
  }
  for (const section of [
    engineGoals(record),
    breakdownSection(record),
    lightSection(record),
    pruningSection(record),
    transportSection(record),
    latencyGoal(record),
    ratioVsMacs(record),
    calibrationGoal(record),
    macsGoal(record),
    curves(record),
    webgpu(record),
  ])
    if (section) out.push(section, '');
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

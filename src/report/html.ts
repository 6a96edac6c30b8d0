// The calibration report: one self-contained HTML page (inline CSS + SVG, no scripts, no network)
// from a bundle manifest and, optionally, an evaluation result (with the measured target curve) and other bundles
// measured on the same samples.
import type { BundleManifest } from '../bundle/manifest.js';
import type { EvaluationResult } from '../calibrate/evaluate.js';
import { barChart, esc, lineChart, type BarSeries, type LineSeries, type Marker } from './svg.js';

/** Another bundle measured on the same samples (e.g. the max-softmax or paper variant of the same model). */
export interface ComparedBundle {
  /** Name in the chart and tables (e.g. the bundle folder). */
  readonly label: string;
  readonly manifest: BundleManifest;
  readonly evaluation: EvaluationResult;
}

/** Inputs of {@link renderReport}. */
export interface ReportInput {
  readonly manifest: BundleManifest;
  /** Measured on held-out samples (`selfxit eval`), shown beside the calibration estimates; with `targets`, its
   * `targetCurve` is drawn as target → achieved agreement → MACs. */
  readonly evaluation?: EvaluationResult;
  /** Name of this bundle where bundles are compared. Default "this bundle". */
  readonly label?: string;
  /** Other bundles measured on the same samples, overlaid on the target curve and compared as shipped. */
  readonly compare?: readonly ComparedBundle[];
  /** Title override. Default "selfxit calibration report". */
  readonly title?: string;
  /** Free-form notes (warnings), one paragraph each. */
  readonly notes?: readonly string[];
}

const pct = (v: number | null | undefined, d = 2): string =>
  v === null || v === undefined || !Number.isFinite(v) ? '–' : `${(v * 100).toFixed(d)} %`;
const num = (v: number): string => (Number.isFinite(v) ? v.toLocaleString('en-US') : '–');

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#9c755f'];

/** How the bundle's thresholds are set, from its calibration summary (mode and threshold rule). */
export function thresholdRuleText(m: BundleManifest): { rule: string; knob: string } {
  const c = m.calibration;
  if (c.mode === 'paper') {
    const t = m.exits[0]?.threshold;
    return {
      rule: `paper: one fixed max-softmax threshold shared by every exit${t === undefined ? '' : ` (${t.toFixed(4)})`}`,
      knob: 'the max-softmax threshold shared by every exit',
    };
  }
  if (c.thresholdRule === 'cost-calibrated') {
    return {
      rule: 'cost-calibrated: each exit’s max-softmax is mapped to its estimated agreement with the backbone (a logistic fit on out-of-fold outputs) and weighed by the share of backbone cost still ahead; one knob sets every exit’s threshold',
      knob: 'the cost-calibrated knob (estimated disagreement per unit of backbone cost still ahead, one value for every exit; each value gives one max-softmax threshold per exit)',
    };
  }
  return {
    rule: 'global: one max-softmax threshold shared by every exit',
    knob: 'the global max-softmax threshold shared by every exit',
  };
}

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

/** Renders the report page. Pure: returns the HTML text. */
export function renderReport(input: ReportInput): string {
  const { manifest: m, evaluation: ev } = input;
  const c = m.calibration;
  const title = input.title ?? 'selfxit calibration report';
  const exitNames = [...m.exits.map((e) => e.name), 'backbone'];
  const expected = [...m.exits.map((e) => e.expectedShare)];
  expected.push(Math.max(0, 1 - expected.reduce((a, b) => a + b, 0)));
  const shareSeries: BarSeries[] = [{ name: 'calibration (out-of-fold)', color: '#4e79a7', values: expected }];
  if (ev) shareSeries.push({ name: 'measured (eval)', color: '#f28e2b', values: ev.exitShares });

  const curve = c.curve.map((p) => [p.macsFraction, p.agreement] as const);
  const markers: Marker[] = [
    {
      label: `chosen (target ${pct(c.target, 1)})`,
      color: '#4e79a7',
      x: c.expectedMacsFraction,
      y: c.validationAgreement,
    },
  ];
  if (ev) markers.push({ label: 'measured', color: '#f28e2b', x: ev.macsFraction, y: ev.agreement });

  const summaryRows: string[][] = [
    ['mode', c.mode],
    ['calibration samples', num(c.samples)],
    ['target agreement', pct(c.target)],
    ['validation agreement (out-of-fold)', pct(c.validationAgreement)],
    ['expected MACs fraction', pct(c.expectedMacsFraction)],
    ['backbone MACs / params', `${num(m.backbone.macs)} / ${num(m.backbone.params)}`],
    ['folds / seed', `${c.folds} / ${c.seed}`],
    ['threshold rule', thresholdRuleText(m).rule],
    ['cost unit', c.costUnit],
    ['exits', String(m.exits.length)],
  ];
  if (ev) {
    summaryRows.push(
      ['eval samples', num(ev.samples)],
      ['eval agreement with backbone', pct(ev.agreement)],
      ['eval MACs fraction', pct(ev.macsFraction)],
      ['eval oracle MACs fraction', pct(ev.oracleMacsFraction)],
      ['eval top-1 (cascade / backbone)', `${pct(ev.accuracy)} / ${pct(ev.backboneAccuracy)}`],
    );
  }
  const exitRows = m.exits.map((e, i) => [
    e.name,
    e.cut,
    e.headKind,
    e.threshold.toFixed(4),
    pct(e.macsFraction),
    pct(e.expectedShare),
    ev ? pct(ev.exitShares[i]) : '–',
    ev ? pct(ev.exitAgreement[i]) : '–',
    num(e.headParams),
    num(e.headMacs),
  ]);
  const candRows = c.candidates.map((k) => [
    k.name,
    m.exits.some((e) => e.name === k.name) ? 'yes' : '',
    pct(k.agreement),
    k.meanScore.toFixed(3),
  ]);
  const timingRows = Object.entries(c.timings ?? {}).map(([k, v]) => [k, `${v.toFixed(2)} s`]);

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}h2{margin-top:1.6em}.note{background:#fff7e0;border-left:4px solid #e0a000;padding:6px 10px}
figure{margin:1em 0}
</style></head><body>
<h1>${esc(title)}</h1>
<p>Bundle written by ${esc(m.generator)} on ${esc(m.createdAt)}; input ${m.input.height}×${m.input.width}×${m.input.channels}, ${m.labels.length} classes.</p>
${(input.notes ?? []).map((n) => `<p class="note">${esc(n)}</p>`).join('\n')}
<h2>Summary</h2>
${table(['', 'value'], summaryRows)}
<h2>Where samples leave</h2>
<figure>${barChart(exitNames, shareSeries, { title: 'Share of samples leaving at each exit' })}</figure>
<h2>Agreement vs compute</h2>
<p>Each point is the cascade at one setting of ${esc(thresholdRuleText(m).knob)} (out-of-fold outputs of the calibration samples); re-choose a target with <code>selfxit eval --target</code>.</p>
<figure>${lineChart([{ name: 'calibration curve', color: '#4e79a7', points: curve }], {
    title: 'Agreement with the backbone vs MACs fraction',
    xLabel: 'MACs fraction of the backbone',
    yLabel: 'agreement with the backbone',
    hLine: { y: c.target, label: `target ${pct(c.target, 1)}` },
    markers,
    percent: true,
  })}</figure>
<h2>Exits</h2>
${table(['name', 'cut', 'head', 'threshold', 'MACs to decide', 'expected share', 'measured share', 'measured agreement', 'head params', 'head MACs'], exitRows)}
<h2>Candidate cuts</h2>
${table(['name', 'selected', 'head agreement (oof)', 'mean confidence'], candRows)}
${targetSection(input)}
${timingRows.length ? `<h2>Timings</h2>${table(['step', 'time'], timingRows)}` : ''}
</body></html>
`;
}

/**
 * Target → achieved agreement → MACs on the eval samples, for this bundle and the compared ones: one chart (measured
 * agreement vs MACs fraction, one line per bundle over its targets; dots: each bundle as shipped) and one table row per
 * bundle and target; plus the bundles as shipped. Empty without an evaluation.
 */
function targetSection(input: ReportInput): string {
  const ev = input.evaluation;
  if (!ev) return '';
  const bundles: ComparedBundle[] = [
    { label: input.label ?? 'this bundle', manifest: input.manifest, evaluation: ev },
    ...(input.compare ?? []),
  ];
  const withCurve = bundles.filter((b) => b.evaluation.targetCurve?.length);
  if (withCurve.length === 0 && bundles.length === 1) return '';
  const color = (i: number): string => COLORS[i % COLORS.length]!;
  const series: LineSeries[] = bundles.flatMap((b, i) =>
    b.evaluation.targetCurve?.length
      ? [
          {
            name: b.label,
            color: color(i),
            points: b.evaluation.targetCurve.map((t) => [t.macsFraction, t.agreement] as const),
          },
        ]
      : [],
  );
  const markers: Marker[] = bundles.map((b, i) => ({
    label: `${b.label} as shipped`,
    color: color(i),
    x: b.evaluation.macsFraction,
    y: b.evaluation.agreement,
  }));
  const targets = [...new Set(withCurve.flatMap((b) => b.evaluation.targetCurve!.map((t) => t.target)))];
  const curveRows = withCurve.flatMap((b) =>
    b.evaluation.targetCurve!.map((t) => [
      b.label,
      t.target.toFixed(3),
      pct(t.expectedAgreement),
      pct(t.agreement),
      t.agreement >= t.target ? 'yes' : `no (${((t.agreement - t.target) * 100).toFixed(2)} points)`,
      pct(t.accuracy),
      pct(t.expectedMacsFraction),
      pct(t.macsFraction),
      t.reached ? '' : 'target not reached on calibration: most agreeing point',
    ]),
  );
  const shippedRows = bundles.map((b) => [
    b.label,
    `${b.manifest.calibration.mode}, ${thresholdRuleText(b.manifest).rule.split(':')[0]}`,
    b.manifest.exits.map((e) => e.name).join(', ') || 'none',
    pct(b.evaluation.agreement),
    `${pct(b.evaluation.accuracy)} / ${pct(b.evaluation.backboneAccuracy)}`,
    pct(b.evaluation.macsFraction),
    pct(b.evaluation.oracleMacsFraction),
  ]);
  const same = bundles.every((b) => b.evaluation.samples === ev.samples);
  const parts = [
    '<h2>Agreement target → achieved agreement → MACs</h2>',
    `<p>Measured on ${num(ev.samples)} eval samples${same ? '' : ' (the compared bundles on their own counts, see the table)'}. For each target the thresholds are re-chosen from the bundle’s calibration curve, as <code>setTarget()</code> does; expected = calibration’s out-of-fold agreement and MACs fraction at that point, measured = on the eval samples.</p>`,
  ];
  if (series.length || markers.length) {
    parts.push(
      `<figure>${lineChart(series, {
        title: 'Measured agreement with the backbone vs MACs fraction, per target',
        xLabel: 'MACs fraction of the backbone (measured)',
        yLabel: 'agreement with the backbone (measured)',
        ...(targets.length === 1 ? { hLine: { y: targets[0]!, label: `target ${pct(targets[0]!, 1)}` } } : {}),
        markers,
        percent: true,
      })}</figure>`,
    );
  }
  if (curveRows.length)
    parts.push(
      `<div class="target-curve">${table(['bundle', 'target', 'expected agreement', 'measured agreement', 'target held', 'top-1', 'expected MACs', 'measured MACs', 'note'], curveRows)}</div>`,
    );
  if (bundles.length > 1)
    parts.push(
      '<h3>As shipped, on the same samples</h3>',
      `<div class="compared">${table(['bundle', 'mode, rule', 'exits', 'agreement', 'top-1 (cascade / backbone)', 'MACs fraction', 'oracle MACs fraction'], shippedRows)}</div>`,
    );
  return parts.join('\n');
}

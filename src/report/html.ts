// The calibration report: one self-contained HTML page (inline CSS + SVG, no scripts, no network)
// from a bundle manifest and, optionally, an evaluation result.
import type { BundleManifest } from '../bundle/manifest.js';
import type { EvaluationResult } from '../calibrate/evaluate.js';
import { barChart, esc, lineChart, type BarSeries, type Marker } from './svg.js';

/** Inputs of {@link renderReport}. */
export interface ReportInput {
  readonly manifest: BundleManifest;
  /** Measured on held-out samples (`selfxit eval`), shown beside the calibration estimates. */
  readonly evaluation?: EvaluationResult;
  /** Title override. Default "selfxit calibration report". */
  readonly title?: string;
  /** Free-form notes (warnings), one paragraph each. */
  readonly notes?: readonly string[];
}

const pct = (v: number | null | undefined, d = 2): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : `${(v * 100).toFixed(d)} %`);
const num = (v: number): string => (Number.isFinite(v) ? v.toLocaleString('en-US') : '–');

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
  const markers: Marker[] = [{ label: `chosen (target ${pct(c.target, 1)})`, color: '#4e79a7', x: c.expectedMacsFraction, y: c.validationAgreement }];
  if (ev) markers.push({ label: 'measured', color: '#f28e2b', x: ev.macsFraction, y: ev.agreement });

  const summaryRows: string[][] = [
    ['mode', c.mode],
    ['calibration samples', num(c.samples)],
    ['target agreement', pct(c.target)],
    ['validation agreement (out-of-fold)', pct(c.validationAgreement)],
    ['expected MACs fraction', pct(c.expectedMacsFraction)],
    ['backbone MACs / params', `${num(m.backbone.macs)} / ${num(m.backbone.params)}`],
    ['folds / seed', `${c.folds} / ${c.seed}`],
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
  const candRows = c.candidates.map((k) => [k.name, m.exits.some((e) => e.name === k.name) ? 'yes' : '', pct(k.agreement), k.meanScore.toFixed(3)]);
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
<p>Each point is the cascade at one setting of the global threshold (out-of-fold outputs of the calibration samples); re-choose a target with <code>selfxit eval --target</code>.</p>
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
${timingRows.length ? `<h2>Timings</h2>${table(['step', 'time'], timingRows)}` : ''}
</body></html>
`;
}

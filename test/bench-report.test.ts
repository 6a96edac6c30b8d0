// bench/report.mjs on a hand-made record (test/fixtures/bench-record.json): the verdicts of the latency, calibration
// and MACs goals (met / missed by how much), the breakdown of ratio − MACs fraction, the worst case's exit shares, and a record without the
// CIFAR models (no ../shared).
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';

interface Report {
  renderMarkdown(record: unknown, file: string): string;
  ratioBreakdown(
    r: unknown,
    worst: unknown,
  ): {
    gap: number;
    roundTrip: { share: number };
    workerOther: { share: number };
    segments: { share: number };
    exitOverhead: { share: number };
    rest: { share: number };
  };
}
// A plain-JS module: imported by URL so that the type-check does not look for its declarations.
const report = (await import(new URL('../bench/report.mjs', import.meta.url).href)) as Report;
// The bench record is loose JSON (bench/report.mjs is plain JS); the tests reach into it by field names.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- untyped JSON fixture
type Json = any;
const fixture = JSON.parse(fs.readFileSync(new URL('./fixtures/bench-record.json', import.meta.url), 'utf8')) as Record<
  string,
  Json
>;
const copy = (): Record<string, Json> => structuredClone(fixture);
const render = (record: unknown): string => report.renderMarkdown(record, 'bench/results/fixture.json');

/** The Markdown from the heading that starts with `heading` to the next `###` heading. */
function section(md: string, heading: string): string {
  const start = md.indexOf(`### ${heading}`);
  expect(start, `section "${heading}"`).toBeGreaterThanOrEqual(0);
  const next = md.indexOf('\n### ', start + 4);
  return md.slice(start, next < 0 ? undefined : next);
}

/** The table row of `text` whose first cell is `first`. */
function row(text: string, first: string): string {
  const line = text.split('\n').find((l) => l.startsWith(`| ${first} |`));
  expect(line, `row "${first}"`).toBeDefined();
  return line!;
}

describe('bench report verdicts', () => {
  const md = render(fixture);

  it('calibration goal: met criteria with their margins, beside the paper setup and max-softmax', () => {
    const s = section(md, 'Calibration goal at target 0.99');
    expect(row(s, 'test agreement')).toContain('| 98.84 % | met (0.14 points above) | 89.10 % | 99.01 % |');
    expect(row(s, 'top-1 vs backbone (83.40 %)')).toContain(
      '| −0.10 points (83.30 %) | met (0.20 points above) | −4.00 points |',
    );
    expect(row(s, 'MACs fraction')).toContain('| 0.750 | met (0.060 under) | 0.700 | 0.810 |');
    expect(row(s, '`prepare` time (10000 images)')).toContain('| 450 s | met (150 s under) |');
    expect(s).toContain(
      'selfxit analyze 3 s, features 201 s, heads 180 s, thresholds 11 s, final-heads 40 s, bundle 5 s',
    );
  });

  it('MACs goal: a missed MACs goal says by how much; a met one says so', () => {
    const s = section(md, 'MACs goal at target 0.99');
    expect(row(s, 'ResNet-56')).toContain('| 0.750 | MACs **missed by 0.030** |');
    expect(row(s, 'ResNet-20')).toContain('| 0.760 | met (MACs 0.020 under) |');
    // paper at 0.99 is its curve's re-chosen point, not its fixed-0.9 bundle
    expect(row(s, 'ResNet-56')).toContain('98.93 % agreement, top-1 −0.10 points, MACs 0.920');
  });

  it('verdicts follow the numbers: lower MACs meets the MACs goal, lower agreement misses the calibration goal', () => {
    const r = copy();
    r.curves.resnet56.selfxit.asShipped.macsFraction = 0.7;
    r.curves.resnet56.selfxit.asShipped.agreement = 0.985;
    const out = render(r);
    expect(row(section(out, 'MACs goal at target 0.99'), 'ResNet-56')).toContain('agreement **missed by 0.20 points**');
    expect(row(section(out, 'MACs goal at target 0.99'), 'ResNet-56')).not.toContain('MACs **missed');
    expect(row(section(out, 'Calibration goal at target 0.99'), 'test agreement')).toContain(
      '| 98.50 % | **missed by 0.20 points** |',
    );
    r.curves.resnet56.selfxit.asShipped.agreement = 0.99;
    expect(row(section(render(r), 'MACs goal at target 0.99'), 'ResNet-56')).toContain('met (MACs 0.020 under)');
  });

  it('latency ratio vs MACs fraction goal: ratio − MACs fraction, and where a missed difference goes', () => {
    const s = section(md, 'Latency ratio vs MACs fraction goal');
    expect(row(s, 'selfxit')).toContain('| 0.800 | 0.700 | 0.100 | **missed by 0.060** |');
    expect(row(s, 'selfxit+plan')).toContain('| 0.780 | 0.750 | 0.030 | met (0.010 under) |');
    expect(s).toContain('**Where the 0.100 goes** (selfxit, 1 thread)');
    expect(s).not.toContain('**Where the 0.030 goes**'); // met: no breakdown
    expect(row(s, 'page ↔ worker round trip (page mean − worker mean)')).toContain('| 0.40 | 0.30 | +0.048 |');
    expect(row(s, 'total')).toContain('| 3.20 | 2.80 | +0.100 |');
    expect(s).toContain('the rest is 0.16 ms per exit');
    expect(s).toContain('= 0.741 expected against the plain model, measured ratio 0.780');
    expect(s).toContain('it needs a MACs fraction ≤ 0.500');
    const r = fixture.results as Json[];
    const b = report.ratioBreakdown(
      r.find((x) => x.model === 'resnet56' && x.variant === 'selfxit'),
      r.find((x) => x.variant === 'worst-case'),
    );
    expect(b.roundTrip.share + b.workerOther.share + b.segments.share).toBeCloseTo(b.gap, 12);
    expect(b.exitOverhead.share + b.rest.share).toBeCloseTo(b.segments.share, 12);
  });

  it('names goals by what they measure, never by an issue number', () => {
    expect(md).not.toMatch(/issue/i);
    expect(md).toContain('### Latency goal at batch 1: ResNet-56, WASM, agreement ≥ 98.5 %');
    expect(md).toContain('### Latency ratio vs MACs fraction goal (ResNet-56, WASM, batch 1;');
    expect(md).toContain('### Calibration goal at target 0.99: ResNet-56 (calibrated on');
    expect(md).toContain('### MACs goal at target 0.99: stronger exits (');
  });

  it('the worst case is described as thresholds at exactly 1, with its exit shares', () => {
    expect(md).not.toContain('above 1');
    expect(md).toContain('every threshold at exactly 1');
    expect(section(md, 'Latency goal at batch 1')).toContain('full 99.8 % — **1 of 500 inputs still exited**');
    const r = copy();
    r.results.find((x: Json) => x.variant === 'worst-case').exitShares = [0, 0, 1];
    expect(section(render(r), 'Latency goal at batch 1')).toContain('no input exited (of 500)');
  });

  it('renders a record without the CIFAR models, and never changes the record', () => {
    const r = copy();
    r.models = r.models.filter((m: Json) => m.key === 'fashion');
    r.results = r.results.filter((x: Json) => x.model === 'fashion');
    r.curves = { fashion: r.curves.resnet20 }; // a fashion-only bench still measures the shipped model's curves
    const out = render(r);
    expect(out).toContain('### Fashion-MNIST ResNet');
    expect(out).toContain('#### Fashion-MNIST ResNet (shipped, public/models/fashion-resnet) — 5000 test images');
    delete r.curves;
    expect(render(r)).toContain('ResNet-56 is not in this record');
    expect(out).toContain('ResNet-56 is not in this record');
    for (const goal of ['Latency goal', 'Latency ratio vs MACs', 'Calibration goal', 'MACs goal'])
      expect(out).not.toContain(`### ${goal}`);
    const before = JSON.stringify(fixture);
    render(fixture);
    expect(JSON.stringify(fixture)).toBe(before);
  });
});

// bench/report.mjs on a hand-made record (test/fixtures/bench-record.json): the verdicts of the compiled-cascade, latency,
// calibration and MACs goals (met / missed by how much), the breakdown of ratio − MACs fraction (and per call part), the
// worst case's exit shares, the int8 light set, and a record without the CIFAR models (no ../shared).
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
  exitBreakdown(r: unknown): {
    runRatio: number;
    runExcess: number;
    groups: { name: string; calls: number; runExcess: number }[];
  } | null;
}
// A plain-JS module: imported by URL so that the type-check does not look for its declarations.
const report = (await import(new URL('../bench/report.mjs', import.meta.url).href)) as Report;
const engines = (await import(new URL('../bench/report-engines.mjs', import.meta.url).href)) as {
  gapParts(r: unknown): { gap: number; messages: number; worker: number; runs: number; unaccounted: number } | null;
};
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

  it('prices the exits with the worst case that read them: same engine, live pruning off when the record has one', () => {
    const r = copy();
    const worst = r.results.find((x: Json) => x.variant === 'worst-case');
    Object.assign(worst, { pruneExits: true, prunedAtEnd: [0, 1] });
    // the same bundle with pruning off: every exit read, its last segment 0.25 ms slower per image
    const stages = worst.stages.map((g: Json, i: number) => ({ ...g, meanMs: g.meanMs + (i === 2 ? 0.25 : 0) }));
    r.results.push({
      ...structuredClone(worst),
      variant: 'worst-case-noprune',
      pruneExits: false,
      prunedAtEnd: [],
      stages,
    });
    const out = render(r);
    const s = section(out, 'Latency ratio vs MACs fraction goal');
    expect(s).toContain('(worst-case-noprune, same threads and engine)');
    expect(s).toContain('the rest is 0.29 ms per exit'); // (4.15 − 1.02 × 3.5) / 2 exits
    expect(s).toContain('all 2 exits read');
    expect(section(out, 'Latency goal at batch 1')).toContain(
      'Live pruning had turned every exit off here, so this does not price the exits',
    );
    // the path towards a lower ratio reasons with the same worst case (at a MACs fraction below that ratio)
    r.results.find((x: Json) => x.model === 'resnet56' && x.variant === 'selfxit').macsFraction = 0.5;
    expect(render(r)).toMatch(/\*\*Towards a ratio ≤ [^\n]*At today's MACs fraction it needs the gap ≤ 0\.100[:,]/);
    // without the no-pruning run, the pruned one is what there is, and the line says that its pruned exits were not read
    r.results.pop();
    expect(section(render(r), 'Latency ratio vs MACs fraction goal')).toContain(
      '(worst-case, same threads and engine)',
    );
  });

  it('by exit: with per-call exits and onnxruntime times, each exit group against the full model on the same images', () => {
    const r = copy();
    const side = r.results.find((x: Json) => x.model === 'resnet56' && x.variant === 'selfxit');
    expect(report.exitBreakdown(side)).toBeNull(); // no per-call data in the fixture
    expect(render(r)).not.toContain('- By exit (');
    Object.assign(side, {
      exitMacsFractions: [0.3, 0.6],
      callMs: {
        early: [1, 2, 3, 3],
        full: [3, 3, 3, 3],
        exits: [0, 1, 2, 2],
        earlyRun: [0.8, 1.7, 2.9, 2.9],
        fullRun: [2.8, 2.8, 2.8, 2.8],
      },
    });
    const x = report.exitBreakdown(side)!;
    expect(x.groups.map((g) => [g.name, g.calls])).toEqual([
      ['stage1.block4', 1],
      ['stage2.block6', 1],
      ['no exit', 2],
    ]);
    // the groups' excesses add up to the onnxruntime ratio less the calls' mean MACs fraction
    expect(x.runRatio).toBeCloseTo(2.075 / 2.8, 12);
    expect(x.runExcess).toBeCloseTo(x.runRatio - (0.3 + 0.6 + 1 + 1) / 4, 12);
    expect(x.groups[2]!.runExcess).toBeCloseTo((2 * (2.9 - 2.8)) / 4 / 2.8, 12);
    const s = section(render(r), 'Latency ratio vs MACs fraction goal');
    expect(s).toContain('stage1.block4 0.286 (0.300, 1), stage2.block6 0.607 (0.600, 1), no exit 1.036 (1.000, 2)');
    expect(s).toContain('+0.016 of the ratio, +0.018 of it from the calls that took no exit');
    // a record whose arrays do not match is not broken down
    side.callMs.exits.pop();
    expect(report.exitBreakdown(side)).toBeNull();
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

  it('says how the sides took turns: image by image, or in blocks with their size and pause', () => {
    expect(md).toContain('interleaved image by image in ABBA order');
    const r = copy();
    for (const x of r.results) if (x.config) Object.assign(x.config, { interleave: 'block', block: 10, pauseMs: 20 });
    const out = render(r);
    expect(out).toContain('interleaved in blocks: each side 10 consecutive calls, then 20 ms idle');
    expect(out).not.toContain('image by image in ABBA order');
    // a record of batches only says so too
    for (const x of r.results) if (x.config) x.config.batch = 32;
    expect(render(r)).toContain('interleaved in blocks: each side 10 consecutive calls');
  });

  it('shared memory vs by message: the pair of the same loop, its ratio and the ms per call saved', () => {
    expect(md).not.toContain('through shared memory vs by message');
    const r = copy();
    const shared = r.results.find((x: Json) => x.model === 'resnet56' && x.variant === 'selfxit');
    shared.transport = 'shared-memory';
    const message = structuredClone(shared);
    Object.assign(message, {
      variant: 'selfxit-message',
      transport: 'message',
      early: { mean: 3.6, p50: 3.4, p95: 5.2 },
      ratio: { mean: 0.9, p50: 0.872, p95: 1.156 },
    });
    r.results.push(message);
    const out = render(r);
    expect(out).toContain('### classify() through shared memory vs by message');
    // 3.2 / 3.6 = 0.889; 3.6 − 3.2 = 0.400 ms saved; a batch's pair is its own row, never paired across batches
    expect(out).toContain(
      '| ResNet-56 | 1 | 1 | shared-memory / message | 0.800 / 0.769 | 0.900 / 0.872 | 0.889 | 0.400 |',
    );
    const batch = (x: Json, ms: number): Json => ({
      ...structuredClone(x),
      config: { ...x.config, batch: 32 },
      early: { mean: ms, p50: ms, p95: ms },
    });
    r.results.push(batch(shared, 2), batch(message, 2.5));
    const both = render(r);
    expect(both).toContain(
      '| ResNet-56 | 1 | 32 | shared-memory / message | 0.800 / 0.769 | 0.900 / 0.872 | 0.800 | 0.500 |',
    );
    expect(both).toContain(
      '| ResNet-56 | 1 | 1 | shared-memory / message | 0.800 / 0.769 | 0.900 / 0.872 | 0.889 | 0.400 |',
    );
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

describe('compiled cascade goals and the per-call breakdown', () => {
  /** The fixture plus engine rows: `over` patches by `${model} ${variant} t${threads} b${batch}`. */
  function withEngines(over: Record<string, Record<string, unknown>> = {}): Record<string, Json> {
    const r = copy();
    const base = r.results.find((x: Json) => x.model === 'resnet56' && x.variant === 'selfxit');
    const make = (
      model: string,
      variant: string,
      threads: number,
      batch: number,
      ratio: number,
      macs: number,
    ): Json => {
      const row = structuredClone(base);
      Object.assign(row, { model, variant, threads, macsFraction: macs, config: { ...row.config, batch } });
      row.ratio = { ...row.ratio, mean: ratio };
      row.early = { ...row.early, mean: ratio * row.full.mean };
      return Object.assign(row, over[`${model} ${variant} t${threads} b${batch}`] ?? {});
    };
    r.results.push(
      make('resnet56', 'selfxit-stages', 1, 1, 0.85, 0.7),
      make('resnet56', 'worst-case-stages', 1, 1, 1.2, 1.02),
      make('resnet56', 'selfxit', 1, 32, 0.74, 0.7),
      make('resnet56', 'selfxit-stages', 1, 32, 0.81, 0.7),
      make('resnet20', 'selfxit', 1, 1, 0.88, 0.86),
      make('resnet20', 'selfxit-stages', 1, 1, 0.95, 0.86),
    );
    return r;
  }

  it('a met goal says by how much it is under; a missed one by how much it misses; the stage engine beside it', () => {
    const s = section(render(withEngines()), 'Compiled cascade goals');
    expect(s).toContain('| ResNet-56 | 1 | 1 | ratio ≤ MACs 0.700 + 0.03 | 0.800 | **missed by 0.070** | 0.850 |');
    expect(s).toContain('| ResNet-56 | 1 | 1 | worst case ≤ 1.03 | 1.150 | **missed by 0.120** | 1.200 |');
    expect(s).toContain(
      '| ResNet-56 | 1 | 32 | ratio per image ≤ MACs 0.700 + 0.05 | 0.740 | met (0.010 under) | 0.810 |',
    );
    // a record from before the batch model: batches ran stage by stage, one engine
    const old = withEngines({ 'resnet56 selfxit t1 b32': { engine: 'stages' } });
    old.results = old.results.filter((x: Json) => !(x.variant === 'selfxit-stages' && x.config.batch === 32));
    expect(section(render(old), 'Compiled cascade goals')).toContain(
      '| ResNet-56 | 1 | 32 | ratio per image ≤ MACs 0.700 + 0.05 | 0.740 | met (0.010 under) | (batches: stage engine) |',
    );
    expect(s).toContain('| ResNet-20 | 1 | 1 | ratio ≤ MACs 0.860 + 0.03 | 0.880 | met (0.010 under) | 0.950 |');
    expect(s).toContain('| ResNet-20 | 1 | 1 | ratio ≤ 0.90 | 0.880 | met (0.020 under) | 0.950 |');
    const slow = section(render(withEngines({ 'resnet20 selfxit t1 b1': { ratio: { mean: 0.93 } } })), 'Compiled');
    expect(slow).toContain('| ResNet-20 | 1 | 1 | ratio ≤ MACs 0.860 + 0.03 | 0.930 | **missed by 0.040** |');
    expect(slow).toContain('| ResNet-20 | 1 | 1 | ratio ≤ 0.90 | 0.930 | **missed by 0.030** |');
    expect(s).toContain(
      '| Fashion-MNIST (shipped) | 1 | 1 | ratio ≤ MACs 0.550 + 0.05 | 0.625 | **missed by 0.025** |',
    );
  });

  it("a missed ratio says where its excess over MACs goes, from the calls' profile; the parts add up", () => {
    // full model: page 4.0 = round trip 0.4 + worker rest 0.3 + run 3.3; compiled: page 3.2
    const breakdown = {
      calls: 500,
      pageMs: 3.2,
      toWorkerMs: 0.25,
      preprocessMs: 0.1,
      queueMs: 0.02,
      runMs: 2.6,
      runs: 1,
      readbackMs: 0.01,
      decisionMs: 0.02,
      replyMs: 0.05,
      fromWorkerMs: 0.15,
    };
    const fullBreakdown = { pageMs: 4, roundTripMs: 0.4, workerOtherMs: 0.3, runMs: 3.3 };
    const r = withEngines({ 'resnet56 selfxit-stages t1 b1': { breakdown: { ...breakdown, runs: 3 }, fullBreakdown } });
    const row = r.results.find((x: Json) => x.model === 'resnet56' && x.variant === 'selfxit');
    Object.assign(row, { breakdown, fullBreakdown });
    const g = engines.gapParts(row)!;
    expect(g.messages).toBeCloseTo((0.4 - 0.7 * 0.4) / 4, 12);
    expect(g.worker).toBeCloseTo((0.2 - 0.7 * 0.3) / 4, 12);
    expect(g.runs).toBeCloseTo((2.6 - 0.7 * 3.3) / 4, 12);
    expect(g.messages + g.worker + g.runs + g.unaccounted).toBeCloseTo(0.1, 12);
    const md = render(r);
    expect(section(md, 'Compiled cascade goals')).toContain(
      '- ResNet-56, selfxit, 1 thread: ratio − MACs +0.100 = messages page ↔ worker +0.030, worker outside onnxruntime −0.002, onnxruntime runs +0.073.',
    );
    const b = section(md, 'Where one classify() goes');
    expect(b).toContain(
      '| resnet56 | selfxit (–) | 1 | 3.20 | 0.250 | 0.100 | 0.020 | 2.60 (1.00) | 0.010 | 0.020 | 0.050 | 0.150 | 4.00 / 0.400 / 0.300 / 3.30 |',
    );
    expect(b).toContain('| resnet56 | selfxit-stages (–) | 1 | 3.20 | 0.250 | 0.100 | 0.020 | 2.60 (3.00) |');
    expect(engines.gapParts(r.results.find((x: Json) => x.variant === 'paper'))).toBeNull();
  });

  it('the int8 light set: its rows, a bundle without exits said so, a model whose prepare failed left out with why', () => {
    const r = withEngines();
    r.models.push({ key: 'resnet56-qdq', title: 'ResNet-56 int8 QDQ', light: true, exits: [], images: 200 });
    const row = structuredClone(r.results.find((x: Json) => x.model === 'resnet56' && x.variant === 'selfxit'));
    r.results.push(Object.assign(row, { model: 'resnet56-qdq', macsFraction: 1, exitShares: [1] }));
    r.skipped = [{ key: 'resnet56-qop', title: 'ResNet-56 int8 QOperator', reason: 'prepare failed: no cut' }];
    const s = section(render(r), 'int8 ResNet-56');
    expect(s).toContain('**ResNet-56 int8 QDQ**: **prepare gave no exits**');
    expect(s).toContain('| 1 | 500 | 0.800 | 1.000 | −0.200 | 98.80 % | 100 % |');
    expect(s).toContain('- ResNet-56 int8 QOperator: left out — prepare failed: no cut');
    expect(render(copy())).not.toContain('### int8');
  });
});

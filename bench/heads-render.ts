// The Markdown block of the heads study (`bench:heads:<model>` in BENCHMARKS.md), rendered from one or more study
// records (bench/results/heads-<model>-<date>.json), so results of separate runs can share one table and every row
// still names the command that measured it.
import type { PrepareOptions } from '../src/core.js';

/** `prepare`'s threshold rule ('global' | 'cost-calibrated'). */
type ThresholdRule = NonNullable<PrepareOptions['thresholdRule']>;

/** One measured combination: heads variant x threshold rule x target. */
export interface StudyRow {
  readonly heads: string;
  readonly rule: ThresholdRule;
  readonly target: number;
  /** Selected candidate indices. */
  readonly exits: number[];
  readonly validationAgreement: number;
  readonly testAgreement: number;
  /** Cascade top-1 − backbone top-1 on test, in points. */
  readonly top1VsBackbonePoints: number;
  readonly testMacsFraction: number;
  /**
   * Hindsight frontier on test (runs from 2026-12-07 on): the cheapest knob of the rule, on the selected exits and their
   * score maps, whose agreement ON TEST meets the target — the heads' quality without threshold noise; not deployable.
   */
  readonly testFrontierMacs?: number;
  readonly headTrainingSeconds: number;
}

/** What one study run writes to bench/results. */
export interface StudyRecord {
  readonly date: string;
  readonly command: string;
  readonly model: string;
  /** Wall time of the run (absent in records written before it was kept). */
  readonly seconds?: number;
  readonly calibSamples: number;
  readonly testSamples: number;
  readonly candidates: readonly { index: number; tensor: string; macsFraction: number }[];
  readonly rows: readonly StudyRow[];
}

const count = (x: number): string => x.toLocaleString('en-US');

/** The block body for records of one model (same candidates and sample counts); `files[i]` is record i's raw data. */
export function renderHeadsBlock(records: readonly StudyRecord[], files: readonly string[]): string {
  const first = records[0];
  if (!first) throw new Error('renderHeadsBlock: no records');
  for (const r of records) {
    const same =
      r.model === first.model &&
      r.calibSamples === first.calibSamples &&
      r.testSamples === first.testSamples &&
      JSON.stringify(r.candidates) === JSON.stringify(first.candidates);
    if (!same)
      throw new Error(
        `renderHeadsBlock: record of ${r.date} (${r.model}) does not match ${first.date} (${first.model}): model, samples or candidates differ`,
      );
  }
  const runs = records.map(
    (r, i) =>
      `${r.date.slice(0, 10)}: \`${r.command}\`${r.seconds === undefined ? '' : ` (${r.seconds.toFixed(0)} s)`}, raw data \`${files[i]}\``,
  );
  return [
    `### Head study, CIFAR-10 ${first.model} (calibrated on ${count(first.calibSamples)} calib images, measured on ${count(first.testSamples)} test images)`,
    '',
    records.length === 1
      ? `Run of ${runs[0]}.`
      : `Runs (rows in this order):\n\n${runs.map((r) => `- ${r}`).join('\n')}`,
    '',
    `Candidates: ${first.candidates.map((c) => `${c.index} = ${c.tensor} (${(100 * c.macsFraction).toFixed(0)} %)`).join('; ')}.`,
    '',
    '| heads | threshold rule | target | exits | validation agreement | test agreement | top-1 vs backbone (points) | test MACs fraction | head training |',
    '|---|---|---:|---|---:|---:|---:|---:|---:|',
    ...records.flatMap((rec) =>
      rec.rows.map(
        (r) =>
          `| ${r.heads} | ${r.rule} | ${r.target} | ${r.exits.join(',')} | ${(100 * r.validationAgreement).toFixed(2)} % | ${(100 * r.testAgreement).toFixed(2)} % | ${r.top1VsBackbonePoints.toFixed(2)} | ${r.testMacsFraction.toFixed(3)}${r.testFrontierMacs === undefined ? '' : ` [${r.testFrontierMacs.toFixed(3)}]`} | ${r.headTrainingSeconds.toFixed(0)} s |`,
      ),
    ),
  ].join('\n');
}

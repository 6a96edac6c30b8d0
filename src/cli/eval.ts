// `selfxit eval <bundle> --samples …`: runs the bundle as the runtime does (cascade with batch shrinking) against
// the full backbone and reports agreement, accuracy, exit shares and MACs (text or one JSON object).
import { SelfxitError } from '../errors.js';
import type { BundleFiles } from '../bundle/manifest.js';
import { evaluateBundle, type EvaluationResult } from '../calibrate/evaluate.js';
import { chooseSamples, type SampleBatch } from '../calibrate/samples.js';
import { parseCommandArgs, requireOption } from './args.js';
import { readBundleDir } from './bundle-fs.js';
import type { CliCommand, CliIo } from './dispatch.js';
import { parseShape, readLabelFile } from './images.js';
import { openSampleSources } from './sample-sources.js';
import { loadOrtNode } from './node-io.js';
import { CLI_SESSION_OPTIONS, numberList, numberOption } from './prepare.js';

const help = `Usage: selfxit eval <bundle dir> --samples <folder|file.u8> [options]

Runs the bundle exactly as the runtime does (segment by segment, leaving at the first exit whose
confidence passes its threshold, batch shrinking), the full backbone (backbone.onnx), and every
exit head without exiting (for the oracle). Reports agreement with the backbone, accuracy, the share
of samples leaving at each exit and the MACs fraction.

Options:
  --samples <path>     test images: a folder of PNG/JPEG (resized to the bundle's input), or a raw
                       uint8 NHWC file of the bundle's input size; may be given more than once
                       (checked first, then concatenated in order, as prepare's)
  --shape H,W,C        optional check: raw samples must be the bundle's input size, so a value
                       other than it is refused (INVALID_SAMPLES)
  --labels-file <f>    true classes: one byte per sample (e.g. test-labels.u8) or one index/name per
                       line, for all --samples in the order given
  --limit N            evaluate N samples, after a seeded shuffle (--seed, default 0)
  --seed N             seed of that shuffle
  --target T           re-choose thresholds for agreement target T from the bundle's calibration curve
  --targets a,b,…      also measure these agreement targets (thresholds re-chosen from the curve as
                       setTarget() does; one pass, replayed): targetCurve in --json, a table otherwise
  --batch-size N       rows per cascade call (default 256)
  --json               print exactly one JSON object: samples, agreement, accuracy, backboneAccuracy,
                       macsFraction, oracleMacsFraction, exitShares, exitAgreement, exitNames, thresholds, …
  -h, --help           show this help
`;

const options = {
  samples: { type: 'string', multiple: true },
  shape: { type: 'string' },
  'labels-file': { type: 'string' },
  limit: { type: 'string' },
  seed: { type: 'string' },
  target: { type: 'string' },
  targets: { type: 'string' },
  'batch-size': { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** Loaded eval inputs: samples of one or more sources (concatenated in order; shuffled + limited when --limit) and
 * aligned labels. */
export async function loadEvalSamples(
  bundle: BundleFiles,
  samplesPaths: string | readonly string[],
  opts: { shape?: string; labelsFile?: string; limit?: number; seed?: number },
): Promise<{ samples: SampleBatch; labels?: Int32Array }> {
  const inp = bundle.manifest.input;
  const shape = { height: inp.height, width: inp.width, channels: inp.channels };
  if (opts.shape) {
    const s = parseShape(opts.shape);
    if (s.height !== shape.height || s.width !== shape.width || s.channels !== shape.channels) {
      throw new SelfxitError(
        'INVALID_SAMPLES',
        `--shape ${opts.shape} does not match the bundle input ${shape.height},${shape.width},${shape.channels}`,
      );
    }
  }
  const source = await openSampleSources(typeof samplesPaths === 'string' ? [samplesPaths] : samplesPaths, shape);
  const labelsAll = opts.labelsFile
    ? await readLabelFile(opts.labelsFile, source.count, bundle.manifest.labels)
    : undefined;
  // With --limit only the images the seeded shuffle keeps are read (the same ones as shuffling all of them).
  const indices =
    opts.limit === undefined || opts.limit >= source.count
      ? Int32Array.from({ length: source.count }, (_, i) => i)
      : chooseSamples(source.count, opts.seed ?? 0, opts.limit);
  const samples: SampleBatch = { data: await source.read(indices), count: indices.length };
  return { samples, ...(labelsAll ? { labels: Int32Array.from(indices, (i) => labelsAll[i]!) } : {}) };
}

/** An integer option >= `min` (UsageError when not a number, INVALID_ARGUMENT when out of range). */
export function integerOption(v: string | undefined, flag: string, min: number): number | undefined {
  const x = numberOption(v, flag);
  if (x !== undefined && !(Number.isInteger(x) && x >= min)) {
    throw new SelfxitError(
      'INVALID_ARGUMENT',
      `${flag} must be an integer${min > -Infinity ? ` >= ${min}` : ''}, got ${v}`,
      { [flag]: v },
    );
  }
  return x;
}

const pct = (v: number | null): string => (v === null || !Number.isFinite(v) ? '–' : `${(v * 100).toFixed(2)} %`);

/** Human-readable evaluation summary. */
export function formatEvaluation(r: EvaluationResult): string {
  const lines = [
    `samples: ${r.samples}`,
    `agreement with backbone: ${pct(r.agreement)}`,
    `top-1: cascade ${pct(r.accuracy)}, backbone ${pct(r.backboneAccuracy)}`,
    `MACs fraction: ${pct(r.macsFraction)} (oracle ${pct(r.oracleMacsFraction)})`,
    'exits:',
    ...r.exitNames.map(
      (n, i) =>
        `  ${n.padEnd(14)} threshold ${r.thresholds[i]!.toFixed(4)}  share ${pct(r.exitShares[i]!)}  agreement ${pct(r.exitAgreement[i]!)}`,
    ),
    `  ${'backbone'.padEnd(14)} ${''.padEnd(16)}  share ${pct(r.exitShares[r.exitShares.length - 1]!)}`,
    `time: cascade ${(r.timingsMs.cascade / 1000).toFixed(2)} s, full backbone ${(r.timingsMs.backbone / 1000).toFixed(2)} s, all heads ${(r.timingsMs.allHeads / 1000).toFixed(2)} s`,
  ];
  if (r.targetCurve?.length) {
    lines.push(
      'targets (thresholds re-chosen from the calibration curve):',
      '  target  expected agr  measured agr  top-1    MACs',
    );
    for (const t of r.targetCurve) {
      lines.push(
        `  ${t.target.toFixed(3).padEnd(7)} ${pct(t.expectedAgreement).padStart(12)}  ${pct(t.agreement).padStart(12)}  ${pct(t.accuracy).padStart(7)}  ${pct(t.macsFraction).padStart(7)}${t.reached ? '' : '  (not reached)'}`,
      );
    }
  }
  if (r.replayMismatches > 0)
    lines.push(
      `note: ${r.replayMismatches} samples decided differently by the cascade and by the all-heads replay (float rounding near a threshold)`,
    );
  return `${lines.join('\n')}\n`;
}

export const evalCommand: CliCommand = {
  name: 'eval',
  summary: 'measure a bundle: agreement with the backbone, accuracy, exit shares, MACs',
  help,
  async run(argv: readonly string[], io: CliIo) {
    const { values: v, positionals } = parseCommandArgs(argv, options, { min: 1, max: 1, names: '<bundle dir>' });
    const limit = integerOption(v.limit, '--limit', 1);
    const seed = integerOption(v.seed, '--seed', -Infinity);
    const batchSize = integerOption(v['batch-size'], '--batch-size', 1);
    const bundle = await readBundleDir(positionals[0]!);
    if (!v.samples?.length) requireOption(undefined, '--samples');
    const { samples, labels } = await loadEvalSamples(bundle, v.samples!, {
      ...(v.shape ? { shape: v.shape } : {}),
      ...(v['labels-file'] ? { labelsFile: v['labels-file'] } : {}),
      ...(limit !== undefined ? { limit } : {}),
      ...(seed !== undefined ? { seed } : {}),
    });
    const target = numberOption(v.target, '--target');
    if (target !== undefined && !(target > 0 && target <= 1))
      throw new SelfxitError('INVALID_TARGET', `--target must be in (0, 1], got ${target}`);
    const targets = numberList(v.targets, '--targets');
    for (const t of targets ?? [])
      if (!(t > 0 && t <= 1)) throw new SelfxitError('INVALID_TARGET', `--targets values must be in (0, 1], got ${t}`);
    const result = await evaluateBundle({
      bundle,
      samples,
      ort: await loadOrtNode(),
      sessionOptions: CLI_SESSION_OPTIONS,
      ...(labels ? { labels } : {}),
      ...(target !== undefined ? { target } : {}),
      ...(targets ? { targets } : {}),
      ...(batchSize !== undefined ? { batchSize } : {}),
    });
    io.stdout(v.json ? `${JSON.stringify(result)}\n` : formatEvaluation(result));
    return 0;
  },
};

// `selfxit report <bundle>`: writes a self-contained HTML report (inline SVG) of a bundle's calibration, and of a
// measurement on test samples when --samples is given: with --targets, the measured target → achieved agreement → MACs
// curve; with --compare, other bundles measured on the same samples beside it.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SelfxitError } from '../errors.js';
import { evaluateBundle, type EvaluationResult } from '../calibrate/evaluate.js';
import { renderReport, type ComparedBundle } from '../report/html.js';
import type { BundleFiles } from '../bundle/manifest.js';
import { parseCommandArgs } from './args.js';
import { readBundleDir } from './bundle-fs.js';
import { UsageError, type CliCommand, type CliIo } from './dispatch.js';
import { integerOption, loadEvalSamples } from './eval.js';
import { loadOrtNode } from './node-io.js';
import { CLI_SESSION_OPTIONS, numberList } from './prepare.js';

const help = `Usage: selfxit report <bundle dir> [--samples <folder|file.u8> [--labels-file f] [--limit N]
                     [--targets t1,t2,…] [--compare <bundle dir> …]] [--out report.html]

Writes an HTML page (no scripts, no network): calibration summary, exit shares, the agreement vs
MACs-fraction curve over the threshold knob, exits and candidate cuts, step timings. With --samples it
also runs \`selfxit eval\` on them and plots the measured shares and operating point.

Options:
  --samples <path>     test images to measure on (folder or raw uint8 NHWC file); may be given more
                       than once (concatenated in order, as eval's)
  --labels-file <f>    their true classes (for accuracy)
  --limit N            measure N samples after a seeded shuffle (--seed, default 0)
  --seed N             seed of that shuffle
  --targets a,b,…      also measure these agreement targets (thresholds re-chosen from the curve, as
                       setTarget() does): a chart and a table of target → achieved agreement → MACs
  --compare <dir>      another bundle to measure on the same samples (e.g. the max-softmax or paper
                       variant of the same model): overlaid on the target chart and compared as
                       shipped; repeat it or give a comma list (needs --samples)
  --out <file>         output file (default <bundle dir>/report.html)
  -h, --help           show this help
`;

/** A bundle's name in comparisons: its folder's name. */
function bundleLabel(dir: string): string {
  return path.basename(path.resolve(dir));
}

export const reportCommand: CliCommand = {
  name: 'report',
  summary: 'write an HTML report of a bundle (optionally measured on test samples)',
  help,
  async run(argv: readonly string[], io: CliIo) {
    const { values: v, positionals } = parseCommandArgs(
      argv,
      {
        samples: { type: 'string', multiple: true },
        'labels-file': { type: 'string' },
        limit: { type: 'string' },
        seed: { type: 'string' },
        targets: { type: 'string' },
        compare: { type: 'string', multiple: true },
        out: { type: 'string' },
      },
      { min: 1, max: 1, names: '<bundle dir>' },
    );
    const dir = positionals[0]!;
    // whole numbers, as eval's, refused before any work
    const limit = integerOption(v.limit, '--limit', 1);
    const seed = integerOption(v.seed, '--seed', -Infinity);
    const targets = numberList(v.targets, '--targets');
    for (const t of targets ?? [])
      if (!(t > 0 && t <= 1)) throw new SelfxitError('INVALID_TARGET', `--targets values must be in (0, 1], got ${t}`);
    // parseArgs gives an array for a `multiple` option (the typed helper does not know).
    const compareDirs = ((v.compare as unknown as string[] | undefined) ?? [])
      .flatMap((c) => c.split(','))
      .map((c) => c.trim())
      .filter(Boolean);
    const samplePaths = v.samples ?? [];
    if (!samplePaths.length && (targets || compareDirs.length))
      throw new UsageError(`${targets ? '--targets' : '--compare'} needs --samples (the images to measure on)`);
    const bundle = await readBundleDir(dir);
    // Folder names, or the paths as given when two folders share a name.
    const names = [dir, ...compareDirs].map(bundleLabel);
    const labelOf = (d: string): string => (new Set(names).size === names.length ? bundleLabel(d) : d);
    const compared = await Promise.all(compareDirs.map(async (d) => ({ dir: d, bundle: await readBundleDir(d) })));
    let evaluation: EvaluationResult | undefined;
    const compare: ComparedBundle[] = [];
    if (samplePaths.length) {
      const ort = await loadOrtNode();
      const measure = async (b: BundleFiles): Promise<EvaluationResult> => {
        const { samples, labels } = await loadEvalSamples(b, samplePaths, {
          ...(v['labels-file'] ? { labelsFile: v['labels-file'] } : {}),
          ...(limit !== undefined ? { limit } : {}),
          ...(seed !== undefined ? { seed } : {}),
        });
        return evaluateBundle({
          bundle: b,
          samples,
          ort,
          sessionOptions: CLI_SESSION_OPTIONS,
          ...(labels ? { labels } : {}),
          ...(targets ? { targets } : {}),
        });
      };
      evaluation = await measure(bundle);
      for (const c of compared)
        compare.push({ label: labelOf(c.dir), manifest: c.bundle.manifest, evaluation: await measure(c.bundle) });
    }
    const out = v.out ?? path.join(dir, 'report.html');
    const html = renderReport({
      manifest: bundle.manifest,
      ...(evaluation ? { evaluation } : {}),
      ...(compare.length ? { compare, label: labelOf(dir) } : {}),
    });
    try {
      await fs.writeFile(out, html);
    } catch (e) {
      throw new SelfxitError('IO_ERROR', `Cannot write "${out}": ${(e as Error).message}`, { path: out }, { cause: e });
    }
    io.stdout(`report: ${out}\n`);
    return 0;
  },
};

// `selfxit report <bundle>`: writes a self-contained HTML report (inline SVG) of a bundle's calibration, and of a
// measurement on test samples when --samples is given.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SelfxitError } from '../errors.js';
import { evaluateBundle } from '../calibrate/evaluate.js';
import { renderReport } from '../report/html.js';
import { parseCommandArgs } from './args.js';
import { readBundleDir } from './bundle-fs.js';
import type { CliCommand, CliIo } from './dispatch.js';
import { loadEvalSamples } from './eval.js';
import { loadOrtNode } from './node-io.js';
import { CLI_SESSION_OPTIONS, numberOption } from './prepare.js';

const help = `Usage: selfxit report <bundle dir> [--samples <folder|file.u8> [--labels-file f] [--limit N]] [--out report.html]

Writes an HTML page (no scripts, no network): calibration summary, exit shares, the agreement vs
MACs-fraction curve over the threshold, exits and candidate cuts, step timings. With --samples it
also runs \`selfxit eval\` on them and plots the measured shares and operating point.

Options:
  --samples <path>     test images to measure on (folder or raw uint8 NHWC file)
  --labels-file <f>    their true classes (for accuracy)
  --limit N            measure N samples after a seeded shuffle (--seed, default 0)
  --seed N             seed of that shuffle
  --out <file>         output file (default <bundle dir>/report.html)
  -h, --help           show this help
`;

export const reportCommand: CliCommand = {
  name: 'report',
  summary: 'write an HTML report of a bundle (optionally measured on test samples)',
  help,
  async run(argv: readonly string[], io: CliIo) {
    const { values: v, positionals } = parseCommandArgs(
      argv,
      { samples: { type: 'string' }, 'labels-file': { type: 'string' }, limit: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' } },
      { min: 1, max: 1, names: '<bundle dir>' },
    );
    const dir = positionals[0]!;
    const bundle = await readBundleDir(dir);
    let evaluation;
    if (v.samples) {
      const { samples, labels } = await loadEvalSamples(bundle, v.samples, {
        ...(v['labels-file'] ? { labelsFile: v['labels-file'] } : {}),
        ...(v.limit !== undefined ? { limit: numberOption(v.limit, '--limit')! } : {}),
        ...(v.seed !== undefined ? { seed: numberOption(v.seed, '--seed')! } : {}),
      });
      evaluation = await evaluateBundle({ bundle, samples, ort: await loadOrtNode(), sessionOptions: CLI_SESSION_OPTIONS, ...(labels ? { labels } : {}) });
    }
    const out = v.out ?? path.join(dir, 'report.html');
    const html = renderReport({ manifest: bundle.manifest, ...(evaluation ? { evaluation } : {}) });
    try {
      await fs.writeFile(out, html);
    } catch (e) {
      throw new SelfxitError('IO_ERROR', `Cannot write "${out}": ${(e as Error).message}`, { path: out }, { cause: e });
    }
    io.stdout(`report: ${out}\n`);
    return 0;
  },
};

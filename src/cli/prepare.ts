// `selfxit prepare <model.onnx> --samples … --out <bundle>`: calibrates early exits on unlabeled images and
// writes the bundle folder (built in a temp folder, then swapped in whole) (plus report.html with --report).
import os from 'node:os';
import { SelfxitError } from '../errors.js';
import type { HeadKind } from '../bundle/manifest.js';
import type { ThresholdRule } from '../policy/exit-rule.js';
import { prepare, resolveModelIO, type PrepareOptions, type PrepareResult } from '../calibrate/prepare.js';
import { prepareMode } from '../calibrate/prepare-options.js';
import { checkCostTable, type CostTable } from '../policy/cost-table.js';
import { decodeModel, graphInputs, graphOutputs } from '../graph/index.js';
import { renderReport } from '../report/html.js';
import { nameList, parseCommandArgs, requireOption } from './args.js';
import { writeBundleDir } from './bundle-fs.js';
import { UsageError, processIo, type CliCommand, type CliIo } from './dispatch.js';
import { formatCount } from './format.js';
import { parseShape, readLabelNames } from './images.js';
import { openSampleSources } from './sample-sources.js';
import { loadOrtNode, readFileBytes } from './node-io.js';
import { createProgressPrinter } from './progress.js';
import { createHeadTrainerPool, defaultTrainerThreads, MAX_TRAINER_THREADS } from './trainer-pool.js';
import pkg from '../../package.json' with { type: 'json' };

const help = `Usage: selfxit prepare <model.onnx> --samples <folder|file.u8> [--samples …] --out <bundle dir> [options]

Trains early-exit heads on unlabeled images (distilling the model's own predictions), picks exits and
thresholds so the cascade agrees with the full model on at least --target of the inputs, and writes a
bundle: segment-*.onnx (backbone pieces with fused exit heads), backbone.onnx, manifest.json.

Samples:
  --samples <path>     a folder of PNG/JPEG images (resized to the model input), or a raw
                       uint8 NHWC file ([count, H, W, C], e.g. calib-u8.bin); may be given more
                       than once: sources are checked first (readable, same image size and
                       channels), then concatenated in order; duplicates (a file given again,
                       copies of an image's pixels or with flip its mirror) are left out,
                       and their count printed
  --shape H,W,C        sample size (required for raw files when the model input does not fix it;
                       fixes the model's symbolic height, width and channels)
  --layout NCHW|NHWC   the model input's layout, when its dims do not tell (default: guessed)
  --output <name>      the output holding the class scores (required when the model has several;
                       the others are dropped from the segments)
  --mean r,g,b         per-channel mean in [0,1] pixel units (default 0)
  --std r,g,b          per-channel std in [0,1] pixel units (default 1)
  --labels <names.txt> class names, one per line (default "0".."k-1")
  --limit N            use N samples, after a seeded shuffle (files are often class-ordered); only
                       those are decoded and held
  --seed N             seed of the shuffle, folds and head training (default 0)

Calibration:
  --target T           agreement with the full model, in (0, 1] (default 0.99)
  --heads a,b          head kinds: pool-linear, pool-mlp (default both; costlier kinds on a shortlist);
                       paper: the paper's head (implies --mode paper)
  --exits cut,cut      selfxit mode: restrict candidate cuts; paper mode: the exits (tensor or display names)
  --exit <name>        one such name, taken whole (for a name holding a comma); repeatable, adds to --exits
  --mode selfxit|paper paper: the paper's heads (full map MLP), fixed exits, fixed threshold, no selection
  --threshold T        paper mode's one max-softmax threshold, in [0, 1] (default 0.9; paper mode only)
  --augment a,b|none   label-free training copies: flip, shift, cutmix:K (K copies with a box of
                       another image pasted in; default flip; targets are the model's own outputs
                       on each copy; e.g. flip,cutmix:4)
  --threshold-rule R   cost-calibrated (default: per-exit agreement estimate weighed by the cost
                       still ahead, one knob) or global (one shared max-softmax threshold)
  --max-pool-grid N    heads also read an NxN grid of per-channel maxima (default 2; 0: none)
  --folds N            cross-fitting folds (default 5)
  --temperature T      distillation temperature of head training, finite and > 0 (default 1)
  --max-candidates N   candidate cuts considered (default 16)
  --max-features N     average-pooled features per head input: the largest pooling grid with
                       channels x grid cells <= N (default 256)
  --hidden N           hidden width of pool-mlp heads (default 64)
  --capacity auto|fixed  auto (default): from 30,000 training rows, each shortlisted cut also screens
                       hidden 2N, a coarser grid and no max branch on one fold and keeps the best by
                       out-of-fold saving net of head cost; fixed: --heads at --hidden only
  --ensemble M         pool-mlp heads as ensembles of M seeds, in every fold and deployed alike
                       (mean logits: one M-times wider MLP, charged as such; default 1); head
                       training takes about M times as long
  --max-feature-memory N  memory cap of the sample images, a batch of their copies and the candidates'
                       pooled features, bytes or with K/M/G (default 1.5G): float32 when they fit,
                       else float16, else fewer candidate cuts (stated); images over it: a warning,
                       the features keep a floor; a bare number under 1 MiB is refused (a missing unit)
  --threads N          threads that train the exit heads side by side, 1 to 64 (default: the cores Node
                       may use, at most 4; in paper mode 1, as each thread holds a whole-map head's
                       workspace; 1: in the main thread, as the library does by default; more than the
                       cores: a warning); the bundle is the same bytes whatever N, and the features are
                       shared, not copied, per thread
  --cost-table <json>  measured per-sample costs ({ "backbone": ms, "cuts": {tensor: ms}, "heads": {…},
                       "overhead": ms }) minimised instead of MACs (selfxit mode; manifest costUnit "ms")

Output:
  --out <dir>          bundle folder (built in a temp folder beside it, then swapped in whole; an older
                       bundle there is replaced: its manifest.json, the files it names and report.html;
                       every other file is kept; on error the folder is left as it was)
  --report             also write report.html (exit shares, agreement vs MACs curve)
  -h, --help           show this help
`;

const options = {
  samples: { type: 'string', multiple: true },
  shape: { type: 'string' },
  layout: { type: 'string' },
  output: { type: 'string' },
  mean: { type: 'string' },
  std: { type: 'string' },
  labels: { type: 'string' },
  target: { type: 'string' },
  heads: { type: 'string' },
  capacity: { type: 'string' },
  seed: { type: 'string' },
  limit: { type: 'string' },
  mode: { type: 'string' },
  exits: { type: 'string' },
  exit: { type: 'string', multiple: true },
  threshold: { type: 'string' },
  folds: { type: 'string' },
  temperature: { type: 'string' },
  augment: { type: 'string' },
  'max-pool-grid': { type: 'string' },
  'threshold-rule': { type: 'string' },
  'max-candidates': { type: 'string' },
  'max-features': { type: 'string' },
  hidden: { type: 'string' },
  ensemble: { type: 'string' },
  threads: { type: 'string' },
  'cost-table': { type: 'string' },
  'max-feature-memory': { type: 'string' },
  report: { type: 'boolean' },
  out: { type: 'string' },
} as const;

/**
 * onnxruntime-node session options for the CLI: no busy-waiting of the intra-op threads. On a machine shared
 * with other work, spinning threads starve each other (measured 750 ms → 220 ms per ResNet-56 batch of 64 on
 * 2 busy cores); on an idle machine the cost is small.
 */
export const CLI_SESSION_OPTIONS = { extra: { session: { intra_op: { allow_spinning: '0' } } } } as const;

/** Parses a number option (UsageError when not a number). */
export function numberOption(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === '' || Number.isNaN(x)) throw new UsageError(`${flag} needs a number, got "${v}"`);
  return x;
}

/** Parses a byte count: a number with an optional K, M or G (binary) suffix, e.g. "1.5G" (UsageError otherwise). */
export function byteSizeOption(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const m = /^\s*([0-9]*\.?[0-9]+)\s*([kmg]?)i?b?\s*$/i.exec(v);
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }[m?.[2]?.toLowerCase() ?? ''];
  const bytes = m && unit ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!(bytes >= 1)) throw new UsageError(`${flag} needs a byte count such as 1500M or 1.5G, got "${v}"`);
  // a bare number is bytes: "3072" (3 KB) is surely meant as 3072M, and a cap that small holds no features at all
  if (/^\s*[0-9.]+\s*$/.test(v) && bytes < 2 ** 20)
    throw new UsageError(`${flag} ${v} is ${bytes} bytes; give a unit, e.g. ${m![1]}M or ${m![1]}G (bytes or K/M/G)`);
  return bytes;
}

/** Parses "a,b,c" numbers. */
export function numberList(v: string | undefined, flag: string): number[] | undefined {
  return v?.split(',').map((s) => numberOption(s.trim(), flag)!);
}

async function readCostTable(file: string): Promise<CostTable> {
  const text = new TextDecoder().decode(await readFileBytes(file));
  let t: unknown;
  try {
    t = JSON.parse(text);
  } catch (e) {
    throw new SelfxitError('INVALID_ARGUMENT', `--cost-table ${file}: not JSON (${(e as Error).message})`);
  }
  try {
    checkCostTable(t);
  } catch (e) {
    if (e instanceof SelfxitError)
      throw new SelfxitError(e.code, `--cost-table ${file}: ${e.message}`, e.details, { cause: e });
    throw e;
  }
  return t;
}

/** The process's peak resident memory so far, bytes (getrusage's maxRSS, in KiB on Linux and macOS). */
export function peakRssBytes(): number {
  return Math.max(process.resourceUsage().maxRSS * 1024, process.memoryUsage().rss);
}

export const prepareCommand: CliCommand = {
  name: 'prepare',
  summary: 'calibrate early exits on unlabeled images and write a bundle',
  help,
  async run(argv: readonly string[], io: CliIo) {
    const tStart = performance.now();
    const { values: v, positionals } = parseCommandArgs(argv, options, { min: 1, max: 1, names: '<model.onnx>' });
    const samplePaths = v.samples ?? [];
    if (samplePaths.length === 0) requireOption(undefined, '--samples');
    const maxFeatureBytes = byteSizeOption(v['max-feature-memory'], '--max-feature-memory');
    const out = requireOption(v.out, '--out');
    const heads = v.heads?.split(',').map((s) => s.trim()) as HeadKind[] | undefined;
    const exits = nameList(v.exits, v.exit, '--exits --exit');
    const mode = v.mode as PrepareOptions['mode'] | undefined;
    const capacity = v.capacity as PrepareOptions['capacity'] | undefined;
    if (capacity !== undefined && capacity !== 'auto' && capacity !== 'fixed')
      throw new UsageError(`--capacity must be auto or fixed, got "${capacity}"`);
    if (mode !== undefined && mode !== 'selfxit' && mode !== 'paper')
      throw new UsageError(`--mode must be selfxit or paper, got "${mode}"`);
    const augment =
      v.augment === undefined
        ? undefined
        : v.augment.trim() === 'none'
          ? []
          : (v.augment.split(',').map((s) => s.trim()) as NonNullable<PrepareOptions['augment']>);
    const thresholdRule = v['threshold-rule'] as ThresholdRule | undefined;
    const temperature = numberOption(v.temperature, '--temperature');
    if (temperature !== undefined && !(Number.isFinite(temperature) && temperature > 0)) {
      throw new SelfxitError('INVALID_ARGUMENT', `--temperature must be a finite number > 0, got ${v.temperature}`, {
        temperature: v.temperature,
      });
    }
    // decimal digits only (not 1e1 or 0x4), at most MAX_TRAINER_THREADS: a thread per queued task beyond the cores
    // would only add memory. Paper mode defaults to 1: each of its threads holds a whole-map head's workspace (hundreds
    // of MB, and --max-feature-memory does not apply there); an explicit --threads N is honoured
    const paper = prepareMode({ ...(mode ? { mode } : {}), ...(heads ? { headKinds: heads } : {}) }) === 'paper';
    const threads = v.threads === undefined ? (paper ? 1 : defaultTrainerThreads()) : Number(v.threads.trim());
    if (!(/^\d+$/.test(v.threads?.trim() ?? '1') && threads >= 1 && threads <= MAX_TRAINER_THREADS))
      throw new UsageError(
        `--threads must be an integer from 1 to ${MAX_TRAINER_THREADS}, got "${v.threads ?? threads}"`,
      );
    const cores = os.availableParallelism();
    const modelFile = positionals[0]!;
    const modelBytes = await readFileBytes(modelFile);
    const model = decodeModel(modelBytes);
    const shape = v.shape ? parseShape(v.shape) : undefined;
    const mean = numberList(v.mean, '--mean');
    const std = numberList(v.std, '--std');
    const layout = v.layout as 'NCHW' | 'NHWC' | undefined;
    // Printed (and put in the report) with prepare's own warnings: argument errors still come first on stderr.
    const unset = [...(mean ? [] : ['--mean (0)']), ...(std ? [] : ['--std (1)'])];
    const normWarning =
      unset.length > 0
        ? `${unset.join(' and ')} not given: the default normalisation (pixel / 255 - mean) / std is used, which ` +
          'must match how the model was trained, else the bundle silently classifies wrongly'
        : undefined;
    const input = {
      ...(shape ?? {}),
      ...(mean ? { mean } : {}),
      ...(std ? { std } : {}),
      ...(layout ? { layout } : {}),
    } as PrepareOptions['input'];
    // The sample geometry the model wants (throws INVALID_SAMPLES when --shape contradicts the model).
    const { input: spec } = resolveModelIO(
      model,
      { inputs: graphInputs(model), outputs: graphOutputs(model) },
      input,
      v.output,
    );
    const shapeOf = { height: spec.height, width: spec.width, channels: spec.channels };
    // A file given again is left out here; copies of an image's pixels (with flip, of its mirror too) are left out by
    // prepare as it reads the images the shuffle picks (only those are decoded), and printed as its warning.
    const samples = await openSampleSources(samplePaths, shapeOf, { dedupe: true });
    if (samples.sources.length > 1)
      io.stderr(`samples: ${samples.sources.map((s) => `${s.path} (${s.count})`).join(' + ')} = ${samples.total}\n`);
    const { sameFile } = samples.dropped;
    if (sameFile > 0)
      io.stderr(
        `samples: ${sameFile} images of a file given again left out: ${samples.count} of ${samples.total} kept\n`,
      );
    const labels = v.labels ? await readLabelNames(v.labels) : undefined;
    const costTable = v['cost-table'] ? await readCostTable(v['cost-table']) : undefined;
    const printer = createProgressPrinter(io.stderr, io.tty ?? (io === processIo && process.stderr.isTTY === true));
    const t0 = performance.now();
    const ort = await loadOrtNode();
    const num = (x: string | undefined, flag: string): number | undefined => numberOption(x, flag);
    const early = new Set<string>(); // warnings printed as they came
    if (threads > cores)
      io.stderr(
        `warning: --threads ${threads} is more than the ${cores} cores Node may use (os.availableParallelism()): ` +
          'the threads share them, each with its own memory, and head training gets no faster\n',
      );
    // --threads 1: heads train in this thread (the library's default); else on a worker pool, always closed after
    const trainerPool = threads > 1 ? createHeadTrainerPool({ threads }) : undefined;
    let trained = threads; // the threads that trained heads: at most one per task in flight
    // the progress line ended before anything else is printed: a warning, the error of a run that throws, the summary
    const prepared = await prepare({
      model: modelBytes,
      samples,
      ort,
      ...(input ? { input } : {}),
      ...(labels ? { labels } : {}),
      ...(v.output !== undefined ? { output: v.output } : {}),
      ...(v.target !== undefined ? { target: num(v.target, '--target')! } : {}),
      ...(heads ? { headKinds: heads } : {}),
      ...(v.seed !== undefined ? { seed: num(v.seed, '--seed')! } : {}),
      ...(v.limit !== undefined ? { limit: num(v.limit, '--limit')! } : {}),
      ...(mode ? { mode } : {}),
      ...(exits ? { exits } : {}),
      ...(v.threshold !== undefined ? { threshold: num(v.threshold, '--threshold')! } : {}),
      ...(v.folds !== undefined ? { folds: num(v.folds, '--folds')! } : {}),
      ...(temperature !== undefined ? { temperature } : {}),
      ...(v['max-candidates'] !== undefined ? { maxCandidates: num(v['max-candidates'], '--max-candidates')! } : {}),
      ...(v['max-features'] !== undefined ? { maxFeatures: num(v['max-features'], '--max-features')! } : {}),
      ...(v.hidden !== undefined ? { hidden: num(v.hidden, '--hidden')! } : {}),
      ...(capacity ? { capacity } : {}),
      ...(v.ensemble !== undefined ? { ensemble: num(v.ensemble, '--ensemble')! } : {}),
      ...(costTable ? { costTable } : {}),
      ...(maxFeatureBytes !== undefined ? { maxFeatureBytes } : {}),
      ...(augment ? { augment } : {}),
      ...(v['max-pool-grid'] !== undefined ? { maxPoolGrid: num(v['max-pool-grid'], '--max-pool-grid')! } : {}),
      ...(thresholdRule ? { thresholdRule } : {}),
      generator: `selfxit@${pkg.version}`,
      sessionOptions: CLI_SESSION_OPTIONS,
      onProgress: printer,
      onWarning: (w) => (printer.done(), early.add(w), io.stderr(`warning: ${w}\n`)), // at once: a run may die of memory
      ...(trainerPool ? { trainerPool } : {}),
    }).finally(async () => {
      printer.done();
      // a thread starts only for a task that no idle one can take, and none has stopped in a run that succeeded:
      // the threads alive are those that trained
      trained = trainerPool ? trainerPool.workers : 1;
      await trainerPool?.close();
    });
    const extra = new Map<string, string>();
    const warnings = [...(normWarning ? [normWarning] : []), ...prepared.warnings];
    if (v.report) extra.set('report.html', renderReport({ manifest: prepared.manifest, notes: warnings }));
    await writeBundleDir(out, prepared.manifest, prepared.files, extra);
    const totalS = (performance.now() - t0) / 1000;
    for (const w of warnings) if (!early.has(w)) io.stderr(`warning: ${w}\n`);
    const m = prepared.manifest;
    const c = m.calibration;
    const lines = [
      `bundle: ${out} (${m.segments.length} segments, ${m.exits.length} exits, mode ${c.mode})`,
      `samples: ${c.samples}   ${c.mode === 'paper' ? 'target: none (paper mode: fixed threshold)' : `target: ${c.target}`}   validation agreement: ${(c.validationAgreement * 100).toFixed(2)} % (out of fold; >= ${(prepared.report.agreementLowerBound * 100).toFixed(2)} % at 95 % confidence)   expected MACs: ${(c.expectedMacsFraction * 100).toFixed(1)} % of ${formatCount(m.backbone.macs)}`,
      ...m.exits.map(
        (e) =>
          `  exit ${e.name.padEnd(12)} ${e.headKind.padEnd(11)} threshold ${e.threshold.toFixed(4)}  at ${(e.macsFraction * 100).toFixed(1)} % MACs  expected share ${(e.expectedShare * 100).toFixed(1)} %${e.dequant ? `  reads ${e.dequant.dtype} (dequantized)` : ''}${e.layout === 'NHWC' ? '  channels-last (NHWC)' : ''}`,
      ),
      ...prepared.report.cutNotes.map((n) => `cuts: ${n}`),
      ...(prepared.report.featureStorage ? [`features: ${prepared.report.featureStorage}`] : []),
      ...capacityLine(prepared.report.candidates),
      ...(v.ensemble !== undefined && Number(v.ensemble) > 1
        ? [`ensemble: every pool-mlp head is ${v.ensemble} seeds, logits averaged (folds and deployed heads alike)`]
        : []),
      `time: ${totalS.toFixed(1)} s (${Object.entries(c.timings ?? {})
        .map(([k, s]) => `${k} ${s.toFixed(1)} s`)
        .join(', ')})   head training: ${trained} thread${trained === 1 ? '' : 's'}`,
      `total: ${((performance.now() - tStart) / 1000).toFixed(1)} s from start (loading included)   peak memory: ${(peakRssBytes() / 2 ** 20).toFixed(0)} MB (max RSS)`,
    ];
    io.stdout(`${lines.join('\n')}\n`);
    return 0;
  },
};

/** The head configuration kept at each exit (capacity 'auto'), as one line; none when every exit has its kind's. */
function capacityLine(candidates: PrepareResult['report']['candidates']): string[] {
  const kept = candidates.filter((k) => k.selected && k.capacity && k.capacity !== k.kind);
  return kept.length ? [`capacity: ${kept.map((k) => `${k.name} ${k.capacity}`).join(', ')}`] : [];
}

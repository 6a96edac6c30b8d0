// The `learn` options of load(): every default and range check of on-device learning in one place.
import type { HeadKind } from '../bundle/manifest.js';
import { SelfxitError } from '../errors.js';
import { checkTarget } from '../policy/bounds.js';
import { minimumSamples } from '../calibrate/prepare-options.js';

/** What a caller may set (all optional). */
export interface LearnOptions {
  /** Share of served inputs completed by the full model after the reply (the live audit), in [0, 1]. Default 0.03. */
  readonly auditShare?: number;
  /**
   * While the reservoir is not full (until as many distinct inputs as it holds were offered: exact repeats of a stored
   * input do not count), the share of served inputs completed by the full model after the reply, damped by the recent
   * share of repeats (× (1 − that share), never below `auditShare`: a still screen is completed at about
   * `auditShare`, varied traffic after it at `learnShare` again), so that
   * learning goes on once exits are on (they are audited too), in [0, 1]; at least `auditShare`. Default 1: every
   * input is a sample until the reservoir is full. Costs that share of a full-model run per input, in the background,
   * until the reservoir is full: reaching N samples costs about N full-model runs whatever the share, and a larger
   * share reaches them (and their savings) sooner.
   */
  readonly learnShare?: number;
  /** Samples stored before the first fit. Default 2,000 (never below prepare's minimum for the target, 300 at 0.99). */
  readonly minSamples?: number;
  /** Most samples the reservoir keeps. Default 40,000. */
  readonly maxSamples?: number;
  /**
   * Byte cap of the reservoir (a byte per pooled feature, 8 per cut, float32 probabilities, 8 for the input's key).
   * Default 128 MiB: ~40,000 samples of a model whose 8 candidate cuts pool to ~3,300 features (CIFAR ResNet-56: 3,416
   * bytes a sample, 39,290 samples). Must hold `minSamples` samples of the model: the Learner refuses a smaller cap
   * (INVALID_ARGUMENT), with which learning would collect for ever and never fit.
   */
  readonly maxBytes?: number;
  /** New samples (served by the full model or audited) that start a re-fit. Default 1,000. */
  readonly refitAfter?: number;
  /** Agreement target of the fits and of the audit. Default 0.99. */
  readonly target?: number;
  /** Audits before the audit may declare a failure. Default 20. */
  readonly minAudits?: number;
  /** The audit's recent window (audits), tested besides all audits since the exits last changed. Default 300. */
  readonly auditWindow?: number;
  /**
   * The unsupervised drift signal (input statistics against a reference, learn/drift.ts): on an alarm the exits go
   * off and learning starts again on the new traffic. Default true.
   */
  readonly drift?: boolean;
  /** Candidate cuts (prepare's maxCandidates). Default 8. */
  readonly maxCandidates?: number;
  /** Cross-fitting folds. Default 5. */
  readonly folds?: number;
  /** Head kinds tried (prepare's headKinds). Default prepare's. */
  readonly headKinds?: readonly HeadKind[];
  /**
   * pool-mlp heads as ensembles of this many members trained with different seeds (prepare's `ensemble`), an integer
   * in [1, 5]: each exit's head is the members' mean logits, one MLP this many times as wide (exit selection charges
   * its cost). Each fit takes about this many times as long (the fits run in the learner's second worker, on one
   * thread). With many classes each member is sized as one head would be (prepare's sizing), the deployed head this
   * many times that. Default 1.
   */
  readonly ensemble?: number;
  readonly seed?: number;
}

export type ResolvedLearnOptions = Required<Omit<LearnOptions, 'headKinds'>> & Pick<LearnOptions, 'headKinds'>;

/**
 * The fixed defaults of {@link LearnOptions}. minSamples is 2,000 rather than prepare's minimum: a first fit on 1,000
 * ResNet-56 samples promised 0.99 and served 97.3 % (bench:adapt), since thresholds fit on few samples overpromise.
 * The samples are what the savings rest on (ResNet-56 at 0.99, prepare with learning's settings on pool images:
 * MACs 0.808 from 10,000 samples, 0.784 from 20,000, 0.729 from 40,000; flip copies or 16 candidate cuts changed them
 * by < 0.01, BENCHMARKS.md "On-device learning"), hence learnShare 1 (0.5 gave ~20,000 samples after 40,000 inputs,
 * 0.2 ~10,000) and a byte cap that holds maxSamples (uint8 rows: 128 MiB hold 39,290 ResNet-56 samples; float16 rows
 * held 19,958).
 */
export const LEARN_DEFAULTS = {
  auditShare: 0.03,
  learnShare: 1,
  minSamples: 2000,
  maxSamples: 40000,
  maxBytes: 128 * 2 ** 20,
  refitAfter: 1000,
  target: 0.99,
  minAudits: 20,
  auditWindow: 300,
  maxCandidates: 8,
  folds: 5,
  ensemble: 1,
  seed: 0,
} as const;

/** The most members of a learning fit's head ensembles ({@link LearnOptions.ensemble}). */
export const MAX_LEARN_ENSEMBLE = 5;

function bad(msg: string): never {
  throw new SelfxitError('INVALID_ARGUMENT', msg);
}

/** Every key of {@link LearnOptions} (the compiler checks that none is missing). */
const LEARN_KEYS: Readonly<Record<keyof LearnOptions, true>> = {
  auditShare: true,
  learnShare: true,
  minSamples: true,
  maxSamples: true,
  maxBytes: true,
  refitAfter: true,
  target: true,
  minAudits: true,
  auditWindow: true,
  drift: true,
  maxCandidates: true,
  folds: true,
  headKinds: true,
  ensemble: true,
  seed: true,
};

/** Edit distance of two strings (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** The known name `key` was probably meant to be: the same but for case, else one at most 2 edits away. */
export function likelyKey(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  const same = known.find((k) => k.toLowerCase() === lower);
  if (same) return same;
  let best: { key: string; d: number } | undefined;
  for (const k of known) {
    const d = editDistance(lower, k.toLowerCase());
    if (d <= 2 && (!best || d < best.d)) best = { key: k, d };
  }
  return best?.key;
}

/**
 * Refuses (INVALID_ARGUMENT) a key of `o` that is not in `known`, naming it `${prefix}${key}` with a "did you mean"
 * suggestion (the known name): a misspelt option would silently keep its default.
 */
export function refuseUnknownKeys(o: object, known: readonly string[], prefix: string, what: string): void {
  for (const key of Object.keys(o)) {
    if (known.includes(key)) continue;
    const like = likelyKey(key, known);
    bad(`${prefix}${key} is not ${what}${like ? ` (did you mean ${like}?)` : ''}`);
  }
}

/** Every learn option's name. */
export const LEARN_OPTION_NAMES: readonly string[] = Object.keys(LEARN_KEYS);

/**
 * Fills in the defaults and checks every range (INVALID_ARGUMENT; INVALID_TARGET for the target); a key that is not a
 * learn option is refused (INVALID_ARGUMENT).
 */
export function resolveLearnOptions(o: LearnOptions = {}): ResolvedLearnOptions {
  if (typeof o !== 'object' || o === null) bad(`learn options must be an object, got ${String(o)}`);
  refuseUnknownKeys(o, LEARN_OPTION_NAMES, 'learn.', 'a learn option');
  const target = o.target ?? LEARN_DEFAULTS.target;
  checkTarget(target);
  const int = (name: keyof typeof LEARN_DEFAULTS, min: number, max = Infinity): number => {
    const v = (o as Record<string, unknown>)[name] ?? LEARN_DEFAULTS[name];
    if (!(typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max))
      bad(
        `learn.${name} must be an integer ${max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`}, got ${String(v)}`,
      );
    return v;
  };
  const share = (name: 'auditShare' | 'learnShare'): number => {
    const v = o[name] ?? LEARN_DEFAULTS[name];
    if (!(typeof v === 'number' && v >= 0 && v <= 1)) bad(`learn.${name} must be in [0, 1], got ${String(v)}`);
    return v;
  };
  const drift = (): boolean => {
    if (o.drift !== undefined && typeof o.drift !== 'boolean')
      bad(`learn.drift must be a boolean, got ${String(o.drift)}`);
    return o.drift ?? true;
  };
  const auditShare = share('auditShare');
  const learnShare = Math.max(auditShare, share('learnShare'));
  const folds = int('folds', 2);
  const minSamples = Math.max(int('minSamples', 1), minimumSamples(target, folds));
  const maxSamples = int('maxSamples', 1);
  if (maxSamples < minSamples) bad(`learn.maxSamples (${maxSamples}) must be >= minSamples (${minSamples})`);
  return {
    auditShare,
    learnShare,
    minSamples,
    maxSamples,
    maxBytes: int('maxBytes', 1),
    refitAfter: int('refitAfter', 1),
    target,
    minAudits: int('minAudits', 1),
    auditWindow: int('auditWindow', 1),
    drift: drift(),
    maxCandidates: int('maxCandidates', 1),
    folds,
    ensemble: int('ensemble', 1, MAX_LEARN_ENSEMBLE),
    seed: int('seed', 0),
    ...(o.headKinds ? { headKinds: [...o.headKinds] } : {}),
  };
}

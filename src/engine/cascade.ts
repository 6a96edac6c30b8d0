// The early-exit cascade: runs a bundle stage by stage with batch shrinking. Pure logic; the caller supplies a
// StageRunner (stage-runner.ts's, on onnxruntime-node for `selfxit eval` and onnxruntime-web in the worker),
// so the CLI and the browser make exactly the same exit decisions.
import type { BundleManifest } from '../bundle/manifest.js';
import { argmaxRow } from '../policy/cascade-sim.js';

export { argmaxRow };

/** Output of one stage for the rows still in the batch. */
export interface StageOutput<A> {
  /** Activation for the next segment (absent on the last segment). Opaque to the cascade. */
  readonly next?: A;
  /** Exit-head probabilities `[rows, classes]` row-major, when the segment ends at an exit. */
  readonly exitProbs?: Float32Array;
  /** Backbone output `[rows, classes]` on the last segment (logits or probabilities, see manifest.backbone.outputKind). */
  readonly final?: Float32Array;
}

/** Runs segments on a backend. `A` is the backend's activation handle (a tensor, a GPU buffer…). */
export interface StageRunner<A> {
  /**
   * Runs one segment on the rows still in the batch. `readExit` (default true) false: the segment's exit output is
   * not needed (its threshold is above 1, so it can never fire); the runner need not fetch it and may leave
   * `exitProbs` out. The runner may still return it: the cascade decides the same either way.
   */
  runStage(segment: number, input: A, rows: number, readExit?: boolean): Promise<StageOutput<A>>;
  /** Keep only the given rows (ascending indices into the current batch) of an activation. */
  selectRows(activation: A, keep: readonly number[], rows: number): Promise<A>;
  /** Free an activation that is no longer needed (optional). */
  release?(activation: A): void;
}

/** One sample's decision by {@link runCascade}. */
export interface CascadeResult {
  /** Predicted class index. */
  readonly index: number;
  /** Score of the decision (max probability). */
  readonly confidence: number;
  /** Exit index taken, or -1 when the sample ran the whole backbone. */
  readonly exit: number;
  /** Class probabilities at the decision point. */
  readonly probs: Float32Array;
}

/** Options of {@link runCascade}. */
export interface CascadeOptions {
  /** Per-exit thresholds overriding the manifest's (e.g. re-chosen for another target). */
  readonly thresholds?: readonly number[];
  /** Called after each stage with the stage index, rows that ran it and wall time in ms. */
  readonly onStage?: (segment: number, rows: number, ms: number) => void;
  /** Clock for onStage timings (default performance.now). */
  readonly now?: () => number;
}

/** Softmax of one row, numerically stable. */
export function softmaxRow(src: Float32Array, offset: number, k: number): Float32Array {
  const out = new Float32Array(k);
  let max = -Infinity;
  for (let j = 0; j < k; j++) max = Math.max(max, src[offset + j]!);
  let sum = 0;
  for (let j = 0; j < k; j++) {
    const e = Math.exp(src[offset + j]! - max);
    out[j] = e;
    sum += e;
  }
  for (let j = 0; j < k; j++) out[j]! /= sum;
  return out;
}

/**
 * Runs `rows` samples through the cascade. A row leaves at the first exit whose max probability is
 * >= that exit's threshold; rows that leave are dropped from the batch before the next segment.
 */
export async function runCascade<A>(
  manifest: BundleManifest,
  runner: StageRunner<A>,
  input: A,
  rows: number,
  options: CascadeOptions = {},
): Promise<CascadeResult[]> {
  const k = manifest.labels.length;
  const thresholds = options.thresholds ?? manifest.exits.map((e) => e.threshold);
  const now = options.now ?? (() => performance.now());
  const results: (CascadeResult | undefined)[] = new Array(rows);
  let active = Array.from({ length: rows }, (_, i) => i); // original row of each current batch row
  let act: A = input;
  const segments = manifest.segments;
  for (let s = 0; s < segments.length && active.length > 0; s++) {
    const seg = segments[s]!;
    const t0 = now();
    // An exit whose threshold is above 1 never fires: its output is not read (on WebGPU: no GPU → CPU readback).
    const readExit = seg.exit !== undefined && (thresholds[seg.exit] ?? Infinity) <= 1;
    const out = await runner.runStage(s, act, active.length, readExit);
    options.onStage?.(s, active.length, now() - t0);
    if (act !== input) runner.release?.(act);
    if (s === segments.length - 1) {
      const fin = out.final;
      if (!fin) throw new Error(`stage ${s} returned no final output`);
      active.forEach((orig, r) => {
        const probs =
          manifest.backbone.outputKind === 'logits' ? softmaxRow(fin, r * k, k) : fin.slice(r * k, (r + 1) * k);
        const { index, value } = argmaxRow(probs, 0, k);
        results[orig] = { index, confidence: value, exit: -1, probs };
      });
      active = [];
      break;
    }
    if (!out.next) throw new Error(`stage ${s} returned no activation`);
    if (seg.exit === undefined || !out.exitProbs) {
      act = out.next;
      continue;
    }
    const thr = thresholds[seg.exit] ?? Infinity;
    if (!(thr <= 1)) {
      act = out.next;
      continue;
    }
    const probs = out.exitProbs;
    const keep: number[] = [];
    active.forEach((orig, r) => {
      const { index, value } = argmaxRow(probs, r * k, k);
      if (value >= thr)
        results[orig] = { index, confidence: value, exit: seg.exit!, probs: probs.slice(r * k, (r + 1) * k) };
      else keep.push(r);
    });
    if (keep.length === active.length) {
      act = out.next;
    } else if (keep.length > 0) {
      act = await runner.selectRows(out.next, keep, active.length);
      runner.release?.(out.next);
      active = keep.map((r) => active[r]!);
    } else {
      runner.release?.(out.next);
      active = [];
    }
  }
  return results.map((r, i) => {
    if (!r) throw new Error(`row ${i} got no result`);
    return r;
  });
}

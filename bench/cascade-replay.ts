// Shared by the bench study scripts: a cascade's top-1 on labelled samples, replayed from every exit's recorded outputs.
import type { ExitScores } from '../src/policy/cascade-sim.js';

/**
 * Top-1 of the cascade (the first of `selected` whose score reaches its threshold answers, else `backbonePred`) and of
 * the backbone alone, as fractions of the samples.
 */
export function replayTop1(
  exits: readonly ExitScores[],
  selected: readonly number[],
  thresholds: readonly number[],
  backbonePred: ArrayLike<number>,
  labels: ArrayLike<number>,
): { cascade: number; backbone: number } {
  const n = labels.length;
  let correct = 0;
  let bb = 0;
  for (let s = 0; s < n; s++) {
    let pred = backbonePred[s]!;
    for (let j = 0; j < selected.length; j++) {
      const e = exits[selected[j]!]!;
      if (e.score[s]! >= thresholds[j]!) {
        pred = e.pred[s]!;
        break;
      }
    }
    if (pred === labels[s]) correct++;
    if (backbonePred[s] === labels[s]) bb++;
  }
  return { cascade: n ? correct / n : NaN, backbone: n ? bb / n : NaN };
}

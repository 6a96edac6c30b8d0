// The bench studies' top-1 replay (bench/cascade-replay.ts): the first selected exit whose score reaches its threshold
// answers, else the backbone.
import { describe, expect, it } from 'vitest';
import { replayTop1 } from '../bench/cascade-replay.js';
import { exitScores } from '../src/policy/cascade-sim.js';

describe('replayTop1', () => {
  it('takes the first passing selected exit, else the backbone, and counts top-1 of both', () => {
    const k = 2;
    const backbone = Int32Array.from([0, 1, 1, 0]);
    const labels = [1, 0, 0, 1];
    // exit 0: confident on samples 0 and 1 (class 1), exit 1: confident on every sample (class 0)
    const e0 = exitScores(Float32Array.from([0.1, 0.9, 0.1, 0.9, 0.6, 0.4, 0.5, 0.5]), 4, k, backbone);
    const e1 = exitScores(Float32Array.from([0.95, 0.05, 0.95, 0.05, 0.95, 0.05, 0.95, 0.05]), 4, k, backbone);
    // exits 0 then 1 at 0.8: answers 1, 1, 0, 0 → right on samples 0 and 2; the backbone (0, 1, 1, 0) on none
    expect(replayTop1([e0, e1], [0, 1], [0.8, 0.8], backbone, labels)).toEqual({ cascade: 0.5, backbone: 0 });
    // only exit 1, never reached: the backbone answers
    expect(replayTop1([e0, e1], [1], [0.99], backbone, labels)).toEqual({ cascade: 0, backbone: 0 });
    // only exit 1 at 0.9: answers 0 everywhere → right on samples 1 and 2
    expect(replayTop1([e0, e1], [1], [0.9], backbone, labels)).toEqual({ cascade: 0.5, backbone: 0 });
    // exit 0 alone at 0.55: answers 1, 1, 0, backbone 0 → right on samples 0 and 2
    expect(replayTop1([e0, e1], [0], [0.55], backbone, labels)).toEqual({ cascade: 0.5, backbone: 0 });
  });
});

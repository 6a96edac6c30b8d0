// A batch sent to the worker in parts of bounded size (page/batch.ts): parts of at least 2 inputs, one in the worker
// at a time, results in input order and the same as one request's, an input's error named by its index in the batch,
// nothing more sent once the classifier is disposed.
import { describe, expect, it } from 'vitest';
import { SelfxitError } from '../src/errors.js';
import { sendInParts } from '../src/page/batch.js';
import { ClassifierImpl } from '../src/page/classifier.js';
import type { ClassifyRequest, WireInput, WireResult } from '../src/protocol.js';
import { FakeTransport, manifest } from './fixtures/page-fakes.js';

/** Input i: 1,000 floats (4,000 bytes) holding i. */
const inputs = (n: number): Float32Array[] => Array.from({ length: n }, (_, i) => new Float32Array(1000).fill(i));

/** A worker stand-in: each input's result names it (`index`); records the parts and how many ran at once. */
function fakeSend(fail?: (wires: WireInput[]) => SelfxitError | undefined) {
  const parts: number[][] = [];
  let running = 0;
  let most = 0;
  const send = async (wires: WireInput[]): Promise<WireResult[]> => {
    most = Math.max(most, ++running);
    parts.push(wires.map((w) => (w.kind === 'tensor' ? w.data[0]! : -1)));
    await new Promise((r) => setTimeout(r, 5));
    running--;
    const e = fail?.(wires);
    if (e) throw e;
    return wires.map((w) => ({
      index: (w as { data: Float32Array }).data[0]!,
      confidence: 1,
      exit: -1,
      stages: [1],
      totalMs: 10,
    }));
  };
  return { send, parts, most: () => most };
}

describe('a batch sent in parts', () => {
  it('under the budget: one request, as before', async () => {
    const f = fakeSend();
    const r = await sendInParts(inputs(5), f.send, () => {});
    expect(f.parts).toEqual([[0, 1, 2, 3, 4]]);
    expect(r.map((x) => [x.index, x.totalMs])).toEqual([0, 1, 2, 3, 4].map((i) => [i, 10]));
  });

  it('past it: parts of at least 2 inputs, one in the worker at a time; results in order, totalMs summed', async () => {
    const f = fakeSend();
    const r = await sendInParts(inputs(9), f.send, () => {}, 8000);
    expect(f.parts).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
      [6, 7, 8],
    ]);
    expect(f.most()).toBe(1);
    expect(r.map((x) => x.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(new Set(r.map((x) => x.totalMs))).toEqual(new Set([40]));
    // a budget smaller than one input still sends 2 a part
    const g = fakeSend();
    await sendInParts(inputs(5), g.send, () => {}, 1);
    expect(g.parts).toEqual([
      [0, 1],
      [2, 3, 4],
    ]);
  });

  it("an input's error in a later part names its index in the batch", async () => {
    const f = fakeSend((wires) =>
      wires.some((w) => w.kind === 'tensor' && w.data[0] === 5)
        ? new SelfxitError('INVALID_INPUT', 'input 1: the tensor holds NaN', { inputIndex: 1 })
        : undefined,
    );
    const e = await sendInParts(inputs(8), f.send, () => {}, 8000).catch((x: unknown) => x);
    expect(e).toMatchObject({
      code: 'INVALID_INPUT',
      message: 'input 5: the tensor holds NaN',
      details: { inputIndex: 5 },
    });
    expect(f.parts).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
    ]); // nothing sent after the failed part
  });

  it('an input that cannot be converted rejects with its index; a part already sent is dropped', async () => {
    const f = fakeSend();
    const batch: unknown[] = [...inputs(4), 'not an image'];
    const e = await sendInParts(batch, f.send, () => {}, 8000).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'INVALID_INPUT', details: { inputIndex: 4 } });
    expect((e as Error).message).toMatch(/^input 4: unsupported input type string/);
  });

  it('check() throwing (DISPOSED) stops the conversions and parts left', async () => {
    const f = fakeSend();
    let checks = 0;
    const check = (): void => {
      checks++;
      if (f.parts.length >= 1) throw new SelfxitError('DISPOSED', 'the classifier was disposed');
    };
    await expect(sendInParts(inputs(6), f.send, check, 8000)).rejects.toMatchObject({ code: 'DISPOSED' });
    expect(f.parts).toEqual([[0, 1]]);
    // inputs 0 and 1 converted (a check after each), part 0 checked and sent, input 2 converted: the check stops it
    expect(checks).toBe(4);
  });

  it('classifyBatch(): the same results whole or in parts', async () => {
    /** Answers input i (holding i) as class i % 2, exit i % 3 - 1. */
    class Echo extends FakeTransport {
      readonly requests: number[] = [];
      override async classify(req: ClassifyRequest): Promise<WireResult[]> {
        this.requests.push(req.inputs.length);
        return req.inputs.map((w) => {
          const i = (w as { data: Float32Array }).data[0]!;
          return { index: i % 2, confidence: 0.5 + i / 100, exit: (i % 3) - 1, stages: [1], totalMs: 2 };
        });
      }
    }
    const opened = { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/m.json' };
    const whole = new Echo();
    const parts = new Echo();
    const a = await new ClassifierImpl(whole, opened).classifyBatch(inputs(7));
    const b = await new ClassifierImpl(parts, opened, undefined, 8000).classifyBatch(inputs(7));
    expect(whole.requests).toEqual([7]);
    expect(parts.requests).toEqual([2, 2, 3]);
    const strip = (r: typeof a) => r.map(({ timings: _t, ...rest }) => rest);
    expect(strip(b)).toEqual(strip(a));
    expect(b.map((r) => r.timings.totalMs)).toEqual(Array(7).fill(6));
  });
});

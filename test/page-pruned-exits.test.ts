// The page's view of live exit pruning: info().prunedExits follows the worker's state (empty when it reports none), and
// a result names the exit the worker says the input took.
import { describe, expect, it } from 'vitest';
import { ClassifierImpl } from '../src/page/classifier.js';
import { FakeTransport, manifest } from './fixtures/page-fakes.js';

describe('info().prunedExits', () => {
  it('lists the exits the worker reports pruned, [] when none', async () => {
    const transport = new FakeTransport();
    const clf = new ClassifierImpl(transport, { manifest, manifestHash: 'h', manifestUrl: 'https://x.test/m.json' });
    expect(clf.info().prunedExits).toEqual([]);
    transport.state = { ...transport.state, prunedExits: [1] };
    const r = await clf.classify(new Float32Array(1));
    expect(clf.info().prunedExits).toEqual([1]);
    expect(r.exit).toMatchObject({ index: -1, name: 'backbone' });
    // the thresholds sent are the requested ones: the worker applies the pruning
    expect(transport.sent[0]).toEqual([0.9, 0.9]);
  });
});

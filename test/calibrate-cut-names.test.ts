// Display names of cuts (manifest exit names, `exits` lookups): exitName's short names, lengthened only where cuts
// at different places would share one (torchvision-style ".../relu/Relu_output_0" tensors).
import { describe, expect, it } from 'vitest';
import { analyzeModel, cutDisplayNames, type OnnxModel } from '../src/graph/index.js';
import { cutName, findNamedCuts } from '../src/calibrate/candidate-cuts.js';
import { GraphBuilder } from './fixtures/graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';
import { tinyClassifier } from './fixtures/prepare-fixtures.js';

/** conv-relu blocks whose Relu outputs are named like torchvision exports: "/layerS/layerS.B/relu/Relu_output_0". */
function torchvisionNamed(): OnnxModel {
  const g = new GraphBuilder(3);
  let x = g.input('x', 'float32', ['N', 3, 8, 8]);
  let cin = 3;
  for (const block of ['layer1/layer1.0', 'layer1/layer1.1', 'layer2/layer2.0']) {
    x = g.op('Relu', [g.conv(x, cin, 8, 3)], {}, `/${block}/relu/Relu_output_0`);
    cin = 8;
  }
  const f = g.op('Flatten', [g.op('GlobalAveragePool', [x])], { axis: 1 });
  g.gemm(f, 8, 4, 'logits');
  g.output('logits', 'float32', ['N', 4]);
  return g.build();
}

describe('cut display names', () => {
  it('lengthen names that cuts at different places share, and keep the others', async () => {
    const a = await analyzeModel(torchvisionNamed(), { ort: ortNode });
    const relus = a.cuts.filter((c) => c.tensor.endsWith('Relu_output_0'));
    expect(relus.map(cutName)).toEqual(['layer1.0/relu', 'layer1.1/relu', 'layer2.0/relu']);
    expect(findNamedCuts(a.cuts, ['layer1.1/relu']).map((c) => c.tensor)).toEqual([
      '/layer1/layer1.1/relu/Relu_output_0',
    ]);
    // the ambiguous short name no longer picks one of them silently
    expect(() => findNamedCuts(a.cuts, ['relu'])).toThrow(/"relu" is not a cut of this model; cuts: .*layer1.0\/relu/);
    // names of a model without collisions are exitName's
    const tiny = await analyzeModel(tinyClassifier(), { ort: ortNode });
    expect(tiny.cuts.filter((c) => c.tensor.startsWith('block')).map(cutName)).toEqual([
      'block1',
      'block2',
      'block3',
      'block4',
    ]);
  });

  it('may share a name at one place (an Add and its Relu), and fall back to the tensor name', () => {
    const names = cutDisplayNames([
      { tensor: '/s/b0/Add_output_0', macs: 10 },
      { tensor: '/s/b0/Relu_output_0', macs: 10 },
      { tensor: '/t/b0/Relu_output_0', macs: 20 },
      { tensor: 'plain', macs: 30 },
      { tensor: 'plain_output_0', macs: 40 },
    ]);
    expect([...names.values()]).toEqual(['s/b0', 's/b0', 't/b0', 'plain', 'plain_output_0']);
  });
});

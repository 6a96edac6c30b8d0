import { it } from 'vitest';
import { encodeModel } from '../src/graph/index.js';
import { prepare } from '../src/calibrate/prepare.js';
import { evaluateBundle } from '../src/calibrate/evaluate.js';
import { clusterImages, fittedMobileNet, SMALL_MOBILE } from './fixtures/mobile-graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';
it('dbg', { timeout: 100_000 }, async () => {
  const images = { data: clusterImages(200, 32, 32, 3), count: 200 };
  const r = await prepare({ model: encodeModel(await fittedMobileNet(SMALL_MOBILE, ortNode)), samples: images, ort: ortNode, target: 0.97, headKinds: ['pool-linear'], augment: [], folds: 3, maxCandidates: 6, input: { mean: [0.5], std: [0.25] } });
  console.log(r.warnings, JSON.stringify(r.manifest.exits.map((e) => [e.name, e.threshold, e.expectedShare, e.scoreMap])));
  console.log(r.report.candidates.map((c) => `${c.name} ${c.heads.map((h) => h.agreement.toFixed(2) + ':' + h.coverage.toFixed(2)).join('/')}`).join(' | '));
  const ev = await evaluateBundle({ bundle: r, samples: images, ort: ortNode });
  console.log(ev.exitShares, ev.agreement, Array.from(r.manifest.exits, (e) => e.macsFraction), r.manifest.calibration.expectedMacsFraction);
});

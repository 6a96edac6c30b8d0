// Workers taking turns (issue 12, BENCHMARKS "Turns in blocks"): the shipped model as plain onnxruntime-web sessions
// in several module workers of one Chromium page, at 2 and 1 WASM threads, the workers taking turns image by image
// (--block 1, the default) or in blocks of calls with --pause ms idle after each. Prints per worker the page's mean and
// p50 ms per call, the mean session.run and the rest (round trip). Sides: two identical workers (default), or
// --spin: default / `session.intra_op.allow_spinning: '0'` / `session.force_spinning_stop: '1'`, or --alone: one.
//
//   node bench/turns.mjs [--calls 400] [--block 1] [--pause 0] [--spin | --alone] [--port P]
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withBarePage } from './bare-page.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const calls = flag('--calls', 400);
const block = Math.max(1, flag('--block', 1));
const pause = flag('--pause', 0);
const sides = args.includes('--spin')
  ? [
      { name: 'default' },
      { name: 'allow_spinning 0', extra: { session: { intra_op: { allow_spinning: '0' } } } },
      { name: 'force_spinning_stop 1', extra: { session: { force_spinning_stop: '1' } } },
    ]
  : args.includes('--alone')
    ? [{ name: 'alone' }]
    : [{ name: 'a' }, { name: 'b' }];

await withBarePage(
  {
    port: flag('--port', 0),
    mounts: {
      '/ort/': path.join(root, 'node_modules/onnxruntime-web/dist'),
      '/turns/': path.join(root, 'bench/turns'),
      '/model/': path.join(root, 'public/models/fashion-resnet'),
    },
    pagePath: 'turns/index.html',
  },
  async (page) => {
    for (const threads of [2, 1]) {
      const config = { threads, model: '/model/model.onnx', dims: [1, 1, 28, 28], calls, block, pause, sides };
      const results = await page.evaluate((cfg) => window.turns(cfg), config);
      for (const r of results)
        console.log(
          `threads ${threads}, block ${block}, pause ${pause} ms, ${r.name}: page ${r.pageMean.toFixed(3)} ms ` +
            `(p50 ${r.pageP50.toFixed(3)}), session.run ${r.runMean.toFixed(3)}, rest ${r.roundTrip.toFixed(3)}`,
        );
    }
  },
);

// Page ↔ worker transports (issue 12: the round trip is a fixed cost per call that early exits do not shrink): one
// module worker of a cross-origin-isolated Chromium page answers 12 KB calls after --work ms of busy work, by
// postMessage (the input moved, as the SDK's classify port does), by a SharedArrayBuffer with Atomics.notify and
// Atomics.waitAsync on both sides, and by one of each. Prints per transport the page's ms per call less the work
// (mean, p50, p90). No onnxruntime: the transport alone.
//
//   node bench/transport.mjs [--calls 400] [--work 0,2] [--port P]
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withBarePage } from './bare-page.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const calls = Number(flag('--calls', 400));
const works = String(flag('--work', '0,2')).split(',').map(Number);
if (!(calls > 0) || works.some((w) => !(w >= 0))) {
  console.error('usage: node bench/transport.mjs [--calls N] [--work ms,ms] [--port P]');
  process.exit(2);
}
await withBarePage(
  {
    port: Number(flag('--port', 0)),
    mounts: { '/transport/': path.join(root, 'bench/transport') },
    pagePath: 'transport/index.html',
  },
  async (page) => {
    for (const work of works) {
      const results = await page.evaluate((cfg) => window.transports(cfg), { calls, work });
      for (const r of results)
        console.log(
          `work ${work} ms, ${r.name}: ${r.mean.toFixed(3)} ms mean, p50 ${r.p50.toFixed(3)}, p90 ${r.p90.toFixed(3)} ` +
            `(page ms per call less the work)`,
        );
    }
  },
);

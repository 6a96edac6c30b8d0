// What the first segment boundary costs a batch (issue 12, batch 32): onnxruntime-web (WASM, 1 thread) in Node, a
// bundle's segment 0 run for its outputs (the cut the next segment reads and the exit head's probabilities), for the
// cut alone and for the head alone, beside segment 1 and the full model, on random inputs of the bundle's input size.
// Means over 20 runs after `--warmup` untimed ones (default 40: onnxruntime's first runs of a session are several times
// slower, as WebAssembly tiers up: with 3 the first case measured came out 4x its steady time).
//   node bench/segment-boundary.mjs <bundle dir> <full model.onnx> [--batch 32] [--warmup 40]
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-web';

const [dir, modelPath] = process.argv.slice(2);
if (!dir || !modelPath) {
  console.error('usage: node bench/segment-boundary.mjs <bundle dir> <full model.onnx> [--batch 32]');
  process.exit(2);
}
const at = process.argv.indexOf('--batch');
const batch = at > 0 ? Number(process.argv[at + 1]) : 32;
const wat = process.argv.indexOf('--warmup');
const warmup = wat > 0 ? Number(process.argv[wat + 1]) : 40;
ort.env.wasm.numThreads = 1;
const opt = { executionProviders: ['wasm'] };
const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
const open = (file) => ort.InferenceSession.create(fs.readFileSync(file), opt);
const [s0, s1, full] = await Promise.all([
  open(path.join(dir, manifest.segments[0].file)),
  open(path.join(dir, manifest.segments[1].file)),
  open(modelPath),
]);
const { channels, height, width } = manifest.input;
const dims = [batch, channels, height, width];
const x = new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, b) => a * b) }, Math.random), dims);
const time = async (f, n = 20) => {
  for (let i = 0; i < warmup; i++) await f();
  const t = performance.now();
  for (let i = 0; i < n; i++) await f();
  return (performance.now() - t) / n;
};
const cutName = manifest.segments[0].output;
const heads = s0.outputNames.filter((n) => n !== cutName);
let cut;
const ms = {
  full: await time(() => full.run({ [full.inputNames[0]]: x })),
  segment0: await time(async () => void (cut = (await s0.run({ [s0.inputNames[0]]: x }))[cutName])),
  segment0CutOnly: await time(() => s0.run({ [s0.inputNames[0]]: x }, [cutName])),
  segment0HeadOnly: await time(() => s0.run({ [s0.inputNames[0]]: x }, heads)),
};
ms.segment1 = await time(() => s1.run({ [s1.inputNames[0]]: cut }));
const share = manifest.segments[0].macs / manifest.backbone.macs;
console.log(`batch ${batch}, cut ${cutName} ${cut.dims.join('x')} (${(cut.data.byteLength / 2 ** 20).toFixed(1)} MiB)`);
for (const [k, v] of Object.entries(ms)) console.log(`${k.padEnd(17)} ${v.toFixed(2)} ms`);
console.log(`segment 0 by its MACs share (${share.toFixed(3)}) of the full model: ${(share * ms.full).toFixed(2)} ms`);

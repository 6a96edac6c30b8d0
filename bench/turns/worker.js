// Worker of bench/turns.mjs: the shipped model (or another) as one plain onnxruntime-web session, nothing else.
// onmessage is set before onnxruntime is imported, so that no message is lost while the import runs.
const ortLoaded = import('/ort/ort.wasm.min.mjs');
let ort;
let session;
self.onmessage = async (ev) => {
  const m = ev.data;
  ort ??= await ortLoaded;
  if (m.type === 'init') {
    try {
      ort.env.wasm.numThreads = m.threads;
      ort.env.wasm.wasmPaths = '/ort/';
      const options = {
        executionProviders: ['wasm'],
        graphOptimizationLevel: 'all',
        ...(m.extra ? { extra: m.extra } : {}),
      };
      const bytes = await (await fetch(m.model)).arrayBuffer();
      session = await ort.InferenceSession.create(bytes, options);
      self.postMessage({ ok: true });
    } catch (e) {
      self.postMessage({ error: String(e) });
    }
    return;
  }
  const t0 = performance.now();
  const out = await session.run({
    [session.inputNames[0]]: new ort.Tensor('float32', new Float32Array(m.data), m.dims),
  });
  const runMs = performance.now() - t0;
  const v = out[session.outputNames[0]].data;
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  self.postMessage({ best, runMs });
};

// A stand-in selfxit worker for the tests: speaks comlink's wire format, answers init() like the real
// worker, then dies with an uncaught error on classify() (a call on the classify port connect() hands it) — the page
// must reject every pending call (WORKER_DIED).
const state = {
  backend: 'wasm',
  threads: 1,
  crossOriginIsolated: true,
  sessions: [true, false, false],
  cachedSegments: [false, false, false],
  manifestFromCache: false,
  cacheEnabled: false,
};
const crash = () =>
  setTimeout(() => {
    throw new Error('simulated worker crash');
  }, 100);
self.addEventListener('message', async (ev) => {
  const { id, type, path } = ev.data ?? {};
  if (type !== 'APPLY' || !Array.isArray(path)) return;
  if (path[0] === 'init') {
    const manifest = await (await fetch('/e2e/.bundles/tiny/manifest.json')).json();
    self.postMessage({
      id,
      type: 'RAW',
      value: { manifest, manifestHash: '0'.repeat(64), state },
    });
  } else if (path[0] === 'connect') {
    const port = ev.data.argumentList[0].value;
    port.onmessage = crash;
    self.postMessage({ id, type: 'RAW', value: undefined });
  } else if (path[0] === 'classify') {
    crash();
  }
});

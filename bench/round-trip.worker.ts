// Echo workers of the round-trip micro-benchmark (bench/round-trip.ts): the cheapest page ↔ worker round trip, by
// plain postMessage (worker name 'raw', on the worker or on a MessagePort) or through comlink; each replies a small result without any work.
import { expose } from 'comlink';

const scope = globalThis as unknown as DedicatedWorkerGlobalScope;
const reply = (data: Uint8ClampedArray): { index: number; confidence: number } => ({ index: data[0]!, confidence: 1 });
type Echo = MessageEvent<{ id: number; data: Uint8ClampedArray; port?: MessagePort }>;
if (scope.name === 'raw')
  scope.onmessage = (ev: Echo) => {
    const port = ev.data.port;
    // a MessagePort sent once: echoes on it too
    if (port) port.onmessage = (e: Echo) => port.postMessage({ id: e.data.id, ...reply(e.data.data) });
    else scope.postMessage({ id: ev.data.id, ...reply(ev.data.data) });
  };
else expose({ run: reply });

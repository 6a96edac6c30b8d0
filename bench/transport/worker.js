// bench/transport.mjs's worker: answers the page's calls after `work` ms of busy work, over the lane it is told to
// serve (index.html says what each lane is).
let ctl;
let data;
let lane = 'message';
let work = 0;
const busy = (ms) => {
  const t = performance.now();
  while (performance.now() - t < ms);
};
const answer = () => {
  Atomics.store(ctl, 0, 2);
  Atomics.notify(ctl, 0);
};
/** Waits until the control word is `value` or STOP (3, the page's end of the lane); returns whether it is `value`. */
async function waitFor(value) {
  for (;;) {
    const now = Atomics.load(ctl, 0);
    if (now === value || now === 3) return now === value;
    const w = Atomics.waitAsync(ctl, 0, now);
    if (w.async) await w.value;
  }
}
async function serve(replyByMessage) {
  while (await waitFor(1)) {
    busy(work);
    void data[0];
    if (replyByMessage) {
      Atomics.store(ctl, 0, 2);
      postMessage('answer');
    } else answer();
  }
  postMessage('stopped');
}
onmessage = (e) => {
  const m = e.data;
  if (m.kind === 'init') {
    ctl = new Int32Array(m.sab, 0, 2);
    data = new Float32Array(m.sab, 8);
    postMessage('ready');
  } else if (m.kind === 'lane') {
    ({ lane, work } = m);
    postMessage('started');
    if (lane === 'waitAsync') void serve(false);
    else if (lane === 'waitAsync-reply-message') void serve(true);
  } else if (m.kind === 'stop') {
    postMessage('stopped'); // a message lane's end (an atomics lane ends on STOP in the control word)
  } else if (m.kind === 'call') {
    busy(work);
    if (lane === 'message-reply-atomics') answer();
    else postMessage({ buf: m.buf }, [m.buf.buffer]);
  }
};

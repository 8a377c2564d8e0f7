// worker_threads peer: a MessagePort between this thread and a worker thread of the same process.
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { SELF, argv, checkBytes, checkObject, count, isJson, makeBytes, makeObject, messageRtt, metric, rate, size } from './common.mjs';

export async function run() {
  if (!isMainThread) {
    const port = parentPort;
    if (metric === 'rtt') {
      port.on('message', (m) => port.postMessage(m));
      return;
    }
    // MessagePort has no backpressure: a credit window keeps at most 4096 messages in flight.
    let credits = 4096;
    let wake = null;
    port.on('message', (c) => { credits += c; wake?.(); });
    for (let i = 0; i < count; i++) {
      while (credits === 0) await new Promise((r) => (wake = r));
      credits--;
      port.postMessage(isJson ? makeObject(i) : makeBytes(i, size));
    }
    return;
  }
  const w = new Worker(SELF, { workerData: { argv: [...argv.slice(0, 5), 'child'] } });
  let r;
  if (metric === 'rtt') {
    r = await messageRtt(w, (m) => w.postMessage(m), Buffer.alloc(64, 1));
  } else {
    r = await new Promise((resolve, reject) => {
      let i = 0;
      let t0 = 0;
      w.on('message', (m) => {
        try {
          if (isJson) checkObject(m, i);
          else checkBytes(Buffer.from(m.buffer, m.byteOffset, m.byteLength), i, size);
        } catch (e) {
          reject(e);
        }
        if (i === 0) t0 = performance.now();
        if (++i % 1024 === 0) w.postMessage(1024);
        if (i === count) resolve(rate(performance.now() - t0, count - 1));
      });
    });
  }
  await w.terminate();
  return r;
}

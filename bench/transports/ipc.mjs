// child_process IPC peer (fork): transport `ipc-json` uses serialization 'json', `ipc-advanced`
// serialization 'advanced' (the structured clone algorithm).
import { fork } from 'node:child_process';
import { SELF, argv, checkBytes, checkObject, count, isJson, makeBytes, makeObject, messageRtt, metric, pinChild, rate, role, size, transport } from './common.mjs';

export async function run() {
  const serialization = transport === 'ipc-json' ? 'json' : 'advanced';
  const payload = (i) => (isJson ? makeObject(i) : serialization === 'json' ? { i, s: 'x'.repeat(size) } : makeBytes(i, size));
  if (role === 'child') {
    if (metric === 'rtt') {
      process.on('message', (m) => process.send(m));
      return;
    }
    for (let i = 0; i < count; i++) {
      // process.send has no 'drain': past its buffer it returns false; then wait for the callback.
      let done;
      const p = new Promise((r) => (done = r));
      if (!process.send(payload(i), () => done())) await p;
    }
    return;
  }
  const child = pinChild(fork(SELF, [...argv.slice(0, 5), 'child'], { serialization, stdio: 'inherit' }));
  let r;
  if (metric === 'rtt') {
    r = await messageRtt(child, (m) => child.send(m), serialization === 'json' ? { s: 'x'.repeat(56) } : Buffer.alloc(64, 1));
  } else {
    r = await new Promise((resolve, reject) => {
      let i = 0;
      let t0 = 0;
      child.on('message', (m) => {
        try {
          if (isJson) checkObject(m, i);
          else if (serialization === 'json') { if (m.i !== i || m.s.length !== size) throw new Error('corrupt'); }
          else checkBytes(Buffer.from(m.buffer, m.byteOffset, m.byteLength), i, size);
        } catch (e) {
          reject(e);
        }
        if (i === 0) t0 = performance.now();
        if (++i === count) resolve(rate(performance.now() - t0, count - 1));
      });
    });
  }
  child.kill();
  return r;
}

// What the byte-stream peers (uds, tcp, pipe) share: length-prefixed frames, the producer side (the
// child) and the consumer side (this process), and the socket trial of uds and tcp.
import { once } from 'node:events';
import { createServer } from 'node:net';
import { spawn } from 'node:child_process';
import { SELF, WARM, addr, argv, checkBytes, checkObject, count, isJson, makeBytes, makeObject, metric, pinChild, rate, role, size, stats } from './common.mjs';

// Length-prefixed framing for byte streams (sockets, pipes) ------------------------------------------
export function framer(onFrame) {
  // Keeps chunks in a list and joins only what a complete frame needs (no quadratic concat).
  const chunks = [];
  let have = 0;
  let need = -1;
  const take = (n) => {
    const first = chunks[0];
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) chunks.shift();
      else chunks[0] = first.subarray(n);
      have -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) chunks.shift();
      else chunks[0] = c.subarray(k);
    }
    have -= n;
    return out;
  };
  return (chunk) => {
    chunks.push(chunk);
    have += chunk.length;
    for (;;) {
      if (need < 0) {
        if (have < 4) return;
        need = take(4).readUInt32LE(0);
      }
      if (have < need) return;
      const payload = take(need);
      need = -1;
      onFrame(payload);
    }
  };
}
export function frame(payload) {
  const f = Buffer.allocUnsafe(4 + payload.length);
  f.writeUInt32LE(payload.length, 0);
  payload.copy(f, 4);
  return f;
}
export const encodeMsg = (i) => (isJson ? Buffer.from(JSON.stringify(makeObject(i))) : makeBytes(i, size));
const decodeCheck = (payload, i) => (isJson ? checkObject(JSON.parse(payload.toString()), i) : checkBytes(payload, i, size));

// Stream transports (uds, tcp, pipe): producer writes frames with backpressure ------------------------
async function streamProducer(sock) {
  if (metric === 'rtt') {
    sock.on('data', framer((p) => sock.write(frame(p))));
    return;
  }
  for (let i = 0; i < count; i++) {
    if (!sock.write(frame(encodeMsg(i)))) await once(sock, 'drain');
  }
}

export async function streamConsumer(sock, writeSock) {
  if (metric === 'rtt') {
    const samples = [];
    let resolveRound;
    sock.on('data', framer(() => resolveRound()));
    const ping = Buffer.alloc(64, 1);
    for (let i = 0; i < WARM + count; i++) {
      const t = performance.now();
      await new Promise((r) => { resolveRound = r; writeSock.write(frame(ping)); });
      if (i >= WARM) samples.push(performance.now() - t);
    }
    return stats(samples);
  }
  return new Promise((resolve, reject) => {
    let i = 0;
    let t0 = 0;
    sock.on('data', framer((p) => {
      try {
        decodeCheck(p, i);
      } catch (e) {
        reject(e);
      }
      if (i === 0) t0 = performance.now();
      if (++i === count) resolve(rate(performance.now() - t0, count - 1));
    }));
  });
}

/**
 * A trial over a socket (uds, tcp). This process listens (`listen(server)`), starts the child with
 * the address (`address(server)`, once listening) and consumes; the child connects
 * (`connect(addr)`) and produces.
 */
export async function socketTrial({ connect, listen, address }) {
  if (role === 'child') {
    const sock = connect(addr);
    sock.setNoDelay?.(true);
    await once(sock, 'connect');
    await streamProducer(sock);
    if (metric !== 'rtt') sock.end();
    return;
  }
  const server = createServer();
  listen(server);
  await once(server, 'listening');
  const where = address(server);
  const child = pinChild(spawn(process.execPath, [SELF, ...argv.slice(0, 5), 'child', where], { stdio: 'inherit' }));
  const [sock] = await once(server, 'connection');
  sock.setNoDelay?.(true);
  const r = await streamConsumer(sock, sock);
  sock.destroy();
  server.close();
  child.kill();
  return r;
}

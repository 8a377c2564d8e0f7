// What every benchmark peer (bench/transports/<peer>.mjs) of one bench/fixtures/transport.mjs trial
// shares: the trial's arguments, the payloads and their verification, the round-trip statistics and
// the throughput rate, the child's CPU pinning and the result line. Every peer measures with these,
// so figures stay comparable from one peer to the next.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isMainThread, workerData } from 'node:worker_threads';

/** The entry point: a peer starts its other side (a process or a worker thread) as `transport.mjs ... child`. */
export const SELF = fileURLToPath(new URL('../fixtures/transport.mjs', import.meta.url));

// Arguments: `<transport> <mode> <metric> <size> <count>`, then `child [addr]` in a peer's other side.
export const argv = isMainThread ? process.argv.slice(2) : workerData.argv;
export const [transport, mode, metric, sizeArg, countArg, role, addr] = argv;
export const count = Number(countArg);
export const isJson = sizeArg === 'json';
export const size = isJson ? 0 : Number(sizeArg);
export const WARM = metric === 'rtt' ? Math.min(2000, count) : 0;

// Payloads --------------------------------------------------------------------------------------------
export function makeObject(i) {
  return { id: i, name: `item-${i}`, kind: 'order', tags: ['alpha', 'beta', 'gamma'], price: 1234.5, qty: 3, active: true, ts: 1732435200000 + i, owner: { id: 42, name: 'Ada Lovelace', email: 'ada@example.com' } };
}
export function makeBytes(i, n, reuse) {
  const b = reuse ?? Buffer.allocUnsafe(n);
  b.writeUInt32LE(i >>> 0, 0);
  if (n >= 8) b.writeUInt32LE(i >>> 0, n - 4);
  return b;
}
export function checkBytes(b, i, n) {
  if (b.length !== n || b.readUInt32LE(0) !== i >>> 0 || (n >= 8 && b.readUInt32LE(n - 4) !== i >>> 0)) throw new Error(`payload ${i} corrupt`);
}
export function checkObject(o, i) {
  if (!o || o.id !== i || o.owner?.id !== 42) throw new Error(`object ${i} corrupt`);
}
export function pinChild(child) {
  const cpu = process.env.BENCH_CHILD_CPU;
  if (cpu !== undefined && cpu !== '') execFileSync('taskset', ['-a', '-p', '-c', cpu, String(child.pid)], { stdio: 'ignore' });
  return child;
}
export const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');

// Timing ----------------------------------------------------------------------------------------------
export function stats(samples) {
  const s = Float64Array.from(samples).sort();
  return { median_us: s[s.length >> 1] * 1000, p99_us: s[Math.floor(s.length * 0.99)] * 1000 };
}

export function rate(ms, n) {
  const perSec = (n / ms) * 1000;
  if (isJson || size <= 64) return { value: perSec, unit: 'msg/s', count };
  return { value: (perSec * size) / 1e6, unit: 'MB/s', count };
}

/** Round trips over a peer that emits 'message' (a child process, a worker): send a ping, await the echo. */
export async function messageRtt(peer, send, ping) {
  const samples = [];
  for (let i = 0; i < WARM + count; i++) {
    const t = performance.now();
    await new Promise((res) => { peer.once('message', res); send(ping); });
    if (i >= WARM) samples.push(performance.now() - t);
  }
  return stats(samples);
}

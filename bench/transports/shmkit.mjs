// shmkit peer: single-producer/single-consumer channels. Modes: spin (default tuning), async (spin 0,
// async waits), view (zero-copy receive), jsonb (like spin, with the jsonb codec instead of json;
// json size only), into (receiveInto one reused buffer). Round trips use two channels (request and
// response); throughput one, whose capacity BENCH_CAP=<bytes> overrides.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Channel, configure } from 'shmkit';
import { SELF, WARM, addr, argv, checkBytes, checkObject, count, isJson, makeBytes, makeObject, metric, mode, pinChild, rate, role, size, stats } from './common.mjs';

export async function run() {
  const asyncMode = mode === 'async';
  if (asyncMode) configure({ spinMicros: 0 });
  const codec = isJson ? (mode === 'jsonb' ? 'jsonb' : 'json') : 'bytes';
  if (role === 'child') {
    if (metric === 'rtt') {
      const req = Channel.open(`${addr}.q`, { codec });
      const res = Channel.open(`${addr}.r`, { codec });
      req.claim('consumer');
      res.claim('producer');
      for (let i = 0; i < WARM + count; i++) {
        const m = asyncMode ? await req.receive() : req.receiveSync();
        if (asyncMode) await res.send(m);
        else res.sendSync(m);
      }
      return;
    }
    const ch = Channel.open(addr, { codec });
    ch.claim('producer');
    const reuse = isJson ? null : Buffer.allocUnsafe(size);
    for (let i = 0; i < count; i++) {
      const m = isJson ? makeObject(i) : makeBytes(i, size, reuse);
      if (asyncMode) {
        if (!ch.trySend(m)) await ch.send(m);
      } else ch.sendSync(m);
    }
    ch.close();
    return;
  }
  const name = `bt${process.pid.toString(36)}`;
  if (metric === 'rtt') {
    const req = Channel.create(`${name}.q`, { capacity: 1 << 16, producers: 'single', consumers: 'single', codec });
    const res = Channel.create(`${name}.r`, { capacity: 1 << 16, producers: 'single', consumers: 'single', codec });
    req.claim('producer');
    res.claim('consumer');
    const child = pinChild(spawn(process.execPath, [SELF, ...argv.slice(0, 5), 'child', name], { stdio: 'inherit' }));
    const samples = [];
    const ping = Buffer.alloc(64, 1);
    try {
      for (let i = 0; i < WARM + count; i++) {
        const t = performance.now();
        if (asyncMode) {
          await req.send(ping);
          await res.receive();
        } else {
          req.sendSync(ping);
          res.receiveSync();
        }
        if (i >= WARM) samples.push(performance.now() - t);
      }
    } finally {
      Channel.unlink(`${name}.q`);
      Channel.unlink(`${name}.r`);
    }
    await once(child, 'exit');
    return stats(samples);
  }
  const capacity = Number(process.env.BENCH_CAP) || Math.max(1 << 22, (size + 64) * 8);
  const ch = Channel.create(name, { capacity, producers: 'single', consumers: 'single', codec });
  ch.claim('consumer');
  const child = pinChild(spawn(process.execPath, [SELF, ...argv.slice(0, 5), 'child', name], { stdio: 'inherit' }));
  let t0 = 0;
  let i = 0;
  try {
    const first = () => {
      if (i === 0) t0 = performance.now();
    };
    if (mode === 'into') {
      const target = Buffer.allocUnsafe(size);
      while (i < count) {
        const n = ch.receiveIntoSync(target);
        first();
        checkBytes(target.subarray(0, n), i, size);
        i++;
      }
    } else if (mode === 'view') {
      while (i < count) {
        const v = ch.receiveViewSync();
        first();
        checkBytes(v.bytes, i, size);
        v.release();
        i++;
      }
    } else if (asyncMode) {
      for await (const m of ch) {
        first();
        if (isJson) checkObject(m, i);
        else checkBytes(m, i, size);
        if (++i === count) break;
      }
    } else {
      while (i < count) {
        const m = ch.receiveSync();
        first();
        if (isJson) checkObject(m, i);
        else checkBytes(m, i, size);
        i++;
      }
    }
  } finally {
    Channel.unlink(name);
  }
  const r = rate(performance.now() - t0, count - 1);
  await once(child, 'exit');
  ch.close();
  return r;
}

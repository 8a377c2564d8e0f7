#!/usr/bin/env node
// `npm start`: a producer process and a consumer process talk through a shmkit channel while this
// process watches the channel's shared statistics live; then a quick benchmark against the other
// local transports. About 30 seconds.
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Channel } from 'shmkit';

const SELF = fileURLToPath(import.meta.url);
const [role, name] = process.argv.slice(2);
const SECONDS = Number(process.env.DEMO_SECONDS ?? 8);

if (role === 'producer') {
  // Sends JSON orders as fast as the consumer takes them (backpressure), for SECONDS.
  const ch = Channel.open(name, { codec: 'json' });
  const end = Date.now() + SECONDS * 1000;
  let i = 0;
  while (Date.now() < end) {
    for (let k = 0; k < 1000; k++, i++) {
      const order = { id: i, item: `widget-${i % 97}`, qty: 1 + (i % 5), price: 9.99 };
      // When the ring is full, wait, but give up (ERR_SHMKIT_PEER_GONE) if the consumer died.
      if (!ch.trySend(order)) ch.sendSync(order, { failIfPeerGone: true });
    }
  }
  ch.end(); // the consumer drains what is queued, then sees the end
  ch.close();
  process.send({ sent: i });
} else if (role === 'consumer') {
  const ch = Channel.open(name, { codec: 'json' });
  let n = 0;
  let bad = 0;
  let qty = 0;
  for await (const order of ch) {
    if (order.id !== n || order.item !== `widget-${n % 97}`) bad++;
    qty += order.qty;
    n++;
  }
  ch.close();
  process.send({ received: n, bad, qty });
} else {
  const name = `demo${process.pid.toString(36)}`;
  const ch = Channel.create(name, { capacity: 1 << 20, producers: 'single', consumers: 'single', codec: 'json' });
  console.log(`shmkit demo: two processes exchange JSON orders through the shared-memory channel "${name}" for ${SECONDS} s.\n`);
  const consumer = fork(SELF, ['consumer', name]);
  const producer = fork(SELF, ['producer', name]);
  const results = {};
  for (const [who, p] of [['consumer', consumer], ['producer', producer]]) p.on('message', (m) => Object.assign(results, m, { [who]: true }));
  let last = { t: performance.now(), received: 0 };
  const tty = process.stdout.isTTY;
  const show = () => {
    const s = ch.stats();
    const now = performance.now();
    const rate = ((s.received - last.received) / (now - last.t)) * 1000;
    last = { t: now, received: s.received };
    const line = `  sent ${s.sent.toLocaleString()}  received ${s.received.toLocaleString()}  queued ${s.depth}  ${(rate / 1e6).toFixed(2)} M msg/s  producers ${s.producers}  consumers ${s.consumers}`;
    if (tty) process.stdout.write(`\r${line}      `);
    else console.log(line);
  };
  const timer = setInterval(show, tty ? 250 : 1000);
  await Promise.all([once(producer, 'exit'), once(consumer, 'exit')]);
  clearInterval(timer);
  show();
  Channel.unlink(name);
  ch.close();
  const ok = results.received === results.sent && results.bad === 0;
  console.log(`\n\n${ok ? 'OK' : 'MISMATCH'}: ${results.sent?.toLocaleString()} orders sent, ${results.received?.toLocaleString()} received in order and verified, ${results.bad} bad.`);
  console.log(`That is ${((results.received / SECONDS) / 1e6).toFixed(2)} M JSON messages per second between two processes, with backpressure.\n`);
  console.log('Now a quick comparison with the other ways two local processes can talk (about 30 s)...\n');
  const bench = spawn(process.execPath, [join(dirname(SELF), '..', 'bench', 'run.mjs'), '--quick', '--silent', '--patterns', 'none'], { stdio: 'inherit' });
  const [code] = await once(bench, 'exit');
  console.log('\nFull run with 3 interleaved repetitions: npm run bench');
  process.exitCode = ok && code === 0 ? 0 : 1;
}

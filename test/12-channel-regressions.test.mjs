// Regressions for channel bugs found in review; each failed (lost, corrupt or blocked data) before its fix.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Channel, ErrorCodes, ShmStream } from 'shmkit';
import { cleanupAll, uniq, watchdog, sleep } from './helpers.mjs';

after(cleanupAll);

for (const mode of ['single', 'multi']) {
  test(`a loan committed after a receive on the same handle keeps the channel intact (${mode})`, () => {
    const name = uniq('lr');
    const ch = Channel.create(name, { capacity: 4096, producers: mode, consumers: mode, codec: 'utf8' });
    for (const s of ['a', 'b', 'c']) ch.send(s);
    const loan = ch.loan(16);
    assert.equal(ch.tryReceive(), 'a');
    loan.bytes.write('LOAN');
    loan.commit(4);
    assert.deepEqual([ch.receive(), ch.receive(), ch.receive()], ['b', 'c', 'LOAN']);
    ch.disconnect();
    Channel.unlink(name);
  });

  test(`a view released after a send on the same handle loses nothing (${mode})`, () => {
    const name = uniq('vs');
    const ch = Channel.create(name, { capacity: 4096, producers: mode, consumers: mode, codec: 'utf8' });
    for (const s of ['a', 'b', 'c']) ch.send(s);
    const v = ch.tryReceiveView();
    ch.send('d');
    assert.equal(v.bytes.toString(), 'a');
    v.release();
    assert.deepEqual([ch.receive(), ch.receive(), ch.receive()], ['b', 'c', 'd']);
    ch.disconnect();
    Channel.unlink(name);
  });

  test(`a poison message is consumed and reported once; a batch delivers the good ones first (${mode})`, () => {
    const name = uniq('ps');
    const raw = Channel.create(name, { capacity: 4096, producers: mode, consumers: mode });
    const js = Channel.open(name, { codec: 'json' });
    for (const s of ['1', '2', '{bad', '3', '{bad', '4']) raw.send(Buffer.from(s));
    assert.deepEqual(js.receiveBatch(10), [1, 2]);
    assert.throws(() => js.receiveBatch(10), (e) => e.code === ErrorCodes.DECODE);
    assert.equal(js.receive(), 3);
    assert.throws(() => js.receive(), (e) => e.code === ErrorCodes.DECODE);
    assert.equal(js.receive(), 4);
    raw.disconnect();
    js.disconnect();
    Channel.unlink(name);
  });
}

test('close() by another handle of a single-producer channel: a send either lands before the end or fails', () => {
  const name = uniq('cr');
  const p = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single' });
  const other = Channel.open(name);
  p.send(Buffer.from('x'));
  other.close();
  assert.throws(() => p.send(Buffer.from('y')), (e) => e.code === ErrorCodes.CLOSED);
  assert.throws(() => p.trySend(Buffer.from('z')), (e) => e.code === ErrorCodes.CLOSED);
  const c = Channel.open(name);
  assert.equal(c.receive().toString(), 'x');
  assert.throws(() => c.receive(), (e) => e.code === ErrorCodes.CLOSED);
  for (const h of [p, other, c]) h.disconnect();
  Channel.unlink(name);
});

test('receiveAsync on a multi-consumer channel does not block the event loop while another consumer holds a view', async () => {
  const name = uniq('mv');
  const ch = Channel.create(name, { capacity: 4096 });
  const a = Channel.open(name);
  const b = Channel.open(name);
  ch.send(Buffer.from('one'));
  ch.send(Buffer.from('two'));
  const view = a.tryReceiveView();
  let ticks = 0;
  const t = setInterval(() => ticks++, 1);
  const p = b.receiveAsync({ timeout: 10000 });
  await sleep(50);
  assert.ok(ticks > 5, `the loop ran (${ticks} ticks) while b waited for the lock`);
  view.release();
  assert.equal((await watchdog(p, 10000, 'receiveAsync')).toString(), 'two');
  clearInterval(t);
  for (const h of [ch, a, b]) h.disconnect();
  Channel.unlink(name);
});

test('a ShmStream end destroyed without end() is seen as gone by the other end', async () => {
  const name = uniq('sd');
  const a = ShmStream.create(name);
  const b = ShmStream.connect(name);
  const err = new Promise((resolve) => a.once('error', resolve));
  a.on('data', () => {});
  await sleep(20);
  b.destroy();
  assert.equal((await watchdog(err, 30000, 'peer gone')).code, ErrorCodes.PEER_GONE);
});

test('multi-producer/consumer lock waits honour timeout; try* never wait for the lock', async () => {
  const name = uniq('lt');
  const ch = Channel.create(name, { capacity: 4096 });
  ch.send(Buffer.from('a'));
  ch.send(Buffer.from('b'));
  // Another thread (its own owner identity) holds a view (consumer lock) and a loan (producer lock).
  const { Worker } = await import('node:worker_threads');
  const w = new Worker(`
    const { parentPort, workerData } = require('node:worker_threads');
    const { Channel } = require(workerData.pkg);
    const rx = Channel.open(workerData.name);
    const tx = Channel.open(workerData.name);
    const view = rx.tryReceiveView();
    const loan = tx.loan(8);
    parentPort.postMessage('holding');
    parentPort.once('message', () => { loan.abort(); view.release(); rx.disconnect(); tx.disconnect(); parentPort.postMessage('released'); });
  `, { eval: true, workerData: { name, pkg: new URL('../dist/index.js', import.meta.url).pathname } });
  const next = () => new Promise((res, rej) => { w.once('message', res); w.once('error', rej); });
  await watchdog(next(), 30000, 'worker holding');
  assert.throws(() => ch.receive({ timeout: 30 }), (e) => e.code === ErrorCodes.TIMEOUT);
  assert.equal(ch.tryReceive(), undefined, 'tryReceive does not wait for the lock');
  assert.equal(ch.trySend(Buffer.from('c')), false, 'trySend does not wait for the lock');
  assert.throws(() => ch.send(Buffer.from('c'), { timeout: 30 }), (e) => e.code === ErrorCodes.TIMEOUT);
  const released = next();
  w.postMessage('release');
  await watchdog(released, 30000, 'worker released');
  await w.terminate();
  assert.equal(ch.receive({ timeout: 10000 }).toString(), 'b');
  ch.disconnect();
  Channel.unlink(name);
});

test('a handle with its own outstanding view gets BUSY in a multi-consumer channel too; options are validated even when no wait is needed', () => {
  const name = uniq('bv');
  const ch = Channel.create(name, { capacity: 4096 });
  ch.send(Buffer.from('a'));
  ch.send(Buffer.from('b'));
  const v = ch.tryReceiveView();
  assert.throws(() => ch.receive(), (e) => e.code === ErrorCodes.BUSY);
  assert.throws(() => ch.receiveBatch(4), (e) => e.code === ErrorCodes.BUSY);
  v.release();
  assert.throws(() => ch.send(Buffer.from('x'), { timeout: -1 }), (e) => e.argument === 'options.timeout');
  assert.throws(() => ch.receive({ spin: 'fast' }), (e) => e.argument === 'options.spin');
  ch.disconnect();
  Channel.unlink(name);
});

// Channel zero-copy and copy-into receives: views (valid until released), loans (committed in
// place), receiveInto (into the caller's buffer); and the consumer or producer lock that a view or a
// loan holds in a multi-consumer or multi-producer channel: other handles' waits for it honour their
// timeouts and signals, try* never wait for it.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Channel, ErrorCodes, ShmkitError } from 'shmkit';
import { cleanupAll, result, runner, uniq, watchdog, sleep } from './helpers.mjs';

after(cleanupAll);
const crun = runner('channel-child.mjs');
const code = (c) => (e) => e instanceof ShmkitError && e.code === c;

describe('Channel views, loans and receiveInto', () => {
  test('zero-copy: views stay valid until release, loans commit in place', () => {
    const name = uniq('zc');
    const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single' });
    const loan = ch.loanSync(64);
    loan.bytes.write('zero-copy', 0);
    assert.throws(() => ch.sendSync(Buffer.from('x')), code(ErrorCodes.BUSY));
    loan.commit(9);
    assert.throws(() => loan.commit(), code(ErrorCodes.BUSY));
    const l2 = ch.loanSync(10);
    l2.abort();
    ch.sendSync(Buffer.from('second'));
    const v = ch.receiveViewSync();
    assert.equal(v.bytes.toString(), 'zero-copy');
    assert.equal(ch.stats().received, 0, 'not consumed before release');
    assert.throws(() => ch.receiveSync(), code(ErrorCodes.BUSY));
    v.release();
    v.release();
    assert.equal(ch.receiveSync().toString(), 'second');
    assert.equal(ch.stats().received, 2);
    assert.throws(() => ch.loanSync(5000), (e) => e.argument === 'size');
    ch.close();
    Channel.unlink(name);
  });

  for (const multi of [false, true]) {
    test(`loan() waits for space without blocking the event loop, tryLoan() never waits, a commit after close() is CLOSED (${multi ? 'multi' : 'single'}-producer)`, async () => {
      const name = uniq('ln');
      const ch = Channel.create(name, { capacity: 4096, producers: multi ? 'multi' : 'single' });
      const rx = Channel.open(name);
      try {
        const max = ch.maxMessageSize;
        let fitted = 0;
        for (let l = ch.tryLoan(max); l !== null; l = ch.tryLoan(max)) {
          l.commit();
          fitted++;
        }
        assert.ok(fitted >= 1 && fitted <= 4, `maximal loans fit until the ring is full (${fitted}); then tryLoan() says null at once`);
        const pending = ch.loan(max, { timeout: 30_000 });
        let ticked = false;
        setImmediate(() => { ticked = true; });
        await new Promise((r) => setImmediate(r));
        assert.ok(ticked, 'the event loop runs while loan() waits');
        assert.equal(rx.receiveSync().length, max); // frees the space: the loan gets it
        const b = await watchdog(pending, 30_000, 'loan()');
        b.bytes.fill(7, 0, 5);
        b.commit(5);
        for (let i = 1; i < fitted; i++) assert.equal(rx.receiveSync().length, max);
        assert.deepEqual([...rx.receiveSync()], [7, 7, 7, 7, 7]);
        await assert.rejects(ch.loan(16, { signal: AbortSignal.abort() }), (e) => e.code === 'ABORT_ERR');
        const c = await ch.loan(16, { timeout: 30_000 });
        ch.close();
        assert.throws(() => c.commit(), code(ErrorCodes.CLOSED));
        assert.equal(rx.tryReceive(), undefined, 'nothing of the given-up loan was published');
      } finally {
        if (!ch.closed) ch.close();
        rx.close();
        Channel.unlink(name);
      }
    });
  }

  test('receiveInto copies into the caller\'s buffer; a message longer than it stays queued', async () => {
    const name = uniq('into');
    const ch = Channel.create(name, { capacity: 4096, codec: 'utf8' });
    const target = Buffer.alloc(8, 0xee);
    assert.equal(ch.tryReceiveInto(target), undefined, 'empty');
    ch.sendSync('héllo'); // 6 bytes as sent: receiveInto gives the encoded bytes, the codec is not applied
    ch.sendSync('a longer message');
    ch.sendSync('');
    assert.equal(ch.receiveIntoSync(target), 6);
    assert.equal(target.subarray(0, 6).toString(), 'héllo');
    assert.deepEqual([...target.subarray(6)], [0xee, 0xee], 'bytes past the message are untouched');
    assert.throws(() => ch.receiveIntoSync(target), (e) => e.code === ErrorCodes.TOO_LARGE && /16 bytes/.test(e.message));
    assert.equal(ch.stats().depth, 2, 'the long message stays queued');
    const big = new Uint8Array(64);
    assert.equal(await watchdog(ch.receiveInto(big), 10000, 'receiveInto'), 16);
    assert.equal(Buffer.from(big.subarray(0, 16)).toString(), 'a longer message');
    assert.equal(ch.tryReceiveInto(target), 0, 'a 0-byte message');
    assert.throws(() => ch.receiveIntoSync('nope'), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && e.argument === 'target');
    ch.sendSync('x');
    assert.throws(() => ch.receiveIntoSync(target, { timeout: -1 }), (e) => e.argument === 'options.timeout');
    await assert.rejects(watchdog(ch.receiveInto(target, { signal: 'no' }), 10000, 'receiveInto, bad signal'), (e) => e.argument === 'options.signal');
    assert.throws(() => ch.receiveViewSync({ timeout: 'soon' }), (e) => e.argument === 'options.timeout');
    assert.equal(ch.tryReceiveInto(target), 1, 'bad options consumed nothing');
    assert.throws(() => ch.receiveIntoSync(target, { timeout: 20 }), (e) => e.code === ErrorCodes.TIMEOUT);
    const ac = new AbortController();
    const pending = ch.receiveInto(target, { signal: ac.signal });
    ac.abort();
    await assert.rejects(watchdog(pending, 10000, 'aborted receiveInto'), (e) => e.code === ErrorCodes.ABORTED);
    const view = (ch.sendSync('v'), ch.receiveViewSync());
    assert.throws(() => ch.tryReceiveInto(target), (e) => e.code === ErrorCodes.BUSY, 'not while a view is outstanding');
    view.release();
    ch.end();
    assert.throws(() => ch.receiveIntoSync(target), (e) => e.code === ErrorCodes.CLOSED);
    await assert.rejects(watchdog(ch.receiveInto(target), 10000, 'receiveInto at the end'), (e) => e.code === ErrorCodes.CLOSED);
    ch.close();
    Channel.unlink(name);
  });
});

describe('Channel views and loans: regressions', () => {
  // Found in review; failed before its fix (lost, corrupt or blocked data).
  for (const mode of ['single', 'multi']) {
    test(`a loan committed after a receive on the same handle keeps the channel intact (${mode})`, () => {
      const name = uniq('lr');
      const ch = Channel.create(name, { capacity: 4096, producers: mode, consumers: mode, codec: 'utf8' });
      for (const s of ['a', 'b', 'c']) ch.sendSync(s);
      const loan = ch.loanSync(16);
      assert.equal(ch.tryReceive(), 'a');
      loan.bytes.write('LOAN');
      loan.commit(4);
      assert.deepEqual([ch.receiveSync(), ch.receiveSync(), ch.receiveSync()], ['b', 'c', 'LOAN']);
      ch.close();
      Channel.unlink(name);
    });

    test(`a view released after a send on the same handle loses nothing (${mode})`, () => {
      const name = uniq('vs');
      const ch = Channel.create(name, { capacity: 4096, producers: mode, consumers: mode, codec: 'utf8' });
      for (const s of ['a', 'b', 'c']) ch.sendSync(s);
      const v = ch.tryReceiveView();
      ch.sendSync('d');
      assert.equal(v.bytes.toString(), 'a');
      v.release();
      assert.deepEqual([ch.receiveSync(), ch.receiveSync(), ch.receiveSync()], ['b', 'c', 'd']);
      ch.close();
      Channel.unlink(name);
    });
  }

  // Found in review; failed before its fix (lost, corrupt or blocked data).
  test('a handle with its own outstanding view gets BUSY in a multi-consumer channel too; options are validated even when no wait is needed', () => {
    const name = uniq('bv');
    const ch = Channel.create(name, { capacity: 4096 });
    ch.sendSync(Buffer.from('a'));
    ch.sendSync(Buffer.from('b'));
    const v = ch.tryReceiveView();
    assert.throws(() => ch.receiveSync(), (e) => e.code === ErrorCodes.BUSY);
    assert.throws(() => ch.receiveBatchSync(4), (e) => e.code === ErrorCodes.BUSY);
    v.release();
    assert.throws(() => ch.sendSync(Buffer.from('x'), { timeout: -1 }), (e) => e.argument === 'options.timeout');
    assert.throws(() => ch.receiveSync({ spin: 'fast' }), (e) => e.argument === 'options.spin');
    ch.close();
    Channel.unlink(name);
  });

  // Found in review; failed before its fix (lost, corrupt or blocked data).
  test('receive on a multi-consumer channel does not block the event loop while another consumer holds a view', async () => {
    const name = uniq('mv');
    const ch = Channel.create(name, { capacity: 4096 });
    const a = Channel.open(name);
    const b = Channel.open(name);
    ch.sendSync(Buffer.from('one'));
    ch.sendSync(Buffer.from('two'));
    const view = a.tryReceiveView();
    let ticks = 0;
    const t = setInterval(() => ticks++, 1);
    const p = b.receive({ timeout: 10000 });
    await sleep(50);
    assert.ok(ticks > 5, `the loop ran (${ticks} ticks) while b waited for the lock`);
    view.release();
    assert.equal((await watchdog(p, 10000, 'receive')).toString(), 'two');
    clearInterval(t);
    for (const h of [ch, a, b]) h.close();
    Channel.unlink(name);
  });

  // Found in review; failed before its fix (lost, corrupt or blocked data).
  test('multi-producer/consumer lock waits honour timeout; try* never wait for the lock', async () => {
    const name = uniq('lt');
    const ch = Channel.create(name, { capacity: 4096 });
    ch.sendSync(Buffer.from('a'));
    ch.sendSync(Buffer.from('b'));
    // Another thread (its own owner identity) holds a view (consumer lock) and a loan (producer lock).
    const { Worker } = await import('node:worker_threads');
    const w = new Worker(`
      const { parentPort, workerData } = require('node:worker_threads');
      const { Channel } = require(workerData.pkg);
      const rx = Channel.open(workerData.name);
      const tx = Channel.open(workerData.name);
      const view = rx.tryReceiveView();
      const loan = tx.loanSync(8);
      parentPort.postMessage('holding');
      parentPort.once('message', () => { loan.abort(); view.release(); rx.close(); tx.close(); parentPort.postMessage('released'); });
    `, { eval: true, workerData: { name, pkg: new URL('../dist/index.js', import.meta.url).pathname } });
    const next = () => new Promise((res, rej) => { w.once('message', res); w.once('error', rej); });
    await watchdog(next(), 30000, 'worker holding');
    assert.throws(() => ch.receiveSync({ timeout: 30 }), (e) => e.code === ErrorCodes.TIMEOUT);
    assert.equal(ch.tryReceive(), undefined, 'tryReceive does not wait for the lock');
    assert.equal(ch.trySend(Buffer.from('c')), false, 'trySend does not wait for the lock');
    assert.throws(() => ch.sendSync(Buffer.from('c'), { timeout: 30 }), (e) => e.code === ErrorCodes.TIMEOUT);
    const released = next();
    w.postMessage('release');
    await watchdog(released, 30000, 'worker released');
    await w.terminate();
    assert.equal(ch.receiveSync({ timeout: 10000 }).toString(), 'b');
    ch.close();
    Channel.unlink(name);
  });

  // Found by crash and hostile-input testing (waits for an internal lock honour the caller's
  // deadline); failed before its fix.
  test('receive({ timeout: 0 }) and receiveBatch with the consumer lock held by a live process return at once', async () => {
    const name = uniq('rl');
    const ch = Channel.create(name, { capacity: 4096 });
    ch.sendSync(Buffer.from('a'));
    ch.sendSync(Buffer.from('b'));
    const holder = crun('holdView', { name });
    await holder.waitFor(/"held":true/);
    try {
      // In a child: before the fix this looped forever, which no watchdog inside a process can stop.
      const r = await result(crun('receiveNoWait', { name }), 30000, 'receiveNoWait');
      assert.deepEqual(r.codes, Array(5).fill(ErrorCodes.TIMEOUT));
    } finally {
      holder.child.kill('SIGKILL');
      await watchdog(holder.exited, 10000, 'holder exit');
    }
    ch.close();
    Channel.unlink(name);
  });

  // Found by crash and hostile-input testing (waits for an internal lock honour the caller's
  // deadline); failed before its fix.
  test('receive, receiveBatch and receiveView honour timeout and signal while another handle holds a view', async () => {
    const name = uniq('ra');
    const ch = Channel.create(name, { capacity: 4096 });
    const other = Channel.open(name);
    ch.sendSync(Buffer.from('a'));
    ch.sendSync(Buffer.from('b'));
    const view = other.tryReceiveView();
    assert.ok(view);
    await assert.rejects(watchdog(ch.receive({ timeout: 30 }), 10000, 'receive'), code(ErrorCodes.TIMEOUT));
    await assert.rejects(watchdog(ch.receiveBatch(4, { timeout: 30 }), 10000, 'receiveBatch'), code(ErrorCodes.TIMEOUT));
    await assert.rejects(watchdog(ch.receiveView({ timeout: 30 }), 10000, 'receiveView'), code(ErrorCodes.TIMEOUT));
    await assert.rejects(watchdog(ch.receiveInto(Buffer.alloc(16), { timeout: 30 }), 10000, 'receiveInto'), code(ErrorCodes.TIMEOUT));
    const ac = new AbortController();
    const p = ch.receive({ signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(watchdog(p, 10000, 'aborted receive'), code(ErrorCodes.ABORTED));
    // And once the view is released, the same calls take the messages.
    const late = ch.receive({ timeout: 10000 });
    view.release();
    assert.equal((await watchdog(late, 15000, 'receive after release')).toString(), 'b');
    other.close();
    ch.close();
    Channel.unlink(name);
  });
});

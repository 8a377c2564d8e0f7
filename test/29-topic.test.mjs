// Topic: every subscriber gets every message published after it subscribed, in one total order;
// 'block' loses nothing and evicts a dead subscriber; 'overwrite' never waits and counts every loss
// exactly; history, resume from a sequence number, end; SIGKILLed publishers and subscribers; garbage
// in shared memory. Every wait has a watchdog.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeSync } from 'node:fs';
import { ErrorCodes, Topic } from 'shmkit';
import { cleanupAll, result, runner, sleep, uniq, watchdog } from './helpers.mjs';
import { checkMessage, makeMessage } from './fixtures/topic-messages.mjs';

const child = runner('topic-child.mjs');
after(cleanupAll);
const code = (c) => (e) => e.code === c;

describe('Topic in one process', () => {
  test('subscribers start now, from history or from a sequence number, and each gets every later message in order', () => {
    const name = uniq('tp');
    const t = Topic.create(name, { capacity: 8, maxMessageSize: 64, history: 3, codec: 'json' });
    try {
      const early = t.subscribe();
      assert.deepEqual([0, 1, 2, 3, 4].map((i) => t.publishSync({ i })), [0, 1, 2, 3, 4]);
      const now = t.subscribe();
      const hist = t.subscribe({ from: 'history' });
      const resumed = t.subscribe({ from: 1 });
      assert.deepEqual([now.seq, hist.seq, resumed.seq], [5, 2, 1]);
      t.publishSync({ i: 5 });
      const drain = (s) => { const out = []; for (let m = s.tryReceive(); m !== undefined; m = s.tryReceive()) out.push(m.i); return out; };
      assert.deepEqual(drain(early), [0, 1, 2, 3, 4, 5]);
      assert.deepEqual(drain(now), [5]);
      assert.deepEqual(drain(hist), [2, 3, 4, 5]);
      assert.deepEqual(drain(resumed), [1, 2, 3, 4, 5]);
      assert.equal(early.lag, 0);
      assert.throws(() => t.subscribe({ from: 99 }), (e) => e.argument === 'options.from');
      assert.throws(() => t.subscribe({ from: -1 }), (e) => e.argument === 'options.from');
      assert.equal(t.published, 6);
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test("'block': a full log makes tryPublish say -1 and publish wait, without blocking the event loop, until the slowest subscriber reads", async () => {
    const name = uniq('tb');
    const t = Topic.create(name, { capacity: 4, maxMessageSize: 16 });
    try {
      const fast = t.subscribe();
      const slow = t.subscribe();
      for (let i = 0; i < 4; i++) assert.equal(t.tryPublish(Buffer.from([i])), i);
      while (fast.tryReceive() !== undefined);
      assert.equal(t.tryPublish(Buffer.from([4])), -1, 'the slow subscriber holds the log');
      assert.throws(() => t.publishSync(Buffer.from([4]), { timeout: 0 }), code(ErrorCodes.TIMEOUT));
      const pending = t.publish(Buffer.from([4]), { timeout: 30_000 });
      let ticked = false;
      setImmediate(() => { ticked = true; });
      await new Promise((r) => setImmediate(r));
      assert.ok(ticked);
      assert.deepEqual([...slow.tryReceive()], [0]);
      assert.equal(await watchdog(pending, 30_000, 'publish'), 4);
      slow.close(); // a subscriber that leaves holds nobody up
      for (let i = 5; i < 8; i++) t.publishSync(Buffer.from([i]), { timeout: 30_000 }); // fast is 4 behind: the log is full again
      assert.equal(t.tryPublish(Buffer.from([8])), -1);
      assert.deepEqual([...Array(4)].map(() => fast.tryReceive()[0]), [4, 5, 6, 7]);
      assert.equal(t.stats().publishWaits >= 1, true);
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test("'block' regressions: a subscriber starting back in history holds up a publisher that had scanned before it joined; leaving a for await loop ends the subscription", async () => {
    const name = uniq('th');
    const pub = Topic.create(name, { capacity: 4, maxMessageSize: 16, history: 3 });
    const other = Topic.open(name);
    try {
      const first = pub.subscribe();
      for (let i = 0; i < 3; i++) pub.publishSync(Buffer.from([i]));
      while (first.tryReceive() !== undefined);
      first.close();
      pub.publishSync(Buffer.from([3])); // the publisher has scanned: nobody holds the log
      const late = other.subscribe({ from: 'history' }); // starts back at 1
      assert.equal(late.seq, 1);
      const results = [4, 5, 6].map((i) => pub.tryPublish(Buffer.from([i])));
      assert.deepEqual(results, [4, -1, -1], 'message 5 would reuse the slot of message 1, which late has not read');
      const got = [];
      for (let m = late.tryReceive(); m !== undefined; m = late.tryReceive()) got.push(m[0]);
      assert.deepEqual(got, [1, 2, 3, 4]);
      assert.equal(late.lost, 0);
      const iterated = other.subscribe();
      pub.publishSync(Buffer.from([5]));
      for await (const m of iterated.iterate({ timeout: 30_000 })) {
        assert.equal(m[0], 5);
        break;
      }
      assert.equal(iterated.closed, true, 'break ended the subscription');
    } finally {
      pub.close();
      other.close();
      Topic.unlink(name);
    }
  });

  test('zero copy: a publisher fills a loan in place and commits it; a subscriber reads a view in place until it releases it', async () => {
    const name = uniq('tz');
    const t = Topic.create(name, { capacity: 2, maxMessageSize: 32 });
    const other = Topic.open(name);
    const s = t.subscribe();
    try {
      const loan = t.loanSync(32);
      assert.equal(loan.seq, 0);
      assert.throws(() => t.publishSync(Buffer.from('x')), code(ErrorCodes.BUSY));
      assert.equal(other.tryLoan(4), null, 'the loan holds the publisher lock');
      loan.bytes.write('in place');
      loan.commit(8);
      assert.throws(() => loan.commit(), code(ErrorCodes.BUSY));
      const aborted = t.loanSync(4);
      aborted.abort();
      const l2 = await t.loan(4, { timeout: 30_000 });
      assert.equal(l2.seq, 1, 'an aborted loan published nothing: the next one gets its number');
      l2.bytes.write('two!');
      l2.commit();
      const v = s.tryReceiveView();
      assert.deepEqual([v.bytes.toString(), v.seq], ['in place', 0]);
      assert.throws(() => s.tryReceive(), code(ErrorCodes.BUSY));
      assert.equal(t.tryPublish(Buffer.from('3')), -1, 'the view holds its slot: the log is full');
      v.release();
      v.release();
      assert.equal(t.tryPublish(Buffer.from('3')), 2);
      const v2 = await s.receiveView({ timeout: 10_000 });
      assert.equal(v2.bytes.toString(), 'two!');
      v2.release();
      assert.equal(String(s.tryReceive()), '3');
      const l3 = t.loanSync(4);
      t.close(); // gives the loan and the lock up
      assert.throws(() => l3.commit(), code(ErrorCodes.CLOSED));
      assert.equal(other.tryPublish(Buffer.from('after')), 3, 'the lock went back');
      const ow = Topic.create(`${name}o`, { overflow: 'overwrite' });
      assert.throws(() => ow.subscribe().tryReceiveView(), code(ErrorCodes.UNSUPPORTED));
      ow.close();
      Topic.unlink(`${name}o`);
    } finally {
      if (!t.closed) t.close();
      other.close();
      Topic.unlink(name);
    }
  });

  test("publishers: 'single': one handle holds the publisher role (no lock per publish); another gets BUSY until it closes", () => {
    const name = uniq('t1');
    const a = Topic.create(name, { publishers: 'single', codec: 'json' });
    const b = Topic.open(name, { codec: 'json' });
    const s = b.subscribe();
    try {
      assert.equal(b.publishers, 'single');
      assert.equal(a.publishSync(1), 0);
      assert.throws(() => b.publishSync(2), code(ErrorCodes.BUSY));
      assert.throws(() => b.tryPublish(2), code(ErrorCodes.BUSY));
      const l = a.loanSync(8);
      l.bytes.write('3');
      l.commit(1);
      a.close();
      assert.equal(b.publishSync(4), 2, 'the role went back at close()');
      assert.deepEqual([s.tryReceive(), s.tryReceive(), s.tryReceive(), s.tryReceive()], [1, 3, 4, undefined]);
    } finally {
      if (!a.closed) a.close();
      b.close();
      Topic.unlink(name);
    }
  });

  test("'overwrite': the publisher never waits; a lapped subscriber counts exactly what it lost, or gets ERR_SHMKIT_LAGGED", () => {
    const name = uniq('to');
    const t = Topic.create(name, { capacity: 8, maxMessageSize: 16, overflow: 'overwrite', codec: 'json' });
    try {
      const counting = t.subscribe();
      const throwing = t.subscribe({ lagged: 'throw' });
      for (let i = 0; i < 30; i++) t.publishSync(i, { timeout: 0 });
      assert.equal(counting.tryReceive(), 23, 'the oldest message kept: 30 - (8 - 1)');
      assert.equal(counting.lost, 23);
      assert.throws(() => throwing.tryReceive(), (e) => e.code === ErrorCodes.LAGGED && e.lost === 23);
      assert.equal(throwing.tryReceive(), 23, 'after the error it goes on from the oldest kept');
      let n = 0;
      while (counting.tryReceive() !== undefined) n++;
      assert.equal(counting.lost + 1 + n, 30, 'received + lost = published');
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test('end(): subscribers read what was published, then end; publishing fails; for await ends', async () => {
    const name = uniq('te');
    const t = Topic.create(name, { capacity: 8, codec: 'utf8' });
    const s = t.subscribe();
    try {
      t.publishSync('a');
      t.publishSync('b');
      const waiting = t.subscribe().receive({ timeout: 30_000 });
      t.end();
      assert.equal(t.ended, true);
      assert.throws(() => t.publishSync('c'), code(ErrorCodes.CLOSED));
      await assert.rejects(t.publish('c'), code(ErrorCodes.CLOSED));
      assert.throws(() => t.tryPublish('c'), code(ErrorCodes.CLOSED));
      await assert.rejects(watchdog(waiting, 30_000, 'waiting receive'), code(ErrorCodes.CLOSED));
      const got = [];
      for await (const m of s.iterate({ timeout: 30_000 })) got.push(m);
      assert.deepEqual(got, ['a', 'b']);
      assert.throws(() => s.receiveSync({ timeout: 0 }), code(ErrorCodes.CLOSED));
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test('bad input gets typed errors: options, oversize messages, a full subscriber table', () => {
    const name = uniq('tx');
    for (const [opts, arg] of [[{ capacity: 1 }, 'options.capacity'], [{ maxMessageSize: 0 }, 'options.maxMessageSize'], [{ history: 8, capacity: 8 }, 'options.history'], [{ overflow: 'drop' }, 'options.overflow'], [{ maxSubscribers: 0 }, 'options.maxSubscribers']]) {
      assert.throws(() => Topic.create(name, opts), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && e.argument === arg, arg);
    }
    const t = Topic.create(name, { capacity: 4, maxMessageSize: 8, maxSubscribers: 1 });
    try {
      assert.throws(() => t.publishSync(Buffer.alloc(9)), code(ErrorCodes.TOO_LARGE));
      const s = t.subscribe();
      assert.throws(() => t.subscribe(), code(ErrorCodes.BUSY));
      s.close();
      t.subscribe().close(); // the slot is free again
      assert.throws(() => t.subscribe({ lagged: 'ignore' }), (e) => e.argument === 'options.lagged');
      assert.equal(t.tryPublish(Buffer.alloc(0)), 0, 'an empty message is a message');
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test('garbage in shared memory: a bad length, a bad stamp and bad parameters are CORRUPT, never a crash or a hang', () => {
    const name = uniq('tg');
    const t = Topic.create(name, { capacity: 4, maxMessageSize: 8, maxSubscribers: 1 });
    try {
      const s = t.subscribe();
      t.publishSync(Buffer.from('ok'));
      t.publishSync(Buffer.from('ok'));
      const fd = openSync(`/dev/shm/shmkit-${name}`, 'r+');
      const slots = 128 + 320; // data offset + slots offset (256 + 1 x 64, rounded to 64)
      writeSync(fd, Buffer.from([0xff, 0xff, 0, 0]), 0, 4, slots + 8); // message 0: length 65535
      assert.throws(() => s.tryReceive(), code(ErrorCodes.CORRUPT));
      writeSync(fd, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), 0, 8, slots + 40 + 0); // message 1: stamp 1 (older than published)
      assert.throws(() => s.tryReceive(), code(ErrorCodes.CORRUPT));
      writeSync(fd, Buffer.from([0, 0, 0, 0]), 0, 4, 64); // capacity 0 in the parameter block
      closeSync(fd);
      assert.throws(() => Topic.open(name), (e) => e.code === ErrorCodes.CORRUPT);
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });
});

describe('Topic across processes', () => {
  for (const async of [false, true]) {
    test(`3 publisher processes x 3 subscriber processes (${async ? 'async' : 'sync'}), random sizes, the log wrapping: every subscriber gets every message once, intact, in one total order`, async () => {
      const name = uniq('tm');
      const t = Topic.create(name, { capacity: 16, maxMessageSize: 600 });
      try {
        const count = 400;
        const total = 3 * count;
        const subs = [0, 1, 2].map((k) => child('subscriber', { name, total, async: async || k === 1, iterate: false }));
        for (const s of subs) await s.waitFor(/subscribed/);
        const pubs = [0, 1, 2].map((id) => child('publisher', { name, id, count, async: async && id !== 1 }));
        for (const p of pubs) assert.deepEqual(await result(p, 120_000, 'publisher'), { published: count });
        const rs = [];
        for (const s of subs) rs.push(await result(s, 120_000, 'subscriber'));
        for (const r of rs) assert.deepEqual([r.got, r.bad, r.lost], [total, 0, 0]);
        assert.equal(new Set(rs.map((r) => r.order)).size, 1, 'the same order everywhere');
      } finally {
        t.close();
        Topic.unlink(name);
      }
    });
  }

  test("'overwrite' with a slow subscriber process: the publisher never waits, and received + lost = published, exactly", async () => {
    const name = uniq('ts');
    const t = Topic.create(name, { capacity: 16, maxMessageSize: 64, overflow: 'overwrite' });
    try {
      const slow = child('slow', { name });
      await slow.waitFor(/subscribed/);
      const n = 5000;
      for (let k = 0; k < n; k++) t.publishSync(makeMessage(9, k, 64), { timeout: 0 }); // timeout 0: it must never need to wait
      t.end();
      const r = await result(slow, 60_000, 'slow subscriber');
      assert.equal(r.bad, 0, 'never a torn message');
      assert.equal(r.got + r.lost, n);
      assert.ok(r.lost > 0, 'it was lapped');
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test("'block': a SIGKILLed subscriber holds the publisher up for at most about a liveness interval, then is evicted", async () => {
    const name = uniq('tk');
    const t = Topic.create(name, { capacity: 4, maxMessageSize: 16 });
    try {
      const h = child('hold', { name });
      await h.waitFor(/holding/);
      for (let i = 0; i < 4; i++) t.publishSync(Buffer.from([i]));
      assert.equal(t.tryPublish(Buffer.from([9])), -1, 'the holder is a log behind');
      h.child.kill('SIGKILL');
      await watchdog(h.exited, 30_000, 'holder');
      assert.equal(await watchdog(t.publish(Buffer.from([4]), { timeout: 30_000 }), 30_000, 'publish after the death'), 4);
      assert.equal(t.stats().subscribers.length, 0, 'the dead subscriber was evicted');
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test('SIGKILL publishers at random points: the other publishers go on, subscribers never see a torn message or wait for the dead', async () => {
    const name = uniq('tq');
    const t = Topic.create(name, { capacity: 16, maxMessageSize: 300 });
    try {
      // A subscriber process reads all along (to the end), checking every message and each
      // publisher's order; publishers are killed while it reads, mid-publish or waiting for space.
      const reader = child('subscriber', { name, iterate: true });
      await reader.waitFor(/subscribed/);
      const survivor = child('publisher', { name, id: 1, count: 3000 });
      for (let round = 0; round < 8; round++) {
        const victim = child('publisher', { name, id: 100 + round, count: 1_000_000, progress: true });
        await victim.waitFor(/"k"/);
        await sleep(Math.random() * 30);
        victim.child.kill('SIGKILL');
        await watchdog(victim.exited, 30_000, 'victim');
      }
      assert.deepEqual(await result(survivor, 120_000, 'survivor'), { published: 3000 });
      t.end();
      const r = await result(reader, 120_000, 'reader');
      assert.deepEqual([r.bad, r.lost], [0, 0], 'no torn, lost or out-of-order message');
      assert.ok(r.got >= 3000, `everything the survivor published arrived (${r.got})`);
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });

  test('a subscriber that restarts resumes from the sequence number it saved, and misses nothing', async () => {
    const name = uniq('tr');
    const t = Topic.create(name, { capacity: 512, maxMessageSize: 600 }); // nothing is overwritten meanwhile
    try {
      const first = child('subscriber', { name, total: 100 });
      await first.waitFor(/subscribed/);
      const pub = child('publisher', { name, id: 5, count: 300 });
      const r1 = await result(first, 60_000, 'first life');
      assert.deepEqual([r1.got, r1.bad], [100, 0]);
      const second = child('subscriber', { name, total: 200, from: 100, firstK: 100 });
      const r2 = await result(second, 60_000, 'second life');
      assert.deepEqual([r2.got, r2.bad, r2.lost], [200, 0, 0]);
      await result(pub, 60_000, 'publisher');
    } finally {
      t.close();
      Topic.unlink(name);
    }
  });
});

// Event: named notifications with ids. Semantics (docs/event.md): a listener sees every id notified
// after it started listening, until it takes it; notifications of one id coalesce; none is lost,
// across processes, sync and async; a dead listener's slot is taken over; shared memory is
// untrusted input.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { Channel, Event, ErrorCodes, Segment } from 'shmkit';
import { cleanupAll, result, ROOT, runner, uniq, watchdog } from './helpers.mjs';

const DIST = join(ROOT, 'dist', 'index.js');

const child = runner('event-child.mjs');
after(cleanupAll);
const code = (c) => (e) => e.code === c;

describe('Event in one process', () => {
  test('a listener sees what is notified after it listens, coalesced, ascending, until it takes it', async () => {
    const name = uniq('ev');
    const e = Event.create(name, { maxId: 40 });
    const l = Event.open(name);
    try {
      assert.equal(e.notify(3), 0, 'nobody listens yet');
      assert.equal(l.listening, false);
      l.listen();
      assert.equal(l.listening, true);
      assert.deepEqual(l.tryWait(), [], 'a notification before listen() is not seen');
      assert.equal(e.notify(40), 1);
      e.notify(3);
      e.notify(3);
      e.notify(0);
      assert.deepEqual(l.tryWait(), [0, 3, 40], 'coalesced, ascending');
      assert.deepEqual(l.tryWait(), []);
      setTimeout(() => e.notify(7), 20);
      assert.deepEqual(await watchdog(l.wait({ timeout: 10_000 }), 20_000, 'wait'), [7]);
      e.notify(9);
      assert.deepEqual(l.waitSync({ timeout: 0 }), [9]);
      assert.throws(() => l.waitSync({ timeout: 0 }), code(ErrorCodes.TIMEOUT));
      await assert.rejects(l.wait({ timeout: 20 }), code(ErrorCodes.TIMEOUT));
      const ac = new AbortController();
      const aborted = l.wait({ signal: ac.signal });
      ac.abort(new Error('stop'));
      await assert.rejects(aborted, (err) => err.code === 'ABORT_ERR' && err.cause.message === 'stop');
      assert.equal(e.stats().listeners, 1);
    } finally {
      e.close();
      l.close();
      Event.unlink(name);
    }
  });

  test('every listener gets every id; for await yields ids and ends when the handle closes', async () => {
    const name = uniq('ef');
    const e = Event.create(name, { maxListeners: 4 });
    const a = Event.open(name).listen();
    const b = Event.open(name).listen();
    try {
      assert.equal(e.notify(5), 2);
      assert.deepEqual([a.tryWait(), b.tryWait()], [[5], [5]]);
      const got = [];
      const loop = (async () => {
        for await (const id of a) {
          got.push(id);
          if (got.length === 3) a.close();
        }
      })();
      e.notify(1);
      e.notify(2);
      setTimeout(() => e.notify(3), 20);
      await watchdog(loop, 20_000, 'for await');
      assert.deepEqual(got, [1, 2, 3]);
      assert.equal(a.closed, true);
      assert.deepEqual(b.tryWait(), [1, 2, 3]);
      // iterate() with options, and a loop left early: the ids not yielded yet are pending again.
      e.notify(4);
      e.notify(6);
      for await (const id of b.iterate({ timeout: 10_000 })) {
        assert.equal(id, 4);
        break;
      }
      assert.deepEqual(b.tryWait(), [6]);
      const ac = new AbortController();
      const it = b.iterate({ signal: ac.signal });
      const step = it.next();
      ac.abort();
      await assert.rejects(step, (err) => err.code === 'ABORT_ERR');
    } finally {
      e.close();
      if (!a.closed) a.close();
      b.close();
      Event.unlink(name);
    }
  });

  test('bad input: ids, options and a full listener table get typed errors', () => {
    const name = uniq('eb');
    assert.throws(() => Event.create(name, { maxId: 4096 }), (err) => err.code === ErrorCodes.INVALID_ARGUMENT && err.argument === 'options.maxId');
    assert.throws(() => Event.create(name, { maxListeners: 0 }), (err) => err.argument === 'options.maxListeners');
    const e = Event.create(name, { maxId: 3, maxListeners: 1 });
    const other = Event.open(name);
    try {
      for (const bad of [-1, 4, 1.5, '1', NaN]) assert.throws(() => e.notify(bad), (err) => err.code === ErrorCodes.INVALID_ARGUMENT && err.argument === 'id', String(bad));
      e.listen();
      assert.throws(() => other.listen(), code(ErrorCodes.BUSY));
      assert.throws(() => e.waitSync({ timeout: -1 }), (err) => err.argument === 'options.timeout');
      e.close();
      other.listen(); // the slot was freed by close()
      assert.equal(other.listening, true);
    } finally {
      if (!e.closed) e.close();
      other.close();
      Event.unlink(name);
    }
  });

  test('garbage in shared memory: bits past maxId are never ids, a stolen slot is CORRUPT, bad parameters refuse the open', () => {
    const name = uniq('eg');
    const e = Event.create(name, { maxId: 4 });
    const l = Event.open(name).listen();
    try {
      // Written through the file, as a hostile or broken peer could (data area at 128: a short name).
      const fd = openSync(`/dev/shm/shmkit-${name}`, 'r+');
      const poke = (offset, bytes) => writeSync(fd, Buffer.from(bytes), 0, bytes.length, offset);
      poke(128 + 64 + 80, [0xff, 0xff, 0xff, 0xff]); // slot 0's bitmap word 0: ids 5..31 included
      assert.deepEqual(l.tryWait(), [0, 1, 2, 3, 4]);
      poke(128 + 64, [0x39, 0x30, 0, 0, 0, 0, 0, 0]); // slot 0's owner token: someone else's
      assert.throws(() => l.tryWait(), code(ErrorCodes.CORRUPT));
      poke(64, [0x9f, 0x86, 0x01, 0x00]); // max id 99999 in the parameter block
      closeSync(fd);
      assert.throws(() => Event.open(name), (err) => err.code === ErrorCodes.CORRUPT || err.code === ErrorCodes.NOT_SHMKIT);
    } finally {
      e.close();
      l.close();
      Event.unlink(name);
    }
  });
});

describe('Event across processes', () => {
  for (const async of [false, true]) {
    test(`3 notifier processes x 2 listener processes, ${async ? 'async' : 'sync'} waits: no wake-up is lost`, async () => {
      const name = uniq('ex');
      const counters = uniq('exc');
      const e = Event.create(name, { maxId: 7 });
      const seg = Segment.create(counters, { size: 256 });
      try {
        const count = 3000;
        const listeners = [0, 1].map(() => child('listener', { name, counters, ids: 3, count, async }));
        for (const l of listeners) await l.waitFor(/listening/);
        const notifiers = [0, 1, 2].map((id) => child('notifier', { name, counters, id, count, jitter: id === 1 }));
        for (const n of notifiers) assert.deepEqual(await result(n, 60_000, 'notifier'), { notified: count });
        for (const l of listeners) {
          const r = await result(l, 60_000, 'listener');
          assert.equal(r.done, true);
          assert.deepEqual(r.seen, [0, 1, 2]);
        }
      } finally {
        e.close();
        seg.close();
        Event.unlink(name);
        Segment.unlink(counters);
      }
    });
  }

  test('watch(): peers of a channel attaching, leaving and dying become notifications of chosen ids', async () => {
    const name = uniq('ew');
    const chName = uniq('ewc');
    const e = Event.create(name);
    const ch = Channel.create(chName, { capacity: 4096 });
    const l = Event.open(name).listen();
    const stop = e.watch(ch, { attach: 1, detach: 2, death: 3 });
    const peer = (hold) => spawn(process.execPath, ['-e', `
      const { Channel } = require(${JSON.stringify(DIST)});
      const ch = Channel.open(${JSON.stringify(chName)});
      ch.sendSync(Buffer.from('hi'));
      console.log('attached');
      ${hold ? 'setInterval(() => {}, 1 << 30);' : 'setTimeout(() => ch.close(), 400);'}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const idsUntil = async (want) => {
      const got = new Set();
      while (![...want].every((id) => got.has(id))) for (const id of await watchdog(l.wait({ timeout: 30_000 }), 40_000, `ids ${[...want]}`)) got.add(id);
      return got;
    };
    try {
      const polite = peer(false);
      const politeExit = once(polite, 'exit'); // listened for at once: it may exit before we look
      assert.ok((await idsUntil([1, 2])).has(1), 'attach, then detach');
      await watchdog(politeExit, 30_000, 'polite peer exit');
      const doomed = peer(true);
      const doomedExit = once(doomed, 'exit');
      await idsUntil([1]);
      doomed.kill('SIGKILL');
      await watchdog(doomedExit, 30_000, 'doomed peer exit');
      await idsUntil([3]);
      assert.throws(() => e.watch({}, { attach: 1 }), (err) => err.argument === 'object');
      assert.throws(() => e.watch(ch, {}), (err) => err.argument === 'ids');
      assert.throws(() => e.watch(ch, { death: 999 }), (err) => err.argument === 'ids.death');
    } finally {
      stop();
      l.close();
      e.close();
      ch.close();
      Event.unlink(name);
      Channel.unlink(chName);
    }
  });

  test('a SIGKILLed listener never blocks a notifier, and its slot goes to the next listener', async () => {
    const name = uniq('ek');
    const e = Event.create(name, { maxListeners: 1 });
    try {
      const h = child('hold', { name });
      await h.waitFor(/holding/);
      assert.throws(() => Event.open(name).listen(), code(ErrorCodes.BUSY));
      assert.equal(e.notify(1), 1);
      h.child.kill('SIGKILL');
      await watchdog(h.exited, 30_000, 'holder');
      assert.equal(e.notify(2), 1, 'the dead slot still takes notifications; nothing waits for it');
      const next = Event.open(name).listen();
      assert.deepEqual(next.tryWait(), [], 'what was pending for the dead listener is not inherited');
      e.notify(3);
      assert.deepEqual(next.tryWait(), [3]);
      next.close();
    } finally {
      e.close();
      Event.unlink(name);
    }
  });
});

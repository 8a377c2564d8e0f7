// WaitSet: one wait over channels (readable, writable), topic subscriptions, events, deadlines and
// intervals, woken by other processes, async and sync; level-triggered; timeouts and aborts; a
// thousand sources. Every wait has a watchdog (and a timeout of its own).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Channel, ErrorCodes, Event, Topic, WaitSet } from 'shmkit';
import { cleanupAll, result, runner, uniq, watchdog } from './helpers.mjs';

const child = runner('waitset-child.mjs');
after(cleanupAll);

function objects() {
  const names = { ch: uniq('wc'), tp: uniq('wt'), ev: uniq('we') };
  const ch = Channel.create(names.ch, { capacity: 4096, codec: 'json' });
  const tp = Topic.create(names.tp, { codec: 'json' });
  const ev = Event.create(names.ev);
  return {
    names, ch, tp, ev,
    done() {
      ch.close(); tp.close(); ev.close();
      Channel.unlink(names.ch); Topic.unlink(names.tp); Event.unlink(names.ev);
    },
  };
}

describe('WaitSet', () => {
  for (const sync of [false, true]) {
    test(`${sync ? 'waitSync' : 'wait'}: another process makes a channel, a subscription or an event ready, and only that entry is returned`, async () => {
      const o = objects();
      const ws = new WaitSet();
      try {
        const sub = o.tp.subscribe();
        const ec = ws.add(o.ch);
        const es = ws.add(sub);
        const ee = ws.add(o.ev);
        assert.deepEqual(ws.tryWait(), []);
        for (const [role, name, entry, drain] of [
          ['send', o.names.ch, ec, () => o.ch.receiveSync()],
          ['publish', o.names.tp, es, () => sub.receiveSync()],
          ['notify', o.names.ev, ee, () => o.ev.tryWait()],
        ]) {
          const c = child(role, { name, delay: 50 });
          const ready = sync ? ws.waitSync({ timeout: 30_000 }) : await watchdog(ws.wait({ timeout: 30_000 }), 40_000, `wait for ${role}`);
          assert.deepEqual(ready, [entry], role);
          drain();
          await result(c, 30_000, role);
          assert.deepEqual(ws.tryWait(), [], `${role}: level-triggered, and drained`);
        }
      } finally {
        ws.close();
        o.done();
      }
    });
  }

  test("a channel's 'writable' entry turns ready when another process makes room", async () => {
    const name = uniq('ww');
    const ch = Channel.create(name, { capacity: 256, maxMessageSize: 100, codec: 'json' });
    const ws = new WaitSet();
    try {
      const w = ws.add(ch, 'writable');
      while (ch.trySend({ fill: 'x'.repeat(40) }));
      assert.deepEqual(ws.tryWait(), []);
      const c = child('receive', { name, delay: 50 });
      assert.deepEqual(await watchdog(ws.wait({ timeout: 30_000 }), 40_000, 'writable'), [w]);
      await result(c, 30_000, 'receiver');
    } finally {
      ws.close();
      ch.close();
      Channel.unlink(name);
    }
  });

  test('deadlines and intervals: a deadline says nothing came in time; an interval is reported once per period', async () => {
    const o = objects();
    const ws = new WaitSet();
    try {
      ws.add(o.ch);
      const d = ws.addDeadline(60);
      assert.deepEqual(await watchdog(ws.wait({ timeout: 30_000 }), 40_000, 'deadline'), [d]);
      assert.deepEqual(ws.tryWait(), [d], 'a passed deadline stays ready');
      ws.remove(d);
      const i = ws.addInterval(30);
      let periods = 0;
      for await (const ready of ws) {
        assert.deepEqual(ready, [i]);
        if (++periods === 3) break;
      }
      assert.deepEqual(ws.tryWait(), [], 'the period just reported is not reported again');
    } finally {
      ws.close();
      o.done();
    }
  });

  test('timeouts, aborts, bad sources, and a closed source (reported ready)', async () => {
    const o = objects();
    const ws = new WaitSet();
    try {
      ws.add(o.ch);
      await assert.rejects(ws.wait({ timeout: 20 }), (e) => e.code === ErrorCodes.TIMEOUT);
      assert.throws(() => ws.waitSync({ timeout: 0 }), (e) => e.code === ErrorCodes.TIMEOUT);
      const ac = new AbortController();
      const p = ws.wait({ signal: ac.signal });
      ac.abort();
      await assert.rejects(p, (e) => e.code === 'ABORT_ERR');
      assert.throws(() => ws.add({}), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && e.argument === 'source');
      assert.throws(() => ws.add(o.ev, 'writable'), (e) => e.argument === 'kind');
      const other = Channel.open(o.names.ch, { codec: 'json' });
      const eo = ws.add(other);
      other.close();
      assert.deepEqual(ws.tryWait(), [eo], 'an operation on it would not wait: it throws CLOSED');
    } finally {
      ws.close();
      o.done();
    }
  });

  test('a thousand sources: one wait, and the one that became ready is found', async () => {
    const n = 1000;
    const names = Array.from({ length: n }, () => uniq('wk'));
    const events = names.map((name) => Event.create(name, { maxListeners: 2 }));
    const ws = new WaitSet();
    try {
      const entries = events.map((e) => ws.add(e));
      for (const sync of [false, true]) {
        const k = sync ? 123 : 777;
        const c = child('notify', { name: names[k], delay: 50 });
        const ready = sync ? ws.waitSync({ timeout: 30_000 }) : await watchdog(ws.wait({ timeout: 30_000 }), 40_000, 'one of 1000');
        assert.deepEqual(ready, [entries[k]]);
        assert.deepEqual(events[k].tryWait(), [0]);
        await result(c, 30_000, 'notifier');
      }
    } finally {
      ws.close();
      for (const e of events) e.close();
      for (const name of names) Event.unlink(name);
    }
  });
});

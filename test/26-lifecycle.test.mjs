// One lifecycle vocabulary across the classes (close / end / unlink, the 'close' event,
// Symbol.asyncDispose), unref() on the waits that keep a process alive, the peer-gone default of
// channel waits, and Node's AbortError shape. docs/guide.md ("Lifecycle") holds the table.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Barrier, Channel, Condition, ErrorCodes, Mutex, NamedSemaphore, RwLock, Segment, Semaphore, ShmStream, ShmkitError,
} from 'shmkit';
import { cleanupAll, runner, sleep, uniq, watchdog } from './helpers.mjs';

const child = runner('lifecycle-child.mjs');
after(cleanupAll);
const tick = () => new Promise((r) => setImmediate(r));

describe('the lifecycle table', () => {
  test('close() releases my handle, once, then emits "close"; the name stays until unlink(), which says whether it removed one', async () => {
    const kinds = [
      ['Segment', (n) => Segment.create(n, { size: 64 }), (n) => Segment.open(n), Segment.unlink],
      ['Channel', (n) => Channel.create(n, { capacity: 4096 }), (n) => Channel.open(n), Channel.unlink],
      ...[Mutex, Semaphore, RwLock, Condition, Barrier].map((K) => [K.name, (n) => (K === Barrier ? K.create(n, { parties: 2 }) : K.create(n)), (n) => K.open(n), (n) => K.unlink(n)]),
    ];
    for (const [label, create, open, unlink] of kinds) {
      const name = uniq('lc');
      const a = create(name);
      const b = open(name);
      let events = 0;
      b.on('close', () => events++);
      assert.equal(b.closed, false, label);
      b.close();
      b.close();
      assert.equal(b.closed, true, label);
      await tick();
      assert.equal(events, 1, `${label}: one 'close' event`);
      const c = open(name); // the object outlived the handle
      await c[Symbol.asyncDispose]();
      assert.equal(c.closed, true, label);
      a.close();
      assert.equal(unlink(name), true, label);
      assert.equal(unlink(name), false, label);
    }
  });

  test('NamedSemaphore: close(), closed, "close", asyncDispose and unlink() as for the others', async () => {
    const name = uniq('lcn');
    const s = NamedSemaphore.create(name);
    let events = 0;
    s.on('close', () => events++);
    await s[Symbol.asyncDispose]();
    s.close();
    await tick();
    assert.deepEqual([s.closed, events], [true, 1]);
    assert.equal(NamedSemaphore.unlink(name), true);
    assert.equal(NamedSemaphore.unlink(name), false);
  });

  test('Channel: end() ends it for everyone (ended), close() releases only this handle (closed)', async () => {
    const name = uniq('lce');
    const a = Channel.create(name, { capacity: 4096, codec: 'json' });
    const b = Channel.open(name, { codec: 'json' });
    a.sendSync('last');
    b.end();
    assert.deepEqual([a.ended, b.ended, a.closed, b.closed], [true, true, false, false]);
    assert.throws(() => a.sendSync('more'), (e) => e.code === ErrorCodes.CLOSED);
    assert.equal(await a.receive({ timeout: 30_000 }), 'last', 'what was queued before end() is delivered');
    await assert.rejects(a.receive({ timeout: 1000 }), (e) => e.code === ErrorCodes.CLOSED);
    a.close();
    b.close();
    assert.equal(Channel.unlink(name), true);
  });

  test('ShmStream speaks the stream words: end() for everyone, destroy() releases, unlink() removes (the creator\'s destroy() too)', async () => {
    const name = uniq('lcs');
    const a = ShmStream.create(name);
    const b = ShmStream.connect(name);
    a.end('bye');
    let got = '';
    await watchdog((async () => { for await (const chunk of b) got += chunk; })(), 30_000, 'stream to its end');
    assert.equal(got, 'bye');
    b.destroy();
    await tick();
    assert.equal(b.destroyed, true);
    assert.equal(ShmStream.unlink(name), true, 'the name outlives a destroyed end');
    assert.equal(ShmStream.unlink(name), false);
    a.destroy(); // the creator's destroy() removes the names too; here they are gone already
  });
});

describe('unref()', () => {
  for (const kind of ['channel', 'semaphore', 'named']) {
    test(`${kind}: a pending wait keeps the process alive; unref() before or during the wait lets it exit`, async () => {
      const name = uniq('ur');
      let made;
      if (kind === 'channel') made = Channel.create(name, { capacity: 4096 });
      else if (kind === 'named') made = NamedSemaphore.create(name);
      else made = Segment.create(name, { size: 64 });
      try {
        for (const unref of ['before', 'during']) {
          const c = child('park', { name, kind, unref, timeout: unref === 'during' ? 600_000 : undefined });
          await c.waitFor(/"waiting"/);
          const r = await watchdog(c.exited, 30_000, `${kind} child with unref ${unref}`);
          assert.deepEqual([r.code, r.signal], [0, null], r.err);
          assert.doesNotMatch(r.out, /woken/);
        }
        const held = child('park', { name, kind });
        await held.waitFor(/"waiting"/);
        await sleep(300); // not a duration assertion: a ref'd waiter never exits by itself
        assert.equal(held.child.exitCode, null, 'a ref\'d wait keeps its process alive');
        held.child.kill('SIGKILL');
        await watchdog(held.exited, 30_000, 'killed child');
      } finally {
        made.close();
        if (kind === 'named') NamedSemaphore.unlink(name);
        else Segment.unlink(name);
      }
    });
  }
});

describe('peer death ends every channel wait by default', () => {
  for (const iterate of [false, true]) {
    test(`${iterate ? 'for await' : 'receive()'}: a waiting consumer learns PEER_GONE once its producer is SIGKILLed; { failIfPeerGone: false } waits for the next producer`, async () => {
      const name = uniq('pg');
      const made = Channel.create(name, { capacity: 4096, codec: 'json', consumers: 'multi' });
      try {
        const def = child('consume', { name, iterate });
        const optOut = child('consume', { name, iterate, optOut: true });
        const prod = child('produce', { name });
        await prod.waitFor(/"sent"/);
        await watchdog(Promise.race([def.waitFor(/"got"/), optOut.waitFor(/"got"/)]), 30_000, 'first message');
        prod.child.kill('SIGKILL');
        await watchdog(prod.exited, 30_000, 'producer');
        const r = await watchdog(def.exited, 30_000, 'default consumer');
        assert.match(r.out, /"code":"ERR_SHMKIT_PEER_GONE"/, r.err);
        await sleep(300); // not a duration assertion: with the opt-out it waits for the next producer
        assert.equal(optOut.child.exitCode, null, 'failIfPeerGone: false waits on');
        const next = Channel.open(name, { codec: 'json' });
        next.sendSync({ n: 2 });
        await optOut.waitFor(/"n":2/);
        next.end();
        next.close();
        const o = await watchdog(optOut.exited, 30_000, 'opt-out consumer');
        assert.match(o.out, iterate ? /"code":"ended"/ : /"code":"ERR_SHMKIT_CLOSED"/, o.err);
      } finally {
        made.close();
        Channel.unlink(name);
      }
    });
  }
});

test("'peergone' tells a listening handle that every producer is gone, once; the watch never keeps the process alive", async () => {
  const name = uniq('pe');
  const ch = Channel.create(name, { capacity: 4096, codec: 'json' });
  try {
    const events = [];
    const heard = new Promise((resolve) => ch.on('peergone', (role) => { events.push(role); resolve(); }));
    const prod = child('produce', { name });
    await prod.waitFor(/"sent"/);
    assert.deepEqual(await ch.receive({ timeout: 30_000 }), { n: 1 });
    prod.child.kill('SIGKILL');
    await watchdog(prod.exited, 30_000, 'producer');
    await watchdog(heard, 30_000, "'peergone'");
    assert.deepEqual(events, ['producer']);
  } finally {
    ch.removeAllListeners('peergone');
    ch.close();
    Channel.unlink(name);
  }
});

test("'peergone' still works after removeAllListeners(), and a listener may close the handle", async () => {
  const name = uniq('pf');
  const ch = Channel.create(name, { capacity: 4096, codec: 'json' });
  try {
    ch.on('peergone', () => {});
    ch.removeAllListeners();
    // The listener closes the handle: the watch must stop there, not read the released memory.
    const heard = new Promise((resolve) => ch.once('peergone', (role) => { ch.close(); resolve(role); }));
    const prod = child('produce', { name });
    await prod.waitFor(/"sent"/);
    prod.child.kill('SIGKILL');
    await watchdog(prod.exited, 30_000, 'producer');
    assert.equal(await watchdog(heard, 30_000, "'peergone' after removeAllListeners()"), 'producer');
    await sleep(300); // two liveness ticks: a watch that read the released memory would crash this process
  } finally {
    if (!ch.closed) ch.close();
    Channel.unlink(name);
  }
});

test('an already-aborted signal is refused before a queued message is taken, on every receive form', async () => {
  const name = uniq('aq');
  const ch = Channel.create(name, { capacity: 4096 });
  try {
    ch.sendSync(Buffer.from('kept'));
    const signal = AbortSignal.abort();
    for (const call of [() => ch.receive({ signal }), () => ch.receiveBatch(4, { signal }), () => ch.receiveView({ signal }), () => ch.receiveInto(Buffer.alloc(16), { signal }), () => ch.iterate({ signal }).next()]) {
      await assert.rejects(call(), (e) => e.code === 'ABORT_ERR');
    }
    assert.equal(String(ch.tryReceive()), 'kept', 'the message is still queued');
  } finally {
    ch.close();
    Channel.unlink(name);
  }
});

test("aborts are Node's AbortError: name AbortError, code ABORT_ERR, cause the signal's reason", async () => {
  const name = uniq('ab');
  const ch = Channel.create(name, { capacity: 4096 });
  try {
    const reason = new Error('user gave up');
    const ac = new AbortController();
    const p = ch.receive({ signal: ac.signal });
    ac.abort(reason);
    const err = await p.catch((e) => e);
    assert.equal(err.name, 'AbortError');
    assert.equal(err.code, 'ABORT_ERR');
    assert.equal(err.cause, reason);
    assert.ok(err instanceof ShmkitError);
    assert.equal(ErrorCodes.ABORTED, 'ABORT_ERR');
  } finally {
    ch.close();
    Channel.unlink(name);
  }
});

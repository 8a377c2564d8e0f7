import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { asyncWaitStats, ErrorCodes, Mutex, Segment, Semaphore, ShmkitError } from 'shmkit';
import { cleanupAll, result, runner, sleep, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);
const semaphoreChild = runner('semaphore-child.mjs');
const code = (c) => (e) => e instanceof ShmkitError && e.code === c;

describe('Semaphore', () => {
  test('post, tryWait, wait with timeout, value, overflow', () => {
    const name = uniq('sem');
    const s = Semaphore.create(name, { initial: 2 });
    assert.equal(s.value, 2);
    assert.equal(s.tryWait(), true);
    s.waitSync();
    assert.equal(s.tryWait(), false);
    assert.throws(() => s.waitSync({ timeout: 5 }), code(ErrorCodes.TIMEOUT));
    s.post(3);
    assert.equal(s.value, 3);
    assert.throws(() => s.post(0), (e) => e.argument === 'n');
    assert.throws(() => s.post(0x7fffffff), code(ErrorCodes.OVERFLOW));
    assert.equal(s.value, 3, 'a failed post changes nothing');
    assert.throws(() => Semaphore.create(uniq('x'), { initial: -1 }), (e) => e.argument === 'options.initial');
    s.close();
    Segment.unlink(name);
  });

  test('openOrCreate applies initial only when creating', () => {
    const name = uniq('soc');
    const a = Semaphore.openOrCreate(name, { initial: 5 });
    const b = Semaphore.openOrCreate(name, { initial: 9 });
    assert.equal(b.value, 5);
    assert.equal(a.segment.created, true);
    assert.equal(b.segment.created, false);
    a.close();
    b.close();
    Segment.unlink(name);
  });

  for (const mode of ['sync', 'async']) {
    test(`bounded buffer across processes delivers every item exactly once (${mode} consumers)`, async () => {
      const name = uniq('bb');
      const capacity = 8;
      const producers = 3;
      const consumers = 2;
      const perProducer = 3000;
      const total = producers * perProducer;
      const seg = Segment.create(name, {
        size: 64 + capacity * 8,
        initialize: (s) => {
          Semaphore.init(s, 0, capacity); // empty slots
          Semaphore.init(s, 8, 0); // full slots
          Mutex.init(s, 16);
          Mutex.init(s, 32);
        },
      });
      const share = [Math.ceil(total / consumers), total - Math.ceil(total / consumers)];
      const cs = share.map((items) => semaphoreChild('consumer', { name, capacity, items, async: mode === 'async' }));
      const ps = Array.from({ length: producers }, (_, id) => semaphoreChild('producer', { name, capacity, items: perProducer, id }));
      for (const [i, p] of ps.entries()) await result(p, 120000, `producer ${i}`);
      const got = [];
      for (const [i, c] of cs.entries()) got.push(...(await result(c, 120000, `consumer ${i}`)).got);
      assert.equal(got.length, total);
      const seen = new Set(got);
      assert.equal(seen.size, total, 'no item delivered twice');
      let sum = 0;
      for (let id = 0; id < producers; id++) for (let k = 0; k < perProducer; k++) {
        assert.ok(seen.has(id * 1e6 + k), `item ${id}/${k} delivered`);
        sum += id * 1e6 + k;
      }
      assert.equal(got.reduce((x, y) => x + y, 0), sum, 'checksum');
      seg.close();
      Segment.unlink(name);
    });
  }

  test('wait keeps the event loop responsive, and AbortSignal cancels it', async () => {
    const name = uniq('sea');
    const s = Semaphore.create(name);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    setTimeout(() => s.post(), 60);
    await watchdog(s.wait({ spin: 0 }), 10000, 'wait');
    clearInterval(timer);
    assert.ok(ticks >= 3, `timer ticked ${ticks} times while waiting`);

    const ac = new AbortController();
    const p = s.wait({ signal: ac.signal, spin: 0 });
    ac.abort();
    await assert.rejects(watchdog(p, 10000, 'abort'), (e) => e.code === ErrorCodes.ABORTED && e.name === 'AbortError');
    const pre = AbortSignal.abort();
    await assert.rejects(s.wait({ signal: pre }), code(ErrorCodes.ABORTED));
    await assert.rejects(s.wait({ signal: 'nope' }), (e) => e.argument === 'options.signal');
    await assert.rejects(s.wait({ timeout: 5, spin: 0 }), code(ErrorCodes.TIMEOUT));
    // An aborted waiter left nothing behind: a post is still taken by the next wait.
    s.post();
    assert.equal(s.tryWait(), true);
    s.close();
    Segment.unlink(name);
  });

  test('many concurrent async waits, spread over several native waiter threads', async () => {
    const name = uniq('many');
    const s = Semaphore.create(name);
    const n = 300;
    const all = Array.from({ length: n }, () => s.wait({ spin: 0 }));
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < n; i++) s.post();
    await watchdog(Promise.all(all), 30000, `${n} waits`);
    assert.equal(s.value, 0);
    s.close();
    Segment.unlink(name);
  });

  test('a pending async wait keeps the process alive; without one it exits', async () => {
    const name = uniq('alive');
    const s = Semaphore.create(name);
    const a = semaphoreChild('asyncTimeout', { name, timeout: 300 });
    assert.deepEqual(await result(a, 30000, 'asyncTimeout'), { result: ErrorCodes.TIMEOUT });
    const b = semaphoreChild('asyncWaitPost', { name });
    await b.waitFor(/waiting/);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(b.child.exitCode, null, 'still alive while waiting');
    s.post();
    assert.deepEqual(await result(b, 30000, 'asyncWaitPost'), { result: 'acquired' });
    const c = semaphoreChild('asyncAbortThenExit', { name });
    assert.deepEqual(await result(c, 30000, 'asyncAbortThenExit'), { result: ErrorCodes.ABORTED });
    s.close();
    Segment.unlink(name);
  });

  test('a corrupt negative count makes waiters wait (not spin), and post still works', async () => {
    const name = uniq('neg');
    const s = Semaphore.create(name);
    const words = new Int32Array(s.segment.buffer, 128, 2);
    words[0] = -5;
    assert.equal(s.value, 0);
    assert.equal(s.tryWait(), false);
    assert.throws(() => s.waitSync({ timeout: 20, spin: 0 }), code(ErrorCodes.TIMEOUT));
    s.close();
    Segment.unlink(name);
  });
});

describe('Semaphore regressions', () => {
  // Found in review; failed before its fix (a crash, a hang or a wrong result).
  test('a wait in another process is not stranded when the poster never wakes (killed between its CAS and its wake)', async () => {
    const name = uniq('gap');
    const sem = Semaphore.create(name);
    const waiter = semaphoreChild('asyncWaitPost', { name, spin: 0, liveness: 50 });
    await waiter.waitFor(/waiting/);
    await new Promise((r) => setTimeout(r, 50));
    // Do exactly what a poster does before its wake-up, and "die": no futex_wake.
    Atomics.add(new Int32Array(sem.segment.buffer, 128, 2), 0, 1);
    assert.deepEqual(await result(waiter, 30000, 'waiter'), { result: 'acquired' });
    sem.close();
    Segment.unlink(name);
  });

  // Found by crash and hostile-input testing (async waits); failed before its fix.
  test('an async wait with a timeout beyond 2^31-1 ms neither spins nor warns', async () => {
    const seg = Segment.create(uniq('bt'), { size: 64 });
    const s = Semaphore.init(seg, 0, 0);
    const warnings = [];
    const onWarning = (w) => warnings.push(w.name);
    process.on('warning', onWarning);
    const p = s.wait({ timeout: 30 * 24 * 3600 * 1000, spin: 0 });
    await sleep(100);
    s.post();
    await watchdog(p, 10000, 'wait with a 30-day timeout');
    process.off('warning', onWarning);
    assert.deepEqual(warnings, []);
    seg.close();
    seg.unlink();
  });

  // Found by crash and hostile-input testing (idle waits); failed before its fix.
  test('5,000 pending wait on one semaphore share one native wait; waiter threads end when idle', async () => {
    const seg = Segment.create(uniq('iw'), { size: 64 });
    const s = Semaphore.init(seg, 0, 0);
    const N = 5000;
    const waits = [];
    for (let i = 0; i < N; i++) waits.push(s.wait({ spin: 0, timeout: 60000 }));
    await sleep(10);
    const st = asyncWaitStats();
    assert.equal(st.pending, N);
    assert.equal(st.threads, 1, 'one native waiter thread holds the one shared wait');
    s.post(N);
    await watchdog(Promise.all(waits), 30000, 'all waits');
    assert.equal(asyncWaitStats().pending, 0);
    // The native waiter thread leaves after about a second without work.
    await watchdog((async () => { while (asyncWaitStats().threads > 0) await sleep(100); })(), 30000, 'idle waiter threads to exit');
    seg.close();
    seg.unlink();
  });

  // Found by crash and hostile-input testing (idle waits); failed before its fix.
  test('a poster killed between its add and its wake cannot strand an async waiter (liveness tick)', async () => {
    const seg = Segment.create(uniq('pk'), { size: 64 });
    const s = Semaphore.init(seg, 0, 0);
    const p = s.wait({ spin: 0 });
    await sleep(20);
    // What a dying poster leaves behind: the count raised, nobody woken.
    Atomics.add(new Int32Array(seg.buffer, seg.dataOffset, 2), 0, 1);
    await watchdog(p, 10000, 'waiter after a silent post');
    seg.close();
    seg.unlink();
  });
});

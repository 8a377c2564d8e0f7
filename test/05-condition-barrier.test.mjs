import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Barrier, Condition, ErrorCodes, Mutex, Segment, ShmkitError } from 'shmkit';
import { cleanupAll, result, runner, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);
const lockChild = runner('lock-child.mjs');
const code = (c) => (e) => e instanceof ShmkitError && e.code === c;

describe('Condition', () => {
  test('requires the mutex, times out with the mutex re-held', () => {
    const name = uniq('cv');
    const seg = Segment.create(name, { size: 32, initialize: (s) => { Mutex.init(s, 0); Condition.init(s, 16); } });
    const m = Mutex.at(seg, 0);
    const c = Condition.at(seg, 16);
    assert.throws(() => c.waitSync(m), code(ErrorCodes.NOT_OWNER));
    assert.throws(() => c.waitSync({}), (e) => e.argument === 'mutex');
    m.lockSync();
    assert.throws(() => c.waitSync(m, { timeout: 10 }), code(ErrorCodes.TIMEOUT));
    assert.equal(m.ownedByMe, true);
    m.unlock();
    c.signal();
    c.broadcast();
    seg.close();
    Segment.unlink(name);
  });

  for (const mode of ['sync', 'async']) {
    test(`waiters in other processes see every broadcast state change (${mode})`, async () => {
      const name = uniq('cvp');
      const seg = Segment.create(name, { size: 32, initialize: (s) => { Mutex.init(s, 0); Condition.init(s, 16); } });
      const m = Mutex.at(seg, 0);
      const c = Condition.at(seg, 16);
      const i32 = new Int32Array(seg.data.buffer, seg.data.byteOffset, 8);
      const target = 50;
      const ws = [lockChild('condWaiter', { name, target, async: mode === 'async' }), lockChild('condWaiter', { name, target, async: mode === 'async' })];
      for (const w of ws) await w.waitFor(/waiting/);
      for (let v = 1; v <= target; v++) {
        const g = await m.lock({ timeout: 30000 });
        i32[6] = v;
        c.broadcast();
        g.unlock();
        if (v % 10 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      for (const w of ws) assert.equal((await result(w, 60000, 'condWaiter')).seen, target);
      seg.close();
      Segment.unlink(name);
    });
  }
});

describe('Barrier', () => {
  test('validates parties; a lone party passes; timeout withdraws the arrival', () => {
    assert.throws(() => Barrier.create(uniq('b'), { parties: 0 }), (e) => e.argument === 'options.parties');
    assert.throws(() => Barrier.create(uniq('b'), {}), (e) => e.argument === 'options.parties');
    const name = uniq('bar');
    const one = Barrier.create(name, { parties: 1 });
    assert.equal(one.waitSync(), true);
    one.close();
    Segment.unlink(name);
    const name2 = uniq('bar2');
    const two = Barrier.create(name2, { parties: 2 });
    assert.throws(() => two.waitSync({ timeout: 10 }), code(ErrorCodes.TIMEOUT));
    // The withdrawn arrival does not count: one more wait still waits for a second party.
    assert.throws(() => two.waitSync({ timeout: 10 }), code(ErrorCodes.TIMEOUT));
    two.close();
    Segment.unlink(name2);
  });

  test('processes meet at the barrier for many rounds; one leader per round', async () => {
    const name = uniq('barp');
    const parties = 4;
    const rounds = 200;
    const seg = Segment.create(name, { size: 32, initialize: (s) => Barrier.init(s, 0, parties) });
    const ps = Array.from({ length: parties }, () => lockChild('barrier', { name, rounds, parties }));
    let leaders = 0;
    for (const p of ps) {
      const r = await result(p, 120000, 'barrier party');
      assert.equal(r.bad, 0);
      leaders += r.leaders;
    }
    assert.equal(leaders, rounds);
    seg.close();
    Segment.unlink(name);
  });

  test('wait meets a sync party; abort withdraws', async () => {
    const name = uniq('bara');
    const b = Barrier.create(name, { parties: 2 });
    const ac = new AbortController();
    const p = b.wait({ signal: ac.signal, spin: 0 });
    ac.abort();
    await assert.rejects(watchdog(p, 10000, 'aborted barrier'), code(ErrorCodes.ABORTED));
    const q = b.wait({ spin: 0 });
    const other = Barrier.open(name);
    setTimeout(() => other.waitSync(), 10);
    const leader = await watchdog(q, 10000, 'barrier');
    assert.equal(typeof leader, 'boolean');
    other.close();
    b.close();
    Segment.unlink(name);
  });
});

describe('Condition and Barrier regressions', () => {
  // Found in review; failed before its fix (a crash, a hang or a wrong result).
  test('closing the segment under a pending Barrier.wait withdraws the arrival', async () => {
    const name = uniq('bcl');
    const b = Barrier.create(name, { parties: 2 });
    const other = Barrier.open(name);
    const p = other.wait({ spin: 0 });
    await new Promise((res) => setTimeout(res, 20));
    other.close();
    await assert.rejects(watchdog(p, 10000, 'barrier'), (e) => e.code === ErrorCodes.CLOSED);
    assert.throws(() => b.waitSync({ timeout: 20 }), (e) => e.code === ErrorCodes.TIMEOUT, 'a lone party must not pass a 2-party barrier');
    b.close();
    Segment.unlink(name);
  });

  // Found by crash and hostile-input testing (a Condition wait and its deadline); failed before its
  // fix.
  test('Condition.waitSync and wait re-take the mutex within their deadline, or say it is not held', async () => {
    const name = uniq('cw');
    const seg = Segment.create(name, { size: 64 });
    const m = Mutex.init(seg, 0);
    const c = Condition.init(seg, 16);
    const go = new Int32Array(seg.buffer, seg.dataOffset + 32, 1);
    // Async: while we wait, a grabber takes the mutex and keeps it.
    const grabber = lockChild('grabMutex', { name });
    await grabber.waitFor(/started/);
    m.lockSync();
    Atomics.store(go, 0, 1);
    await assert.rejects(watchdog(c.wait(m, { timeout: 300 }), 10000, 'wait'), (err) => err.code === ErrorCodes.TIMEOUT && /NOT held/.test(err.message));
    assert.equal(m.ownedByMe, false);
    grabber.child.kill('SIGKILL');
    await watchdog(grabber.exited, 10000, 'grabber exit');
    // Sync, in a child (a blocking wait that never returned would hang this process).
    Atomics.store(go, 0, 0);
    const grabber2 = lockChild('grabMutex', { name });
    await grabber2.waitFor(/started/);
    const r = await result(lockChild('condWaitSync', { name }), 30000, 'condWaitSync');
    assert.deepEqual(r, { code: ErrorCodes.TIMEOUT, notHeld: true, held: false });
    grabber2.child.kill('SIGKILL');
    await watchdog(grabber2.exited, 10000, 'grabber exit');
    // Uncontended, a timed-out wait still returns with the mutex held again.
    const g = await watchdog(m.lock({ timeout: 10000 }), 15000, 'lockSync');
    await assert.rejects(watchdog(c.wait(m, { timeout: 50 }), 10000, 'wait'), code(ErrorCodes.TIMEOUT));
    assert.equal(m.ownedByMe, true);
    g.unlock();
    seg.close();
    seg.unlink();
  });
});

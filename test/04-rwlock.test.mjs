import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, RwLock, Segment, ShmkitError } from 'shmkit';
import { cleanupAll, result, runner, sleep, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);
const lockChild = runner('lock-child.mjs');
const code = (c) => (e) => e instanceof ShmkitError && e.code === c;

describe('RwLock', () => {
  test('many readers at once, one writer alone, ownership checks', () => {
    const name = uniq('rw');
    const l = RwLock.create(name);
    const r1 = l.readLockSync();
    const r2 = l.tryReadLock();
    assert.ok(r2);
    assert.deepEqual(l.state, { readers: 2, writer: false, recoveryPending: false });
    assert.equal(l.tryWriteLock(), null);
    assert.throws(() => l.writeLockSync(), code(ErrorCodes.WOULD_DEADLOCK));
    r1.unlock();
    r2[Symbol.dispose]();
    assert.throws(() => l.readUnlock(), code(ErrorCodes.NOT_OWNER));
    const w = l.writeLockSync();
    assert.deepEqual(l.state, { readers: 0, writer: true, recoveryPending: false });
    assert.equal(l.tryReadLock(), null);
    assert.throws(() => l.readLockSync(), code(ErrorCodes.WOULD_DEADLOCK));
    w.unlock();
    assert.throws(() => l.writeUnlock(), code(ErrorCodes.NOT_OWNER));
    l.close();
    Segment.unlink(name);
  });

  for (const mode of ['sync', 'async']) {
    test(`writers and readers across processes: readers never see a half-done write (${mode})`, async () => {
      const name = uniq('rwp');
      const seg = Segment.create(name, { size: RwLock.SIZE + 8, initialize: (s) => RwLock.init(s, 0) });
      const async = mode === 'async';
      const writers = [lockChild('rwWriter', { name, n: 2000, async }), lockChild('rwWriter', { name, n: 2000, async })];
      const readers = [lockChild('rwReader', { name, ms: 300, min: 200, async }), lockChild('rwReader', { name, ms: 300, min: 200, async })];
      for (const w of writers) assert.deepEqual(await result(w, 120000, 'writer'), { wrote: 2000 });
      for (const r of readers) {
        const res = await result(r, 120000, 'reader');
        assert.equal(res.bad, 0);
        assert.ok(res.reads >= 200);
      }
      const dv = new DataView(seg.data.buffer, seg.data.byteOffset);
      assert.equal(dv.getUint32(RwLock.SIZE, true), 4000);
      assert.equal(dv.getUint32(RwLock.SIZE + 4, true), 4000);
      seg.close();
      Segment.unlink(name);
    });
  }

  test('a waiting writer is not starved by a stream of readers', async () => {
    const name = uniq('starve');
    const l = RwLock.create(name);
    // Two reader loops whose holds overlap, so that at every instant some reader holds the lock.
    // Without writer preference a writer would wait forever.
    let stop = false;
    const loop = async (offset) => {
      await new Promise((r) => setTimeout(r, offset));
      while (!stop) {
        const g = await l.readLock({ spin: 0, timeout: 30000 });
        await new Promise((r) => setTimeout(r, 10));
        g.unlock();
      }
    };
    const churn = Promise.all([loop(0), loop(5)]);
    await new Promise((r) => setTimeout(r, 20));
    const w = lockChild('holdWrite', { name });
    await w.waitFor(/write/, 30000); // the writer gets in although reads never stop overlapping
    stop = true;
    w.child.kill('SIGKILL');
    await watchdog(w.exited, 10000, 'writer exit');
    await watchdog(churn, 30000, 'readers');
    assert.equal(l.state.readers, 0);
    l.close();
    Segment.unlink(name);
  });

  test('a killed writer is recovered by the next writer, a killed reader is cleared', async () => {
    const name = uniq('rwk');
    const l = RwLock.create(name);
    const w = lockChild('holdWrite', { name });
    await w.waitFor(/write/);
    w.child.kill('SIGKILL');
    await watchdog(w.exited, 10000, 'writer exit');
    const g = l.writeLockSync({ timeout: 20000 });
    assert.equal(g.recovered, true);
    g.unlock();

    const r = lockChild('holdRead', { name });
    await r.waitFor(/read/);
    assert.equal(l.state.readers, 1);
    r.child.kill('SIGKILL');
    await watchdog(r.exited, 10000, 'reader exit');
    const g2 = await l.writeLock({ timeout: 20000 });
    assert.equal(g2.recovered, false, 'a dead reader changed nothing: no recovery notice');
    assert.equal(l.state.readers, 0);
    g2.unlock();

    const w2 = lockChild('holdWrite', { name });
    await w2.waitFor(/write/);
    w2.child.kill('SIGKILL');
    await watchdog(w2.exited, 10000, 'writer exit');
    const rg = l.readLockSync({ timeout: 20000 });
    assert.equal(rg.recovered, true);
    rg.unlock();
    l.close();
    Segment.unlink(name);
  });

  test('timeouts release what was taken', async () => {
    const name = uniq('rwt');
    const l = RwLock.create(name);
    const r = lockChild('holdRead', { name });
    await r.waitFor(/read/);
    assert.throws(() => l.writeLockSync({ timeout: 30 }), code(ErrorCodes.TIMEOUT));
    assert.equal(l.state.writer, false, 'the writer claim was given back');
    const rg = l.readLockSync({ timeout: 1000 });
    rg.unlock();
    r.child.kill('SIGKILL');
    await watchdog(r.exited, 10000, 'reader exit');
    l.close();
    Segment.unlink(name);
  });
});

describe('RwLock regressions', () => {
  // Found in review; failed before its fix (a crash, a hang or a wrong result).
  test('closing the segment under a pending writeLock gives the writer claim back', async () => {
    const name = uniq('rwc');
    const l = RwLock.create(name);
    const other = RwLock.open(name);
    const r = l.readLockSync();
    const p = other.writeLock({ spin: 0 });
    await new Promise((res) => setTimeout(res, 30));
    assert.equal(l.state.writer, true, 'the writer has claimed and waits for readers');
    other.close();
    await assert.rejects(watchdog(p, 10000, 'writeLock'), (e) => e.code === ErrorCodes.CLOSED);
    assert.equal(l.state.writer, false);
    r.unlock();
    l.writeLockSync().unlock();
    l.close();
    Segment.unlink(name);
  });

  // Found by crash and hostile-input testing (RwLock recovery notice: a notice lost, a writer
  // stranded, a claim not given back); each failed before its fix.
  async function killWaitingWriter(name) {
    const w = lockChild('waitWrite', { name });
    await w.waitFor(/claiming/);
    const l = RwLock.open(name);
    await watchdog((async () => { while (!l.state.writer) await sleep(5); })(), 10000, 'writer claim');
    l.close();
    w.child.kill('SIGKILL');
    await watchdog(w.exited, 10000, 'writer exit');
    return w.child.pid;
  }

  test('RwLock: a writer killed while claiming reaches the next writer even after tryReadLock found no free slot', async () => {
    const name = uniq('rn');
    const l = RwLock.create(name);
    const reads = [];
    for (let i = 0; i < RwLock.MAX_READERS; i++) reads.push(l.readLockSync());
    const pid = await killWaitingWriter(name);
    assert.equal(l.tryReadLock(), null, 'no free slot');
    for (const g of reads) g.unlock();
    const g = l.writeLockSync({ timeout: 10000 });
    assert.equal(g.recovered, true);
    assert.equal(g.deadOwner.pid, pid);
    g.unlock();
    const again = l.writeLockSync({ timeout: 10000 });
    assert.equal(again.recovered, false, 'exactly one writer is told');
    again.unlock();
    l.close();
    Segment.unlink(name);
  });

  test('RwLock: tryWriteLock that must give up puts the recovery notice back', async () => {
    const name = uniq('rt');
    const l = RwLock.create(name);
    const r = l.readLockSync();
    const pid = await killWaitingWriter(name);
    assert.equal(l.tryWriteLock(), null, 'a reader still holds a slot');
    r.unlock();
    const g = l.writeLockSync({ timeout: 10000 });
    assert.equal(g.recovered, true);
    assert.equal(g.deadOwner.pid, pid);
    g.unlock();
    // A reader after a dead writer is warned, and the writer after it still gets the notice.
    const w = lockChild('holdWrite', { name });
    await w.waitFor(/write/);
    w.child.kill('SIGKILL');
    await watchdog(w.exited, 10000, 'writer exit');
    const rg = l.readLockSync({ timeout: 10000 });
    assert.equal(rg.recovered, true);
    assert.equal(rg.deadOwner.pid, w.child.pid);
    rg.unlock();
    const wg = await watchdog(l.writeLock({ timeout: 10000 }), 15000, 'writeLock');
    assert.equal(wg.recovered, true);
    assert.equal(wg.deadOwner.pid, w.child.pid);
    wg.unlock();
    l.close();
    Segment.unlink(name);
  });

  test('RwLock: a reader that frees its slot and dies before waking does not strand an async writer', async () => {
    const name = uniq('rs');
    const l = RwLock.create(name);
    const r = lockChild('releaseSilently', { name });
    await r.waitFor(/held/);
    const g = await watchdog(l.writeLock({ timeout: 20000 }), 25000, 'writeLock');
    assert.equal(g.recovered, false);
    g.unlock();
    await watchdog(r.exited, 10000, 'reader exit');
    l.close();
    Segment.unlink(name);
  });

  test('RwLock.writeLock followed at once by close() gives its claim back', async () => {
    const name = uniq('rc');
    const l = RwLock.create(name);
    const other = RwLock.open(name);
    const p = l.writeLock();
    l.close();
    await assert.rejects(watchdog(p, 10000, 'writeLock'), code(ErrorCodes.CLOSED));
    assert.deepEqual(other.state, { readers: 0, writer: false, recoveryPending: false });
    other.readLockSync({ timeout: 1000 }).unlock();
    other.close();
    Segment.unlink(name);
  });
});

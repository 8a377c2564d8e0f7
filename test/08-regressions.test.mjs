// Regression tests for bugs found in review: each one failed (crash, hang or wrong result) before its fix.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Barrier, ErrorCodes, Mutex, RwLock, Segment, Semaphore, configure } from 'shmkit';
import { cleanupAll, result, run, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);

describe('review regressions', () => {
  test('close() after the buffer was moved with transfer() does not unmap memory the new buffer uses', { skip: typeof ArrayBuffer.prototype.transfer !== 'function' && 'ArrayBuffer.prototype.transfer needs Node 22+' }, () => {
    const name = uniq('xfer');
    const seg = Segment.create(name, { size: 4096 });
    seg.data[100] = 42;
    const moved = seg.buffer.transfer();
    seg.close();
    assert.equal(new Uint8Array(moved)[128 + 100], 42, 'the transferred buffer still reads the mapping');
    Segment.unlink(name);
  });

  test('a wait in another process is not stranded when the poster never wakes (killed between its CAS and its wake)', async () => {
    const name = uniq('gap');
    const sem = Semaphore.create(name);
    const waiter = run('asyncWaitPost', { name, spin: 0, liveness: 50 });
    await waiter.waitFor(/waiting/);
    await new Promise((r) => setTimeout(r, 50));
    // Do exactly what a poster does before its wake-up, and "die": no futex_wake.
    Atomics.add(new Int32Array(sem.segment.buffer, 128, 2), 0, 1);
    assert.deepEqual(await result(waiter, 30000, 'waiter'), { result: 'acquired' });
    sem.close();
    Segment.unlink(name);
  });

  test('closing the segment under a pending writeLockAsync gives the writer claim back', async () => {
    const name = uniq('rwc');
    const l = RwLock.create(name);
    const other = RwLock.open(name);
    const r = l.readLock();
    const p = other.writeLockAsync({ spin: 0 });
    await new Promise((res) => setTimeout(res, 30));
    assert.equal(l.state.writer, true, 'the writer has claimed and waits for readers');
    other.close();
    await assert.rejects(watchdog(p, 10000, 'writeLockAsync'), (e) => e.code === ErrorCodes.CLOSED);
    assert.equal(l.state.writer, false);
    r.unlock();
    l.writeLock().unlock();
    l.close();
    Segment.unlink(name);
  });

  test('closing the segment under a pending Barrier.waitAsync withdraws the arrival', async () => {
    const name = uniq('bcl');
    const b = Barrier.create(name, { parties: 2 });
    const other = Barrier.open(name);
    const p = other.waitAsync({ spin: 0 });
    await new Promise((res) => setTimeout(res, 20));
    other.close();
    await assert.rejects(watchdog(p, 10000, 'barrier'), (e) => e.code === ErrorCodes.CLOSED);
    assert.throws(() => b.wait({ timeout: 20 }), (e) => e.code === ErrorCodes.TIMEOUT, 'a lone party must not pass a 2-party barrier');
    b.close();
    Segment.unlink(name);
  });

  test('a worker thread terminated while holding a Mutex: the main thread recovers it', async () => {
    const name = uniq('wrk');
    const m = Mutex.create(name);
    const w = new Worker(`
      const { parentPort, workerData } = require('node:worker_threads');
      const { Mutex } = require(workerData.pkg);
      const m = Mutex.open(workerData.name);
      m.lock();
      parentPort.postMessage('locked');
      setInterval(() => {}, 1000);
    `, { eval: true, workerData: { name, pkg: new URL('../dist/index.js', import.meta.url).pathname } });
    await watchdog(new Promise((res, rej) => { w.once('message', res); w.once('error', rej); }), 30000, 'worker lock');
    assert.equal(m.locked, true);
    assert.equal(m.ownedByMe, false, 'the worker has its own owner identity');
    await w.terminate();
    configure({ livenessIntervalMs: 20 });
    try {
      const g = m.lock({ timeout: 10000 });
      assert.equal(g.recovered, true);
      g.unlock();
    } finally {
      configure({ livenessIntervalMs: 100 });
    }
    m.close();
    Segment.unlink(name);
  });
});

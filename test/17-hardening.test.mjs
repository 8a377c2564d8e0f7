// Regressions for hardening defects found by crash and hostile-input testing. Each failed before its
// fix: a hang, a crash of the process, a lost recovery notice, an accepted squatter, a wrong mode.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, closeSync, openSync, statSync, truncateSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import {
  asyncWaitStats, Barrier, Channel, Condition, ErrorCodes, Mutex, MutexGuard, NamedSemaphore, processAlive, RwLock, RwLockGuard,
  Segment, Semaphore, ShmStream,
} from 'shmkit';
import { cleanupAll, ROOT, run, result, sleep, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);

const HCHILD = join(ROOT, 'test', 'fixtures', 'hardening-child.mjs');
const hrun = (role, args) => run(role, args, { script: HCHILD });
const code = (c) => (err) => {
  assert.equal(err.code, c, `expected ${c}, got ${err.code}: ${err.message}`);
  return true;
};
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

// 1, 2: waits for an internal lock honour the caller's deadline -----------------------------------

test('receive({ timeout: 0 }) and receiveBatch with the consumer lock held by a live process return at once', async () => {
  const name = uniq('rl');
  const ch = Channel.create(name, { capacity: 4096 });
  ch.send(Buffer.from('a'));
  ch.send(Buffer.from('b'));
  const holder = hrun('holdView', { name });
  await holder.waitFor(/"held":true/);
  try {
    // In a child: before the fix this looped forever, which no watchdog inside a process can stop.
    const r = await result(hrun('receiveNoWait', { name }), 30000, 'receiveNoWait');
    assert.deepEqual(r.codes, Array(5).fill(ErrorCodes.TIMEOUT));
  } finally {
    holder.child.kill('SIGKILL');
    await watchdog(holder.exited, 10000, 'holder exit');
  }
  ch.disconnect();
  Channel.unlink(name);
});

test('receiveAsync, receiveBatchAsync and receiveViewAsync honour timeout and signal while another handle holds a view', async () => {
  const name = uniq('ra');
  const ch = Channel.create(name, { capacity: 4096 });
  const other = Channel.open(name);
  ch.send(Buffer.from('a'));
  ch.send(Buffer.from('b'));
  const view = other.tryReceiveView();
  assert.ok(view);
  await assert.rejects(watchdog(ch.receiveAsync({ timeout: 30 }), 10000, 'receiveAsync'), code(ErrorCodes.TIMEOUT));
  await assert.rejects(watchdog(ch.receiveBatchAsync(4, { timeout: 30 }), 10000, 'receiveBatchAsync'), code(ErrorCodes.TIMEOUT));
  await assert.rejects(watchdog(ch.receiveViewAsync({ timeout: 30 }), 10000, 'receiveViewAsync'), code(ErrorCodes.TIMEOUT));
  await assert.rejects(watchdog(ch.receiveIntoAsync(Buffer.alloc(16), { timeout: 30 }), 10000, 'receiveIntoAsync'), code(ErrorCodes.TIMEOUT));
  const ac = new AbortController();
  const p = ch.receiveAsync({ signal: ac.signal });
  setTimeout(() => ac.abort(), 20);
  await assert.rejects(watchdog(p, 10000, 'aborted receiveAsync'), code(ErrorCodes.ABORTED));
  // And once the view is released, the same calls take the messages.
  const late = ch.receiveAsync({ timeout: 10000 });
  view.release();
  assert.equal((await watchdog(late, 15000, 'receiveAsync after release')).toString(), 'b');
  other.disconnect();
  ch.disconnect();
  Channel.unlink(name);
});

// 3: AbortSignals ----------------------------------------------------------------------------------

test('a fake AbortSignal is refused with INVALID_ARGUMENT by every async wait', async () => {
  const name = uniq('fs');
  for (const other of [Object.create(AbortSignal.prototype), { aborted: false, addEventListener() {}, removeEventListener() {} }]) {
    const seg = Segment.create(uniq('fo'), { size: 64 });
    await assert.rejects(watchdog(Semaphore.init(seg, 0, 0).waitAsync({ signal: other }), 5000, 'waitAsync'), code(ErrorCodes.INVALID_ARGUMENT));
    seg.close();
    seg.unlink();
  }
  const fake = { aborted: false, addEventListener() {} };
  const ch = Channel.create(name, { capacity: 4096 });
  const seg = Segment.create(uniq('fg'), { size: 256 });
  const m = Mutex.init(seg, 0);
  const c = Condition.init(seg, 16);
  const b = Barrier.init(seg, 32, 2);
  const s = Semaphore.init(seg, 64, 0);
  const calls = {
    'Channel.receiveAsync': () => ch.receiveAsync({ signal: fake }),
    'Channel.receiveViewAsync': () => ch.receiveViewAsync({ signal: fake }),
    'Channel.sendAsync': () => ch.sendAsync(Buffer.from('x'), { signal: fake }),
    'Mutex.lockAsync': () => m.lockAsync({ signal: fake }),
    'Condition.waitAsync': () => c.waitAsync(m, { signal: fake }),
    'Barrier.waitAsync': () => b.waitAsync({ signal: fake }),
    'Semaphore.waitAsync': () => s.waitAsync({ signal: fake }),
  };
  const held = m.lock();
  for (const [what, call] of Object.entries(calls)) {
    await assert.rejects(watchdog(Promise.resolve().then(call), 5000, what), (err) => {
      assert.equal(err.code, ErrorCodes.INVALID_ARGUMENT, `${what}: ${err.message}`);
      assert.equal(err.argument, 'options.signal', what);
      return true;
    });
  }
  held.unlock();
  ch.disconnect();
  Channel.unlink(name);
  seg.close();
  seg.unlink();
});

test('a real AbortSignal whose own methods throw cannot crash the process from a callback', async () => {
  const seg = Segment.create(uniq('sg'), { size: 64 });
  const s = Semaphore.init(seg, 0, 0);
  const ac = new AbortController();
  const signal = ac.signal;
  for (const k of ['removeEventListener', 'addEventListener']) signal[k] = () => { throw new Error(`hostile ${k}`); };
  Object.defineProperty(signal, 'aborted', { get() { throw new Error('hostile aborted'); } });
  // Ends by timeout (the listener is removed from a timer callback), then by abort.
  await assert.rejects(watchdog(s.waitAsync({ signal, timeout: 20, spin: 0 }), 5000, 'timeout'), code(ErrorCodes.TIMEOUT));
  const p = s.waitAsync({ signal, spin: 0 });
  setTimeout(() => ac.abort(new Error('bye')), 20);
  await assert.rejects(watchdog(p, 5000, 'abort'), code(ErrorCodes.ABORTED));
  // Ends by a post (the native waiter's callback removes the listener).
  const ac2 = new AbortController();
  ac2.signal.removeEventListener = () => { throw new Error('hostile'); };
  const q = s.waitAsync({ signal: ac2.signal, spin: 0 });
  setTimeout(() => s.post(), 20);
  await watchdog(q, 5000, 'post');
  seg.close();
  seg.unlink();
});

// 4: RwLock recovery notice -------------------------------------------------------------------------

async function killWaitingWriter(name) {
  const w = hrun('waitWrite', { name });
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
  for (let i = 0; i < RwLock.MAX_READERS; i++) reads.push(l.readLock());
  const pid = await killWaitingWriter(name);
  assert.equal(l.tryReadLock(), null, 'no free slot');
  for (const g of reads) g.unlock();
  const g = l.writeLock({ timeout: 10000 });
  assert.equal(g.recovered, true);
  assert.equal(g.deadOwner.pid, pid);
  g.unlock();
  const again = l.writeLock({ timeout: 10000 });
  assert.equal(again.recovered, false, 'exactly one writer is told');
  again.unlock();
  l.close();
  Segment.unlink(name);
});

test('RwLock: tryWriteLock that must give up puts the recovery notice back', async () => {
  const name = uniq('rt');
  const l = RwLock.create(name);
  const r = l.readLock();
  const pid = await killWaitingWriter(name);
  assert.equal(l.tryWriteLock(), null, 'a reader still holds a slot');
  r.unlock();
  const g = l.writeLock({ timeout: 10000 });
  assert.equal(g.recovered, true);
  assert.equal(g.deadOwner.pid, pid);
  g.unlock();
  // A reader after a dead writer is warned, and the writer after it still gets the notice.
  const w = hrun('holdWrite', { name });
  await w.waitFor(/write/);
  w.child.kill('SIGKILL');
  await watchdog(w.exited, 10000, 'writer exit');
  const rg = l.readLock({ timeout: 10000 });
  assert.equal(rg.recovered, true);
  assert.equal(rg.deadOwner.pid, w.child.pid);
  rg.unlock();
  const wg = await watchdog(l.writeLockAsync({ timeout: 10000 }), 15000, 'writeLockAsync');
  assert.equal(wg.recovered, true);
  assert.equal(wg.deadOwner.pid, w.child.pid);
  wg.unlock();
  l.close();
  Segment.unlink(name);
});

test('Mutex: the recovery information names the dead owner', async () => {
  const name = uniq('md');
  const m = Mutex.create(name);
  const h = hrun('holdMutex', { name });
  await h.waitFor(/locked/);
  h.child.kill('SIGKILL');
  await watchdog(h.exited, 10000, 'holder exit');
  const g = await watchdog(m.lockAsync({ timeout: 10000 }), 15000, 'lockAsync');
  assert.equal(g.recovered, true);
  assert.equal(g.deadOwner.pid, h.child.pid);
  g.unlock();
  const g2 = m.lock();
  assert.equal(g2.deadOwner, null);
  g2.unlock();
  m.close();
  Segment.unlink(name);
});

test('RwLock: a reader that frees its slot and dies before waking does not strand an async writer', async () => {
  const name = uniq('rs');
  const l = RwLock.create(name);
  const r = hrun('releaseSilently', { name });
  await r.waitFor(/held/);
  const g = await watchdog(l.writeLockAsync({ timeout: 20000 }), 25000, 'writeLockAsync');
  assert.equal(g.recovered, false);
  g.unlock();
  await watchdog(r.exited, 10000, 'reader exit');
  l.close();
  Segment.unlink(name);
});

test('RwLock.writeLockAsync followed at once by close() gives its claim back', async () => {
  const name = uniq('rc');
  const l = RwLock.create(name);
  const other = RwLock.open(name);
  const p = l.writeLockAsync();
  l.close();
  await assert.rejects(watchdog(p, 10000, 'writeLockAsync'), code(ErrorCodes.CLOSED));
  assert.deepEqual(other.state, { readers: 0, writer: false, recoveryPending: false });
  other.readLock({ timeout: 1000 }).unlock();
  other.close();
  Segment.unlink(name);
});

test('an async wait with a timeout beyond 2^31-1 ms neither spins nor warns', async () => {
  const seg = Segment.create(uniq('bt'), { size: 64 });
  const s = Semaphore.init(seg, 0, 0);
  const warnings = [];
  const onWarning = (w) => warnings.push(w.name);
  process.on('warning', onWarning);
  const p = s.waitAsync({ timeout: 30 * 24 * 3600 * 1000, spin: 0 });
  await sleep(100);
  s.post();
  await watchdog(p, 10000, 'waitAsync with a 30-day timeout');
  process.off('warning', onWarning);
  assert.deepEqual(warnings, []);
  seg.close();
  seg.unlink();
});

// 5, 6: ownership and modes ----------------------------------------------------------------------

test('open and openOrCreate refuse an object owned by another user unless trusted', { skip: !isRoot && 'needs root to give a file away' }, () => {
  const name = uniq('sq');
  const ch = Channel.create(name, { capacity: 4096, mode: 0o666 });
  ch.disconnect();
  chownSync(`/dev/shm/shmkit-${name}`, NOBODY, NOBODY); // as if user nobody had created it first
  for (const call of [() => Channel.openOrCreate(name), () => Channel.open(name), () => Segment.open(name)]) {
    assert.throws(call, (err) => err.code === ErrorCodes.UNTRUSTED_OWNER || err.code === ErrorCodes.KIND);
  }
  assert.throws(() => Channel.openOrCreate(name), code(ErrorCodes.UNTRUSTED_OWNER));
  const trusted = Channel.open(name, { trustedOwners: { uids: [NOBODY] } });
  trusted.disconnect();
  Channel.open(name, { trustedOwners: { gids: [NOBODY] } }).disconnect();
  Channel.open(name, { trustedOwners: 'any' }).disconnect();
  assert.throws(() => Channel.open(name, { trustedOwners: { uids: ['x'] } }), code(ErrorCodes.INVALID_ARGUMENT));
  Channel.unlink(name);

  const m = uniq('sm');
  Mutex.create(m, { mode: 0o666 }).close();
  chownSync(`/dev/shm/shmkit-${m}`, NOBODY, NOBODY);
  assert.throws(() => Mutex.openOrCreate(m), code(ErrorCodes.UNTRUSTED_OWNER));
  assert.throws(() => Mutex.open(m), code(ErrorCodes.UNTRUSTED_OWNER));
  Mutex.open(m, { trustedOwners: { uids: [NOBODY] } }).close();
  Segment.unlink(m);

  const sem = uniq('ss');
  const planted = NamedSemaphore.create(sem, { initial: 5, mode: 0o666 });
  planted.close();
  chownSync(`/dev/shm/sem.${sem}`, NOBODY, NOBODY);
  assert.throws(() => NamedSemaphore.openOrCreate(sem, { initial: 0 }), code(ErrorCodes.UNTRUSTED_OWNER));
  assert.throws(() => NamedSemaphore.open(sem), code(ErrorCodes.UNTRUSTED_OWNER));
  const ok = NamedSemaphore.open(sem, { trustedOwners: { uids: [NOBODY] } });
  assert.equal(ok.value, 5);
  ok.close();
  NamedSemaphore.unlink(sem);
});

test('NamedSemaphore.create and openOrCreate apply the exact mode under any umask', () => {
  const old = process.umask(0o077);
  try {
    for (const how of ['create', 'openOrCreate']) {
      const n = uniq('um');
      const s = NamedSemaphore[how](n, { mode: 0o666 });
      assert.equal(statSync(`/dev/shm/sem.${n}`).mode & 0o777, 0o666, how);
      s.close();
      NamedSemaphore.unlink(n);
    }
  } finally {
    process.umask(old);
  }
});

// 7: typed errors -----------------------------------------------------------------------------------

test('untyped errors become INVALID_ARGUMENT', () => {
  const inv = code(ErrorCodes.INVALID_ARGUMENT);
  for (const bad of [NaN, 'x', {}, -1, 1.5]) assert.throws(() => processAlive(bad, 0), inv);
  assert.throws(() => processAlive(process.pid, 'x'), inv);
  assert.equal(processAlive(process.pid, 0), false, 'a wrong start time is another process');

  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  assert.throws(() => Channel.create(uniq('rp'), proxy), inv);
  assert.throws(() => Segment.create(uniq('rp'), proxy), inv);
  assert.throws(() => Mutex.create(uniq('rp'), proxy), inv);
  assert.throws(() => new Mutex(), (e) => e instanceof TypeError || e.code === ErrorCodes.INVALID_ARGUMENT);
  for (const G of [MutexGuard, RwLockGuard]) {
    assert.throws(() => new G(), inv);
    assert.throws(() => new G({}, true), inv);
  }

  const sn = uniq('sh');
  assert.throws(() => ShmStream.create(sn, { capacity: 4096, duplex: { highWaterMark: -1 } }), (err) => {
    assert.equal(err.code, ErrorCodes.INVALID_ARGUMENT);
    assert.equal(err.argument, 'options.duplex');
    return true;
  });
  assert.throws(() => Channel.open(`${sn}.0`), code(ErrorCodes.NOT_FOUND), 'nothing of the stream was left behind');
  assert.throws(() => Channel.open(`${sn}.1`), code(ErrorCodes.NOT_FOUND));

  const seg = uniq('in');
  assert.throws(() => Segment.create(seg, { size: 64, initialize: (s) => s.close() }), (err) => err.code === ErrorCodes.INVALID_ARGUMENT && err.argument === 'options.initialize');
  assert.throws(() => Segment.open(seg), code(ErrorCodes.NOT_FOUND), 'nothing was created');
});

// 9: idle waits ---------------------------------------------------------------------------------------

test('5,000 pending waitAsync on one semaphore share one native wait; waiter threads end when idle', async () => {
  const seg = Segment.create(uniq('iw'), { size: 64 });
  const s = Semaphore.init(seg, 0, 0);
  const N = 5000;
  const waits = [];
  for (let i = 0; i < N; i++) waits.push(s.waitAsync({ spin: 0, timeout: 60000 }));
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

test('a poster killed between its add and its wake cannot strand an async waiter (liveness tick)', async () => {
  const seg = Segment.create(uniq('pk'), { size: 64 });
  const s = Semaphore.init(seg, 0, 0);
  const p = s.waitAsync({ spin: 0 });
  await sleep(20);
  // What a dying poster leaves behind: the count raised, nobody woken.
  Atomics.add(new Int32Array(seg.buffer, seg.dataOffset, 2), 0, 1);
  await watchdog(p, 10000, 'waiter after a silent post');
  seg.close();
  seg.unlink();
});

// 10: close() never waits ------------------------------------------------------------------------------

test('Channel.close() returns while a live process holds the producer lock', async () => {
  const name = uniq('cl');
  const ch = Channel.create(name, { capacity: 4096 });
  const holder = hrun('holdLoan', { name });
  await holder.waitFor(/loaned/);
  try {
    const r = await result(hrun('close', { name }), 30000, 'close()');
    assert.equal(r.closed, true);
    assert.equal(ch.closed, true);
  } finally {
    holder.child.kill('SIGKILL');
    await watchdog(holder.exited, 10000, 'holder exit');
  }
  ch.disconnect();
  Channel.unlink(name);
});

// 11: truncation by a peer ------------------------------------------------------------------------------

test('async waits on a segment that a peer truncated report CORRUPT instead of dying of SIGBUS', async () => {
  for (const kind of ['semAsync', 'channelAsync']) {
    const name = uniq('ta');
    if (kind === 'channelAsync') Channel.create(name, { capacity: 4096 }).disconnect();
    else Segment.create(name, { size: 64 }).close();
    const victim = hrun('park', { name, kind, liveness: 20 });
    await victim.waitFor(/waiting/);
    await sleep(50);
    truncateSync(`/dev/shm/shmkit-${name}`, 0);
    const r = await watchdog(victim.exited, 30000, 'victim');
    assert.equal(r.signal, null, `${kind}: the victim died of ${r.signal}`);
    assert.match(r.out, /"code":"ERR_SHMKIT_CORRUPT"/, kind);
    Segment.unlink(name);
  }
});

const canUnshare = isRoot && spawnSync('unshare', ['-m', 'true']).status === 0;
test('a truncation that cannot be repaired (full /dev/shm) is NO_SPACE, not SIGBUS', { skip: !canUnshare && 'needs root and unshare for a private tiny /dev/shm' }, () => {
  for (const kind of ['sem', 'semAsync', 'channel', 'channelAsync']) {
    const script = join(ROOT, 'test', 'fixtures', 'full-shm.mjs');
    const r = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs -o size=4m tmpfs /dev/shm && exec "${process.execPath}" "${script}" ${kind}`], { encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, `${kind}: ${r.stderr}`);
    const res = JSON.parse(r.stdout.trim().split('\n').pop());
    assert.equal(res.signal, null, `${kind}: the waiter died of ${res.signal}`);
    assert.match(res.last, /ERR_SHMKIT_(NO_SPACE|CORRUPT)/, kind);
  }
});

for (const how of ['shrunk', 'hollowed']) {
  test(`a waiter whose segment a peer ${how} reports CORRUPT instead of dying of SIGBUS`, async () => {
    const name = uniq('tr');
    const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single' });
    const size = statSync(`/dev/shm/shmkit-${name}`).size;
    const victim = hrun('receiveLong', { name, liveness: 20 });
    await victim.waitFor(/waiting/);
    await sleep(50);
    if (how === 'shrunk') truncateSync(`/dev/shm/shmkit-${name}`, 0);
    else {
      const fd = openSync(`/dev/shm/shmkit-${name}`, 'r+');
      ftruncateSync(fd, 0);
      ftruncateSync(fd, size); // the same size again, but every page discarded
      closeSync(fd);
    }
    const r = await watchdog(victim.exited, 30000, 'victim');
    assert.equal(r.signal, null, `the victim died of ${r.signal}`);
    assert.match(r.out, /"code":"ERR_SHMKIT_CORRUPT"/);
    assert.equal(statSync(`/dev/shm/shmkit-${name}`).size, size, 'the size was restored');
    ch.disconnect();
    Channel.unlink(name);
  });
}

// Usability: try* tells why, sends that fail say they published nothing ---------------------------

test('tryReceiveResult tells empty, busy and ended apart', () => {
  const name = uniq('tt');
  const ch = Channel.create(name, { capacity: 4096, codec: 'utf8' });
  const other = Channel.open(name, { codec: 'utf8' });
  assert.deepEqual(ch.tryReceiveResult(), { ok: false, reason: 'empty' });
  ch.send('a');
  ch.send('b');
  const v = other.tryReceiveView();
  assert.deepEqual(ch.tryReceiveResult(), { ok: false, reason: 'busy' });
  v.release();
  assert.deepEqual(ch.tryReceiveResult(), { ok: true, value: 'b' });
  ch.close();
  assert.deepEqual(ch.tryReceiveResult(), { ok: false, reason: 'ended' });
  other.disconnect();
  ch.disconnect();
  Channel.unlink(name);
});

test('a send cut short by a timeout, an abort or a close says it published nothing', async () => {
  const name = uniq('sp');
  const ch = Channel.create(name, { capacity: 1024, maxMessageSize: 500 });
  while (ch.trySend(Buffer.alloc(400)));
  const depth = ch.stats().depth;
  assert.throws(() => ch.send(Buffer.alloc(400), { timeout: 10 }), (err) => err.code === ErrorCodes.TIMEOUT && err.published === false);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 10);
  await assert.rejects(watchdog(ch.sendAsync(Buffer.alloc(400), { signal: ac.signal }), 10000, 'sendAsync'), (err) => err.code === ErrorCodes.ABORTED && err.published === false);
  await assert.rejects(watchdog(ch.sendAsync(Buffer.alloc(400), { timeout: 10 }), 10000, 'sendAsync'), (err) => err.code === ErrorCodes.TIMEOUT && err.published === false);
  assert.throws(() => ch.send(42), (err) => err.code === ErrorCodes.INVALID_ARGUMENT && err.published === false, 'a codec refusal');
  assert.throws(() => ch.trySend(Buffer.alloc(600)), (err) => err.code === ErrorCodes.TOO_LARGE && err.published === false);
  ch.close();
  assert.throws(() => ch.send(Buffer.alloc(4)), (err) => err.code === ErrorCodes.CLOSED && err.published === false);
  assert.equal(ch.stats().depth, depth, 'nothing was published');
  ch.disconnect();
  Channel.unlink(name);
});

test('Condition.wait and waitAsync re-take the mutex within their deadline, or say it is not held', async () => {
  const name = uniq('cw');
  const seg = Segment.create(name, { size: 64 });
  const m = Mutex.init(seg, 0);
  const c = Condition.init(seg, 16);
  const go = new Int32Array(seg.buffer, seg.dataOffset + 32, 1);
  // Async: while we wait, a grabber takes the mutex and keeps it.
  const grabber = hrun('grabMutex', { name });
  await grabber.waitFor(/started/);
  m.lock();
  Atomics.store(go, 0, 1);
  await assert.rejects(watchdog(c.waitAsync(m, { timeout: 300 }), 10000, 'waitAsync'), (err) => err.code === ErrorCodes.TIMEOUT && /NOT held/.test(err.message));
  assert.equal(m.ownedByMe, false);
  grabber.child.kill('SIGKILL');
  await watchdog(grabber.exited, 10000, 'grabber exit');
  // Sync, in a child (a blocking wait that never returned would hang this process).
  Atomics.store(go, 0, 0);
  const grabber2 = hrun('grabMutex', { name });
  await grabber2.waitFor(/started/);
  const r = await result(hrun('condWaitSync', { name }), 30000, 'condWaitSync');
  assert.deepEqual(r, { code: ErrorCodes.TIMEOUT, notHeld: true, held: false });
  grabber2.child.kill('SIGKILL');
  await watchdog(grabber2.exited, 10000, 'grabber exit');
  // Uncontended, a timed-out wait still returns with the mutex held again.
  const g = await watchdog(m.lockAsync({ timeout: 10000 }), 15000, 'lock');
  await assert.rejects(watchdog(c.waitAsync(m, { timeout: 50 }), 10000, 'waitAsync'), code(ErrorCodes.TIMEOUT));
  assert.equal(m.ownedByMe, true);
  g.unlock();
  seg.close();
  seg.unlink();
});

// AbortSignal handling across the async waits of every class (Channel, Mutex, Condition, Barrier,
// Semaphore): only a real AbortSignal is accepted, and one whose own methods throw cannot crash the
// process. Found by crash and hostile-input testing (AbortSignals); each failed before its fix.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Barrier, Channel, Condition, ErrorCodes, Mutex, Segment, Semaphore } from 'shmkit';
import { cleanupAll, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);

const code = (c) => (err) => {
  assert.equal(err.code, c, `expected ${c}, got ${err.code}: ${err.message}`);
  return true;
};

test('a fake AbortSignal is refused with INVALID_ARGUMENT by every async wait', async () => {
  const name = uniq('fs');
  for (const other of [Object.create(AbortSignal.prototype), { aborted: false, addEventListener() {}, removeEventListener() {} }]) {
    const seg = Segment.create(uniq('fo'), { size: 64 });
    await assert.rejects(watchdog(Semaphore.init(seg, 0, 0).wait({ signal: other }), 5000, 'wait'), code(ErrorCodes.INVALID_ARGUMENT));
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
    'Channel.receive': () => ch.receive({ signal: fake }),
    'Channel.receiveView': () => ch.receiveView({ signal: fake }),
    'Channel.send': () => ch.send(Buffer.from('x'), { signal: fake }),
    'Mutex.lock': () => m.lock({ signal: fake }),
    'Condition.wait': () => c.wait(m, { signal: fake }),
    'Barrier.wait': () => b.wait({ signal: fake }),
    'Semaphore.wait': () => s.wait({ signal: fake }),
  };
  const held = m.lockSync();
  for (const [what, call] of Object.entries(calls)) {
    await assert.rejects(watchdog(Promise.resolve().then(call), 5000, what), (err) => {
      assert.equal(err.code, ErrorCodes.INVALID_ARGUMENT, `${what}: ${err.message}`);
      assert.equal(err.argument, 'options.signal', what);
      return true;
    });
  }
  held.unlock();
  ch.close();
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
  await assert.rejects(watchdog(s.wait({ signal, timeout: 20, spin: 0 }), 5000, 'timeout'), code(ErrorCodes.TIMEOUT));
  const p = s.wait({ signal, spin: 0 });
  setTimeout(() => ac.abort(new Error('bye')), 20);
  await assert.rejects(watchdog(p, 5000, 'abort'), code(ErrorCodes.ABORTED));
  // Ends by a post (the native waiter's callback removes the listener).
  const ac2 = new AbortController();
  ac2.signal.removeEventListener = () => { throw new Error('hostile'); };
  const q = s.wait({ signal: ac2.signal, spin: 0 });
  setTimeout(() => s.post(), 20);
  await watchdog(q, 5000, 'post');
  seg.close();
  seg.unlink();
});

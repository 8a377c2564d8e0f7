// Async channel waits sleep on a doorbell polled by the event loop (see src/bell.ts): woken across
// processes, dead doorbells cleared, fallback to futex waits when the table is full or a doorbell
// proves unreachable, and abort/timeout/close release the slot.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { asyncWaitStats, Channel, configure, ErrorCodes } from 'shmkit';
import { cleanupAll, result, ROOT, run, sleep, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);
configure({ spinMicros: 0 }); // every async wait parks: the path under test

const BELL = join(ROOT, 'test', 'fixtures', 'bell-child.mjs');
const CONSUMER_BELLS = 512;
const PRODUCER_BELLS = 384;
const SLOTS = 16;
const TAIL = 128;

function words(ch, offset) {
  const i32 = ch.segment.int32;
  const base = (ch.segment.dataOffset + offset) >> 2;
  return { i32, base };
}
function slots(ch, offset) {
  const { i32, base } = words(ch, offset);
  return Array.from({ length: SLOTS }, (_, k) => Atomics.load(i32, base + k));
}

test('an async receive parked on the doorbell is woken by a send from another process', async () => {
  const name = uniq('db');
  const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single', codec: 'utf8' });
  ch.claim('consumer');
  const before = asyncWaitStats();
  const child = run('sendSync', { name, delay: 100, count: 3, gap: 20 }, { script: BELL });
  const got = [];
  for (let i = 0; i < 3; i++) got.push(await watchdog(ch.receive(), 30000, 'receive'));
  assert.deepEqual(got, ['m0', 'm1', 'm2']);
  await result(child);
  const after_ = asyncWaitStats();
  assert.ok(after_.doorbell > 0, 'a doorbell was opened');
  assert.ok(after_.doorbellRings > before.doorbellRings, 'the doorbell woke the loop');
  assert.equal(after_.pending, 0);
  assert.deepEqual(slots(ch, CONSUMER_BELLS), new Array(SLOTS).fill(0), 'slots released');
  assert.ok(ch.stats().receiveWaits >= 1);
  ch.close();
  Channel.unlink(name);
});

test('a pending doorbell wait keeps its process alive across liveness ticks, and the process exits by itself after its last wait', async () => {
  const name = uniq('dk');
  const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single', codec: 'utf8' });
  const child = run('receiveSync', { name, count: 2 }, { script: BELL });
  // Parked: its doorbell id is in the consumers' table.
  await watchdog((async () => {
    while (slots(ch, CONSUMER_BELLS).every((v) => v === 0)) await sleep(10);
  })(), 30000, 'child parks on its doorbell');
  await sleep(350); // several liveness intervals (100 ms): each tick ends the wait, which re-arms
  assert.equal(child.child.exitCode, null, 'still alive while waiting');
  assert.equal(child.child.signalCode, null);
  ch.sendSync('a');
  await sleep(50);
  ch.sendSync('b');
  const r = await result(child, 30000, 'receiver');
  assert.deepEqual(r.got, ['a', 'b']);
  ch.close();
  Channel.unlink(name);
});

test('a sender waiting async for space is woken when a receiver frees it', async () => {
  const name = uniq('ds');
  const ch = Channel.create(name, { capacity: 1024, producers: 'single', consumers: 'single', codec: 'utf8' });
  const rx = Channel.open(name, { codec: 'utf8' });
  const big = 'x'.repeat(400);
  while (ch.trySend(big));
  const pending = ch.send('last' + big);
  await sleep(20);
  assert.equal(asyncWaitStats().pending, 0, 'no waiter thread: the doorbell is used');
  assert.ok(slots(ch, PRODUCER_BELLS).some((v) => v !== 0), 'the sender registered its doorbell');
  const drained = [];
  let m;
  while ((m = rx.tryReceive()) !== undefined) drained.push(m);
  await watchdog(pending, 30000, 'send');
  assert.equal(rx.receiveSync({ timeout: 5000 }), 'last' + big);
  assert.ok(drained.length >= 1 && drained.every((s) => s === big));
  assert.deepEqual(slots(ch, PRODUCER_BELLS), new Array(SLOTS).fill(0));
  rx.close();
  ch.close();
  Channel.unlink(name);
});

test('a doorbell that no longer exists is cleared from the table by the next ring', () => {
  const name = uniq('dd');
  const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single', codec: 'utf8' });
  const { i32, base } = words(ch, CONSUMER_BELLS);
  const tail = (ch.segment.dataOffset + TAIL) >> 2;
  // A dead waiter left its (random, unbound) doorbell id and the "bell waiting" bit behind.
  Atomics.store(i32, base + 3, 0x5eed1e55);
  Atomics.or(i32, tail, 4);
  ch.sendSync('after');
  assert.equal(Atomics.load(i32, base + 3), 0, 'the unreachable doorbell was cleared');
  assert.equal(Atomics.load(i32, tail) & 7, 0, 'the waiting bit was cleared by the publishing CAS');
  assert.equal(ch.receiveSync({ timeout: 1000 }), 'after');
  ch.close();
  Channel.unlink(name);
});

test('abort, timeout and disconnect of a doorbell wait release the slot and reject with their codes', async () => {
  const name = uniq('da');
  const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single', codec: 'utf8' });
  ch.claim('consumer');
  const ac = new AbortController();
  const p = ch.receive({ signal: ac.signal });
  await sleep(10);
  assert.ok(slots(ch, CONSUMER_BELLS).some((v) => v !== 0));
  ac.abort();
  await assert.rejects(watchdog(p, 10000, 'aborted receive'), (e) => e.code === ErrorCodes.ABORTED);
  assert.deepEqual(slots(ch, CONSUMER_BELLS), new Array(SLOTS).fill(0));
  await assert.rejects(watchdog(ch.receive({ timeout: 30 }), 10000, 'timed receive'), (e) => e.code === ErrorCodes.TIMEOUT);
  assert.deepEqual(slots(ch, CONSUMER_BELLS), new Array(SLOTS).fill(0));
  const other = Channel.open(name, { codec: 'utf8' });
  const q = ch.receive();
  await sleep(10);
  assert.ok(slots(other, CONSUMER_BELLS).some((v) => v !== 0));
  ch.close();
  await assert.rejects(watchdog(q, 10000, 'receive under disconnect'), (e) => e.code === ErrorCodes.CLOSED);
  // The handle is gone, its slot stays until a ring finds it... or, as here, the same process's bell
  // still exists, so clear it the way a late wake-up would: a send rings it harmlessly.
  other.sendSync('x');
  assert.equal(other.tryReceive(), 'x');
  other.close();
  Channel.unlink(name);
});

test('with every doorbell slot taken, async waits fall back to futex waits and still wake', async () => {
  const name = uniq('df');
  const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single', codec: 'utf8' });
  ch.claim('consumer');
  const { i32, base } = words(ch, CONSUMER_BELLS);
  for (let k = 0; k < SLOTS; k++) Atomics.store(i32, base + k, 0x7000 + k); // foreign, unbound ids
  const child = run('sendSync', { name, delay: 100 }, { script: BELL });
  const p = ch.receive();
  await sleep(20);
  assert.equal(asyncWaitStats().pending, 1, 'parked on a waiter thread');
  assert.equal(await watchdog(p, 30000, 'receive'), 'm0');
  await result(child);
  ch.close();
  Channel.unlink(name);
});

test('a doorbell found unreachable (its slot cleared under it) switches this thread to futex waits', async () => {
  const name = uniq('du');
  const ch = Channel.create(name, { capacity: 4096, producers: 'single', consumers: 'single', codec: 'utf8' });
  ch.claim('consumer');
  const { i32, base } = words(ch, CONSUMER_BELLS);
  const p = ch.receive();
  await sleep(10);
  const k = slots(ch, CONSUMER_BELLS).findIndex((v) => v !== 0);
  assert.ok(k >= 0);
  Atomics.store(i32, base + k, 0); // what a ringer does when sendto() says "no such doorbell"
  const tx = Channel.open(name, { codec: 'utf8' });
  tx.sendSync('late'); // rings nobody: the waiter wakes at its liveness slice and finds the message
  assert.equal(await watchdog(p, 30000, 'receive'), 'late');
  const q = ch.receive();
  await sleep(20);
  assert.equal(asyncWaitStats().pending, 1, 'now parked on a waiter thread');
  assert.deepEqual(slots(ch, CONSUMER_BELLS), new Array(SLOTS).fill(0));
  tx.sendSync('again');
  assert.equal(await watchdog(q, 30000, 'receive'), 'again');
  tx.close();
  ch.close();
  Channel.unlink(name);
});

// Conformance: a Python peer written from docs/design.md alone (test/fixtures/peer.py, with the C
// atomics of test/fixtures/peer_atomics.c compiled here) exchanges messages with Node on channels
// in both directions and shares Mutexes with Node processes, crashes included. If the spec missed
// a byte or an ordering rule, the peer and Node disagree here.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { asyncWaitStats, Channel, configure, Mutex, Segment } from 'shmkit';
import { cleanupAll, result, ROOT, run, runner, sleep, uniq, watchdog, uniqLong } from './helpers.mjs';
import { sizeOf } from './fixtures/data.mjs';

const PEER = join(ROOT, 'test', 'fixtures', 'peer.py');
const CHANNEL_CHILD = join(ROOT, 'test', 'fixtures', 'channel-child.mjs');
const lockChild = runner('lock-child.mjs');
const N = 20000;

// The peer's atomics: a few lines of C, compiled for this test into a temporary directory.
const missing = (cmd) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).error !== undefined;
let SKIP = false;
let dir = null;
let lib = null;
if (missing('cc')) SKIP = 'no C compiler: `cc` is not installed (the Python peer needs peer_atomics.c compiled; CI has gcc)';
else if (missing('python3')) SKIP = 'python3 is not installed (the conformance peer is a Python program)';
else {
  dir = mkdtempSync(join(tmpdir(), 'shmkit-peer-'));
  lib = join(dir, 'peer_atomics.so');
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-o', lib, join(ROOT, 'test', 'fixtures', 'peer_atomics.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc failed to compile peer_atomics.c: ${cc.stderr}`);
}

after(() => {
  cleanupAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});
// In-process waits park at once, on the doorbell: the path a Python peer must ring.
configure({ spinMicros: 0 });

const peer = (command, args) => run(command, args, { execPath: 'python3', script: PEER, env: { PEER_ATOMICS: lib } });

/** The message format of channel-child.mjs and peer.py: every message is checkable alone. */
function fill(id, seq, n) {
  const b = Buffer.alloc(n);
  if (n >= 8) {
    b.writeUInt32LE(id, 0);
    b.writeUInt32LE(seq, 4);
    for (let k = 8; k < n; k++) b[k] = (id * 31 + seq * 7 + k) & 255;
  } else for (let k = 0; k < n; k++) b[k] = (id + seq + k) & 255;
  return b;
}

/** [id, seq] for an identifiable message, [-1, size] for one under 8 bytes, null if corrupt. */
function check(m, max) {
  if (m.length >= 8) {
    const id = m.readUInt32LE(0);
    const seq = m.readUInt32LE(4);
    return sizeOf(id, seq, max) === m.length && fill(id, seq, m.length).equals(m) ? [id, seq] : null;
  }
  return [-1, m.length];
}

/**
 * Checks what several consumers received from `ids` x `count` messages: nothing corrupt, each
 * consumer saw every producer's messages in order, and together they got every message once.
 * Consumers report `order` (flat [id, seq, ...] of identifiable messages) and `small` (size -> n).
 */
function checkDelivery(consumers, ids, count, max) {
  const seen = new Map(ids.map((id) => [id, []]));
  const small = {};
  for (const c of consumers) {
    assert.equal(c.bad, 0, 'no corrupt message');
    const last = new Map();
    for (let i = 0; i < c.order.length; i += 2) {
      const [id, seq] = [c.order[i], c.order[i + 1]];
      assert.ok(seen.has(id), `unknown producer ${id}`);
      assert.ok(seq > (last.get(id) ?? -1), `producer ${id}: seq ${seq} after ${last.get(id)} (out of order or duplicate)`);
      last.set(id, seq);
      seen.get(id).push(seq);
    }
    for (const [size, n] of Object.entries(c.small)) small[size] = (small[size] ?? 0) + n;
  }
  const wantSmall = {};
  for (const id of ids) {
    const want = [];
    for (let seq = 0; seq < count; seq++) {
      const n = sizeOf(id, seq, max);
      if (n >= 8) want.push(seq);
      else wantSmall[n] = (wantSmall[n] ?? 0) + 1;
    }
    assert.deepEqual(seen.get(id).sort((a, b) => a - b), want, `producer ${id}: every identifiable message exactly once`);
  }
  assert.deepEqual(small, wantSmall, 'the small messages, by size');
}

const procStart = (pid) => {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return BigInt(s.slice(s.lastIndexOf(')') + 2).split(' ')[19]) & 0x7fffffffn;
};

test('Node -> Python, single/single: 20,000 messages through a wrapping 8 KiB ring (PADs crossed), in order, woken both ways', { skip: SKIP }, async () => {
  const name = uniqLong('cfa', 90, 'a'); // a long name: hashed object name, name block ("Names")
  const ch = Channel.create(name, { capacity: 8192, producers: 'single', consumers: 'single' });
  const max = ch.maxMessageSize;
  const py = peer('recv', { name, expect: { id: 1, count: N } });
  await py.waitFor(/"attached"/);
  const rings = asyncWaitStats().doorbellRings;
  let bytes = 0;
  for (let seq = 0; seq < N; seq++) {
    const m = fill(1, seq, sizeOf(1, seq, max));
    bytes += m.length;
    await watchdog(ch.send(m), 30000, `send #${seq}`);
    if (seq % 2500 === 2499) await sleep(20); // the Python receiver empties the ring and parks on the tail word
  }
  ch.end();
  const r = await result(py, 60000, 'python receiver');
  assert.equal(r.n, N);
  assert.equal(r.bad, 0, 'every message arrived in order with its content');
  assert.ok(r.pads > 0, 'the receiver crossed PAD records');
  assert.ok(r.rung > 0 && asyncWaitStats().doorbellRings > rings, "the Python consumer rang the doorbell of the Node sender parked on a full ring");
  assert.ok(r.wokenByPeer > 0, "a publishing CAS of Node woke the Python receiver parked on the tail word");
  const st = ch.stats();
  assert.equal(st.received, N, 'the Python consumer kept the received counter');
  assert.equal(st.receivedBytes, bytes);
  const entry = ch.peerList().find((p) => p.pid === r.pid);
  assert.ok(entry && entry.consumer && !entry.alive, 'the Python peer registered as a consumer, then departed');
  ch.close();
  Channel.unlink(name);
});

test('Node -> Python, multi/multi: two Node producers, the Python consumer competing with a Node consumer', { skip: SKIP }, async () => {
  const name = uniq('cfb');
  const ch = Channel.create(name, { capacity: 16384 });
  const max = ch.maxMessageSize;
  const count = N / 2;
  const py = peer('recv', { name, batch: 4 });
  const nodeConsumer = run('consumer', { name }, { script: CHANNEL_CHILD });
  await py.waitFor(/"attached"/);
  const producers = [1, 2].map((id) => run('producer', { name, id, count }, { script: CHANNEL_CHILD }));
  for (const [i, p] of producers.entries()) assert.deepEqual(await result(p, 120000, `node producer ${i + 1}`), { produced: count });
  ch.end();
  const rp = await result(py, 60000, 'python consumer');
  const rn = await result(nodeConsumer, 60000, 'node consumer');
  assert.equal(rp.n + rn.n, N);
  assert.ok(rp.n > 0, 'the Python consumer took part');
  assert.equal(rn.dups, 0);
  checkDelivery([rp, rn], [1, 2], count, max);
  ch.close();
  Channel.unlink(name);
});

test('Python -> Node, single/single: Python creates the channel, rings the parked async receiver, parks on a full ring, closes', { skip: SKIP }, async () => {
  const name = uniqLong('cfc', 60, 'c'); // Python creates a long-named channel: Node validates its name block
  const capacity = 8192;
  const py = peer('send', {
    name, id: 1, count: N, close: true, pauseEvery: 2500, pauseMs: 20,
    create: { capacity, maxMessageSize: capacity / 2 - 8, multiProducer: false, multiConsumer: false },
  });
  await py.waitFor(/"created"/);
  const ch = Channel.open(name); // validates the Python-made header, checksum and parameters
  assert.deepEqual([ch.capacity, ch.maxMessageSize, ch.multiProducer, ch.multiConsumer], [capacity, capacity / 2 - 8, false, false]);
  assert.equal(ch.segment.creator.pid, py.child.pid);
  const max = ch.maxMessageSize;
  const rings = asyncWaitStats().doorbellRings;
  const it = ch[Symbol.asyncIterator]();
  let n = 0;
  let bad = 0;
  let bytes = 0;
  for (;;) {
    const r = await watchdog(it.next(), 30000, `message #${n}`);
    if (r.done) break;
    if (!fill(1, n, sizeOf(1, n, max)).equals(r.value)) bad++;
    bytes += r.value.length;
    n++;
    if (n % 4000 === 0) await sleep(30); // the ring fills up: the Python sender parks on the head word
  }
  const r = await result(py, 60000, 'python sender');
  assert.equal(n, N, 'everything arrived, then the end (Python closed the channel)');
  assert.equal(bad, 0, 'in order, with its content');
  assert.ok(r.pads > 0, 'the Python producer wrote PAD records');
  assert.ok(r.rung > 0 && asyncWaitStats().doorbellRings > rings, 'the Python producer rang the doorbell of the parked Node receiver');
  assert.ok(r.wokenByPeer > 0, "Node's head exchange woke the Python sender parked on a full ring");
  const st = ch.stats();
  assert.equal(st.ended, true);
  assert.deepEqual([st.sent, st.sentBytes, st.received, st.receivedBytes], [N, bytes, N, bytes], 'the counters sit where the spec says');
  ch.close();
  Channel.unlink(name);
});

test('Python -> Node, multi/multi: two Python producers and a Node producer share the producer lock', { skip: SKIP }, async () => {
  const name = uniq('cfd');
  const ch = Channel.create(name, { capacity: 16384 });
  const max = ch.maxMessageSize;
  const count = 7000;
  const order = [];
  const small = {};
  let bad = 0;
  let got = 0;
  const consuming = (async () => {
    for (;;) {
      const batch = await watchdog(ch.receiveBatch(64, { failIfPeerGone: false }), 60000, `receiveBatch after ${got} messages`);
      if (batch.length === 0) return;
      for (const m of batch) {
        got++;
        const c = check(m, max);
        if (c === null) bad++;
        else if (c[0] < 0) small[c[1]] = (small[c[1]] ?? 0) + 1;
        else order.push(c[0], c[1]);
      }
    }
  })();
  const pys = [1, 2].map((id) => peer('send', { name, id, count }));
  const node = run('producer', { name, id: 3, count }, { script: CHANNEL_CHILD });
  for (const [i, p] of pys.entries()) assert.equal((await result(p, 120000, `python producer ${i + 1}`)).sent, count);
  assert.deepEqual(await result(node, 120000, 'node producer'), { produced: count });
  ch.end();
  await watchdog(consuming, 60000, 'the consumer loop');
  assert.equal(got, 3 * count);
  checkDelivery([{ bad, order, small }], [1, 2, 3], count, max);
  assert.equal(ch.stats().sent, 3 * count, 'Python producers keep the sent counter under the lock');
  ch.close();
  Channel.unlink(name);
});

test('Mutex: Python and Node processes increment one plain counter without losing an increment', { skip: SKIP }, async () => {
  const name = uniq('cfe');
  const seg = Segment.create(name, { size: 64, initialize: (s) => Mutex.init(s, 0) });
  const M = 5000;
  const procs = [
    peer('mutex-inc', { name, kind: 1, offset: 0, counterOffset: 16, n: M }),
    peer('mutex-inc', { name, kind: 1, offset: 0, counterOffset: 16, n: M }),
    lockChild('increment', { name, n: M }),
    lockChild('increment', { name, n: M, async: true }),
  ];
  for (const [i, p] of procs.entries()) assert.equal((await result(p, 120000, `incrementer ${i}`)).done, M);
  assert.equal(new DataView(seg.data.buffer, seg.data.byteOffset).getUint32(16, true), 4 * M);
  assert.equal(Mutex.at(seg, 0).locked, false);
  seg.close();
  Segment.unlink(name);
});

test('Mutex: a Python holder has a valid owner token; SIGKILLed, Node recovers the lock with recovered: true', { skip: SKIP }, async () => {
  const name = uniq('cff');
  const m = Mutex.create(name);
  const py = peer('mutex-hold', { name });
  await py.waitFor(/"locked"/);
  const info = JSON.parse(py.out.trim().split('\n').pop());
  const pid = py.child.pid;
  const owner = Atomics.load(m.segment.bigint64, 128 / 8);
  assert.equal(owner, BigInt(info.token));
  assert.equal(Number(owner & 0x3fffffn), pid, 'bits 0..21: pid');
  assert.equal((owner >> 22n) & 0x3ffn, 0n, 'bits 22..31: thread slot 0');
  assert.equal((owner >> 32n) & 0x7fffffffn, procStart(pid), 'bits 32..62: start time (low 31 bits)');
  assert.equal(m.tryLock(), null, "Node's liveness check sees the Python owner alive");
  py.child.kill('SIGKILL');
  await watchdog(py.exited, 10000, 'python holder exit');
  const g = await watchdog(m.lock({ timeout: 20000 }), 30000, 'Mutex.lock after the holder died');
  assert.equal(g.recovered, true);
  if (g.deadOwner !== undefined) assert.equal(g.deadOwner.pid, pid);
  g.unlock();
  assert.equal(m.locked, false);
  m.close();
  Segment.unlink(name);
});

test('Mutex: a Node holder is alive to Python; SIGKILLed, Python recovers the lock', { skip: SKIP }, async () => {
  const name = uniq('cfg');
  const m = Mutex.create(name);
  const holder = lockChild('holdLock', { name });
  await holder.waitFor(/locked/);
  assert.equal((await result(peer('mutex-try', { name }), 30000, 'python tryLock')).result, 'busy', "Python's liveness check sees the Node owner alive");
  holder.child.kill('SIGKILL');
  await watchdog(holder.exited, 10000, 'node holder exit');
  const r = await result(peer('mutex-lock', { name, timeout: 20000 }), 30000, 'python lock after the holder died');
  assert.deepEqual(r, { recovered: true, deadPid: holder.child.pid });
  assert.equal(m.locked, false, 'Python unlocked it');
  m.close();
  Segment.unlink(name);
});

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCodes, ShmStream } from 'shmkit';
import { cleanupAll, result, ROOT, run, sleep, uniq, watchdog, uniqLong } from './helpers.mjs';
import { chunks } from './fixtures/data.mjs';

after(cleanupAll);
const SC = join(ROOT, 'test', 'fixtures', 'stream-child.mjs');
const srun = (role, args) => run(role, args, { script: SC });

describe('ShmStream', () => {
  test('another process writes 40 MB through stream.pipeline; bytes arrive intact (sha256)', async () => {
    const name = uniq('st');
    const s = ShmStream.create(name, { capacity: 1 << 18 });
    const w = srun('write', { name, bytes: 40e6, seed: 1 });
    const h = createHash('sha256');
    let n = 0;
    await watchdog(pipeline(s, new Writable({ write(c, _e, cb) { h.update(c); n += c.length; cb(); } })), 120000, 'pipeline');
    const r = await result(w, 60000, 'writer');
    assert.equal(n, 40e6);
    assert.equal(h.digest('hex'), r.sha);
  });

  test('we write, another process reads; end() reaches it as EOF', async () => {
    const name = uniq('st2');
    const s = ShmStream.create(name, { capacity: 1 << 16 });
    const rd = srun('read', { name });
    const h = createHash('sha256');
    const src = Readable.from((function* () { for (const c of chunks(10e6, 7)) { h.update(c); yield c; } })());
    await watchdog(pipeline(src, s), 120000, 'pipeline');
    const r = await result(rd, 60000, 'reader');
    assert.equal(r.n, 10e6);
    assert.equal(r.sha, h.digest('hex'));
  });

  test('backpressure: writes stall while the peer does not read, nothing is dropped', async () => {
    const name = uniq('st3');
    const s = ShmStream.create(name, { capacity: 4096, duplex: { highWaterMark: 1024 } });
    const idle = srun('idle', { name });
    await idle.waitFor(/connected/);
    // Write whenever the stream lets us (write() true, or 'drain'). With a peer that never reads,
    // the ring fills, then the writable buffer, then the writer must stall: bounded memory, no loss.
    let accepted = 0;
    const chunk = Buffer.alloc(512, 1);
    const writeMore = () => {
      for (;;) {
        accepted += chunk.length;
        if (!s.write(chunk)) return;
      }
    };
    s.on('drain', writeMore);
    writeMore();
    await sleep(300);
    const stalledAt = accepted;
    await sleep(200);
    assert.equal(accepted, stalledAt, 'the writer is stalled');
    assert.ok(accepted <= 4096 + 1024 + 2 * 512, `accepted ${accepted} bytes: only what the ring and the writable buffer hold`);
    idle.child.kill('SIGKILL');
    const err = await watchdog(new Promise((r) => s.once('error', r)), 30000, 'peer gone');
    assert.equal(err.code, ErrorCodes.PEER_GONE);
  });

  test('the peer dies: a reader gets PEER_GONE instead of waiting forever', async () => {
    const name = uniq('st4');
    const s = ShmStream.create(name);
    const idle = srun('idle', { name });
    await idle.waitFor(/connected/);
    const done = new Promise((resolve) => {
      s.on('error', resolve);
      s.on('data', () => {});
    });
    await sleep(50);
    idle.child.kill('SIGKILL');
    const err = await watchdog(done, 30000, 'reader error');
    assert.equal(err.code, ErrorCodes.PEER_GONE);
  });

  test('a stream with a 200-character name: its halves get hashed object names and work', async () => {
    const name = uniqLong('long', 200, 'q');
    const a = ShmStream.create(name);
    const b = ShmStream.connect(name);
    try {
      const got = new Promise((resolve) => b.once('data', resolve));
      a.write(Buffer.from('hello'));
      assert.equal(String(await watchdog(got, 10_000, 'data over a long-named stream')), 'hello');
    } finally {
      a.destroy();
      b.destroy();
      await sleep(20);
    }
    assert.throws(() => ShmStream.connect(name), (e) => e.code === ErrorCodes.NOT_FOUND, 'the creator removed both halves');
    assert.equal(ShmStream.unlink(name), false, 'unlink says whether anything was there');
  });

  test('names are validated; connect to a missing stream fails with NOT_FOUND', () => {
    assert.throws(() => ShmStream.create('x'.repeat(201)), (e) => e.argument === 'name');
    assert.throws(() => ShmStream.connect(uniq('none')), (e) => e.code === ErrorCodes.NOT_FOUND);
  });
});

describe('ShmStream regressions', () => {
  // Found in review; failed before its fix (lost, corrupt or blocked data).
  test('a ShmStream end destroyed without end() is seen as gone by the other end', async () => {
    const name = uniq('sd');
    const a = ShmStream.create(name);
    const b = ShmStream.connect(name);
    const err = new Promise((resolve) => a.once('error', resolve));
    a.on('data', () => {});
    await sleep(20);
    b.destroy();
    assert.equal((await watchdog(err, 30000, 'peer gone')).code, ErrorCodes.PEER_GONE);
  });
});

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, statfsSync, truncateSync, writeSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Channel, ErrorCodes, HEADER_SIZE, MAX_NAME_LENGTH, Mutex, Segment, Semaphore, ShmkitError } from 'shmkit';
import { cleanupAll, result, ROOT, runner, sleep, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);
const segmentChild = runner('segment-child.mjs');
const channelChild = runner('channel-child.mjs');

const code = (c) => (e) => e instanceof ShmkitError && e.code === c;

describe('Segment', () => {
  test('create, write, open from the same process, unlink', () => {
    const name = uniq('seg');
    const seg = Segment.create(name, { size: 1000 });
    assert.equal(seg.created, true);
    assert.equal(seg.size, 1000);
    assert.equal(seg.byteLength, 1000 + HEADER_SIZE);
    assert.equal(seg.creator.pid, process.pid);
    seg.data[999] = 42;
    const again = Segment.open(name);
    assert.equal(again.created, false);
    assert.equal(again.data[999], 42);
    assert.equal(statSync(`/dev/shm/shmkit-${name}`).mode & 0o777, 0o600);
    assert.equal(Segment.unlink(name), true);
    assert.equal(Segment.unlink(name), false);
    assert.throws(() => Segment.open(name), code(ErrorCodes.NOT_FOUND));
  });

  test('mode is applied exactly, regardless of umask', () => {
    const name = uniq('mode');
    const old = process.umask(0o077);
    try {
      const seg = Segment.create(name, { size: 8, mode: 0o640 });
      assert.equal(statSync(`/dev/shm/shmkit-${name}`).mode & 0o777, 0o640);
      seg.unlink();
    } finally {
      process.umask(old);
    }
  });

  test('create on an existing name fails with EXISTS and leaves the original intact', () => {
    const name = uniq('dup');
    const seg = Segment.create(name, { size: 16 });
    seg.data[0] = 7;
    assert.throws(() => Segment.create(name, { size: 32 }), code(ErrorCodes.EXISTS));
    const again = Segment.open(name);
    assert.equal(again.data[0], 7);
    assert.equal(again.size, 16);
    seg.unlink();
  });

  test('initialize runs before anyone can open it, and a throwing initializer leaves nothing', () => {
    const name = uniq('init');
    assert.throws(
      () => Segment.create(name, { size: 8, initialize: () => { throw new Error('boom'); } }),
      /boom/,
    );
    assert.throws(() => Segment.open(name), code(ErrorCodes.NOT_FOUND));
    const seg = Segment.create(name, { size: 8, initialize: (s) => { s.data[3] = 9; } });
    const other = Segment.open(name);
    assert.equal(other.data[3], 9);
    seg.unlink();
  });

  test('names are validated and named in the error', () => {
    for (const bad of ['', 'a/b', '../x', '.hidden', '-x', 'x'.repeat(MAX_NAME_LENGTH + 1), 'sp ace', 'é', 42, null]) {
      assert.throws(() => Segment.create(bad, { size: 8 }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && e.argument === 'name', `name ${String(bad)}`);
    }
    assert.equal(MAX_NAME_LENGTH, 250);
    const name = uniq('opt');
    for (const [opts, arg] of [
      [undefined, 'options.size'],
      [{ size: -1 }, 'options.size'],
      [{ size: 1.5 }, 'options.size'],
      [{ size: 8, mode: 0o1777 }, 'options.mode'],
      [{ size: 8, initialize: 3 }, 'options.initialize'],
      ['x', 'options'],
    ]) {
      assert.throws(() => Segment.create(name, opts), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && e.argument === arg, JSON.stringify(opts));
    }
    assert.equal(existsSync(`/dev/shm/shmkit-${name}`), false);
  });

  test('long names: a hashed object name, the full name kept in the name block and checked on open', () => {
    const short = uniq('s').padEnd(23, 'x'); // 23 characters: the plain form, as before
    const long = `${uniq('long')}-${'n'.repeat(150)}`;
    const twin = `${long.slice(0, -1)}m`; // same 10-character prefix, another name
    const made = [];
    try {
      const a = Segment.create(short, { size: 8 });
      made.push(short);
      assert.equal(a.shmName, `shmkit-${short}`);
      assert.equal(a.dataOffset, HEADER_SIZE);
      a.close();
      const b = Segment.create(long, { size: 64 });
      made.push(long);
      assert.match(b.shmName, /^shmkit-.{10}\+[a-z2-7]{12}$/);
      assert.equal(b.shmName.length, 30, 'portable: 31 bytes with the slash');
      assert.ok(existsSync(`/dev/shm/${b.shmName}`));
      assert.equal(b.name, long);
      assert.equal(b.size, 64);
      assert.equal(b.dataOffset, HEADER_SIZE + 256, 'the data follows the name block');
      b.data[0] = 42;
      const c = Segment.create(twin, { size: 8 });
      made.push(twin);
      assert.notEqual(c.shmName, b.shmName);
      c.close();
      const reopened = Segment.open(long);
      assert.equal(reopened.data[0], 42);
      assert.equal(reopened.size, 64);
      reopened.close();
      b.close();
      // The name block is checked against the name asked for: a block that holds another name
      // (damage, or a hash collision) is refused, not followed.
      const fd = openSync(`/dev/shm/${b.shmName}`, 'r+');
      writeSync(fd, Buffer.from('Z'), 0, 1, HEADER_SIZE + 4 + 5);
      closeSync(fd);
      assert.throws(() => Segment.open(long), (e) => e.code === ErrorCodes.CORRUPT && /name block/.test(e.message));
      // Too long, and a derived name's room is not taken from users' names.
      assert.throws(() => Segment.create('y'.repeat(251), { size: 8 }), (e) => e.argument === 'name');
      const vector = Segment.openOrCreate('conformance-test-a-long-channel-name', { size: 8 });
      made.push(vector.name);
      assert.equal(vector.shmName, 'shmkit-conformanc+o2ng2rng4e6c', 'the test vector of docs/design.md "Names"');
      vector.close();
      const max = `${uniq('max')}`.padEnd(250, 'z');
      const d = Segment.create(max, { size: 8 });
      made.push(max);
      assert.equal(Segment.open(max).name, max);
      d.close();
    } finally {
      for (const n of made) Segment.unlink(n);
    }
  });

  test('close() while views exist: views become empty, never a crash', () => {
    const name = uniq('close');
    const seg = Segment.create(name, { size: 4096 });
    const view = seg.data;
    const words = new Int32Array(seg.buffer);
    view.fill(1);
    seg.close();
    seg.close(); // idempotent
    assert.equal(view.length, 0);
    assert.equal(words.length, 0);
    assert.equal(view[10], undefined);
    view[10] = 5; // a write to a detached view is a no-op
    assert.equal(seg.buffer.byteLength, 0);
    assert.throws(() => seg.data, code(ErrorCodes.CLOSED));
    const m = Mutex.at(Segment.open(name), 0);
    m.segment.close();
    assert.throws(() => m.lockSync(), code(ErrorCodes.CLOSED));
    assert.throws(() => Mutex.at(m.segment, 0), code(ErrorCodes.CLOSED));
    Segment.unlink(name);
  });

  test('Symbol.dispose closes', () => {
    const name = uniq('disp');
    const seg = Segment.create(name, { size: 64 });
    const view = seg.data;
    assert.equal(view.length, 64);
    assert.equal(typeof seg[Symbol.dispose], 'function');
    seg[Symbol.dispose]();
    assert.equal(seg.closed, true);
    assert.equal(view.length, 0);
    Segment.unlink(name);
  });

  test('a full /dev/shm fails at create with NO_SPACE, not SIGBUS later', () => {
    const fs = statfsSync('/dev/shm');
    const total = fs.blocks * fs.bsize;
    const name = uniq('big');
    assert.throws(() => Segment.create(name, { size: total + 64 * 1024 * 1024 }), (e) => e.code === ErrorCodes.NO_SPACE && e.syscall === 'posix_fallocate' && e.errnoCode === 'ENOSPC');
    assert.equal(existsSync(`/dev/shm/shmkit-${name}`), false);
  });

  test('several processes race openOrCreate: exactly one creates, all see the initialized data', async () => {
    const name = uniq('race');
    const n = 8;
    const procs = Array.from({ length: n }, () => segmentChild('openOrCreate', { name }));
    const results = await Promise.all(procs.map((p, i) => result(p, 60000, `racer ${i}`)));
    assert.equal(results.filter((r) => r.created).length, 1, JSON.stringify(results));
    for (const r of results) assert.equal(r.marker, 0xc0ffee);
    assert.deepEqual(results.map((r) => r.order).sort((x, y) => x - y), [...Array(n).keys()]);
    Segment.unlink(name);
  });

  test('openOrCreate in one process: created then opened', () => {
    const name = uniq('ooc');
    const a = Segment.openOrCreate(name, { size: 100 });
    const b = Segment.openOrCreate(name, { size: 5000 });
    assert.equal(a.created, true);
    assert.equal(b.created, false);
    assert.equal(b.size, 100, 'an existing segment keeps its size');
    a.unlink();
  });
});

describe('untrusted headers', () => {
  function rawObject(name, bytes) {
    const fd = openSync(`/dev/shm/shmkit-${name}`, 'w', 0o600);
    writeSync(fd, bytes);
    closeSync(fd);
  }

  test('an empty object, a short one, and a foreign one', () => {
    const name = uniq('raw');
    rawObject(name, Buffer.alloc(0));
    assert.throws(() => Segment.open(name), code(ErrorCodes.TOO_SMALL));
    rawObject(name, Buffer.alloc(100, 1));
    assert.throws(() => Segment.open(name), code(ErrorCodes.TOO_SMALL));
    rawObject(name, Buffer.alloc(4096, 0));
    assert.throws(() => Segment.open(name), code(ErrorCodes.NOT_SHMKIT));
    Segment.unlink(name);
  });

  test('every corrupted header byte gives a typed error or a valid open, never a crash or hang', () => {
    const name = uniq('hdr');
    const seg = Segment.create(name, { size: 256 });
    const good = Buffer.from(new Uint8Array(seg.buffer, 0, HEADER_SIZE)).subarray(0, HEADER_SIZE);
    const pristine = Buffer.from(good);
    const hdr = new Uint8Array(seg.buffer, 0, HEADER_SIZE);
    const seen = new Set();
    for (let i = 0; i < 64; i++) {
      for (const flip of [0x01, 0x80, 0xff]) {
        hdr[i] ^= flip;
        try {
          Segment.open(name).close();
          // Only bytes outside the checksummed fields (state, reserved) may still open.
          assert.ok(i >= 60 || (i >= 12 && i < 16), `byte ${i} ^ ${flip} was accepted`);
          seen.add('opened');
        } catch (e) {
          assert.ok(e instanceof ShmkitError, `byte ${i}: ${e}`);
          assert.ok([ErrorCodes.CORRUPT, ErrorCodes.VERSION, ErrorCodes.NOT_SHMKIT, ErrorCodes.KIND].includes(e.code), `byte ${i}: ${e.code}`);
          seen.add(e.code);
        }
        hdr.set(pristine);
      }
    }
    assert.ok(seen.has(ErrorCodes.CORRUPT) && seen.has(ErrorCodes.VERSION) && seen.has(ErrorCodes.NOT_SHMKIT));
    seg.close();
    Segment.unlink(name);
  });

  test('opening a segment as the wrong kind gives KIND; a named primitive too small gives TOO_SMALL', () => {
    const name = uniq('kind');
    const seg = Segment.create(name, { size: 64 });
    assert.throws(() => Semaphore.open(name), code(ErrorCodes.KIND));
    assert.throws(() => Mutex.open(name), (e) => e.code === ErrorCodes.KIND && /segment, not a mutex/.test(e.message));
    seg.unlink();
    const sem = Semaphore.create(name);
    assert.throws(() => Segment.open(name), code(ErrorCodes.KIND));
    sem.close();
    Segment.unlink(name);
  });

  test('a process running as nobody cannot open a default (0600) segment', { skip: process.getuid?.() !== 0 && 'needs root to drop privileges' }, async () => {
    const name = uniq('perm');
    const seg = Segment.create(name, { size: 64 });
    // Copy the built package somewhere `nobody` can read it (the checkout may be under /root).
    const { mkdtempSync, cpSync, chmodSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { ROOT } = await import('./helpers.mjs');
    const dir = mkdtempSync('/tmp/shmkit-perm-');
    try {
      const pkg = join(dir, 'node_modules', 'shmkit');
      for (const p of ['package.json', 'dist', 'build/Release/shmkit.node']) cpSync(join(ROOT, p), join(pkg, p), { recursive: true });
      cpSync(join(ROOT, 'node_modules', 'node-gyp-build'), join(dir, 'node_modules', 'node-gyp-build'), { recursive: true });
      for (const f of ['segment-child.mjs', 'child-main.mjs']) cpSync(join(ROOT, 'test', 'fixtures', f), join(dir, f));
      chmodSync(dir, 0o755);
      const { spawn } = await import('node:child_process');
      const child = spawn('/usr/bin/setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, join(dir, 'segment-child.mjs'), 'openSegment', JSON.stringify({ name })], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      const codeExit = await watchdog(new Promise((r) => child.on('close', r)), 30000, 'setpriv child');
      assert.equal(codeExit, 0, err);
      const r = JSON.parse(out.trim().split('\n').pop());
      assert.deepEqual(r, { result: ErrorCodes.PERMISSION, errno: 'EACCES' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
      seg.unlink();
    }
  });
});

describe('Segment regressions', () => {
  // Found in review; failed before its fix (a crash, a hang or a wrong result).
  test('close() after the buffer was moved with transfer() does not unmap memory the new buffer uses', { skip: typeof ArrayBuffer.prototype.transfer !== 'function' && 'ArrayBuffer.prototype.transfer needs Node 22+' }, () => {
    const name = uniq('xfer');
    const seg = Segment.create(name, { size: 4096 });
    seg.data[100] = 42;
    const moved = seg.buffer.transfer();
    seg.close();
    assert.equal(new Uint8Array(moved)[128 + 100], 42, 'the transferred buffer still reads the mapping');
    Segment.unlink(name);
  });
});

// A peer truncates the segment under a waiter: the waiter must report it, not die of SIGBUS. Found by
// crash and hostile-input testing (truncation by a peer); each failed before its fix.
describe('a segment truncated by a peer', () => {
  const isRoot = process.getuid?.() === 0;

  test('async waits on a segment that a peer truncated report CORRUPT instead of dying of SIGBUS', async () => {
    for (const kind of ['semAsync', 'channelAsync']) {
      const name = uniq('ta');
      if (kind === 'channelAsync') Channel.create(name, { capacity: 4096 }).close();
      else Segment.create(name, { size: 64 }).close();
      const victim = segmentChild('park', { name, kind, liveness: 1000 }); // long slices: the truncation lands while it is parked, not in the few µs between a slice's check and its next touch (the race design.md documents)
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
      const victim = channelChild('receiveLong', { name, liveness: 1000 }); // as above
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
      ch.close();
      Channel.unlink(name);
    });
  }
});

// Trust in an object's owner: open and openOrCreate refuse a segment, a named primitive or a named
// semaphore that another user created first (a squatter) unless that owner is trusted
// (options.trustedOwners). Found by crash and hostile-input testing (ownership: an accepted
// squatter); failed before its fix.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { chownSync } from 'node:fs';
import { Channel, ErrorCodes, Mutex, NamedSemaphore, Segment } from 'shmkit';
import { cleanupAll, uniq } from './helpers.mjs';

after(cleanupAll);

const code = (c) => (err) => {
  assert.equal(err.code, c, `expected ${c}, got ${err.code}: ${err.message}`);
  return true;
};
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

test('open and openOrCreate refuse an object owned by another user unless trusted', { skip: !isRoot && 'needs root to give a file away' }, () => {
  const name = uniq('sq');
  const ch = Channel.create(name, { capacity: 4096, mode: 0o666 });
  ch.close();
  chownSync(`/dev/shm/shmkit-${name}`, NOBODY, NOBODY); // as if user nobody had created it first
  for (const call of [() => Channel.openOrCreate(name), () => Channel.open(name), () => Segment.open(name)]) {
    assert.throws(call, (err) => err.code === ErrorCodes.UNTRUSTED_OWNER || err.code === ErrorCodes.KIND);
  }
  assert.throws(() => Channel.openOrCreate(name), code(ErrorCodes.UNTRUSTED_OWNER));
  const trusted = Channel.open(name, { trustedOwners: { uids: [NOBODY] } });
  trusted.close();
  Channel.open(name, { trustedOwners: { gids: [NOBODY] } }).close();
  Channel.open(name, { trustedOwners: 'any' }).close();
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

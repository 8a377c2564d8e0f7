// SharedMap: the operations, compare-and-set, increment, TTL, a full map with and without LRU,
// limits, watch, real processes running random operations against a model, writers SIGKILLed at
// random points while readers check every value is whole, and garbage in every part of the map.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, writeSync, closeSync, fstatSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { ErrorCodes, SharedMap, ShmkitError } from 'shmkit';
import { spawnSync } from 'node:child_process';
import { cleanupAll, entriesOf, killCliChildren, result, ROOT, runCli, runner, sleep, startCli, uniq, watchdog } from './helpers.mjs';
import { check, makeValue } from './fixtures/map-values.mjs';

const child = runner('map-child.mjs');
after(() => {
  killCliChildren();
  cleanupAll();
});
const code = (c) => (e) => e instanceof ShmkitError && e.code === c;

/** A map that is closed and unlinked after `fn`. */
async function withMap(options, fn, name = uniq('mp')) {
  const m = SharedMap.create(name, options);
  try {
    return await fn(m, name);
  } finally {
    m.close();
    SharedMap.unlink(name);
  }
}

/** Takes the next change of a watch within a watchdog. */
const nextChange = (w, what = 'watch') => watchdog(w.next(), 10_000, what).then((r) => r.value);

describe('SharedMap in one process', () => {
  test('get, set, delete, has, size, keys and entries with a prefix, clear', () =>
    withMap({ maxEntries: 64 }, (m) => {
      assert.equal(m.get('a'), undefined);
      assert.equal(m.has('a'), false);
      const r1 = m.set('a', { x: 1 });
      assert.ok(Number.isSafeInteger(r1) && r1 > 0);
      assert.deepEqual(m.get('a'), { x: 1 });
      assert.equal(m.has('a'), true);
      const r2 = m.set('a', [1, 'two']);
      assert.ok(r2 > r1, 'a key\'s revision grows');
      assert.deepEqual(m.getEntry('a'), { value: [1, 'two'], revision: r2, expiresAt: null });
      for (let i = 0; i < 20; i++) m.set(`user:${i}`, i);
      m.set('other', 'x');
      m.set('', 'the empty key');
      assert.equal(m.size, 23);
      assert.equal(m.get(''), 'the empty key');
      assert.deepEqual([...m.keys('user:1')].sort(), ['user:1', ...Array.from({ length: 10 }, (_, i) => `user:1${i}`)].sort());
      assert.deepEqual(new Map(m.entries('user:')).get('user:7'), 7);
      assert.equal([...m.keys()].length, 23);
      assert.equal(new Map(m).get('other'), 'x', 'the map iterates as its entries');
      assert.equal(m.delete('a'), true);
      assert.equal(m.delete('a'), false);
      assert.equal(m.get('a'), undefined);
      assert.equal(m.size, 22);
      assert.equal(m.clear(), 22);
      assert.equal(m.size, 0);
      assert.deepEqual([...m.keys()], []);
      assert.ok(m.verify().ok);
    }));

  test('non-ASCII keys and every codec; handles of one map share it', async () => {
    const name = uniq('mc');
    for (const [i, [codec, value]] of [['json', { é: [1, null] }], ['utf8', 'héllo ✓'], ['bytes', Buffer.from([0, 1, 2, 255])], ['jsonb', { a: [1.5, 'x'], b: null, c: true }], ['structured', new Map([[1, 2]])]].entries()) {
      await withMap({ codec, maxEntries: 8 }, (m, n) => {
        m.set('clé ✓ 日本', value);
        assert.deepEqual(m.get('clé ✓ 日本'), value, codec);
        const other = SharedMap.open(n, { codec });
        try {
          assert.deepEqual(other.get('clé ✓ 日本'), value, `${codec}: another handle reads it`);
          other.set('k2', value);
          assert.deepEqual(m.get('k2'), value);
        } finally {
          other.close();
        }
      }, `${name}${i}`);
    }
  });

  test('compare-and-set: ifRevision, ifAbsent, ifPresent; delete with ifRevision', () =>
    withMap({}, (m) => {
      assert.throws(() => m.set('k', 1, { ifPresent: true }), code(ErrorCodes.NOT_FOUND));
      const r1 = m.set('k', 1, { ifAbsent: true });
      assert.throws(() => m.set('k', 2, { ifAbsent: true }), code(ErrorCodes.EXISTS));
      const err = (() => {
        try {
          m.set('k', 3, { ifRevision: r1 + 1 });
        } catch (e) {
          return e;
        }
      })();
      assert.equal(err.code, ErrorCodes.CONFLICT);
      assert.equal(err.revision, r1, 'the error says the current revision');
      assert.equal(m.get('k'), 1, 'nothing was written');
      const r2 = m.set('k', 4, { ifRevision: r1 });
      assert.equal(m.get('k'), 4);
      assert.throws(() => m.set('k', 5, { ifRevision: r1 }), code(ErrorCodes.CONFLICT), 'a stale revision loses');
      assert.throws(() => m.set('new', 1, { ifRevision: 7 }), code(ErrorCodes.CONFLICT));
      m.set('new', 1, { ifRevision: 0 });
      assert.throws(() => m.delete('k', { ifRevision: r1 }), code(ErrorCodes.CONFLICT));
      assert.equal(m.delete('k', { ifRevision: r2 }), true);
      m.set('k', 9);
      assert.ok(m.getEntry('k').revision > r2, 'a revision is never reused after a delete');
    }));

  test('increment: absent counts as 0, floats, utf8 text counters, non-numbers refused', () => {
    withMap({}, (m) => {
      assert.equal(m.increment('c'), 1);
      assert.equal(m.increment('c', 41), 42);
      assert.equal(m.increment('c', -0.5), 41.5);
      assert.equal(m.get('c'), 41.5);
      m.set('s', 'text');
      assert.throws(() => m.increment('s'), code(ErrorCodes.INVALID_ARGUMENT));
      assert.equal(m.get('s'), 'text');
      assert.throws(() => m.increment('c', Infinity), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => m.increment('c', '1'), code(ErrorCodes.INVALID_ARGUMENT));
      m.set('big', Number.MAX_VALUE);
      assert.throws(() => m.increment('big', Number.MAX_VALUE), code(ErrorCodes.OVERFLOW));
    });
    withMap({ codec: 'utf8' }, (m) => {
      assert.equal(m.increment('n', 2), 2);
      assert.equal(m.get('n'), '2');
      m.set('x', 'abc');
      assert.throws(() => m.increment('x'), code(ErrorCodes.INVALID_ARGUMENT));
    });
    withMap({ codec: 'bytes' }, (m) => assert.throws(() => m.increment('n'), code(ErrorCodes.INVALID_ARGUMENT)));
  });

  test('TTL: an expired key reads as absent, is removed by writers and purgeExpired(), and keeps its TTL on increment', async () =>
    withMap({}, async (m) => {
      m.set('t', 'soon', { ttl: 30 });
      m.set('keep', 1);
      const e = m.getEntry('t');
      assert.ok(e.expiresAt > Date.now() && e.expiresAt <= Date.now() + 30);
      assert.equal(m.increment('n', 1, { ttl: 30 }), 1);
      assert.equal(m.increment('n'), 2);
      assert.ok(m.getEntry('n').expiresAt !== null, 'increment keeps the expiry');
      await sleep(60);
      assert.equal(m.get('t'), undefined);
      assert.equal(m.has('t'), false);
      assert.equal(m.getEntry('n'), undefined);
      assert.deepEqual([...m.keys()], ['keep']);
      assert.equal(m.size, 3, 'expired entries count until removed');
      assert.equal(m.purgeExpired(), 2);
      assert.equal(m.size, 1);
      assert.equal(m.stats().expirations, 2);
      m.set('t2', 1, { ttl: 10 });
      await sleep(30);
      assert.equal(m.set('t2', 2, { ifAbsent: true }) > 0, true, 'an expired key is absent for ifAbsent');
      m.set('t3', 1, { ttl: 100000 });
      m.set('t3', 2);
      assert.equal(m.getEntry('t3').expiresAt, null, 'a set without ttl clears it');
      assert.throws(() => m.set('x', 1, { ttl: 0 }), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => m.set('x', 1, { ttl: -5 }), code(ErrorCodes.INVALID_ARGUMENT));
      assert.ok(m.verify().ok);
    }));

  test('limits: a key or value over the limit is a typed error and nothing is written', () =>
    withMap({ maxKeyBytes: 8, maxValueSize: 100, valueBytes: 4096 }, (m) => {
      m.set('k', 'old');
      const before = m.stats();
      assert.throws(() => m.set('123456789', 1), (e) => e.code === ErrorCodes.TOO_LARGE && e.argument === 'key');
      assert.throws(() => m.set('ééééé', 1), code(ErrorCodes.TOO_LARGE), '10 UTF-8 bytes');
      m.set('éééé', 1); // 8 bytes
      assert.throws(() => m.set('k', 'x'.repeat(200)), (e) => e.code === ErrorCodes.TOO_LARGE && e.argument === 'value');
      assert.equal(m.get('k'), 'old');
      assert.throws(() => m.get(5), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => m.set(null, 1), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => m.set('a\ud800', 1), code(ErrorCodes.INVALID_ARGUMENT), 'a lone surrogate');
      assert.throws(() => m.set('k', undefined), (e) => e instanceof ShmkitError, 'json cannot encode undefined');
      assert.throws(() => m.set('k', 1, { ifRevision: -1 }), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => m.set('k', 1, { bogus: 1, ifAbsent: 'yes' }), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => m.keys(3).next(), code(ErrorCodes.INVALID_ARGUMENT));
      assert.equal(m.stats().entries, before.entries + 1);
      assert.ok(m.verify().ok);
      assert.throws(() => SharedMap.create(uniq('mb'), { stripes: 3 }), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => SharedMap.create(uniq('mb'), { eviction: 'fifo' }), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => SharedMap.create(uniq('mb'), { valueBytes: 64, maxValueSize: 100 }), code(ErrorCodes.INVALID_ARGUMENT));
      assert.throws(() => SharedMap.create(uniq('mb'), { maxEntries: 0 }), code(ErrorCodes.INVALID_ARGUMENT));
    }));

  test('full without eviction: ERR_SHMKIT_FULL for entries and for value bytes, nothing written, room comes back', () => {
    withMap({ maxEntries: 4 }, (m) => {
      for (let i = 0; i < 4; i++) m.set(`k${i}`, i);
      assert.throws(() => m.set('k4', 4), code(ErrorCodes.FULL));
      m.set('k0', 'replaced'); // an update needs no new entry
      assert.equal(m.size, 4);
      m.delete('k1');
      m.set('k4', 4);
      assert.ok(m.verify().ok);
    });
    withMap({ maxEntries: 100, valueBytes: 1024, maxValueSize: 500 }, (m) => {
      m.set('a', 'x'.repeat(400));
      m.set('b', 'x'.repeat(400));
      assert.throws(() => m.set('c', 'x'.repeat(400)), code(ErrorCodes.FULL));
      assert.equal(m.get('c'), undefined);
      assert.throws(() => m.set('a', 'y'.repeat(450)), code(ErrorCodes.FULL), 'the new value needs room beside the old one');
      assert.equal(m.get('a'), 'x'.repeat(400), 'the old value stays');
      m.delete('b');
      m.set('c', 'x'.repeat(400));
      const v = m.verify();
      assert.ok(v.ok, v.problems.join('; '));
      assert.equal(m.stats().evictions, 0);
    });
  });

  test('full with eviction: lru evicts the least recently used, counts it, and keeps recently read keys', () =>
    withMap({ maxEntries: 32, valueBytes: 64 * 1024, eviction: 'lru' }, async (m) => {
      for (let i = 0; i < 32; i++) m.set(`k${i}`, i);
      await sleep(5);
      for (const i of [3, 7, 11]) assert.equal(m.get(`k${i}`), i); // recently used
      for (let i = 32; i < 96; i++) {
        m.set(`k${i}`, i);
        for (const j of [3, 7, 11]) m.get(`k${j}`);
      }
      assert.equal(m.size, 32);
      for (const i of [3, 7, 11]) assert.equal(m.get(`k${i}`), i, `k${i} was read all along`);
      assert.equal(m.get('k95'), 95);
      assert.equal(m.stats().evictions, 64);
      const v = m.verify();
      assert.ok(v.ok, v.problems.join('; '));
      // Value bytes: a big value evicts as many as it needs.
      m.set('big', 'x'.repeat(30 * 1024));
      assert.equal(m.get('big').length, 30 * 1024);
      assert.ok(m.verify().ok);
    }));

  test('watch: one key, a prefix, initial entries, coalescing, expiry and eviction events, abort and close', async () =>
    withMap({ maxEntries: 8, eviction: 'lru' }, async (m) => {
      m.set('a', 0);
      m.set('u:0', 'zero');
      const wa = m.watch('a');
      const wp = m.watch('u:', { prefix: true, initial: true });
      const wall = m.watch();
      assert.deepEqual(await nextChange(wp), { type: 'set', key: 'u:0', value: 'zero', revision: m.getEntry('u:0').revision });
      m.set('u:1', 'one');
      const ra = m.set('a', 1);
      assert.deepEqual(await nextChange(wa), { type: 'set', key: 'a', value: 1, revision: ra });
      assert.equal((await nextChange(wp)).key, 'u:1');
      m.delete('a');
      assert.deepEqual(await nextChange(wa), { type: 'delete', key: 'a', revision: ra });
      // Many writes while the watcher does not read: they may coalesce, the last one always arrives.
      for (let i = 0; i < 50; i++) m.set('a', i);
      let last;
      do last = await nextChange(wa);
      while (last.value !== 49);
      // A watcher removes a watched key when its TTL is due, so 'expire' arrives without other writes.
      m.set('u:t', 'ttl', { ttl: 30 });
      const rt = m.getEntry('u:t').revision;
      assert.deepEqual(await nextChange(wp), { type: 'set', key: 'u:t', value: 'ttl', revision: rt });
      assert.deepEqual(await nextChange(wp), { type: 'expire', key: 'u:t', revision: rt });
      // Eviction.
      const seen = [];
      for (let i = 0; i < 12; i++) m.set(`e${i}`, i);
      while (!seen.some((c) => c.type === 'evict')) seen.push(await nextChange(wall, 'watch every key'));
      assert.ok(m.stats().evictions > 0);
      // Abort, and close with a pending next().
      const ac = new AbortController();
      const wx = m.watch('zz', { signal: ac.signal });
      const px = wx.next();
      ac.abort();
      await assert.rejects(watchdog(px, 10_000, 'aborted watch'), (e) => e.name === 'AbortError');
      const wq = m.watch('quiet');
      const pq = wq.next();
      wq.close();
      assert.deepEqual(await watchdog(pq, 10_000, 'closed watch'), { value: undefined, done: true });
      wa.close();
      wp.close();
      await wall.return();
      assert.equal(m.stats().watchers, 0);
      assert.throws(() => m.watch(5), code(ErrorCodes.INVALID_ARGUMENT));
    }));

  test('watch: a watcher lapped by the writers rescans and gets the latest value of every key, and the deletes', async () =>
    withMap({ maxEntries: 256, watchRecords: 4 }, async (m) => {
      for (let i = 0; i < 10; i++) m.set(`k${i}`, -1);
      const w = m.watch('k', { prefix: true });
      for (let round = 0; round < 5; round++) for (let i = 0; i < 10; i++) m.set(`k${i}`, round);
      m.delete('k3');
      m.delete('k4');
      const latest = new Map();
      const deleted = new Set();
      while (latest.size < 8 || deleted.size < 2 || [...latest.values()].some((v) => v !== 4)) {
        const c = await nextChange(w, 'lapped watch');
        if (c.type === 'set') latest.set(c.key, c.value);
        else if (c.type === 'delete') deleted.add(c.key);
      }
      assert.deepEqual([...deleted].sort(), ['k3', 'k4']);
      assert.ok(!latest.has('k3') || deleted.has('k3'));
      w.close();
    }));

  test('closing a handle ends its watches; use after close is ERR_SHMKIT_CLOSED; stats count reads and writes', async () => {
    const name = uniq('mz');
    const m = SharedMap.create(name);
    m.set('a', 1);
    m.get('a');
    m.get('b');
    const s = m.stats();
    assert.deepEqual([s.gets, s.hits, s.misses, s.writes], [2, 1, 1, 1]);
    const w = m.watch('a');
    const p = w.next();
    const other = SharedMap.open(name);
    m.close();
    assert.deepEqual(await watchdog(p, 10_000, 'watch of a closed handle'), { value: undefined, done: true });
    assert.throws(() => m.get('a'), code(ErrorCodes.CLOSED));
    assert.throws(() => m.set('a', 1), code(ErrorCodes.CLOSED));
    const t = other.stats();
    assert.deepEqual([t.gets, t.hits, t.writes], [2, 1, 1], 'a closed handle\'s counts are kept');
    other.close();
    SharedMap.unlink(name);
    assert.deepEqual(entriesOf(name), []);
  });
});

describe('SharedMap across processes', () => {
  test('model check: 4 processes run random operations; counters end exact and CAS never lets two writers win', async () =>
    withMap({ maxEntries: 1024, valueBytes: 1 << 20, stripes: 8 }, async (m, name) => {
      const procs = [0, 1, 2, 3].map((id) => child('model', { name, id, seed: 1000 + id * 7919, ops: 4000 }));
      const results = await Promise.all(procs.map((p, i) => result(p, 120_000, `model child ${i}`)));
      const increments = results.reduce((n, r) => n + r.increments, 0);
      const wins = results.reduce((n, r) => n + r.casWins, 0);
      assert.equal(m.get('counter'), increments, 'every increment counted once');
      assert.equal(m.get('cas')?.n ?? 0, wins, 'each CAS win added one: no two writers won on one revision');
      assert.ok(results.reduce((n, r) => n + r.casLosses, 0) >= 0);
      const v = m.verify();
      assert.ok(v.ok, v.problems.join('; '));
      assert.equal(v.entries, m.size);
    }));

  test('SIGKILL writers at random points: readers never see a torn value, and after recovery the invariants hold', async () =>
    withMap({ maxEntries: 64, valueBytes: 256 * 1024, maxValueSize: 16 * 1024, stripes: 4, codec: 'bytes' }, async (m, name) => {
      const keys = 48;
      const reader = child('reader', { name, keys, seed: 7 });
      await reader.waitFor(/ready/);
      let seed = 1;
      const start = () => child('writer', { name, keys, seed: seed++, maxValue: 16 * 1024 });
      const writers = [start(), start(), start()];
      await Promise.all(writers.map((w) => w.waitFor(/ready/)));
      const rounds = 40;
      for (let r = 0; r < rounds; r++) {
        await sleep(5 + Math.floor(Math.random() * 25));
        const i = r % writers.length;
        writers[i].child.kill('SIGKILL');
        const gone = await watchdog(writers[i].exited, 20_000, 'killed writer');
        assert.equal(gone.signal, 'SIGKILL', `writer died of the kill, not of an error: ${gone.err}`);
        writers[i] = start();
        await writers[i].waitFor(/ready/);
      }
      for (const w of writers) w.child.kill('SIGKILL');
      await Promise.all(writers.map((w) => watchdog(w.exited, 20_000, 'writer')));
      reader.child.kill('SIGTERM');
      const rr = await result(reader, 60_000, 'reader');
      assert.ok(rr.reads > 0 && rr.found > 0, `the reader read values: ${JSON.stringify(rr)}`);
      // A write runs any recovery still owed; then every invariant holds.
      m.set('k0', makeValue(Buffer.alloc(64), 0, 1, 64), { timeout: 20_000 });
      const v = m.verify({ timeout: 20_000 });
      assert.ok(v.ok, v.problems.join('; '));
      const all = [...m.entries()];
      assert.equal(new Set(all.map(([k]) => k)).size, all.length, 'no key twice');
      assert.equal(all.length, m.size);
      for (const [k, val] of all) assert.equal(check(val, Number(k.slice(1))), null, `${k} is whole`);
      assert.ok(m.stats().recoveries > 0, 'some kill landed inside a lock, and the map was recovered');
    }));
});

describe('SharedMap: a writer killed at each step of a write', () => {
  // Each case: the state before, the operation the child dies in, and what a reader must see after.
  const cases = [
    { point: 'after-allocate', op: 'set', args: ['new', 'n'], expect: (m) => assert.equal(m.get('new'), undefined) },
    { point: 'after-commit', op: 'set', args: ['new', 'n'], expect: (m) => {
      assert.equal(m.get('new'), undefined, 'an insert is committed by its link, not its seq');
      assert.ok(![...m.keys()].includes('new'), 'keys() does not report an entry left unlinked');
    } },
    { point: 'before-free-old', op: 'set', args: ['a', 'A2'], expect: (m) => assert.equal(m.get('a'), 'A2') },
    { point: 'after-unlink', op: 'delete', args: ['a'], expect: (m) => assert.equal(m.get('a'), undefined) },
    { point: 'before-record', op: 'set', args: ['a', 'A2'], expect: (m) => assert.equal(m.get('a'), 'A2') },
    { point: 'inside-heap-free', op: 'set', args: ['a', 'A2'], expect: (m) => assert.ok(['A1', 'A2'].includes(m.get('a'))) },
    { point: 'inside-rebuild', op: 'set', args: ['a', 'A2'], markRecovery: true, expect: (m) => assert.equal(m.get('a'), 'A1') },
    { point: 'inside-clear', op: 'clear', args: [], expect: (m) => assert.equal(m.get('a'), undefined) },
  ];
  for (const c of cases) {
    test(`${c.op} killed at ${c.point}: every key old or new, nothing leaked, watchers get the latest value`, async () =>
      withMap({ maxEntries: 16, valueBytes: 2048, stripes: 4 }, async (m, name) => {
        m.set('a', 'A1');
        for (let i = 0; i < 6; i++) m.set(`k${i}`, `v${i}`);
        const w = m.watch('a');
        const r = await watchdog(child('dieAt', { name, point: c.point, op: c.op, args: c.args, markRecovery: c.markRecovery }).exited, 30_000, 'dying writer');
        assert.equal(r.signal, 'SIGKILL', `the child died at ${c.point}: ${r.err}${r.out}`);
        c.expect(m);
        if (c.point === 'before-record') {
          // The change was never recorded, and nobody else writes: the watcher itself finds the
          // dead writer's lock, runs the recovery, rescans, and reports the value.
          let got;
          do got = await nextChange(w, 'watch after a writer died before its record');
          while (!(got.type === 'set' && got.value === 'A2'));
        }
        const v = m.verify({ timeout: 20_000 }); // runs the recovery the dead writer's locks owe
        assert.ok(v.ok, v.problems.join('; '));
        assert.ok(m.stats().recoveries >= 1 || ['after-unlink-none'].includes(c.point), 'the map was recovered');
        if (c.point !== 'inside-clear') for (let i = 0; i < 6; i++) assert.equal(m.get(`k${i}`), `v${i}`, 'other keys are untouched');
        // Space is all there: fill the map with new keys and values.
        m.clear();
        for (let i = 0; i < 16; i++) m.set(`f${i}`, 'x'.repeat(40));
        assert.ok(m.verify().ok);
        w.close();
      }));
  }
});

describe('SharedMap: regressions of the review', () => {
  test('a writer stopped while it holds the heap lock: writes and verify() keep their timeout; once it dies, the map recovers', async () =>
    withMap({ maxEntries: 16 }, async (m, name) => {
      m.set('a', 1);
      const holder = child('holdLock', { name });
      try {
        await holder.waitFor(/holding/);
        await sleep(100); // stopped by now
        for (const op of [() => m.set('b', 2, { timeout: 200 }), () => m.increment('n', 1, { timeout: 200 }), () => m.clear({ timeout: 200 }), () => m.verify({ timeout: 200 })]) {
          assert.throws(op, code(ErrorCodes.TIMEOUT));
        }
        assert.equal(m.get('a'), 1, 'reads take no lock');
        // A delete commits without the heap lock; what it frees is left to the recovery, which is owed now.
        assert.equal(m.delete('a', { timeout: 200 }), true);
        assert.equal(m.get('a'), undefined);
        assert.throws(() => m.set('c', 3, { timeout: 200 }), code(ErrorCodes.TIMEOUT));
      } finally {
        holder.child.kill('SIGKILL');
        await watchdog(holder.exited, 20_000, 'holder');
      }
      m.set('b', 2, { timeout: 20_000 });
      const v = m.verify();
      assert.ok(v.ok, v.problems.join('; '));
      assert.ok(m.stats().recoveries >= 1);
    }));

  test('a watcher never blocks on a stopped writer\'s stripe: its signal ends it in time', async () =>
    withMap({ maxEntries: 16, stripes: 1 }, async (m, name) => {
      m.set('t', 1, { ttl: 50 });
      const w = m.watch('t', { signal: AbortSignal.timeout(500) });
      const holder = child('holdLock', { name, stripe: 0 });
      await holder.waitFor(/holding/);
      try {
        const started = Date.now();
        await assert.rejects(watchdog((async () => { for (;;) await w.next(); })(), 10_000, 'watch with a stopped writer'), (e) => e.name === 'AbortError' || e.name === 'TimeoutError');
        assert.ok(Date.now() - started < 9_000);
      } finally {
        holder.child.kill('SIGKILL');
        await watchdog(holder.exited, 20_000, 'holder');
      }
    }));

  test('LRU: sparse live entries (the heap, not the entries, is full) and several processes evict instead of failing', async () => {
    await withMap({ maxEntries: 4096, valueBytes: 4096, eviction: 'lru', codec: 'bytes' }, (m) => {
      const buf = Buffer.alloc(1200);
      for (let i = 0; i < 3000; i++) m.set(`k${i}`, buf.subarray(0, 16 + (i * 37) % 1000));
      assert.ok(m.stats().evictions > 0);
      assert.ok(m.verify().ok);
    });
    await withMap({ maxEntries: 256, valueBytes: 64 * 1024, eviction: 'lru', stripes: 2, codec: 'bytes' }, async (m, name) => {
      const rs = await Promise.all([1, 2, 3].map((seed) => result(child('lruWriter', { name, seed, ops: 5000, keys: 2000 }), 120_000, 'lru writer')));
      assert.deepEqual(rs.map((r) => r.full), [0, 0, 0], 'no write failed with FULL');
      assert.ok(m.verify().ok);
    });
  });

  test('an update that cannot fit beside its old value fails with FULL and evicts nothing', () =>
    withMap({ maxEntries: 64, valueBytes: 4096, maxValueSize: 4000, eviction: 'lru' }, (m) => {
      for (let i = 0; i < 10; i++) m.set(`s${i}`, i);
      m.set('big', 'x'.repeat(2500));
      assert.throws(() => m.set('big', 'y'.repeat(2500)), code(ErrorCodes.FULL));
      assert.equal(m.size, 11);
      assert.equal(m.stats().evictions, 0);
      assert.equal(m.get('big'), 'x'.repeat(2500));
    }));

  test('the heap finds the one fitting block deep in its size class', () =>
    withMap({ maxEntries: 32, valueBytes: 928, codec: 'bytes' }, (m) => {
      // Blocks of 120 (g0) and 72 bytes (g1..g9), each followed by a 16-byte pin: the heap exactly.
      m.set('g0', Buffer.alloc(112));
      m.set('p0', Buffer.alloc(8));
      for (let i = 1; i <= 9; i++) {
        m.set(`g${i}`, Buffer.alloc(64));
        m.set(`p${i}`, Buffer.alloc(8));
      }
      assert.equal(m.verify().bytesFree, 0);
      for (let i = 0; i <= 9; i++) m.delete(`g${i}`); // g0 first: the 120-byte block ends up last on its list
      m.set('x', Buffer.alloc(112));
      assert.equal(m.get('x').length, 112);
      assert.ok(m.verify().ok);
    }));

  test('change records across the 2^32 wrap of their position: a watcher misses nothing', async () =>
    withMap({ maxEntries: 16, watchRecords: 4 }, async (m) => {
      Atomics.store(m.u32, (m.data + 76) >> 2, 0xfffffffb); // the claimed-records word, near its wrap
      const w = m.watch('w');
      for (let i = 0; i < 10; i++) {
        m.set('w', i);
        let got;
        do got = await nextChange(w, 'watch across the wrap');
        while (got.value !== i);
      }
      w.close();
    }));

  test('an options getter that uses the same handle cannot redirect a delete or an increment', () =>
    withMap({}, (m) => {
      m.set('a', 1);
      m.set('b', 2);
      m.set('c', 100);
      m.set('d', 200);
      assert.equal(m.delete('a', { get timeout() { m.get('b'); return 1000; } }), true);
      assert.equal(m.get('a'), undefined);
      assert.equal(m.get('b'), 2);
      assert.equal(m.increment('c', 1, { get timeout() { m.get('d'); return 1000; } }), 101);
      assert.equal(m.get('d'), 200);
    }));
});

describe('SharedMap: regressions of the second review', () => {
  /** Takes changes until `done(all)` is true, within a watchdog; returns them all. */
  async function collect(w, done, what) {
    const all = [];
    while (!done(all)) all.push(await nextChange(w, what));
    return all;
  }
  /**
   * Makes m.snapshot (what a prefix watch reads) fail with TIMEOUT, as a busy lock does, after
   * `after` entries, while `state.busy` (`state.once`: only the first time).
   */
  function busySnapshot(m, state, after = 1) {
    const orig = m.snapshot;
    const busy = () => {
      if (!state.busy) return new ShmkitError(ErrorCodes.TIMEOUT, 'not thrown');
      if (state.once) state.busy = false;
      return new ShmkitError(ErrorCodes.TIMEOUT, 'busy (test)');
    };
    m.snapshot = function* (...a) {
      let i = 0;
      for (const x of orig.apply(this, a)) {
        if (state.busy && i++ >= after) throw busy();
        yield x;
      }
      if (state.busy) throw busy();
    };
  }

  test('a watch whose first read meets a busy lock still reports the changes made after it began', async () =>
    withMap({ maxEntries: 64 }, async (m) => {
      for (const k of ['a', 'b', 'c']) m.set(`p:${k}`, 1);
      const state = { busy: true };
      busySnapshot(m, state);
      const w = m.watch('p:', { prefix: true });
      m.set('p:a', 2); // after the watch began, before its first read succeeded
      m.delete('p:b');
      state.busy = false;
      m.set('p:z', 'end');
      const got = await collect(w, (all) => all.some((c) => c.key === 'p:z') && all.some((c) => c.key === 'p:b'), 'a late first read');
      w.close();
      assert.ok(got.some((c) => c.key === 'p:a' && c.type === 'set' && c.value === 2), JSON.stringify(got));
      assert.ok(got.some((c) => c.key === 'p:b' && c.type === 'delete'), JSON.stringify(got));
      assert.ok(!got.some((c) => c.key === 'p:c'), 'an entry unchanged since the watch began is not reported');
    }));

  test('a rescan that meets a busy lock halfway reports nothing twice', async () =>
    withMap({ maxEntries: 64, watchRecords: 4 }, async (m) => {
      const w = m.watch('q:', { prefix: true });
      const state = { busy: true, once: true };
      busySnapshot(m, state, 2);
      for (let i = 0; i < 8; i++) m.set(`q:${i}`, i); // laps the 4 records: a rescan
      const got = await collect(w, (all) => new Set(all.map((c) => c.key)).size === 8, 'a rescan retried');
      m.set('q:end', 0);
      got.push(...await collect(w, (all) => all.some((c) => c.key === 'q:end'), 'the end'));
      w.close();
      const keys = got.map((c) => c.key);
      assert.equal(keys.length, new Set(keys).size, `no change reported twice: ${keys}`);
    }));

  test('a rescan after the watcher removed an expired key reports it as expired', async () =>
    withMap({ maxEntries: 64, watchRecords: 4 }, async (m) => {
      m.set('t:x', 1, { ttl: 30 });
      const orig = m.expireKey;
      m.expireKey = function (...a) {
        orig.apply(this, a);
        for (let i = 0; i < 8; i++) m.set(`other${i}`, i); // the watcher is lapped before it reads the expire record
      };
      const w = m.watch('t:', { prefix: true, initial: true });
      const got = await collect(w, (all) => all.length >= 2, 'expiry');
      w.close();
      assert.deepEqual(got.map((c) => c.type), ['set', 'expire']);
    }));

  test('LRU in a sparse map evicts the least recently used, not the newest key', () =>
    withMap({ maxEntries: 4096, valueBytes: 16 * 72, eviction: 'lru', codec: 'bytes' }, (m) => {
      const v = Buffer.alloc(64);
      for (let i = 0; i < 300; i++) {
        m.set(`k${i}`, v);
        if (i >= 2) assert.ok(m.has(`k${i - 1}`) && m.has(`k${i - 2}`), `after k${i}: the two newest keys before it are there`);
      }
      assert.ok(m.stats().evictions > 200);
      assert.ok(m.verify().ok);
    }));

  test('an update that fits neither before nor after its old value fails with FULL and evicts nothing', () =>
    withMap({ maxEntries: 64, valueBytes: 4096, maxValueSize: 4000, eviction: 'lru', codec: 'bytes' }, (m) => {
      m.set('a', Buffer.alloc(900));
      m.set('big', Buffer.alloc(1200));
      m.set('c', Buffer.alloc(900));
      m.delete('a');
      m.delete('c'); // the big value sits in the middle: about 900 bytes free on one side, 1950 on the other
      for (let i = 0; i < 10; i++) m.set(`s${i}`, Buffer.alloc(8));
      assert.throws(() => m.set('big', Buffer.alloc(2000)), code(ErrorCodes.FULL));
      assert.equal(m.stats().evictions, 0);
      assert.equal(m.size, 11);
      assert.equal(m.get('big').length, 1200);
    }));

  test('a codec that re-enters the handle during increment leaves the increment its own deadline', () => {
    let m;
    let side = 'side';
    let reenter = false;
    const codec = { name: 'json-reentering', encode: (v) => {
      if (reenter) {
        reenter = false;
        m.set(side, 0, { timeout: 0 });
      }
      return Buffer.from(JSON.stringify(v));
    }, decode: (b) => JSON.parse(b.toString()) };
    const name = uniq('mp');
    m = SharedMap.create(name, { codec });
    try {
      const ops = [];
      const orig = m.lockHeap;
      m.lockHeap = function () {
        ops.push([this.what, this.deadline.remaining() > 1000]);
        return orig.call(this);
      };
      const stripeOf = (k) => {
        m.key(k);
        return m.khash & m.bucketMask & m.stripeMask;
      };
      for (let i = 0; stripeOf(side) === stripeOf('n'); i++) side = `side${i}`; // a stripe the increment does not hold
      m.set('n', 1);
      ops.length = 0;
      reenter = true;
      assert.equal(m.increment('n', 1, { timeout: 60_000 }), 2);
      assert.equal(m.get(side), 0);
      assert.deepEqual(ops.slice(-2), [['increment', true], ['increment', true]], `the heap locks of the increment: ${JSON.stringify(ops)}`);
    } finally {
      m.close();
      SharedMap.unlink(name);
    }
  });

  test('a watcher reports a dead writer\'s unrecorded change while another process holds an unrelated lock', async () =>
    withMap({ maxEntries: 16, valueBytes: 2048, stripes: 4 }, async (m, name) => {
      m.set('a', 'A1');
      m.key('a');
      const other = ((m.khash & m.bucketMask & m.stripeMask) + 1) % 4;
      const w = m.watch('a');
      const holder = child('holdLock', { name, stripe: other });
      try {
        await holder.waitFor(/holding/);
        const r = await watchdog(child('dieAt', { name, point: 'before-record', op: 'set', args: ['a', 'A2'] }).exited, 30_000, 'dying writer');
        assert.equal(r.signal, 'SIGKILL');
        let got;
        do got = await nextChange(w, 'watch while the recovery cannot run');
        while (!(got.type === 'set' && got.value === 'A2'));
        assert.ok(m.stats().recoveries === 0, 'the recovery could not run (a lock is held by a stopped process)');
      } finally {
        w.close();
        holder.child.kill('SIGKILL');
        await watchdog(holder.exited, 20_000, 'holder');
      }
      assert.ok(m.verify({ timeout: 20_000 }).ok);
    }));
});

describe('SharedMap: regressions of the third review', () => {
  test('a late first scan reports a change another process makes while it runs, and nothing unchanged', async () =>
    withMap({ maxEntries: 64 }, async (m, name) => {
      for (const k of ['a', 'b', 'c']) m.set(`p:${k}`, 1);
      const orig = m.snapshot;
      let calls = 0;
      m.snapshot = function* (...a) {
        calls++;
        if (calls === 1) throw new ShmkitError(ErrorCodes.TIMEOUT, 'busy (test)');
        // The owed scan: the watcher has read the ring's head; another process writes p:c now.
        if (calls === 2) assert.equal(spawnSync(process.execPath, ['-e', `const { SharedMap } = require('shmkit'); const m = SharedMap.open(${JSON.stringify(name)}); m.set('p:c', 'other'); m.close();`], { cwd: ROOT }).status, 0);
        yield* orig.apply(this, a);
      };
      const w = m.watch('p:', { prefix: true });
      setTimeout(() => m.set('p:end', 'end'), 50);
      const got = [];
      do got.push(await nextChange(w, 'a late first scan'));
      while (got.at(-1).key !== 'p:end');
      w.close();
      assert.deepEqual(got.map((c) => `${c.key}=${c.value}`).sort(), ['p:c=other', 'p:end=end']);
    }));

  test('an update that fits neither before nor after its old block, counting the block\'s unsplit slack, fails at once', () =>
    withMap({ maxEntries: 64, valueBytes: 4096, maxValueSize: 4000, eviction: 'lru', codec: 'bytes' }, (m) => {
      m.set('a', Buffer.alloc(100)); // a 112-byte block at 0
      m.set('big', Buffer.alloc(1992));
      m.set('c', Buffer.alloc(1976)); // the heap is full
      m.delete('a');
      m.set('x', Buffer.alloc(96)); // 104 bytes needed: the 112-byte hole, not split (8 < 16)
      assert.throws(() => m.set('x', Buffer.alloc(3984)), code(ErrorCodes.FULL));
      assert.equal(m.stats().evictions, 0);
      assert.equal(m.size, 3);
    }));

  test('a value the codec cannot decode is thrown once by a lapped watcher, which then goes on', async () =>
    withMap({ maxEntries: 64, watchRecords: 4 }, async (m, name) => {
      const raw = SharedMap.open(name, { codec: 'utf8' });
      try {
        const w = m.watch('p:', { prefix: true });
        raw.set('p:bad', 'not json {');
        for (let i = 0; i < 10; i++) m.set(`q:${i}`, i); // laps the ring: a rescan
        m.set('p:good', 1);
        await assert.rejects(watchdog(w.next(), 10_000, 'the bad value'), code(ErrorCodes.DECODE));
        assert.equal((await nextChange(w, 'the next value')).key, 'p:good');
        w.close();
      } finally {
        raw.close();
      }
    }));

  test('LRU in a very sparse map (2^18 entry slots, 16 values fit) still evicts the least recently used', () =>
    withMap({ maxEntries: 1 << 18, valueBytes: 16 * 72, eviction: 'lru', codec: 'bytes' }, (m) => {
      const v = Buffer.alloc(64);
      let bad = 0;
      for (let i = 0; i < 200; i++) {
        m.set(`k${i}`, v);
        if (i >= 2 && !(m.has(`k${i - 1}`) && m.has(`k${i - 2}`))) bad++;
      }
      assert.equal(bad, 0, 'the two newest keys before each insert survive it');
    }));
});

describe('SharedMap with garbage in shared memory', () => {
  test('garbage in the buckets, entries, stripes, header, free lists and heap gives typed errors, never a crash or hang', async () => {
    const regions = ['header', 'stripes', 'buckets', 'entries', 'heap', 'records'];
    for (let round = 0; round < 24; round++) {
      const region = regions[round % regions.length];
      const name = uniq('mg');
      const m = SharedMap.create(name, { maxEntries: 64, valueBytes: 16 * 1024, stripes: 4, watchRecords: 8 });
      try {
        for (let i = 0; i < 40; i++) m.set(`k${i}`, { i, s: 'x'.repeat(i * 5) });
        const { data, o } = m;
        const span = {
          header: [0, 128], stripes: [o.stripes, o.buckets], buckets: [o.buckets, o.entries], entries: [o.entries, o.records],
          records: [o.records, o.heap], heap: [o.heap, o.size],
        }[region];
        const fd = openSync(`/dev/shm/shmkit-${name}`, 'r+');
        try {
          const size = fstatSync(fd).size;
          for (let k = 0; k < 6; k++) {
            const len = 4 + Math.floor(Math.random() * 60);
            const at = data + span[0] + Math.floor(Math.random() * Math.max(1, span[1] - span[0] - len));
            if (at + len <= size) writeSync(fd, randomBytes(len), 0, len, at);
          }
        } finally {
          closeSync(fd);
        }
        const r = await result(child('garbage', { name }), 60_000, `operations on garbage in the ${region} (round ${round})`);
        assert.equal(r.untyped, 0, `only ShmkitErrors: ${r.first}`);
      } finally {
        m.close();
        SharedMap.unlink(name);
      }
    }
  });
});

describe('shmkit map (CLI)', () => {
  test('get, set, del, incr, keys, watch from a shell', async () =>
    withMap({}, async (m, name) => {
      assert.equal((await runCli(['map', 'set', name, 'user:1', '{"name":"Ada"}'])).code, 0);
      assert.deepEqual(m.get('user:1'), { name: 'Ada' });
      const got = await runCli(['map', 'get', name, 'user:1']);
      assert.equal(got.stdout.trim(), '{"name":"Ada"}');
      const j = JSON.parse((await runCli(['map', 'get', name, 'user:1', '--json'])).stdout);
      assert.equal(j.revision, m.getEntry('user:1').revision);
      assert.equal((await runCli(['map', 'get', name, 'nope'])).code, 1);
      assert.equal((await runCli(['map', 'set', name, 'k', 'not json'])).code, 2);
      assert.equal((await runCli(['map', 'set', name, 'user:1', '1', '--if-absent'])).code, 1);
      assert.equal((await runCli(['map', 'incr', name, 'hits', '5'])).stdout.trim(), '5');
      assert.equal(m.get('hits'), 5);
      assert.deepEqual((await runCli(['map', 'keys', name, 'user:'])).stdout.trim().split('\n'), ['user:1']);
      assert.equal((await runCli(['map', 'del', name, 'user:1'])).code, 0);
      assert.equal((await runCli(['map', 'del', name, 'user:1'])).code, 1);
      const watch = startCli(['map', 'watch', name, 'w:', '--prefix', '--count', '2', '--json']);
      await watch.waitFor(/watching/); // printed once the watch is registered
      m.set('w:a', 1);
      await watch.waitFor(/"set"/, 'stdout');
      m.delete('w:a');
      const out = await watch.done;
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(out.stdout.trim().split('\n').map((l) => JSON.parse(l)), [
        { type: 'set', key: 'w:a', value: 1, revision: JSON.parse(out.stdout.split('\n')[0]).revision },
        { type: 'delete', key: 'w:a', revision: JSON.parse(out.stdout.split('\n')[0]).revision },
      ]);
      const ls = await runCli(['ls', '--json']);
      assert.ok(ls.stdout.includes(name));
    }));
});

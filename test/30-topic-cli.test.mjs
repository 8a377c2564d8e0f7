// `shmkit pub` and `shmkit sub`, end to end: bin/shmkit.js runs in child processes, a subscriber
// process prints what publisher processes (and this process) publish, and bad command lines,
// timeouts, the topic's end and missing topics get their exit codes and one-line errors. Every child
// and every wait has a watchdog; every name is a uniq() name, removed by each test and in after().
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, Mutex, Topic } from 'shmkit';
import { cleanupAll, ROOT, sleep, uniq, watchdog, killCliChildren, runCli, SHMKIT, startCli } from './helpers.mjs';

const names = [];
after(() => {
  killCliChildren();
  cleanupAll();
});

/** A fresh name for this file (all start with "hy"), checked to be gone by the last test. */
function name(tag) {
  const n = uniq(`hy${tag}`);
  names.push(n);
  return n;
}

const start = startCli;
const cli = runCli;

/** Polls `cond` every few milliseconds, under a watchdog. */
const until = (cond, what) =>
  watchdog(
    (async () => {
      while (!cond()) await sleep(5);
    })(),
    30_000,
    what,
  );

const live = (t) => t.stats().subscribers.filter((s) => s.alive).length;

describe('shmkit pub and sub', () => {
  test('a sub --count 3 process prints, one per line, what pub processes publish; pub prints sequence numbers', async () => {
    const n = name('ps');
    const t = Topic.create(n, { capacity: 8, maxMessageSize: 64 });
    try {
      const s = start(['sub', n, '--count', '3', '--timeout', '30000']);
      await s.waitFor(/^subscribed to topic ".*" at sequence number 0, for 3 messages or 30000 ms; Ctrl-C stops$/m);
      assert.equal(live(t), 1, 'the sub process holds a subscriber slot');
      const first = await cli(['pub', n, 'hello world']);
      assert.equal(first.code, 0, first.stderr);
      assert.equal(first.stdout, '0\n');
      assert.equal(first.stderr, '');
      const second = await cli(['pub', n, 'wörld ✓']);
      assert.equal(second.stdout, '1\n');
      const dash = await cli(['pub', n, '--', '-5 degrees']); // after "--", a message may start with "-"
      assert.equal(dash.code, 0, dash.stderr);
      assert.equal(dash.stdout, '2\n');
      const r = await s.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'hello world\nwörld ✓\n-5 degrees\n');
      assert.equal(live(t), 0, 'the slot is free again once sub has exited');
      assert.equal(t.published, 3);
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test("text goes out with the bytes codec: programs read it with 'bytes' or 'utf8'; sub prints what they publish", async () => {
    const n = name('pc');
    const t = Topic.create(n, { capacity: 8, maxMessageSize: 64, codec: 'utf8' });
    const raw = Topic.open(n); // 'bytes'
    try {
      const mine = t.subscribe();
      const bytes = raw.subscribe();
      assert.equal((await cli(['pub', n, 'ünïcode'])).code, 0);
      assert.equal(mine.tryReceive(), 'ünïcode');
      assert.deepEqual(bytes.tryReceive(), Buffer.from('ünïcode'));

      const s = start(['sub', n, '--count', '2', '--seq', '--timeout', '30000']);
      await s.waitFor(/^subscribed/m);
      t.publishSync('from a program');
      raw.publishSync(Buffer.from('two\tcolumns'));
      const r = await s.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '1\tfrom a program\n2\ttwo\tcolumns\n', '--seq: the sequence number and a tab before each message');
    } finally {
      t.close();
      raw.close();
      Topic.unlink(n);
    }
  });

  test("--json: pub parses the message and publishes it with the json codec; sub decodes with it and prints one compact JSON line per message", async () => {
    const n = name('pj');
    const t = Topic.create(n, { capacity: 8, maxMessageSize: 128, codec: 'json' });
    try {
      const mine = t.subscribe();
      const s = start(['sub', n, '--json', '--count', '3', '--timeout', '30000']);
      await s.waitFor(/^subscribed/m);
      const a = await cli(['pub', n, '--json', '{ "sym": "ACME",\n  "px": 101.5 }']);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(a.stdout, '0\n');
      assert.equal((await cli(['pub', n, '--json', '--', '-1.5'])).code, 0);
      t.publishSync(['from', 'a', { program: true }]);
      const r = await s.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '{"sym":"ACME","px":101.5}\n-1.5\n["from","a",{"program":true}]\n');
      assert.deepEqual(mine.tryReceive(), { sym: 'ACME', px: 101.5 });
      assert.equal(mine.tryReceive(), -1.5);

      // Text is not JSON: a sub --json stops at it, with exit 1 and the sequence number.
      assert.equal((await cli(['pub', n, 'plain text'])).stdout, '3\n');
      const bad = await cli(['sub', n, '--json', '--from', '3', '--timeout', '30000']);
      assert.equal(bad.code, 1);
      assert.equal(bad.stdout, '');
      assert.match(bad.stderr, new RegExp(`^shmkit: ${ErrorCodes.DECODE}: sub "${n}": message 3 is not JSON .*without --json, sub prints messages as text$`, 'm'));
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test('--from history, --from SEQ (resume), and a SEQ older than the messages kept', async () => {
    const n = name('ph');
    const t = Topic.create(n, { capacity: 4, maxMessageSize: 16, history: 2, overflow: 'overwrite' });
    try {
      for (let i = 0; i < 10; i++) t.publishSync(Buffer.from(`m${i}`));
      const hist = await cli(['sub', n, '--from', 'history', '--count', '2', '--seq']);
      assert.equal(hist.code, 0, hist.stderr);
      assert.equal(hist.stdout, '8\tm8\n9\tm9\n');
      assert.match(hist.stderr, /at sequence number 8, for 2 messages;/);
      const resumed = await cli(['sub', n, '--from', '7', '--count', '3']);
      assert.equal(resumed.code, 0, resumed.stderr);
      assert.equal(resumed.stdout, 'm7\nm8\nm9\n');
      const old = await cli(['sub', n, '--from', '2', '--count', '1', '--seq']);
      assert.equal(old.code, 0, old.stderr);
      assert.equal(old.stdout, '7\tm7\n'); // the oldest message an 'overwrite' log of 4 still holds safely
      assert.match(old.stderr, /at sequence number 7 \(5 older messages asked for are no longer kept\)/);
      const now = start(['sub', n, '--count', '1', '--timeout', '30000']);
      await now.waitFor(/at sequence number 10,/);
      t.publishSync(Buffer.from('m10'));
      assert.equal((await now.done).stdout, 'm10\n');
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test("the topic's end: sub prints what was published before it, then exits 0; pub exits 1", async () => {
    const n = name('pe');
    const t = Topic.create(n, { capacity: 8, maxMessageSize: 16 });
    try {
      const s = start(['sub', n, '--count', '5', '--timeout', '30000']);
      await s.waitFor(/^subscribed/m);
      t.publishSync(Buffer.from('a'));
      t.publishSync(Buffer.from('b'));
      t.end();
      const r = await s.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'a\nb\n');
      assert.match(r.stderr, new RegExp(`^topic "${n}" was ended; 2 messages received$`, 'm'));
      const p = await cli(['pub', n, 'c']);
      assert.equal(p.code, 1);
      assert.equal(p.stdout, '');
      assert.match(p.stderr, new RegExp(`^shmkit: ${ErrorCodes.CLOSED}: pub "${n}": the topic was ended; nothing was published\\n$`));
      const late = await cli(['sub', n, '--from', 'history', '--timeout', '30000']);
      assert.equal(late.code, 0, 'a sub of an ended topic with nothing left to read exits at once');
      assert.equal(t.published, 2);
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test('timeouts exit 1 with ERR_SHMKIT_TIMEOUT: sub says how many messages came; pub publishes nothing', async () => {
    const n = name('pt');
    const t = Topic.create(n, { capacity: 2, maxMessageSize: 16 });
    try {
      const nothing = await cli(['sub', n, '--timeout', '100']);
      assert.equal(nothing.code, 1);
      assert.equal(nothing.stdout, '');
      assert.match(nothing.stderr, new RegExp(`^shmkit: ${ErrorCodes.TIMEOUT}: sub "${n}": timed out after 100 ms with 0 messages received$`, 'm'));

      const s = start(['sub', n, '--count', '2', '--timeout', '1500']);
      await s.waitFor(/^subscribed/m);
      t.publishSync(Buffer.from('one'));
      const r = await s.done;
      assert.equal(r.code, 1);
      assert.equal(r.stdout, 'one\n');
      assert.match(r.stderr, /timed out after 1500 ms with 1 of 2 messages received$/m);

      // 'block': a subscriber that does not read holds a full log; pub waits, then gives up.
      const slow = t.subscribe();
      t.publishSync(Buffer.from('x'));
      t.publishSync(Buffer.from('y'));
      const p = await cli(['pub', n, 'z', '--timeout', '200']);
      assert.equal(p.code, 1);
      assert.equal(p.stdout, '');
      assert.match(p.stderr, new RegExp(`^shmkit: ${ErrorCodes.TIMEOUT}: pub "${n}": timed out after 200 ms waiting for the slowest subscriber; nothing was published\\n$`));
      assert.equal(t.published, 3);

      // Without a timeout it waits until the subscriber reads.
      const parked = t.stats().publishWaits;
      const waiting = start(['pub', n, 'z']);
      await until(() => t.stats().publishWaits > parked, 'pub parking on the full log');
      assert.deepEqual(slow.tryReceive(), Buffer.from('x'));
      const w = await waiting.done;
      assert.equal(w.code, 0, w.stderr);
      assert.equal(w.stdout, '3\n');
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test('missing topics, other kinds, full subscriber tables, messages too large and a held single-publisher role exit 1 with the error code', async () => {
    const missing = name('pm');
    for (const args of [['sub', missing], ['pub', missing, 'x'], ['pub', missing, '--json', '1']]) {
      const r = await cli(args);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr.split('\n').filter(Boolean).length, 1);
      assert.match(r.stderr, new RegExp(`^shmkit: ${ErrorCodes.NOT_FOUND}: .*"${missing}": it does not exist`));
    }
    assert.ok(!existsSync(`/dev/shm/shmkit-${missing}`), 'pub and sub never create a topic');

    const mutexName = name('pk');
    const m = Mutex.create(mutexName);
    const full = name('pf');
    const t = Topic.create(full, { maxSubscribers: 1, maxMessageSize: 8 });
    const singleName = name('p1');
    let single;
    try {
      for (const args of [['pub', mutexName, 'x'], ['sub', mutexName]]) {
        const kind = await cli(args);
        assert.equal(kind.code, 1);
        assert.match(kind.stderr, new RegExp(`^shmkit: ${ErrorCodes.KIND}: `));
      }
      const big = await cli(['pub', full, '123456789']);
      assert.equal(big.code, 1);
      assert.match(big.stderr, new RegExp(`^shmkit: ${ErrorCodes.TOO_LARGE}: .*9-byte message exceeds the maximum of 8 bytes; nothing was published`));
      t.subscribe(); // the only slot, held by a live subscriber
      const busy = await cli(['sub', full, '--timeout', '100']);
      assert.equal(busy.code, 1);
      assert.match(busy.stderr, new RegExp(`^shmkit: ${ErrorCodes.BUSY}: .*subscriber slots`));
      assert.equal(t.published, 0);

      // A single-publisher topic: pub takes the free role for its message and gives it back; a live
      // holder makes it fail.
      single = Topic.create(singleName, { publishers: 'single', maxMessageSize: 16 });
      const lone = await cli(['pub', singleName, 'first']);
      assert.equal(lone.code, 0, lone.stderr);
      assert.equal(lone.stdout, '0\n');
      assert.equal(single.publishSync(Buffer.from('mine')), 1, 'the role is free again once pub has exited');
      const taken = await cli(['pub', singleName, 'second']);
      assert.equal(taken.code, 1);
      assert.match(taken.stderr, new RegExp(`^shmkit: ${ErrorCodes.BUSY}: .*single-publisher`));
      assert.equal(single.published, 2);
    } finally {
      single?.close();
      m.close();
      Mutex.unlink(mutexName);
      t.close();
      Topic.unlink(full);
      Topic.unlink(singleName);
    }
  });

  test('bad command lines exit 2 with a usage error, before publishing or subscribing', async () => {
    const n = name('pu');
    const t = Topic.create(n, { capacity: 4, maxMessageSize: 16 });
    try {
      t.publishSync(Buffer.from('only'));
      for (const args of [
        ['pub'],
        ['pub', n],
        ['pub', n, 'a', 'b'],
        ['pub', n, '--json', 'not json'],
        ['pub', n, '--json', ''],
        ['pub', n, '-x'],
        ['pub', n, 'x', '--timeout', 'soon'],
        ['pub', n, 'x', '--timeout', '-5'],
        ['pub', 'a/b', 'x'],
        ['sub'],
        ['sub', n, n],
        ['sub', n, '--count', '0'],
        ['sub', n, '--count', 'two'],
        ['sub', n, '--timeout', '1.5'],
        ['sub', n, '--from', 'later'],
        ['sub', n, '--from', '-1'],
        ['sub', n, '--from', '2'], // beyond the last published message (the next one is 1)
        ['sub', n, '--bogus'],
        ['sub', 'a/b'],
      ]) {
        const r = await cli(args);
        assert.equal(r.code, 2, `shmkit ${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`^shmkit: ${ErrorCodes.INVALID_ARGUMENT}: .*\\nRun "shmkit ${args[0]} --help" for usage\\.\\n$`), args.join(' '));
        assert.equal(r.stdout, '');
      }
      const st = t.stats();
      assert.equal(st.published, 1, 'no bad command line published');
      assert.equal(st.subscribers.length, 0, 'no bad command line subscribed');
      for (const c of ['pub', 'sub']) {
        const h = await cli([c, '--help']);
        assert.equal(h.code, 0);
        assert.match(h.stdout, new RegExp(`^Usage: shmkit ${c} NAME`));
        assert.match(h.stdout, /Exit status/);
      }
      const help = await cli(['--help']);
      assert.match(help.stdout, /^ {2}pub /m);
      assert.match(help.stdout, /^ {2}sub /m);
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test('Ctrl-C (SIGINT) ends sub with exit 0 and frees its slot; it interrupts a waiting pub, which publishes nothing', async () => {
    const n = name('pi');
    const t = Topic.create(n, { capacity: 2, maxMessageSize: 16 });
    try {
      const s = start(['sub', n]);
      await s.waitFor(/^subscribed/m);
      t.publishSync(Buffer.from('seen'));
      await s.waitFor(/^seen$/m, 'stdout'); // it subscribes and has printed what came
      s.child.kill('SIGINT');
      const r = await s.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(live(t), 0);

      const slow = t.subscribe();
      t.publishSync(Buffer.from('x'));
      t.publishSync(Buffer.from('y'));
      const parked = t.stats().publishWaits;
      const p = start(['pub', n, 'z']);
      await until(() => t.stats().publishWaits > parked, 'pub parking on the full log');
      p.child.kill('SIGINT');
      const pr = await p.done;
      assert.equal(pr.code, 1);
      assert.equal(pr.stdout, '');
      assert.match(pr.stderr, new RegExp(`^shmkit: ${ErrorCodes.ABORTED}: pub "${n}": interrupted; nothing was published\\n$`));
      assert.equal(t.published, 3);
      slow.close();
      assert.equal(t.tryPublish(Buffer.from('free')), 3, 'the interrupted pub left the publisher lock free');
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test('a reader that goes away (sub | head -n 1) ends sub with exit 0 and frees its slot', async () => {
    const n = name('pp');
    const t = Topic.create(n, { capacity: 64, maxMessageSize: 16 });
    try {
      const s = start(['sub', n]);
      await s.waitFor(/^subscribed/m);
      t.publishSync(Buffer.from('first'));
      await s.waitFor(/^first$/m, 'stdout');
      s.child.stdout.destroy(); // like head(1) exiting after its line
      // The next write fails with EPIPE; keep publishing until sub notices.
      const r = await watchdog(
        (async () => {
          const done = s.done.then((x) => x);
          for (let i = 0; ; i++) {
            const settled = await Promise.race([done, sleep(20).then(() => null)]);
            if (settled !== null) return settled;
            t.tryPublish(Buffer.from(`m${i}`));
          }
        })(),
        30_000,
        'sub noticing its reader left',
      );
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /EPIPE|Error/);
      assert.equal(live(t), 0);
    } finally {
      t.close();
      Topic.unlink(n);
    }
  });

  test('every topic this file made is removed from /dev/shm', () => {
    for (const n of names) assert.ok(!existsSync(`/dev/shm/shmkit-${n}`), n);
  });
});

// `shmkit notify` and `shmkit listen`, end to end: bin/shmkit.js runs in child processes, a listener
// process prints the ids that notifier processes send, and bad command lines, timeouts and missing
// events get their exit codes and one-line errors. Every child and every wait has a watchdog; every
// name is a uniq() name, removed in after() (and by each test).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ErrorCodes, Event, Mutex } from 'shmkit';
import { cleanupAll, ROOT, uniq, watchdog, killCliChildren, runCli, SHMKIT, startCli } from './helpers.mjs';

after(() => {
  killCliChildren();
  cleanupAll();
});

const start = startCli;
const cli = runCli;

describe('shmkit notify and listen', () => {
  test('a listen --count 2 process prints the ids two notify processes send, then exits 0', async () => {
    const name = uniq('hxen');
    const e = Event.create(name, { maxId: 9 });
    try {
      const l = start(['listen', name, '--count', '2', '--timeout', '30000']);
      await l.waitFor(/^listening to event ".*" \(ids 0\.\.9\)/m); // ids notified before this line are not seen
      assert.equal(e.stats().listeners, 1, 'the listen process holds a listener slot');
      const first = await cli(['notify', name, '3']);
      assert.equal(first.code, 0, first.stderr);
      assert.equal(first.stdout, `notified 3 on event "${name}": 1 listener reached\n`);
      const second = await cli(['notify', name, '7', '--json']);
      assert.equal(second.code, 0, second.stderr);
      assert.deepEqual(JSON.parse(second.stdout), { name, id: 7, reached: 1 });
      const r = await l.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '3\n7\n'); // taken one by one or together: ascending either way
      assert.equal(e.stats().listeners, 0, 'the slot is free again once listen has exited');
      const none = await cli(['notify', name]);
      assert.equal(none.code, 0);
      assert.match(none.stdout, /: 0 listeners reached\n$/);
    } finally {
      e.close();
      Event.unlink(name);
    }
  });

  test('listen --json prints one object per id; --count stops after exactly N ids', async () => {
    const name = uniq('hxej');
    const e = Event.create(name);
    try {
      const l = start(['listen', name, '--count', '1', '--json', '--timeout', '30000']);
      await l.waitFor(/^listening/m);
      e.notify(5);
      e.notify(6); // may be taken with 5: still only one line
      const r = await l.done;
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines.length, 1);
      const o = JSON.parse(lines[0]);
      assert.equal(o.name, name);
      assert.equal(o.id, 5);
      assert.ok(!Number.isNaN(Date.parse(o.time)));
    } finally {
      e.close();
      Event.unlink(name);
    }
  });

  test('listen exits 1 with ERR_SHMKIT_TIMEOUT when the timeout passes first, saying how many ids came', async () => {
    const name = uniq('hxet');
    const e = Event.create(name);
    try {
      const nothing = await cli(['listen', name, '--timeout', '100']);
      assert.equal(nothing.code, 1);
      assert.equal(nothing.stdout, '');
      assert.match(nothing.stderr, new RegExp(`^shmkit: ${ErrorCodes.TIMEOUT}: listen "${name}": timed out after 100 ms with 0 ids received$`, 'm'));

      const l = start(['listen', name, '--count', '2', '--timeout', '1500']);
      await l.waitFor(/^listening/m);
      e.notify(1);
      const r = await l.done;
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '1\n');
      assert.match(r.stderr, /timed out after 1500 ms with 1 of 2 ids received$/m);
    } finally {
      e.close();
      Event.unlink(name);
    }
  });

  test('missing events, other kinds and full listener tables exit 1 with the error code', async () => {
    const missing = uniq('hxem');
    for (const args of [['listen', missing], ['notify', missing, '1']]) {
      const r = await cli(args);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr.split('\n').filter(Boolean).length, 1);
      assert.match(r.stderr, new RegExp(`^shmkit: ${ErrorCodes.NOT_FOUND}: .*"${missing}": it does not exist`));
    }

    const mutexName = uniq('hxek');
    const m = Mutex.create(mutexName);
    const full = uniq('hxef');
    const e = Event.create(full, { maxListeners: 1 });
    try {
      const kind = await cli(['notify', mutexName]);
      assert.equal(kind.code, 1);
      assert.match(kind.stderr, new RegExp(`^shmkit: ${ErrorCodes.KIND}: `));
      e.listen(); // the only slot, held by a live listener
      const busy = await cli(['listen', full, '--timeout', '100']);
      assert.equal(busy.code, 1);
      assert.match(busy.stderr, new RegExp(`^shmkit: ${ErrorCodes.BUSY}: .*listener slots`));
    } finally {
      m.close();
      Mutex.unlink(mutexName);
      e.close();
      Event.unlink(full);
    }
  });

  test('bad command lines exit 2 with a usage error, before touching any event', async () => {
    const name = uniq('hxeu');
    const e = Event.create(name, { maxId: 3 });
    try {
      for (const args of [
        ['notify'],
        ['notify', name, '1', '2'],
        ['notify', name, 'x'],
        ['notify', name, '1.5'],
        ['notify', name, '-1'],
        ['notify', name, '4'], // above this event's maxId
        ['notify', 'a/b'],
        ['notify', name, '--bogus'],
        ['listen'],
        ['listen', name, name],
        ['listen', name, '--count', '0'],
        ['listen', name, '--count', 'two'],
        ['listen', name, '--timeout', 'soon'],
        ['listen', name, '--timeout', '-5'],
      ]) {
        const r = await cli(args);
        assert.equal(r.code, 2, `shmkit ${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`^shmkit: ${ErrorCodes.INVALID_ARGUMENT}: .*\\nRun "shmkit ${args[0]} --help" for usage\\.\\n$`), args.join(' '));
        assert.equal(r.stdout, '');
      }
      assert.deepEqual(e.stats(), { notified: 0, wakeUps: 0, listeners: 0 }, 'no bad command line notified or listened');
      for (const c of ['notify', 'listen']) {
        const h = await cli([c, '--help']);
        assert.equal(h.code, 0);
        assert.match(h.stdout, new RegExp(`^Usage: shmkit ${c} NAME`));
        assert.match(h.stdout, /Exit status/);
      }
      const help = await cli(['--help']);
      assert.match(help.stdout, /^ {2}notify /m);
      assert.match(help.stdout, /^ {2}listen /m);
    } finally {
      e.close();
      Event.unlink(name);
    }
  });

  test('Ctrl-C (SIGINT) ends listen with exit 0 and frees its slot', async () => {
    const name = uniq('hxei');
    const e = Event.create(name);
    try {
      const l = start(['listen', name]);
      await l.waitFor(/^listening/m);
      e.notify(2);
      await l.waitFor(/^2$/m, 'stdout'); // it listens and has printed what came
      l.child.kill('SIGINT');
      const r = await l.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(e.stats().listeners, 0);
    } finally {
      e.close();
      Event.unlink(name);
    }
  });
});

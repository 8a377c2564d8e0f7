// Server and Connection: the socket analogue. A server accepts connections by name; each connection
// is two channels that are unlinked once both ends have them, so nothing of it stays in /dev/shm;
// the death of either end surfaces on the other; the backlog and maxConnections refuse with a typed
// error; garbage in the server segment never crashes or hangs a client or a listener.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { closeSync, openSync, readdirSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { connect, Connection, ErrorCodes, Segment, Server } from 'shmkit';
import { cleanupAll, entriesOf, result, runCli, runner, sleep, uniq, watchdog, until } from './helpers.mjs';

const child = runner('rpc-child.mjs');
after(cleanupAll);
const code = (c) => (e) => e.code === c;

describe('Server and Connection in one process', () => {
  test('messages both ways with a codec, end, close; nothing stays in /dev/shm', async () => {
    const name = uniq('sv');
    const accepted = [];
    const server = Server.listen(name, { codec: 'json' }, (c) => accepted.push(c));
    const c = await watchdog(connect(name, { codec: 'json', timeout: 10_000 }), 20_000, 'connect');
    assert.ok(c instanceof Connection);
    assert.equal(c.side, 'client');
    assert.equal(c.remotePid, process.pid);
    assert.deepEqual(entriesOf(name), [`shmkit-${name}`], 'the connection channels are unlinked once accepted');
    await until(() => accepted.length === 1, 'the connection event');
    const s = accepted[0];
    assert.equal(s.side, 'server');
    assert.equal(s.id, c.id);
    await c.send({ n: 1 }, { timeout: 20_000 });
    assert.deepEqual(await s.receive({ timeout: 10_000 }), { n: 1 });
    s.sendSync([1, 'two']);
    assert.deepEqual(c.receiveSync({ timeout: 10_000 }), [1, 'two']);
    assert.equal(c.tryReceive(), undefined);
    c.end();
    assert.equal(s.tryReceive(), undefined);
    await assert.rejects(s.receive({ timeout: 10_000 }), code(ErrorCodes.CLOSED), 'the server reads the end after what was queued');
    assert.equal(s.ended, true);
    assert.deepEqual(server.stats().connections, 1);
    const closed = once(s, 'close');
    s.close();
    assert.equal((await closed)[0], undefined, 'a clean close carries no error');
    c.close();
    assert.equal(c.closed, true);
    await assert.rejects(c.send(1), code(ErrorCodes.CLOSED));
    assert.throws(() => c.tryReceive(), code(ErrorCodes.CLOSED));
    assert.equal(server.stats().slotsInUse, 0, 'both ends done: the slot is free');
    await watchdog(server.close(), 20_000, 'server.close');
    assert.equal(server.closed, true);
    assert.deepEqual(entriesOf(name), [], 'the last listener removes the name');
    await assert.rejects(connect(name), code(ErrorCodes.NOT_FOUND));
  });

  test('for await over accepted connections; a bytes connection as a stream.Duplex', async () => {
    const name = uniq('sd');
    const server = Server.listen(name);
    const serving = (async () => {
      for await (const conn of server) {
        const d = conn.stream();
        d.pipe(d); // echo
      }
    })();
    const c = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'connect');
    const d = c.stream();
    assert.throws(() => c.stream(), code(ErrorCodes.BUSY));
    const big = Buffer.alloc(300_000, 7); // larger than the ring: backpressure both ways
    let got = 0;
    const echoed = new Promise((resolve, reject) => {
      d.on('data', (b) => {
        got += b.length;
        if (got === big.length) resolve();
      });
      d.on('error', reject);
    });
    d.write(big);
    await watchdog(echoed, 20_000, 'the echo');
    d.destroy();
    assert.equal(c.closed, true, 'destroying the stream closes the connection');
    await watchdog(server.close(), 20_000, 'server.close after the client left');
    await watchdog(serving, 20_000, 'the for await ends at close');
    assert.deepEqual(entriesOf(name), []);
  });

  test('a json connection refuses stream(); bad options are typed errors', async () => {
    const name = uniq('so');
    assert.throws(() => Server.listen(name, { maxConnections: 0 }), code(ErrorCodes.INVALID_ARGUMENT));
    assert.throws(() => Server.listen(name, { capacity: 3000 }), code(ErrorCodes.INVALID_ARGUMENT));
    assert.throws(() => Server.listen(name, { backlog: 9, maxConnections: 4 }), code(ErrorCodes.INVALID_ARGUMENT));
    assert.throws(() => Server.listen(name, { codec: 'nope' }), code(ErrorCodes.INVALID_ARGUMENT));
    assert.throws(() => Server.listen('bad/name'), code(ErrorCodes.INVALID_ARGUMENT));
    await assert.rejects(connect(name, { timeout: -1 }), code(ErrorCodes.INVALID_ARGUMENT));
    await assert.rejects(connect(name), code(ErrorCodes.NOT_FOUND));
    const server = Server.listen(name, { codec: 'json' });
    const c = await watchdog(connect(name, { codec: 'json', timeout: 10_000 }), 20_000, 'connect');
    assert.throws(() => c.stream(), code(ErrorCodes.INVALID_ARGUMENT));
    c.close();
    server.closeAllConnections();
    await watchdog(server.close(), 20_000, 'close');
  });

  test('maxConnections refuses the next client; an aborted connect leaves nothing', async () => {
    const name = uniq('sm');
    // A server end closes when its client has ended (as a socket's owner closes it on 'end').
    const server = Server.listen(name, { maxConnections: 2, backlog: 2 }, (c) => c.on('end', () => c.close()));
    const a = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'a');
    const b = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'b');
    await assert.rejects(connect(name, { timeout: 10_000 }), (e) => e.code === ErrorCodes.REFUSED && /connection slots/.test(e.message));
    a.close();
    await until(() => server.stats().slotsInUse === 1, "a's slot is freed once both ends closed");
    const c = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'a slot freed');
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(connect(name, { signal: ac.signal }), code('ABORT_ERR'));
    b.close();
    c.close();
    server.closeAllConnections();
    await watchdog(server.close(), 20_000, 'close');
    assert.deepEqual(entriesOf(name), []);
  });

  test('300 connections open at once to one server, each echoing its own messages', async () => {
    const name = uniq('s3');
    const server = Server.listen(name, { codec: 'json', maxConnections: 320, backlog: 320, capacity: 4096 }, async (c) => {
      try {
        for await (const m of c) await c.send(m);
      } catch {
        // closed under us at the end
      }
      c.close();
    });
    try {
      const conns = await watchdog(Promise.all(Array.from({ length: 300 }, () => connect(name, { codec: 'json', timeout: 30_000 }))), 60_000, '300 connects');
      assert.equal(new Set(conns.map((c) => c.id)).size, 300);
      assert.equal(server.stats().connections, 300);
      const answers = await watchdog(Promise.all(conns.map(async (c, i) => {
        await c.send({ i }, { timeout: 20_000 });
        return (await c.receive({ timeout: 30_000 })).i;
      })), 60_000, '300 echoes');
      assert.deepEqual(answers, Array.from({ length: 300 }, (_, i) => i));
      for (const c of conns) c.close();
      await until(() => server.stats().slotsInUse === 0, 'every slot free');
    } finally {
      server.closeAllConnections();
      await watchdog(server.close(), 20_000, 'close');
    }
    assert.deepEqual(entriesOf(name), []);
  });

  test('two listeners in one name: connections spread over them; closing one hands offers to the other', async () => {
    const name = uniq('s2');
    const s1 = Server.listen(name, { maxListeners: 4 });
    const s2 = Server.listen(name);
    assert.notEqual(s1.listener, s2.listener);
    const conns = [];
    for (let i = 0; i < 4; i++) conns.push(await watchdog(connect(name, { timeout: 10_000 }), 20_000, `connect ${i}`));
    await until(() => s1.connections.size + s2.connections.size === 4, 'accepts');
    assert.equal(s1.connections.size, 2, 'the least loaded listener gets each new connection');
    assert.equal(s2.connections.size, 2);
    const closing = s1.close();
    assert.equal(s1.listening, false);
    const late = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'connect after one listener closed');
    await until(() => s2.connections.size === 3, 'the other listener accepts');
    for (const c of [...conns, late]) c.close();
    await watchdog(closing, 20_000, 'the first listener closes once its connections did');
    s2.closeAllConnections();
    await watchdog(s2.close(), 20_000, 's2 close');
    assert.deepEqual(entriesOf(name), []);
  });
});

describe('Server and Connection across processes', () => {
  test('SIGKILL a client: the server end closes with PEER_GONE and the slot is freed', async () => {
    const name = uniq('sk');
    const server = Server.listen(name, { codec: 'json' });
    const closes = [];
    server.on('connection', (c) => c.on('close', (err) => closes.push(err)));
    const cl = child('connHold', { name, liveness: 50 });
    try {
      const c = server[Symbol.asyncIterator]();
      const first = await watchdog(c.next(), 30_000, 'accept');
      const conn = first.value;
      assert.deepEqual(await conn.receive({ timeout: 20_000 }), { hello: cl.child.pid });
      await conn.send('back', { timeout: 20_000 });
      await cl.waitFor(/"echoed"/);
      cl.child.kill('SIGKILL');
      // A receive pending on the dead client fails within the liveness interval.
      await assert.rejects(watchdog(conn.receive(), 20_000, 'receive from a dead client'), (e) => e.code === ErrorCodes.PEER_GONE || e.code === ErrorCodes.CLOSED);
      await until(() => conn.closed, 'the sweep closes the connection');
      await until(() => server.stats().slotsInUse === 0, 'the slot is freed');
      assert.deepEqual(entriesOf(name), [`shmkit-${name}`], 'nothing of the connection stays');
    } finally {
      cl.child.kill('SIGKILL');
      server.closeAllConnections();
      await watchdog(server.close(), 20_000, 'close');
    }
  });

  test('SIGKILL the server: the client fails with PEER_GONE; gc removes the server once nobody lives', async () => {
    const name = uniq('ss');
    const sv = child('connEcho', { name, liveness: 50 });
    await sv.waitFor(/"ready"/);
    const c = await watchdog(connect(name, { codec: 'json', timeout: 20_000 }), 30_000, 'connect');
    await c.send('x', { timeout: 20_000 });
    assert.equal(await c.receive({ timeout: 20_000 }), 'x');
    const closed = once(c, 'close');
    const pending = c.receive();
    sv.child.kill('SIGKILL');
    await assert.rejects(watchdog(pending, 20_000, 'receive from a dead server'), (e) => e.code === ErrorCodes.PEER_GONE || e.code === ErrorCodes.CLOSED);
    const [err] = await watchdog(closed, 20_000, "the client's close");
    assert.equal(err?.code, ErrorCodes.PEER_GONE);
    assert.deepEqual(entriesOf(name), [`shmkit-${name}`], "the connection's channels are gone; the server's name stays");
    await assert.rejects(connect(name, { timeout: 5_000 }), (e) => e.code === ErrorCodes.REFUSED && /no server is listening/.test(e.message));
    const r = await watchdog(runCli(['gc', '--assume-unmapped', '--prefix', name]), 30_000, 'shmkit gc');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(entriesOf(name), [], 'gc removes a server whose every process is dead');
  });

  test('a stopped listener: clients wait in the backlog, the next one is refused, and a timeout withdraws', async () => {
    const name = uniq('sb');
    const sv = child('connEcho', { name, options: { backlog: 1 } });
    await sv.waitFor(/"ready"/);
    try {
      sv.child.kill('SIGSTOP');
      const waiting = connect(name, { timeout: 300 });
      await sleep(50);
      await assert.rejects(connect(name, { timeout: 300 }), (e) => e.code === ErrorCodes.REFUSED && /backlog/.test(e.message));
      await assert.rejects(watchdog(waiting, 20_000, 'the waiting connect'), code(ErrorCodes.TIMEOUT));
      sv.child.kill('SIGCONT');
      const c = await watchdog(connect(name, { codec: 'json', timeout: 20_000 }), 30_000, 'connect after SIGCONT');
      await c.send(5, { timeout: 20_000 });
      assert.equal(await c.receive({ timeout: 20_000 }), 5);
      c.close();
      assert.deepEqual(entriesOf(name), [`shmkit-${name}`], 'the withdrawn offer left no channels');
    } finally {
      sv.child.kill('SIGCONT');
      sv.child.kill('SIGTERM');
      await watchdog(sv.exited, 20_000, 'server exit');
    }
    assert.deepEqual(entriesOf(name), []);
  });
});

describe('Server segment as untrusted input', () => {
  test('garbage in the listener and connection slots: typed errors or a working connection, never a crash or a hang', async () => {
    const name = uniq('sg');
    const server = Server.listen(name, { maxConnections: 8, maxListeners: 2 });
    // Scribbled through the file: the same pages every mapping sees.
    const path = `/dev/shm/shmkit-${name}`;
    const saved = readFileSync(path);
    const dataOffset = 128;
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0);
    try {
      for (let round = 0; round < 40; round++) {
        // Garbage over the data area but the first listener slot (ours), flag words included.
        const g = Buffer.from(saved);
        for (let at = dataOffset; at + 4 <= g.length; at += 4) {
          if (at >= dataOffset + 192 && at < dataOffset + 256) continue;
          if (rnd() % 3 === 0) g.writeInt32LE(rnd() | 0, at);
        }
        const fd = openSync(path, 'r+');
        writeSync(fd, g, dataOffset, g.length - dataOffset, dataOffset);
        closeSync(fd);
        try {
          const c = await watchdog(connect(name, { timeout: 300 }), 20_000, 'connect over garbage');
          c.close();
        } catch (e) {
          assert.ok(typeof e.code === 'string' && e.code.startsWith('ERR_SHMKIT_'), `typed error, got ${e.stack}`);
        }
        const fd2 = openSync(path, 'r+');
        writeSync(fd2, saved, dataOffset, saved.length - dataOffset, dataOffset);
        closeSync(fd2);
      }
      // Restored: it works again.
      const c = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'connect after repair');
      c.close();
    } finally {
      server.closeAllConnections();
      await watchdog(server.close(), 20_000, 'close');
      for (const e of entriesOf(name)) Segment.unlink(e.slice('shmkit-'.length));
    }
  });
});

describe('Server slots under races and deaths (regressions)', () => {
  test('a closed listener never removes a newer server that took its name', async () => {
    const name = uniq('sn');
    const a = Server.listen(name);
    Server.unlink(name);
    const b = Server.listen(name); // a new object under the same name
    await watchdog(a.close(), 20_000, 'close a');
    assert.deepEqual(entriesOf(name), [`shmkit-${name}`], 'b keeps its name');
    const c = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'connect to b');
    c.close();
    b.closeAllConnections();
    await watchdog(b.close(), 20_000, 'close b');
    assert.deepEqual(entriesOf(name), []);
  });

  test('the server end closes first, then the client dies: the slot is freed', async () => {
    const name = uniq('sf');
    const server = Server.listen(name, { codec: 'json' }, async (c) => {
      await c.receive({ timeout: 20_000 });
      await c.send('bye', { timeout: 20_000 });
      c.close(); // before the client does
    });
    const cl = child('connHold', { name });
    try {
      await cl.waitFor(/"echoed"/);
      await until(() => server.connections.size === 0, 'the server end closed');
      cl.child.kill('SIGKILL');
      await watchdog(cl.exited, 20_000, 'client exit');
      await until(() => server.stats().slotsInUse === 0, 'the sweep frees the slot');
    } finally {
      cl.child.kill('SIGKILL');
      await watchdog(server.close(), 20_000, 'close');
    }
    assert.deepEqual(entriesOf(name), []);
  });

  test('the client closes first, then its server dies: another listener frees the slot', async () => {
    const name = uniq('sc');
    const sv = child('connEcho', { name, options: { maxListeners: 4 } });
    await sv.waitFor(/"ready"/);
    const other = Server.listen(name); // a second listener, whose sweep sees the slot
    try {
      const c = await watchdog(connect(name, { codec: 'json', timeout: 20_000 }), 30_000, 'connect');
      await c.send(1, { timeout: 20_000 });
      await c.receive({ timeout: 20_000 });
      const server = JSON.parse(sv.out.trim().split('\n')[0]);
      assert.equal(c.remotePid, server.pid, 'the child accepted it (the least loaded listener)');
      sv.child.kill('SIGSTOP'); // it cannot finish its end
      c.close();
      sv.child.kill('SIGKILL');
      await watchdog(sv.exited, 20_000, 'server exit');
      await until(() => other.stats().slotsInUse === 0, "the other listener's sweep frees the slot");
    } finally {
      sv.child.kill('SIGKILL');
      await watchdog(other.close(), 20_000, 'close');
    }
    assert.deepEqual(entriesOf(name), []);
  });

  test('clients giving up while being accepted (timeouts of 0 to 2 ms): every slot comes back', async () => {
    const name = uniq('sh');
    const sv = child('connEcho', { name, options: { maxConnections: 64, backlog: 64 } });
    await sv.waitFor(/"ready"/);
    try {
      const hurried = [child('connHurry', { name, count: 1500 }), child('connHurry', { name, count: 1500 })];
      const results = await Promise.all(hurried.map((h) => result(h, 120_000, 'hurried clients')));
      const total = results.reduce((n, r) => n + Object.values(r.codes).reduce((a, b) => a + b, 0), 0);
      assert.equal(total, 3000);
      for (const r of results) for (const k of Object.keys(r.codes)) assert.ok(['ok', ErrorCodes.TIMEOUT, ErrorCodes.REFUSED].includes(k), k);
      const probe = Server.listen(name); // a listener in this process to read the slots with
      try {
        await until(() => probe.stats().slotsInUse === 0, 'every slot free');
      } finally {
        await watchdog(probe.close(), 20_000, 'probe close');
      }
      assert.deepEqual(entriesOf(name), [`shmkit-${name}`], 'no channel names left');
    } finally {
      sv.child.kill('SIGTERM');
      await watchdog(sv.exited, 20_000, 'server exit');
    }
  });

  test('clients SIGKILLed at random points of connect and close: no slot and no name is left', async () => {
    const name = uniq('sr');
    const server = Server.listen(name, { maxConnections: 16 }, (c) => c.receive({ timeout: 20_000 }).then(() => c.close(), () => c.close()));
    const pids = [];
    try {
      for (let i = 0; i < 25; i++) {
        const cl = child('connChurn', { name, liveness: 50 });
        pids.push(cl.child.pid);
        await cl.waitFor(/"go"/);
        await sleep(Math.random() * 30);
        cl.child.kill('SIGKILL');
        await watchdog(cl.exited, 20_000, 'churning client exit');
      }
      await until(() => server.stats().slotsInUse === 0, 'every slot freed');
      // A client killed inside a channel's creation leaves a temporary (as any creator does; gc
      // removes those): they are not the connection's names.
      for (const e of readdirSync('/dev/shm')) {
        if (pids.some((p) => e.startsWith(`shmkit~${p.toString(36)}.`))) unlinkTemp(e);
      }
      assert.deepEqual(entriesOf(name), [`shmkit-${name}`], 'no channel names left');
    } finally {
      await watchdog(server.close(), 20_000, 'close');
    }
  });
});

function unlinkTemp(entry) {
  try {
    unlinkSync(`/dev/shm/${entry}`);
  } catch {
    // gone already
  }
}

// RPC: serve() and rpcClient(). Calls are multiplexed on a connection and matched by id, whatever
// the order of their answers; timeouts and aborts reach the handler's ctx.signal; errors keep their
// name, message, code and cause; streams honour the caller's credit; a pool of server processes
// shares the calls, and a dead one fails only its own calls; garbage never crashes either side.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, ErrorCodes, RemoteError, rpcClient, serve, Server } from 'shmkit';
import { cleanupAll, entriesOf, result, runCli, runner, sleep, uniq, watchdog, until } from './helpers.mjs';

const child = runner('rpc-child.mjs');
after(cleanupAll);
const code = (c) => (e) => e.code === c;

describe('RPC in one process', () => {
  test('calls, errors with name/message/code/cause, unknown methods, notifications', async () => {
    const name = uniq('rp');
    const notes = [];
    class Custom extends Error {
      constructor(m) {
        super(m, { cause: new TypeError('the root') });
        this.name = 'Custom';
        this.code = 'E_CUSTOM';
        this.detail = { n: 1 };
      }
    }
    const srv = serve(name, {
      async add(a, b) {
        return a + b;
      },
      sync(x) {
        return { x, arr: [1, 'two', null] };
      },
      async fail() {
        throw new Custom('it broke');
      },
      async throwsString() {
        throw 'plain'; // eslint-disable-line no-throw-literal
      },
      log(msg) {
        notes.push(msg);
      },
    });
    const c = await watchdog(rpcClient(name, { timeout: 20_000 }), 20_000, 'rpcClient');
    try {
      assert.equal(await c.add(2, 3), 5);
      assert.deepEqual(await c.sync('y'), { x: 'y', arr: [1, 'two', null] });
      assert.equal(await c.call('add', [10, 5]), 15);
      const err = await c.fail().then(() => null, (e) => e);
      assert.ok(err instanceof RemoteError);
      assert.equal(err.name, 'Custom');
      assert.equal(err.message, 'it broke');
      assert.equal(err.code, 'E_CUSTOM');
      assert.deepEqual(err.detail, { n: 1 });
      assert.equal(err.cause.name, 'TypeError');
      assert.equal(err.cause.message, 'the root');
      await assert.rejects(c.throwsString(), (e) => e.message === 'plain');
      await assert.rejects(c.nope(1), code(ErrorCodes.UNKNOWN_METHOD));
      await assert.rejects(c.call('toString', []), code(ErrorCodes.UNKNOWN_METHOD), 'Object.prototype is not served');
      await assert.rejects(c.call('constructor', []), code(ErrorCodes.UNKNOWN_METHOD));
      await assert.rejects(c.call('', []), code(ErrorCodes.INVALID_ARGUMENT));
      await assert.rejects(c.call('add', 'not an array'), code(ErrorCodes.INVALID_ARGUMENT));
      await assert.rejects(c.add(1n, 2n), code(ErrorCodes.INVALID_ARGUMENT), 'a BigInt cannot be JSON: nothing is sent');
      await c.notify('log', 'hello');
      await until(() => notes.length === 1, 'the notification ran');
      assert.deepEqual(notes, ['hello']);
      assert.equal(await c.add(1, 1), 2, 'the connection still works after every error');
      assert.equal(c.servers, 1);
      const st = srv.stats();
      assert.ok(st.calls >= 9 && st.errors >= 5, JSON.stringify(st));
      assert.equal(st.inFlight, 0);
      assert.equal(c.stats().inFlight, 0);
      assert.equal(await c.then, undefined, 'the client is not a thenable');
    } finally {
      c.close();
      await watchdog(srv.close(), 20_000, 'close');
    }
    await assert.rejects(c.add(1, 2), code(ErrorCodes.CLOSED));
    assert.deepEqual(entriesOf(name), []);
  });

  test('200 multiplexed calls answered in reverse order all match their requests', async () => {
    const name = uniq('rm');
    const waiting = [];
    const srv = serve(name, {
      // Answers only once all 200 have arrived, last first.
      hold(i) {
        return new Promise((resolve) => {
          waiting.push(() => resolve(i * 2));
          if (waiting.length === 200) for (const r of waiting.reverse()) r();
        });
      },
    });
    const c = await watchdog(rpcClient(name, { timeout: 20_000 }), 20_000, 'rpcClient');
    try {
      const order = [];
      const all = Array.from({ length: 200 }, (_, i) => c.hold(i).then((v) => (order.push(i), v)));
      const got = await watchdog(Promise.all(all), 20_000, 'the calls');
      assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i * 2));
      assert.ok(order.indexOf(198) < order.indexOf(0), `answered out of request order: ${order.slice(0, 5)}...`);
    } finally {
      c.close();
      await watchdog(srv.close(), 20_000, 'close');
    }
  });

  test('timeouts and aborts reach the handler: ctx.signal aborts, ctx.deadline is the caller\'s', async () => {
    const name = uniq('rt');
    const seen = [];
    const srv = serve(name, {
      wait(ctx) {
        seen.push({ deadline: ctx.deadline, method: ctx.method, pid: ctx.pid });
        return new Promise((resolve, reject) => {
          ctx.signal.addEventListener('abort', () => {
            seen.push({ aborted: ctx.signal.reason.code });
            reject(ctx.signal.reason);
          }, { once: true });
        });
      },
    });
    const c = await watchdog(rpcClient(name, { timeout: 60_000 }), 20_000, 'rpcClient');
    try {
      const before = Date.now();
      await assert.rejects(c.with({ timeout: 100 }).wait(), code(ErrorCodes.TIMEOUT));
      // The server's deadline timer and the caller's CANCEL (sent when its own timer fired) race;
      // either way the handler's signal says the deadline passed.
      await until(() => seen.some((s) => s.aborted === ErrorCodes.TIMEOUT), 'the handler sees the deadline pass');
      assert.ok(seen[0].deadline >= before + 100 && seen[0].deadline <= Date.now() + 1000, JSON.stringify(seen[0]));
      assert.equal(seen[0].method, 'wait');
      assert.equal(seen[0].pid, process.pid);
      const ac = new AbortController();
      const call = c.with({ signal: ac.signal }).wait();
      await until(() => seen.length === 3, 'the second call started');
      ac.abort(new Error('enough'));
      await assert.rejects(call, (e) => e.code === 'ABORT_ERR' && e.name === 'AbortError' && e.cause.message === 'enough');
      await until(() => seen.some((s) => s.aborted === 'ABORT_ERR'), 'the handler sees the abort');
      const done = new AbortController();
      done.abort();
      await assert.rejects(c.with({ signal: done.signal }).wait(), code('ABORT_ERR'), 'an aborted signal: not even sent');
      await until(() => srv.stats().inFlight === 0, 'both calls ended on the server');
    } finally {
      c.close();
      await watchdog(srv.close(), 20_000, 'close');
    }
  });

  test('a stream honours the caller\'s credit: a slow caller never makes the server run ahead', async () => {
    const name = uniq('rs');
    let produced = 0;
    let finished = null;
    const srv = serve(name, {
      async *numbers(n, ctx) {
        try {
          for (let i = 0; i < n; i++) {
            produced++;
            yield i;
          }
        } finally {
          finished = ctx.signal.aborted ? 'cancelled' : 'done';
        }
      },
      async *broken() {
        yield 1;
        throw Object.assign(new Error('mid-stream'), { code: 'E_MID' });
      },
    });
    const c = await watchdog(rpcClient(name, { window: 8, timeout: 20_000 }), 20_000, 'rpcClient');
    try {
      const all = [];
      for await (const x of await c.numbers(100)) all.push(x);
      assert.deepEqual(all, Array.from({ length: 100 }, (_, i) => i));
      await until(() => finished === 'done', 'the generator finished');
      produced = 0;
      finished = null;
      const it = await c.numbers(1_000_000);
      let consumed = 0;
      for (let i = 0; i < 20; i++) {
        assert.equal((await it.next()).value, i);
        consumed++;
        await sleep(2);
        assert.ok(produced <= consumed + 8 + 1, `produced ${produced} with ${consumed} consumed and a window of 8`);
      }
      await it.return();
      await until(() => finished === 'cancelled', 'return() cancels the generator');
      assert.ok(produced < 100);
      const b = await c.broken();
      assert.equal((await b.next()).value, 1);
      await assert.rejects(b.next(), (e) => e.code === 'E_MID' && e.message === 'mid-stream');
      assert.equal((await b.next()).done, true);
    } finally {
      c.close();
      await watchdog(srv.close(), 20_000, 'close');
    }
  });

  test('garbage frames: the server drops that connection and keeps serving; a client gets a typed error', async () => {
    const name = uniq('rx');
    const srv = serve(name, { async add(a, b) { return a + b; } });
    try {
      const raw = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'raw connect');
      await raw.send(Buffer.from([1, 2, 3])); // shorter than a header
      await assert.rejects(watchdog(raw.receive({ timeout: 10_000 }), 20_000, 'the server ends the connection'), (e) => e.code === ErrorCodes.CLOSED || e.code === ErrorCodes.PEER_GONE);
      raw.close();
      const bad = await watchdog(connect(name, { timeout: 10_000 }), 20_000, 'raw connect');
      const frame = Buffer.alloc(30);
      frame[0] = 1; // CALL
      frame.writeUInt16LE(60000, 20); // a method name longer than the frame
      await bad.send(frame);
      // A malformed call is answered with an ERROR frame (type 6) carrying a typed error.
      const answer = await watchdog(bad.receive({ timeout: 10_000 }), 20_000, 'answer');
      assert.equal(answer[0], 6);
      assert.equal(JSON.parse(answer.subarray(8).toString()).code, ErrorCodes.CORRUPT);
      bad.close();
      const c = await rpcClient(name, { timeout: 20_000 });
      assert.equal(await c.add(1, 2), 3, 'other clients are served');
      c.close();
    } finally {
      await watchdog(srv.closeNow(), 20_000, 'close');
    }
    // A server that answers garbage.
    const name2 = uniq('ry');
    const server = Server.listen(name2, {}, async (conn) => {
      try {
        for await (const f of conn) {
          const reply = Buffer.alloc(12);
          reply[0] = 5; // RESULT
          reply.writeUInt32LE(f.readUInt32LE(4), 4);
          reply.write('{no', 8); // not JSON
          await conn.send(reply);
          const wrongType = Buffer.alloc(8);
          wrongType[0] = 77;
          await conn.send(wrongType);
        }
      } catch {
        // the client left
      }
      conn.close();
    });
    const c2 = await rpcClient(name2, { timeout: 20_000 });
    try {
      await assert.rejects(watchdog(c2.add(1, 2), 20_000, 'a call answered with garbage'), code(ErrorCodes.DECODE));
      await assert.rejects(watchdog(c2.add(1, 2), 20_000, 'the next call'), (e) => typeof e.code === 'string');
    } finally {
      c2.close();
      server.closeAllConnections();
      await watchdog(server.close(), 20_000, 'close');
    }
  });
});

describe('RPC edge cases (regressions)', () => {
  test('a timeout beyond 2^31 - 1 ms is honoured, not fired at once (client and server)', async () => {
    const name = uniq('rl');
    const srv = serve(name, {
      async later(ms, ctx) {
        await sleep(ms);
        return ctx.signal.aborted ? 'aborted' : 'fine';
      },
    });
    const c = await watchdog(rpcClient(name, { timeout: 20_000 }), 20_000, 'rpcClient');
    try {
      assert.equal(await watchdog(c.with({ timeout: 2 ** 31 + 1000 }).later(50), 20_000, 'a long timeout'), 'fine');
    } finally {
      c.close();
      await watchdog(srv.close(), 20_000, 'close');
    }
  });

  test('a handler that throws something unreadable: the caller gets an error, the server lives on', async () => {
    const name = uniq('ru');
    const srv = serve(name, {
      async weird() {
        const o = Object.create(null);
        o.self = o;
        throw o;
      },
      async revoked() {
        const { proxy, revoke } = Proxy.revocable(new Error('x'), {});
        revoke();
        throw proxy;
      },
      async ok() {
        return 1;
      },
    });
    const c = await watchdog(rpcClient(name, { timeout: 20_000 }), 20_000, 'rpcClient');
    try {
      await assert.rejects(c.weird(), (e) => e instanceof Error && typeof e.message === 'string');
      await assert.rejects(c.revoked(), (e) => e instanceof Error);
      assert.equal(await c.ok(), 1);
    } finally {
      c.close();
      await watchdog(srv.close(), 20_000, 'close');
    }
  });

  test('an item the client cannot decode fails that stream alone; other calls on the connection go on', async () => {
    const name = uniq('rd');
    const srv = serve(name, {
      async *items() {
        for (let i = 0; i < 6; i++) yield i;
      },
      async slow() {
        await sleep(100);
        return 'slow';
      },
    });
    // The client's codec refuses the value 3.
    const strict = { name: 'strict-json', encode: (v) => JSON.stringify(v), decode: (b) => { const v = JSON.parse(b.toString()); if (v === 3) throw new Error('no 3'); return v; } };
    const c = await watchdog(rpcClient(name, { codec: strict, timeout: 20_000 }), 20_000, 'rpcClient');
    try {
      const other = c.slow();
      const got = [];
      await assert.rejects((async () => {
        for await (const x of await c.items()) got.push(x);
      })(), code(ErrorCodes.DECODE));
      assert.deepEqual(got, [0, 1, 2]);
      assert.equal(await watchdog(other, 20_000, 'the other call'), 'slow');
      assert.equal(c.servers, 1, 'the connection is still there');
    } finally {
      c.close();
      await watchdog(srv.closeNow(), 20_000, 'close');
    }
  });
});

describe('RPC limits and endings (regressions)', () => {
  test('what a connection cannot carry is ERR_SHMKIT_TOO_LARGE (a call, a result, an error, an item); a handler that returns nothing answers null', async () => {
    const name = uniq('rb');
    const big = 'x'.repeat(200_000); // more than the largest message of a 64 KiB ring
    const srv = serve(name, {
      async echo(v) { return v; },
      async bigResult() { return big; },
      async bigError() { throw new Error(big); },
      async *bigItem() { yield 1; yield big; yield 3; },
      async nothing() {},
      async *holes() { yield 1; yield undefined; yield 3; },
    });
    const c = await watchdog(rpcClient(name, { timeout: 20_000 }), 20_000, 'rpcClient');
    try {
      await assert.rejects(c.echo(big), (e) => e.code === ErrorCodes.TOO_LARGE && /nothing was sent/.test(e.message));
      await assert.rejects(c.bigResult(), code(ErrorCodes.TOO_LARGE));
      await assert.rejects(c.bigError(), code(ErrorCodes.TOO_LARGE));
      const got = [];
      await assert.rejects((async () => { for await (const x of await c.bigItem()) got.push(x); })(), code(ErrorCodes.TOO_LARGE));
      assert.deepEqual(got, [1]);
      assert.equal(await c.nothing(), null);
      const holes = [];
      for await (const x of await c.holes()) holes.push(x);
      assert.deepEqual(holes, [1, null, 3]);
      assert.equal(await c.echo('still fine'), 'still fine');
    } finally {
      c.close();
      await watchdog(srv.closeNow(), 20_000, 'close');
    }
  });

  test('return() ends a next() that was waiting; a pool member that closed its end gets no more calls', async () => {
    const name = uniq('rn');
    const a = serve(name, {
      async *slow(ctx) {
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
        yield 1;
      },
      async who() { return 'a'; },
    }, { maxListeners: 4 });
    const c = await watchdog(rpcClient(name, { timeout: 20_000 }), 20_000, 'rpcClient');
    const b = serve(name, { async who() { return 'b'; } });
    try {
      const it = await c.slow();
      const waiting = it.next();
      await it.return();
      assert.deepEqual(await watchdog(waiting, 20_000, 'the waiting next()'), { value: undefined, done: true });
      // A client looks for new servers as it makes calls.
      for (let i = 0; i < 500 && c.servers < 2; i++) {
        await c.who();
        await sleep(10);
      }
      assert.equal(c.servers, 2, 'the client found the second server');
      await watchdog(a.closeNow(), 20_000, 'a closes');
      const answers = await watchdog(Promise.all([c.who(), c.who(), c.who()]), 20_000, 'calls after a closed');
      assert.deepEqual(answers, ['b', 'b', 'b']);
    } finally {
      c.close();
      await watchdog(b.closeNow(), 20_000, 'close b');
    }
  });
});

describe('RPC across processes', () => {
  test('100 clients in 10 processes, 200 calls each, all answered exactly right', async () => {
    const name = uniq('rh');
    const sv = child('rpcServer', { name, options: { maxConnections: 128 } });
    await sv.waitFor(/"ready"/);
    try {
      const clients = Array.from({ length: 10 }, () => child('rpcClients', { name, clients: 10, calls: 200 }));
      const results = await Promise.all(clients.map((p) => result(p, 120_000, 'rpc clients')));
      for (const r of results) assert.deepEqual(r, { answered: 2000, bad: 0 });
    } finally {
      sv.child.kill('SIGTERM');
      await watchdog(sv.exited, 20_000, 'server exit');
    }
    assert.deepEqual(entriesOf(name), []);
  });

  test('a pool of two server processes: calls spread over both; SIGKILL one mid-call, its call fails with PEER_GONE and the other serves on', async () => {
    const name = uniq('rw');
    const a = child('rpcServer', { name, liveness: 50 });
    await a.waitFor(/"ready"/);
    const b = child('rpcServer', { name, liveness: 50 });
    await b.waitFor(/"ready"/);
    try {
      const c = await watchdog(rpcClient(name, { timeout: 20_000 }), 20_000, 'rpcClient');
      await until(() => c.servers === 2, 'connected to both listeners');
      const pids = new Set(await Promise.all(Array.from({ length: 40 }, () => c.whoami())));
      assert.deepEqual([...pids].sort(), [a.child.pid, b.child.pid].sort(), 'both servers answered');
      // A call held on each server, then one server dies.
      // A call held on each server (each goes where the fewest calls are outstanding).
      const outcomes = [c.hold(1_000_000), c.hold(1_000_000)].map((p) => p.then(() => 'answered', (e) => e));
      await a.waitFor(/"holding"/);
      await b.waitFor(/"holding"/);
      a.child.kill('SIGKILL');
      const first = await watchdog(Promise.race(outcomes), 20_000, 'the dead server\'s call fails');
      assert.equal(first.code, ErrorCodes.PEER_GONE, String(first));
      assert.match(first.message, new RegExp(`pid ${a.child.pid}`));
      for (let i = 0; i < 20; i++) assert.equal(await watchdog(c.whoami(), 20_000, 'a call after the death'), b.child.pid);
      c.close();
      await b.waitFor(/"aborted":"ERR_SHMKIT_PEER_GONE"/, 20_000); // the survivor's held call saw its caller leave
    } finally {
      a.child.kill('SIGKILL');
      b.child.kill('SIGTERM');
      await watchdog(b.exited, 20_000, 'server b exit');
    }
    assert.deepEqual(entriesOf(name), [], 'nothing left once the survivor closed');
  });

  test('a call that has to wait for a connection keeps its own timeout and signal', async () => {
    const name = uniq('rq');
    const a = child('rpcServer', { name, options: { maxListeners: 4 } });
    await a.waitFor(/"ready"/);
    const c = await watchdog(rpcClient(name, { connectTimeout: 600_000, maxServers: 1 }), 20_000, 'rpcClient');
    const b = child('rpcServer', { name });
    await b.waitFor(/"ready"/);
    try {
      b.child.kill('SIGSTOP'); // a listener that will not accept
      a.child.kill('SIGTERM'); // the one the client is connected to goes
      await watchdog(a.exited, 20_000, 'server a exit');
      await until(() => c.servers === 0, 'the client dropped the server that left');
      // The pool is empty now: the call waits to connect to b, which is stopped. Its own timeout
      // (not the client's ten-minute connectTimeout) ends the wait, and an abort does too.
      await assert.rejects(watchdog(c.with({ timeout: 200 }).add(1, 2), 60_000, 'the call\'s timeout'), code(ErrorCodes.TIMEOUT));
      const ac = new AbortController();
      const aborted = c.with({ signal: ac.signal }).add(1, 2);
      setTimeout(() => ac.abort(), 50);
      await assert.rejects(watchdog(aborted, 60_000, 'the call\'s signal'), code('ABORT_ERR'));
    } finally {
      c.close();
      b.child.kill('SIGKILL');
      a.child.kill('SIGKILL');
    }
  });

  test('SIGKILL a client mid-call: the handler\'s signal aborts and the server frees its connection', async () => {
    const name = uniq('rk');
    const aborted = [];
    const srv = serve(name, {
      hold(ms, ctx) {
        return new Promise((resolve, reject) => ctx.signal.addEventListener('abort', () => {
          aborted.push(ctx.signal.reason.code);
          reject(ctx.signal.reason);
        }));
      },
    });
    try {
      const cl = child('holdCall', { name });
      await cl.waitFor(/"calling"/);
      await until(() => srv.stats().inFlight === 1, 'the call is running');
      cl.child.kill('SIGKILL');
      await until(() => aborted.length === 1, 'the handler sees the caller die');
      assert.equal(aborted[0], ErrorCodes.PEER_GONE);
      await until(() => srv.server.stats().slotsInUse === 0 && srv.stats().inFlight === 0, 'connection and call freed');
      assert.deepEqual(entriesOf(name), [`shmkit-${name}`]);
    } finally {
      await watchdog(srv.closeNow(), 20_000, 'close');
    }
  });

  test('shmkit call from a shell: results, streams, errors; ls and inspect show the server', async () => {
    const name = uniq('rc');
    const srv = serve(name, {
      async add(a, b) {
        return a + b;
      },
      async echo(x) {
        return x;
      },
      async *count(n) {
        for (let i = 0; i < n; i++) yield { i };
      },
      async fail() {
        throw Object.assign(new RangeError('too big'), { code: 'E_BIG' });
      },
    });
    try {
      let r = await runCli(['call', name, 'add', '[2, 40]']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '42\n');
      r = await runCli(['call', name, 'echo', '"hi"']);
      assert.equal(r.stdout, '"hi"\n');
      r = await runCli(['call', name, 'echo', '[[1, 2]]']);
      assert.equal(r.stdout, '[1,2]\n');
      r = await runCli(['call', name, 'count', '3']);
      assert.equal(r.stdout, '{"i":0}\n{"i":1}\n{"i":2}\n');
      r = await runCli(['call', name, 'fail']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /shmkit: E_BIG: RangeError: too big/);
      r = await runCli(['call', name, 'fail', '--json']);
      assert.deepEqual(JSON.parse(r.stdout), { error: { name: 'RangeError', message: 'too big', code: 'E_BIG' } });
      r = await runCli(['call', name, 'nope']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /ERR_SHMKIT_UNKNOWN_METHOD/);
      r = await runCli(['call', name, 'add', '[1,']);
      assert.equal(r.code, 2);
      r = await runCli(['call', `${name}x`, 'add']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /ERR_SHMKIT_NOT_FOUND/);
      r = await runCli(['inspect', name, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const state = JSON.parse(r.stdout).state;
      assert.equal(state.listeners.length, 1);
      assert.equal(state.listeners[0].pid, process.pid);
      assert.ok(state.listeners[0].calls >= 6);
      r = await runCli(['ls']);
      assert.match(r.stdout, new RegExp(`${name}\\s+server`));
    } finally {
      await watchdog(srv.closeNow(), 20_000, 'close');
    }
  });
});

describe('RPC types', () => {
  test('an interface of methods makes a typed client: wrong arguments, unknown methods and misused results do not compile', async () => {
    const { execFileSync } = await import('node:child_process');
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { ROOT } = await import('./helpers.mjs');
    const dir = mkdtempSync(join(tmpdir(), 'shmkit-rpc-types-'));
    try {
      writeFileSync(join(dir, 'use.ts'), `
import { rpcClient, serve, type CallContext, type Connection, Server, connect } from ${JSON.stringify(join(ROOT, 'dist', 'index'))};
interface Api {
  add(a: number, b: number): Promise<number>;
  greet(name: string): string;
  ticks(n: number): AsyncIterable<{ i: number }>;
}
export async function use(): Promise<void> {
  serve<Api>('svc', {
    async add(a, b, ctx: CallContext) { void ctx.signal.aborted; void ctx.deadline; return a + b; },
    greet: (name) => 'hi ' + name,
    async *ticks(n) { for (let i = 0; i < n; i++) yield { i }; },
  });
  const c = await rpcClient<Api>('svc', { timeout: 100 });
  const sum: number = await c.add(1, 2);
  const g: string = await c.with({ timeout: 5 }).greet('x');
  for await (const t of await c.ticks(3)) { const i: number = t.i; void i; }
  const viaCall: number = await c.call('add', [1, 2]);
  await c.notify('greet', 'y');
  // @ts-expect-error a string where a number goes
  await c.add('1', 2);
  // @ts-expect-error a method the interface does not have
  await c.nope();
  // @ts-expect-error the result is a number, not a string
  const wrong: string = await c.add(1, 2);
  // @ts-expect-error call() checks the arguments too
  await c.call('add', ['1', 2]);
  void sum; void g; void viaCall; void wrong;
  c.close();
  const server = Server.listen<{ n: number }>('s', { codec: 'json' }, (conn: Connection<{ n: number }>) => void conn.send({ n: 1 }));
  const conn = await connect<{ n: number }>('s', { codec: 'json' });
  const m: { n: number } = await conn.receive();
  void m; void server;
}
`);
      const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
      const args = [tsc, '--noEmit', '--strict', '--skipLibCheck', 'false', '--target', 'es2022', '--module', 'node16', '--moduleResolution', 'node16', '--types', 'node', '--typeRoots', join(ROOT, 'node_modules', '@types'), '--lib', 'es2022,esnext.disposable', join(dir, 'use.ts')];
      try {
        execFileSync(process.execPath, args, { encoding: 'utf8', timeout: 120_000 });
      } catch (err) {
        assert.fail(`tsc: ${err.stdout}${err.stderr}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

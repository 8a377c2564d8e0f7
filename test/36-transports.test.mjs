// One suite, two transports: the patterns that make sense across a network (topics, RPC, maps)
// run the same tests against the local (shared-memory) transport and the NATS transport (a real
// nats-server with JetStream), as iceoryx2 runs one conformance suite against every backend.
// What differs between them by design is stated in docs/scaling-out.md and tested in test/35.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, local, ShmkitError, SharedMap, Topic, Server } from 'shmkit';
import { cleanupAll, sleep, uniq, watchdog } from './helpers.mjs';
import { natsMissing, startServer } from './fixtures/nats-servers.mjs';

const code = (c) => (e) => e instanceof ShmkitError && e.code === c;
const within = (p, what) => watchdog(p, 15_000, what);

const missing = await natsMissing();
let server = null;

/** Each transport: how to get it, and how to remove what a test made. */
const transports = [
  {
    kind: 'local',
    open: async () => local,
    remove: { topic: (n) => Topic.unlink(n), map: (n) => SharedMap.unlink(n), service: (n) => Server.unlink(n) },
  },
  {
    kind: 'nats',
    skip: missing,
    open: async () => {
      const { natsTransport } = await import('shmkit/nats');
      return natsTransport({ servers: server.url });
    },
    remove: { topic: () => {}, map: async (n, t) => (await t.map(n)).destroy(), service: () => {} },
  },
];

before(async () => {
  if (!missing) server = await startServer();
});
after(async () => {
  await server?.stop();
  cleanupAll();
});

for (const tr of transports) {
  describe(`transport: ${tr.kind}`, { skip: tr.skip ?? false }, () => {
    let t;
    let t2; // a second handle of the transport: another process's view (NATS: another connection)
    before(async () => {
      t = await tr.open();
      t2 = await tr.open();
    });
    after(async () => {
      await t?.close();
      await t2?.close();
    });

    test('topic: every subscriber gets every message published after it subscribed, in order', async () => {
      const name = uniq('tt');
      const pub = await t.topic(name, { codec: 'json' });
      const sub1 = (await t2.topic(name, { codec: 'json' })).subscribe();
      const sub2 = (await t2.topic(name, { codec: 'json' })).subscribe();
      await sleep(50); // a NATS subscription reaches the server
      for (let i = 0; i < 20; i++) await pub.publish({ i });
      for (const s of [sub1, sub2]) {
        for (let i = 0; i < 20; i++) assert.deepEqual(await within(s.receive({ timeout: 10_000 }), 'receive'), { i });
        assert.equal(s.tryReceive(), undefined);
        assert.equal(s.lost, 0);
      }
      await assert.rejects(sub1.receive({ timeout: 20 }), code(ErrorCodes.TIMEOUT));
      const ac = new AbortController();
      const pending = sub1.receive({ signal: ac.signal });
      ac.abort();
      await assert.rejects(pending, (e) => e.code === 'ABORT_ERR');
      sub1.close();
      assert.equal(sub1.closed, true);
      await assert.rejects(sub1.receive(), code(ErrorCodes.CLOSED));
      // Leaving a for-await loop ends the subscription.
      await pub.publish({ i: 99 });
      await within((async () => {
        for await (const v of sub2) {
          assert.deepEqual(v, { i: 99 });
          break;
        }
      })(), 'a for-await loop');
      assert.equal(sub2.closed, true);
      await assert.rejects(pub.publish(1n), (e) => e instanceof ShmkitError);
      pub.close();
      tr.remove.topic(name);
    });

    test('rpc: results, streams, errors with their code, unknown methods, timeouts and cancellation reach the handler', async () => {
      const name = uniq('tr');
      const seen = [];
      const handlers = {
        async add(a, b) { return a + b; },
        async *count(n) { for (let i = 0; i < n; i++) yield i; },
        async fail() { throw Object.assign(new Error('no luck'), { code: 'E_LUCK', detail: 7 }); },
        async wait(ms, ctx) {
          return new Promise((resolve, reject) => {
            const x = setTimeout(() => resolve('late'), ms);
            ctx.signal.addEventListener('abort', () => { clearTimeout(x); seen.push(ctx.signal.reason?.code); reject(ctx.signal.reason); });
          });
        },
      };
      const server1 = await t.serve(name, handlers);
      const client = await t2.rpcClient(name, { timeout: 10_000 });
      assert.equal(await within(client.add(2, 40), 'add'), 42);
      const items = [];
      await within((async () => {
        for await (const x of await client.count(100)) items.push(x);
      })(), 'a stream');
      assert.deepEqual(items, [...Array(100).keys()]);
      await assert.rejects(client.fail(), (e) => e.message === 'no luck' && e.code === 'E_LUCK' && e.detail === 7 && e.remote === true);
      await assert.rejects(client.nope(), code(ErrorCodes.UNKNOWN_METHOD));
      await assert.rejects(client.with({ timeout: 50 }).wait(5000), code(ErrorCodes.TIMEOUT));
      const ac = new AbortController();
      const call = client.with({ signal: ac.signal }).wait(5000);
      await sleep(50);
      ac.abort();
      await assert.rejects(call, (e) => e.code === 'ABORT_ERR');
      const until = Date.now() + 10_000;
      while (seen.length < 2 && Date.now() < until) await sleep(10);
      assert.deepEqual(seen.sort(), [ErrorCodes.ABORTED, ErrorCodes.TIMEOUT].sort(), 'the handler saw both cancellations');
      // A stream left early: the handler's signal aborts.
      const it = await within(client.count(1_000_000), 'a stream');
      assert.equal((await within(it.next(), 'its first item')).value, 0);
      await it.return();
      client.close();
      await server1.close();
      tr.remove.service(name);
    });

    test('rpc: notifications run their handler; a stream runs ahead of its consumer by its window at most', async () => {
      const name = uniq('tn');
      const noted = [];
      let produced = 0;
      const s = await t.serve(name, {
        async note(x) { noted.push(x); },
        async *many() { for (let i = 0; i < 1000; i++) { produced++; yield i; } },
      });
      const client = await t2.rpcClient(name, { timeout: 10_000, window: 4 });
      await within(client.notify('note', 'hello'), 'a notification');
      const until = Date.now() + 10_000;
      while (noted.length === 0 && Date.now() < until) await sleep(10);
      assert.deepEqual(noted, ['hello']);
      const it = await within(client.many(), 'a stream');
      assert.equal((await within(it.next(), 'its first item')).value, 0);
      await sleep(300); // the consumer takes nothing meanwhile
      assert.ok(produced <= 4 + 2, `the server produced ${produced} items for a window of 4`);
      const rest = [];
      await within((async () => {
        for await (const v of it) rest.push(v);
      })(), 'the rest of the stream');
      assert.equal(rest.length, 999);
      client.close();
      await s.close();
      tr.remove.service(name);
    });

    test('rpc: a pool of two servers shares the calls', async () => {
      const name = uniq('tp');
      const s1 = await t.serve(name, { async who() { await sleep(2); return 1; } });
      const s2 = await t2.serve(name, { async who() { await sleep(2); return 2; } });
      const client = await t.rpcClient(name, { timeout: 10_000 });
      const got = new Set(await within(Promise.all(Array.from({ length: 200 }, () => client.who())), 'pool calls'));
      assert.deepEqual([...got].sort(), [1, 2]);
      client.close();
      await s1.close();
      await s2.close();
      tr.remove.service(name);
    });

    test('map: get, set, revisions, compare-and-set, create-only and update-only, delete, keys with a prefix', async () => {
      const name = uniq('tm');
      const m = await t.map(name);
      const other = await t2.map(name);
      const r1 = await m.set('user:1', { n: 'ada' });
      assert.deepEqual(m.get('user:1'), { n: 'ada' });
      const e = m.getEntry('user:1');
      assert.equal(e.revision, r1);
      assert.equal(e.expiresAt, null);
      await assert.rejects(async () => m.set('user:1', { n: 'x' }, { ifRevision: r1 + 1000 }), (err) => err.code === ErrorCodes.CONFLICT && err.revision === r1);
      const r2 = await m.set('user:1', { n: 'bob' }, { ifRevision: r1 });
      assert.ok(r2 > r1);
      await assert.rejects(async () => m.set('user:1', 0, { ifAbsent: true }), code(ErrorCodes.EXISTS));
      await assert.rejects(async () => m.set('user:2', 0, { ifPresent: true }), code(ErrorCodes.NOT_FOUND));
      assert.ok((await m.set('user:2', 'two', { ifRevision: 0 })) > 0); // revisions grow per key (NATS: per map)
      await m.set('other', 1);
      // Another handle sees the writes (NATS: once its replica has them).
      const until = Date.now() + 10_000;
      while (other.get('user:1')?.n !== 'bob' && Date.now() < until) await sleep(10);
      assert.deepEqual(other.get('user:1'), { n: 'bob' });
      assert.deepEqual([...m.keys('user:')].sort(), ['user:1', 'user:2']);
      assert.deepEqual(new Map(m.entries('user:')), new Map([['user:1', { n: 'bob' }], ['user:2', 'two']]));
      assert.equal(m.size, 3);
      assert.equal(await m.delete('user:2'), true);
      assert.equal(await m.delete('user:2'), false);
      assert.equal(m.has('user:2'), false);
      await assert.rejects(async () => m.delete('user:1', { ifRevision: r1 }), code(ErrorCodes.CONFLICT));
      assert.equal(await m.clear(), 2);
      assert.equal(m.size, 0);
      assert.throws(() => m.get(42), code(ErrorCodes.INVALID_ARGUMENT));
      await assert.rejects(async () => m.set('k', 1n), (err) => err instanceof ShmkitError);
      m.close();
      other.close();
      await tr.remove.map(name, t);
    });

    test('map: increments from two handles at once end exact', async () => {
      const name = uniq('ti');
      const a = await t.map(name);
      const b = await t2.map(name);
      await Promise.all([a, b].map(async (m) => {
        for (let i = 0; i < 50; i++) await m.increment('n', 1);
      }));
      assert.equal(await a.increment('n', 0), 100);
      a.close();
      b.close();
      await tr.remove.map(name, t);
    });

    test('map: watch a key and a prefix; changes coalesce but the latest value is never missed', async () => {
      const name = uniq('tw');
      const m = await t.map(name);
      const w = m.watch('cfg:', { prefix: true });
      const one = m.watch('cfg:a');
      for (let i = 0; i < 50; i++) await m.set('cfg:a', i);
      await m.set('cfg:b', 'x');
      await m.set('zzz', 'not watched');
      await m.delete('cfg:b');
      const last = new Map();
      while (!(last.get('cfg:a') === 49 && last.get('cfg:b') === 'deleted')) {
        const c = (await within(w.next(), 'prefix watch')).value;
        assert.notEqual(c.key, 'zzz');
        last.set(c.key, c.type === 'set' ? c.value : 'deleted');
      }
      let c;
      do c = (await within(one.next(), 'key watch')).value;
      while (c.value !== 49);
      const initial = m.watch(undefined, { initial: true });
      assert.equal((await within(initial.next(), 'initial')).value.type, 'set');
      for (const x of [w, one, initial]) x.close();
      assert.deepEqual(await within(w.next(), 'a closed watch'), { value: undefined, done: true });
      const ac = new AbortController();
      const aborted = m.watch('x', { signal: ac.signal });
      const n = aborted.next();
      ac.abort();
      await assert.rejects(n, (e) => e.code === 'ABORT_ERR');
      m.close();
      await tr.remove.map(name, t);
    });
  });
}

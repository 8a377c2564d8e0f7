// shmkit/nats against real nats-servers: what loads when, names and bad input, the bridge's
// bounded and counted buffering while NATS is away, "two machines" (a cluster of two servers
// with a bridge process on each: topics, an RPC pool, a mirrored map), and a nats-server killed
// and restarted under traffic. The shared conformance suite of the transports is test/36.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { ErrorCodes, Mutex, ShmkitError, SharedMap, Topic, rpcClient, serve } from 'shmkit';
import { cleanupAll, killCliChildren, ROOT, runCli, sleep, startCli, uniq, until, watchdog } from './helpers.mjs';
import { natsMissing, startCluster, startProxy, startServer } from './fixtures/nats-servers.mjs';

const code = (c) => (e) => e instanceof ShmkitError && e.code === c;
const missing = await natsMissing();
const nats = missing ? null : await import('shmkit/nats');

after(() => {
  killCliChildren();
  cleanupAll();
});

/** The bridge object's state, as `shmkit inspect --json` reads it from shared memory. */
async function bridgeState(name) {
  const r = await runCli(['inspect', name, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).state;
}

describe('shmkit/nats: loading and names', () => {
  test('shmkit never loads a NATS package; shmkit/nats loads them when a transport is made', () => {
    const probe = (code) => spawnSync(process.execPath, ['-e', code], { cwd: ROOT, encoding: 'utf8' });
    const loaded = "console.log(Object.keys(require.cache).some((k) => k.includes('@nats-io')))";
    assert.equal(probe(`require('shmkit'); ${loaded}`).stdout.trim(), 'false');
    assert.equal(probe(`require('shmkit/nats'); ${loaded}`).stdout.trim(), 'false', 'not even by importing shmkit/nats');
    const made = probe(`require('shmkit/nats').natsTransport({ servers: 'nats://127.0.0.1:1', connectTimeout: 500 }).catch((e) => { console.log(e.code); ${loaded} })`);
    assert.equal(made.stdout.trim(), 'ERR_SHMKIT_REFUSED\ntrue', made.stderr);
  });

  test('map keys are escaped into one KV token, prefixes kept, and back', { skip: missing ?? false }, () => {
    const keys = ['plain-Key9', 'a.b', 'user:1/x=y', 'ünï €', 'under_score', ' ', '>', '*.*'];
    for (const k of keys) {
      const e = nats.escapeKey(k);
      assert.match(e, /^[A-Za-z0-9_-]+$/);
      assert.equal(nats.unescapeKey(e), k);
      for (let i = 1; i < k.length; i++) assert.ok(e.startsWith(nats.escapeKey(k.slice(0, i))) || k.codePointAt(i - 1) > 0xffff);
    }
    assert.equal(nats.unescapeKey('not.ours'), null);
    assert.equal(nats.unescapeKey('_5f'), null, 'lower-case hex is not an escape we make');
  });
});

/** A nats-server and a transport on it for the tests of one describe: started before them, stopped after. */
function useServer() {
  const env = { server: null, t: null };
  before(async () => {
    env.server = await startServer();
    env.t = await nats.natsTransport({ servers: env.server.url });
  });
  after(async () => {
    await env.t?.close();
    await env.server?.stop();
  });
  return env;
}

describe('shmkit/nats: bad input and semantics that differ', { skip: missing ?? false }, () => {
  const env = useServer();

  test('typed errors name the parameter; nothing is half done', async () => {
    await assert.rejects(nats.natsTransport({ servers: 42 }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && /options\.servers/.test(e.message));
    await assert.rejects(nats.natsTransport({ prefix: 'a.b' }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && /options\.prefix/.test(e.message));
    const nobody = (await import('../bench/fanout-peers.mjs')).freePort;
    await assert.rejects(nats.natsTransport({ servers: `nats://127.0.0.1:${await nobody()}`, connectTimeout: 2000 }), code(ErrorCodes.REFUSED));
    await assert.rejects(env.t.topic('a..b'), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && /name/.test(e.message));
    await assert.rejects(env.t.topic('ok', { subject: 'x.*' }), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && /options\.subject/.test(e.message));
    await assert.rejects(env.t.topic('h', { history: 10 }), (e) => e.code === ErrorCodes.UNSUPPORTED && e.argument === 'options.history');
    const topic = await env.t.topic(uniq('nb'));
    assert.throws(() => topic.subscribe({ from: 'history' }), (e) => e.code === ErrorCodes.UNSUPPORTED);
    await assert.rejects(topic.publish(Buffer.alloc(env.t.maxPayload + 1)), code(ErrorCodes.TOO_LARGE));
    await assert.rejects(topic.publish('not bytes'), code(ErrorCodes.INVALID_ARGUMENT));
    topic.close();
    await assert.rejects(env.t.map(uniq('nb'), { eviction: 'lru' }), (e) => e.code === ErrorCodes.UNSUPPORTED && e.argument === 'options.eviction');
    const m = await env.t.map(uniq('nb'));
    await assert.rejects(m.set('k', 1, { ttl: 100 }), (e) => e.code === ErrorCodes.UNSUPPORTED && e.argument === 'options.ttl');
    assert.equal(m.has('k'), false, 'nothing was written');
    await assert.rejects(m.set('x'.repeat(65), 1), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && /key/.test(e.message));
    await m.destroy();
    await assert.rejects(env.t.serve('s', null), (e) => e.code === ErrorCodes.INVALID_ARGUMENT && /handlers/.test(e.message));
  });

  test('a call no server takes fails with ERR_SHMKIT_REFUSED at once; a server that comes later is called', async () => {
    const name = uniq('nr');
    const c = await env.t.rpcClient(name, { timeout: 10_000 });
    await assert.rejects(watchdog(c.ping(), 10_000, 'call with no server'), code(ErrorCodes.REFUSED));
    const s = await env.t.serve(name, { async ping() { return 'pong'; } });
    assert.equal(await watchdog(c.ping(), 10_000, 'call'), 'pong');
    c.close();
    await s.close();
  });

  test('any NATS client can call a service: the method and timeout in headers, the arguments and result as JSON', async () => {
    const name = uniq('ni');
    const s = await env.t.serve(name, {
      async add(a, b) { return a + b; },
      async fail() { throw Object.assign(new Error('nope'), { code: 'E_NOPE' }); },
      async slow(ctx) { await new Promise((r) => ctx.signal.addEventListener('abort', r)); return ctx.signal.reason.code; },
    });
    const { connect, headers } = await import('@nats-io/transport-node');
    const nc = await connect({ servers: env.server.url });
    try {
      const call = (method, args, extra = {}) => {
        const h = headers();
        if (method !== null) h.set('Shmkit-Method', method);
        for (const [k, v] of Object.entries(extra)) h.set(k, v);
        return nc.request(`shmkit.rpc.${name}`, JSON.stringify(args), { headers: h, timeout: 10_000 });
      };
      const r = await call('add', [2, 3]);
      assert.equal(r.string(), '5');
      assert.equal(r.headers.get('Shmkit-Kind'), 'result');
      const e = await call('fail', []);
      assert.equal(e.headers.get('Shmkit-Kind'), 'error');
      assert.equal(e.headers.get('Shmkit-Error-Code'), 'E_NOPE');
      assert.equal(JSON.parse(e.string()).message, 'nope');
      const timedOut = await call('slow', [], { 'Shmkit-Timeout': '50' }); // the handler's signal aborts when it passes
      assert.equal(timedOut.headers.get('Shmkit-Error-Code'), ErrorCodes.TIMEOUT);
      const bad = await call(null, []);
      assert.equal(bad.headers.get('Shmkit-Error-Code'), ErrorCodes.CORRUPT);
      const garbage = await call('add', 'not an array');
      assert.equal(garbage.headers.get('Shmkit-Kind'), 'error');
      nc.publish(`shmkit.rpc.${name}`, 'junk', { headers: headers() }); // no method, no reply: dropped
      assert.equal((await call('add', [1, 1])).string(), '2', 'the server goes on');
    } finally {
      await nc.close();
      await s.close();
    }
  });

  test('a slow subscriber keeps the newest maxPending messages and counts the rest as lost', async () => {
    const topic = await env.t.topic(uniq('ns'), { codec: 'json', maxPending: 10 });
    const sub = topic.subscribe();
    await env.t.connection.flush();
    for (let i = 0; i < 50; i++) await topic.publish(i);
    await env.t.connection.flush();
    await until(() => sub.lost + sub.lag === 50, 'all 50 messages arrived');
    assert.equal(sub.lost, 40);
    const got = [];
    for (let v = sub.tryReceive(); v !== undefined; v = sub.tryReceive()) got.push(v);
    assert.deepEqual(got, [...Array(10).keys()].map((i) => i + 40));
    topic.close();
  });
});

describe('the bridge', { skip: missing ?? false }, () => {
  const env = useServer();

  test('while NATS is away, outgoing messages wait in a bounded buffer; the oldest beyond it are dropped and counted; the rest arrive in order', async () => {
    const proxy = await startProxy(env.server.url); // the bridge's way to NATS, cut at will
    const name = uniq('bt');
    const local = Topic.create(name, { codec: 'json' });
    const b = nats.bridge({ name: uniq('br'), nats: { servers: proxy.url, reconnectWait: 50, maxReconnectWait: 200 }, topics: [{ local: name, subject: `buf.${name}`, direction: 'out' }], maxBuffered: 10 });
    const watcher = await nats.natsTransport({ servers: env.server.url });
    try {
      const sub = (await watcher.topic('x', { codec: 'json', subject: `buf.${name}` })).subscribe();
      await watcher.connection.flush();
      for (let i = 0; i < 25; i++) await local.publish(i); // NATS was never there
      await until(() => b.stats().topics[0].buffered + b.stats().topics[0].dropped === 25, 'the bridge took every message');
      assert.deepEqual([b.stats().topics[0].buffered, b.stats().topics[0].dropped], [10, 15]);
      const st = await bridgeState(b.name);
      assert.equal(st.connected, false);
      await proxy.up();
      await watchdog(b.ready, 20_000, 'the bridge connects');
      const got = [];
      while (got.length < 10) got.push(await watchdog(sub.receive(), 10_000, 'buffered messages'));
      assert.deepEqual(got, [...Array(10).keys()].map((i) => i + 15));
      // Connected: straight through. Cut off again: counted again.
      await local.publish(100);
      assert.equal(await watchdog(sub.receive(), 10_000, 'a live message'), 100);
      await proxy.down();
      await until(() => !b.connected, 'the bridge sees the connection gone');
      for (let i = 0; i < 5; i++) await local.publish(200 + i);
      await until(() => b.stats().topics[0].buffered === 5, 'buffered while away');
      await proxy.up();
      for (let i = 0; i < 5; i++) assert.equal(await watchdog(sub.receive(), 20_000, 'after the reconnect'), 200 + i);
      const s = b.stats();
      assert.equal(s.topics[0].dropped, 15);
      assert.equal(s.topics[0].out, 16);
      assert.ok(s.disconnects >= 1 && s.reconnects >= 1);
    } finally {
      await b.close();
      await watcher.close();
      await proxy.close();
      local.close();
      Topic.unlink(name);
    }
    assert.equal((await runCli(['inspect', b.name])).code, 1, 'the bridge removed its object');
  });
});

describe('the bridge under stress (regressions of the review)', { skip: missing ?? false }, () => {
  const env = useServer();

  test('a full \'block\' topic flooded locally while messages come from NATS: nothing freezes, nothing comes back', async () => {
    const name = uniq('bd');
    const local = Topic.create(name, { codec: 'json', capacity: 16 });
    const b = nats.bridge({ name: uniq('br'), nats: env.t, topics: [{ local: name }] });
    try {
      await watchdog(b.ready, 20_000, 'bridge');
      const remote = await env.t.topic('r', { codec: 'json', subject: `shmkit.topic.${name}` });
      const seen = remote.subscribe();
      await env.t.connection.flush();
      const flood = (async () => {
        for (let i = 0; i < 3000; i++) await local.publish({ local: i });
      })();
      for (let i = 0; i < 300; i++) {
        await remote.publish({ remote: i });
        if (i % 30 === 0) await sleep(1);
      }
      await watchdog(flood, 60_000, 'the local publisher (it must not freeze)');
      await until(() => b.stats().topics[0].in === 300 && b.stats().topics[0].out === 3000, 'every message forwarded', 60_000);
      // On NATS: the 300 published there (once each: none came back through the bridge) and the 3000 local ones.
      let locals = 0;
      let remotes = 0;
      while (locals < 3000 || remotes < 300) {
        const v = await watchdog(seen.receive(), 10_000, 'the messages on NATS');
        if (v.local !== undefined) locals++;
        else remotes++;
      }
      await sleep(300);
      assert.equal(seen.tryReceive(), undefined, 'nothing more: no message went back to NATS');
    } finally {
      await b.close();
      local.close();
      Topic.unlink(name);
    }
  });

  test('two bridges of one local topic on one machine: one forwards, the other waits and takes over when it stops', async () => {
    const name = uniq('b2');
    const local = Topic.create(name, { codec: 'json' });
    const sub = local.subscribe();
    const b1 = nats.bridge({ name: uniq('br'), nats: env.t, topics: [{ local: name }] });
    const b2 = nats.bridge({ name: uniq('br'), nats: env.t, topics: [{ local: name }] });
    const remote = await env.t.topic('r', { codec: 'json', subject: `shmkit.topic.${name}` });
    const onNats = remote.subscribe();
    try {
      await watchdog(Promise.all([b1.ready, b2.ready]), 20_000, 'bridges');
      assert.deepEqual([b1.stats().topics[0].active, b2.stats().topics[0].active], [true, false]);
      await env.t.connection.flush();
      await remote.publish({ from: 'remote' });
      assert.deepEqual(await watchdog(sub.receive(), 10_000, 'into the local topic'), { from: 'remote' });
      await local.publish({ from: 'local' });
      assert.deepEqual(await watchdog(onNats.receive(), 10_000, 'out to NATS'), { from: 'remote' }); // its own publish
      assert.deepEqual(await watchdog(onNats.receive(), 10_000, 'out to NATS'), { from: 'local' });
      assert.deepEqual(await watchdog(sub.receive(), 10_000, 'the local one, locally'), { from: 'local' });
      await sleep(300);
      assert.equal(sub.tryReceive(), undefined, 'one copy locally');
      assert.equal(onNats.tryReceive(), undefined, 'one copy on NATS');
      await b1.close();
      await until(() => b2.stats().topics[0].active, 'the second bridge takes the topic over');
      await local.publish({ from: 'local', n: 2 });
      assert.deepEqual(await watchdog(onNats.receive(), 10_000, 'through the second bridge'), { from: 'local', n: 2 });
      // The claim's name removed under its holder (shmkit rm --force): it steps down; one bridge forwards at a time.
      const b3 = nats.bridge({ name: uniq('br'), nats: env.t, topics: [{ local: name }] });
      let stepped = false;
      b2.on('error', (e) => (stepped ||= e.cause?.code === ErrorCodes.BUSY));
      try {
        await watchdog(b3.ready, 20_000, 'a third bridge');
        Mutex.unlink(`${name}.bridge`);
        await until(() => stepped, 'the holder steps down');
        await until(() => existsSync(`/dev/shm/shmkit-${name}.bridge`) && [b2, b3].filter((b) => b.stats().topics[0].active).length === 1, 'one bridge takes a new claim');
        await sleep(600);
        assert.equal([b2, b3].filter((b) => b.stats().topics[0].active).length, 1, 'never two');
      } finally {
        await b3.close();
      }
    } finally {
      await b1.close();
      await b2.close();
      remote.close();
      local.close();
      Topic.unlink(name);
    }
  });

  test('a message the local topic refuses is counted and skipped; the next ones arrive', async () => {
    const name = uniq('bh');
    const local = Topic.create(name, { codec: 'bytes', maxMessageSize: 100 });
    const sub = local.subscribe();
    const b = nats.bridge({ name: uniq('br'), nats: env.t, topics: [{ local: name, direction: 'in' }] });
    try {
      await watchdog(b.ready, 20_000, 'bridge');
      await sleep(100);
      const remote = await env.t.topic('r', { subject: `shmkit.topic.${name}` });
      await remote.publish(Buffer.alloc(500));
      await remote.publish(Buffer.from('fits'));
      assert.equal((await watchdog(sub.receive(), 10_000, 'the next message')).toString(), 'fits');
      assert.equal(b.stats().topics[0].errors, 1);
    } finally {
      await b.close();
      local.close();
      Topic.unlink(name);
    }
  });

  test('a value another writer put in a bucket that the codec cannot decode: the replica and the mirror go on', async () => {
    const name = uniq('bg');
    const m = await env.t.map(name);
    const raw = await env.t.map(name, { codec: 'utf8' });
    const errors = [];
    m.on('error', (e) => errors.push(e));
    try {
      await m.set('a', 1);
      await raw.set('bad', '{not json');
      const w = m.watch();
      await m.set('a', 2);
      assert.equal(m.get('a'), 2, 'the replica keeps following');
      assert.throws(() => m.get('bad'), code(ErrorCodes.DECODE));
      const changes = [];
      for (;;) {
        try {
          const c = (await watchdog(w.next(), 10_000, 'watch')).value;
          changes.push(`${c.key}=${c.value}`);
          if (c.key === 'a') break;
        } catch (e) {
          assert.equal(e.code, ErrorCodes.DECODE);
        }
      }
      assert.deepEqual(changes, ['a=2']);
      w.close();
    } finally {
      raw.close();
      await m.destroy();
    }
  });

  test('delete and ifPresent right after another handle\'s write see it (they ask the server)', async () => {
    const name = uniq('bl');
    const a = await env.t.map(name);
    const other = await nats.natsTransport({ servers: env.server.url });
    const b = await other.map(name);
    try {
      for (let i = 0; i < 50; i++) {
        await a.set(`k${i}`, i);
        assert.equal(await b.delete(`k${i}`), true);
        await a.set(`p${i}`, i);
        await b.set(`p${i}`, -i, { ifPresent: true });
      }
    } finally {
      b.close();
      await other.close();
      await a.destroy();
    }
  });

  test('a caller cannot make a server stream without end (window and credit capped), and a server that stops answers its running calls', async () => {
    const name = uniq('bw');
    const s = await env.t.serve(name, {
      async *nums() { for (let i = 0; ; i++) yield i; },
      async echo(x) { return x; },
      async slow() { await sleep(60_000); },
    });
    const { connect, headers } = await import('@nats-io/transport-node');
    const nc = await connect({ servers: env.server.url });
    const c = await env.t.rpcClient(name);
    try {
      let items = 0;
      const inbox = `raw.${name}`;
      nc.subscribe(`${inbox}.*`, { callback: () => items++ });
      const h = headers();
      h.set('Shmkit-Method', 'nums');
      h.set('Shmkit-Window', '4294967295');
      nc.publish(`shmkit.rpc.${name}`, '[]', { reply: `${inbox}.1`, headers: h });
      await sleep(1000);
      assert.equal(await watchdog(c.echo(5), 10_000, 'a call while the stream runs'), 5, 'the server still answers');
      assert.ok(items <= 4096 + 2, `items sent without credit: ${items}`);
      const pending = c.slow(); // no timeout
      await sleep(200);
      await s.closeNow();
      await assert.rejects(watchdog(pending, 10_000, 'a running call when its server stops'), code(ErrorCodes.CLOSED));
    } finally {
      c.close();
      await nc.close();
      await s.closeNow();
    }
  });

  test('a map whose watch consumer the server removed catches up (the watchdog remakes the watch)', async () => {
    const name = uniq('bc');
    const m = await env.t.map(name);
    const other = await nats.natsTransport({ servers: env.server.url });
    const w = await other.map(name);
    try {
      await w.set('x', 1);
      await until(() => m.get('x') === 1, 'the replica follows');
      const { jetstreamManager } = await import('@nats-io/jetstream');
      const jsm = await jetstreamManager(env.t.connection);
      await watchdog((async () => {
        for await (const ci of jsm.consumers.list(`KV_${m.bucket}`)) await jsm.consumers.delete(`KV_${m.bucket}`, ci.name);
      })(), 10_000, 'deleting the watch consumers');
      await w.set('x', 2);
      await until(() => m.get('x') === 2, 'the replica catches up', 40_000);
    } finally {
      w.close();
      await other.close();
      await m.destroy();
    }
  });

  test('SIGTERM stops a bridge at once, even with a local client connected to an imported service', async () => {
    const local = uniq('bs');
    const remote = uniq('rs');
    const s = await env.t.serve(remote, { async ping() { return 'pong'; } });
    const p = startCli(['bridge', '--nats', env.server.url, '--name', uniq('br'), '--import', `${local}=${remote}`], 60_000);
    await p.waitFor(/connected to NATS/);
    const c = await rpcClient(local, { timeout: 10_000 });
    try {
      assert.equal(await watchdog(c.ping(), 10_000, 'a call through the import'), 'pong');
      const t0 = Date.now();
      p.child.kill('SIGTERM');
      const r = await p.done;
      assert.equal(r.code, 0, r.stderr);
      assert.ok(Date.now() - t0 < 5000, 'it did not wait for the client to leave');
    } finally {
      c.close();
      await s.close();
    }
  });
});

describe('two machines: a cluster of two nats-servers with a bridge process on each', { skip: missing ?? false }, () => {
  let cluster;
  const A = { topic: uniq('at'), service: uniq('as'), map: uniq('am'), bridge: uniq('ab') };
  const B = { topic: uniq('bt'), service: uniq('bs'), map: uniq('bm'), bridge: uniq('bb') };
  const subject = `shmkit.test.${uniq('s')}`;
  const remoteService = uniq('rs');
  const remoteMap = uniq('rm');
  let bridgeA;
  let bridgeB;
  let topicA;
  let topicB;
  let mapA;
  let servers = [];

  const startBridge = (url, m, extra) => {
    const p = startCli(['bridge', '--nats', url, '--name', m.bridge, '--topic', `${m.topic}=${subject}`, ...extra], 300_000);
    return p;
  };

  before(async () => {
    cluster = await startCluster();
    topicA = Topic.create(A.topic, { codec: 'json', capacity: 4096 });
    topicB = Topic.create(B.topic, { codec: 'json', capacity: 4096 });
    mapA = SharedMap.create(A.map);
    // The pool on machine A: two servers of one name.
    servers = [1, 2].map((id) => serve(A.service, { async who(x) { return { id, x }; } }));
    bridgeA = startBridge(cluster.a.url, A, ['--export', `${A.service}=${remoteService}`, '--map-out', `${A.map}=${remoteMap}`]);
    bridgeB = startBridge(cluster.b.url, B, ['--import', `${B.service}=${remoteService}`, '--map-in', `${B.map}=${remoteMap}`]);
    await Promise.all([bridgeA.waitFor(/connected to NATS/), bridgeB.waitFor(/connected to NATS/)]);
  });

  after(async () => {
    for (const b of [bridgeA, bridgeB]) b?.child.kill('SIGTERM');
    await Promise.all([bridgeA?.done, bridgeB?.done].filter(Boolean).map((d) => d.catch(() => {})));
    for (const s of servers) await s.closeNow();
    for (const h of [topicA, topicB, mapA]) h?.close();
    for (const n of [A.topic, B.topic]) Topic.unlink(n);
    for (const n of [A.map, B.map]) SharedMap.unlink(n);
    await cluster?.stop();
  });

  test('a publisher on A reaches subscribers on B and back, and no message comes back to where it came from', async () => {
    const onA = topicA.subscribe();
    const onB = topicB.subscribe();
    await sleep(300); // the subject's interest crosses the route
    await topicA.publish({ from: 'A', i: 1 });
    assert.deepEqual(await watchdog(onB.receive(), 20_000, 'A to B'), { from: 'A', i: 1 });
    await topicB.publish({ from: 'B', i: 2 });
    assert.deepEqual(await watchdog(onA.receive(), 20_000, 'A sees its own'), { from: 'A', i: 1 });
    assert.deepEqual(await watchdog(onA.receive(), 20_000, 'B to A'), { from: 'B', i: 2 });
    assert.deepEqual(await watchdog(onB.receive(), 20_000, 'B sees its own'), { from: 'B', i: 2 });
    await sleep(500);
    assert.equal(onA.tryReceive(), undefined, 'no echo on A');
    assert.equal(onB.tryReceive(), undefined, 'no echo on B');
    onA.close();
    onB.close();
  });

  test('an RPC call from B is answered by the server pool on A', async () => {
    const c = await rpcClient(B.service, { timeout: 20_000, connectTimeout: 20_000 });
    const ids = new Set();
    const calls = await watchdog(Promise.all(Array.from({ length: 100 }, (_, i) => c.who(i))), 60_000, 'calls across');
    calls.forEach((r, i) => {
      assert.equal(r.x, i);
      ids.add(r.id);
    });
    assert.deepEqual([...ids].sort(), [1, 2], 'both servers of the pool answered');
    c.close();
  });

  test('a map written on A is read and watched on B', async () => {
    mapA.set('color', 'red');
    const mapB = SharedMap.openOrCreate(B.map);
    try {
      await until(() => mapB.get('color') === 'red', 'the mirrored value on B', 30_000);
      const w = mapB.watch('color');
      mapA.set('color', 'blue');
      let c;
      do c = (await watchdog(w.next(), 30_000, 'watch on B')).value;
      while (c.value !== 'blue');
      mapA.delete('color');
      do c = (await watchdog(w.next(), 30_000, 'delete on B')).value;
      while (c.type !== 'delete');
      w.close();
    } finally {
      mapB.close();
    }
  });

  test('shmkit ls and top show the bridges', async () => {
    const ls = await runCli(['ls', '--json']);
    const { objects } = JSON.parse(ls.stdout);
    const mine = objects.filter((o) => o.kind === 'bridge' && [A.bridge, B.bridge].includes(o.name));
    assert.equal(mine.length, 2, ls.stdout);
    const top = await runCli(['top', A.bridge, '--count', '1', '--json']);
    const row = JSON.parse(top.stdout.trim().split('\n')[0]).objects[0];
    assert.equal(row.kind, 'bridge');
    assert.equal(row.bridge.connected, true);
    assert.ok(row.bridge.out >= 1);
  });

  test('a nats-server killed and restarted: the bridge reconnects, local traffic never stops, and only messages in flight at the kill can be lost', async (t) => {
    const onA = topicA.subscribe();
    const onB = topicB.subscribe();
    let published = 0;
    let stop = false;
    const publisher = (async () => {
      while (!stop) {
        await topicA.publish({ i: published++ });
        await sleep(1);
      }
    })();
    const localGot = [];
    const local = (async () => {
      while (!(stop && localGot.length === published)) {
        const v = await onA.receive({ timeout: 200 }).catch((e) => (e.code === ErrorCodes.TIMEOUT ? null : Promise.reject(e)));
        if (v !== null) localGot.push(v.i);
      }
    })();
    await sleep(300);
    await cluster.kill('a');
    const killedAt = published;
    await sleep(1000); // A's bridge buffers; local traffic goes on
    const whileDown = published - killedAt;
    await cluster.restart('a');
    await bridgeA.waitFor(/NATS connection lost[\s\S]*connected to NATS/);
    await sleep(1000);
    stop = true;
    await watchdog(publisher, 30_000, 'publisher');
    await watchdog(local, 30_000, 'local subscriber');
    assert.deepEqual(localGot, [...Array(published).keys()], 'every message reached the local subscriber, in order');
    assert.ok(whileDown > 100, `published while the server was down: ${whileDown}`);
    // On B: every message published after the restart, and every buffered one; at most those in
    // flight when the server died are missing.
    const remote = new Set();
    for (;;) {
      const v = await onB.receive({ timeout: 5000 }).catch(() => null);
      if (v === null) break;
      remote.add(v.i);
    }
    const st = await bridgeState(A.bridge);
    assert.equal(st.dropped, 0);
    assert.ok(st.disconnects >= 1 && st.reconnects >= 1, JSON.stringify(st));
    const missingOnB = [...Array(published).keys()].filter((i) => !remote.has(i));
    assert.ok(missingOnB.every((i) => i < killedAt + 5 && i >= killedAt - 500), `missing on B: ${missingOnB.length} (${missingOnB.slice(0, 10)}...), killed at ${killedAt}`);
    assert.ok(missingOnB.length < 500, `lost in flight: ${missingOnB.length}`);
    t.diagnostic(`published ${published}, ${whileDown} while the server was down; missing on B: ${missingOnB.length}, killed at ${killedAt}`);
    onA.close();
    onB.close();
  });
});

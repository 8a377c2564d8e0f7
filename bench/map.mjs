#!/usr/bin/env node
// Shared map benchmark: get and set of 16-byte keys with 64 B and 1 KiB values on a shmkit
// SharedMap, from one process and from two processes at once, against the stores a Node user would
// pick instead.
//
//   node bench/map.mjs              3 interleaved repetitions (about 3 minutes)
//   node bench/map.mjs --quick      1 repetition, shorter trials, 1 M operations for RSS (< 1 minute)
//   node bench/map.mjs --json FILE  also write the rows as JSON
//   --reps N                        repetitions
//   --only a,b                      these transports only (ids: shmkit, shmkit-json, redis,
//                                   redis-pipeline, lmdb, lmdb-nosync, map)
//
// Keys: `key:` and 12 digits, 16 bytes; 20,000 of them, all set before a trial measures. Values:
// 64 B or 1 KiB Buffers that hold their key, so every value read is checked (its length and key),
// and at the end of each trial every key is read back and compared whole with what was written.
// Operations: get; set; 90 % get / 10 % set. Two processes: two child processes on the same store
// at once, sets on disjoint halves of the keys, gets on all of them; the figure is the sum of the
// two processes' operations per second. Each trial is a fresh process (this program, run with
// --trial; --worker for the two children), with a warm-up before each measured run.
// Stores in the same run, same keys and values:
// - shmkit SharedMap, codec 'bytes' (Buffers in, a Buffer copy out); and codec 'json' (a small
//   object as value) for get and set at 64 B, to show what the codec costs;
// - Redis over a Unix socket, a redis-server of the trial's own without persistence (Debian:
//   redis-server), client ioredis (a devDependency), Buffers (getBuffer): one call at a time, each
//   awaited, and pipelined, 100 commands per pipeline (operations per second count commands);
// - lmdb-js (npm package lmdb, a devDependency), open({ path, encoding: 'binary' }) with lmdb's
//   default durability (on Linux overlappingSync: putSync returns once its transaction is
//   committed and visible, and LMDB flushes each commit to disk, overlapping the next one); the
//   lmdb-nosync rows add noSync: true (committed, never flushed by LMDB);
// - a JavaScript Map in one process, the limit: get hands back the stored Buffer, no copy.
// Ratios are against Redis one call at a time, same size and number of processes.
// RSS: 10 M operations (90 % get / 10 % set, values switching between 64 B and 1 KiB) on one map
// in one process, RSS sampled after the first 10 % and at the end, each time after a full GC (the
// trial runs with node --expose-gc), and after each tenth in between to show the trend.
// A peer whose server or client library is missing is skipped, with what to install.
import { fork } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { peerStatus, startRedis } from './fanout-peers.mjs';
import { benchArgs, fmt, machine, median, ratio, table, trial } from './lib.mjs';

const SELF = fileURLToPath(import.meta.url);
const KEYS = 20_000; // the keys of a trial
const STRIDE = 7919; // the walk over the keys: prime, so it visits every key of a range once per cycle
const PIPELINE = 100; // commands per Redis pipeline
const MAP_OPTIONS = { maxEntries: 200_000, valueBytes: 256 << 20, maxValueSize: 4096, maxKeyBytes: 64 };
const RSS_KEYS = 50_000;
const RSS_FLAT_MIB = 5;
const OPS = ['get', 'set', 'mix'];
const OP_LABEL = { get: 'get', set: 'set', mix: '90 % get / 10 % set' };

const key = (i) => `key:${String(i).padStart(12, '0')}`;

// A value: its key in bytes 0-15, the variant ('A' as first set, 'B' as set by a measured run) in
// byte 16, then a filler of the key's own. For the json codec, an object of 64 bytes as JSON.
function bytesValue(i, variant, size, into = Buffer.allocUnsafe(size)) {
  into.write(key(i), 0, 'latin1');
  into[16] = variant.charCodeAt(0);
  into.fill(97 + (i % 26), 17);
  return into;
}
function jsonValue(i, variant) {
  const o = { n: i, v: variant, s: '' };
  o.s = 'x'.repeat(64 - JSON.stringify(o).length);
  return o;
}
/** The quick check of a value read for key i: present, its length, the last two digits of its key. */
const okBytes = (size) => (v, i) => v !== undefined && v !== null && v.length === size && v[15] === 48 + (i % 10) && v[14] === 48 + (((i / 10) | 0) % 10);
const okJson = (v, i) => v !== undefined && v !== null && v.n === i;

async function loadSharedMap() {
  const shmkit = await import('../dist/index.js');
  const SharedMap = shmkit.SharedMap ?? shmkit.default?.SharedMap;
  if (typeof SharedMap !== 'function') throw new Error('dist/index.js exports no SharedMap: build shmkit first (`npm run build:ts`)');
  return SharedMap;
}

function unlinkQuietly(SharedMap, name) {
  try {
    SharedMap.unlink(name);
  } catch {}
}

// Transports --------------------------------------------------------------------------------------

const ALL = [
  { id: 'shmkit', label: 'shmkit SharedMap, bytes codec', json: ['shmkit', 'bytes'] },
  { id: 'shmkit-json', label: 'shmkit SharedMap, json codec (64 B object)', json: ['shmkit', 'json'], ops: ['get', 'set'], sizes: [64], procs: [1] },
  { id: 'redis', label: 'Redis (ioredis), Unix socket, one call at a time', json: ['redis', 'one_at_a_time'], peer: 'redis', module: 'ioredis' },
  { id: 'redis-pipeline', label: `Redis (ioredis), Unix socket, pipelined ${PIPELINE} per batch`, json: ['redis', `pipeline_${PIPELINE}`], peer: 'redis', module: 'ioredis' },
  { id: 'lmdb', label: 'lmdb-js get / putSync (defaults: every commit flushed)', json: ['lmdb', 'default'], module: 'lmdb' },
  { id: 'lmdb-nosync', label: 'lmdb-js putSync, noSync (commits not flushed)', json: ['lmdb', 'nosync'], module: 'lmdb', ops: ['set', 'mix'] },
  { id: 'map', label: 'JavaScript Map, one process (the limit)', json: ['js_map', 'in_process'], procs: [1] },
];
const base = (id) => (id.startsWith('shmkit') ? 'shmkit' : id.startsWith('redis') ? 'redis' : id.startsWith('lmdb') ? 'lmdb' : id);

/** Whether transport t can run here: `{ ok: true }`, or `{ ok: false, reason }` with what to install. */
async function status(t) {
  if (t.peer) {
    const s = await peerStatus(t.peer);
    if (!s.ok) return s;
  }
  if (t.module) {
    try {
      await import(t.module);
    } catch (e) {
      const why = e?.code === 'ERR_MODULE_NOT_FOUND' ? 'not installed' : `does not load (${String(e?.message ?? e).split('\n')[0]})`;
      return { ok: false, reason: `npm package ${t.module} ${why}: \`npm install\` in shmkit's folder installs it (a devDependency), or \`npm install --no-save ${t.module}\`` };
    }
  }
  if (base(t.id) === 'shmkit') {
    try {
      await loadSharedMap();
    } catch (e) {
      return { ok: false, reason: e.message };
    }
  }
  return { ok: true };
}

// The stores, in a trial: setup() in the trial's process (create and fill), client() in each
// process that measures --------------------------------------------------------------------------

/**
 * Creates the store of a trial and sets every key to its 'A' value. Returns
 * { address, handle (for a client in this process), close() }.
 */
async function setup(id, size, name) {
  const b = base(id);
  if (b === 'shmkit') {
    const SharedMap = await loadSharedMap();
    const json = id === 'shmkit-json';
    const m = SharedMap.create(name, { ...MAP_OPTIONS, codec: json ? 'json' : 'bytes' });
    try {
      for (let i = 0; i < KEYS; i++) m.set(key(i), json ? jsonValue(i, 'A') : bytesValue(i, 'A', size));
    } catch (e) {
      try { m.close(); } catch {}
      unlinkQuietly(SharedMap, name);
      throw e;
    }
    return {
      address: name,
      handle: m,
      close() {
        try {
          m.close();
        } finally {
          SharedMap.unlink(name);
        }
      },
    };
  }
  if (b === 'redis') {
    const server = await startRedis();
    const { Redis } = await import('ioredis');
    const r = new Redis({ path: server.address, lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await r.connect();
      for (let i = 0; i < KEYS; i += 1000) {
        const p = r.pipeline();
        for (let k = i; k < Math.min(KEYS, i + 1000); k++) p.set(key(k), bytesValue(k, 'A', size));
        for (const [err] of await p.exec()) if (err) throw err;
      }
    } catch (e) {
      r.disconnect();
      await server.stop();
      throw e;
    }
    return { address: server.address, handle: r, async close() { r.disconnect(); await server.stop(); } };
  }
  if (b === 'lmdb') {
    const { open } = await import('lmdb');
    const dir = mkdtempSync(join(tmpdir(), 'shmkit-bench-lmdb-'));
    let db;
    try {
      db = open({ path: dir, encoding: 'binary', ...(id === 'lmdb-nosync' ? { noSync: true } : {}) });
      db.transactionSync(() => {
        for (let i = 0; i < KEYS; i++) db.put(key(i), bytesValue(i, 'A', size));
      });
    } catch (e) {
      try { await db?.close(); } catch {}
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return { address: dir, handle: db, async close() { try { await db.close(); } finally { rmSync(dir, { recursive: true, force: true }); } } };
  }
  if (b === 'map') return { address: '-', handle: null, close() {} };
  throw new Error(`unknown transport ${id}`);
}

/**
 * The client of one measuring process, worker w of procs: get(i) and set(i) (values or promises),
 * ok(value, i), readMany(indices) for the final check, and the walk over the keys (gets over all
 * keys, sets over this worker's share).
 */
async function client(id, address, size, w, procs, handle) {
  const b = base(id);
  const json = id === 'shmkit-json';
  const keys = Array.from({ length: KEYS }, (_, i) => key(i));
  const share = KEYS / procs;
  const setFrom = w * share;
  // The 'B' values this process sets, in one allocation (a view per key).
  let values;
  if (json) values = Array.from({ length: KEYS }, (_, i) => (i >= setFrom && i < setFrom + share ? jsonValue(i, 'B') : null));
  else {
    const all = Buffer.allocUnsafe(share * size);
    values = new Array(KEYS).fill(null);
    for (let i = setFrom; i < setFrom + share; i++) values[i] = bytesValue(i, 'B', size, all.subarray((i - setFrom) * size, (i - setFrom + 1) * size));
  }
  const c = { kind: 'sync', ok: json ? okJson : okBytes(size), g: 0, s: 0, sets: 0, share, setFrom, size, json, values };
  if (b === 'shmkit') {
    let m = handle;
    if (!m) {
      const SharedMap = await loadSharedMap();
      m = SharedMap.open(address, { codec: json ? 'json' : 'bytes' });
    }
    c.get = (i) => m.get(keys[i]);
    c.set = (i) => m.set(keys[i], values[i]);
    c.readMany = (idx) => idx.map((i) => m.get(keys[i]));
    c.close = () => { if (!handle) m.close(); };
    c.setResultOk = (r) => typeof r === 'number';
  } else if (b === 'redis') {
    let r = handle;
    if (!r) {
      const { Redis } = await import('ioredis');
      r = new Redis({ path: address, lazyConnect: true, maxRetriesPerRequest: 0 });
      await r.connect();
    }
    c.kind = id === 'redis-pipeline' ? 'pipeline' : 'await';
    c.get = (i) => r.getBuffer(keys[i]);
    c.set = (i) => r.set(keys[i], values[i]);
    c.pipeline = () => r.pipeline();
    c.pget = (p, i) => p.getBuffer(keys[i]);
    c.pset = (p, i) => p.set(keys[i], values[i]);
    c.readMany = async (idx) => {
      const out = [];
      for (let k = 0; k < idx.length; k += 1000) {
        const p = r.pipeline();
        for (const i of idx.slice(k, k + 1000)) p.getBuffer(keys[i]);
        for (const [err, v] of await p.exec()) {
          if (err) throw err;
          out.push(v);
        }
      }
      return out;
    };
    c.close = () => { if (!handle) r.disconnect(); };
    c.setResultOk = (x) => x === 'OK';
  } else if (b === 'lmdb') {
    let db = handle;
    if (!db) {
      const { open } = await import('lmdb');
      db = open({ path: address, encoding: 'binary', ...(id === 'lmdb-nosync' ? { noSync: true } : {}) });
    }
    c.get = (i) => db.get(keys[i]);
    c.set = (i) => db.putSync(keys[i], values[i]);
    c.readMany = (idx) => idx.map((i) => db.get(keys[i]));
    c.close = async () => { if (!handle) await db.close(); };
    c.setResultOk = (x) => x === true;
  } else if (b === 'map') {
    const m = new Map();
    for (let i = 0; i < KEYS; i++) m.set(keys[i], bytesValue(i, 'A', size));
    c.get = (i) => m.get(keys[i]);
    c.set = (i) => m.set(keys[i], values[i]);
    c.readMany = (idx) => idx.map((i) => m.get(keys[i]));
    c.close = () => m.clear();
    c.setResultOk = () => true;
  } else throw new Error(`unknown transport ${id}`);
  return c;
}

// The measured loops: `ms` milliseconds of op (get, set or mix: every 10th a set), from where the
// last run left the walk. Returns { ops, seconds, bad } (bad: values that failed the check).
const isSet = (op, n) => op === 'set' || (op === 'mix' && n % 10 === 9);

function runSync(c, op, ms) {
  const { get, set, ok, share, setFrom } = c;
  let { g, s } = c;
  let ops = 0;
  let sets = 0;
  let bad = 0;
  let badSet = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  do {
    for (let k = 0; k < 256; k++, ops++) {
      if (isSet(op, ops)) {
        if (!c.setResultOk(set(setFrom + s))) badSet++;
        s += STRIDE % share;
        if (s >= share) s -= share;
        sets++;
      } else {
        if (!ok(get(g), g)) bad++;
        g += STRIDE;
        if (g >= KEYS) g -= KEYS;
      }
    }
  } while (performance.now() < end);
  const seconds = (performance.now() - t0) / 1000;
  Object.assign(c, { g, s, sets: c.sets + sets });
  return { ops, seconds, bad, badSet };
}

async function runAwait(c, op, ms) {
  const { get, set, ok, share, setFrom } = c;
  let { g, s } = c;
  let ops = 0;
  let sets = 0;
  let bad = 0;
  let badSet = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  do {
    for (let k = 0; k < 16; k++, ops++) {
      if (isSet(op, ops)) {
        if (!c.setResultOk(await set(setFrom + s))) badSet++;
        s += STRIDE % share;
        if (s >= share) s -= share;
        sets++;
      } else {
        if (!ok(await get(g), g)) bad++;
        g += STRIDE;
        if (g >= KEYS) g -= KEYS;
      }
    }
  } while (performance.now() < end);
  const seconds = (performance.now() - t0) / 1000;
  Object.assign(c, { g, s, sets: c.sets + sets });
  return { ops, seconds, bad, badSet };
}

async function runPipeline(c, op, ms) {
  const { ok, share, setFrom } = c;
  let { g, s } = c;
  let ops = 0;
  let sets = 0;
  let bad = 0;
  let badSet = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  const plan = new Array(PIPELINE); // the key of each command, negative for a set
  do {
    const p = c.pipeline();
    for (let k = 0; k < PIPELINE; k++) {
      if (isSet(op, ops + k)) {
        c.pset(p, setFrom + s);
        plan[k] = -1;
        s += STRIDE % share;
        if (s >= share) s -= share;
        sets++;
      } else {
        c.pget(p, g);
        plan[k] = g;
        g += STRIDE;
        if (g >= KEYS) g -= KEYS;
      }
    }
    const res = await p.exec();
    for (let k = 0; k < PIPELINE; k++) {
      const [err, v] = res[k];
      if (err) throw err;
      if (plan[k] < 0) {
        if (!c.setResultOk(v)) badSet++;
      } else if (!ok(v, plan[k])) bad++;
    }
    ops += PIPELINE;
  } while (performance.now() < end);
  const seconds = (performance.now() - t0) / 1000;
  Object.assign(c, { g, s, sets: c.sets + sets });
  return { ops, seconds, bad, badSet };
}

const run = (c, op, ms) => (c.kind === 'pipeline' ? runPipeline(c, op, ms) : c.kind === 'await' ? runAwait(c, op, ms) : runSync(c, op, ms));

/**
 * The final check of one process: every key reads back whole as its 'A' or 'B' value, and every key
 * this process set reads back as 'B'. Returns the number of keys checked.
 */
async function verify(c) {
  const all = Array.from({ length: KEYS }, (_, i) => i);
  const got = await c.readMany(all);
  const touched = new Set();
  for (let n = 0, s = 0; n < Math.min(c.sets, c.share); n++) {
    touched.add(c.setFrom + s);
    s += STRIDE % c.share;
    if (s >= c.share) s -= c.share;
  }
  const same = (v, i, variant) => (c.json
    ? JSON.stringify(v) === JSON.stringify(jsonValue(i, variant))
    : v != null && Buffer.compare(v, bytesValue(i, variant, c.size)) === 0);
  for (const i of all) {
    const v = got[i];
    if (touched.has(i) ? !same(v, i, 'B') : !same(v, i, 'A') && !same(v, i, 'B')) {
      const shown = v == null ? String(v) : c.json ? JSON.stringify(v) : `${v.length} bytes, ${JSON.stringify(Buffer.from(v).toString('latin1', 0, 24))}...`;
      throw new Error(`final check: ${key(i)} reads back as ${shown}, expected its ${touched.has(i) ? "'B'" : "'A' or 'B'"} value of ${c.json ? 'json' : `${c.size} bytes`}`);
    }
  }
  return KEYS;
}

// A trial (this program with --trial): one store, one size, 1 or 2 processes, each op in turn --------

async function trialMain([id, sizeArg, procsArg, warmArg, msArg, name]) {
  const size = Number(sizeArg);
  const procs = Number(procsArg);
  const warmMs = Number(warmArg);
  const ms = Number(msArg);
  const t = ALL.find((x) => x.id === id);
  const ops = t.ops ?? OPS;
  const s = await status(t);
  if (!s.ok) {
    process.stdout.write(JSON.stringify({ skipped: s.reason }) + '\n');
    return;
  }
  const store = await setup(id, size, name);
  const kids = [];
  let closed = false;
  const teardown = async () => {
    if (closed) return;
    closed = true;
    for (const k of kids) if (k.exitCode === null && k.signalCode === null) k.kill('SIGKILL');
    await store.close();
  };
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => teardown().finally(() => process.exit(130)));
  const result = { id, size, procs };
  try {
    if (procs === 1) {
      const c = await client(id, store.address, size, 0, 1, store.handle);
      for (const op of ops) {
        await run(c, op, warmMs);
        const r = await run(c, op, ms);
        if (r.bad || r.badSet) throw new Error(`${op}: ${r.bad} wrong values read, ${r.badSet} sets without the expected result`);
        result[op] = r.ops / r.seconds;
      }
      result.checked = await verify(c);
      await c.close();
    } else {
      for (let w = 0; w < procs; w++) {
        kids.push(fork(SELF, ['--worker', id, size, w, procs, store.address], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' }));
      }
      const ask = (k, msg) => new Promise((resolve, reject) => {
        const onMessage = (m) => {
          k.off('exit', onExit);
          if (m.error) reject(new Error(`worker: ${m.error}`));
          else resolve(m.r);
        };
        const onExit = (code, signal) => {
          k.off('message', onMessage);
          reject(new Error(`worker exited (${code ?? signal})`));
        };
        k.once('message', onMessage);
        k.once('exit', onExit);
        if (msg) k.send(msg);
      });
      await Promise.all(kids.map((k) => ask(k, null))); // ready
      for (const op of ops) {
        await Promise.all(kids.map((k) => ask(k, { cmd: 'run', op, ms: warmMs })));
        const rs = await Promise.all(kids.map((k) => ask(k, { cmd: 'run', op, ms })));
        for (const r of rs) if (r.bad || r.badSet) throw new Error(`${op}: ${r.bad} wrong values read, ${r.badSet} sets without the expected result`);
        result[op] = rs.reduce((sum, r) => sum + r.ops / r.seconds, 0);
      }
      const checked = await Promise.all(kids.map((k) => ask(k, { cmd: 'verify' })));
      result.checked = checked[0];
      await Promise.all(kids.map((k) => ask(k, { cmd: 'close' })));
    }
  } finally {
    await teardown();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

async function workerMain([id, sizeArg, wArg, procsArg, address]) {
  const c = await client(id, address, Number(sizeArg), Number(wArg), Number(procsArg), null);
  process.on('disconnect', () => process.exit(0));
  process.on('message', async (m) => {
    try {
      if (m.cmd === 'run') process.send({ r: await run(c, m.op, m.ms) });
      else if (m.cmd === 'verify') process.send({ r: await verify(c) });
      else if (m.cmd === 'close') {
        await c.close();
        process.send({ r: true }, () => process.exit(0));
      }
    } catch (e) {
      process.send({ error: String(e?.stack ?? e) }, () => process.exit(1));
    }
  });
  process.send({ ready: true });
}

// RSS over many operations on one map (this program with --rss) -----------------------------------

/**
 * RSS and JS heap of this process in bytes, with RSS split as Linux counts it: shmem (pages of shared
 * memory this process touched: the map) and anon (the process's own memory: JS heap, native).
 */
function memory() {
  globalThis.gc?.(); // a full GC first when run with --expose-gc (as the benchmark runs it)
  const u = process.memoryUsage();
  let status = '';
  try {
    status = readFileSync('/proc/self/status', 'utf8');
  } catch {}
  const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: u.rss, heapUsed: u.heapUsed, heapTotal: u.heapTotal, external: u.external, shmem: kb('RssShmem'), anon: kb('RssAnon') };
}

async function rssMain([opsArg, name]) {
  const total = Number(opsArg);
  const SharedMap = await loadSharedMap();
  const m = SharedMap.create(name, { ...MAP_OPTIONS, codec: 'bytes' });
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { unlinkQuietly(SharedMap, name); process.exit(130); });
  let result;
  try {
    const keys = Array.from({ length: RSS_KEYS }, (_, i) => key(i));
    const big = new Uint8Array(RSS_KEYS); // which keys hold 1 KiB now (the others 64 B)
    const small = Buffer.alloc(64);
    const large = Buffer.alloc(1024);
    // Even keys start at 1 KiB, odd ones at 64 B. The walk of the sets (an odd stride over an even
    // number of keys) alternates between even and odd keys and comes back to each key in the same
    // order, so one set grows a value and the next shrinks one: the bytes of values in the map stay
    // about the same all along (half the keys at 1 KiB), and only a leak or unused free space grows.
    for (let i = 0; i < RSS_KEYS; i++) {
      big[i] = i % 2 === 0 ? 1 : 0;
      m.set(keys[i], big[i] ? bytesValue(i, 'A', 1024, large) : bytesValue(i, 'A', 64, small));
    }
    let g = 0;
    let s = 0;
    let bad = 0;
    // Samples after each tenth of the operations: the first (after 10 %) and the last are the figure,
    // the others show whether RSS levels off or keeps climbing.
    const samples = [];
    let mark = Math.floor(total / 10);
    const t0 = performance.now();
    for (let n = 0; n < total; n++) {
      if (n === mark) {
        samples.push(memory());
        mark = Math.floor((total * (samples.length + 1)) / 10);
      }
      if (n % 10 === 9) {
        // A set switches the key's value between 64 B and 1 KiB: the value space is freed and taken.
        big[s] ^= 1;
        m.set(keys[s], big[s] ? bytesValue(s, 'B', 1024, large) : bytesValue(s, 'B', 64, small));
        s += 4729; // prime
        if (s >= RSS_KEYS) s -= RSS_KEYS;
      } else {
        const v = m.get(keys[g]);
        if (!v || v.length !== (big[g] ? 1024 : 64) || v[15] !== 48 + (g % 10) || v[14] !== 48 + (((g / 10) | 0) % 10)) bad++;
        g += STRIDE;
        if (g >= RSS_KEYS) g -= RSS_KEYS;
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const last = memory();
    const first = samples[0] ?? last;
    if (bad) throw new Error(`${bad} wrong values read`);
    let stats = null;
    try {
      const st = m.stats();
      stats = { entries: st.entries, hits: st.hits, misses: st.misses, bytesUsed: st.bytesUsed };
    } catch {}
    const mib = (x) => x / (1 << 20);
    result = {
      ops: total, seconds, value: total / seconds,
      rss_first_mib: mib(first.rss), rss_end_mib: mib(last.rss), growth_mib: mib(last.rss - first.rss),
      heap_first_mib: mib(first.heapUsed), heap_end_mib: mib(last.heapUsed),
      shmem_growth_mib: mib(last.shmem - first.shmem), anon_growth_mib: mib(last.anon - first.anon),
      heap_total_first_mib: mib(first.heapTotal), heap_total_end_mib: mib(last.heapTotal), external_growth_mib: mib(last.external - first.external),
      rss_tenths_mib: [...samples.slice(0, 9), last].map((x) => mib(x.rss)), stats,
    };
  } finally {
    try {
      m.close();
    } finally {
      SharedMap.unlink(name);
    }
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

// The benchmark -----------------------------------------------------------------------------------

async function main() {
  const { argv, quick, reps } = benchArgs();
  const opt = (n) => (argv.includes(n) ? argv[argv.indexOf(n) + 1] : null);
  const jsonFile = opt('--json');
  const only = opt('--only')?.split(',');
  const progress = !argv.includes('--silent');
  for (const id of only ?? []) if (!ALL.some((t) => t.id === id)) throw new Error(`--only: unknown transport ${id} (${ALL.map((t) => t.id).join(', ')})`);
  const warmMs = quick ? 100 : 150;
  const ms = quick ? 200 : 400;
  const rssOps = quick ? 1_000_000 : 10_000_000;
  const SIZES = [64, 1024];
  const PROCS = [1, 2];

  const skipped = new Map();
  const transports = [];
  for (const t of ALL) {
    if (only && !only.includes(t.id)) continue;
    const s = await status(t);
    if (s.ok) transports.push(t);
    else skipped.set(t.id, s.reason);
  }
  const wanted = (id) => !only || only.includes(id);
  let SharedMap = null;
  try {
    SharedMap = await loadSharedMap();
  } catch {}

  console.log(`# shmkit shared map benchmark\n\n${machine()}, ${availableParallelism()} CPUs; ${reps} repetition(s), interleaved; each trial a fresh process (and two more for two processes); ${KEYS} keys of 16 bytes; every value read checked, every key compared whole at the end of a trial.\n`);
  for (const [id, reason] of skipped) console.log(`${ALL.find((t) => t.id === id).label}: skipped, ${reason}\n`);

  // Names of our own in /dev/shm: unlinked after each trial even if it failed; none may be left.
  const shmBefore = new Set(readdirSync('/dev/shm'));
  let n = 0;
  let current = null;
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { if (current && SharedMap) unlinkQuietly(SharedMap, current); process.exit(130); });
  const failures = [];
  const res = new Map(); // `${id}:${op}:${size}:${procs}` -> ops/s per repetition
  const add = (k, v) => (res.has(k) ? res.get(k) : res.set(k, []).get(k)).push(v);
  const runTrial = async (label, file, args, isShmkit, nodeFlags = []) => {
    const name = `bench-map-${process.pid}-${n++}`;
    current = isShmkit ? name : null;
    try {
      return (await trial(file, [...nodeFlags, SELF, ...args, name], { exec: process.execPath, timeoutMs: 300_000 })).result;
    } catch (e) {
      const msg = String(e.message).trim();
      failures.push(`${label}: ${msg}`);
      console.log(`${label}: FAILED: ${msg.split('\n').slice(0, 6).join(' | ')}\n`);
      return null;
    } finally {
      if (isShmkit && SharedMap) unlinkQuietly(SharedMap, name); // gone already unless the trial died
      current = null;
    }
  };

  for (let r = 0; r < reps; r++) {
    for (const size of SIZES) for (const procs of PROCS) for (const t of transports) {
      if (skipped.has(t.id) || !(t.sizes ?? SIZES).includes(size) || !(t.procs ?? PROCS).includes(procs)) continue;
      const label = `${t.label}, ${size} B, ${procs} process${procs > 1 ? 'es' : ''}`;
      const result = await runTrial(label, 'map.mjs', ['--trial', t.id, size, procs, warmMs, ms], base(t.id) === 'shmkit');
      if (!result) continue;
      if (result.skipped) {
        skipped.set(t.id, result.skipped);
        console.log(`${t.label}: skipped, ${result.skipped}\n`);
        continue;
      }
      for (const op of t.ops ?? OPS) add(`${t.id}:${op}:${size}:${procs}`, result[op]);
      if (progress) process.stderr.write(`  ${t.id} ${size} B x${procs}: ${(t.ops ?? OPS).map((op) => `${op} ${num(result[op])}/s`).join(', ')}\n`);
    }
  }
  let rss = null;
  let rssSmall = null;
  if (wanted('shmkit') && !skipped.has('shmkit')) {
    if (progress) process.stderr.write(`  shmkit RSS: ${rssOps / 1e6} M operations...\n`);
    rss = await runTrial(`shmkit SharedMap RSS over ${rssOps / 1e6} M operations`, 'map.mjs', ['--rss', rssOps], true, ['--expose-gc']);
    // The same with V8's young generation held at 1 MiB semi-spaces: what grows with Node's
    // defaults is V8 sizing its young generation up (to 2 x 16 MiB) under the allocation rate,
    // once; this run shows what the map itself does with memory.
    rssSmall = await runTrial(`shmkit SharedMap RSS over ${rssOps / 1e6} M operations, --max-semi-space-size=1`, 'map.mjs', ['--rss', rssOps], true, ['--expose-gc', '--max-semi-space-size=1']);
  }

  // Tables: one per operation, operations per second, median (min-max), ratio to Redis one at a time.
  const ran = transports.filter((t) => !skipped.has(t.id));
  const med = (k) => (res.has(k) ? median(res.get(k)) : NaN);
  const cols = SIZES.flatMap((size) => PROCS.map((procs) => [size, procs]));
  const colName = ([size, procs]) => `${size === 1024 ? '1 KiB' : `${size} B`}, ${procs} process${procs > 1 ? 'es' : ''}`;
  for (const op of OPS) {
    const rows = ran.filter((t) => (t.ops ?? OPS).includes(op)).map((t) => [t.label, ...cols.map(([size, procs]) => {
      const v = res.get(`${t.id}:${op}:${size}:${procs}`);
      if (!v) return '-';
      return `${opsCell(v)} (${ratio(median(v), med(`redis:${op}:${size}:${procs}`))})`;
    })]);
    if (!rows.length) continue;
    console.log(`## ${OP_LABEL[op]}: operations per second\n`);
    console.log(table([`${OP_LABEL[op]}, ops/s`, ...cols.map(colName)], rows));
    console.log('\n(ratio: against Redis one call at a time, same size and processes)\n');
  }
  console.log([
    'Notes:',
    `- two processes: two child processes on one store at once, sets on disjoint halves of the keys, gets on all keys; the figure is their sum. This machine has ${availableParallelism()} CPUs; for Redis the server is a third process.`,
    `- Redis: a redis-server of each trial's own on a Unix socket, no persistence (no RDB, no AOF); ioredis, values as Buffers (set, getBuffer); pipelined: ${PIPELINE} commands per pipeline, each command counted.`,
    `- lmdb-js: open({ path: <folder in ${tmpdir()}>, encoding: 'binary' }) with lmdb's default durability flags (no noSync, no noMetaSync; on Linux overlappingSync): each putSync is one transaction, committed and visible when it returns, and LMDB flushes every commit to disk (fdatasync), the flush overlapping the next transaction. Usable as is, so the targets are against these defaults. The noSync rows add noSync: true (committed, never flushed by LMDB: survives the process, not the machine); their gets would be the same as the default's and are not run.`,
    '- shmkit SharedMap: shared memory, not persistent (like Redis here). bytes codec: Buffers in, a Buffer copy out; json codec: a 64-byte (as JSON) object.',
    '- JavaScript Map: one process; get returns the stored Buffer itself and set stores a reference (no copy either way): the limit of any store in the process.',
  ].join('\n'));

  if (rss) {
    console.log(`\n## RSS over ${rssOps / 1e6} M operations\n`);
    const f = (v) => (Number.isFinite(v) ? v.toFixed(2) : '-');
    const rssRow = (r, how) => [
      `${RSS_KEYS} keys, each set switching its value between 64 B and 1 KiB; ${how}`,
      `${r.rss_first_mib.toFixed(1)} / ${r.rss_end_mib.toFixed(1)}`, f(r.growth_mib), f(r.shmem_growth_mib), f(r.anon_growth_mib),
      `${r.heap_first_mib.toFixed(1)} / ${r.heap_end_mib.toFixed(1)}`, num(r.value),
    ];
    console.log(table(['shmkit SharedMap (bytes), 90 % get / 10 % set', 'RSS after 10 % / at the end, MiB', 'growth, MiB', 'of which shared memory (RssShmem)', 'of which the process\'s own (RssAnon)', 'JS heap used after 10 % / at the end, MiB', 'ops/s'], [
      rssRow(rss, "Node's defaults"),
      ...(rssSmall ? [rssRow(rssSmall, 'node --max-semi-space-size=1')] : []),
    ]));
    if (rssSmall) console.log(`\nWith --max-semi-space-size=1, RSS after each tenth, MiB: ${rssSmall.rss_tenths_mib.map((x) => x.toFixed(1)).join(', ')}.`);
    console.log(`\nFlat: RSS grew less than ${RSS_FLAT_MIB} MiB between the sample after the first 10 % of the operations and the end (process.memoryUsage().rss, each sample taken after a full GC: node --expose-gc). RSS after each tenth of the operations, MiB: ${rss.rss_tenths_mib.map((x) => x.toFixed(1)).join(', ')}. RssShmem counts the pages of shared memory (the map) this process has touched, RssAnon its own memory (JS heap, native allocations), both from /proc/self/status.${rss.stats ? ` Map stats at the end: ${rss.stats.entries} entries, ${rss.stats.hits} hits, ${rss.stats.misses} misses, ${(rss.stats.bytesUsed / (1 << 20)).toFixed(1)} MiB of values in live blocks (of ${MAP_OPTIONS.valueBytes >> 20} MiB).` : ''}`);
  }

  // Targets (issue #14, point 5): shmkit SharedMap, bytes codec, one process.
  const notMeasured = (id) => {
    if (skipped.has(id)) return `not measured: ${skipped.get(id)}`;
    if (!wanted(id)) return `not measured: ${id} not in --only`;
    return 'not measured: no figure (a trial failed?)';
  };
  const targets = [];
  const check = (label, a, b, want, strict) => {
    const x = med(a) / med(b);
    const missing = Number.isFinite(med(a)) ? b.split(':')[0] : a.split(':')[0];
    targets.push(Number.isFinite(x) && x > 0
      ? { target: label, measured: x >= 10 ? `${x.toFixed(0)}x` : `${x.toFixed(2)}x`, value: x, met: (strict ? x > want : x >= want) ? 'met' : 'missed' }
      : { target: label, measured: '-', value: null, met: notMeasured(missing) });
  };
  for (const size of SIZES) {
    const s = size === 1024 ? '1 KiB' : `${size} B`;
    check(`get ${s}, one process: at least 50x Redis (one call at a time)`, `shmkit:get:${size}:1`, `redis:get:${size}:1`, 50);
    check(`get ${s}, one process: at least as fast as lmdb-js get`, `shmkit:get:${size}:1`, `lmdb:get:${size}:1`, 1);
    check(`set ${s}, one process: at least 10x Redis (one call at a time)`, `shmkit:set:${size}:1`, `redis:set:${size}:1`, 10);
    check(`set ${s}, one process: faster than lmdb-js putSync (default durability)`, `shmkit:set:${size}:1`, `lmdb:set:${size}:1`, 1, true);
  }
  {
    const label = `RSS flat over ${rssOps / 1e6} M operations (growth under ${RSS_FLAT_MIB} MiB from the first 10 % to the end)`;
    targets.push(rss
      ? { target: label, measured: `${rss.growth_mib.toFixed(2)} MiB`, value: rss.growth_mib, met: rss.growth_mib < RSS_FLAT_MIB ? 'met' : 'missed' }
      : { target: label, measured: '-', value: null, met: notMeasured('shmkit') });
  }
  console.log(`\n## Targets\n\n${table(['target', 'measured', 'met?'], targets.map((t) => [t.target, t.measured, t.met]))}`);
  const noSync = SIZES.map((size) => `${size === 1024 ? '1 KiB' : `${size} B`} ${ratio(med(`shmkit:set:${size}:1`), med(`lmdb-nosync:set:${size}:1`))}`);
  if (res.has('lmdb-nosync:set:64:1') && res.has('shmkit:set:64:1')) console.log(`\nset against lmdb-js putSync with noSync (not flushed), one process: ${noSync.join(', ')}.`);

  // Whatever a trial that died left in /dev/shm under our names: reported, and the run fails.
  const left = readdirSync('/dev/shm').filter((f) => !shmBefore.has(f) && /^shmkit[-~]bench-map-/.test(f));
  if (left.length) {
    console.log(`\n/dev/shm: this run left ${left.join(', ')}`);
    process.exitCode = 1;
  }
  if (failures.length) {
    console.log(`\n${failures.length} trial(s) failed; see above.`);
    process.exitCode = 1;
  }
  if (!SharedMap && wanted('shmkit')) process.exitCode = 1; // the subject itself is missing
  console.log(`\nReproduce: \`${['node bench/map.mjs', ...argv.filter((a, i) => a !== '--json' && argv[i - 1] !== '--json' && a !== '--silent')].join(' ')}\`.`);

  if (jsonFile) {
    const rows = [];
    for (const t of ALL) for (const op of OPS) for (const [size, procs] of cols) {
      const v = res.get(`${t.id}:${op}:${size}:${procs}`);
      if (!v) continue;
      const [transport, mode] = t.json;
      rows.push({ pattern: 'map', transport, mode, metric: `${op === 'mix' ? 'mix_90_10' : op}_ops`, size, value: median(v), unit: 'ops/s', processes: procs, values: v });
    }
    if (rss) rows.push({ pattern: 'map', transport: 'shmkit', mode: 'bytes', metric: 'rss_growth', size: '64/1024', value: rss.growth_mib, unit: 'MiB', operations: rss.ops, rss_first_mib: rss.rss_first_mib, rss_end_mib: rss.rss_end_mib, shmem_growth_mib: rss.shmem_growth_mib, anon_growth_mib: rss.anon_growth_mib });
    for (const t of targets) rows.push({ pattern: 'map', metric: 'target', target: t.target, value: t.value, unit: t.measured.endsWith('MiB') ? 'MiB' : 'x', met: t.met });
    for (const [id, reason] of skipped) rows.push({ pattern: 'map', metric: 'skipped', transport: id, reason });
    writeFileSync(jsonFile, JSON.stringify(rows, null, 2) + '\n');
  }
}

/** Operations per second: "5.21 M", "31.5 k". */
function num(v) {
  if (!Number.isFinite(v)) return '-';
  return v >= 1e6 ? `${(v / 1e6).toFixed(2)} M` : `${(v / 1e3).toFixed(1)} k`;
}

/** "median (min-max)" in M or k operations per second. */
function opsCell(values) {
  const scale = median(values) >= 1e6 ? 1e6 : 1e3;
  return `${fmt(values.map((v) => v / scale))} ${scale === 1e6 ? 'M' : 'k'}`;
}

const mode = process.argv[2];
if (mode === '--trial') await trialMain(process.argv.slice(3));
else if (mode === '--worker') await workerMain(process.argv.slice(3));
else if (mode === '--rss') await rssMain(process.argv.slice(3));
else await main();

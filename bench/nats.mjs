#!/usr/bin/env node
// Leaving the machine: the cost of NATS next to shared memory. Topic round trips and one-way
// throughput, RPC round trips and map reads and writes, each over
// - local: shmkit in shared memory (Topic, serve/rpcClient, SharedMap);
// - nats-direct: the nats.js client alone (publish/subscribe, request/respond), the floor of NATS;
// - nats: shmkit/nats, the NATS transport (the same API as local);
// - bridge: local topics or a local client on one side, a `shmkit bridge` process, and the other
//   side on NATS (topics: local -> bridge -> NATS -> peer -> NATS -> bridge -> local).
// One nats-server of the run's own on loopback (JetStream on, for the map rows); the two sides of
// a trial are two processes on this machine, so the network is loopback TCP: a real network adds
// its round trip to every NATS row. No targets: the figures show what leaving the machine costs.
//
//   node bench/nats.mjs              3 interleaved repetitions (about 2 minutes)
//   node bench/nats.mjs --quick      1 repetition, fewer operations
//   node bench/nats.mjs --json FILE  also write the rows as JSON (pattern: 'nats')
// A missing nats-server or NATS client package skips the run, with what to install.
import { writeFileSync } from 'node:fs';
import { peerStatus, startNats } from './fanout-peers.mjs';
import { benchArgs, fmt, machine, median, ratio, table, trial } from './lib.mjs';

const { argv, quick, reps } = benchArgs();
const jsonAt = argv.indexOf('--json');
const jsonFile = jsonAt >= 0 ? argv[jsonAt + 1] : null;
const silent = argv.includes('--silent');
const log = (s) => !silent && process.stderr.write(s + '\n');

const KINDS = ['local', 'nats-direct', 'nats', 'bridge'];
const TESTS = [
  { id: 'rtt', label: 'topic round trip, 64 B: median µs (p99)', n: quick ? 1000 : 5000, kinds: KINDS, unit: 'µs' },
  { id: 'tput', label: 'topic one way, 64 B: messages/s', n: quick ? 50_000 : 200_000, kinds: KINDS, unit: 'msg/s' },
  { id: 'rpc', label: 'RPC round trip: median µs (p99)', n: quick ? 1000 : 5000, kinds: KINDS, unit: 'µs' },
  { id: 'mapget', label: 'map get, 64 B: operations/s', n: quick ? 200_000 : 1_000_000, kinds: ['local', 'nats'], unit: 'ops/s' },
  { id: 'mapset', label: 'map set, 64 B (each awaited): operations/s', n: quick ? 2000 : 10_000, kinds: ['local', 'nats'], unit: 'ops/s' },
];

const status = await peerStatus('nats');
if (!status.ok) {
  console.log(`NATS benchmark skipped: ${status.reason}`);
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify([{ pattern: 'nats', metric: 'skipped', transport: 'nats', reason: status.reason }], null, 2) + '\n');
  process.exit(0);
}

const server = await startNats({ jetstream: true });
const res = new Map(); // `${test}:${kind}` -> [{...}]
const failures = [];
try {
  for (let rep = 0; rep < reps; rep++) {
    for (const t of TESTS) {
      for (const kind of t.kinds) {
        log(`rep ${rep + 1}/${reps}: ${t.id} ${kind}`);
        try {
          const { result } = await trial('nats-trial.mjs', ['main', t.id, kind, t.n, server.url], { timeoutMs: 180_000 });
          const k = `${t.id}:${kind}`;
          if (!res.has(k)) res.set(k, []);
          res.get(k).push(result);
        } catch (err) {
          failures.push(`${t.id} ${kind}: ${err.message.split('\n')[0]}`);
        }
      }
    }
  }
} finally {
  await server.stop();
}

const values = (t, kind, field) => (res.get(`${t.id}:${kind}`) ?? []).map((r) => r[field]);
const num = (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)} M` : v >= 1e3 ? `${(v / 1e3).toFixed(1)} k` : v.toFixed(0));
console.log(`## Leaving the machine: shared memory, NATS, and the bridge (${machine()}, ${reps} repetition${reps === 1 ? '' : 's'}, one nats-server on loopback)\n`);
for (const t of TESTS) {
  const latency = t.unit === 'µs';
  const main = (kind) => values(t, kind, latency ? 'median_us' : t.unit === 'msg/s' ? 'rate' : 'ops');
  const local = median(main('local'));
  console.log(`### ${t.label}\n`);
  console.log(table(['transport', 'figure', latency ? 'this / local' : 'local / this'], t.kinds.filter((k) => main(k).length > 0).map((k) => {
    const v = main(k);
    const p99 = latency ? ` (${fmt(values(t, k, 'p99_us'), 1)})` : '';
    return [k, `${latency ? fmt(v, 1) : num(median(v))}${p99}`, latency ? ratio(median(v), local) : ratio(local, median(v))];
  })));
  console.log('');
}
if (failures.length > 0) {
  console.log(`${failures.length} trial(s) failed:\n${failures.map((f) => `- ${f}`).join('\n')}`);
  process.exitCode = 1;
}
console.log(`Reproduce: \`node bench/nats.mjs${quick ? ' --quick' : ''}\`.`);

if (jsonFile) {
  const rows = [];
  for (const t of TESTS) {
    for (const kind of t.kinds) {
      const r = res.get(`${t.id}:${kind}`);
      if (!r) continue;
      const field = t.unit === 'µs' ? 'median_us' : t.unit === 'msg/s' ? 'rate' : 'ops';
      const v = r.map((x) => x[field]);
      rows.push({ pattern: 'nats', transport: kind, metric: t.id, size: 64, value: median(v), unit: t.unit, values: v, ...(t.unit === 'µs' ? { p99_us: median(r.map((x) => x.p99_us)) } : {}) });
    }
  }
  writeFileSync(jsonFile, JSON.stringify(rows, null, 2) + '\n');
}

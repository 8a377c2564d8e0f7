#!/usr/bin/env node
// Topic benchmark: fan-out from one publisher process to 1, 2 and 4 subscriber processes.
//
//   node bench/topics.mjs              3 interleaved repetitions
//   node bench/topics.mjs --quick      1 repetition, smaller counts
//   node bench/topics.mjs --json FILE  also write the rows as JSON
//   --reps N                           repetitions
//   --only a,b                         these transports only (ids: shmkit, shmkit-async, unix,
//                                      zeromq, redis, nats)
//   --scale F                          message counts times F (--quick is 0.2)
//
// Each trial is a fresh set of processes (bench/fixtures/fanout.mjs). Throughput: deliveries per
// second (subscribers x messages, from the first delivery to the last, over all subscribers).
// Latency: publish to receive, messages paced 50 µs apart, median and p99 of the slowest subscriber.
// Publish cost: the publisher process's CPU time per publish, subscribers reading flat out.
// Peers in the same run:
// - one Unix domain socket per subscriber, length-prefixed frames, the publisher writing each frame
//   to every socket (what a Node server does without a broker); the tables' ratios are against it;
// - ZeroMQ PUB/SUB over ipc:// (npm package zeromq, a devDependency);
// - Redis pub/sub over a Unix socket, a redis-server started for each trial (Debian: redis-server);
// - NATS core pub/sub, a nats-server started for each trial on a loopback port (Debian:
//   nats-server; client @nats-io/transport-node, a devDependency).
// A peer whose server or client library is missing is skipped, with what to install.
import { writeFileSync } from 'node:fs';
import { selectTransports } from './fanout-peers.mjs';
import { benchArgs, fmt, machine, median, ratio, table, trial } from './lib.mjs';

const { argv, quick, reps } = benchArgs();
const opt = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : null);
const jsonFile = opt('--json');
const q = Number(opt('--scale')) || (quick ? 0.2 : 1);
const only = opt('--only')?.split(',');
const ALL = [
  { id: 'shmkit', label: 'shmkit Topic (publishSync / receiveSync: spin, then park)' },
  { id: 'shmkit-async', label: 'shmkit Topic, async (publish / for await, spin 0)' },
  { id: 'unix', label: 'Unix domain socket per subscriber' },
  { id: 'zeromq', label: 'ZeroMQ PUB/SUB, ipc://' },
  { id: 'redis', label: 'Redis pub/sub, Unix socket' },
  { id: 'nats', label: 'NATS core pub/sub, loopback TCP' },
];
const { transports, skipped } = await selectTransports(ALL, only); // skipped: id -> what to install
const sizes = [64, 4096];
const fanouts = [1, 2, 4];
const tpCount = (t, size) => Math.max(100, Math.round((t.startsWith('shmkit') ? (size > 1000 ? 200_000 : 500_000) : (size > 1000 ? 50_000 : 100_000)) * q));
const latCount = Math.max(100, Math.round(20_000 * q));

console.log(`# shmkit topic (fan-out) benchmark\n\n${machine()}; ${reps} repetition(s), interleaved; each trial a fresh set of processes.\n`);
for (const [id, reason] of skipped) console.log(`${ALL.find((t) => t.id === id).label}: skipped, ${reason}\n`);
const res = new Map();
const add = (key, v) => (res.has(key) ? res.get(key) : res.set(key, []).get(key)).push(v);
const run = async (t, args) => {
  if (skipped.has(t.id)) return null;
  const { result } = await trial('fanout.mjs', [t.id, ...args], { timeoutMs: 300_000 });
  if (result.skipped) { // went missing during the run
    skipped.set(t.id, result.skipped);
    console.log(`${t.label}: skipped, ${result.skipped}\n`);
    return null;
  }
  return result;
};
for (let r = 0; r < reps; r++) {
  for (const size of sizes) for (const n of fanouts) for (const t of transports) {
    const result = await run(t, ['tp', size, n, tpCount(t.id, size)]);
    if (!result) continue;
    add(`tp:${t.id}:${size}:${n}`, result.value);
    if (!argv.includes('--silent')) process.stderr.write(`  ${t.id} tp ${size} B x ${n}: ${(result.value / 1e6).toFixed(2)} M deliveries/s\n`);
  }
  for (const n of [1, 4]) for (const t of transports) {
    const result = await run(t, ['lat', 64, n, latCount]);
    if (result) add(`lat:${t.id}:${n}`, result);
  }
  for (const n of [1, 4]) for (const t of transports) {
    const result = await run(t, ['cost', 64, n, tpCount(t.id, 64)]);
    if (result) add(`cost:${t.id}:${n}`, result.value);
  }
}
const ran = transports.filter((t) => !skipped.has(t.id));
const med = (key) => (res.has(key) ? median(res.get(key)) : NaN);

const tpCell = (t, size, n) => {
  const v = res.get(`tp:${t}:${size}:${n}`);
  if (!v) return '-';
  return `${fmt(v.map((x) => x / 1e6))} M (${ratio(median(v), med(`tp:unix:${size}:${n}`))})`;
};
const cols = sizes.flatMap((s) => fanouts.map((n) => [s, n]));
const headers = ['deliveries per second', ...cols.map(([s, n]) => `${s} B x ${n}`)];
console.log(table(headers, ran.map((t) => [t.label, ...cols.map(([s, n]) => tpCell(t.id, s, n))])));
console.log('\n(ratio: against the Unix sockets, same size and fan-out)\n');

// shmkit against each peer: the same figures as shmkit / peer.
const peers = ran.filter((t) => !t.id.startsWith('shmkit'));
const shmkitModes = ran.filter((t) => t.id.startsWith('shmkit'));
if (peers.length && shmkitModes.length) {
  console.log(table(['deliveries per second, shmkit / peer', ...cols.map(([s, n]) => `${s} B x ${n}`)], shmkitModes.flatMap((s) => peers.map((p) => [
    `${s.id} / ${p.id}`,
    ...cols.map(([size, n]) => ratio(med(`tp:${s.id}:${size}:${n}`), med(`tp:${p.id}:${size}:${n}`))),
  ]))));
  console.log('');
}

const latCell = (t, n) => {
  const v = res.get(`lat:${t}:${n}`);
  if (!v) return '-';
  return `${fmt(v.map((x) => x.median_us))} / ${fmt(v.map((x) => x.p99_us))}`;
};
console.log(table(['publish-to-receive, 64 B: median / p99 µs', '1 subscriber', '4 subscribers'], ran.map((t) => [t.label, latCell(t.id, 1), latCell(t.id, 4)])));

const costCell = (t, n) => {
  const v = res.get(`cost:${t}:${n}`);
  return v ? fmt(v.map((x) => x / 1000)) : '-';
};
console.log(`\n${table(['publisher CPU per publish, 64 B: µs', '1 subscriber', '4 subscribers', '4 / 1'], ran.map((t) => [t.label, costCell(t.id, 1), costCell(t.id, 4), ratio(med(`cost:${t.id}:4`), med(`cost:${t.id}:1`))]))}`);
console.log('\n(the publishing process\'s user + system CPU time over its publishes, subscribers reading as fast as they can; for Redis and NATS the server, not the publisher, does the fan-out)');

// Targets (issue #12): the shmkit Topic in its default mode (publishSync / receiveSync).
const notMeasured = (id) => {
  if (skipped.has(id)) return `not measured: ${skipped.get(id)}`;
  if (only && !only.includes(id)) return `not measured: ${id} not in --only`;
  return 'not measured: no figure (a trial failed?)';
};
const targets = [];
{
  const label = 'publish cost at 4 subscribers within 1.5x of the cost at 1 (64 B, shmkit Topic, publisher CPU per publish)';
  const cost = med('cost:shmkit:4') / med('cost:shmkit:1');
  targets.push(Number.isFinite(cost)
    ? { target: label, measured: `${cost.toFixed(2)}x`, value: cost, met: cost <= 1.5 ? 'met' : 'missed' }
    : { target: label, measured: '-', value: null, met: notMeasured('shmkit') });
}
for (const [peer, name, want] of [['zeromq', 'ZeroMQ', 20], ['redis', 'Redis', 50]]) {
  const label = `fan-out to 4 subscribers at 64 B: at least ${want}x ${name} in deliveries per second`;
  const x = med('tp:shmkit:64:4') / med(`tp:${peer}:64:4`);
  targets.push(Number.isFinite(x) && x > 0
    ? { target: label, measured: ratio(x, 1), value: x, met: x >= want ? 'met' : 'missed' }
    : { target: label, measured: '-', value: null, met: Number.isFinite(med('tp:shmkit:64:4')) ? notMeasured(peer) : notMeasured('shmkit') });
}
console.log(`\n## Targets\n\n${table(['target', 'measured', 'met?'], targets.map((t) => [t.target, t.measured, t.met]))}`);
const perMsg = (med('tp:shmkit:64:1') / 1) / (med('tp:shmkit:64:4') / 4);
if (Number.isFinite(perMsg)) console.log(`\nFor comparison, messages per second at 1 subscriber over messages per second at 4 (deliveries / 4), which on this machine also counts the subscribers' share of its CPUs: ${perMsg.toFixed(2)}x.`);
console.log(`\nReproduce: \`${['node bench/topics.mjs', ...argv.filter((a, i) => a !== '--json' && argv[i - 1] !== '--json' && a !== '--silent')].join(' ')}\`.`);
if (jsonFile) {
  const rows = [];
  for (const [k, v] of res) rows.push({ pattern: 'topic', key: k, values: v });
  for (const t of targets) rows.push({ pattern: 'topic-target', target: t.target, value: t.value, met: t.met });
  for (const [id, reason] of skipped) rows.push({ pattern: 'topic-skipped', transport: id, reason });
  writeFileSync(jsonFile, JSON.stringify(rows, null, 2));
}

#!/usr/bin/env node
// Topic benchmark: fan-out from one publisher process to 1, 2 and 4 subscriber processes.
//
//   node bench/topics.mjs              3 interleaved repetitions
//   node bench/topics.mjs --quick      1 repetition, smaller counts
//   node bench/topics.mjs --json FILE  also write the rows as JSON
//
// Each trial is a fresh set of processes (bench/fixtures/fanout.mjs). Throughput: deliveries per
// second (subscribers x messages, from the first delivery to the last, over all subscribers).
// Latency: publish to receive, messages paced 50 µs apart, median and p99 of the slowest subscriber.
// The peer in the same run: one Unix domain socket per subscriber, length-prefixed frames, the
// publisher writing each frame to every socket (what a Node server does without a broker).
// Ratios are against that peer.
import { writeFileSync } from 'node:fs';
import { benchArgs, fmt, machine, median, ratio, table, trial } from './lib.mjs';

const { argv, quick, reps } = benchArgs();
const jsonAt = argv.indexOf('--json');
const jsonFile = jsonAt >= 0 ? argv[jsonAt + 1] : null;
const q = quick ? 0.2 : 1;
const transports = [
  { id: 'shmkit', label: 'shmkit Topic (publishSync / receiveSync: spin, then park)' },
  { id: 'shmkit-async', label: 'shmkit Topic, async (publish / for await, spin 0)' },
  { id: 'unix', label: 'Unix domain socket per subscriber' },
];
const sizes = [64, 4096];
const fanouts = [1, 2, 4];
const tpCount = (t, size) => Math.round((t.startsWith('shmkit') ? (size > 1000 ? 200_000 : 500_000) : (size > 1000 ? 50_000 : 100_000)) * q);
const latCount = Math.round(20_000 * q);

console.log(`# shmkit topic (fan-out) benchmark\n\n${machine()}; ${reps} repetition(s), interleaved; each trial a fresh set of processes.\n`);
const res = new Map();
const add = (key, v) => (res.has(key) ? res.get(key) : res.set(key, []).get(key)).push(v);
for (let r = 0; r < reps; r++) {
  for (const size of sizes) for (const n of fanouts) for (const t of transports) {
    const { result } = await trial('fanout.mjs', [t.id, 'tp', size, n, tpCount(t.id, size)], { timeoutMs: 300_000 });
    add(`tp:${t.id}:${size}:${n}`, result.value);
    if (!argv.includes('--silent')) process.stderr.write(`  ${t.id} tp ${size} B x ${n}: ${(result.value / 1e6).toFixed(2)} M deliveries/s\n`);
  }
  for (const n of [1, 4]) for (const t of transports) {
    const { result } = await trial('fanout.mjs', [t.id, 'lat', 64, n, latCount], { timeoutMs: 300_000 });
    add(`lat:${t.id}:${n}`, result);
  }
}
const tpCell = (t, size, n) => {
  const v = res.get(`tp:${t}:${size}:${n}`);
  return `${fmt(v.map((x) => x / 1e6))} M (${ratio(median(v), median(res.get(`tp:unix:${size}:${n}`)))})`;
};
const headers = ['deliveries per second', ...sizes.flatMap((s) => fanouts.map((n) => `${s} B x ${n}`))];
console.log(table(headers, transports.map((t) => [t.label, ...sizes.flatMap((s) => fanouts.map((n) => tpCell(t.id, s, n)))])));
console.log('\n(ratio: against the Unix sockets, same size and fan-out)\n');
const latCell = (t, n) => {
  const v = res.get(`lat:${t}:${n}`);
  return `${fmt(v.map((x) => x.median_us))} / ${fmt(v.map((x) => x.p99_us))}`;
};
console.log(table(['publish-to-receive, 64 B: median / p99 µs', '1 subscriber', '4 subscribers'], transports.map((t) => [t.label, latCell(t.id, 1), latCell(t.id, 4)])));
const perPublish = (n) => median(res.get(`tp:shmkit:64:${n}`)) / n;
const cost = perPublish(1) / perPublish(4);
console.log(`\n## Targets\n\n${table(['target', 'measured', 'met?'], [
  ['publish cost at 4 subscribers within 1.5x of the cost at 1 (64 B, shmkit Topic)', `${cost.toFixed(2)}x`, cost <= 1.5 ? 'yes' : 'no'],
  ['fan-out to 4 subscribers at 64 B: deliveries/s against the Unix sockets', ratio(median(res.get('tp:shmkit:64:4')), median(res.get('tp:unix:64:4'))), '-'],
])}\n\nZeroMQ, Redis and NATS are not in this run. Reproduce: \`node bench/topics.mjs${quick ? ' --quick' : ''}\`.`);
if (jsonFile) {
  const rows = [];
  for (const [k, v] of res) rows.push({ pattern: 'topic', key: k, values: v });
  writeFileSync(jsonFile, JSON.stringify(rows, null, 2));
}

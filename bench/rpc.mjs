#!/usr/bin/env node
// RPC benchmark: a call with a 64 B request and a 64 B response, between a client process and a
// server process, over shmkit RPC and the peers a Node user would pick instead.
//
//   node bench/rpc.mjs              3 interleaved repetitions
//   node bench/rpc.mjs --quick      1 repetition, smaller counts
//   node bench/rpc.mjs --json FILE  also write the rows as JSON
//   --reps N                        repetitions
//   --only a,b                      these transports only (ids: shmkit, shmkit-async, grpc, http,
//                                   zeromq, nats, ipc)
//
// Each trial is a fresh server process and client process (bench/fixtures/rpc-trial.mjs); every
// answer is checked. Round trip: one call at a time, median and p99. Calls per second: with 1 and
// with 32 calls in flight. A peer whose server or client library is missing is skipped, with what
// to install.
import { writeFileSync } from 'node:fs';
import { selectTransports } from './fanout-peers.mjs';
import { benchArgs, fmt, machine, median, ratio, table, trial } from './lib.mjs';

const { argv, quick, reps } = benchArgs();
const opt = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : null);
const jsonFile = opt('--json');
const only = opt('--only')?.split(',');
const ALL = [
  { id: 'shmkit', label: 'shmkit RPC (spin, then sleep: the default)' },
  { id: 'shmkit-async', label: 'shmkit RPC, async only (spin 0)' },
  { id: 'grpc', label: 'gRPC (@grpc/grpc-js), Unix socket' },
  { id: 'http', label: 'HTTP/1.1 keep-alive (node:http, undici), Unix socket' },
  { id: 'zeromq', label: 'ZeroMQ DEALER/ROUTER, ipc://' },
  { id: 'nats', label: 'NATS request/reply, loopback TCP' },
  { id: 'ipc', label: 'child_process IPC (json)' },
];
const { transports, skipped } = await selectTransports(ALL, only); // skipped: id -> what to install
const fast = (id) => id.startsWith('shmkit');
const counts = {
  rtt: (id) => Math.round((fast(id) && id !== 'shmkit-async' ? 100_000 : 10_000) * (quick ? 0.2 : 1)),
  tp1: (id) => Math.round((fast(id) && id !== 'shmkit-async' ? 100_000 : 10_000) * (quick ? 0.2 : 1)),
  tp32: (id) => Math.round((fast(id) ? 200_000 : 40_000) * (quick ? 0.2 : 1)),
};

console.log(`# shmkit RPC benchmark\n\n${machine()}; ${reps} repetition(s), interleaved; each trial a fresh server and client process; every answer checked.\n`);
for (const [id, reason] of skipped) console.log(`${ALL.find((t) => t.id === id).label}: skipped, ${reason}\n`);
const res = new Map();
const add = (key, v) => (res.has(key) ? res.get(key) : res.set(key, []).get(key)).push(v);
for (let r = 0; r < reps; r++) {
  for (const metric of ['rtt', 'tp1', 'tp32']) for (const t of transports) {
    if (skipped.has(t.id)) continue;
    const { result } = await trial('rpc-trial.mjs', [t.id, metric, counts[metric](t.id)], { timeoutMs: 300_000 });
    if (result.skipped) {
      skipped.set(t.id, result.skipped);
      console.log(`${t.label}: skipped, ${result.skipped}\n`);
      continue;
    }
    add(`${metric}:${t.id}`, result);
    if (!argv.includes('--silent')) process.stderr.write(`  ${t.id} ${metric}: ${metric === 'rtt' ? `${result.median_us.toFixed(1)} µs` : `${Math.round(result.value)} calls/s`}\n`);
  }
}
const ran = transports.filter((t) => !skipped.has(t.id));
const med = (key, f) => (res.has(key) ? median(res.get(key).map(f)) : NaN);
const rtt = (id) => med(`rtt:${id}`, (x) => x.median_us);
const tp = (id, n) => med(`tp${n}:${id}`, (x) => x.value);
const cell = (key, f, unit) => {
  const v = res.get(key);
  return v ? `${fmt(v.map(f))}${unit}` : '-';
};
console.log(table(
  ['64 B call', 'round trip, median µs', 'p99 µs', 'calls/s, 1 in flight', 'calls/s, 32 in flight', 'round trip vs gRPC', 'calls/s (32) vs gRPC'],
  ran.map((t) => [
    t.label,
    cell(`rtt:${t.id}`, (x) => x.median_us, ''),
    cell(`rtt:${t.id}`, (x) => x.p99_us, ''),
    cell(`tp1:${t.id}`, (x) => x.value / 1000, 'k'),
    cell(`tp32:${t.id}`, (x) => x.value / 1000, 'k'),
    ratio(rtt('grpc'), rtt(t.id)),
    ratio(tp(t.id, 32), tp('grpc', 32)),
  ]),
));
console.log('\n(ratios: how many times lower the round trip, and how many times more calls per second, than gRPC)');

const notMeasured = (id) => (skipped.has(id) ? `not measured: ${skipped.get(id)}` : only && !only.includes(id) ? `not measured: ${id} not in --only` : 'not measured');
const targets = [];
const check = (label, x, want, missing) => targets.push(Number.isFinite(x) && x > 0
  ? { target: label, measured: ratio(x, 1), value: x, met: x >= want ? 'met' : 'missed' }
  : { target: label, measured: '-', value: null, met: notMeasured(missing) });
check('round trip (spinning) at least 50x lower than gRPC over a Unix socket', rtt('grpc') / rtt('shmkit'), 50, Number.isFinite(rtt('grpc')) ? 'shmkit' : 'grpc');
check('round trip, async only, no slower than HTTP over a Unix socket', rtt('http') / rtt('shmkit-async'), 1, Number.isFinite(rtt('http')) ? 'shmkit-async' : 'http');
check('calls per second with 32 in flight at least 10x gRPC', tp('shmkit', 32) / tp('grpc', 32), 10, Number.isFinite(tp('grpc', 32)) ? 'shmkit' : 'grpc');
console.log(`\n**Targets:**\n\n${table(['target', 'measured', 'met?'], targets.map((t) => [t.target, t.measured, t.met]))}`);
console.log(`\nReproduce: \`${['node bench/rpc.mjs', ...argv.filter((a, i) => a !== '--json' && argv[i - 1] !== '--json' && a !== '--silent')].join(' ')}\`.`);
if (jsonFile) {
  const rows = [];
  for (const [k, v] of res) rows.push({ pattern: 'rpc', key: k, values: v });
  for (const t of targets) rows.push({ pattern: 'rpc-target', target: t.target, value: t.value, met: t.met });
  for (const [id, reason] of skipped) rows.push({ pattern: 'rpc-skipped', transport: id, reason });
  writeFileSync(jsonFile, JSON.stringify(rows, null, 2));
}

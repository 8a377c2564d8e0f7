#!/usr/bin/env node
// shmkit benchmark: channels against every local transport, then the events, topics, RPC, map and
// NATS sections (bench/events.mjs, topics.mjs, rpc.mjs, map.mjs, nats.mjs), in one run on one machine.
//
//   npm run bench                      3 interleaved repetitions (a few minutes)
//   npm run bench -- --quick           1 repetition, smaller counts (~30 s)
//   npm run bench -- --json out.json   also write [{pattern, transport, mode, metric, size, value, unit}]
//   npm run bench -- --patterns LIST   after the channels, these sections (events, topics, rpc,
//                                      map, nats; default all five; `none` for the channels only)
//
// Each trial is a fresh process pair (bench/fixtures/transport.mjs); every payload is verified.
// Figures are medians over repetitions; ratios are against the Unix domain socket measured in the
// same run (JSON also against child_process IPC), so the machine's noise cancels as far as it can.
// C reference programs (bench/c/, built here with `cc -O2`) measure the machine's physical limit for
// a spinning round trip and a 64 B ring in the same run; shmkit spin is also reported against them.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { availableParallelism } from 'node:os';
import { BENCH, benchArgs, buildC, cpuPair, fmt, machine, median, table, trial } from './lib.mjs';

const { argv, quick, reps } = benchArgs();
const jsonFile = argv.includes('--json') ? argv[argv.indexOf('--json') + 1] : null;
const progress = !argv.includes('--silent');

const transports = [
  { id: 'shmkit', mode: 'spin', label: 'shmkit channel (default: spin, then park)', json: ['shmkit', 'spin'] },
  { id: 'shmkit', mode: 'async', label: 'shmkit channel, async-only (spin 0, for await)', json: ['shmkit', 'async'] },
  { id: 'shmkit', mode: 'jsonb', label: 'shmkit channel, jsonb codec (binary JSON values)', json: ['shmkit', 'jsonb'], only: ['json'] },
  { id: 'shmkit', mode: 'into', label: 'shmkit channel, receiveInto (copy into a reused buffer)', json: ['shmkit', 'receive_into'], only: ['tp4k', 'tp1m'] },
  { id: 'shmkit', mode: 'view', label: 'shmkit channel, zero-copy receive (views)', json: ['shmkit', 'zero-copy'], only: ['tp64', 'tp4k', 'tp1m'] },
  // Not a transport: the physical limit (C, spinning on both sides), built and run in this run.
  { id: 'c', mode: 'spin', label: 'C limit: spin ping-pong / SPSC ring, same record design', json: ['c-limit', 'spin'], only: ['rtt', 'tp64'] },
  { id: 'uds', mode: '-', label: 'Unix domain socket, length-prefixed', json: ['unix_socket', 'default'] },
  { id: 'tcp', mode: '-', label: 'TCP 127.0.0.1, noDelay, length-prefixed', json: ['tcp', 'default'] },
  { id: 'pipe', mode: '-', label: 'pipe (child stdio), length-prefixed', json: ['pipe', 'default'] },
  { id: 'ipc-json', mode: '-', label: 'child_process IPC, json', json: ['child_process', 'json'] },
  { id: 'ipc-advanced', mode: '-', label: 'child_process IPC, advanced', json: ['child_process', 'advanced'] },
  { id: 'worker', mode: '-', label: 'worker_threads MessagePort (in-process)', json: ['message_port', 'default'] },
];

const q = quick ? 0.25 : 1;
const pair = cpuPair();

// The C references spin on both sides, so, like shmkit spin, they need two CPUs; without `cc` (or
// with one CPU) their rows are skipped with a note.
const cRef = availableParallelism() < 2 ? { error: 'one CPU only: the C references spin and need two' } : buildC();
if (cRef.error) transports.splice(transports.findIndex((t) => t.id === 'c'), 1);
const cProgram = (m) => cRef.bins[m.metric === 'rtt' ? 'pingpong' : 'ring'];

const rttCount = (t) => Math.round((t.id === 'c' || (t.id === 'shmkit' && t.mode === 'spin') ? 50000 : 4000) * q);
const metrics = [
  { key: 'rtt', metric: 'rtt', size: '64', count: rttCount },
  // The same round trips with both processes pinned to one CPU, and to two different CPUs (see
  // docs/benchmarks.md: a socket's round trip depends on this placement more than on anything else).
  // Spinning on one CPU only burns the slice the peer needs, so shmkit spin is not run there.
  ...(pair ? [
    { key: 'rtt_same', metric: 'rtt', size: '64', count: rttCount, place: 'same', skip: (t) => t.mode === 'spin' || t.id === 'worker' },
    { key: 'rtt_split', metric: 'rtt', size: '64', count: rttCount, place: 'split', skip: (t) => t.id === 'worker' },
  ] : []),
  { key: 'tp64', metric: 'tp', size: '64', count: (t) => Math.round((t.id === 'shmkit' || t.id === 'c' ? (t.mode === 'async' ? 1_000_000 : 3_000_000) : 200_000) * q) },
  { key: 'tp4k', metric: 'tp', size: '4096', count: (t) => Math.round((t.id === 'shmkit' ? 300_000 : 50_000) * q) },
  { key: 'tp1m', metric: 'tp', size: '1048576', count: (t) => Math.max(50, Math.round((t.id === 'shmkit' ? 3000 : 500) * q)) },
  { key: 'json', metric: 'tp', size: 'json', count: (t) => Math.round((t.id === 'shmkit' ? 300_000 : 100_000) * q) },
];

// Metric-major: every transport's trial of one metric runs back to back, so each ratio compares
// figures taken within seconds of each other (this VM has slow and fast phases that last minutes).
// Round trips get RTT_TRIALS trials per repetition: they are cheap, and each one depends on where
// the scheduler happens to place the two processes (see docs/benchmarks.md).
const RTT_TRIALS = quick ? 1 : 3; // --quick keeps `npm start` near its 30 seconds
const plan = [];
for (const m of metrics) {
  for (let k = 0; k < (m.metric === 'rtt' ? RTT_TRIALS : 1); k++) {
    for (const t of transports) if ((!t.only || t.only.includes(m.metric === 'rtt' ? 'rtt' : m.key)) && !m.skip?.(t)) plan.push({ t, m });
  }
}

const results = new Map(); // `${t.id}/${t.mode}/${m.key}` -> { value: [], p99: [], unit }
const key = (t, m) => `${t.id}/${t.mode}/${m.key}`;

console.log(`# shmkit transport benchmark\n\n${machine()}; ${reps} repetition(s), interleaved; each trial a fresh process pair; every payload verified.\n`);
for (let r = 0; r < reps; r++) {
  for (const [i, { t, m }] of plan.entries()) {
    if (progress) process.stderr.write(`\r  repetition ${r + 1}/${reps}: trial ${i + 1}/${plan.length} ${t.id} ${t.mode} ${m.key}        `);
    // Placement: the parent on the first CPU of the pair, the child on the same one or the other.
    const pin = m.place ? { prefix: ['taskset', '-c', String(pair[0])], env: { BENCH_CHILD_CPU: String(pair[m.place === 'same' ? 0 : 1]) } } : {};
    const { result } = t.id === 'c'
      ? await trial(`c/${m.metric === 'rtt' ? 'pingpong' : 'ring'}.c`, [m.count(t), m.size], { timeoutMs: 180000, exec: cProgram(m), ...pin })
      : await trial('transport.mjs', [t.id, t.mode, m.metric, m.size, m.count(t)], { timeoutMs: 180000, ...pin });
    const k = key(t, m);
    if (!results.has(k)) results.set(k, { value: [], p99: [], unit: result.unit ?? 'us' });
    const e = results.get(k);
    if (m.metric === 'rtt') {
      e.value.push(result.median_us);
      e.p99.push(result.p99_us);
    } else e.value.push(result.value);
  }
}
if (progress) process.stderr.write('\n');

const get = (id, mode, k) => results.get(`${id}/${mode}/${k}`);
const med = (id, mode, k) => (get(id, mode, k) ? median(get(id, mode, k).value) : NaN);
const ratio = (x) => (Number.isFinite(x) ? (x >= 10 ? `${x.toFixed(0)}x` : `${x.toFixed(1)}x`) : '-');

// Round trip
console.log('## Round trip, 64 bytes (lower is better)\n');
const udsRtt = med('uds', '-', 'rtt');
const places = [['rtt', 'unpinned'], ...(pair ? [['rtt_same', 'one CPU'], ['rtt_split', 'two CPUs']] : [])];
console.log(table(['transport', ...places.flatMap(([, p]) => [`${p}: median µs (p99)`, 'socket / this'])], transports.filter((t) => get(t.id, t.mode, 'rtt')).map((t) => [
  t.label,
  ...places.flatMap(([k]) => {
    const e = get(t.id, t.mode, k);
    if (!e) return ['-', '-'];
    return [`${fmt(e.value)} (${fmt([median(e.p99)])})`, ratio(med('uds', '-', k) / median(e.value))];
  }),
])));
if (pair) console.log(`\nPinned with taskset: "one CPU" runs both processes on CPU ${pair[0]}, "two CPUs" the parent on ${pair[0]} and the child on ${pair[1]}. Spinning needs two CPUs, so shmkit spin and the C limit are not run on one.`);
if (cRef.error) console.log(`\nC limit rows skipped: ${cRef.error}.`);

// Throughput
console.log('\n## Throughput (higher is better); ratio to the Unix socket in parentheses\n');
const cols = [['tp64', '64 B msg/s'], ['tp4k', '4 KiB MB/s'], ['tp1m', '1 MiB MB/s'], ['json', '~200 B JSON object msg/s']];
const num = (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)} M` : v >= 1e4 ? `${(v / 1e3).toFixed(0)} k` : v.toFixed(0));
console.log(table(['transport', ...cols.map((c) => c[1])], transports.map((t) => [t.label, ...cols.map(([k]) => {
  const e = get(t.id, t.mode, k);
  if (!e) return '-';
  const v = median(e.value);
  const unitIsMsgs = k === 'tp64' || k === 'json';
  const shown = unitIsMsgs ? num(v) : v.toFixed(0);
  const spread = e.value.length > 1 ? ` [${unitIsMsgs ? num(Math.min(...e.value)) : Math.min(...e.value).toFixed(0)}-${unitIsMsgs ? num(Math.max(...e.value)) : Math.max(...e.value).toFixed(0)}]` : '';
  return `${shown}${spread} (${ratio(v / med('uds', '-', k))})`;
})])));

// shmkit against the physical limit of this machine, measured in this run
// A round trip is shmkit's time over the C ping-pong's (1x would be the limit; higher is slower);
// throughput is shmkit's rate over the C ring's (1x would be the limit; lower is slower). Unlike the
// socket ratios, these do not move with what the VM's wake-ups cost: no one sleeps on either side.
const cLimit = cRef.error ? [] : [
  ...places.filter(([k]) => k !== 'rtt_same').map(([k, p]) => ({ label: `round trip 64 B, ${p}: median µs`, key: k, metric: 'rtt_median', placement: k === 'rtt_split' ? 'two_cpus' : 'unpinned', shmkit: med('shmkit', 'spin', k), c: med('c', 'spin', k), show: (v) => fmt([v], 3) })),
  { label: 'throughput 64 B: msg/s', key: 'tp64', metric: 'throughput', shmkit: med('shmkit', 'spin', 'tp64'), c: med('c', 'spin', 'tp64'), show: (v) => num(v) },
].map((r) => ({ ...r, ratio: r.shmkit / r.c }));
if (cLimit.length) {
  console.log('\n## shmkit / C limit (spinning; same run)\n');
  const x = (v) => (Number.isFinite(v) ? (v >= 10 ? `${v.toFixed(0)}x` : `${v.toFixed(2)}x`) : '-');
  const show = (r, v) => (Number.isFinite(v) ? r.show(v) : '-');
  console.log(table(['figure', 'shmkit channel (spin)', 'C limit', 'shmkit / C limit'], cLimit.map((r) => [r.label, show(r, r.shmkit), show(r, r.c), x(r.ratio)])));
  console.log('\nRound trip: times the limit (1x is the limit). Throughput: fraction of the limit\'s rate (1x is the limit). Both sides spin, so the ratios do not depend on what the VM\'s wake-ups cost.');
}

// Targets
const checks = [
  ['throughput at 64 B ≥ 20x the Unix socket', med('shmkit', 'spin', 'tp64') / med('uds', '-', 'tp64'), 20],
  ['throughput at 1 MiB ≥ 10x the Unix socket (copying receive)', med('shmkit', 'spin', 'tp1m') / med('uds', '-', 'tp1m'), 10],
  ['throughput at 1 MiB ≥ 10x the Unix socket (receiveInto a reused buffer)', med('shmkit', 'into', 'tp1m') / med('uds', '-', 'tp1m'), 10],
  ['throughput at 1 MiB ≥ 10x the Unix socket (zero-copy receive)', med('shmkit', 'view', 'tp1m') / med('uds', '-', 'tp1m'), 10],
  ['round trip (spin) ≥ 100x lower than the Unix socket, unpinned', udsRtt / med('shmkit', 'spin', 'rtt'), 100],
  ...(pair ? [['round trip (spin) ≥ 100x lower than the Unix socket, two CPUs', med('uds', '-', 'rtt_split') / med('shmkit', 'spin', 'rtt_split'), 100]] : []),
  ['round trip in async-only mode no slower than the Unix socket, unpinned', udsRtt / med('shmkit', 'async', 'rtt'), 1],
  ...(pair ? [
    ['round trip in async-only mode no slower than the Unix socket, one CPU', med('uds', '-', 'rtt_same') / med('shmkit', 'async', 'rtt_same'), 1],
    ['round trip in async-only mode no slower than the Unix socket, two CPUs', med('uds', '-', 'rtt_split') / med('shmkit', 'async', 'rtt_split'), 1],
  ] : []),
  ['JSON objects ≥ 5x child_process IPC (json), jsonb codec', med('shmkit', 'jsonb', 'json') / med('ipc-json', '-', 'json'), 5],
  ['JSON objects ≥ 5x child_process IPC (json), json text codec', med('shmkit', 'spin', 'json') / med('ipc-json', '-', 'json'), 5],
];
console.log('\n## Targets\n');
console.log(table(['target', 'measured', 'met?'], checks.map(([label, x, want]) => [label, ratio(x), x >= want ? 'yes' : 'no'])));
console.log(`\nReproduce: \`npm run bench\`${quick ? ' -- --quick' : ''} (median of ${reps} interleaved repetition(s), round trips ${RTT_TRIALS} trials each; [min-max] across trials).`);

if (jsonFile) {
  const rows = [];
  const seen = new Set();
  for (const { t, m } of plan) {
    const e = get(t.id, t.mode, m.key);
    if (!e || seen.has(e)) continue;
    seen.add(e);
    const size = m.size === 'json' ? 'json' : Number(m.size);
    const [transport, mode] = t.json;
    if (m.metric === 'rtt') {
      // An extra field says where the processes ran: unpinned, or pinned to one CPU or two.
      const placement = m.place === 'same' ? 'one_cpu' : m.place === 'split' ? 'two_cpus' : 'unpinned';
      rows.push({ transport, mode, metric: 'rtt_median', size, value: median(e.value), unit: 'us', placement });
      rows.push({ transport, mode, metric: 'rtt_p99', size, value: median(e.p99), unit: 'us', placement });
    } else rows.push({ transport, mode, metric: 'throughput', size, value: median(e.value), unit: e.unit });
  }
  // shmkit spin over the C limit of the same run: `of` names the figure, unit "x" (see above).
  for (const r of cLimit) {
    if (!Number.isFinite(r.ratio)) continue;
    rows.push({ transport: 'shmkit', mode: 'spin', metric: 'ratio_to_c_limit', of: r.metric, size: 64, value: r.ratio, unit: 'x', ...(r.placement ? { placement: r.placement } : {}) });
  }
  writeFileSync(jsonFile, JSON.stringify(rows.map((r) => ({ pattern: 'channel', ...r })), null, 2) + '\n');
  console.log(`\nWrote ${rows.length} figures to ${jsonFile}.`);
}

// The patterns' sections, each its own program (bench/events.mjs, topics.mjs, rpc.mjs, map.mjs, nats.mjs),
// with the same --quick, --reps and --silent; their --json rows (with `pattern` set) join this
// run's file.
// `--patterns events,rpc` runs those only, `--patterns none` none.
const patternsAt = argv.indexOf('--patterns');
const patterns = patternsAt >= 0 ? (argv[patternsAt + 1] === 'none' ? [] : argv[patternsAt + 1].split(',')) : ['events', 'topics', 'rpc', 'map', 'nats'];
for (const p of patterns) {
  if (!['events', 'topics', 'rpc', 'map', 'nats'].includes(p)) throw new Error(`--patterns: unknown section ${p} (events, topics, rpc, map, nats, or none)`);
  console.log(`\n---\n`);
  const tmp = jsonFile ? join(mkdtempSync(join(tmpdir(), 'shmkit-bench-')), `${p}.json`) : null;
  const args = [join(BENCH, `${p}.mjs`), ...(quick ? ['--quick'] : []), ...(argv.includes('--reps') ? ['--reps', String(reps)] : []), ...(progress ? [] : ['--silent']), ...(tmp ? ['--json', tmp] : [])];
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  if (r.status !== 0) {
    console.log(`bench/${p}.mjs failed (${r.status ?? r.signal})`);
    process.exitCode = 1;
  }
  if (tmp && existsSync(tmp)) {
    const rows = JSON.parse(readFileSync(jsonFile, 'utf8'));
    rows.push(...JSON.parse(readFileSync(tmp, 'utf8')));
    writeFileSync(jsonFile, JSON.stringify(rows, null, 2) + '\n');
    rmSync(dirname(tmp), { recursive: true, force: true });
  }
}

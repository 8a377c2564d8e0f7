#!/usr/bin/env node
// Event benchmark: the notify-to-wake round trip between two processes, against a signal round trip.
//
//   node bench/events.mjs                     3 interleaved repetitions (about 2 minutes on 2 vCPUs)
//   node bench/events.mjs --quick             1 repetition, 5,000 round trips per trial
//   node bench/events.mjs --reps N --count M  N repetitions of M round trips per trial (default 20,000)
//   node bench/events.mjs --json [FILE]       also print (or write to FILE) rows like npm run bench's
//
// A round trip: process A notifies id 0 on event X; process B, waiting on X, notifies id 0 on event
// Y; A, waiting on Y, wakes. Three ways of waiting (bench/fixtures/event-pingpong.mjs):
//   parked async   `await wait({ spin: 0 })` on both sides
//   parked sync    `waitSync({ spin: 0 })` on both sides
//   spinning sync  `waitSync()` on both sides (the default spin, then park)
// and the reference, measured the same way: process.kill(pid, 'SIGUSR1') answered by
// process.kill(ppid, 'SIGUSR1'), each side woken through its event loop.
//
// Every trial is a fresh process pair, timed round trip by round trip with performance.now() after
// 2,000 warm-up round trips. Like npm run bench, round trips run unpinned and, where taskset allows
// two CPUs, with both processes on one CPU and on two CPUs (docs/benchmarks.md, "Placement"); the
// spinning mode is not run on one CPU, where a spinning waiter burns the slice its peer needs.
// Figures are medians over repetitions ([min-max] across them); ratios are against the signal round
// trip of the same placement in the same run.
import { writeFileSync } from 'node:fs';
import { benchArgs, cpuPair, fmt, machine, median, table, trial } from './lib.mjs';

const { argv, quick, reps } = benchArgs();
const countAt = argv.indexOf('--count');
const count = (countAt >= 0 && Number(argv[countAt + 1])) || (quick ? 5000 : 20000);
const jsonAt = argv.indexOf('--json');
const json = jsonAt >= 0 ? { file: argv[jsonAt + 1] !== undefined && !argv[jsonAt + 1].startsWith('--') ? argv[jsonAt + 1] : null } : null;
const progress = !argv.includes('--silent');

const modes = [
  { mode: 'async', label: 'shmkit Event, parked async (`await wait({ spin: 0 })`)', json: ['shmkit_event', 'async'] },
  { mode: 'sync', label: 'shmkit Event, parked sync (`waitSync({ spin: 0 })`)', json: ['shmkit_event', 'sync'] },
  { mode: 'spin', label: 'shmkit Event, spinning sync (`waitSync()`)', json: ['shmkit_event', 'spin'] },
  { mode: 'signal', label: 'signal: `process.kill(pid, \'SIGUSR1\')` and back', json: ['signal', 'SIGUSR1'] },
];
const pair = cpuPair();
const places = [
  { key: 'unpinned', label: 'unpinned' },
  ...(pair ? [
    { key: 'one_cpu', label: 'one CPU', child: pair[0], skip: (m) => m.mode === 'spin' },
    { key: 'two_cpus', label: 'two CPUs', child: pair[1] },
  ] : []),
];

// Placement-major, modes back to back: each ratio compares trials taken seconds apart.
const plan = [];
for (const p of places) for (const m of modes) if (!p.skip?.(m)) plan.push({ m, p });

const results = new Map(); // `${mode}/${place}` -> { median: [], p99: [] }
const key = (m, p) => `${m.mode}/${p.key}`;
console.log(`# shmkit event benchmark\n\n${machine()}; ${reps} repetition(s) of ${count.toLocaleString('en-US')} round trips per trial, interleaved; each trial a fresh process pair.\n`);
for (let r = 0; r < reps; r++) {
  for (const [i, { m, p }] of plan.entries()) {
    if (progress) process.stderr.write(`\r  repetition ${r + 1}/${reps}: trial ${i + 1}/${plan.length} ${m.mode} ${p.key}        `);
    const pin = p.child === undefined ? {} : { prefix: ['taskset', '-c', String(pair[0])], env: { BENCH_CHILD_CPU: String(p.child) } };
    const { result } = await trial('event-pingpong.mjs', [m.mode, count], { timeoutMs: 300000, ...pin });
    if (!results.has(key(m, p))) results.set(key(m, p), { median: [], p99: [] });
    results.get(key(m, p)).median.push(result.median_us);
    results.get(key(m, p)).p99.push(result.p99_us);
  }
}
if (progress) process.stderr.write('\n');

const get = (m, p) => results.get(key(m, p));
const signal = modes.find((m) => m.mode === 'signal');
/** How many times faster than the signal round trip of the same placement (signal / this). */
const vsSignal = (m, p) => (get(m, p) && get(signal, p) ? median(get(signal, p).median) / median(get(m, p).median) : NaN);
const x = (v) => (Number.isFinite(v) ? (v >= 10 ? `${v.toFixed(0)}x` : `${v.toFixed(1)}x`) : '-');

console.log('## Round trip, notify to wake and back (lower is better)\n');
console.log(table(['round trip', ...places.flatMap((p) => [`${p.label}: median µs (p99)`, 'signal / this'])], modes.map((m) => [
  m.label,
  ...places.flatMap((p) => {
    const e = get(m, p);
    return e ? [`${fmt(e.median)} (${fmt([median(e.p99)])})`, x(vsSignal(m, p))] : ['-', '-'];
  }),
])));
if (pair) console.log(`\nPinned with taskset: "one CPU" runs both processes on CPU ${pair[0]}, "two CPUs" the parent on ${pair[0]} and the child on ${pair[1]}. Spinning needs two CPUs, so the spinning mode is not run on one.`);

const targets = [
  ...places.map((p) => [`parked async no slower than the signal round trip, ${p.label}`, vsSignal(modes[0], p), 1]),
  ...places.filter((p) => p.key !== 'one_cpu').map((p) => [`spinning ≥ 50x faster than the signal round trip, ${p.label}`, vsSignal(modes[2], p), 50]),
];
console.log('\n## Targets\n');
console.log(table(['target', 'measured (signal / event)', 'met?'], targets.map(([label, v, want]) => [label, x(v), Number.isFinite(v) ? (v >= want ? 'yes' : 'no') : '-'])));
console.log(`\nReproduce: \`node bench/events.mjs${quick ? ' --quick' : ''}\` (median of ${reps} interleaved repetition(s); [min-max] across them; p99 is the median of the trials' p99s).`);

if (json) {
  // The rows of npm run bench --json: {pattern, transport, mode, metric, size, value, unit, placement}; an
  // event carries no payload (size 0). Ratios: metric "ratio_to_signal", of "rtt_median", unit "x".
  const rows = [];
  for (const { m, p } of plan.filter((e, i) => plan.findIndex((f) => key(f.m, f.p) === key(e.m, e.p)) === i)) {
    const e = get(m, p);
    const [transport, mode] = m.json;
    rows.push({ pattern: 'event', transport, mode, metric: 'rtt_median', size: 0, value: median(e.median), unit: 'us', placement: p.key });
    rows.push({ pattern: 'event', transport, mode, metric: 'rtt_p99', size: 0, value: median(e.p99), unit: 'us', placement: p.key });
    if (m !== signal && Number.isFinite(vsSignal(m, p))) rows.push({ pattern: 'event', transport, mode, metric: 'ratio_to_signal', of: 'rtt_median', size: 0, value: vsSignal(m, p), unit: 'x', placement: p.key });
  }
  if (json.file) {
    writeFileSync(json.file, JSON.stringify(rows, null, 2) + '\n');
    console.log(`\nWrote ${rows.length} figures to ${json.file}.`);
  } else {
    console.log('\n' + JSON.stringify(rows));
  }
}

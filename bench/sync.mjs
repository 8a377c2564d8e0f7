#!/usr/bin/env node
// Foundation benchmark: uncontended primitives, cross-process round trips against local peers, and
// an strace count proving that uncontended operations make no futex call.
//   node bench/sync.mjs [--reps N] [--quick]
// Every trial runs in a fresh process; repetitions are interleaved; figures are medians with the
// min-max of the repetitions in parentheses.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, fixture, fmt, machine, median, ratio, table, trial } from './lib.mjs';

const { quick, reps } = benchArgs();
const N_UNC = quick ? 1_000_000 : 5_000_000;
const N_RT = quick ? 3000 : 20000;

const uncOps = [
  ['cas-floor', 'two 64-bit Atomics.compareExchange (the floor)'],
  ['mutex-lock-unlock', 'Mutex lock() + unlock()'],
  ['mutex-trylock', 'Mutex tryLock() + guard.unlock()'],
  ['sem-post-wait', 'Semaphore post() + wait()'],
  ['sem-post-trywait', 'Semaphore post() + tryWait()'],
  ['sem-named', 'peer: POSIX named semaphore sem_post + sem_trywait (glibc, via N-API)'],
];
const rtModes = [
  ['sem-spin', 'shmkit Semaphore, spin then park (default)'],
  ['sem-async-spin', 'shmkit Semaphore wait, spin then park'],
  ['sem-park', 'shmkit Semaphore, parked only (spin 0)'],
  ['sem-async-park', 'shmkit Semaphore wait, parked only (spin 0)'],
  ['uds', 'peer: Unix domain socket, 64 B echo'],
  ['pipe', 'peer: pipe (child stdio), 64 B echo'],
  ['ipc', 'peer: child_process IPC (json), small object'],
];

console.log(`# shmkit foundation benchmark\n\n${machine()}, ${reps} repetition(s), each trial a fresh process.\n`);

const unc = Object.fromEntries(uncOps.map(([k]) => [k, []]));
const rt = Object.fromEntries(rtModes.map(([k]) => [k, { median: [], p99: [] }]));
for (let r = 0; r < reps; r++) {
  for (const [op] of uncOps) unc[op].push((await trial('uncontended.mjs', [op, N_UNC])).result.ns);
  for (const [mode] of rtModes) {
    const { result } = await trial('pingpong.mjs', [mode, N_RT]);
    rt[mode].median.push(result.median_us);
    rt[mode].p99.push(result.p99_us);
  }
  process.stderr.write(`repetition ${r + 1}/${reps} done\n`);
}

const floor = median(unc['cas-floor']);
const named = median(unc['sem-named']);
console.log('## Uncontended operations (one process), ns per pair\n');
console.log(table(['operation', 'ns', 'vs CAS floor', 'vs named semaphore'], uncOps.map(([k, label]) => [label, fmt(unc[k], 1), ratio(median(unc[k]), floor), ratio(median(unc[k]), named)])));

const uds = median(rt.uds.median);
console.log('\n## Cross-process round trip (ping-pong between two processes), µs\n');
console.log(table(['transport', 'median µs', 'p99 µs', 'Unix socket / this (median)'], rtModes.map(([k, label]) => [label, fmt(rt[k].median), fmt(rt[k].p99), ratio(uds, median(rt[k].median))])));

// strace: futex calls of 1,000,000 uncontended operations vs. the same process doing nothing.
console.log('\n## System calls on the uncontended path\n');
const hasStrace = spawnSync('strace', ['-V']).status === 0;
if (!hasStrace) {
  console.log('strace is not installed: skipped.');
} else {
  // shmkit's futexes live in shared mappings: plain FUTEX_WAIT / FUTEX_WAKE, never FUTEX_PRIVATE_FLAG.
  // Node, V8 and libuv use private futexes (pthread mutexes, condition variables).
  const count = (op) => {
    const file = join(tmpdir(), `shmkit-strace-${process.pid}-${op}.txt`);
    const args = op === 'control' ? [fixture('pingpong.mjs'), 'sem-park', '1000'] : [fixture('uncontended.mjs'), op, '1000000'];
    spawnSync('strace', ['-f', '-e', 'trace=futex', '-o', file, process.execPath, ...args], { stdio: 'ignore' });
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => /futex\(0x[0-9a-f]+, FUTEX_/.test(l));
    rmSync(file, { force: true });
    // glibc's pthread_join waits on a shared FUTEX_WAIT_BITSET; shmkit issues plain FUTEX_WAIT/FUTEX_WAKE.
    return { all: lines.length, shared: lines.filter((l) => /, FUTEX_(WAIT|WAKE), /.test(l)).length };
  };
  const rows = [
    ['noop', 'baseline: the same process, 1,000,000 empty calls'],
    ['mutex-lock-unlock', '1,000,000 x Mutex lock() + unlock()'],
    ['sem-post-wait', '1,000,000 x Semaphore post() + wait()'],
    ['control', 'control: 1,000 (+1,000 warm-up) parked cross-process round trips (spin 0)'],
  ].map(([op, label]) => {
    const c = count(op);
    return [label, String(c.all), String(c.shared)];
  });
  console.log(table(['run (strace -f -e trace=futex)', 'futex calls, all threads', 'plain FUTEX_WAIT/WAKE (shmkit)'], rows));
  console.log('\nIn the uncontended rows every futex call comes from Node itself (private futexes of its threads, glibc thread joins):\nshmkit made no futex call. The control row shows that the count does see shmkit\'s calls when a wait must park.');
}
console.log(`\nReproduce: \`npm run bench:sync\` (or \`node bench/sync.mjs --reps ${reps}\`).`);

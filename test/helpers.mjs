// Shared test helpers: unique names, child processes with watchdogs, cleanup of every segment.
import { spawn } from 'node:child_process';
import { Segment } from 'shmkit';
import { randomBytes } from 'node:crypto';
import { readdirSync, unlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const FIXTURES = join(ROOT, 'test', 'fixtures');

const created = new Set();

/** A name no other test or run uses (fits the 23-character limit). */
export function uniq(tag = 't') {
  const n = `${tag.slice(0, 6)}${process.pid.toString(36)}${randomBytes(4).toString('hex')}`;
  created.add(n);
  return n;
}

/** A unique name of `length` characters (past 23 it is stored under a hashed object name). */
export function uniqLong(tag, length, fill = 'x') {
  const n = uniq(tag).padEnd(length, fill);
  created.add(n);
  return n;
}

/** Removes every segment and named semaphore made with uniq() names. Call in after(). */
export function cleanupAll() {
  // Every entry a unique name produced: the name itself, and derived ones (a stream's ".0"/".1").
  const entries = readdirSync('/dev/shm');
  for (const n of created) {
    for (const e of entries) {
      if (e === `shmkit-${n}` || e.startsWith(`shmkit-${n}.`) || e === `sem.${n}`) unlinkSync(`/dev/shm/${e}`);
    }
    if (n.length > 23) Segment.unlink(n); // a long name's object is stored under a hashed name
  }
  created.clear();
}

/** Rejects if `promise` does not settle within `ms` (a watchdog, not a performance assertion). */
export function watchdog(promise, ms, what) {
  let t;
  const timer = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`watchdog: ${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timer]).finally(() => clearTimeout(t));
}

/**
 * Starts `node <options.script> role json` (a test child, see fixtures/child-main.mjs), or with role
 * '' just `node <options.script>`. Returns { child, lines, exited, waitFor(re) }.
 * `exited` resolves with { code, signal, out } (never rejects); every use goes through watchdog().
 */
export function run(role, args = {}, options = {}) {
  if (!options.script) throw new Error(`run(${role}): options.script names the child to start`);
  const argv = role === '' ? [options.script] : [options.script, role, JSON.stringify(args)];
  const child = spawn(options.execPath ?? process.execPath, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...(options.env ?? {}) },
    ...(options.spawn ?? {}),
  });
  let out = '';
  let err = '';
  const listeners = [];
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    out += d;
    for (const l of listeners.slice()) l();
  });
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, out, err }));
  });
  const waitFor = (re, ms = 30000) =>
    watchdog(
      new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(re);
          if (m) {
            listeners.splice(listeners.indexOf(check), 1);
            resolve(m);
          }
        };
        listeners.push(check);
        check();
        exited.then(() => {
          if (!out.match(re)) reject(new Error(`child ${role} exited before printing ${re}: ${err || out}`));
        });
      }),
      ms,
      `child ${role} printing ${re}`,
    );
  return { child, exited, waitFor, get out() { return out; }, get err() { return err; } };
}

/**
 * run() bound to one test child of test/fixtures, named by its concept:
 * `const lockChild = runner('lock-child.mjs'); lockChild('holdLock', { name })`.
 */
export const runner = (script) => (role, args, options = {}) => run(role, args, { ...options, script: join(FIXTURES, script) });

/** Waits for a child to exit and returns its parsed last JSON line; throws with stderr on failure. */
export async function result(proc, ms = 60000, what = 'child') {
  const r = await watchdog(proc.exited, ms, what);
  if (r.code !== 0) throw new Error(`${what} exited with ${r.code ?? r.signal}: ${r.err}`);
  const lines = r.out.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The shmkit command in a child process (CLI tests) ------------------------------------------------

export const SHMKIT = join(ROOT, 'bin', 'shmkit.js');
const running = new Set();
/** Kills every `shmkit` child still running (call in after()). */
export function killCliChildren() {
  for (const c of running) c.kill('SIGKILL');
}

/**
 * Starts `shmkit ...args`. Returns { child, done, waitFor(re, stream) }: `done` resolves with
 * { code, signal, stdout, stderr } and is watched (never waits forever); waitFor resolves once
 * `stream` ('stderr' or 'stdout') matches `re`.
 */
export function startCli(args, ms = 60_000) {
  const child = spawn(process.execPath, [SHMKIT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const text = { stdout: '', stderr: '' };
  const waiters = [];
  for (const s of ['stdout', 'stderr']) {
    child[s].setEncoding('utf8').on('data', (d) => {
      text[s] += d;
      for (const w of waiters.slice()) w();
    });
  }
  const closed = new Promise((resolve) =>
    child.on('close', (code, signal) => {
      running.delete(child);
      resolve({ code, signal, ...text });
    }),
  );
  const done = watchdog(closed, ms, `shmkit ${args.join(' ')}`);
  done.catch(() => child.kill('SIGKILL'));
  const waitFor = (re, stream = 'stderr') =>
    watchdog(
      new Promise((resolve, reject) => {
        const check = () => {
          if (re.test(text[stream])) {
            waiters.splice(waiters.indexOf(check), 1);
            resolve();
          }
        };
        waiters.push(check);
        check();
        closed.then(() => {
          if (!re.test(text[stream])) reject(new Error(`shmkit ${args.join(' ')} exited before printing ${re}: ${text.stderr}`));
        });
      }),
      30_000,
      `shmkit ${args.join(' ')} printing ${re}`,
    );
  return { child, done, waitFor };
}

/** Runs `shmkit ...args` to its end: { code, signal, stdout, stderr }. */
export const runCli = (args) => startCli(args).done;

/** Entries of /dev/shm that belong to object `name`: the object and its derived names (`name.*`). */
export const entriesOf = (name) => readdirSync('/dev/shm').filter((e) => e === `shmkit-${name}` || e.startsWith(`shmkit-${name}.`));

/**
 * Polls `cond` every 10 ms until it is true; fails after `ms` (a watchdog, not a performance
 * assertion), and then stops polling, so a failed wait leaves no timer keeping the test alive.
 */
export async function until(cond, what, ms = 20_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`watchdog: ${what} did not happen within ${ms} ms`);
    await sleep(10);
  }
}

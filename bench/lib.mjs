// Shared benchmark helpers: fresh-process trials, interleaved repetitions, medians with min-max.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { basename, dirname, join } from 'node:path';

export const BENCH = dirname(fileURLToPath(import.meta.url));
export const fixture = (name) => join(BENCH, 'fixtures', name);

/**
 * Runs `node fixture args...` (or, with `exec`, the program `exec args...`, e.g. a C reference
 * built by buildC()) and returns the JSON object it prints last. `prefix` goes in front (taskset).
 */
export function trial(file, args = [], { timeoutMs = 120000, prefix = [], env = {}, exec = null } = {}) {
  return new Promise((resolve, reject) => {
    const full = [...prefix, ...(exec ? [exec] : [process.execPath, fixture(file)]), ...args.map(String)];
    const child = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      if (code !== 0) return reject(new Error(`${file} ${args.join(' ')} failed (${code ?? signal}): ${err}`));
      const lines = out.trim().split('\n');
      resolve({ result: JSON.parse(lines[lines.length - 1]), stderr: err });
    });
  });
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** "median (min-max)" */
export function fmt(values, digits = 2) {
  const f = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(digits));
  if (values.length === 1) return f(values[0]);
  return `${f(median(values))} (${f(Math.min(...values))}-${f(Math.max(...values))})`;
}

export function table(headers, rows) {
  const lines = [`| ${headers.join(' | ')} |`, `|${headers.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
  return lines.join('\n');
}

export function ratio(a, b) {
  if (!(a > 0) || !(b > 0)) return '-';
  const r = a / b;
  return r >= 10 ? `${r.toFixed(0)}x` : `${r.toFixed(1)}x`;
}

export function machine() {
  return `node ${process.version}, ${process.platform}-${process.arch}`;
}

/**
 * Two CPUs this process may run on, for placement experiments with taskset, or null (no taskset,
 * or fewer than two CPUs allowed).
 */
export function cpuPair() {
  const r = spawnSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const list = r.stdout.split(':').pop().trim();
  const cpus = [];
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a) && cpus.length < 2; c++) cpus.push(c);
  }
  return cpus.length === 2 && cpus.every(Number.isInteger) ? cpus : null;
}

/** The options every bench program takes: `--quick` (1 repetition, smaller counts) and `--reps N`. */
export function benchArgs() {
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  const i = argv.indexOf('--reps');
  const reps = (i >= 0 && Number(argv[i + 1])) || (quick ? 1 : 3);
  return { argv, quick, reps };
}

/** The C reference programs (bench/c/<name>.c): the physical limits the Node figures are set against. */
export const C_REFERENCES = ['pingpong', 'ring'];

/**
 * Compiles the C references with `cc -O2` into build/bench-c/ (a temporary folder if that is not
 * writable), again only when a source is newer than its program. Returns `{ bins: { name: path } }`,
 * or `{ error }` with a hint when there is no `cc` or the build fails (the caller skips the rows).
 */
export function buildC(names = C_REFERENCES) {
  const probe = spawnSync('cc', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    return { error: 'no C compiler (`cc`) found; install one to get the C reference rows (Debian/Ubuntu: `apt-get install gcc`, Alpine: `apk add build-base`, macOS: `xcode-select --install`)' };
  }
  let dir = null;
  for (const d of [join(BENCH, '..', 'build', 'bench-c'), join(tmpdir(), `shmkit-bench-c-${process.getuid?.() ?? 'u'}`)]) {
    try {
      mkdirSync(d, { recursive: true });
      dir = d;
      break;
    } catch {}
  }
  if (!dir) return { error: 'no writable folder for the C reference programs (build/bench-c or the temporary folder)' };
  const bins = {};
  for (const name of names) {
    const src = join(BENCH, 'c', `${name}.c`);
    const bin = join(dir, name);
    bins[name] = bin;
    let fresh = false;
    try {
      fresh = statSync(bin).mtimeMs >= Math.max(statSync(src).mtimeMs, statSync(join(BENCH, 'c', 'common.h')).mtimeMs);
    } catch {}
    if (fresh) continue;
    // Compile to a name of our own, then rename: a bench and a test building at once never run a
    // half-written program.
    const tmp = `${bin}.${process.pid}.tmp`;
    const r = spawnSync('cc', ['-O2', '-std=gnu11', '-o', tmp, src], { encoding: 'utf8' });
    if (r.error || r.status !== 0) {
      rmSync(tmp, { force: true });
      return { error: `\`cc -O2 ${basename(src)}\` failed: ${(r.stderr || String(r.error)).trim().split('\n').slice(0, 5).join(' ')}` };
    }
    renameSync(tmp, bin);
  }
  return { bins };
}

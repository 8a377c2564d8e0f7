#!/usr/bin/env node
// Runs the test suite with node:test and fails if /dev/shm gained entries while it ran.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const shm = () => new Set(readdirSync('/dev/shm'));
const before = shm();
const files = readdirSync(join(root, 'test'))
  .filter((f) => f.endsWith('.test.mjs'))
  .filter((f) => process.argv.length <= 2 || process.argv.slice(2).some((a) => f.includes(a.split('/').pop())))
  .sort()
  .map((f) => join('test', f));

if (files.length === 0) {
  // node --test without files would run its default glob (fixtures included): refuse instead.
  console.error(`no test file in test/ matches ${process.argv.slice(2).join(', ')} (filters match file names, e.g. "09-channel")`);
  process.exit(1);
}
console.log(`shmkit tests on node ${process.version}, ${files.length} files`);
// One file at a time: the tests start many processes on a 2-core machine, and spin-then-park
// waits measure nothing useful when files compete for the cores. --test-timeout is a last-resort
// watchdog; every wait inside the tests has its own.
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=120000', ...files], {
  cwd: root,
  stdio: 'inherit',
});
const leaked = [...shm()].filter((n) => !before.has(n));
if (leaked.length > 0) {
  console.error(`\nFAIL: the suite left ${leaked.length} entries in /dev/shm: ${leaked.join(', ')}`);
  process.exit(1);
}
console.log('/dev/shm: no entries left behind');
process.exit(r.status ?? 1);

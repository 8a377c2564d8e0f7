// Bun and Deno: the smoke suite (segments, locks, a channel with sync and async waits) runs in each,
// and each exchanges messages with Node across processes, in both directions. Neither may crash.
// The runtimes come from the npm registry (the bun and deno packages); .ci/run installs them and
// sets SHMKIT_BUN and SHMKIT_DENO. Outside CI a missing runtime is skipped with a hint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Channel } from 'shmkit';
import { ROOT, uniq, watchdog } from './helpers.mjs';

const FIXTURE = join(ROOT, 'test', 'fixtures', 'runtime-smoke.mjs');
const DIST = join(ROOT, 'dist', 'index.js');

function find(env, bin) {
  const candidates = [process.env[env], join(ROOT, 'node_modules', '.bin', bin)];
  for (const c of candidates) if (c && existsSync(c)) return c;
  const which = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() : null;
}

const runtimes = [
  { name: 'bun', bin: find('SHMKIT_BUN', 'bun'), args: (file, ...a) => [file, ...a] },
  { name: 'deno', bin: find('SHMKIT_DENO', 'deno'), args: (file, ...a) => ['run', '-A', file, ...a] },
];

for (const rt of runtimes) {
  const missing = rt.bin === null && `${rt.name} not found (CI installs it; locally: npm install --no-save ${rt.name}, or set SHMKIT_${rt.name.toUpperCase()})`;
  const skip = process.env.CI === 'true' ? false : missing;

  test(`${rt.name}: segments, locks and a channel with sync and async waits, and a clean exit`, { skip }, () => {
    assert.ok(rt.bin, missing);
    const r = spawnSync(rt.bin, rt.args(FIXTURE, 'smoke'), { encoding: 'utf8', timeout: 60_000, env: { ...process.env, SHMKIT_DIST: DIST } });
    assert.equal(r.signal, null, `${rt.name} crashed: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^ok$/m);
  });

  test(`${rt.name}: exchanges messages with Node across processes, both directions, sync and async`, { skip }, async () => {
    assert.ok(rt.bin, missing);
    const name = uniq(rt.name.slice(0, 3));
    const q = Channel.create(`${name}.q`, { capacity: 4096, codec: 'json' });
    const r = Channel.create(`${name}.r`, { capacity: 4096, codec: 'json' });
    const n = 50;
    const child = spawn(rt.bin, rt.args(FIXTURE, 'echo', name, String(n)), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SHMKIT_DIST: DIST } });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    try {
      for (let i = 0; i < n; i++) {
        await q.send({ i }, { timeout: 30_000 });
        const m = await watchdog(r.receive({ timeout: 30_000 }), 40_000, `echo ${i} from ${rt.name}`);
        assert.deepEqual([m.i, m.by], [i, child.pid]);
      }
      const end = await watchdog(exited, 30_000, `${rt.name} exit`);
      assert.deepEqual(end, { code: 0, signal: null }, err);
    } finally {
      child.kill('SIGKILL');
      q.close();
      r.close();
      Channel.unlink(`${name}.q`);
      Channel.unlink(`${name}.r`);
    }
  });
}

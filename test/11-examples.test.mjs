// The examples are end-to-end tests: the README quotes them, so they must run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ROOT, run, watchdog } from './helpers.mjs';

test('examples/quickstart.mjs runs twice in a row and loses no increment; the README quotes it whole', async () => {
  for (let round = 0; round < 2; round++) {
    const p = run('', {}, { script: join(ROOT, 'examples', 'quickstart.mjs') });
    const r = await watchdog(p.exited, 60000, 'quickstart');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /worker got \{ id: 1, task: 'resize', file: 'cat.png' \}/);
    assert.match(r.out, /worker got \{ id: 2/);
    assert.match(r.out, /counter = 200000/);
  }
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = readme.slice(readme.indexOf('## Quick example')).match(/```js\n([\s\S]*?)```/);
  assert.ok(block, 'the README has a quick example');
  assert.equal(block[1], readFileSync(join(ROOT, 'examples', 'quickstart.mjs'), 'utf8'));
});

test('the quick example works from a folder whose path has a space (it locates itself with fileURLToPath)', async () => {
  const { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = join(mkdtempSync(join(tmpdir(), 'shmkit ex-')), 'a folder');
  try {
    mkdirSync(join(dir, 'node_modules'), { recursive: true });
    symlinkSync(ROOT, join(dir, 'node_modules', 'shmkit'));
    cpSync(join(ROOT, 'examples', 'quickstart.mjs'), join(dir, 'quickstart.mjs'));
    const p = run('', {}, { script: join(dir, 'quickstart.mjs') });
    const r = await watchdog(p.exited, 60000, 'quickstart in a folder with a space');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /counter = 200000/);
  } finally {
    rmSync(dirname(dir), { recursive: true, force: true });
  }
});

test('npm start (examples/demo.mjs): producer and consumer agree, then the quick benchmark prints its table', async () => {
  const p = run('', {}, { script: join(ROOT, 'examples', 'demo.mjs'), env: { DEMO_SECONDS: '1' } });
  const r = await watchdog(p.exited, 240000, 'demo');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /OK: [\d,]+ orders sent, [\d,]+ received in order and verified, 0 bad/);
  assert.match(r.out, /## Targets/);
});

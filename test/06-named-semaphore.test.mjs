import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, NamedSemaphore, ShmkitError } from 'shmkit';
import { cleanupAll, ROOT, uniq, watchdog } from './helpers.mjs';

after(cleanupAll);
const code = (c) => (e) => e instanceof ShmkitError && e.code === c;

function python(op, name) {
  const child = spawn('python3', [join(ROOT, 'test', 'fixtures', 'posix_sem.py'), op, name], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => child.on('close', (c) => r({ code: c, out, err })));
  const waitFor = (text) =>
    watchdog(new Promise((resolve, reject) => {
      const t = setInterval(() => {
        if (out.includes(text)) { clearInterval(t); resolve(); }
      }, 5);
      exited.then((r) => { clearInterval(t); if (!r.out.includes(text)) reject(new Error(`python ${op}: ${r.out} ${r.err}`)); });
    }), 30000, `python ${op} printing ${text}`);
  return { exited, waitFor };
}

describe('NamedSemaphore', () => {
  test('create, open, post, tryWait, wait, value, unlink, close', () => {
    const name = uniq('ns');
    const s = NamedSemaphore.create(name, { initial: 1 });
    assert.ok(existsSync(`/dev/shm/sem.${name}`));
    assert.throws(() => NamedSemaphore.create(name), code(ErrorCodes.EXISTS));
    const t = NamedSemaphore.open(name);
    assert.equal(t.value, 1);
    assert.equal(t.tryWait(), true);
    assert.equal(t.tryWait(), false);
    assert.throws(() => t.waitSync({ timeout: 10 }), code(ErrorCodes.TIMEOUT));
    s.post();
    t.waitSync({ timeout: 1000 });
    t.close();
    t.close();
    assert.throws(() => t.post(), code(ErrorCodes.CLOSED));
    assert.equal(NamedSemaphore.unlink(name), true);
    assert.equal(NamedSemaphore.unlink(name), false);
    assert.throws(() => NamedSemaphore.open(name), code(ErrorCodes.NOT_FOUND));
    s.close();
    for (const bad of ['', '/x', 'a/b', 'x'.repeat(31), 5]) {
      assert.throws(() => NamedSemaphore.open(bad), (e) => e.argument === 'name');
    }
  });

  test('a python3 ctypes process (sem_open + sem_post) wakes our wait', async () => {
    const name = uniq('py1');
    const s = NamedSemaphore.create(name);
    const waiting = s.wait({ timeout: 30000 });
    const py = python('post', name);
    await watchdog(waiting, 30000, 'wait woken by python');
    assert.equal((await watchdog(py.exited, 30000, 'python')).code, 0);
    s.close();
    NamedSemaphore.unlink(name);
  });

  test('our post wakes a python3 process blocked in sem_timedwait', async () => {
    const name = uniq('py2');
    const s = NamedSemaphore.create(name);
    const py = python('wait', name);
    await py.waitFor('waiting');
    s.post();
    const r = await watchdog(py.exited, 30000, 'python waiter');
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /acquired/);
    s.close();
    NamedSemaphore.unlink(name);
  });

  test('wait honours AbortSignal and timeout', async () => {
    const name = uniq('nsa');
    const s = NamedSemaphore.create(name);
    const ac = new AbortController();
    const p = s.wait({ signal: ac.signal });
    setTimeout(() => ac.abort(), 10);
    await assert.rejects(watchdog(p, 10000, 'abort'), code(ErrorCodes.ABORTED));
    await assert.rejects(s.wait({ timeout: 10 }), code(ErrorCodes.TIMEOUT));
    s.close();
    NamedSemaphore.unlink(name);
  });
});

describe('NamedSemaphore regressions', () => {
  // Found by crash and hostile-input testing (ownership and modes: a wrong mode); failed before its
  // fix.
  test('NamedSemaphore.create and openOrCreate apply the exact mode under any umask', () => {
    const old = process.umask(0o077);
    try {
      for (const how of ['create', 'openOrCreate']) {
        const n = uniq('um');
        const s = NamedSemaphore[how](n, { mode: 0o666 });
        assert.equal(statSync(`/dev/shm/sem.${n}`).mode & 0o777, 0o666, how);
        s.close();
        NamedSemaphore.unlink(n);
      }
    } finally {
      process.umask(old);
    }
  });
});

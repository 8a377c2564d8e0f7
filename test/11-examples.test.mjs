// The examples are end-to-end tests: the README quotes them, so they must run.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cleanupAll, ROOT, run, uniq, watchdog } from './helpers.mjs';
import { natsMissing, startServer } from './fixtures/nats-servers.mjs';

after(cleanupAll);

/**
 * Runs examples/<script> <name>, which forks processes of its own, in a process group of its own:
 * if the watchdog fires, the processes it forked go too. Returns its exit and its output.
 */
async function runForking(script, name, env = {}) {
  const child = spawn(process.execPath, [join(ROOT, 'examples', script), name], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  try {
    return { r: await watchdog(exited, 60000, script), out, err };
  } finally {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // every process of the group has exited
    }
  }
}

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

test('examples/pubsub.mjs: two forked subscribers each print every message in publish order, then the end; the publisher removes the topic', async () => {
  const name = uniq('hypub');
  const { r, out, err } = await runForking('pubsub.mjs', name);
  assert.equal(r.code, 0, err + out);
  const lines = out.split('\n');
  const ticks = ["{ sym: 'ACME', px: 101.5 }", "{ sym: 'ACME', px: 101.7 }", "{ sym: 'ACME', px: 101.4 }"];
  for (const label of ['A', 'B']) {
    const mine = lines.filter((l) => l.startsWith(`subscriber ${label}`));
    assert.deepEqual(mine, [...ticks.map((t, i) => `subscriber ${label} got #${i}: ${t}`), `subscriber ${label}: 3 messages, then the end of the topic`]);
  }
  assert.deepEqual(lines.filter((l) => l.startsWith('published')), ['published #0', 'published #1', 'published #2']);
  assert.equal(lines.at(-2), 'both subscribers got every message');
  assert.ok(!existsSync(`/dev/shm/shmkit-${name}`), 'the example removes its topic');
});

test('npm start (examples/demo.mjs): producer and consumer agree, then the quick benchmark prints its table', async () => {
  const p = run('', {}, { script: join(ROOT, 'examples', 'demo.mjs'), env: { DEMO_SECONDS: '1' } });
  const r = await watchdog(p.exited, 240000, 'demo');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /OK: [\d,]+ orders sent, [\d,]+ received in order and verified, 0 bad/);
  assert.match(r.out, /## Targets/);
});

test('examples/rpc.mjs: two forked workers serve one name; calls spread over both, a stream, an error and a deadline', async () => {
  const name = uniq('hyrpc');
  const { r, out, err } = await runForking('rpc.mjs', name);
  assert.equal(r.code, 0, err);
  assert.match(out, /resized a\.png to 640 by worker \d+/);
  assert.match(out, /workers used: 2/);
  assert.match(out, /progress 1\/3\nprogress 2\/3\nprogress 3\/3/);
  assert.match(out, /error from the worker: E_UNREADABLE cannot read broken\.png/);
  assert.match(out, /deadline: ERR_SHMKIT_TIMEOUT/);
  assert.match(out, /done\n$/);
  assert.ok(!existsSync(`/dev/shm/shmkit-${name}`), 'the last worker to close removed the service name');
});

test('examples/map.mjs: a front process and two forked workers share one map; no increment or compare-and-set is lost', async () => {
  const name = uniq('hymap');
  const { r, out, err } = await runForking('map.mjs', name);
  assert.equal(r.code, 0, err + out);
  assert.match(out, /watch: the first change seen was a set of stats/);
  assert.match(out, /requests = 2000\n/);
  assert.match(out, /stats\.updates = 300\n/);
  assert.match(out, /pages cached: 20\n/);
  assert.match(out, /page:A:3 = \{ html: '<p>A 993<\/p>', at: 993 \}/);
  assert.ok(!existsSync(`/dev/shm/shmkit-${name}`), 'the example removes its map');
});

const natsMissingReason = await natsMissing();
test('examples/scaling-out.mjs: a bridge forwards a topic, a service and a map; another process reaches them through NATS', { skip: natsMissingReason ?? false }, async () => {
  const server = await startServer();
  try {
    const name = uniq('hs'); // its objects are <name>.prices, .pricing, .config, .bridge
    const { r, out, err } = await runForking('scaling-out.mjs', name, { NATS_URL: server.url });
    assert.equal(r.code, 0, err + out);
    assert.match(out, /remote: quote\(ACME\) = 12\.5/);
    assert.match(out, /remote: got ACME at 12\.5/);
    assert.match(out, /local: settings\.mode = fast/);
    assert.match(out, /done\n$/);
    for (const part of ['prices', 'pricing', 'config', 'bridge']) assert.ok(!existsSync(`/dev/shm/shmkit-${name}.${part}`), `${part} removed`);
  } finally {
    await server.stop();
  }
});

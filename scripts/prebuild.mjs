#!/usr/bin/env node
// Builds the prebuilt addons that ship in the package: linux-x64 and linux-arm64, each for glibc
// and musl, into prebuilds/<platform>-<arch>/node.napi.<libc>.node, the layout node-gyp-build
// resolves at run time (and at install time, where a matching prebuild that loads means no compiler
// is needed).
//
// Compilers (Debian packages; `.ci/run` installs them):
//   linux-x64 glibc    gcc                      (the host compiler)
//   linux-x64 musl     musl-gcc                 (musl-tools)
//   linux-arm64 glibc  aarch64-linux-gnu-gcc    (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)
//   linux-arm64 musl   aarch64-linux-gnu-gcc with musl's specs file (musl-dev:arm64)
//
// The glibc builds pin every libc symbol to a version that glibc 2.28 provides
// (native/glibc_compat.h), and name libpthread, librt and libdl as needed libraries, which is where
// those symbols live before glibc 2.34. The Node-API headers (and uv.h) come from the Node headers
// that node-gyp uses: $npm_config_nodedir/include/node, /usr/include/node, or node-gyp's cache.
//
// Usage: node scripts/prebuild.mjs [--target linux-x64-glibc,...]
// (scripts/prepublish.mjs checks that all four exist before `npm publish`.)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const TARGETS = [
  {
    id: 'linux-x64-glibc', dir: 'linux-x64', libc: 'glibc', machine: 'X86-64', glibcBase: '2.2.5',
    cc: ['gcc'], hint: 'apt-get install gcc',
  },
  {
    id: 'linux-x64-musl', dir: 'linux-x64', libc: 'musl', machine: 'X86-64', muslLib: '/usr/lib/x86_64-linux-musl/libc.so',
    cc: ['musl-gcc'], hint: 'apt-get install musl-tools',
  },
  {
    id: 'linux-arm64-glibc', dir: 'linux-arm64', libc: 'glibc', machine: 'AArch64', glibcBase: '2.17',
    cc: ['aarch64-linux-gnu-gcc'], hint: 'apt-get install gcc-aarch64-linux-gnu',
  },
  {
    id: 'linux-arm64-musl', dir: 'linux-arm64', libc: 'musl', machine: 'AArch64', muslLib: '/usr/lib/aarch64-linux-musl/libc.so',
    // -mno-outline-atomics: the cross gcc's libgcc would otherwise pick atomics at run time through
    // glibc's __getauxval, which musl does not export (the inspection below catches that).
    cc: ['aarch64-linux-gnu-gcc', '-specs', '/usr/lib/aarch64-linux-musl/musl-gcc.specs', '-mno-outline-atomics'],
    needs: '/usr/lib/aarch64-linux-musl/musl-gcc.specs',
    hint: 'dpkg --add-architecture arm64 && apt-get update && apt-get install gcc-aarch64-linux-gnu musl-dev:arm64',
  },
];

export function prebuildPath(t) {
  return path.join(root, 'prebuilds', t.dir, `node.napi.${t.libc}.node`);
}

function sources() {
  // The same sources as binding.gyp (its Linux condition included), read from it, not repeated.
  const gyp = JSON.parse(readFileSync(path.join(root, 'binding.gyp'), 'utf8').replace(/#.*$/gm, ''));
  const target = gyp.targets[0];
  const list = [...target.sources];
  for (const [cond, extra] of target.conditions ?? []) if (cond.includes("OS=='linux'")) list.push(...extra.sources);
  return list.map((s) => path.join(root, s));
}

function headers() {
  const candidates = [
    process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
    '/usr/include/node',
    path.join(homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node'),
  ].filter(Boolean);
  const dir = candidates.find((d) => existsSync(path.join(d, 'node_api.h')) && existsSync(path.join(d, 'uv.h')));
  if (!dir) throw new Error(`prebuild: no Node headers (node_api.h and uv.h) in ${candidates.join(', ')}`);
  return dir;
}

function have(cmd) {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function build(t, includeDir = headers()) {
  if (!have(t.cc[0]) || (t.needs && !existsSync(t.needs))) {
    throw new Error(`prebuild ${t.id}: ${t.cc[0]}${t.needs ? ` or ${t.needs}` : ''} is missing (${t.hint})`);
  }
  const out = prebuildPath(t);
  mkdirSync(path.dirname(out), { recursive: true });
  const args = [
    ...t.cc.slice(1),
    '-std=gnu11', '-O2', '-fPIC', '-shared', '-fvisibility=hidden',
    '-Wall', '-Wextra', '-Wno-unused-parameter', '-Werror',
    '-DNAPI_VERSION=8', '-DNODE_GYP_MODULE_NAME=shmkit', '-DBUILDING_NODE_EXTENSION',
    '-I', includeDir,
    ...sources(),
    '-o', out,
    '-Wl,-s', '-Wl,-z,noexecstack',
  ];
  if (t.libc === 'glibc') args.push('-Wl,--no-as-needed', '-l:libpthread.so.0', '-l:librt.so.1', '-l:libdl.so.2');
  execFileSync(t.cc[0], args, { stdio: 'inherit' });
  return out;
}

/** The oldest glibc a glibc prebuild must load on (the oldest that Node.js 20+ supports). */
export const GLIBC_FLOOR = '2.28';

const versionKey = (v) => [...v.split('.'), '0', '0'].slice(0, 3).map(Number).reduce((a, n) => a * 1000 + n, 0);

function run(cmd, args) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * What can be checked of a prebuild without running it: the ELF machine; the libraries it needs
 * (glibc: libc, libpthread, librt, libdl; musl: libc only); for glibc, that no symbol asks for a
 * version newer than GLIBC_FLOOR; for musl, that every symbol it imports is a Node-API or libuv
 * function (the runtime provides them) or one that musl's libc exports (given musl's libc for that
 * architecture, as `muslLib`). Needs binutils (readelf, nm). Returns a list of problems.
 */
export function inspect(t, file = prebuildPath(t)) {
  const problems = [];
  if (!existsSync(file)) return [`${t.id}: ${file} is missing`];
  const header = run('readelf', ['-h', file]);
  if (!new RegExp(`Machine:\\s+.*${t.machine === 'X86-64' ? 'X86-64' : 'AArch64'}`).test(header)) {
    problems.push(`${t.id}: not an ${t.machine} ELF`);
  }
  const needed = [...run('readelf', ['-d', file]).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const allowed = t.libc === 'glibc' ? ['libc.so.6', 'libpthread.so.0', 'librt.so.1', 'libdl.so.2'] : ['libc.so'];
  for (const n of needed) if (!allowed.includes(n)) problems.push(`${t.id}: needs ${n}`);
  if (!needed.includes(allowed[0])) problems.push(`${t.id}: does not name ${allowed[0]}`);
  const imports = run('nm', ['-D', '--undefined-only', file]).split('\n').map((l) => l.trim().split(/\s+/).pop()).filter(Boolean);
  if (t.libc === 'glibc') {
    for (const sym of imports) {
      const m = /@(?:GLIBC_)([\d.]+)$/.exec(sym);
      if (m && versionKey(m[1]) > versionKey(GLIBC_FLOOR)) problems.push(`${t.id}: ${sym} is newer than glibc ${GLIBC_FLOOR}`);
      if (!m && !/^(napi_|node_api_|uv_)/.test(sym) && !/^__gmon_start__|^_ITM_|^__cxa_finalize/.test(sym)) {
        problems.push(`${t.id}: ${sym} has no glibc version`);
      }
    }
  } else {
    if (!existsSync(t.muslLib)) return [...problems, `${t.id}: ${t.muslLib} is missing (${t.hint})`];
    const exported = new Set(run('nm', ['-D', '--defined-only', t.muslLib]).split('\n').map((l) => l.trim().split(/\s+/).pop()));
    for (const sym of imports) {
      const name = sym.replace(/@.*$/, '');
      if (/^(napi_|node_api_|uv_)/.test(name) || /^_ITM_|^__gmon_start__|^__cxa_finalize/.test(name)) continue;
      if (name.includes('GLIBC') || !exported.has(name)) problems.push(`${t.id}: imports ${sym}, which musl's libc does not export`);
    }
  }
  return problems;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--target');
  const wanted = i > 0 ? process.argv[i + 1].split(',') : TARGETS.map((t) => t.id);
  const unknown = wanted.filter((w) => !TARGETS.some((t) => t.id === w));
  if (unknown.length) {
    console.error(`prebuild: unknown target ${unknown.join(', ')} (known: ${TARGETS.map((t) => t.id).join(', ')})`);
    process.exit(2);
  }
  const include = headers();
  for (const t of TARGETS.filter((t) => wanted.includes(t.id))) {
    const out = build(t, include);
    console.log(`prebuild ${t.id}: ${path.relative(root, out)}`);
  }
}

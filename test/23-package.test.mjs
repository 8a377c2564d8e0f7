// What the published package holds: the files a user needs, and nothing that points nowhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

test('the project\'s tsconfig uses a module resolution current TypeScript versions keep (node16)', () => {
  const tsconfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8'));
  assert.equal(tsconfig.compilerOptions.moduleResolution, 'node16');
  assert.equal(tsconfig.compilerOptions.module, 'node16');
});

#!/usr/bin/env node
// `npm publish` runs this first (prepublishOnly) and stops on any problem: every prebuilt binary
// must be there (npm run prebuilds), and package.json must say where the project lives
// (repository, homepage, bugs), which only the publisher knows.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TARGETS, prebuildPath } from './prebuild.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const problems = [];
for (const t of TARGETS) {
  if (!existsSync(prebuildPath(t))) problems.push(`${path.relative(root, prebuildPath(t))} is missing (npm run prebuilds)`);
}
for (const field of ['repository', 'homepage', 'bugs']) {
  if (pkg[field] === undefined) problems.push(`package.json has no "${field}": set it to the project's public address`);
}
if (!existsSync(path.join(root, 'docs', 'api', 'index.html'))) problems.push('docs/api is missing (npm run docs)');
for (const p of problems) console.error(`prepublish: ${p}`);
process.exit(problems.length ? 1 : 0);

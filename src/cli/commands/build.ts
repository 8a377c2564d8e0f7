/**
 * `shmkit build`: compiles the native addon from source, for a platform that no prebuilt binary
 * fits. It imports nothing that loads the addon, so it runs when the addon cannot load.
 */
import { existsSync, realpathSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { ErrorCodes, ShmkitError } from '../../errors';
import { type Command, Exit } from '../output';

/** The package root: dist/cli/commands/ is three levels down. */
const ROOT = join(__dirname, '..', '..', '..');

const help = `Usage: shmkit build

Compiles shmkit's native addon from source into build/Release/ of this installation, where it
takes precedence over the prebuilt binaries. Needed only where no prebuilt binary fits (shmkit
ships them for linux-x64 and linux-arm64, glibc 2.28+ and musl). Needs a C compiler, make and
python3, and Node's headers (node-gyp finds or downloads them).

node-gyp is taken from, in order: $npm_config_node_gyp, an installed node-gyp package, the one
bundled with npm, or "npx node-gyp".

Exit status: node-gyp's own.`;

/** node-gyp's entry script, or null (then npx fetches it). */
export function findNodeGyp(): string | null {
  const candidates: string[] = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed as a package
  }
  const npm = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' });
  if (npm.status === 0) {
    try {
      const cli = realpathSync(npm.stdout.trim()); // .../lib/node_modules/npm/bin/npm-cli.js
      candidates.push(join(dirname(cli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
    } catch {
      // a broken link: try the next
    }
  }
  return candidates.find((c) => c.endsWith('.js') && existsSync(c)) ?? null;
}

export const build: Command = {
  name: 'build',
  summary: 'compile the native addon from source (where no prebuilt binary fits)',
  help,
  run(argv) {
    if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (!existsSync(join(ROOT, 'binding.gyp'))) {
      throw new ShmkitError(ErrorCodes.NOT_FOUND, `binding.gyp is missing from ${ROOT}: this installation cannot be built from source`);
    }
    const gyp = findNodeGyp();
    const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['npx', ['--yes', 'node-gyp', 'rebuild']];
    return new Promise<number>((resolve, reject) => {
      const child = spawn(cmd, args, { cwd: ROOT, stdio: 'inherit' });
      child.on('error', reject);
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
    });
  },
};

/** `shmkit bench [args]`: runs the benchmark (bench/run.mjs) as `npm run bench` does. */
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ErrorCodes, ShmkitError } from '../../errors';
import { type Command, Exit } from '../output';

/** The package root: dist/cli/commands/ is three levels down. */
const ROOT = join(__dirname, '..', '..', '..');
const SCRIPT = join(ROOT, 'bench', 'run.mjs');

const help = `Usage: shmkit bench [--quick] [--json FILE] [--silent]

Runs shmkit's benchmark (node bench/run.mjs in the package, as "npm run bench"):
channels against Unix sockets, TCP, pipes, child_process IPC and MessagePort, each
trial in fresh processes. Every argument is passed to it:
  --quick      one repetition, smaller counts (about 30 s)
  --json FILE  also write the results as JSON
  --silent     no progress lines
Without --quick it takes several minutes and keeps every CPU busy.

Exit status: the benchmark's own; 1 if bench/ is not in this installation.`;

export const bench: Command = {
  name: 'bench',
  summary: 'run the benchmark (as npm run bench)',
  help,
  run(argv) {
    if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (!existsSync(SCRIPT)) {
      throw new ShmkitError(ErrorCodes.NOT_FOUND, `the benchmark is not part of this installation (${SCRIPT} is missing); run it from a clone of the shmkit repository with "npm run bench"`);
    }
    return new Promise<number>((resolve, reject) => {
      const child = spawn(process.execPath, [SCRIPT, ...argv], { cwd: ROOT, stdio: 'inherit' });
      // Ctrl-C reaches the benchmark too (same process group); wait for it to end.
      const ignore = (): void => {};
      process.on('SIGINT', ignore);
      child.on('error', (err) => {
        process.off('SIGINT', ignore);
        reject(err);
      });
      child.on('close', (code, signal) => {
        process.off('SIGINT', ignore);
        resolve(code ?? (signal === 'SIGINT' ? 130 : Exit.ERROR));
      });
    });
  },
};

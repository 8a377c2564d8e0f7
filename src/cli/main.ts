/**
 * The `shmkit` command: `shmkit <command> [options]`. One file per command in commands/; this file
 * only dispatches. Exit codes and error lines are the same for every command (output.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, Exit, reportError, UsageError } from './output';
import { build } from './commands/build';

let loaded: Command[] | undefined;
/**
 * Every command. All but `build` load the native addon, so they are required here, on first use:
 * `shmkit build` must run where the addon cannot load yet.
 */
function allCommands(): Command[] {
  if (loaded === undefined) {
    /* eslint-disable @typescript-eslint/no-require-imports */
    loaded = [
      (require('./commands/ls') as typeof import('./commands/ls')).ls,
      (require('./commands/inspect') as typeof import('./commands/inspect')).inspect,
      (require('./commands/rm') as typeof import('./commands/rm')).rm,
      (require('./commands/gc') as typeof import('./commands/gc')).gc,
      (require('./commands/top') as typeof import('./commands/top')).top,
      (require('./commands/notify') as typeof import('./commands/notify')).notify,
      (require('./commands/listen') as typeof import('./commands/listen')).listen,
      (require('./commands/pub') as typeof import('./commands/pub')).pub,
      (require('./commands/sub') as typeof import('./commands/sub')).sub,
      (require('./commands/call') as typeof import('./commands/call')).call,
      (require('./commands/map') as typeof import('./commands/map')).map,
      (require('./commands/bridge') as typeof import('./commands/bridge')).bridge,
      (require('./commands/bench') as typeof import('./commands/bench')).bench,
      build,
    ];
    /* eslint-enable @typescript-eslint/no-require-imports */
  }
  return loaded;
}

function usage(): string {
  const commands = allCommands();
  const w = Math.max(...commands.map((c) => c.name.length));
  return [
    'Usage: shmkit <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
    'Run "shmkit <command> --help" for a command\'s options.',
    'Exit status: 0 ok, 1 error, 2 usage error, 3 refused (rm: object in use).',
    'Docs: docs/cli.md',
  ].join('\n');
}

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Runs one command line; resolves with the exit code. Never throws. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  let command: Command | undefined;
  try {
    if (name === 'build') {
      command = build;
      return await build.run(rest);
    }
    const commands = allCommands();
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      const about = name === 'help' && rest[0] !== undefined ? commands.find((c) => c.name === rest[0]) : undefined;
      if (name === 'help' && rest[0] !== undefined && about === undefined) throw new UsageError(`unknown command "${rest[0]}"`);
      if (name === undefined) {
        process.stderr.write(usage() + '\n');
        return Exit.USAGE;
      }
      process.stdout.write((about?.help ?? usage()) + '\n');
      return Exit.OK;
    }
    if (name === '--version' || name === '-v') {
      process.stdout.write(version() + '\n');
      return Exit.OK;
    }
    command = commands.find((c) => c.name === name);
    if (command === undefined) throw new UsageError(`unknown command "${name}"`);
    return await command.run(rest);
  } catch (err) {
    return reportError(err, command?.name);
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

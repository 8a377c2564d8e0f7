/**
 * `shmkit listen NAME`: listens to an Event and prints every id notified, one per line, until
 * --count ids or --timeout, or Ctrl-C. It holds a listener slot while it runs, as a program's
 * listening handle does, and frees it when it ends.
 */
import { ErrorCodes, ShmkitError } from '../../errors';
import { Event } from '../../event/event';
import { type Command, Exit, intOption, parse, UsageError } from '../output';

const help = `Usage: shmkit listen NAME [--count N] [--timeout MS] [--json]

Listens to the event NAME and prints every id notified from then on, one per line,
as it arrives. It takes one of the event's listener slots until it ends, and
says on stderr when it listens (ids notified before that line are not seen).
Notifications of one id that arrive between two wake-ups of this listener
print that id once; ids that arrive together print in ascending order.

NAME is the event's shmkit name, as the programs using it give it.

Options:
  --count N     stop after N ids (default: no limit)
  --timeout MS  give up after MS milliseconds in all (default: no limit)
  --json        print one JSON object per id, one per line: { "name", "id", "time" }
  -h, --help    show this help

Exit status: 0 after N ids (or Ctrl-C); 1 the timeout passed first, or the event
does not exist, is not an event, or has no free listener slot; 2 usage error.`;

export const listen: Command = {
  name: 'listen',
  summary: 'print the ids notified on an event as they arrive',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, { count: { type: 'string' }, timeout: { type: 'string' }, json: { type: 'boolean' } }, true);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length !== 1) throw new UsageError(`listen takes one NAME, got ${positionals.length}`);
    const name = positionals[0]!;
    const count = intOption(values.count, 'count', 1, Number.MAX_SAFE_INTEGER, Infinity);
    const timeout = intOption(values.timeout, 'timeout', 0, 2_147_483_647, Infinity);
    const json = values.json === true;

    const event = Event.open(name);
    const stop = new AbortController();
    const quit = (): void => stop.abort();
    try {
      event.listen();
      process.on('SIGINT', quit);
      process.on('SIGTERM', quit);
      const until = [count === Infinity ? '' : `${count} id${count === 1 ? '' : 's'}`, timeout === Infinity ? '' : `${timeout} ms`].filter(Boolean).join(' or ');
      process.stderr.write(`listening to event "${name}" (ids 0..${event.maxId})${until === '' ? '' : `, for ${until}`}; Ctrl-C stops\n`);
      const start = performance.now();
      let seen = 0;
      while (seen < count) {
        const left = timeout === Infinity ? Infinity : Math.max(0, timeout - (performance.now() - start));
        let ids: number[];
        try {
          ids = await event.wait({ timeout: left, signal: stop.signal });
        } catch (err) {
          if (stop.signal.aborted) return Exit.OK;
          if (err instanceof ShmkitError && err.code === ErrorCodes.TIMEOUT) {
            const got = `${seen}${count === Infinity ? '' : ` of ${count}`} id${(count === Infinity ? seen : count) === 1 ? '' : 's'}`;
            throw new ShmkitError(ErrorCodes.TIMEOUT, `listen "${name}": timed out after ${timeout} ms with ${got} received`, { segment: name });
          }
          throw err;
        }
        // Ids taken together past the N-th are not printed: the output has exactly N lines.
        for (const id of ids) {
          if (seen === count) break;
          process.stdout.write(json ? JSON.stringify({ name, id, time: new Date().toISOString() }) + '\n' : `${id}\n`);
          seen++;
        }
      }
      return Exit.OK;
    } finally {
      process.off('SIGINT', quit);
      process.off('SIGTERM', quit);
      event.close();
    }
  },
};

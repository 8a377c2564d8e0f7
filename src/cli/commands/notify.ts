/** `shmkit notify NAME [ID]`: notifies an id on an Event, as a program's `event.notify(id)` does. */
import { Event } from '../../event/event';
import { type Command, Exit, parse, printJson, UsageError } from '../output';

const help = `Usage: shmkit notify NAME [ID] [--json]

Notifies ID (default 0) on the event NAME, as event.notify(ID) does in a program:
every handle listening to it gets ID, until it takes it. Prints how many listener
slots the notification reached (a listener that died and whose slot nobody has
taken over yet counts too). Never waits.

NAME is the event's shmkit name, as the programs using it give it. ID is a whole
number from 0 to the event's largest id (63 unless the event was created with
another maxId).

Options:
  --json     print { "name", "id", "reached" }
  -h, --help show this help

Exit status: 0 notified (also when no one listens); 1 the event does not exist
or is not an event; 2 usage error (ID out of range included).`;

export const notify: Command = {
  name: 'notify',
  summary: 'notify an id on an event (wakes its listeners)',
  help,
  run(argv) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, true);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length < 1 || positionals.length > 2) throw new UsageError(`notify takes NAME and an optional ID, got ${positionals.length} arguments`);
    const [name, idArg] = positionals as [string, string | undefined];
    if (idArg !== undefined && !/^\d{1,4}$/.test(idArg)) throw new UsageError(`ID must be a whole number (0 up to the event's largest id), got ${JSON.stringify(idArg)}`);
    const id = idArg === undefined ? 0 : Number(idArg);
    const event = Event.open(name);
    try {
      const reached = event.notify(id);
      if (values.json === true) printJson({ name, id, reached });
      else process.stdout.write(`notified ${id} on event "${name}": ${reached} listener${reached === 1 ? '' : 's'} reached\n`);
    } finally {
      event.close();
    }
    return Exit.OK;
  },
};

/** `shmkit ls`: every shmkit object in /dev/shm, with its kind, owner, creator and peers. */
import { bytes, type Command, Exit, parse, printJson, table, time } from '../output';
import { type ObjectReport, readAll, SHM_DIR } from '../scan';

const help = `Usage: shmkit ls [--json]

Lists every shmkit object in ${SHM_DIR}: named objects (shmkit-NAME) and temporary
objects of creations in progress or interrupted (shmkit~PID36.HEX). Objects are read,
never mapped or written. Corrupt, foreign and unreadable entries are listed and marked.

Options:
  --json     print { "objects": [ ... ] } (see docs/cli.md)
  -h, --help show this help

Status: ok, corrupt, foreign (not shmkit's), version (another layout version),
unknown-kind, unreadable (no permission), building / orphaned (temporaries whose
creator lives / died).

Exit status: 0 listed (whatever the objects' status); 1 ${SHM_DIR} cannot be
read; 2 usage error.`;

function row(o: ObjectReport): string[] {
  const creator = o.creator === null ? '-' : `${o.creator.pid}${o.creator.alive ? '' : ' (dead)'}`;
  const peers = o.peers === null ? '-' : `${o.peers.alive} alive${o.peers.dead > 0 ? `, ${o.peers.dead} dead` : ''}`;
  const status = o.problem === null || o.status === 'building' || o.status === 'orphaned' ? o.status : `${o.status}: ${o.problem}`;
  return [
    o.name ?? o.entry,
    o.kind ?? '-',
    bytes(o.size),
    o.mode,
    o.user ?? String(o.uid),
    creator,
    o.createdAt === null ? '-' : time(Date.parse(o.createdAt)),
    peers,
    status,
  ];
}

export const ls: Command = {
  name: 'ls',
  summary: 'list the shmkit objects in /dev/shm',
  help,
  run(argv) {
    const { values } = parse(argv, { json: { type: 'boolean' } }, false);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    const objects = readAll().map((o) => o.report);
    if (values.json === true) {
      printJson({ objects });
      return Exit.OK;
    }
    if (objects.length === 0) {
      process.stdout.write(`no shmkit objects in ${SHM_DIR}\n`);
      return Exit.OK;
    }
    const lines = table(['NAME', 'KIND', 'SIZE', 'MODE', 'OWNER', 'CREATOR', 'CREATED', 'PEERS', 'STATUS'], objects.map(row));
    process.stdout.write(lines.join('\n') + '\n');
    return Exit.OK;
  },
};

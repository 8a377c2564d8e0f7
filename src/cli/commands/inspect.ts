/** `shmkit inspect NAME`: an object's header and its kind's live state, read without writing. */
import { type Command, Exit, parse, printJson, printTree, UsageError, time } from '../output';
import { readObject, resolveEntry, scanProcesses, SHM_DIR, usageOf } from '../scan';

const help = `Usage: shmkit inspect NAME [--json]

Prints an object's header and its live state, read raw from ${SHM_DIR} without
writing anything: a channel's capacity, modes, depth, counters, peers and leases;
a lock's holders; a semaphore's value; a barrier's arrivals; and the processes
that have it mapped (from /proc).

NAME is a shmkit name (the object ${SHM_DIR}/shmkit-NAME), a temporary's entry
(shmkit~…), or a path ${SHM_DIR}/shmkit-… .

Options:
  --json     print the object as JSON (see docs/cli.md)
  -h, --help show this help

Exit status: 0 when the object exists (even corrupt or unreadable: see "status"),
1 if it does not exist, 2 on a usage error.`;

export const inspect: Command = {
  name: 'inspect',
  summary: "print an object's header and live state",
  help,
  run(argv) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, true);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length !== 1) throw new UsageError(`inspect takes one NAME, got ${positionals.length}`);
    const obj = readObject(resolveEntry(positionals[0]!));
    const scan = scanProcesses();
    const usage = usageOf(obj, scan);
    const d = obj.description;
    const out = {
      ...obj.report,
      header: d?.header ?? null,
      state: d?.state ?? null,
      summary: d?.summary ?? null,
      users: d?.users ?? [],
      mappedBy: usage.mappedBy,
      mappedUnknown: usage.unknown,
    };
    if (values.json === true) {
      printJson(out);
      return Exit.OK;
    }
    const r = obj.report;
    const lines = [
      `${SHM_DIR}/${r.entry}: ${r.kind ?? 'unknown kind'}, ${r.status}${r.problem === null ? '' : ` (${r.problem})`}`,
      ...printTree(
        {
          object: `${r.size} bytes, mode ${r.mode}, owner ${r.user ?? r.uid} (uid ${r.uid}, gid ${r.gid})`,
          creator: r.creator === null ? null : `pid ${r.creator.pid} (${r.creator.alive ? 'alive' : 'dead'})`,
          created: r.createdAt === null ? null : time(Date.parse(r.createdAt)),
          'mapped by': usage.mappedBy.length === 0 ? 'no process' : usage.mappedBy.map((p) => `pid ${p}`).join(', '),
          ...(usage.unknown === null ? {} : { 'maybe also': usage.unknown }),
        },
        '  ',
      ),
    ];
    if (d?.header) {
      const h = d.header;
      lines.push('header:');
      lines.push(
        ...printTree(
          {
            version: h.version,
            kind: h.kind,
            state: h.state === 1 ? '1 (ready)' : String(h.state),
            'total size': h.totalSize,
            'data offset': h.dataOffset,
            flags: h.flags,
            creator: `pid ${h.creator.pid}, thread slot ${h.creator.threadSlot}, start time ${h.creator.startTime}`,
            'created at': `${h.createdAt} (${time(h.createdAt)})`,
            checksum: `0x${h.checksum.toString(16).padStart(8, '0')} (${h.checksumOk ? 'ok' : 'MISMATCH'})`,
          },
          '  ',
        ),
      );
    }
    if (d?.state) {
      lines.push(`state: ${d.summary}`);
      lines.push(...printTree(d.state, '  '));
    }
    process.stdout.write(lines.join('\n') + '\n');
    return Exit.OK;
  },
};

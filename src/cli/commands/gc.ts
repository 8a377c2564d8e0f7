/**
 * `shmkit gc`: removes what nobody can use any more. Temporaries whose creator died; named objects
 * whose creator and every process their state names (peers, holders, takers) are dead and that no
 * live process maps or holds open. When /proc does not show every process that could have one
 * mapped, it keeps the object unless told otherwise (docs/cli.md, "How gc decides").
 */
import { ShmkitError } from '../../errors';
import { isHashedEntry, NAME_PREFIX } from '../../naming';
import { type Command, Exit, parse, printJson, reportError, table } from '../output';
import { inUseBy, type ProcScan, readAll, scanProcesses, type ShmObject, SHM_DIR, unlinkExamined, usageOf } from '../scan';

const help = `Usage: shmkit gc [--dry-run] [--json] [--prefix P]... [--assume-unmapped]

Removes from ${SHM_DIR}:
  - temporary objects (shmkit~PID36.HEX) whose creator process is dead and that no
    live process maps;
  - named objects whose creator is dead, every process their state names (channel
    peers, lock holders, lease takers) is dead, and that no live process maps or
    holds open (found in /proc/*/maps and /proc/*/fd, by inode).
It never removes a live object. Corrupt, foreign, other-version, unknown-kind and
unreadable entries, and (unless run as root) other users' objects, are not judged
(remove them with "shmkit rm").

If some process that could open an object cannot be examined (another user's, as
non-root, or /proc mounted with hidepid), the object might be mapped: gc keeps it
and says so, unless --assume-unmapped is given.

Options:
  -n, --dry-run      decide and print, remove nothing
  --prefix P         only objects whose name (or entry, for temporaries) starts
                     with P; repeatable
  --assume-unmapped  treat processes whose maps cannot be read as mapping nothing
  --json             print the decisions as JSON (see docs/cli.md)
  -h, --help         show this help

Exit status: 0 done (also when objects were kept); 1 a removal failed; 2 usage error.`;

export type GcAction = 'remove' | 'keep' | 'skip';

export interface GcDecision {
  entry: string;
  name: string | null;
  kind: string | null;
  status: string;
  action: GcAction;
  reason: string;
  mappedBy: number[];
  removed: boolean;
  error: { code: string; message: string } | null;
}

function decide(obj: ShmObject, scan: ProcScan, assumeUnmapped: boolean): Pick<GcDecision, 'action' | 'reason' | 'mappedBy'> {
  const r = obj.report;
  const usage = usageOf(obj, scan);
  const mappedBy = usage.mappedBy;
  if (!r.temporary && r.status !== 'ok') {
    return { action: 'skip', reason: `not judged: ${r.status}${r.problem === null ? '' : ` (${r.problem})`}`, mappedBy };
  }
  if (r.temporary && r.creator === null) return { action: 'skip', reason: `not judged: ${r.problem}`, mappedBy };
  // In the sticky /dev/shm only the owner (or root) can remove an entry.
  const euid = process.geteuid?.() ?? 0;
  if (euid !== 0 && obj.stat.uid !== euid) {
    return { action: 'skip', reason: `not judged: owned by ${r.user ?? `uid ${r.uid}`}; only its owner or root can remove it`, mappedBy };
  }
  if (!r.temporary && r.creator?.alive !== false) return { action: 'keep', reason: `its creator (pid ${r.creator?.pid}) is alive`, mappedBy };
  const busy = inUseBy(obj, usage);
  if (busy !== null) return { action: 'keep', reason: busy, mappedBy };
  // A temporary's name is private to its creator: nobody else maps it, so hidden processes do not matter.
  if (!r.temporary && usage.unknown !== null && !assumeUnmapped) {
    return { action: 'keep', reason: `possibly mapped: ${usage.unknown} (--assume-unmapped ignores them)`, mappedBy };
  }
  const reason = r.temporary
    ? `temporary left by dead pid ${r.creator!.pid}`
    : `creator (pid ${r.creator!.pid}) and every peer or holder dead, mapped by no process${usage.unknown === null ? '' : ' that could be examined'}`;
  return { action: 'remove', reason, mappedBy };
}

export const gc: Command = {
  name: 'gc',
  summary: 'remove objects whose creator and users are all dead',
  help,
  run(argv) {
    const { values } = parse(
      argv,
      {
        'dry-run': { type: 'boolean', short: 'n' },
        json: { type: 'boolean' },
        prefix: { type: 'string', multiple: true },
        'assume-unmapped': { type: 'boolean' },
      },
      false,
    );
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    const dryRun = values['dry-run'] === true;
    const json = values.json === true;
    const assumeUnmapped = values['assume-unmapped'] === true;
    const prefixes = (values.prefix as string[] | undefined) ?? [];
    const entryMatch = (entry: string, p: string): boolean => entry.startsWith(p) || (entry.startsWith(NAME_PREFIX) && entry.slice(NAME_PREFIX.length).startsWith(p));
    // A hashed entry holds only its name's first 10 characters: read it if they fit the prefix,
    // then decide by the full name from its name block.
    const maybe = (entry: string): boolean =>
      prefixes.length === 0 || prefixes.some((p) => entryMatch(entry, p) || (isHashedEntry(entry) && p.startsWith(entry.slice(NAME_PREFIX.length, NAME_PREFIX.length + 10))));
    const selected = (o: ShmObject): boolean => prefixes.length === 0 || prefixes.some((p) => entryMatch(o.report.entry, p) || (o.report.name ?? '').startsWith(p));
    // Objects first, then processes: a process that maps an object after it was read is still seen.
    const objects = readAll(maybe).filter(selected);
    const scan = scanProcesses();
    const decisions: GcDecision[] = objects.map((obj) => {
      const d: GcDecision = { entry: obj.report.entry, name: obj.report.name, kind: obj.report.kind, status: obj.report.status, ...decide(obj, scan, assumeUnmapped), removed: false, error: null };
      if (d.action === 'remove' && !dryRun) {
        try {
          d.removed = unlinkExamined(obj);
          if (!d.removed) d.reason += '; removed or replaced meanwhile: left alone';
        } catch (err) {
          if (!(err instanceof ShmkitError)) throw err;
          d.error = { code: err.code, message: err.message };
          if (!json) reportError(err);
        }
      }
      return d;
    });
    const proc = {
      scanned: scan.scanned,
      unreadable: scan.unreadable.map((p) => p.pid),
      hidden: scan.hidden,
    };
    if (json) {
      printJson({ dryRun, assumeUnmapped, proc, objects: decisions });
    } else {
      const verb = (d: GcDecision): string => (d.action !== 'remove' ? d.action : dryRun ? 'would remove' : d.removed ? 'removed' : d.error !== null ? 'FAILED' : 'left');
      if (decisions.length > 0) {
        const rows = decisions.map((d) => [d.name ?? d.entry, d.kind ?? '-', verb(d), d.reason]);
        process.stdout.write(table(['NAME', 'KIND', 'ACTION', 'REASON'], rows).join('\n') + '\n');
      }
      const n = (a: GcAction): number => decisions.filter((d) => d.action === a).length;
      const removed = dryRun ? n('remove') : decisions.filter((d) => d.removed).length;
      process.stdout.write(`${dryRun ? 'would remove' : 'removed'} ${removed}, kept ${n('keep')}, not judged ${n('skip')}` + ` (${decisions.length} shmkit object${decisions.length === 1 ? '' : 's'}${prefixes.length > 0 ? ' matching the prefixes' : ''})\n`);
      if (scan.hidden || scan.unreadable.length > 0) {
        process.stdout.write(
          `note: ${scan.hidden ? '/proc does not show every process (hidepid, or not readable)' : `the maps of ${scan.unreadable.length} process${scan.unreadable.length === 1 ? '' : 'es'} could not be read`}; ` +
            (assumeUnmapped
              ? 'they were assumed to map nothing (--assume-unmapped)'
              : `objects they could have mapped were kept (${process.geteuid?.() === 0 ? '' : 'run as root, or '}pass --assume-unmapped to ignore them)`) +
            '\n',
        );
      }
    }
    return decisions.some((d) => d.error !== null) ? Exit.ERROR : Exit.OK;
  },
};

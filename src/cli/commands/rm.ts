/** `shmkit rm NAME...`: removes objects, refusing one that is in use unless --force. */
import { ErrorCodes, ShmkitError } from '../../errors';
import { isHashedEntry } from '../../naming';
import { type Command, Exit, parse, printJson, reportError, UsageError } from '../output';
import { inUseBy, readObject, resolveEntry, type ProcScan, scanProcesses, SHM_DIR, unlinkExamined, usageOf } from '../scan';

const help = `Usage: shmkit rm [--force] [--json] NAME...

Removes objects from ${SHM_DIR}. An object in use is refused: one whose own state
names a live process (an attached channel peer, a lock holder, a lease taker), a
temporary whose creator lives, or one that a live process maps or holds open
(from /proc/*/maps and /proc/*/fd). Processes that exist but whose maps cannot be
read (other users', as non-root) are not seen by rm; gc is stricter.
Processes that have the object mapped keep using it after it is removed.

NAME is a shmkit name, a temporary's entry (shmkit~…) or a path ${SHM_DIR}/shmkit-… .

Options:
  -f, --force  remove even if in use
  --json       print { "results": [ ... ] } (see docs/cli.md)
  -h, --help   show this help

Exit status: 0 every object removed; 3 some refused as in use (and nothing else
failed); 1 an object did not exist or could not be removed; 2 usage error.`;

export interface RmResult {
  entry: string;
  name: string | null;
  removed: boolean;
  refused: string | null;
  error: { code: string; message: string } | null;
}

export const rm: Command = {
  name: 'rm',
  summary: 'remove objects (refuses one in use unless --force)',
  help,
  run(argv) {
    const { values, positionals } = parse(argv, { force: { type: 'boolean', short: 'f' }, json: { type: 'boolean' } }, true);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length === 0) throw new UsageError('rm needs at least one NAME');
    const entries = positionals.map(resolveEntry); // all names are checked before anything is removed
    const force = values.force === true;
    const json = values.json === true;
    let scan: ProcScan | null = null;
    const results: RmResult[] = [];
    for (const [k, entry] of entries.entries()) {
      const res: RmResult = { entry, name: entry.startsWith('shmkit-') ? entry.slice(7) : null, removed: false, refused: null, error: null };
      results.push(res);
      try {
        const obj = readObject(entry);
        res.name = obj.report.name;
        // A long name's entry is hashed: remove it only if its name block says it is that name.
        const asked = positionals[k]!;
        const blockName = obj.description?.header?.name ?? null;
        if (isHashedEntry(entry) && !asked.includes('/') && blockName !== null && blockName !== asked && !force) {
          throw new ShmkitError(ErrorCodes.CORRUPT, `rm ${asked}: ${SHM_DIR}/${entry} holds "${blockName}", not "${asked}"; left alone (--force removes it anyway)`, { segment: entry });
        }
        if (!force) {
          scan ??= scanProcesses();
          const why = inUseBy(obj, usageOf(obj, scan));
          if (why !== null) {
            res.refused = why;
            if (!json) {
              process.stderr.write(`shmkit: ${ErrorCodes.BUSY}: rm ${entry}: in use: ${why}; --force removes it anyway\n`);
            }
            continue;
          }
        }
        res.removed = unlinkExamined(obj);
        if (!res.removed) throw new ShmkitError(ErrorCodes.NOT_FOUND, `${SHM_DIR}/${entry}: removed or replaced by another process meanwhile; left alone`, { segment: entry });
        if (!json) process.stdout.write(`removed ${SHM_DIR}/${entry}\n`);
      } catch (err) {
        if (!(err instanceof ShmkitError)) throw err;
        res.error = { code: err.code, message: err.message };
        if (!json) reportError(err);
      }
    }
    if (json) printJson({ results });
    if (results.some((r) => r.error !== null)) return Exit.ERROR;
    return results.some((r) => r.refused !== null) ? Exit.REFUSED : Exit.OK;
  },
};

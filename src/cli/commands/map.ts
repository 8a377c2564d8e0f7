/**
 * `shmkit map get|set|del|incr|keys|watch NAME ...`: reads and writes a SharedMap from a shell.
 * Values are JSON on the command line and on stdout (the map's json codec), or text with
 * --codec utf8.
 */
import { ErrorCodes, ShmkitError } from '../../errors';
import { SharedMap, type MapChange } from '../../map/map';
import { type Command, Exit, intOption, parse, UsageError } from '../output';

const help = `Usage: shmkit map get NAME KEY
       shmkit map set NAME KEY VALUE [--ttl MS] [--if-revision N] [--if-absent] [--if-present]
       shmkit map del NAME KEY [--if-revision N]
       shmkit map incr NAME KEY [BY]
       shmkit map keys NAME [PREFIX]
       shmkit map watch NAME [KEY] [--prefix] [--initial] [--count N] [--timeout MS]

Reads and writes the shared map NAME (a program's SharedMap).

  get    prints the key's value as JSON (exit 1 if the key is absent)
  set    sets the key to VALUE, a JSON value ('{"a":1}', '42', '"text"'),
         and prints the new revision
  del    deletes the key (exit 1 if it was absent)
  incr   adds BY (default 1) to the number at the key and prints the result
  keys   prints every key (starting with PREFIX), one per line
  watch  prints every change of KEY (with --prefix: of every key starting with
         KEY; no KEY: of every key) as it happens, one per line: the type (set,
         delete, expire, evict), the key, and for a set the value as JSON; until
         --count changes, --timeout, or Ctrl-C

Options:
  --codec C        the map's codec: json (default), utf8 (values are text),
                   jsonb or structured; it must be the one the map's programs use
  --json           print one JSON object per line: { key, value, revision,
                   expiresAt } (get), { type, key, value, revision } (watch)
  --ttl MS         set: the key expires after MS milliseconds
  --if-revision N  set/del: only if the key's revision is N (0: absent)
  --if-absent      set: only if the key is absent
  --if-present     set: only if the key is present
  --prefix         watch: KEY is a prefix
  --initial        watch: start with the current entries
  --count N        watch: stop after N changes
  --timeout MS     watch: stop after MS milliseconds (exit 0)
  -h, --help       show this help

Exit status: 0 done; 1 the key is absent (get, del), a condition failed
(ERR_SHMKIT_CONFLICT, ERR_SHMKIT_EXISTS, ERR_SHMKIT_NOT_FOUND), the map is
full, or NAME is not a map; 2 usage error (VALUE that is not JSON included).`;

const ACTIONS = ['get', 'set', 'del', 'incr', 'keys', 'watch'] as const;

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${what} must be JSON (quote a string: '"text"'): ${err instanceof Error ? err.message : String(err)}`);
  }
}

export const map: Command = {
  name: 'map',
  summary: 'get, set, delete, list and watch the keys of a shared map',
  help,
  async run(argv) {
    const { values, positionals } = parse(
      argv,
      {
        codec: { type: 'string' }, json: { type: 'boolean' }, ttl: { type: 'string' }, 'if-revision': { type: 'string' },
        'if-absent': { type: 'boolean' }, 'if-present': { type: 'boolean' }, prefix: { type: 'boolean' }, initial: { type: 'boolean' },
        count: { type: 'string' }, timeout: { type: 'string' },
      },
      true,
    );
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    const [action, name, ...rest] = positionals;
    if (action === undefined || !(ACTIONS as readonly string[]).includes(action)) throw new UsageError(`map takes an action (${ACTIONS.join(', ')}), got ${action === undefined ? 'none' : JSON.stringify(action)}`);
    if (name === undefined) throw new UsageError(`map ${action} takes a NAME`);
    const codec = typeof values.codec === 'string' ? values.codec : 'json';
    if (!['json', 'utf8', 'jsonb', 'structured'].includes(codec)) throw new UsageError(`--codec must be json, utf8, jsonb or structured, got ${JSON.stringify(codec)}`);
    const text = codec === 'utf8';
    const show = (v: unknown): string => (text ? String(v) : (JSON.stringify(v) ?? 'null'));
    const want = (n: number, what: string): void => {
      if (rest.length !== n) throw new UsageError(`map ${action} takes NAME${what}, got ${rest.length + 1} argument${rest.length === 0 ? '' : 's'}`);
    };
    const asJson = values.json === true;
    const revision = values['if-revision'] === undefined ? undefined : intOption(values['if-revision'], 'if-revision', 0, Number.MAX_SAFE_INTEGER, 0);
    const m = SharedMap.open<unknown>(name, { codec });
    try {
      switch (action) {
        case 'get': {
          want(1, ' and KEY');
          const e = m.getEntry(rest[0]!);
          if (e === undefined) throw new ShmkitError(ErrorCodes.NOT_FOUND, `map "${name}": key ${JSON.stringify(rest[0])} is absent`, { segment: name });
          process.stdout.write((asJson ? JSON.stringify({ key: rest[0], value: e.value, revision: e.revision, expiresAt: e.expiresAt }) : show(e.value)) + '\n');
          return Exit.OK;
        }
        case 'set': {
          want(2, ', KEY and VALUE');
          const value = text ? rest[1] : parseJson(rest[1]!, 'VALUE');
          const ttl = values.ttl === undefined ? undefined : intOption(values.ttl, 'ttl', 1, 2 ** 52, 0);
          const rev = m.set(rest[0]!, value, { ...(ttl === undefined ? {} : { ttl }), ...(revision === undefined ? {} : { ifRevision: revision }), ...(values['if-absent'] === true ? { ifAbsent: true } : {}), ...(values['if-present'] === true ? { ifPresent: true } : {}) });
          process.stdout.write((asJson ? JSON.stringify({ key: rest[0], revision: rev }) : String(rev)) + '\n');
          return Exit.OK;
        }
        case 'del': {
          want(1, ' and KEY');
          if (!m.delete(rest[0]!, revision === undefined ? undefined : { ifRevision: revision })) {
            throw new ShmkitError(ErrorCodes.NOT_FOUND, `map "${name}": key ${JSON.stringify(rest[0])} is absent`, { segment: name });
          }
          return Exit.OK;
        }
        case 'incr': {
          if (rest.length < 1 || rest.length > 2) throw new UsageError(`map incr takes NAME, KEY and optional BY, got ${rest.length + 1} arguments`);
          const by = rest[1] === undefined ? 1 : Number(rest[1]);
          if (rest[1] !== undefined && (rest[1].trim() === '' || !Number.isFinite(by))) throw new UsageError(`BY must be a number, got ${JSON.stringify(rest[1])}`);
          process.stdout.write(String(m.increment(rest[0]!, by)) + '\n');
          return Exit.OK;
        }
        case 'keys': {
          if (rest.length > 1) throw new UsageError(`map keys takes NAME and optional PREFIX, got ${rest.length + 1} arguments`);
          for (const k of m.keys(rest[0])) process.stdout.write((asJson ? JSON.stringify(k) : k) + '\n');
          return Exit.OK;
        }
        default:
          return await watch(m, name, rest, values, show, asJson);
      }
    } finally {
      m.close();
    }
  },
};

async function watch(m: SharedMap<unknown>, name: string, rest: string[], values: Record<string, unknown>, show: (v: unknown) => string, asJson: boolean): Promise<number> {
  if (rest.length > 1) throw new UsageError(`map watch takes NAME and optional KEY, got ${rest.length + 1} arguments`);
  const count = intOption(values.count, 'count', 1, Number.MAX_SAFE_INTEGER, Infinity);
  const timeout = intOption(values.timeout, 'timeout', 0, 2_147_483_647, Infinity);
  const stop = new AbortController();
  const quit = (): void => stop.abort();
  const timer = timeout === Infinity ? null : setTimeout(quit, timeout);
  process.on('SIGINT', quit);
  process.on('SIGTERM', quit);
  const pipeGone = (err: NodeJS.ErrnoException): void => {
    if (err.code === 'EPIPE') stop.abort();
  };
  process.stdout.on('error', pipeGone);
  const w = m.watch(rest[0], { prefix: values.prefix === true, initial: values.initial === true, signal: stop.signal });
  const what = rest[0] === undefined ? 'every key' : values.prefix === true ? `keys starting with ${JSON.stringify(rest[0])}` : `key ${JSON.stringify(rest[0])}`;
  process.stderr.write(`watching ${what} of map "${name}"; Ctrl-C stops\n`);
  let seen = 0;
  try {
    for await (const c of w as AsyncIterable<MapChange<unknown>>) {
      const line = asJson ? JSON.stringify(c) : c.type === 'set' ? `set ${c.key} ${show(c.value)}` : `${c.type} ${c.key}`;
      process.stdout.write(line + '\n');
      if (++seen >= count) break;
    }
    return Exit.OK;
  } catch (err) {
    if (stop.signal.aborted) return Exit.OK;
    throw err;
  } finally {
    if (timer !== null) clearTimeout(timer);
    process.off('SIGINT', quit);
    process.off('SIGTERM', quit);
    w.close();
  }
}

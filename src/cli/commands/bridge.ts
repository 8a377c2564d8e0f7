/**
 * `shmkit bridge --nats URL ...`: runs a bridge between this machine's shared-memory topics,
 * services and maps and a NATS cluster, until SIGINT or SIGTERM. It loads shmkit/nats (and so
 * the NATS client packages) only when it runs.
 */
import { type Command, Exit, intOption, parse, UsageError } from '../output';

const help = `Usage: shmkit bridge --nats URL [--nats URL...] [--name NAME]
         [--topic LOCAL[=SUBJECT][:out|:in|:both]]...
         [--export LOCAL[=REMOTE]]... [--import LOCAL[=REMOTE]]...
         [--map-out LOCAL[=REMOTE]]... [--map-in LOCAL[=REMOTE]]...

Forwards this machine's shared-memory traffic to NATS and back, until Ctrl-C
or SIGTERM. It keeps running, and the local side keeps working, while NATS is
away: it connects and reconnects with backoff (100 ms doubling to 5 s).

  --topic LOCAL[=SUBJECT][:DIR]  the local topic LOCAL to and from the NATS
                   subject SUBJECT (default shmkit.topic.LOCAL); DIR is out
                   (local to NATS), in (NATS to local) or both (default).
                   Messages are forwarded as bytes, whatever their codec; a
                   message never comes back to where it came from
  --export LOCAL[=REMOTE]  remote callers of the service REMOTE (default LOCAL)
                   are answered by the local servers of LOCAL
  --import LOCAL[=REMOTE]  local callers of LOCAL are answered by the remote
                   service REMOTE (default LOCAL)
  --map-out LOCAL[=REMOTE]  mirrors the local map LOCAL to the NATS map REMOTE
                   (a JetStream KV bucket; the server needs JetStream)
  --map-in LOCAL[=REMOTE]   mirrors the NATS map REMOTE into the local map LOCAL

Options:
  --nats URL       a NATS server (nats://host:port); give several for failover
  --name NAME      the bridge's name in shmkit ls and top (default bridge-PID)
  --prefix P       first token of shmkit's subjects and buckets (default shmkit)
  --codec C        codec of exported/imported services and mirrored maps
                   (json by default; it must be theirs)
  --max-buffered N messages kept per topic while NATS is away (default 10000);
                   beyond, the oldest are dropped and counted
  --stats MS       print the bridge's counters as JSON every MS milliseconds
  -h, --help       show this help

Exit status: 0 stopped by a signal; 1 an error at start (a name that is taken,
a bad argument of the NATS client); 2 usage error.`;

const DIRS = ['out', 'in', 'both'] as const;

/** LOCAL[=OTHER][:DIR] */
function split(spec: string, withDir: boolean): { local: string; other: string | undefined; dir: string | undefined } {
  let rest = spec;
  let dir: string | undefined;
  if (withDir) {
    const m = /:(out|in|both)$/.exec(rest);
    if (m) {
      dir = m[1];
      rest = rest.slice(0, m.index);
    }
  }
  const eq = rest.indexOf('=');
  const local = eq < 0 ? rest : rest.slice(0, eq);
  const other = eq < 0 ? undefined : rest.slice(eq + 1);
  if (local === '' || other === '') throw new UsageError(`bad route ${JSON.stringify(spec)}: LOCAL[=${withDir ? 'SUBJECT][:out|:in|:both' : 'REMOTE'}]`);
  return { local, other, dir };
}

const list = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : typeof v === 'string' ? [v] : []);

export const bridge: Command = {
  name: 'bridge',
  summary: 'forward topics, services and maps between this machine and NATS',
  help,
  async run(argv) {
    const { values, positionals } = parse(
      argv,
      {
        nats: { type: 'string', multiple: true }, name: { type: 'string' }, prefix: { type: 'string' }, codec: { type: 'string' },
        topic: { type: 'string', multiple: true }, export: { type: 'string', multiple: true }, import: { type: 'string', multiple: true },
        'map-out': { type: 'string', multiple: true }, 'map-in': { type: 'string', multiple: true },
        'max-buffered': { type: 'string' }, stats: { type: 'string' },
      },
      true,
    );
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length > 0) throw new UsageError(`bridge takes options only, got ${JSON.stringify(positionals[0])}`);
    const servers = list(values.nats);
    if (servers.length === 0) throw new UsageError('bridge needs --nats URL');
    const codec = typeof values.codec === 'string' ? values.codec : 'json';
    const topics = list(values.topic).map((t) => {
      const { local, other, dir } = split(t, true);
      return { local, ...(other === undefined ? {} : { subject: other }), direction: (dir ?? 'both') as (typeof DIRS)[number] };
    });
    const services = [
      ...list(values.export).map((s) => ({ ...split(s, false), direction: 'export' as const })),
      ...list(values.import).map((s) => ({ ...split(s, false), direction: 'import' as const })),
    ].map((s) => ({ local: s.local, ...(s.other === undefined ? {} : { remote: s.other }), direction: s.direction, codec }));
    const maps = [
      ...list(values['map-out']).map((s) => ({ ...split(s, false), direction: 'out' as const })),
      ...list(values['map-in']).map((s) => ({ ...split(s, false), direction: 'in' as const })),
    ].map((m) => ({ local: m.local, ...(m.other === undefined ? {} : { remote: m.other }), direction: m.direction, codec }));
    if (topics.length + services.length + maps.length === 0) throw new UsageError('bridge needs at least one --topic, --export, --import, --map-out or --map-in');
    const maxBuffered = intOption(values['max-buffered'], 'max-buffered', 0, 1 << 24, 10_000);
    const every = intOption(values.stats, 'stats', 10, 2_147_483_647, 0);
    const nats = require('../../nats/index') as typeof import('../../nats/index');
    const b = nats.bridge({
      nats: { servers, ...(typeof values.prefix === 'string' ? { prefix: values.prefix } : {}) },
      ...(typeof values.name === 'string' ? { name: values.name } : {}),
      topics,
      services,
      maps,
      maxBuffered,
    });
    b.on('error', (err: Error) => process.stderr.write(`shmkit bridge: ${err.message}\n`));
    b.on('connect', () => process.stderr.write(`shmkit bridge: connected to NATS\n`));
    b.on('disconnect', () => process.stderr.write(`shmkit bridge: NATS connection lost; reconnecting\n`));
    process.stderr.write(`shmkit bridge "${b.name}": ${topics.length} topics, ${services.length} services, ${maps.length} maps; connecting to ${servers.join(', ')}\n`);
    const ticker = every > 0 ? setInterval(() => process.stdout.write(JSON.stringify(b.stats()) + '\n'), every) : null;
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    // A second signal, or a close that takes more than 5 s, ends the process at once.
    const force = (): never => process.exit(Exit.OK);
    process.once('SIGINT', force);
    process.once('SIGTERM', force);
    setTimeout(force, 5000).unref();
    if (ticker !== null) clearInterval(ticker);
    await b.close();
    return Exit.OK;
  },
};

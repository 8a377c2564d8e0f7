/**
 * `shmkit sub NAME`: subscribes to a Topic and prints every message, one per line, until --count
 * messages, --timeout, the topic's end, or Ctrl-C. It holds a subscriber slot while it runs, as a
 * program's subscription does, and frees it when it ends.
 */
import { ErrorCodes, ShmkitError } from '../../errors';
import { Topic } from '../../topic/topic';
import type { Subscription } from '../../topic/subscription';
import { type Command, Exit, intOption, parse, UsageError } from '../output';

const help = `Usage: shmkit sub NAME [--from now|history|SEQ] [--count N] [--timeout MS] [--json] [--seq]

Subscribes to the topic NAME and prints every message published from then on,
one per line, as it arrives. It takes one of the topic's subscriber slots until
it ends, and says on stderr when it is subscribed (with --from now, messages
published before that line are not seen).

Messages print as UTF-8 text (the bytes codec: what programs publish with the
'bytes' or 'utf8' codec, and what "shmkit pub" publishes). With --json they are
decoded with the json codec and printed as compact JSON, one per line.

Options:
  --from WHERE  where to start: now (default), history (the messages the topic
                keeps for late subscribers), or a sequence number SEQ (to resume)
  --count N     stop after N messages (default: no limit)
  --timeout MS  give up after MS milliseconds in all (default: no limit)
  --json        messages are JSON: decode them with the json codec
  --seq         print each message's sequence number and a tab before it
  -h, --help    show this help

Exit status: 0 after N messages, when the topic was ended (and every message was
printed), or on Ctrl-C; 1 the timeout passed first, a message could not be
decoded, or the topic does not exist, is not a topic, or has no free subscriber
slot; 2 usage error (a SEQ beyond the last published message included).`;

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

function parseFrom(v: unknown): 'now' | 'history' | number {
  if (v === undefined || v === 'now' || v === 'history') return (v ?? 'now') as 'now' | 'history';
  if (typeof v === 'string' && /^\d{1,15}$/.test(v)) return Number(v);
  throw new UsageError(`--from must be now, history or a sequence number (a whole number), got ${JSON.stringify(v)}`);
}

export const sub: Command = {
  name: 'sub',
  summary: 'print the messages published to a topic as they arrive',
  help,
  async run(argv) {
    const { values, positionals } = parse(
      argv,
      { from: { type: 'string' }, count: { type: 'string' }, timeout: { type: 'string' }, json: { type: 'boolean' }, seq: { type: 'boolean' } },
      true,
    );
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length !== 1) throw new UsageError(`sub takes one NAME, got ${positionals.length}`);
    const name = positionals[0]!;
    const from = parseFrom(values.from);
    const count = intOption(values.count, 'count', 1, Number.MAX_SAFE_INTEGER, Infinity);
    const timeout = intOption(values.timeout, 'timeout', 0, 2_147_483_647, Infinity);
    const json = values.json === true;
    const withSeq = values.seq === true;

    const topic = Topic.open<unknown>(name, { codec: json ? 'json' : 'bytes' });
    if (typeof from === 'number' && from > topic.published) {
      const next = topic.published;
      topic.close();
      throw new UsageError(`--from ${from} is beyond the last published message of topic "${name}" (the next one is ${next})`);
    }
    const stop = new AbortController();
    const quit = (): void => stop.abort();
    // A reader that went away (`shmkit sub t | head -1`): stop quietly, as Ctrl-C does. The listener
    // stays to the end: a write still queued when the command returns may fail too.
    const pipeGone = (err: NodeJS.ErrnoException): void => {
      if (err.code === 'EPIPE') stop.abort();
    };
    let subscription: Subscription<unknown> | undefined;
    try {
      subscription = topic.subscribe({ from });
      const s = subscription;
      process.on('SIGINT', quit);
      process.on('SIGTERM', quit);
      process.stdout.on('error', pipeGone);
      const until = [count === Infinity ? '' : plural(count, 'message'), timeout === Infinity ? '' : `${timeout} ms`].filter(Boolean).join(' or ');
      const missed = s.lost > 0 ? ` (${plural(s.lost, 'older message')} asked for ${s.lost === 1 ? 'is' : 'are'} no longer kept)` : '';
      process.stderr.write(`subscribed to topic "${name}" at sequence number ${s.seq}${missed}${until === '' ? '' : `, for ${until}`}; Ctrl-C stops\n`);

      const start = performance.now();
      let seen = 0;
      let lost = s.lost;
      while (seen < count) {
        const left = timeout === Infinity ? Infinity : Math.max(0, timeout - (performance.now() - start));
        let message: unknown;
        try {
          message = await s.receive({ timeout: left, signal: stop.signal });
        } catch (err) {
          if (stop.signal.aborted) return Exit.OK;
          if (!(err instanceof ShmkitError)) throw err;
          if (err.code === ErrorCodes.CLOSED && !s.closed && topic.ended) {
            process.stderr.write(`topic "${name}" was ended; ${plural(seen, 'message')} received\n`);
            return Exit.OK;
          }
          if (err.code === ErrorCodes.TIMEOUT) {
            const got = `${seen}${count === Infinity ? '' : ` of ${count}`} message${(count === Infinity ? seen : count) === 1 ? '' : 's'}`;
            throw new ShmkitError(ErrorCodes.TIMEOUT, `sub "${name}": timed out after ${timeout} ms with ${got} received`, { segment: name });
          }
          if (err.code === ErrorCodes.DECODE) {
            const why = err.cause instanceof Error ? ` (${err.cause.message})` : '';
            throw new ShmkitError(ErrorCodes.DECODE, `sub "${name}": message ${s.seq - 1} is not JSON${why}; without --json, sub prints messages as text`, { segment: name, cause: err });
          }
          throw err;
        }
        if (s.lost !== lost) {
          process.stderr.write(`topic "${name}": ${plural(s.lost - lost, 'message')} lost (overwritten before this subscriber read them)\n`);
          lost = s.lost;
        }
        const body = json ? JSON.stringify(message) : (message as Buffer).toString('utf8');
        process.stdout.write(withSeq ? `${s.seq - 1}\t${body}\n` : `${body}\n`);
        seen++;
      }
      return Exit.OK;
    } finally {
      process.off('SIGINT', quit);
      process.off('SIGTERM', quit);
      subscription?.close();
      topic.close();
    }
  },
};

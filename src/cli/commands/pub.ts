/**
 * `shmkit pub NAME MESSAGE`: publishes one message to a Topic, as a program's `topic.publish()`
 * does, and prints its sequence number. Text goes out with the bytes codec (the UTF-8 bytes of
 * MESSAGE), JSON with the json codec.
 */
import { ErrorCodes, ShmkitError } from '../../errors';
import { Topic } from '../../topic/topic';
import { type Command, Exit, intOption, parse, UsageError } from '../output';

const help = `Usage: shmkit pub NAME MESSAGE [--json] [--timeout MS]

Publishes MESSAGE to the topic NAME, as topic.publish() does in a program: every
subscriber gets it. Prints the message's sequence number on stdout.

MESSAGE is sent as its UTF-8 bytes (the bytes codec), which programs read with the
'bytes' or 'utf8' codec. With --json it is parsed as JSON and published with the
json codec, for programs that use the 'json' codec. A MESSAGE that starts with "-"
goes after "--": shmkit pub prices --json -- -1.5

On a topic with the 'block' overflow policy, a publish waits while the slowest
subscriber is a whole log behind.

Options:
  --json        MESSAGE is JSON: parse it and publish it with the json codec
  --timeout MS  give up after MS milliseconds of waiting (default: no limit)
  -h, --help    show this help

Exit status: 0 published; 1 the timeout passed first (nothing was published), the
topic ended, the message is larger than the topic's maximum, another live handle
holds the publisher role of a single-publisher topic, or the topic does not
exist or is not a topic; 2 usage error (MESSAGE not JSON with --json included).`;

export const pub: Command = {
  name: 'pub',
  summary: 'publish a message to a topic; prints its sequence number',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' }, timeout: { type: 'string' } }, true);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length !== 2) throw new UsageError(`pub takes NAME and MESSAGE, got ${positionals.length} argument${positionals.length === 1 ? '' : 's'}`);
    const [name, text] = positionals as [string, string];
    const timeout = intOption(values.timeout, 'timeout', 0, 2_147_483_647, Infinity);
    const json = values.json === true;
    let message: unknown = Buffer.from(text, 'utf8');
    if (json) {
      try {
        message = JSON.parse(text);
      } catch (err) {
        throw new UsageError(`with --json, MESSAGE must be JSON: ${err instanceof Error ? err.message : String(err)}`);
      }
    }

    const topic = Topic.open<unknown>(name, { codec: json ? 'json' : 'bytes' });
    const stop = new AbortController();
    const quit = (): void => stop.abort();
    process.on('SIGINT', quit);
    process.on('SIGTERM', quit);
    try {
      let seq: number;
      try {
        seq = await topic.publish(message, { timeout, signal: stop.signal });
      } catch (err) {
        if (!(err instanceof ShmkitError)) throw err;
        if (err.code === ErrorCodes.TIMEOUT) {
          throw new ShmkitError(ErrorCodes.TIMEOUT, `pub "${name}": timed out after ${timeout} ms waiting for the slowest subscriber; nothing was published`, { segment: name });
        }
        if (err.code === ErrorCodes.ABORTED) throw new ShmkitError(ErrorCodes.ABORTED, `pub "${name}": interrupted; nothing was published`, { segment: name });
        if (err.code === ErrorCodes.CLOSED) throw new ShmkitError(ErrorCodes.CLOSED, `pub "${name}": the topic was ended; nothing was published`, { segment: name });
        throw err;
      }
      process.stdout.write(`${seq}\n`);
      return Exit.OK;
    } finally {
      process.off('SIGINT', quit);
      process.off('SIGTERM', quit);
      topic.close();
    }
  },
};

/**
 * `shmkit call NAME METHOD [JSON]`: calls a method of a service served with serve(), from a shell,
 * and prints the result as JSON (a streamed result: one JSON line per item).
 */
import { ShmkitError } from '../../errors';
import { rpcClient } from '../../rpc/client';
import { type Command, Exit, intOption, parse, UsageError } from '../output';

const help = `Usage: shmkit call NAME METHOD [JSON] [--timeout MS] [--codec json|jsonb|structured]

Calls METHOD of the service NAME (a program's serve(NAME, handlers)) and prints
its result as JSON on stdout. A method that streams prints one JSON line per item
as they arrive.

JSON is the arguments: an array is the argument list ('[1, 2]' calls
METHOD(1, 2)); any other JSON value is the single argument ('"hi"' calls
METHOD("hi")). To pass one array, wrap it: '[[1, 2]]'. Without JSON, METHOD is
called with no arguments.

An error thrown by the handler prints on stderr as
"shmkit: CODE: name: message" (CODE is the error's code, or ERR_SHMKIT_REMOTE
when it has none), and with --json as { "error": { name, message, code } }.

Options:
  --timeout MS  give up after MS milliseconds (default 10000); the handler's
                ctx.signal aborts
  --codec C     the service's payload codec (default json; it must match the
                server's)
  --json        print the result, or the error, as one JSON object per line:
                { "result": ... } / { "item": ... } / { "error": ... }
  -h, --help    show this help

Exit status: 0 the call returned (or its stream ended); 1 the handler threw,
the call timed out, the service does not exist, or no server accepted the
connection; 2 usage error (JSON that does not parse included).`;

export const call: Command = {
  name: 'call',
  summary: 'call a method of an RPC service and print the result as JSON',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, { timeout: { type: 'string' }, codec: { type: 'string' }, json: { type: 'boolean' } }, true);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    if (positionals.length < 2 || positionals.length > 3) throw new UsageError(`call takes NAME, METHOD and optional JSON arguments, got ${positionals.length} arguments`);
    const [name, method, json] = positionals as [string, string, string | undefined];
    let args: unknown[] = [];
    if (json !== undefined) {
      let v: unknown;
      try {
        v = JSON.parse(json);
      } catch (err) {
        throw new UsageError(`JSON: ${err instanceof Error ? err.message : String(err)}`);
      }
      args = Array.isArray(v) ? v : [v];
    }
    const timeout = intOption(values.timeout, 'timeout', 1, 2_147_483_647, 10_000);
    const codec = values.codec ?? 'json';
    if (codec !== 'json' && codec !== 'jsonb' && codec !== 'structured') throw new UsageError(`--codec must be json, jsonb or structured, got ${JSON.stringify(codec)}`);
    const asJson = values.json === true;
    const client = await rpcClient(name, { codec, connectTimeout: timeout, spin: 0 });
    const out = (v: unknown): string => {
      const s = JSON.stringify(v);
      return s === undefined ? 'null' : s;
    };
    try {
      const result = await client.call(method, args, { timeout });
      if (result !== null && typeof result === 'object' && typeof (result as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function' && !Array.isArray(result)) {
        for await (const item of result as AsyncIterable<unknown>) process.stdout.write((asJson ? out({ item }) : out(item)) + '\n');
      } else process.stdout.write((asJson ? out({ result }) : out(result)) + '\n');
      return Exit.OK;
    } catch (err) {
      if (err instanceof ShmkitError) throw err; // ours (or ours raised by the server): the usual error line
      const e = err as { name?: unknown; message?: unknown; code?: unknown };
      const code = typeof e.code === 'string' || typeof e.code === 'number' ? String(e.code) : 'ERR_SHMKIT_REMOTE';
      if (asJson) process.stdout.write(out({ error: { name: String(e.name), message: String(e.message), code } }) + '\n');
      else process.stderr.write(`shmkit: ${code}: ${String(e.name)}: ${String(e.message).split('\n')[0]}\n`);
      return Exit.ERROR;
    } finally {
      client.close();
    }
  },
};

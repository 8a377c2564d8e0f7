/**
 * `shmkit top`: live rates, depth, waits and peers per object, sampled from the channel counters.
 * On a terminal it redraws in place on the alternate screen and restores the terminal on exit or
 * Ctrl-C; piped, it prints plain frames (or one JSON line per frame).
 */
import { ErrorCodes, ShmkitError } from '../../errors';
import type { ChannelState } from '../../kinds';
import { bytes, type Command, Exit, intOption, parse, table } from '../output';
import { readAll, readObject, resolveEntry, type ShmObject } from '../scan';

const help = `Usage: shmkit top [NAME...] [--interval MS] [--count N] [--json]

Shows, for every shmkit object (or the NAMEs given), refreshed every interval:
message rates in and out (msg/s, from the channel's sent/received counters), MB/s,
depth (messages and ring bytes queued), waits (times senders/receivers parked),
live producers and consumers, and a one-line state for other kinds.

On a terminal the screen is redrawn in place (alternate screen); Ctrl-C restores
the terminal and exits 0. Piped, each refresh prints a plain table.

Options:
  --interval MS  refresh period in milliseconds (default 1000, 50..3600000)
  --count N      stop after N refreshes (default: until Ctrl-C)
  --json         print one JSON object per refresh, one per line (see docs/cli.md)
  -h, --help     show this help

Exit status: 0 (also after Ctrl-C); 1 error; 2 usage error.`;

const ENTER = '\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J';
const RESTORE = '\x1b[?25h\x1b[?1049l';

interface Sample {
  t: number;
  ino: number;
  sent: number;
  received: number;
  sentBytes: number;
  receivedBytes: number;
}

export interface TopRow {
  entry: string;
  name: string | null;
  kind: string | null;
  status: string;
  summary: string | null;
  /** Per second, over the last interval; null on the first frame or for other kinds. */
  rates: { sent: number; received: number; sentBytes: number; receivedBytes: number } | null;
  depth: { messages: number; bytes: number } | null;
  waits: { send: number; receive: number } | null;
  peers: { producers: number; consumers: number; dead: number } | null;
}

function compact(n: number): string {
  if (n < 1000) return n < 10 && n !== Math.round(n) ? n.toFixed(1) : String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)}M`;
}

export const top: Command = {
  name: 'top',
  summary: 'watch message rates, depth, waits and peers live',
  help,
  run(argv) {
    const { values, positionals } = parse(argv, { interval: { type: 'string' }, count: { type: 'string' }, json: { type: 'boolean' } }, true);
    if (values.help === true) {
      process.stdout.write(help + '\n');
      return Exit.OK;
    }
    const interval = intOption(values.interval, 'interval', 50, 3_600_000, 1000);
    const count = intOption(values.count, 'count', 1, Number.MAX_SAFE_INTEGER, Infinity);
    const json = values.json === true;
    const entries = positionals.map(resolveEntry);
    const tty = process.stdout.isTTY === true && !json;
    const prev = new Map<string, Sample>();

    const sample = (): TopRow[] => {
      const now = performance.now();
      let objects: Array<ShmObject | { missing: string }>;
      if (entries.length === 0) {
        objects = readAll();
      } else {
        objects = entries.map((e) => {
          try {
            return readObject(e);
          } catch (err) {
            if (err instanceof ShmkitError && err.code === ErrorCodes.NOT_FOUND) return { missing: e };
            throw err;
          }
        });
      }
      const seen = new Set<string>();
      const rows = objects.map((o): TopRow => {
        if ('missing' in o) {
          return { entry: o.missing, name: o.missing.startsWith('shmkit-') ? o.missing.slice(7) : null, kind: null, status: 'missing', summary: null, rates: null, depth: null, waits: null, peers: null };
        }
        const r = o.report;
        seen.add(r.entry);
        const row: TopRow = { entry: r.entry, name: r.name, kind: r.kind, status: r.status, summary: o.description?.summary ?? r.problem, rates: null, depth: null, waits: null, peers: null };
        const st = o.description?.state;
        if (r.kind === 'channel' && st !== null && st !== undefined) {
          const c = st as ChannelState;
          const s: Sample = {
            t: now,
            ino: o.stat.ino,
            sent: c.counters.sent ?? 0,
            received: c.counters.received ?? 0,
            sentBytes: c.counters.sentBytes ?? 0,
            receivedBytes: c.counters.receivedBytes ?? 0,
          };
          const p = prev.get(r.entry);
          if (p !== undefined && p.ino === s.ino && s.t > p.t) {
            const dt = (s.t - p.t) / 1000;
            const rate = (a: number, b: number): number => Math.max(0, (a - b) / dt);
            row.rates = { sent: rate(s.sent, p.sent), received: rate(s.received, p.received), sentBytes: rate(s.sentBytes, p.sentBytes), receivedBytes: rate(s.receivedBytes, p.receivedBytes) };
          }
          prev.set(r.entry, s);
          row.depth = { messages: c.depth.messages, bytes: c.depth.bytes };
          row.waits = { send: c.counters.sendWaits ?? 0, receive: c.counters.receiveWaits ?? 0 };
          const attached = c.peers.filter((q) => q.alive && !q.departed);
          row.peers = { producers: attached.filter((q) => q.producer).length, consumers: attached.filter((q) => q.consumer).length, dead: c.peers.filter((q) => !q.alive && !q.departed).length };
        }
        return row;
      });
      for (const k of prev.keys()) if (!seen.has(k)) prev.delete(k);
      return rows.sort((a, b) => Number(b.kind === 'channel') - Number(a.kind === 'channel') || a.entry.localeCompare(b.entry));
    };

    const render = (rows: TopRow[], width: number | undefined): string[] => {
      const d = new Date();
      const clock = [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
      const head = `shmkit top  ${clock}  every ${interval} ms  ${rows.length} object${rows.length === 1 ? '' : 's'}${tty ? '  (Ctrl-C quits)' : ''}`;
      const cells = rows.map((r) => [
        r.name ?? r.entry,
        r.kind ?? '-',
        r.rates === null ? '-' : compact(r.rates.sent),
        r.rates === null ? '-' : compact(r.rates.received),
        r.rates === null ? '-' : (r.rates.sentBytes / 1e6).toFixed(1),
        r.depth === null ? '-' : `${r.depth.messages} (${bytes(r.depth.bytes)})`,
        r.waits === null ? '-' : `${r.waits.send}/${r.waits.receive}`,
        r.peers === null ? '-' : `${r.peers.producers}p ${r.peers.consumers}c${r.peers.dead > 0 ? ` ${r.peers.dead} dead` : ''}`,
        r.status === 'ok' ? (r.summary ?? '') : `${r.status}${r.summary === null ? '' : `: ${r.summary}`}`,
      ]);
      const t = table(['NAME', 'KIND', 'IN MSG/S', 'OUT MSG/S', 'MB/S', 'DEPTH', 'WAITS S/R', 'PEERS', 'STATE'], cells, width);
      return [width !== undefined && head.length > width ? head.slice(0, width) : head, ...t];
    };

    return new Promise<number>((resolve, reject) => {
      let frames = 0;
      let timer: NodeJS.Timeout | undefined;
      let entered = false;
      const restore = (): void => {
        if (!entered) return;
        entered = false;
        process.stdout.write(RESTORE);
      };
      const quit = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        restore();
        process.exit(Exit.OK);
      };
      process.on('SIGINT', quit);
      process.on('SIGTERM', quit);
      process.on('exit', restore);
      if (tty) {
        process.stdout.write(ENTER);
        entered = true;
      }
      const finish = (code: number, last: string[] | null): void => {
        process.off('SIGINT', quit);
        process.off('SIGTERM', quit);
        restore();
        process.off('exit', restore);
        if (last !== null) process.stdout.write(last.join('\n') + '\n'); // a bounded run leaves its last frame on screen
        resolve(code);
      };
      const tick = (): void => {
        let rows: TopRow[];
        try {
          rows = sample();
        } catch (err) {
          finish(Exit.ERROR, null);
          reject(err);
          return;
        }
        frames++;
        if (json) {
          process.stdout.write(JSON.stringify({ time: new Date().toISOString(), objects: rows }) + '\n');
        } else if (tty) {
          const width = process.stdout.columns || undefined;
          const lines = render(rows, width);
          const height = process.stdout.rows || Infinity;
          process.stdout.write('\x1b[H' + lines.slice(0, height).map((l) => l + '\x1b[K').join('\n') + '\x1b[J');
          if (frames >= count) return finish(Exit.OK, lines);
        } else {
          process.stdout.write((frames > 1 ? '\n' : '') + render(rows, undefined).join('\n') + '\n');
        }
        if (frames >= count) return finish(Exit.OK, null);
        timer = setTimeout(tick, interval);
      };
      tick();
    });
  },
};

/**
 * `shmkit top`: live rates, depth, waits and peers per object, sampled from the counters of
 * channels, topics and events (the kinds registry's describe()). On a terminal it redraws in place on the alternate screen and restores the terminal on exit or
 * Ctrl-C; piped, it prints plain frames (or one JSON line per frame).
 */
import { ErrorCodes, ShmkitError } from '../../errors';
import type { BridgeState, ChannelState, EventState, MapState, ServerState, TopicState } from '../../kinds';
import { bytes, type Command, Exit, intOption, parse, table } from '../output';
import { readAll, readObject, resolveEntry, type ShmObject } from '../scan';

const help = `Usage: shmkit top [NAME...] [--interval MS] [--count N] [--json]

Shows, for every shmkit object (or the NAMEs given), refreshed every interval:
- channels: message rates in and out (msg/s, from the sent/received counters),
  MB/s, depth (messages and ring bytes queued), waits (times senders/receivers
  parked), live producers and consumers;
- topics: messages published per second, the largest lag of a live subscriber,
  waits (times publishers/subscribers parked), live subscribers, and the
  messages they lost;
- events: notifications per second and live listeners;
- servers: RPC calls answered per second, calls running, live listeners and
  open connections;
- maps: reads and writes per second, entries, value bytes used, hit ratio,
  evictions, and the handles open on it;
- bridges (shmkit bridge): messages per second from NATS (IN) and to NATS
  (OUT), messages buffered while NATS is away and dropped (LOST), and whether
  NATS is connected;
and a one-line state for every object.

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

/** Counters of one object at one moment, to compute rates from. */
interface Sample {
  t: number;
  ino: number;
  counters: number[];
}

export interface TopicRow {
  /** Messages published (the sequence number of the next one). */
  published: number;
  /** Per second, over the last interval; null on the first frame. */
  rates: { published: number } | null;
  /** Live subscribers; `dead`: slots of subscribers that died, not yet taken over or evicted. */
  subscribers: number;
  dead: number;
  /** The largest lag of a live subscriber: messages published that it has not read. */
  maxLag: number;
  /** Messages the live subscribers lost ('overwrite' topics, or a start older than kept), summed. */
  lost: number;
  /** Times publishers waited for the slowest subscriber, and times subscribers parked (summed). */
  waits: { publish: number; receive: number };
  ended: boolean;
}

export interface EventRow {
  /** notify() calls and wake-ups so far (statistics). */
  notified: number;
  wakeUps: number;
  /** Per second, over the last interval; null on the first frame. */
  rates: { notified: number; wakeUps: number } | null;
  /** Live listeners; `dead`: slots of listeners that died, not yet taken over. */
  listeners: number;
  dead: number;
  /** Ids notified and not yet taken, summed over the live listeners. */
  pending: number;
}

export interface ServerRow {
  /** RPC calls answered and failed so far, over the live listeners (statistics). */
  calls: number;
  errors: number;
  /** Per second, over the last interval; null on the first frame. */
  rates: { calls: number; errors: number } | null;
  /** Calls running now. */
  inFlight: number;
  /** Live listeners that accept; `dead`: listener slots of dead processes. */
  listeners: number;
  dead: number;
  /** Connections accepted whose client lives. */
  connections: number;
}

export interface MapRow {
  /** Reads and writes so far, over every handle (statistics). */
  gets: number;
  writes: number;
  hits: number;
  misses: number;
  /** Per second, over the last interval; null on the first frame. */
  rates: { gets: number; writes: number } | null;
  entries: number;
  maxEntries: number;
  bytesUsed: number;
  valueBytes: number;
  evictions: number;
  expirations: number;
  /** Live handles. */
  handles: number;
}

export interface BridgeRow {
  /** Messages forwarded to NATS and from NATS so far, dropped while NATS was away, buffered now. */
  out: number;
  in: number;
  dropped: number;
  buffered: number;
  /** Per second, over the last interval; null on the first frame. */
  rates: { out: number; in: number } | null;
  connected: boolean;
  /** Whether the bridge process lives. */
  alive: boolean;
  reconnects: number;
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
  /** Topics, else null. */
  topic: TopicRow | null;
  /** Events, else null. */
  event: EventRow | null;
  /** Servers, else null. */
  server: ServerRow | null;
  /** Maps, else null. */
  map: MapRow | null;
  /** Bridges, else null. */
  bridge: BridgeRow | null;
}

/** Sort order: channels, topics, events, servers, then the other kinds. */
const RANK: Record<string, number> = { channel: 0, topic: 1, event: 2, server: 3, map: 4, bridge: 5 };
const rank = (kind: string | null): number => RANK[kind ?? ''] ?? 6;

function compact(n: number): string {
  if (n < 1000) return n < 10 && n !== Math.round(n) ? n.toFixed(1) : String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)}M`;
}

export const top: Command = {
  name: 'top',
  summary: 'watch message rates, depth, waits and peers of channels, topics and events live',
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
      /** Per-second rates of `counters` since the last frame (null on the first, or for a new object under the name); remembers them. */
      const ratesOf = (entry: string, ino: number, counters: number[]): number[] | null => {
        const p = prev.get(entry);
        prev.set(entry, { t: now, ino, counters });
        if (p === undefined || p.ino !== ino || now <= p.t || p.counters.length !== counters.length) return null;
        const dt = (now - p.t) / 1000;
        return counters.map((c, i) => Math.max(0, (c - p.counters[i]!) / dt));
      };
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
          return { entry: o.missing, name: o.missing.startsWith('shmkit-') ? o.missing.slice(7) : null, kind: null, status: 'missing', summary: null, rates: null, depth: null, waits: null, peers: null, topic: null, event: null, server: null, map: null, bridge: null };
        }
        const r = o.report;
        seen.add(r.entry);
        const row: TopRow = {
          entry: r.entry,
          name: r.name,
          kind: r.kind,
          status: r.status,
          summary: o.description?.summary ?? r.problem,
          rates: null,
          depth: null,
          waits: null,
          peers: null,
          topic: null,
          event: null,
          server: null,
          map: null,
          bridge: null,
        };
        const st = r.status === 'ok' ? o.description?.state : null;
        if (st === null || st === undefined) return row;
        if (r.kind === 'topic') {
          const t = st as TopicState;
          const live = t.subscribers.filter((x) => x.alive);
          const rates = ratesOf(r.entry, o.stat.ino, [t.published]);
          row.topic = {
            published: t.published,
            rates: rates === null ? null : { published: rates[0]! },
            subscribers: live.length,
            dead: t.subscribers.length - live.length,
            maxLag: live.reduce((m, x) => Math.max(m, x.lag), 0),
            lost: live.reduce((n, x) => n + (x.lost ?? 0), 0),
            waits: { publish: t.publishWaits ?? 0, receive: live.reduce((n, x) => n + (x.waits ?? 0), 0) },
            ended: t.ended,
          };
        } else if (r.kind === 'event') {
          const e = st as EventState;
          const live = e.listeners.filter((l) => l.alive);
          const notified = e.notified ?? 0;
          const wakeUps = e.wakeUps ?? 0;
          const rates = ratesOf(r.entry, o.stat.ino, [notified, wakeUps]);
          row.event = {
            notified,
            wakeUps,
            rates: rates === null ? null : { notified: rates[0]!, wakeUps: rates[1]! },
            listeners: live.length,
            dead: e.listeners.length - live.length,
            pending: live.reduce((n, l) => n + l.pending.length, 0),
          };
        } else if (r.kind === 'server') {
          const v = st as ServerState;
          const live = v.listeners.filter((l) => l.alive);
          const calls = live.reduce((n, l) => n + (l.calls ?? 0), 0);
          const errors = live.reduce((n, l) => n + (l.errors ?? 0), 0);
          const rates = ratesOf(r.entry, o.stat.ino, [calls, errors]);
          row.server = {
            calls,
            errors,
            rates: rates === null ? null : { calls: Math.max(0, rates[0]!), errors: Math.max(0, rates[1]!) },
            inFlight: live.reduce((n, l) => n + Math.max(0, l.inFlight), 0),
            listeners: live.filter((l) => !l.closing).length,
            dead: v.listeners.length - live.length,
            connections: v.connections.filter((c) => c.state === 'accepted' && c.client.alive).length,
          };
        } else if (r.kind === 'map') {
          const m = st as MapState;
          const rates = ratesOf(r.entry, o.stat.ino, [m.gets, m.writes]);
          row.map = {
            gets: m.gets, writes: m.writes, hits: m.hits, misses: m.misses,
            rates: rates === null ? null : { gets: Math.max(0, rates[0]!), writes: Math.max(0, rates[1]!) },
            entries: m.entries, maxEntries: m.maxEntries, bytesUsed: m.bytesUsed ?? 0, valueBytes: m.valueBytes,
            evictions: m.evictions ?? 0, expirations: m.expirations ?? 0, handles: m.handles.filter((h) => h.alive).length,
          };
        } else if (r.kind === 'bridge') {
          const b = st as BridgeState;
          const rates = ratesOf(r.entry, o.stat.ino, [b.out ?? 0, b.in ?? 0]);
          row.bridge = {
            out: b.out ?? 0, in: b.in ?? 0, dropped: b.dropped ?? 0, buffered: b.buffered ?? 0,
            rates: rates === null ? null : { out: Math.max(0, rates[0]!), in: Math.max(0, rates[1]!) },
            connected: b.connected, alive: b.owner?.alive === true, reconnects: b.reconnects ?? 0,
          };
        } else if (r.kind === 'channel') {
          const c = st as ChannelState;
          const rates = ratesOf(r.entry, o.stat.ino, [c.counters.sent ?? 0, c.counters.received ?? 0, c.counters.sentBytes ?? 0, c.counters.receivedBytes ?? 0]);
          if (rates !== null) row.rates = { sent: rates[0]!, received: rates[1]!, sentBytes: rates[2]!, receivedBytes: rates[3]! };
          row.depth = { messages: c.depth.messages, bytes: c.depth.bytes };
          row.waits = { send: c.counters.sendWaits ?? 0, receive: c.counters.receiveWaits ?? 0 };
          const attached = c.peers.filter((q) => q.alive && !q.departed);
          row.peers = { producers: attached.filter((q) => q.producer).length, consumers: attached.filter((q) => q.consumer).length, dead: c.peers.filter((q) => !q.alive && !q.departed).length };
        }
        return row;
      });
      for (const k of prev.keys()) if (!seen.has(k)) prev.delete(k);
      return rows.sort((a, b) => rank(a.kind) - rank(b.kind) || a.entry.localeCompare(b.entry));
    };

    const render = (rows: TopRow[], width: number | undefined): string[] => {
      const d = new Date();
      const clock = [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
      const head = `shmkit top  ${clock}  every ${interval} ms  ${rows.length} object${rows.length === 1 ? '' : 's'}${tty ? '  (Ctrl-C quits)' : ''}`;
      const dead = (n: number): string => (n > 0 ? ` ${n} dead` : '');
      const cells = rows.map((r) => {
        const state = r.status === 'ok' ? (r.summary ?? '') : `${r.status}${r.summary === null ? '' : `: ${r.summary}`}`;
        const t = r.topic;
        const e = r.event;
        if (t !== null) {
          const rate = t.rates === null ? '-' : compact(t.rates.published);
          const subs = `${t.subscribers} sub${t.subscribers === 1 ? '' : 's'}${dead(t.dead)}`;
          return [r.name ?? r.entry, 'topic', rate, '-', '-', `lag ${t.maxLag}`, `${t.waits.publish}/${t.waits.receive}`, subs, String(t.lost), state];
        }
        const v = r.server;
        if (v !== null) {
          const rate = v.rates === null ? '-' : compact(v.rates.calls);
          const peers = `${v.listeners} listener${v.listeners === 1 ? '' : 's'} ${v.connections} conn${dead(v.dead)}`;
          return [r.name ?? r.entry, 'server', rate, rate, '-', `${v.inFlight} calls`, '-', peers, '-', state];
        }
        const m = r.map;
        if (m !== null) {
          const handles = `${m.handles} handle${m.handles === 1 ? '' : 's'}`;
          return [r.name ?? r.entry, 'map', m.rates === null ? '-' : `${compact(m.rates.gets)} get`, m.rates === null ? '-' : `${compact(m.rates.writes)} set`, '-', `${m.entries} keys`, '-', handles, String(m.evictions), state];
        }
        const b = r.bridge;
        if (b !== null) {
          const nats = !b.alive ? 'dead' : b.connected ? 'NATS up' : 'NATS away';
          return [r.name ?? r.entry, 'bridge', b.rates === null ? '-' : compact(b.rates.in), b.rates === null ? '-' : compact(b.rates.out), '-', `${b.buffered} buffered`, '-', nats, String(b.dropped), state];
        }
        if (e !== null) {
          const rate = e.rates === null ? '-' : compact(e.rates.notified);
          const listeners = `${e.listeners} listener${e.listeners === 1 ? '' : 's'}${dead(e.dead)}`;
          return [r.name ?? r.entry, 'event', rate, '-', '-', '-', '-', listeners, '-', state];
        }
        return [
          r.name ?? r.entry,
          r.kind ?? '-',
          r.rates === null ? '-' : compact(r.rates.sent),
          r.rates === null ? '-' : compact(r.rates.received),
          r.rates === null ? '-' : (r.rates.sentBytes / 1e6).toFixed(1),
          r.depth === null ? '-' : `${r.depth.messages} (${bytes(r.depth.bytes)})`,
          r.waits === null ? '-' : `${r.waits.send}/${r.waits.receive}`,
          r.peers === null ? '-' : `${r.peers.producers}p ${r.peers.consumers}c${dead(r.peers.dead)}`,
          '-',
          state,
        ];
      });
      const t = table(['NAME', 'KIND', 'IN MSG/S', 'OUT MSG/S', 'MB/S', 'DEPTH', 'WAITS S/R', 'PEERS', 'LOST', 'STATE'], cells, width);
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

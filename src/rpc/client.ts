/**
 * rpcClient(): a typed proxy whose methods call a service served with serve(). The client holds
 * one connection to each listener of the name (up to maxServers), multiplexes any number of calls
 * on each (ids match answers to calls, in any order), and sends each call over the connection with
 * the fewest calls outstanding: calls spread over a pool of server processes. When a server dies,
 * the calls it was running fail with ERR_SHMKIT_PEER_GONE within the liveness interval, and later
 * calls go to the others. Listeners that join later are connected to as calls are made.
 */
import { isAborted, onAbort } from '../abort';
import type { Codec, CodecName } from '../codec/codec';
import { resolveCodec } from '../codec/codec';
import { abortError, closedError, ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { checkName, MAX_BASE_NAME_LENGTH } from '../naming';
import { openSegment } from '../open';
import { Kind, type OpenOptions, type Segment } from '../segment';
import { connectTo } from '../server/connect';
import type { Connection } from '../server/connection';
import * as SL from '../server/layout';
import { ServerTable } from '../server/table';
import { parseTrust } from '../trust';
import { checkInt, checkObject, checkTimeout, describe } from '../validate';
import * as P from './protocol';
import { answer, type CallCore, type CallLink, type Parsed, Pending, proxy, type ProxyCore, type RpcClient, type RpcClientStats } from './calls';

export type { CallOptions, RpcClient, RpcClientMethods, RpcClientStats, RpcResult, ReservedName } from './calls';
import { nextFrame, Stop } from './reader';
import { type Timer, timer } from '../timer';

export interface RpcClientOptions extends OpenOptions {
  /** How arguments, results and stream items are encoded: 'json' (default), 'jsonb', 'structured', or a Codec. The server's must match. */
  codec?: CodecName | Codec<unknown>;
  /** Default timeout of each call, ms (ERR_SHMKIT_TIMEOUT; the server's handler sees its signal abort). Default: none. */
  timeout?: number;
  /** Milliseconds to wait for the first connection. Default 10,000. */
  connectTimeout?: number;
  /** Stream items a caller lets the server send ahead of what it has consumed. Default 64. */
  window?: number;
  /** Listeners to hold a connection to at most (calls spread over them). Default 8. */
  maxServers?: number;
  /**
   * Microseconds to spin for an answer before sleeping, while calls are outstanding (the event
   * loop is busy meanwhile). Default: configure().spinMicros. 0: sleep at once (async only).
   */
  spin?: number;
}

const noop = (): void => {};

interface Link extends CallLink {
  conn: Connection<Buffer>;
  listener: number;
  pending: Map<number, Pending>;
  nextId: number;
  /** A pump reads answers while calls are outstanding; none runs while the link is idle. */
  pumping: boolean;
  /** Stops the pump's wait when the last outstanding call was given up. */
  idle: Stop | null;
  dropped: boolean;
}

class Core implements CallCore, ProxyCore {
  readonly name: string;
  readonly codec: Codec<unknown>;
  readonly window: number;
  private readonly maxServers: number;
  private readonly table: ServerTable;
  private readonly segment: Segment;
  private readonly links = new Map<number, Link>();
  private readonly connecting = new Map<number, Promise<void>>();
  private readonly options: RpcClientOptions;
  private readonly spin: number;
  private lastRefresh = 0;
  private rotate = 0;
  closed = false;
  readonly counts = { calls: 0, results: 0, errors: 0 };

  constructor(name: string, segment: Segment, options: RpcClientOptions) {
    this.name = name;
    this.segment = segment;
    this.options = options;
    this.codec = resolveCodec(options.codec ?? 'json');
    this.window = options.window === undefined ? 64 : checkInt('options.window', options.window, 1, 1 << 20);
    this.maxServers = options.maxServers === undefined ? 8 : checkInt('options.maxServers', options.maxServers, 1, SL.MAX_LISTENERS);
    this.spin = options.spin === undefined ? -1 : checkInt('options.spin', options.spin, 0, 10_000_000);
    this.table = new ServerTable(segment, SL.readParams(segment), `server "${name}"`);
  }

  get label(): string {
    return `rpc "${this.name}"`;
  }

  /** Connects to accepting listeners not yet in the pool (up to maxServers). Resolves when tried. */
  async refresh(connectTimeout: number): Promise<void> {
    this.lastRefresh = performance.now();
    if (this.closed || this.segment.int32.length === 0) return;
    const want = this.table.acceptingListeners().filter((i) => !this.links.has(i)).slice(0, Math.max(0, this.maxServers - this.links.size));
    const errors: unknown[] = [];
    await Promise.all(want.map((i) => this.connectOne(i, connectTimeout).catch((e: unknown) => void errors.push(e))));
    if (this.links.size === 0) {
      // None of the targeted listeners answered (one may have died meanwhile): any listener will do.
      try {
        await this.connectOne(-1, connectTimeout);
      } catch (err) {
        throw errors[0] ?? err;
      }
    }
  }

  private connectOne(listener: number, timeout: number): Promise<void> {
    const running = this.connecting.get(listener);
    if (running) return running;
    const p = (async () => {
      const conn = await connectTo<Buffer>(this.name, { timeout, ...(this.options.trustedOwners === undefined ? {} : { trustedOwners: this.options.trustedOwners }) }, listener);
      if (this.closed) {
        conn.close();
        return;
      }
      const at = listener >= 0 ? listener : this.table.listenerOf(conn.id);
      if (this.links.has(at)) {
        conn.close(); // raced with another connect to the same listener
        return;
      }
      const link: Link = {
        conn,
        listener: at,
        pending: new Map(),
        nextId: 1,
        pumping: false,
        idle: null,
        dropped: false,
        control: (frame) => {
          if (!conn.closed) void conn.send(frame).catch(noop);
        },
      };
      this.links.set(at, link);
      conn.on('close', (err?: unknown) => this.drop(link, err ?? null));
    })().finally(() => this.connecting.delete(listener));
    this.connecting.set(listener, p);
    return p;
  }

  /** Starts the link's pump if calls are outstanding and none runs (after the caller's synchronous code). */
  private pump(link: Link): void {
    if (link.pumping || link.dropped) return;
    link.pumping = true;
    queueMicrotask(() => void this.runPump(link));
  }

  /**
   * Reads answers while the link has calls outstanding: spins up to `spin` µs for each, then
   * sleeps (without blocking the event loop) until it comes. Ends when nothing is outstanding, so
   * an idle client waits on nothing and keeps no process alive.
   */
  private async runPump(link: Link): Promise<void> {
    try {
      let idle = new Stop();
      while (link.pending.size > 0 && !link.dropped) {
        if (idle.stopped) idle = new Stop();
        link.idle = idle;
        let f: Buffer;
        try {
          f = await nextFrame(link.conn, this.spin, idle);
        } catch (err) {
          if (idle.stopped) continue; // the last call was given up (another may have come since)
          throw err;
        } finally {
          link.idle = null;
        }
        answer(this, link, f);
      }
    } catch (err) {
      link.pumping = false;
      link.conn.close();
      this.drop(link, err);
      return;
    }
    link.pumping = false;
    if (link.pending.size > 0) this.pump(link); // a call came in as the pump was leaving
  }

  /** A call stopped being outstanding: if it was the last one, the pump stops waiting. */
  /** @internal */
  settled(link: Link): void {
    if (link.pending.size === 0) link.idle?.stop();
  }

  /** The link is gone (its server died or closed it, or it broke): its calls fail. */
  private drop(link: Link, failure: unknown): void {
    if (link.dropped) return;
    link.dropped = true;
    if (this.links.get(link.listener) === link) this.links.delete(link.listener);
    link.conn.close();
    const dead = failure instanceof ShmkitError && failure.code === ErrorCodes.PEER_GONE;
    const what = dead
      ? `the server process (pid ${link.conn.remotePid}) is gone`
      : failure
        ? `the connection to the server (pid ${link.conn.remotePid}) failed: ${failure instanceof Error ? failure.message : String(failure)}`
        : `the server (pid ${link.conn.remotePid}) closed the connection`;
    const why = this.closed ? closedError(`${this.label} client`, this.name) : new ShmkitError(ErrorCodes.PEER_GONE, `${this.label}: ${what}`, { segment: this.name, ...(failure ? { cause: failure } : {}) });
    for (const p of [...link.pending.values()]) {
      this.counts.errors++;
      if (p.stream) p.stream.fail(why);
      else p.reject(why);
      p.done();
    }
    link.pending.clear();
  }

  /** The link with the fewest outstanding calls (ties rotate). */
  private pick(): Link | null {
    // A server that closed its end (it stops serving) is dropped before a call goes there.
    for (const l of [...this.links.values()]) if (!l.conn.closed && l.conn.ended && l.pending.size === 0) this.drop(l, null);
    let best: Link | null = null;
    const n = this.links.size;
    if (n === 0) return null;
    const start = this.rotate++ % n;
    let k = 0;
    for (const l of this.links.values()) {
      if (l.conn.closed || l.conn.ended) continue;
      if (best === null || l.pending.size < best.pending.size || (l.pending.size === best.pending.size && k === start)) best = l;
      k++;
    }
    return best;
  }

  /** A link to call on now, or null if the pool is empty (then linkAsync). */
  private linkNow(): Link | null {
    if (this.closed) throw closedError(`${this.label} client`, this.name);
    // New listeners are looked for now and then (a pool that grew).
    if (performance.now() - this.lastRefresh > 250 && this.links.size < this.maxServers) void this.refresh(this.options.connectTimeout ?? 10_000).catch(() => {});
    return this.pick();
  }

  /**
   * A link once the pool has one: connects within `connectTimeout`, and within the call's own
   * deadline and signal (`o`, null for a notification), whichever ends first.
   */
  private async linkAsync(o: Parsed | null, what: string): Promise<Link> {
    const connecting = this.refresh(this.options.connectTimeout ?? 10_000);
    if (o === null || (o.timeout === Infinity && o.signal === undefined)) await connecting;
    else {
      connecting.catch(noop); // shared with later calls; this one may stop waiting for it
      let t: Timer | null = null;
      let unlisten: (() => void) | null = null;
      try {
        await new Promise<void>((resolve, reject) => {
          connecting.then(resolve, reject);
          if (o.timeout !== Infinity) t = timer(() => reject(timeoutError(`${this.label} ${what}`, o.timeout, this.name)), o.timeout);
          if (o.signal) unlisten = onAbort(o.signal, () => reject(abortError(o.signal!, `${this.label} ${what}`)));
        });
      } finally {
        (t as Timer | null)?.clear();
        (unlisten as (() => void) | null)?.();
      }
    }
    const l = this.pick();
    if (l === null) throw new ShmkitError(ErrorCodes.REFUSED, `${this.label}: no server to call`, { segment: this.name });
    return l;
  }

  call(method: string, args: unknown[], o: Parsed): Promise<unknown> {
    try {
      if (typeof method !== 'string' || method.length === 0) throw invalidArg('method', `must be a non-empty string, got ${describe(method)}`);
      if (!Array.isArray(args)) throw invalidArg('args', `must be an array, got ${describe(args)}`);
      if (isAborted(o.signal)) throw abortError(o.signal, `${this.label} ${method}`);
      this.counts.calls++;
      // The frame goes out synchronously when a connection is open: calls made in one go are all
      // sent before the pump starts reading answers.
      const link = this.linkNow();
      if (link !== null) return this.send(link, method, args, o);
    } catch (err) {
      return Promise.reject(err);
    }
    // No connection yet: the call's timeout counts from now, the wait for a connection included.
    const start = performance.now();
    return this.linkAsync(o, method).then((link) => this.send(link, method, args, o.timeout === Infinity ? o : { ...o, timeout: Math.max(0, o.timeout - (performance.now() - start)) }));
  }

  private send(link: Link, method: string, args: unknown[], o: Parsed): Promise<unknown> {
    // The next id not in flight on this link (after 2^32 - 1 calls, ids wrap past those still running).
    let id = link.nextId;
    while (link.pending.has(id)) id = id >= 0xffffffff ? 1 : id + 1;
    link.nextId = id >= 0xffffffff ? 1 : id + 1;
    const deadline = o.timeout === Infinity ? 0 : Date.now() + o.timeout;
    const frame = P.encodeCall(this.codec, id, method, args, deadline, this.window);
    const pending = new Pending(this, link, id, method);
    const answer = new Promise<unknown>((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    link.pending.set(id, pending);
    if (o.timeout !== Infinity) pending.timer = timer(() => pending.giveUp(timeoutError(`${this.label} ${method}`, o.timeout, this.name)), o.timeout);
    if (o.signal) pending.unlisten = onAbort(o.signal, () => pending.giveUp(abortError(o.signal!, `${this.label} ${method}`)));
    try {
      if (frame.length > link.conn.maxMessageSize) {
        throw new ShmkitError(ErrorCodes.TOO_LARGE, `${this.label} ${method}: a call of ${frame.length} bytes is larger than the connection's largest message (${link.conn.maxMessageSize} bytes; the server's ring capacity sets it); nothing was sent`, { segment: this.name });
      }
      if (link.conn.trySend(frame)) this.pump(link);
      else {
        // The ring is full: the CALL waits for room, and stops waiting if the caller gives up
        // (then the server never saw the call, and no CANCEL is needed).
        const unsent = new AbortController();
        pending.unsent = unsent;
        link.conn.send(frame, { signal: unsent.signal }).then(() => {
          pending.unsent = null;
          this.pump(link);
        }, (err: unknown) => pending.failed(err));
      }
    } catch (err) {
      pending.failed(err);
    }
    return answer;
  }

  /** Sends a NOTIFY; waits (for a connection, or room in the ring) within `o`'s timeout and signal. */
  async notify(method: string, args: unknown[], o: Parsed): Promise<void> {
    if (typeof method !== 'string' || method.length === 0) throw invalidArg('method', `must be a non-empty string, got ${describe(method)}`);
    if (isAborted(o.signal)) throw abortError(o.signal, `${this.label} ${method}`);
    const start = performance.now();
    const link = this.linkNow() ?? (await this.linkAsync(o, method));
    const frame = P.encodeNotify(this.codec, method, args);
    if (frame.length > link.conn.maxMessageSize) {
      throw new ShmkitError(ErrorCodes.TOO_LARGE, `${this.label} ${method}: a notification of ${frame.length} bytes is larger than the connection's largest message (${link.conn.maxMessageSize} bytes); nothing was sent`, { segment: this.name });
    }
    if (link.conn.trySend(frame)) return;
    const left = o.timeout === Infinity ? undefined : Math.max(0, o.timeout - (performance.now() - start));
    await link.conn.send(frame, { ...(left === undefined ? {} : { timeout: left }), ...(o.signal ? { signal: o.signal } : {}) });
  }

  stats(): RpcClientStats {
    let inFlight = 0;
    for (const l of this.links.values()) inFlight += l.pending.size;
    return { ...this.counts, inFlight, servers: this.links.size };
  }

  get servers(): number {
    return this.links.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of [...this.links.values()]) l.conn.close();
    this.segment.close();
  }
}

/**
 * A client of the service `name`: connects to its listeners (at least one must accept within
 * `connectTimeout`) and returns a proxy whose methods call the service's.
 */
export async function rpcClient<I extends object = Record<string, (...args: any[]) => any>>(name: string, options?: RpcClientOptions): Promise<RpcClient<I>> {
  checkName(name, 'name', MAX_BASE_NAME_LENGTH);
  const o = checkObject('options', options) as RpcClientOptions;
  const defaults: Parsed = { timeout: o.timeout === undefined ? Infinity : checkTimeout('options.timeout', o.timeout), signal: undefined };
  const connectTimeout = o.connectTimeout === undefined ? 10_000 : checkTimeout('options.connectTimeout', o.connectTimeout);
  const seg = openSegment('open', name, { kind: Kind.SERVER, size: 0, minSize: 0, mode: 0o600, trust: parseTrust(o.trustedOwners) });
  let core: Core;
  try {
    core = new Core(name, seg, o);
  } catch (err) {
    seg.close();
    throw err;
  }
  try {
    await core.refresh(connectTimeout);
  } catch (err) {
    core.close();
    throw err;
  }
  return proxy<I>(core, defaults);
}

/**
 * The NATS transport: topics, RPC services and maps over a NATS cluster, behind the same
 * Transport interface as the local (shared-memory) one. One NATS connection per transport, which
 * reconnects by itself with exponential backoff; see docs/scaling-out.md.
 */
import { EventEmitter } from 'node:events';
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node';
import { ErrorCodes, invalidArg, ShmkitError } from '../errors';
import type { RpcClient } from '../rpc/calls';
import type { Handlers, HandlingOptions } from '../rpc/handling';
import type { SharedMapOptions } from '../map/map';
import type { Transport, TransportClientOptions, TransportTopicOptions } from '../transport';
import { checkInt, checkObject, checkTimeout, describe } from '../validate';
import { nats } from './load';
import { NatsTopic } from './topic';
import { NatsRpcServer, natsRpcClient } from './rpc';
import { NatsMap } from './map';

export interface NatsTransportOptions {
  /** The server(s): 'nats://host:port', 'host:port', or several (the client picks one and fails over). */
  servers?: string | string[];
  /** An open NATS connection to use instead (the transport then never closes it). */
  connection?: NatsConnection;
  /** The first token of every subject, and the prefix of every bucket, shmkit uses. Default 'shmkit'. */
  prefix?: string;
  /** ms before the first reconnect attempt; each next one waits twice as long, up to maxReconnectWait. Default 100. */
  reconnectWait?: number;
  /** The longest wait between reconnect attempts, ms. Default 5000. */
  maxReconnectWait?: number;
  /** ms to wait for the first connection; a server that cannot be reached fails at once (ERR_SHMKIT_REFUSED). Default 10,000. */
  connectTimeout?: number;
  /** Other options of the NATS client (user, pass, token, tls, name...). */
  connectOptions?: Partial<ConnectionOptions>;
}

export interface NatsTransportStats {
  /** Whether the connection is up now. */
  connected: boolean;
  /** Connections lost, and made again, since the start. */
  disconnects: number;
  reconnects: number;
}

/**
 * A Transport over NATS. Events: 'disconnect' and 'reconnect' (the server's address), 'error'.
 */
export class NatsTransport extends EventEmitter implements Transport {
  readonly kind = 'nats' as const;
  readonly connection: NatsConnection;
  readonly prefix: string;
  private readonly own: boolean;
  private up = true;
  private closing = false;
  private readonly counts = { disconnects: 0, reconnects: 0 };
  private readonly closers = new Set<{ close(): unknown }>();

  /** @internal Use natsTransport(). */
  constructor(nc: NatsConnection, own: boolean, prefix: string, private readonly attempts: { n: number }) {
    super();
    this.connection = nc;
    this.own = own;
    this.prefix = prefix;
    void this.watchStatus();
  }

  private async watchStatus(): Promise<void> {
    try {
      for await (const s of this.connection.status()) {
        if (s.type === 'disconnect') {
          this.up = false;
          this.counts.disconnects++;
          if (this.listenerCount('disconnect') > 0) this.emit('disconnect', s.server);
        } else if (s.type === 'reconnect') {
          this.up = true;
          this.attempts.n = 0;
          this.counts.reconnects++;
          if (this.listenerCount('reconnect') > 0) this.emit('reconnect', s.server);
        } else if (s.type === 'reconnecting') {
          this.attempts.n++;
        } else if (s.type === 'error' && this.listenerCount('error') > 0) this.emit('error', s.error);
      }
    } catch {
      // the status iterator ends with the connection
    }
  }

  /** Whether the connection is up now. */
  get connected(): boolean {
    return this.up && !this.connection.isClosed();
  }

  /** Largest message the server takes, bytes. */
  get maxPayload(): number {
    return this.connection.info?.max_payload ?? 1024 * 1024;
  }

  stats(): NatsTransportStats {
    return { connected: this.connected, ...this.counts };
  }

  /**
   * @internal Waits until the server has processed what this connection sent (its subscriptions
   * included), at most `ms`: while NATS is away a flush waits for the reconnect, which no caller
   * should wait for beyond its own time. Never throws.
   */
  async flushWithin(ms: number): Promise<void> {
    let t: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([this.connection.flush(), new Promise<void>((resolve) => (t = setTimeout(resolve, ms)))]);
    } catch {
      // the connection is closed: nothing to wait for
    } finally {
      clearTimeout(t);
    }
  }

  /** @internal Registers a handle to close with the transport. */
  hold<H extends { close(): unknown }>(h: H): H {
    this.closers.add(h);
    return h;
  }

  /** @internal */
  release(h: { close(): unknown }): void {
    this.closers.delete(h);
  }

  /** @internal */
  assertOpen(what: string): void {
    if (this.closing || this.connection.isClosed()) throw new ShmkitError(ErrorCodes.CLOSED, `${what}: the NATS transport is closed`);
  }

  /** Opens the topic `name` (the subject `<prefix>.topic.<name>`, or options.subject). */
  async topic<T = Buffer>(name: string, options?: TransportTopicOptions<T> & { subject?: string }): Promise<NatsTopic<T>> {
    this.assertOpen(`topic "${name}"`);
    return this.hold(new NatsTopic<T>(this, name, options));
  }

  /** Opens the map `name`: the JetStream KV bucket `<prefix>_<name>`, created if needed. */
  async map<T = unknown>(name: string, options?: SharedMapOptions<T>): Promise<NatsMap<T>> {
    this.assertOpen(`map "${name}"`);
    const m = await NatsMap.open<T>(this, name, options);
    return this.hold(m);
  }

  /** Serves `handlers` under `name` (the subject `<prefix>.rpc.<name>`; servers of one name form a queue group). */
  async serve<I extends object = Record<string, (...args: any[]) => any>>(name: string, handlers: Handlers<I>, options?: HandlingOptions): Promise<NatsRpcServer> {
    this.assertOpen(`rpc "${name}"`);
    if (handlers === null || typeof handlers !== 'object') throw invalidArg('handlers', `must be an object of methods, got ${describe(handlers)}`);
    const s = new NatsRpcServer(this, name, handlers, checkObject('options', options) as HandlingOptions);
    await s.ready();
    return this.hold(s);
  }

  /** A client of the service `name`. */
  async rpcClient<I extends object = Record<string, (...args: any[]) => any>>(name: string, options?: TransportClientOptions): Promise<RpcClient<I>> {
    this.assertOpen(`rpc "${name}"`);
    return natsRpcClient<I>(this, name, options);
  }

  /** Closes every handle made by this transport (servers at once: their running calls' signals abort), then (if it made it) the connection, after flushing what is queued. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const h of [...this.closers]) {
      try {
        // A server stops at once (its running calls' signals abort): close() would wait for them.
        const now = (h as { closeNow?: () => Promise<void> }).closeNow;
        await (typeof now === 'function' ? now.call(h) : h.close());
      } catch {
        // closing the rest matters more
      }
    }
    this.closers.clear();
    if (this.own && !this.connection.isClosed()) {
      // What is queued goes out first; with NATS away, a drain would wait for the reconnect: 5 s at most.
      let t: ReturnType<typeof setTimeout> | undefined;
      try {
        await Promise.race([this.connection.drain(), new Promise<void>((resolve) => (t = setTimeout(resolve, 5000)))]);
      } catch {
        // closed meanwhile
      } finally {
        clearTimeout(t);
      }
      if (!this.connection.isClosed()) await this.connection.close().catch(() => {});
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Connects to NATS. The connection reconnects on its own, forever, waiting `reconnectWait` ms
 * before the first attempt and twice as long before each next one, up to `maxReconnectWait`.
 */
export async function natsTransport(options?: NatsTransportOptions): Promise<NatsTransport> {
  const o = checkObject('options', options) as NatsTransportOptions;
  const prefix = o.prefix === undefined ? 'shmkit' : o.prefix;
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(prefix)) throw invalidArg('options.prefix', `must be 1 to 64 of A-Z a-z 0-9 _ -, got ${describe(prefix)}`);
  const attempts = { n: 0 };
  if (o.connection !== undefined) {
    if (o.connection === null || typeof o.connection !== 'object' || typeof (o.connection as NatsConnection).publish !== 'function') throw invalidArg('options.connection', `must be a NatsConnection, got ${describe(o.connection)}`);
    return new NatsTransport(o.connection, false, prefix, attempts);
  }
  const wait = o.reconnectWait === undefined ? 100 : checkInt('options.reconnectWait', o.reconnectWait, 1, 3_600_000);
  const maxWait = o.maxReconnectWait === undefined ? 5000 : checkInt('options.maxReconnectWait', o.maxReconnectWait, 1, 3_600_000);
  const connectTimeout = o.connectTimeout === undefined ? 10_000 : checkTimeout('options.connectTimeout', o.connectTimeout);
  let servers = o.servers ?? 'nats://127.0.0.1:4222';
  if (typeof servers === 'string') servers = [servers];
  if (!Array.isArray(servers) || servers.length === 0 || !servers.every((s) => typeof s === 'string' && s.length > 0)) throw invalidArg('options.servers', `must be a server URL or an array of them, got ${describe(o.servers)}`);
  const extra = checkObject('options.connectOptions', o.connectOptions) as Partial<ConnectionOptions>;
  const { core } = nats();
  try {
    const nc = await core.connect({
      name: `shmkit ${process.pid}`,
      // A link that dies without a reset is noticed within about 30 s (the client's default: 4 min).
      pingInterval: 10_000,
      maxPingOut: 2,
      ...extra,
      servers,
      maxReconnectAttempts: -1,
      reconnect: true,
      timeout: connectTimeout === Infinity ? 2 ** 31 - 1 : Math.max(1, connectTimeout),
      reconnectDelayHandler: () => {
        const d = Math.min(maxWait, wait * 2 ** Math.min(attempts.n, 20));
        return d / 2 + Math.random() * (d / 2); // with jitter: clients that lost one server do not come back at once
      },
    });
    return new NatsTransport(nc, true, prefix, attempts);
  } catch (err) {
    throw new ShmkitError(ErrorCodes.REFUSED, `NATS at ${servers.join(', ')}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

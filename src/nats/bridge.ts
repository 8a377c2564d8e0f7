/**
 * The bridge: forwards local (shared-memory) traffic to NATS and back, so processes on other
 * machines take part: chosen topics both ways, RPC services exposed or imported, maps mirrored
 * one way. The local side starts at once and keeps working while NATS is away; the bridge
 * connects (and reconnects) in the background with exponential backoff. docs/scaling-out.md
 * states what it promises: echo prevention, what is buffered and dropped while NATS is away, and
 * the consistency of a mirrored map.
 */
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { ErrorCodes, invalidArg, ShmkitError } from '../errors';
import { SharedMap } from '../map/map';
import type { MapChange } from '../map/map';
import { checkName, derivedName } from '../naming';
import { Mutex, type MutexGuard } from '../sync/mutex';
import type { Segment } from '../segment';
import { Topic } from '../topic/topic';
import type { Subscription } from '../topic/subscription';
import type { RpcClient } from '../rpc/calls';
import { rpcClient } from '../rpc/client';
import type { CallContext } from '../rpc/handling';
import { type RpcServer, serve } from '../rpc/serve';
import { checkInt, checkObject, describe } from '../validate';
import { BridgeStatsSegment } from './bridge-stats';
import type { NatsMap } from './map';
import { checkSubject } from './names';
import type { NatsRpcServer } from './rpc';
import { type NatsSubscription, NatsTopic, type RawMessage } from './topic';
import { NatsTransport, natsTransport, type NatsTransportOptions } from './transport';

export interface BridgeTopic {
  /** The local topic's name (opened, or created with default options if missing). */
  local: string;
  /** The NATS subject. Default `<prefix>.topic.<local>`. */
  subject?: string;
  /** 'out': local to NATS; 'in': NATS to local; 'both' (default). */
  direction?: 'out' | 'in' | 'both';
}

export interface BridgeService {
  /** The local service name. */
  local: string;
  /** The service's name on NATS. Default: the local name. */
  remote?: string;
  /** 'export': local servers answer NATS callers; 'import': a remote service is served locally under `local`. */
  direction: 'export' | 'import';
  /** Codec of the calls (the service's own). Default 'json'. */
  codec?: string;
}

export interface BridgeMap {
  /** The local map's name (opened, or created with default options if missing). */
  local: string;
  /** The map's name on NATS (its KV bucket is `<prefix>_<remote>`). Default: the local name. */
  remote?: string;
  /** 'out' (default): the local map is mirrored to NATS; 'in': the NATS map to the local one. */
  direction?: 'out' | 'in';
  /** The map's codec (every handle's must match). Default 'json'. */
  codec?: string;
}

export interface BridgeOptions {
  /** A NATS transport, or the options to connect with (the bridge then owns the connection). */
  nats: NatsTransport | NatsTransportOptions;
  /** The bridge's name: `shmkit ls` and `top` show it under it. Default `bridge-<pid>`. */
  name?: string;
  topics?: BridgeTopic[];
  services?: BridgeService[];
  maps?: BridgeMap[];
  /** Messages of outgoing topics kept while NATS is away; beyond it the oldest are dropped (counted). Default 10,000. */
  maxBuffered?: number;
}

export interface BridgeTopicStats {
  local: string;
  subject: string;
  direction: 'out' | 'in' | 'both';
  /** Whether this bridge forwards the topic now (false: another bridge of it on this machine does; this one waits). */
  active: boolean;
  /** Messages sent to NATS, and published locally from NATS. */
  out: number;
  in: number;
  /** Messages waiting for NATS now; dropped because the buffer was full. */
  buffered: number;
  dropped: number;
  /** Messages not forwarded because they had come through this bridge (echoes). */
  echoes: number;
  /** Messages the bridge's subscriptions missed: local ones ('overwrite' topics), and NATS ones beyond its pending limit. */
  lost: number;
  /** Messages the local topic refused (larger than its maxMessageSize...), and other failures. */
  errors: number;
}

export interface BridgeServiceStats {
  local: string;
  remote: string;
  direction: 'export' | 'import';
  calls: number;
  errors: number;
}

export interface BridgeMapStats {
  local: string;
  remote: string;
  direction: 'out' | 'in';
  /** Writes made on the other side; changes waiting (coalesced per key) for NATS. */
  writes: number;
  pending: number;
  errors: number;
}

export interface BridgeStats {
  name: string;
  connected: boolean;
  disconnects: number;
  reconnects: number;
  topics: BridgeTopicStats[];
  services: BridgeServiceStats[];
  maps: BridgeMapStats[];
}

const noop = (): void => {};

/** Errors a mirrored change never gets past: it is dropped (and counted). */
const PERMANENT = new Set<string>([ErrorCodes.TOO_LARGE, ErrorCodes.INVALID_ARGUMENT, ErrorCodes.DECODE, ErrorCodes.UNSUPPORTED, ErrorCodes.FULL]);

/** A handler object that answers every method name with `fn(method)`. */
function anyMethod(fn: (method: string) => (...args: unknown[]) => unknown): object {
  return new Proxy(Object.create(null) as object, {
    getOwnPropertyDescriptor: (_t, prop) => (typeof prop === 'string' ? { value: fn(prop), writable: false, enumerable: true, configurable: true } : undefined),
  });
}

/** Splits a handler's arguments from its CallContext (the last one), for forwarding. */
function forwardArgs(args: unknown[]): { args: unknown[]; ctx: CallContext } {
  return { args: args.slice(0, -1), ctx: args[args.length - 1] as CallContext };
}

function callOptions(ctx: CallContext): { signal: AbortSignal; timeout?: number } {
  return ctx.deadline === undefined ? { signal: ctx.signal } : { signal: ctx.signal, timeout: Math.max(0, ctx.deadline - Date.now()) };
}

class TopicRoute {
  readonly s: BridgeTopicStats;
  private readonly topic: Topic<Buffer>;
  private sub: Subscription<Buffer> | null = null;
  private natsTopic: NatsTopic<Buffer> | null = null;
  private natsSub: NatsSubscription<RawMessage> | null = null;
  private readonly buffer: Buffer[] = [];
  private readonly claim: TopicClaim;
  /** Sequence numbers of local messages this bridge published (from NATS): not forwarded back. */
  private readonly own: number[] = [];
  /** The topic's tail when the publish from NATS under way began (Infinity: none is). */
  private inflightFrom = Infinity;
  /** Local messages read while that publish was under way, in order: decided once it is done. */
  private readonly undecided: { seq: number; b: Buffer }[] = [];
  /**
   * The origin this route stamps on what it sends, and drops when it comes back: the local
   * topic's object (its creator and creation time) on this host. Every bridge of this topic on
   * this machine has the same, so none forwards back what is in the topic already.
   */
  readonly origin: string;
  private ended = false;

  constructor(private readonly bridge: Bridge, spec: BridgeTopic, prefix: string, private readonly maxBuffered: number) {
    const direction = spec.direction ?? 'both';
    const subject = spec.subject ?? `${prefix}.topic.${spec.local}`;
    this.s = { local: spec.local, subject, direction, active: false, out: 0, in: 0, buffered: 0, dropped: 0, echoes: 0, lost: 0, errors: 0 };
    this.topic = Topic.openOrCreate<Buffer>(spec.local, { codec: 'bytes' });
    const seg = this.topic.segment;
    this.origin = `${spec.local}.${seg.creator.pid}.${seg.creator.startTime}.${seg.createdAt.getTime()}@${hostname()}`;
    this.claim = new TopicClaim(spec.local);
    this.take();
  }

  /**
   * Takes the topic's claim if it is free (one bridge at a time forwards a local topic): then
   * starts reading it. Another bridge of the topic on this machine tries again at each tick.
   */
  take(): boolean {
    if (this.ended) return false;
    if (this.claim.held) {
      if (this.claim.stillOurs()) return true;
      this.stepDown(); // its lock's name was removed (or is another object now): another bridge may take it
      return false;
    }
    if (!this.claim.tryTake()) return false;
    this.s.active = true;
    if (this.outgoing) {
      this.sub = this.topic.subscribe();
      void this.pumpOut();
    }
    return true;
  }

  get outgoing(): boolean {
    return this.s.direction !== 'in';
  }

  get incoming(): boolean {
    return this.s.direction !== 'out';
  }

  /** NATS is there: the subject's handle, the incoming subscription, what was buffered. */
  attach(t: NatsTransport): void {
    if (!this.take()) return;
    this.natsTopic ??= new NatsTopic<Buffer>(t, this.s.local, { codec: 'bytes', subject: this.s.subject });
    if (this.incoming && this.natsSub === null) {
      this.natsSub = this.natsTopic.subscribeRaw();
      void this.pumpIn(this.natsSub).catch((err: unknown) => {
        // The subscription itself failed: made again at the next attach (each tick).
        this.s.errors++;
        this.bridge.failed(`topic "${this.s.local}" (in)`, err);
        this.natsSub?.close();
        this.natsSub = null;
      });
    }
    this.flush();
  }

  /**
   * Local messages to NATS; while NATS is away, into the bounded buffer. A message published after
   * a publish from NATS began (its sequence number at or past the tail then) waits, in order,
   * until that publish says which sequence number it got: it may be the bridge's own. The loop
   * itself never waits for that publish (which may be waiting for this very subscriber to read on,
   * in a 'block' topic).
   */
  private async pumpOut(): Promise<void> {
    const sub = this.sub!;
    while (!this.ended) {
      try {
        let b: Buffer | undefined = await sub.receive();
        // Then every message already there, without yielding: the NATS client writes them in one go.
        while (b !== undefined) {
          const seq = sub.seq - 1;
          if (this.undecided.length > 0 || seq >= this.inflightFrom) this.undecided.push({ seq, b });
          else this.outgoing1(seq, b);
          b = sub.tryReceive();
        }
      } catch (err) {
        if (this.ended || (err instanceof ShmkitError && err.code === ErrorCodes.CLOSED)) return;
        this.s.errors++;
        this.bridge.failed(`topic "${this.s.local}" (out)`, err);
        await new Promise((r) => setTimeout(r, 100)); // a message the topic could not give (DECODE...): go on
      } finally {
        this.s.lost = sub.lost + (this.natsSub?.lost ?? 0);
      }
    }
  }

  /** One local message: forwarded, unless it is one this bridge published from NATS. */
  private outgoing1(seq: number, b: Buffer): void {
    while (this.own.length > 0 && this.own[0]! < seq) this.own.shift();
    if (this.own[0] === seq) {
      this.own.shift();
      this.s.echoes++;
    } else this.send(b);
  }

  private send(b: Buffer): void {
    if (this.buffer.length === 0 && this.natsTopic !== null && this.bridge.connected) {
      try {
        this.natsTopic.publishBytes(b, this.origin);
        this.s.out++;
        this.bridge.counted('out', 1);
        return;
      } catch {
        // refused now (the connection broke): kept for later
      }
    }
    if (this.maxBuffered === 0) {
      this.s.dropped++;
      this.bridge.counted('dropped', 1);
      return;
    }
    if (this.buffer.length >= this.maxBuffered) {
      this.buffer.shift();
      this.s.dropped++;
      this.bridge.counted('dropped', 1);
    }
    this.buffer.push(b);
    this.s.buffered = this.buffer.length;
  }

  /** Sends what was buffered, in order, while NATS is there. */
  flush(): void {
    while (this.buffer.length > 0 && this.natsTopic !== null && this.bridge.connected) {
      try {
        this.natsTopic.publishBytes(this.buffer[0]!, this.origin);
      } catch {
        break;
      }
      this.buffer.shift();
      this.s.out++;
      this.bridge.counted('out', 1);
    }
    this.s.buffered = this.buffer.length;
  }

  /**
   * NATS messages to the local topic, one publish at a time, but those that came from this local
   * topic (through this bridge, or another bridge of it on this machine: its origin names the
   * topic's object). A message the topic refuses (too large...) is counted and skipped.
   */
  private async pumpIn(sub: NatsSubscription<RawMessage>): Promise<void> {
    while (!this.ended) {
      let m: RawMessage;
      try {
        m = await sub.receive();
      } catch (err) {
        if (this.ended || (err instanceof ShmkitError && err.code === ErrorCodes.CLOSED)) return;
        throw err;
      }
      if (m.origin === this.origin) {
        this.s.echoes++;
        continue;
      }
      const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
      this.inflightFrom = this.topic.published; // this publish gets this sequence number or a later one
      let seq = -1;
      try {
        seq = await this.topic.publish(data);
        this.s.in++;
        this.bridge.counted('in', 1);
      } catch (err) {
        if (this.ended) return;
        this.s.errors++;
        this.bridge.failed(`topic "${this.s.local}" (in): a message of ${data.length} bytes`, err);
      } finally {
        this.inflightFrom = Infinity;
      }
      if (seq >= 0 && this.outgoing) this.own.push(seq);
      for (const u of this.undecided.splice(0)) this.outgoing1(u.seq, u.b);
    }
  }

  /** Stops forwarding (another bridge may): the loops end, the claim is let go without removing a name that is not ours. */
  private stepDown(): void {
    this.s.active = false;
    this.sub?.close();
    this.sub = null;
    this.natsSub?.close();
    this.natsSub = null;
    this.claim.release(false);
    this.bridge.failed(`topic "${this.s.local}"`, new ShmkitError(ErrorCodes.BUSY, `its claim lock "${this.s.local}.bridge" was removed or replaced: this bridge stops forwarding it until it can take the claim again`));
  }

  close(): void {
    this.ended = true;
    this.sub?.close();
    this.natsSub?.close();
    this.natsTopic?.close();
    this.topic.close();
    this.claim.release(); // after the loops stopped: the next bridge of the topic takes over
  }
}

/**
 * One bridge at a time forwards a local topic: it holds the robust lock `<topic>.bridge` while it
 * does (the lock of a bridge that died is taken over). Two bridges of one topic on one machine
 * (overlapping routes, or a restart that overlaps) would otherwise each forward what the other
 * published locally. The holder removes the lock's name when it lets go.
 */
class TopicClaim {
  private readonly name: string;
  private m: Mutex | null = null;
  private g: MutexGuard | null = null;

  constructor(topic: string) {
    this.name = derivedName(topic, 'bridge');
  }

  get held(): boolean {
    return this.g !== null;
  }

  tryTake(): boolean {
    if (this.g !== null) return true;
    let m: Mutex;
    try {
      m = Mutex.openOrCreate(this.name);
    } catch {
      return false; // being removed or made right now: the next tick
    }
    const g = m.tryLock();
    if (g === null) {
      m.close();
      return false;
    }
    // Still the object under the name? (The last holder removes the name before it lets go.)
    if (!this.underName(m)) {
      g.unlock();
      m.close();
      return false;
    }
    this.m = m;
    this.g = g;
    return true;
  }

  /** Whether the object under the name is still the one this claim holds (someone may have removed it: `shmkit rm --force`). */
  stillOurs(): boolean {
    return this.m !== null && this.underName(this.m);
  }

  /** Whether `m` is the object under the claim's name now (same creator and creation time). */
  private underName(m: Mutex): boolean {
    try {
      const now = Mutex.open(this.name);
      const a = (m as unknown as { segment: Segment }).segment;
      const b = (now as unknown as { segment: Segment }).segment;
      const same = a.createdAt.getTime() === b.createdAt.getTime() && a.creator.pid === b.creator.pid && a.creator.startTime === b.creator.startTime;
      now.close();
      return same;
    } catch {
      return false;
    }
  }

  /** Lets go; `unlink`: removes the name first (not when the name is another object's already). */
  release(unlink = true): void {
    if (this.g === null) return;
    if (unlink) {
      try {
        Mutex.unlink(this.name);
      } catch {
        // removed already
      }
    }
    this.g.unlock();
    this.m?.close();
    this.g = null;
    this.m = null;
  }
}

class ServiceRoute {
  readonly s: BridgeServiceStats;
  attached = false;
  private readonly codec: string;
  private localServer: RpcServer | null = null;
  private localClient: RpcClient<Record<string, (...a: unknown[]) => unknown>> | null = null;
  private natsServer: NatsRpcServer | null = null;
  private natsClient: RpcClient<Record<string, (...a: unknown[]) => unknown>> | null = null;

  constructor(private readonly bridge: Bridge, spec: BridgeService) {
    const remote = spec.remote ?? spec.local;
    this.s = { local: spec.local, remote, direction: spec.direction, calls: 0, errors: 0 };
    this.codec = spec.codec ?? 'json';
    if (spec.direction === 'import') {
      // Local callers of `local` are answered by the remote service.
      this.localServer = serve(spec.local, anyMethod((method) => (...a: unknown[]) => this.forward(method, a, () => this.natsClient)) as never, { codec: this.codec as never });
    }
  }

  private async forward(method: string, all: unknown[], client: () => RpcClient<Record<string, (...a: unknown[]) => unknown>> | null): Promise<unknown> {
    const { args, ctx } = forwardArgs(all);
    this.s.calls++;
    if (client() === null && this.s.direction === 'export') await this.connectLocal(); // the local servers may have started since the last try
    const c = client();
    if (c === null) {
      this.s.errors++;
      throw new ShmkitError(ErrorCodes.REFUSED, `bridge "${this.bridge.name}": rpc "${this.s.local}" ${method}: ${this.s.direction === 'import' ? 'NATS is not connected' : 'no local server'}`);
    }
    try {
      return await c.call(method, args as never, callOptions(ctx));
    } catch (err) {
      this.s.errors++;
      throw err;
    }
  }

  async attach(t: NatsTransport): Promise<void> {
    if (this.s.direction === 'import') {
      this.natsClient ??= await t.rpcClient(this.s.remote, { codec: this.codec as never });
      return;
    }
    // Remote callers of `remote` are answered by the local servers of `local`.
    this.natsServer ??= await t.serve(this.s.remote, anyMethod((method) => (...a: unknown[]) => this.forward(method, a, () => this.local())) as never, { codec: this.codec as never });
  }

  /** The local client, made when first needed (the local service may start after the bridge). */
  private local(): RpcClient<Record<string, (...a: unknown[]) => unknown>> | null {
    return this.localClient;
  }

  /** Connects the local client of an exported service (retried until the service exists). */
  async connectLocal(): Promise<void> {
    if (this.s.direction !== 'export' || this.localClient !== null) return;
    this.connecting ??= rpcClient(this.s.local, { codec: this.codec as never, connectTimeout: 1000 })
      .then((c) => {
        this.localClient = c;
      }, () => {
        // not served yet: the next tick (or call) tries again
      })
      .finally(() => {
        this.connecting = null;
      });
    await this.connecting;
  }

  private connecting: Promise<void> | null = null;

  /** At once: calls running through the route are cancelled (their callers get an error). */
  async close(): Promise<void> {
    this.localClient?.close();
    await this.localServer?.closeNow();
    await this.natsServer?.closeNow();
    this.natsClient?.close();
  }
}

class MapRoute {
  readonly s: BridgeMapStats;
  attached = false;
  private readonly map: SharedMap<unknown>;
  private nats: NatsMap<unknown> | null = null;
  /** Changes waiting for NATS ('out'), coalesced per key. */
  private readonly pending = new Map<string, MapChange<unknown>>();
  private draining = false;
  private watching = false;
  private ended = false;
  private stopWatch: (() => void) | null = null;

  constructor(private readonly bridge: Bridge, spec: BridgeMap) {
    const remote = spec.remote ?? spec.local;
    this.s = { local: spec.local, remote, direction: spec.direction ?? 'out', writes: 0, pending: 0, errors: 0 };
    this.map = SharedMap.openOrCreate(spec.local, { codec: spec.codec ?? 'json' });
    if (this.s.direction === 'out') void this.watchLocal();
  }

  private codecName(): string {
    return this.map.codec.name;
  }

  /** Local changes into `pending` (the first: every entry), drained to NATS. */
  private async watchLocal(): Promise<void> {
    const w = this.map.watch(undefined, { initial: true });
    this.stopWatch = () => w.close();
    try {
      for await (const c of w) {
        this.pending.set(c.key, c);
        this.s.pending = this.pending.size;
        void this.drain();
      }
    } catch (err) {
      if (!this.ended) this.bridge.failed(`map "${this.s.local}" (out)`, err);
    }
  }

  /** Writes the pending changes to NATS, oldest first; stops at the first failure (NATS away) and tries again later. */
  async drain(): Promise<void> {
    if (this.draining || this.nats === null || !this.bridge.connected || Date.now() < this.retryAt) return;
    this.draining = true;
    try {
      while (this.pending.size > 0 && !this.ended) {
        const [key, c] = this.pending.entries().next().value as [string, MapChange<unknown>];
        try {
          if (c.type === 'set') await this.nats.set(key, c.value);
          else await this.nats.delete(key);
          this.s.writes++;
          this.bridge.counted('mapWrites', 1);
          if (this.pending.get(key) === c) this.pending.delete(key);
        } catch (err) {
          this.s.errors++;
          this.bridge.failed(`map "${this.s.local}" key ${JSON.stringify(key)}`, err);
          const code = err instanceof ShmkitError ? err.code : '';
          if (PERMANENT.has(code)) {
            if (this.pending.get(key) === c) this.pending.delete(key); // refused for good (too large, a bad key): not retried
            continue;
          }
          // NATS away, JetStream unavailable for now, a timeout: kept, and tried again later.
          this.retryAt = Date.now() + Math.min(5000, (this.backoff = Math.min(5000, this.backoff * 2 || 100)));
          break;
        }
        this.backoff = 0;
      }
    } finally {
      this.draining = false;
      this.s.pending = this.pending.size;
    }
  }

  /** After a failure that may pass, the next drain waits until then. */
  private retryAt = 0;
  private backoff = 0;

  async attach(t: NatsTransport): Promise<void> {
    if (this.nats === null) {
      this.nats = await t.map(this.s.remote, { codec: this.codecName() });
      this.nats.on('error', (err: unknown) => {
        this.s.errors++;
        this.bridge.failed(`map "${this.s.local}" (its NATS replica)`, err);
      });
      if (this.s.direction === 'out') {
        // Keys the bucket holds that the local map does not (deleted while the bridge was away) go.
        for (const k of [...this.nats.keys()]) if (!this.map.has(k) && !this.pending.has(k)) this.pending.set(k, { type: 'delete', key: k, revision: 0 });
      }
    }
    if (this.s.direction === 'out') await this.drain();
    else if (!this.watching) {
      this.watching = true;
      void this.watchRemote(this.nats);
    }
  }

  /** NATS changes into the local map (the first: every entry, and local keys the bucket lacks go). */
  private async watchRemote(m: NatsMap<unknown>): Promise<void> {
    for (const k of [...this.map.keys()]) if (!m.has(k)) this.map.delete(k);
    const w = m.watch(undefined, { initial: true });
    this.stopWatch = () => w.close();
    while (!this.ended) {
      try {
        const r = await w.next();
        if (r.done) return;
        const c = r.value;
        if (c.type === 'set') this.map.set(c.key, c.value);
        else this.map.delete(c.key);
        this.s.writes++;
        this.bridge.counted('mapWrites', 1);
      } catch (err) {
        // One change that cannot be written here (a value the codec refuses, the local map full...): counted, and the mirror goes on.
        this.s.errors++;
        if (!this.ended) this.bridge.failed(`map "${this.s.local}" (in)`, err);
      }
    }
  }

  close(): void {
    this.ended = true;
    this.stopWatch?.();
    this.nats?.close();
    this.map.close();
  }
}

/**
 * A running bridge. Events: 'connect' and 'disconnect' (NATS), 'error' (a route failed; the
 * bridge goes on).
 */
export class Bridge extends EventEmitter {
  readonly name: string;
  private transport: NatsTransport | null = null;
  private readonly ownTransport: boolean;
  private readonly topics: TopicRoute[] = [];
  private readonly services: ServiceRoute[] = [];
  private readonly maps: MapRoute[] = [];
  private readonly counts = { disconnects: 0, reconnects: 0 };
  private readonly statsSeg: BridgeStatsSegment;
  private ended = false;
  private attaching = false;
  private ticker: ReturnType<typeof setInterval>;

  /** @internal Use bridge(). */
  constructor(o: BridgeOptions, name: string, maxBuffered: number) {
    super();
    this.name = name;
    this.ownTransport = !(o.nats instanceof NatsTransport);
    const prefix = o.nats instanceof NatsTransport ? o.nats.prefix : (o.nats.prefix ?? 'shmkit');
    this.statsSeg = BridgeStatsSegment.create(name);
    try {
      for (const t of o.topics ?? []) this.topics.push(new TopicRoute(this, t, prefix, maxBuffered));
      for (const s of o.services ?? []) this.services.push(new ServiceRoute(this, s));
      for (const m of o.maps ?? []) this.maps.push(new MapRoute(this, m));
    } catch (err) {
      void this.close();
      throw err;
    }
    // Exported services whose local servers came late; changes that waited; the stats for `top`.
    this.ticker = setInterval(() => this.tick(), 250);
    this.ticker.unref();
  }

  private tick(): void {
    for (const t of this.topics) t.take(); // a topic another bridge of this machine let go
    for (const s of this.services) void s.connectLocal();
    if (this.connected) void this.attachRest();
    if (this.connected) for (const m of this.maps) void m.drain();
    if (this.connected && this.transport !== null) for (const t of this.topics) t.attach(this.transport); // flushes; remakes a failed subscription
    this.statsSeg.update(this.stats());
  }

  /** Whether NATS is connected now. */
  get connected(): boolean {
    return this.transport !== null && this.transport.connected;
  }

  /** @internal */
  counted(what: 'out' | 'in' | 'dropped' | 'mapWrites', n: number): void {
    this.statsSeg.add(what, n);
  }

  /** @internal A route failed: reported, and the bridge goes on. */
  failed(what: string, err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', new ShmkitError(ErrorCodes.PEER_GONE, `bridge "${this.name}": ${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
  }

  /** @internal Connects (again and again, with backoff, until it works), then attaches every route. */
  async connect(o: NatsTransportOptions | NatsTransport): Promise<void> {
    let wait = 100;
    while (!this.ended && this.transport === null) {
      try {
        this.transport = o instanceof NatsTransport ? o : await natsTransport(o);
      } catch {
        await new Promise((r) => setTimeout(r, wait / 2 + Math.random() * (wait / 2)).unref());
        wait = Math.min(wait * 2, (o as NatsTransportOptions).maxReconnectWait ?? 5000);
      }
    }
    const t = this.transport;
    if (t === null || this.ended) {
      if (t !== null && this.ownTransport) await t.close();
      return;
    }
    t.on('disconnect', () => {
      this.counts.disconnects++;
      this.emit('disconnect');
    });
    t.on('reconnect', () => {
      this.counts.reconnects++;
      this.emit('connect');
      this.tick();
    });
    t.on('error', noop);
    for (const r of this.topics) r.attach(t);
    await this.attachRest();
    this.emit('connect');
  }

  /** Services and maps not attached yet (JetStream may be still starting): tried now and at each tick until they are. */
  private async attachRest(): Promise<void> {
    const t = this.transport;
    if (t === null || this.attaching) return;
    this.attaching = true;
    try {
      for (const r of [...this.services, ...this.maps]) {
        if (r.attached || this.ended || !t.connected) continue;
        try {
          await r.attach(t);
          r.attached = true;
        } catch (err) {
          this.failed(`${r instanceof MapRoute ? 'map' : 'rpc'} "${r.s.local}" (tried again)`, err);
        }
      }
    } finally {
      this.attaching = false;
    }
  }

  stats(): BridgeStats {
    return {
      name: this.name,
      connected: this.connected,
      ...this.counts,
      topics: this.topics.map((t) => ({ ...t.s })),
      services: this.services.map((s) => ({ ...s.s })),
      maps: this.maps.map((m) => ({ ...m.s })),
    };
  }

  /** Stops forwarding: closes the routes' handles, the NATS connection it made, and its stats object. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.ticker);
    for (const t of this.topics) t.close();
    for (const s of this.services) await s.close().catch(noop);
    for (const m of this.maps) m.close();
    if (this.transport !== null && this.ownTransport) await this.transport.close().catch(noop);
    this.statsSeg.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Starts a bridge. The local side runs at once; NATS is connected in the background (retried
 * with backoff until it answers). Resolves when the local side runs; `await b.ready` (or the
 * 'connect' event) for NATS.
 */
export function bridge(options: BridgeOptions): Bridge & { ready: Promise<void> } {
  const o = checkObject('options', options) as unknown as BridgeOptions;
  if (o.nats === undefined || o.nats === null || typeof o.nats !== 'object') throw invalidArg('options.nats', `must be a NatsTransport or its options, got ${describe(o.nats)}`);
  const name = checkName(o.name ?? `bridge-${process.pid}`, 'options.name');
  const maxBuffered = o.maxBuffered === undefined ? 10_000 : checkInt('options.maxBuffered', o.maxBuffered, 0, 1 << 24);
  for (const [i, t] of (o.topics ?? []).entries()) {
    checkName(t?.local, `options.topics[${i}].local`);
    if (t.subject !== undefined) checkSubject(t.subject, `options.topics[${i}].subject`);
    if (t.direction !== undefined && !['out', 'in', 'both'].includes(t.direction)) throw invalidArg(`options.topics[${i}].direction`, `must be 'out', 'in' or 'both', got ${describe(t.direction)}`);
  }
  const locals = new Set<string>();
  for (const [i, t] of (o.topics ?? []).entries()) {
    // One route per local topic (the route takes both ways): a second would wait for the first's claim for ever.
    if (locals.has(t.local)) throw invalidArg(`options.topics[${i}].local`, `topic ${JSON.stringify(t.local)} has a route already (one route per local topic; direction 'both' forwards both ways)`);
    locals.add(t.local);
    if (name === `${t.local}.bridge`) throw invalidArg('options.name', `${JSON.stringify(name)} is the name of topic ${JSON.stringify(t.local)}'s claim lock`);
  }
  for (const [i, s] of (o.services ?? []).entries()) {
    checkName(s?.local, `options.services[${i}].local`);
    if (s.remote !== undefined) checkName(s.remote, `options.services[${i}].remote`);
    if (s.direction !== 'export' && s.direction !== 'import') throw invalidArg(`options.services[${i}].direction`, `must be 'export' or 'import', got ${describe(s.direction)}`);
  }
  for (const [i, m] of (o.maps ?? []).entries()) {
    checkName(m?.local, `options.maps[${i}].local`);
    if (m.remote !== undefined) checkName(m.remote, `options.maps[${i}].remote`);
    if (m.direction !== undefined && m.direction !== 'out' && m.direction !== 'in') throw invalidArg(`options.maps[${i}].direction`, `must be 'out' or 'in', got ${describe(m.direction)}`);
  }
  const b = new Bridge(o, name, maxBuffered) as Bridge & { ready: Promise<void> };
  b.ready = b.connect(o.nats);
  b.ready.catch(noop);
  return b;
}

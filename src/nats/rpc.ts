/**
 * RPC over NATS: the same frames as over a shared-memory connection (docs/design.md, "RPC"),
 * carried by NATS messages, and the same handling of calls and answers (rpc/handling.ts,
 * rpc/calls.ts).
 *
 * Subjects (S = `<prefix>.rpc.<name>`):
 * - CALL and NOTIFY frames go to S, where the servers of the name form the queue group "shmkit"
 *   (NATS gives each message to one of them). A CALL's reply subject is `<inbox>.<id>`, the
 *   client's inbox and the call's id; the server sends every answer frame of that call there, with
 *   its own control subject `S.s.<server id>` as the reply subject.
 * - CANCEL and CREDIT frames go to the control subject of the server that answered the call, with
 *   the client's inbox as the reply subject; a CANCEL before any answer goes to `S.cancel`, which
 *   every server of the name reads.
 * - NATS answers a CALL that no server took with a 503 status message on its reply subject: the
 *   call fails with ERR_SHMKIT_REFUSED at once.
 */
import type { Msg, Subscription as NatsSub } from '@nats-io/transport-node';
import { isAborted, onAbort } from '../abort';
import { type Codec, resolveCodec } from '../codec/codec';
import { abortError, closedError, ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { checkName } from '../naming';
import { answer, type CallCore, type CallLink, type Parsed, Pending, proxy, type ProxyCore, type RpcClient, type RpcClientStats } from '../rpc/calls';
import { type Caller, CallHandler, type Counter, type HandlingOptions, type Running } from '../rpc/handling';
import * as P from '../rpc/protocol';
import type { RpcServerStats } from '../rpc/serve';
import { timer } from '../timer';
import type { TransportClientOptions } from '../transport';
import { checkInt, checkObject, checkTimeout, describe } from '../validate';
import { nats } from './load';
import { checkSubject } from './names';
import type { NatsTransport } from './transport';

const QUEUE = 'shmkit';
/** A stream waits this long for a silent caller (callers send an empty CREDIT every KEEPALIVE_MS). */
const CREDIT_IDLE_MS = 30_000;
const KEEPALIVE_MS = 10_000;

function serviceSubject(t: NatsTransport, name: string): string {
  return checkSubject(`${t.prefix}.rpc.${checkName(name)}`, 'name');
}

/** A caller, as a NATS server sees it: a client inbox. */
interface InboxCaller extends Caller {
  inbox: string;
  last: number;
}

/** A server of a service over NATS: one of the queue group of its subject. */
export class NatsRpcServer extends CallHandler {
  readonly subject: string;
  private readonly transport: NatsTransport;
  private readonly control: string;
  private readonly subs: NatsSub[] = [];
  private readonly callers = new Map<string, InboxCaller>();
  private nextCaller = 1;
  private counts = { calls: 0, errors: 0, latency: 0, inFlight: 0 };
  private ended = false;
  private sweep: ReturnType<typeof setInterval> | null = null;

  /** @internal Use transport.serve(). */
  constructor(transport: NatsTransport, name: string, handlers: object, options: HandlingOptions) {
    super(name, handlers, options);
    this.transport = transport;
    this.subject = serviceSubject(transport, name);
    this.control = `${this.subject}.s.${nats().core.createInbox('x').slice(2)}`;
    this.creditIdleMs = CREDIT_IDLE_MS;
    const nc = transport.connection;
    const onMsg = (err: Error | null, msg: Msg): void => {
      if (err !== null || this.ended) return;
      try {
        this.receive(msg);
      } catch {
        // a frame no client sends: dropped (a NATS subject is open to anyone)
      }
    };
    this.subs.push(nc.subscribe(this.subject, { queue: QUEUE, callback: onMsg }));
    this.subs.push(nc.subscribe(this.control, { callback: onMsg }));
    this.subs.push(nc.subscribe(`${this.subject}.cancel`, { callback: onMsg }));
    // Callers with nothing running are forgotten after a minute.
    this.sweep = setInterval(() => {
      const old = Date.now() - 60_000;
      for (const [k, c] of this.callers) if (c.running.size === 0 && c.last < old) this.callers.delete(k);
    }, 30_000);
    this.sweep.unref();
  }

  /** Resolves once the server's subscriptions are registered with the NATS server. */
  async ready(): Promise<void> {
    await this.transport.connection.flush();
  }

  private receive(msg: Msg): void {
    const frame = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
    const { type, id } = P.head(frame);
    let inbox = msg.reply ?? '';
    if (type === P.CALL) inbox = inbox.slice(0, inbox.lastIndexOf('.')); // `<inbox>.<id>`
    if (inbox.length === 0) {
      if (type !== P.NOTIFY) return; // nowhere to answer
      inbox = '_';
    }
    if (type === P.CANCEL || type === P.CREDIT) {
      const c = this.callers.get(inbox);
      if (c === undefined || !c.running.has(id)) return; // another server's call (a broadcast CANCEL), or over
    }
    let c = this.callers.get(inbox);
    if (c === undefined) {
      const nc = this.transport.connection;
      const control = this.control;
      const send = (f: Buffer): boolean => {
        nc.publish(`${inbox}.${P.head(f).id}`, f, { reply: control });
        return true;
      };
      c = {
        inbox,
        last: Date.now(),
        running: new Map<number, Running>(),
        pid: 0,
        id: this.nextCaller++,
        maxMessageSize: this.transport.maxPayload,
        closed: false,
        trySend: send,
        send: async (f) => void send(f),
      };
      this.callers.set(inbox, c);
    }
    c.last = Date.now();
    this.onFrame(c, frame);
  }

  protected count(what: Counter, by: number): void {
    this.counts[what] += by;
  }

  protected inflight(by: number): void {
    this.counts.inFlight += by;
  }

  stats(): RpcServerStats {
    const c = this.counts;
    return { calls: c.calls, errors: c.errors, inFlight: c.inFlight, meanLatencyMicros: c.calls > 0 ? c.latency / c.calls : 0, notifications: this.notifications, connections: this.callers.size };
  }

  /** Stops taking calls (the queue group's other servers take them); running calls finish. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    if (this.sweep) clearInterval(this.sweep);
    const [calls, ...rest] = this.subs;
    try {
      calls?.unsubscribe();
      // Answers of running calls still go out; their CANCEL and CREDIT frames still come in.
      while ([...this.callers.values()].some((c) => c.running.size > 0)) await new Promise((r) => setTimeout(r, 10));
      for (const s of rest) s.unsubscribe();
    } catch {
      // the connection is closed already
    }
    this.transport.release(this);
  }

  /** Stops at once: running calls' signals abort. */
  async closeNow(): Promise<void> {
    for (const c of this.callers.values()) this.cancelAll(c, new ShmkitError(ErrorCodes.CLOSED, `rpc "${this.name}": the server closed`));
    await this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeNow();
  }
}

/** The client of a service over NATS: one inbox subscription carries the answers of every call. */
class NatsClientCore implements CallCore, ProxyCore {
  readonly name: string;
  readonly codec: Codec<unknown>;
  readonly window: number;
  readonly counts = { calls: 0, results: 0, errors: 0 };
  private readonly transport: NatsTransport;
  private readonly subject: string;
  private readonly inbox: string;
  private readonly sub: NatsSub;
  /** The control subject of the server that answered each call. */
  private readonly servedBy = new Map<number, string>();
  private readonly seen = new Set<string>();
  private readonly keepalive: ReturnType<typeof setInterval>;
  closed = false;
  readonly link: CallLink & { nextId: number };

  constructor(transport: NatsTransport, name: string, options: TransportClientOptions) {
    this.transport = transport;
    this.name = name;
    this.subject = serviceSubject(transport, name);
    this.codec = resolveCodec(options.codec ?? 'json');
    this.window = options.window === undefined ? 64 : checkInt('options.window', options.window, 1, 1 << 20);
    const nc = transport.connection;
    this.inbox = nats().core.createInbox();
    this.link = {
      pending: new Map<number, Pending>(),
      nextId: 1,
      control: (frame) => {
        if (this.closed || nc.isClosed()) return;
        const id = P.head(frame).id;
        const to = this.servedBy.get(id) ?? `${this.subject}.cancel`;
        try {
          nc.publish(to, frame, { reply: this.inbox });
        } catch {
          // the connection is closing: the server's deadline or idle check ends the call
        }
      },
    };
    this.sub = nc.subscribe(`${this.inbox}.*`, { callback: (err, msg) => (err === null ? this.onMsg(msg) : undefined) });
    // Streams held open: an empty CREDIT now and then tells their servers the caller is alive.
    this.keepalive = setInterval(() => {
      for (const [id, p] of this.link.pending) if (p.stream !== null) this.link.control(P.encodeCredit(id, 0));
    }, KEEPALIVE_MS);
    this.keepalive.unref();
  }

  get label(): string {
    return `rpc "${this.name}" (NATS ${this.subject})`;
  }

  private onMsg(msg: Msg): void {
    const id = Number(msg.subject.slice(msg.subject.lastIndexOf('.') + 1));
    const p = this.link.pending.get(id);
    if (p === undefined) return;
    if (msg.headers?.code === 503 || (msg.data.length === 0 && msg.headers?.status !== undefined && msg.headers.status !== '')) {
      p.failed(new ShmkitError(ErrorCodes.REFUSED, `${this.label} ${p.method}: no server serves it`));
      return;
    }
    if (msg.reply) {
      this.servedBy.set(id, msg.reply);
      this.seen.add(msg.reply);
    }
    try {
      answer(this, this.link, Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength));
    } catch (err) {
      p.failed(err); // a frame no server sends
    }
    if (!this.link.pending.has(id)) this.servedBy.delete(id);
  }

  settled(): void {
    for (const id of this.servedBy.keys()) if (!this.link.pending.has(id)) this.servedBy.delete(id);
  }

  call(method: string, args: unknown[], o: Parsed): Promise<unknown> {
    try {
      if (typeof method !== 'string' || method.length === 0) throw invalidArg('method', `must be a non-empty string, got ${describe(method)}`);
      if (!Array.isArray(args)) throw invalidArg('args', `must be an array, got ${describe(args)}`);
      if (this.closed) throw closedError(`${this.label} client`);
      if (isAborted(o.signal)) throw abortError(o.signal, `${this.label} ${method}`);
      this.transport.assertOpen(this.label);
      this.counts.calls++;
    } catch (err) {
      return Promise.reject(err);
    }
    const link = this.link;
    let id = link.nextId;
    while (link.pending.has(id)) id = id >= 0xffffffff ? 1 : id + 1;
    link.nextId = id >= 0xffffffff ? 1 : id + 1;
    const deadline = o.timeout === Infinity ? 0 : Date.now() + o.timeout;
    const pending = new Pending(this, link, id, method);
    const result = new Promise<unknown>((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    link.pending.set(id, pending);
    try {
      const frame = P.encodeCall(this.codec, id, method, args, deadline, this.window);
      if (frame.length > this.transport.maxPayload) throw new ShmkitError(ErrorCodes.TOO_LARGE, `${this.label} ${method}: a call of ${frame.length} bytes is larger than the server's max_payload (${this.transport.maxPayload}); nothing was sent`);
      if (o.timeout !== Infinity) pending.timer = timer(() => pending.giveUp(timeoutError(`${this.label} ${method}`, o.timeout)), o.timeout);
      if (o.signal) pending.unlisten = onAbort(o.signal, () => pending.giveUp(abortError(o.signal!, `${this.label} ${method}`)));
      this.transport.connection.publish(this.subject, frame, { reply: `${this.inbox}.${id}` });
    } catch (err) {
      pending.failed(err instanceof ShmkitError ? err : new ShmkitError(ErrorCodes.PEER_GONE, `${this.label} ${method}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
    }
    return result;
  }

  async notify(method: string, args: unknown[], o: Parsed): Promise<void> {
    if (typeof method !== 'string' || method.length === 0) throw invalidArg('method', `must be a non-empty string, got ${describe(method)}`);
    if (this.closed) throw closedError(`${this.label} client`);
    if (isAborted(o.signal)) throw abortError(o.signal, `${this.label} ${method}`);
    const frame = P.encodeNotify(this.codec, method, args);
    if (frame.length > this.transport.maxPayload) throw new ShmkitError(ErrorCodes.TOO_LARGE, `${this.label} ${method}: a notification of ${frame.length} bytes is larger than the server's max_payload; nothing was sent`);
    this.transport.connection.publish(this.subject, frame);
  }

  stats(): RpcClientStats {
    return { ...this.counts, inFlight: this.link.pending.size, servers: this.seen.size };
  }

  /** Servers that answered this client so far. */
  get servers(): number {
    return this.seen.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepalive);
    try {
      this.sub.unsubscribe();
    } catch {
      // closed already
    }
    const why = closedError(`${this.label} client`);
    for (const p of [...this.link.pending.values()]) p.failed(why);
    this.transport.release(this);
  }
}

/** A client of the service `name` over NATS (nothing is checked until the first call: servers may come later). */
export async function natsRpcClient<I extends object>(transport: NatsTransport, name: string, options?: TransportClientOptions): Promise<RpcClient<I>> {
  const o = checkObject('options', options) as TransportClientOptions;
  const defaults: Parsed = { timeout: o.timeout === undefined ? Infinity : checkTimeout('options.timeout', o.timeout), signal: undefined };
  const core = new NatsClientCore(transport, name, o);
  transport.hold(core);
  await transport.connection.flush(); // the inbox subscription is in place before the first call
  return proxy<I>(core, defaults);
}

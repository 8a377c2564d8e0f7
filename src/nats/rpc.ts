/**
 * RPC over NATS: request/reply on the subject S = `<prefix>.rpc.<name>`, the servers of a name in
 * the queue group "shmkit", the method, timeout, errors, cancellation and stream credit carried
 * in NATS headers, the arguments and results in the payload (the codec's bytes). The handling of
 * calls and answers is the same code as for local RPC (rpc/handling.ts, rpc/calls.ts): each NATS
 * message is turned into the RPC frame it stands for, and each frame into a NATS message.
 *
 * | message | subject | headers | payload | reply subject |
 * |---|---|---|---|---|
 * | call | S | Shmkit-Method, Shmkit-Timeout (ms, optional), Shmkit-Window (optional) | the arguments (an array) | where answers go: `<inbox>.<call id>` for shmkit clients; any other client's own |
 * | notification | S | Shmkit-Method | the arguments | none |
 * | result, error, stream, item, end | the call's reply subject | Shmkit-Kind (and Shmkit-Error-Code for an error) | the value; an error: its JSON description | the server's control subject `S.s.<id>` |
 * | cancel, credit | the control subject of the call's server, or `S.cancel` (every server) before any answer | Shmkit-Kind, Shmkit-Call (the id), Shmkit-Credit | none | the client's inbox |
 *
 * So any NATS client can call a method: a request to S with the header Shmkit-Method and the
 * arguments as a JSON array (the json codec) gets the result as JSON. NATS answers a call no
 * server took with a 503 status message: the call fails with ERR_SHMKIT_REFUSED at once.
 */
import type { Msg, MsgHdrs, Subscription as NatsSub } from '@nats-io/transport-node';
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
/** The most stream items a NATS server sends ahead of its caller's credit (a larger window is cut to it). */
const MAX_CREDIT = 4096;

/** The headers of an RPC message over NATS. */
const H = {
  kind: 'Shmkit-Kind',
  method: 'Shmkit-Method',
  timeout: 'Shmkit-Timeout',
  window: 'Shmkit-Window',
  call: 'Shmkit-Call',
  credit: 'Shmkit-Credit',
  code: 'Shmkit-Error-Code',
} as const;
const KIND: Record<number, string> = { [P.RESULT]: 'result', [P.ERROR]: 'error', [P.STREAM]: 'stream', [P.ITEM]: 'item', [P.END]: 'end', [P.CANCEL]: 'cancel', [P.CREDIT]: 'credit' };
const TYPE: Record<string, number> = Object.fromEntries(Object.entries(KIND).map(([t, k]) => [k, Number(t)]));
/** Answers after which a call is over. */
const FINAL = new Set([P.RESULT, P.ERROR, P.END]);

/** A frame as a NATS message: its headers and payload. */
function toMessage(frame: Buffer): { headers: MsgHdrs; payload: Uint8Array } {
  const h = nats().core.headers();
  const { type, id } = P.head(frame);
  if (type === P.CALL) {
    const c = P.callHead(frame);
    h.set(H.method, c.method);
    if (c.deadline > 0) h.set(H.timeout, String(Math.max(0, Math.ceil(c.deadline - Date.now()))));
    h.set(H.window, String(c.window));
    return { headers: h, payload: frame.subarray(c.bodyAt) };
  }
  if (type === P.NOTIFY) {
    const n = P.notifyHead(frame);
    h.set(H.method, n.method);
    return { headers: h, payload: frame.subarray(n.bodyAt) };
  }
  h.set(H.kind, KIND[type]!);
  if (type === P.CANCEL || type === P.CREDIT) {
    h.set(H.call, String(id));
    if (type === P.CREDIT) h.set(H.credit, String(P.decodeCredit(frame)));
    return { headers: h, payload: new Uint8Array(0) };
  }
  if (type === P.ERROR) {
    try {
      const code = (JSON.parse(frame.toString('utf8', P.HEAD)) as { code?: unknown }).code;
      if (typeof code === 'string' && /^[\x21-\x7e]{1,100}$/.test(code)) h.set(H.code, code);
    } catch {
      // an error whose description is not JSON: no code header
    }
  }
  return { headers: h, payload: frame.subarray(P.HEAD) };
}

/** A whole number header, or `fallback` (absent), or null (not a whole number in range). */
function intHeader(h: MsgHdrs | undefined, name: string, max: number, fallback: number): number | null {
  const v = h?.get(name) ?? '';
  if (v === '') return fallback;
  if (!/^\d{1,16}$/.test(v)) return null;
  const n = Number(v);
  return n <= max ? n : null;
}

/**
 * The RPC frame a NATS message stands for (call `id`), or null for a message that is none: no
 * method on a call, an unknown kind, a header out of range.
 */
function toFrame(msg: Msg, id: number): Buffer | null {
  const h = msg.headers;
  const kind = h?.get(H.kind) ?? '';
  const payload = msg.data;
  if (kind === '') {
    const method = h?.get(H.method) ?? '';
    if (method === '' || Buffer.byteLength(method) > P.MAX_METHOD) return null;
    if (msg.reply === undefined || msg.reply === '') return P.notifyFrame(method, payload);
    const timeout = intHeader(h, H.timeout, 2 ** 52, -1);
    const window = intHeader(h, H.window, 0xffffffff, 64); // capped by the server (MAX_CREDIT)
    if (timeout === null || window === null) return null;
    return P.callFrame(id, method, timeout < 0 ? 0 : Date.now() + timeout, window, payload);
  }
  const type = TYPE[kind];
  if (type === undefined) return null;
  if (type === P.CANCEL) return P.encodeCancel(id);
  if (type === P.CREDIT) {
    const n = intHeader(h, H.credit, 0xffffffff, -1);
    return n === null || n < 0 ? null : P.encodeCredit(id, n);
  }
  return P.answerFrame(type, id, payload);
}

function serviceSubject(t: NatsTransport, name: string): string {
  return checkSubject(`${t.prefix}.rpc.${checkName(name)}`, 'name');
}

/** A caller, as a NATS server sees it: a client inbox (a shmkit client), or one request's reply subject (any other). */
interface InboxCaller extends Caller {
  inbox: string;
  last: number;
  /** Where the answers of each running call go. */
  replies: Map<number, string>;
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
    // A NATS publish never waits: a stream's credit is capped, and it yields now and then, so that
    // one caller (or a forged CREDIT) cannot make the server publish without end.
    this.maxCredit = MAX_CREDIT;
    this.yieldEvery = 64;
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

  /** Resolves once the server's subscriptions are registered with the NATS server (or NATS is away: then when it is back). */
  async ready(): Promise<void> {
    await this.transport.flushWithin(10_000);
  }

  private receive(msg: Msg): void {
    const kind = msg.headers?.get(H.kind) ?? '';
    const reply = msg.reply ?? '';
    let inbox: string;
    let id: number;
    if (kind === 'cancel' || kind === 'credit') {
      // From a shmkit client: its inbox, and the call's id.
      inbox = reply;
      const n = intHeader(msg.headers, H.call, 0xffffffff, -1);
      const c = this.callers.get(inbox);
      if (n === null || n <= 0 || c === undefined || !c.running.has(n)) return; // another server's call (a broadcast CANCEL), or over
      id = n;
    } else if (kind !== '') {
      // An answer kind sent to a server: not a call. A requester that waits is told so.
      if (reply !== '') {
        const m = toMessage(P.encodeError(0, new ShmkitError(ErrorCodes.CORRUPT, `rpc "${this.name}": a message of kind ${JSON.stringify(kind.slice(0, 20))} is not a call`)));
        this.transport.connection.publish(reply, m.payload, { headers: m.headers });
      }
      return;
    } else if (reply === '') {
      inbox = '_';
      id = 0; // a notification
    } else {
      // `<inbox>.<id>` from a shmkit client; any other client's reply subject is one call's own.
      const dot = reply.lastIndexOf('.');
      const last = reply.slice(dot + 1);
      if (dot > 0 && /^[1-9]\d{0,9}$/.test(last) && Number(last) <= 0xffffffff) {
        inbox = reply.slice(0, dot);
        id = Number(last);
      } else {
        inbox = reply;
        id = 1;
      }
    }
    const frame = toFrame(msg, id);
    if (frame === null) {
      // A call this server cannot read: answered, so that its caller does not wait for nothing.
      if (kind === '' && reply !== '') {
        const m = toMessage(P.encodeError(id, new ShmkitError(ErrorCodes.CORRUPT, `rpc "${this.name}": a call needs the header ${H.method}, and whole numbers in ${H.timeout} and ${H.window}`)));
        this.transport.connection.publish(reply, m.payload, { headers: m.headers });
      }
      return;
    }
    let c = this.callers.get(inbox);
    if (c === undefined) {
      const nc = this.transport.connection;
      const control = this.control;
      const replies = new Map<number, string>();
      const prefix = inbox;
      const send = (f: Buffer): boolean => {
        const { type, id: callId } = P.head(f);
        const to = replies.get(callId) ?? `${prefix}.${callId}`;
        if (FINAL.has(type)) replies.delete(callId);
        const m = toMessage(f);
        nc.publish(to, m.payload, { reply: control, headers: m.headers });
        return true;
      };
      c = {
        inbox,
        last: Date.now(),
        replies,
        running: new Map<number, Running>(),
        pid: 0,
        id: this.nextCaller++,
        maxMessageSize: this.transport.maxPayload,
        closed: this.ended,
        trySend: send,
        send: async (f) => void send(f),
      };
      this.callers.set(inbox, c);
    }
    c.last = Date.now();
    if (kind === '' && reply !== '') {
      if (c.running.has(id)) return; // a second CALL on the reply subject of a running one: not its caller's (dropped)
      c.replies.set(id, reply);
    }
    this.onFrame(c, frame);
    if (kind === 'cancel' && c.replies.has(id)) {
      // Answered all the same (ABORT_ERR): its caller ignores an answer to a call it gave up, and
      // a call cancelled by someone else (NATS subjects are open to anyone allowed) does not hang.
      void c.send(P.encodeError(id, new ShmkitError(ErrorCodes.ABORTED, `rpc "${this.name}": the call was cancelled`)));
    }
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

  /** Stops at once: running calls' signals abort, and nothing more is sent or received. */
  async closeNow(): Promise<void> {
    for (const c of this.callers.values()) {
      // Each running call is answered (ERR_SHMKIT_CLOSED) before the server goes: its caller does not wait for nothing.
      for (const id of [...c.running.keys()]) {
        if (c.replies.has(id)) void c.send(P.encodeError(id, new ShmkitError(ErrorCodes.CLOSED, `rpc "${this.name}": the server closed`)));
      }
      this.cancelAll(c, new ShmkitError(ErrorCodes.CLOSED, `rpc "${this.name}": the server closed`));
      (c as { closed: boolean }).closed = true;
    }
    await this.transport.flushWithin(1000); // the answers go out before the subscriptions do
    if (!this.ended) {
      this.ended = true;
      if (this.sweep) clearInterval(this.sweep);
      for (const sub of this.subs) {
        try {
          sub.unsubscribe();
        } catch {
          // the connection is closed already
        }
      }
      this.transport.release(this);
    }
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
        const { type, id } = P.head(frame);
        const to = this.servedBy.get(id) ?? `${this.subject}.cancel`;
        if (type === P.CANCEL) this.servedBy.delete(id); // nothing more goes to it
        try {
          nc.publish(to, undefined, { reply: this.inbox, headers: toMessage(frame).headers });
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
    if (msg.headers?.code === 503) {
      p.failed(new ShmkitError(ErrorCodes.REFUSED, `${this.label} ${p.method}: no server serves it`));
      return;
    }
    const frame = toFrame(msg, id);
    if (frame === null || frame[0] === P.CALL || frame[0] === P.NOTIFY || frame[0] === P.CANCEL || frame[0] === P.CREDIT) {
      p.failed(P.protocolError(`a message that is no answer came for call ${id}`));
      return;
    }
    if (msg.reply) {
      this.servedBy.set(id, msg.reply);
      this.seen.add(msg.reply);
    }
    try {
      answer(this, this.link, frame);
    } catch (err) {
      p.failed(err);
    }
    if (!this.link.pending.has(id)) this.servedBy.delete(id);
  }

  /** Nothing to do when a call settles: its server's subject goes with its last answer (onMsg) or its CANCEL (control). */
  settled(): void {}

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
      const m = toMessage(frame);
      this.transport.connection.publish(this.subject, m.payload, { reply: `${this.inbox}.${id}`, headers: m.headers });
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
    const m = toMessage(frame);
    this.transport.connection.publish(this.subject, m.payload, { headers: m.headers });
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
  await transport.flushWithin(o.connectTimeout === undefined ? 10_000 : checkTimeout('options.connectTimeout', o.connectTimeout)); // the inbox subscription is in place before the first call
  return proxy<I>(core, defaults);
}

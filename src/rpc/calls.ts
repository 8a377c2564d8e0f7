/**
 * Calling RPC services, whatever carries the frames: a call waiting for its answer (its timer,
 * its signal, the CANCEL it sends when the caller gives up), a streamed result that grants the
 * server credit as it is consumed, the handling of answer frames, and the client object (a proxy
 * whose methods call the service's). rpcClient() carries the frames over shared-memory
 * connections; the NATS transport (shmkit/nats) over subjects.
 */
import { checkSignal } from '../abort';
import type { Codec } from '../codec/codec';
import { ErrorCodes, ShmkitError } from '../errors';
import { checkObject, checkTimeout } from '../validate';
import * as P from './protocol';
import type { Timer } from '../timer';

export interface CallOptions {
  /** Milliseconds until the call fails with ERR_SHMKIT_TIMEOUT (and the handler's signal aborts). */
  timeout?: number;
  /** Cancels the call: it rejects with ABORT_ERR and the handler's signal aborts. */
  signal?: AbortSignal;
}

export interface RpcClientStats {
  /** Calls made, answered with a result, and failed (errors, timeouts, aborts, dead servers). */
  calls: number;
  results: number;
  errors: number;
  /** Calls waiting for their answer (or streaming) now. */
  inFlight: number;
  /** Servers (listeners) this client holds a connection to. */
  servers: number;
}

/** What the caller gets for a method of `I` returning R: a stream as an async iterator, otherwise the value. */
export type RpcResult<R> = Awaited<R> extends AsyncIterable<infer X> ? AsyncIterableIterator<X> : Awaited<R>;

/** The names a client keeps for itself; a service's methods of these names are called with call(). */
export type ReservedName = 'call' | 'notify' | 'with' | 'close' | 'stats' | 'then' | 'servers';

export interface RpcClientMethods<I> {
  /** Calls `method` with `args` (an array) and per-call options. */
  call<K extends keyof I & string>(method: K, args: I[K] extends (...a: infer A) => unknown ? A : never, options?: CallOptions): Promise<I[K] extends (...a: never[]) => infer R ? RpcResult<R> : never>;
  /**
   * Sends a notification: the handler runs, nobody waits for its result. Resolves once sent; the
   * client's (or with()'s) timeout and signal bound the wait for a connection or for room.
   */
  notify<K extends keyof I & string>(method: K, ...args: I[K] extends (...a: infer A) => unknown ? A : never): Promise<void>;
  /** The same client with other per-call options (timeout, signal) for the calls made through it. */
  with(options: CallOptions): RpcClient<I>;
  stats(): RpcClientStats;
  /** Servers (listeners) this client holds a connection to. */
  readonly servers: number;
  /** Closes the connections; calls still waiting fail with ERR_SHMKIT_CLOSED. */
  close(): void;
  [Symbol.dispose](): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A client of service interface `I`: its methods, each returning a promise, and the client's own. */
export type RpcClient<I> = {
  [K in keyof I as K extends ReservedName ? never : K]: I[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<RpcResult<R>> : never;
} & RpcClientMethods<I>;

/** What calls need of their client. */
export interface CallCore {
  readonly label: string;
  readonly codec: Codec<unknown>;
  /** Stream items the server may send ahead. */
  readonly window: number;
  readonly counts: { calls: number; results: number; errors: number };
  /** A call of `link` stopped being outstanding. */
  settled(link: CallLink): void;
}

/** A way to servers that carries calls: a connection, or a NATS client's inbox. */
export interface CallLink {
  readonly pending: Map<number, Pending>;
  /** Sends a CANCEL or CREDIT frame if the link can still carry it (never throws). */
  control(frame: Buffer): void;
}

/** A call waiting for its answer (or streaming). */
export class Pending {
  stream: ClientStream | null = null;
  resolve: (v: unknown) => void = noop;
  reject: (e: unknown) => void = noop;
  timer: Timer | null = null;
  unlisten: (() => void) | null = null;
  /** Set while the CALL waits for room in the ring: aborting it takes the call back unsent. */
  unsent: AbortController | null = null;

  constructor(
    readonly core: CallCore,
    readonly link: CallLink,
    readonly id: number,
    readonly method: string,
  ) {}

  /** The call is no longer waiting for its answer: its timer and (unless it streams on) its signal go. */
  done(): void {
    this.timer?.clear();
    this.timer = null;
    // A stream keeps the signal: aborting it ends the iteration.
    if (this.stream === null || !this.link.pending.has(this.id)) this.unlisten?.();
  }

  /** The caller gives up (timeout, abort): the server is told (CANCEL), the call fails with `err`. */
  giveUp(err: ShmkitError): void {
    this.fail(err, true);
  }

  /** The CALL could not be sent: the call fails with `err`. */
  failed(err: unknown): void {
    this.fail(err, false);
  }

  private fail(err: unknown, cancel: boolean): void {
    const link = this.link;
    if (link.pending.get(this.id) !== this) return;
    link.pending.delete(this.id);
    this.done();
    this.core.settled(link);
    this.core.counts.errors++;
    if (this.unsent !== null) {
      this.unsent.abort(); // never sent: nothing to cancel on the server
      this.unsent = null;
    } else if (cancel) link.control(P.encodeCancel(this.id));
    if (this.stream) this.stream.fail(err);
    else this.reject(err);
  }
}

const noop = (): void => {};

/** Per-call options, parsed. */
export interface Parsed {
  timeout: number;
  signal: AbortSignal | undefined;
}

export function parseCall(options: unknown, defaults: Parsed): Parsed {
  if (options === undefined) return defaults;
  const o = checkObject('options', options);
  return {
    timeout: o.timeout === undefined ? defaults.timeout : checkTimeout('options.timeout', o.timeout),
    signal: o.signal === undefined ? defaults.signal : checkSignal('options.signal', o.signal),
  };
}

const RESERVED = new Set<string>(['call', 'notify', 'with', 'close', 'stats', 'then', 'servers']);

/** A streamed result: an async iterator that grants the server credit as it consumes. */
export class ClientStream implements AsyncIterableIterator<unknown> {
  private readonly buffer: unknown[] = [];
  private waiter: { resolve: (r: IteratorResult<unknown>) => void; reject: (e: unknown) => void } | null = null;
  private finished = false;
  private error: unknown = null;
  private consumed = 0;

  constructor(
    private readonly core: CallCore,
    private readonly link: CallLink,
    private readonly id: number,
    private readonly forget: () => void,
  ) {}

  push(v: unknown): void {
    if (this.finished) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      this.took();
      w.resolve({ value: v, done: false });
    } else this.buffer.push(v);
  }

  end(): void {
    this.finished = true;
    if (this.waiter && this.buffer.length === 0) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: undefined, done: true });
    }
  }

  fail(err: unknown): void {
    if (this.finished) return;
    this.finished = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(err);
    } else this.error = err; // thrown by the next next(), once
  }

  /** One item consumed: every half window, the server gets that much credit back. */
  private took(): void {
    if (++this.consumed >= Math.max(1, this.core.window >> 1)) {
      const n = this.consumed;
      this.consumed = 0;
      if (!this.finished) this.link.control(P.encodeCredit(this.id, n));
    }
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.buffer.length > 0) {
      const v = this.buffer.shift();
      this.took();
      return Promise.resolve({ value: v, done: false });
    }
    if (this.error !== null) {
      const e = this.error;
      this.error = null; // thrown once; then the iterator is done
      return Promise.reject(e);
    }
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter) return Promise.reject(new ShmkitError(ErrorCodes.BUSY, `${this.core.label}: next() while another next() is pending`));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /** Stops the stream early: the server's handler sees its signal abort. */
  return(): Promise<IteratorResult<unknown>> {
    if (!this.finished) {
      this.finished = true;
      this.buffer.length = 0;
      const w = this.waiter; // a next() waiting meanwhile ends too
      this.waiter = null;
      w?.resolve({ value: undefined, done: true });
      if (this.link.pending.has(this.id)) {
        this.forget();
        this.link.control(P.encodeCancel(this.id));
      }
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<unknown> {
    return this;
  }
}

/**
 * An answer frame from a server for one of `link`'s calls: resolves, rejects or feeds its call.
 * Throws a protocol error for a frame no server sends.
 */
export function answer(core: CallCore, link: CallLink, frame: Buffer): void {
  const { type, id } = P.head(frame);
  const p = link.pending.get(id);
  if (p === undefined) return; // the answer to a call given up on (timeout, abort, cancelled stream)
  switch (type) {
    case P.RESULT: {
      link.pending.delete(id);
      p.done();
      core.settled(link);
      let v: unknown;
      try {
        v = P.decodeValue(core.codec, frame);
      } catch (err) {
        core.counts.errors++;
        p.reject(err);
        return;
      }
      core.counts.results++;
      p.resolve(v);
      return;
    }
    case P.ERROR: {
      link.pending.delete(id);
      p.done();
      core.settled(link);
      core.counts.errors++;
      const err = P.decodeError(frame, p.method);
      if (p.stream) p.stream.fail(err);
      else p.reject(err);
      return;
    }
    case P.STREAM: {
      if (p.stream) return;
      p.stream = new ClientStream(core, link, id, () => {
        link.pending.delete(id);
        p.done();
        core.settled(link);
      });
      p.resolve(p.stream);
      return;
    }
    case P.ITEM: {
      if (!p.stream) return;
      let v: unknown;
      try {
        v = P.decodeValue(core.codec, frame);
      } catch (err) {
        // This stream fails (and the server stops sending it); the link and its other calls go on.
        link.pending.delete(id);
        p.done();
        core.settled(link);
        core.counts.errors++;
        link.control(P.encodeCancel(id));
        p.stream.fail(err);
        return;
      }
      p.stream.push(v);
      return;
    }
    case P.END:
      link.pending.delete(id);
      p.done();
      core.settled(link);
      core.counts.results++;
      p.stream?.end();
      return;
    default:
      throw P.protocolError(`unexpected frame type ${type} from a server`);
  }
}

/** What a client proxy calls: the client's core, whatever its transport. */
export interface ProxyCore {
  call(method: string, args: unknown[], o: Parsed): Promise<unknown>;
  notify(method: string, args: unknown[], o: Parsed): Promise<void>;
  stats(): RpcClientStats;
  readonly servers: number;
  close(): void;
}

/** The client object: the service's methods (any name but the reserved ones) and the client's own. */
export function proxy<I>(core: ProxyCore, defaults: Parsed): RpcClient<I> {
  const target = {
    call: (method: string, args: unknown[], options?: CallOptions) => core.call(method, args, parseCall(options, defaults)),
    notify: (method: string, ...args: unknown[]) => core.notify(method, args, defaults),
    with: (options: CallOptions) => proxy<I>(core, parseCall(options, defaults)),
    stats: () => core.stats(),
    close: () => core.close(),
    [Symbol.dispose]: () => core.close(),
    [Symbol.asyncDispose]: () => Promise.resolve(core.close()),
  };
  const methods = new Map<string, (...args: unknown[]) => Promise<unknown>>();
  return new Proxy(target, {
    get(t, prop) {
      if (typeof prop === 'symbol') return (t as Record<symbol, unknown>)[prop];
      if (prop === 'then') return undefined; // not a thenable: `await client` is the client
      if (prop === 'servers') return core.servers;
      if (RESERVED.has(prop)) return (t as Record<string, unknown>)[prop];
      let m = methods.get(prop);
      if (m === undefined) {
        m = (...args: unknown[]) => core.call(prop, args, defaults);
        methods.set(prop, m);
      }
      return m;
    },
    has: (t, prop) => typeof prop === 'string' || prop in t,
    set: () => false,
  }) as unknown as RpcClient<I>;
}


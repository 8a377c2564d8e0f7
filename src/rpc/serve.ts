/**
 * serve(): an object of async methods, served to every client of a name. Each connection is read
 * by one loop; each CALL runs its handler at once (calls on one connection run concurrently and
 * answer in any order, matched by id), with a context whose signal aborts when the caller cancels,
 * its deadline passes, or its connection dies. A handler that returns an async iterable streams
 * its values, pulling the next one only while the caller has credit: a slow caller never makes the
 * server buffer. Several processes may serve one name: each listens, and each connection (so each
 * call) goes to one of them.
 */
import { EventEmitter } from 'node:events';
import type { Codec, CodecName } from '../codec/codec';
import { resolveCodec } from '../codec/codec';
import { debug } from '../debug';
import { ErrorCodes, invalidArg, ShmkitError } from '../errors';
import type { Connection } from '../server/connection';
import * as SL from '../server/layout';
import { Server, type ServerOptions } from '../server/server';
import { checkInt, checkObject, describe } from '../validate';
import * as P from './protocol';
import { nextFrame } from './reader';
import { type Timer, timer } from '../timer';

/** What a handler gets as its last argument. */
export interface CallContext {
  /** Aborts when the caller cancels (abort or timeout), the deadline passes, or the caller's connection dies. */
  readonly signal: AbortSignal;
  /** The caller's deadline, ms since the Unix epoch (Date.now()'s clock), if it gave one. */
  readonly deadline: number | undefined;
  /** The method called. */
  readonly method: string;
  /** The pid of the calling process. */
  readonly pid: number;
  /** The id of the caller's connection (unique among the server's open connections). */
  readonly connection: number;
}

/** The handlers of a service interface `I`: each method may take a CallContext after its arguments. */
export type Handlers<I> = {
  [K in keyof I]: I[K] extends (...args: infer A) => infer R ? (...args: [...A, CallContext]) => R | Promise<Awaited<R>> : never;
};

export interface ServeOptions extends Omit<ServerOptions, 'codec'> {
  /** How arguments, results and stream items are encoded: 'json' (default), 'jsonb', 'structured', or a Codec. Both sides must use the same. */
  codec?: CodecName | Codec<unknown>;
  /** Calls one connection may have running at once; a CALL beyond it gets ERR_SHMKIT_BUSY. Default 1024. */
  maxCallsPerConnection?: number;
  /**
   * Microseconds a connection's reader spins for the next call before it sleeps (its event loop
   * is busy meanwhile). Default: configure().spinMicros. 0: sleep at once.
   */
  spin?: number;
}

export interface RpcServerStats {
  /** Calls answered (results, errors and finished streams) by this process. */
  calls: number;
  /** Calls that ended in an error (unknown methods, thrown errors, cancellations). */
  errors: number;
  /** Calls running now. */
  inFlight: number;
  /** Mean time from a call's arrival to its answer (its stream's end), µs. */
  meanLatencyMicros: number;
  /** Notifications received. */
  notifications: number;
  /** Open connections of this process. */
  connections: number;
}

/** A running call: its context (the signal is made on first use), its stream credit, its timer. */
class Running implements CallContext {
  private controller: AbortController | null = null;
  private reason: unknown = undefined;
  aborted = false;
  /** Stream credit: items the caller may still take. */
  credit: number;
  wake: (() => void) | null = null;
  timer: Timer | null = null;

  constructor(
    readonly method: string,
    readonly deadline: number | undefined,
    readonly pid: number,
    readonly connection: number,
    window: number,
  ) {
    this.credit = window;
  }

  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  /** Aborts the call's signal (made now if the handler never asked for it: it may ask later). */
  cancel(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** The caller sent CANCEL: nothing more may be sent for this call. */
  callerCancelled = false;

  get abortReason(): unknown {
    return this.reason;
  }
}

const objectProto = Object.prototype;

/** The handler of `method` on `handlers` (its own or its class's), never Object.prototype's. */
function lookup(handlers: object, method: string): ((...args: unknown[]) => unknown) | null {
  if (method === 'constructor' || method === '__proto__') return null;
  for (let o: object | null = handlers; o !== null && o !== objectProto; o = Object.getPrototypeOf(o) as object | null) {
    const d = Object.getOwnPropertyDescriptor(o, method);
    if (d === undefined) continue;
    return typeof d.value === 'function' ? (d.value as (...args: unknown[]) => unknown) : null;
  }
  return null;
}

function isAsyncIterable(v: unknown): v is AsyncIterable<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}

export class RpcServer extends EventEmitter {
  readonly name: string;
  /** The listening Server underneath (its connections, its stats). */
  readonly server: Server<Buffer>;
  private readonly handlers: object;
  private readonly codec: Codec<unknown>;
  private readonly maxCalls: number;
  private readonly spin: number;
  private notifications = 0;
  /** Handlers by method name, looked up once each (a name that is not served is remembered as null). */
  private readonly methods = new Map<string, ((...args: unknown[]) => unknown) | null>();
  private readonly f64: Float64Array;
  private readonly i32: Int32Array;
  private readonly base: number;

  /** @internal */
  constructor(name: string, handlers: object, options: ServeOptions) {
    super();
    this.name = name;
    this.handlers = handlers;
    this.codec = resolveCodec(options.codec ?? 'json');
    this.maxCalls = options.maxCallsPerConnection === undefined ? 1024 : checkInt('options.maxCallsPerConnection', options.maxCallsPerConnection, 1, 1 << 20);
    this.spin = options.spin === undefined ? -1 : checkInt('options.spin', options.spin, 0, 10_000_000);
    const { codec: _c, maxCallsPerConnection: _m, spin: _s, ...serverOptions } = options;
    this.server = Server.listen<Buffer>(name, serverOptions, (c) => void this.serveConnection(c));
    this.f64 = this.server.table.f64;
    this.i32 = this.server.table.i32;
    this.base = this.server.table.listenerBase(this.server.listener);
  }

  // Counters in this listener's slot (one writer: this process), which `shmkit ls` and `top` read.
  private count(f: number, by: number): void {
    if (this.i32.length > 0) this.f64[(this.base + f) >> 3]! += by;
  }
  private inflight(by: number): void {
    if (this.i32.length > 0) Atomics.add(this.i32, (this.base + SL.L_INFLIGHT) >> 2, by);
  }

  private async serveConnection(conn: Connection<Buffer>): Promise<void> {
    const running = new Map<number, Running>();
    // Sends a frame; an answer the connection cannot carry (larger than its largest message) is
    // thrown to the caller of send (TOO_LARGE), who answers with a short error instead. A closed or
    // dead connection loses it: nobody waits for it any more.
    const send = async (frame: Buffer): Promise<void> => {
      if (conn.closed) return;
      if (frame.length > conn.maxMessageSize) {
        throw new ShmkitError(ErrorCodes.TOO_LARGE, `rpc "${this.name}": an answer of ${frame.length} bytes is larger than the connection's largest message (${conn.maxMessageSize} bytes; the server's ring capacity sets it)`);
      }
      try {
        if (!conn.trySend(frame)) await conn.send(frame);
      } catch (err) {
        debug('rpc %s: answer lost: %s', JSON.stringify(this.name), err instanceof Error ? err.message : err);
      }
    };
    conn.on('close', () => {
      for (const r of running.values()) r.cancel(new ShmkitError(ErrorCodes.PEER_GONE, `rpc "${this.name}": the caller's connection closed`));
    });
    try {
      for (;;) {
        let frame: Buffer;
        try {
          frame = await nextFrame(conn, this.spin, null);
        } catch (err) {
          if (err instanceof ShmkitError && err.code === ErrorCodes.CLOSED) break; // the caller ended its side, or the connection closed
          throw err;
        }
        const { type, id } = P.head(frame);
        if (type === P.CALL) {
          if (running.size >= this.maxCalls) {
            void send(P.encodeError(id, new ShmkitError(ErrorCodes.BUSY, `rpc "${this.name}": ${this.maxCalls} calls of this connection are running (maxCallsPerConnection)`)));
            continue;
          }
          let call: P.CallFrame;
          try {
            call = P.decodeCall(this.codec, frame);
          } catch (err) {
            this.count(SL.L_ERRORS, 1);
            void send(P.encodeError(id, err));
            continue;
          }
          void this.run(conn, call, running, send);
        } else if (type === P.NOTIFY) {
          this.notifications++;
          try {
            const n = P.decodeNotify(this.codec, frame);
            const fn = this.handler(n.method);
            if (fn === null) throw new ShmkitError(ErrorCodes.UNKNOWN_METHOD, `rpc "${this.name}": no method ${JSON.stringify(n.method)}`);
            const ctx: CallContext = { signal: new AbortController().signal, deadline: undefined, method: n.method, pid: conn.remotePid, connection: conn.id };
            void Promise.resolve()
              .then(() => fn.call(this.handlers, ...n.args, ctx))
              .catch((err: unknown) => this.notificationFailed(n.method, err));
          } catch (err) {
            this.notificationFailed('?', err);
          }
        } else if (type === P.CANCEL) {
          const r = running.get(id);
          if (r) {
            r.callerCancelled = true;
            // A CANCEL at or past the deadline is the caller's timeout: the handler's signal says so,
            // whichever of its timer and our deadline timer came first.
            const late = r.deadline !== undefined && Date.now() >= r.deadline;
            r.cancel(late
              ? new ShmkitError(ErrorCodes.TIMEOUT, `rpc "${this.name}" ${r.method}: the caller's deadline passed`)
              : new ShmkitError(ErrorCodes.ABORTED, `rpc "${this.name}": the caller cancelled the call`));
          }
        } else if (type === P.CREDIT) {
          const n = P.decodeCredit(frame); // a short CREDIT ends the connection, running or not
          const r = running.get(id);
          if (r) {
            r.credit += n;
            const w = r.wake;
            r.wake = null;
            w?.();
          }
        } else throw P.protocolError(`unexpected frame type ${type} from a caller`);
      }
    } catch (err) {
      debug('rpc %s: connection %d ends: %s', JSON.stringify(this.name), conn.id, err instanceof Error ? err.message : err);
    } finally {
      conn.close();
    }
  }

  private handler(method: string): ((...args: unknown[]) => unknown) | null {
    let fn = this.methods.get(method);
    if (fn === undefined) {
      fn = lookup(this.handlers, method);
      if (this.methods.size >= 4096) this.methods.clear(); // a caller inventing names cannot grow it without bound
      this.methods.set(method, fn);
    }
    return fn;
  }

  private notificationFailed(method: string, err: unknown): void {
    this.count(SL.L_ERRORS, 1);
    // 'error' only for those who listen (an unhandled 'error' would end the server).
    if (this.listenerCount('notificationError') > 0) this.emit('notificationError', err, method);
    else debug('rpc %s: notification %s failed: %s', JSON.stringify(this.name), method, err instanceof Error ? err.message : err);
  }

  private async run(conn: Connection<Buffer>, call: P.CallFrame, running: Map<number, Running>, send: (f: Buffer) => Promise<void>): Promise<void> {
    const started = performance.now();
    if (running.has(call.id)) {
      // A caller reusing the id of a running call: refused, the running one is untouched.
      await send(P.encodeError(call.id, new ShmkitError(ErrorCodes.BUSY, `rpc "${this.name}": call id ${call.id} is already running`)));
      return;
    }
    const r = new Running(call.method, call.deadline > 0 ? call.deadline : undefined, conn.remotePid, conn.id, call.window);
    running.set(call.id, r);
    this.inflight(1);
    let failed = false;
    try {
      const fn = this.handler(call.method);
      if (fn === null) throw new ShmkitError(ErrorCodes.UNKNOWN_METHOD, `rpc "${this.name}": no method ${JSON.stringify(call.method)}`);
      if (call.deadline > 0) {
        const left = call.deadline - Date.now();
        const expire = (): void => r.cancel(new ShmkitError(ErrorCodes.TIMEOUT, `rpc "${this.name}" ${call.method}: the caller's deadline passed`));
        if (left <= 0) expire();
        else r.timer = timer(expire, left);
      }
      let value = fn.call(this.handlers, ...call.args, r);
      if (value !== null && typeof value === 'object' && typeof (value as PromiseLike<unknown>).then === 'function') value = await value;
      if (isAsyncIterable(value) && typeof value !== 'string' && !ArrayBuffer.isView(value)) {
        if (r.aborted) throw r.abortReason; // cancelled or timed out before the stream began
        await send(P.encodeStream(call.id));
        await this.pump(value, call.id, r, send);
      } else {
        // Cancelled, timed out or disconnected: the caller gets the reason (a timeout), or nothing
        // (it cancelled, or is gone).
        if (r.aborted) throw r.abortReason;
        const frame = this.encodeAnswer(P.RESULT, call.id, value);
        if (conn.closed || frame.length > conn.maxMessageSize || !conn.trySend(frame)) await send(frame);
      }
    } catch (err) {
      failed = true;
      if (!conn.closed && !r.callerCancelled) {
        try {
          await send(P.encodeError(call.id, err));
        } catch (tooLarge) {
          // The error itself does not fit: a short one in its place.
          await send(P.encodeError(call.id, shorten(err, tooLarge))).catch(() => {});
        }
      }
    } finally {
      r.timer?.clear();
      running.delete(call.id);
      this.inflight(-1);
      this.count(SL.L_CALLS, 1);
      if (failed) this.count(SL.L_ERRORS, 1);
      this.count(SL.L_LATENCY, (performance.now() - started) * 1000);
    }
  }

  /** Streams `it`'s values, each only once the caller has credit for it. */
  private async pump(it: AsyncIterable<unknown>, id: number, r: Running, send: (f: Buffer) => Promise<void>): Promise<void> {
    const iterator = it[Symbol.asyncIterator]();
    try {
      for (;;) {
        while (r.credit <= 0 && !r.aborted) await new Promise<void>((resolve) => (r.wake = resolve));
        if (r.aborted) throw r.abortReason;
        const step = await iterator.next();
        if (step.done) break;
        if (r.aborted) throw r.abortReason;
        r.credit--;
        await send(this.encodeAnswer(P.ITEM, id, step.value));
      }
      await send(P.encodeEnd(id));
    } catch (err) {
      try {
        await iterator.return?.();
      } catch {
        // The iterator's own clean-up failed: the stream ends with the first error.
      }
      throw err;
    }
  }

  /**
   * A RESULT or ITEM frame of `value`. `undefined` (a handler that returns nothing) goes as null
   * when the codec cannot carry it (JSON); a value the codec refuses is an error that names it.
   */
  private encodeAnswer(type: typeof P.RESULT | typeof P.ITEM, id: number, value: unknown): Buffer {
    const enc = type === P.RESULT ? P.encodeResult : P.encodeItem;
    try {
      return enc(this.codec, id, value);
    } catch (err) {
      if (value === undefined) return enc(this.codec, id, null);
      throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `rpc "${this.name}": the handler's ${type === P.RESULT ? 'result' : 'stream item'} cannot be encoded with the ${this.codec.name} codec: ${err instanceof Error ? err.message : String(err)}`, { argument: type === P.RESULT ? 'result' : 'item', cause: err });
    }
  }

  stats(): RpcServerStats {
    const f = (o: number): number => (this.i32.length > 0 ? this.f64[(this.base + o) >> 3]! : 0);
    const calls = f(SL.L_CALLS);
    return {
      calls,
      errors: f(SL.L_ERRORS),
      inFlight: this.i32.length > 0 ? Atomics.load(this.i32, (this.base + SL.L_INFLIGHT) >> 2) : 0,
      meanLatencyMicros: calls > 0 ? f(SL.L_LATENCY) / calls : 0,
      notifications: this.notifications,
      connections: this.server.closed ? 0 : this.server.connections.size,
    };
  }

  /** Stops accepting; running calls finish and connections close as their clients leave. */
  close(): Promise<void> {
    return this.server.close();
  }

  /** Closes every connection at once (running calls' signals abort) and stops. */
  closeNow(): Promise<void> {
    const done = this.server.close();
    this.server.closeAllConnections();
    return done;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.closeNow();
  }
}

/**
 * Serves `handlers` (an object whose methods are async functions) under `name`, creating the
 * server or joining its listeners. Each handler gets the call's arguments, then a CallContext.
 */
export function serve<I extends object = Record<string, (...args: any[]) => any>>(name: string, handlers: Handlers<I>, options?: ServeOptions): RpcServer {
  if (handlers === null || typeof handlers !== 'object') throw invalidArg('handlers', `must be an object of methods, got ${describe(handlers)}`);
  const o = checkObject('options', options) as ServeOptions;
  return new RpcServer(name, handlers, o);
}

/** A short stand-in for an error whose ERROR frame does not fit in the connection. */
function shorten(err: unknown, tooLarge: unknown): ShmkitError {
  const what = err instanceof Error ? `${String(err.name).slice(0, 100)}: ${String(err.message).slice(0, 500)}` : 'a thrown value';
  return new ShmkitError(ErrorCodes.TOO_LARGE, `the handler's error does not fit in the connection (${what}...)`, { cause: tooLarge });
}

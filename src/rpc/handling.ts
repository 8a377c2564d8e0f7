/**
 * Serving RPC calls, whatever carries the frames: the handlers, their lookup, a running call's
 * context (its signal, deadline and stream credit), streamed results pulled only while the caller
 * has credit, and errors carried back with their name, message and code. A local server (serve())
 * reads frames from shared-memory connections; the NATS transport (shmkit/nats) from subjects. Both
 * give each frame to onFrame() with the Caller it came from.
 */
import { EventEmitter } from 'node:events';
import type { Codec, CodecName } from '../codec/codec';
import { resolveCodec } from '../codec/codec';
import { debug } from '../debug';
import { ErrorCodes, ShmkitError } from '../errors';
import { checkInt } from '../validate';
import * as P from './protocol';
import { type Timer, timer } from '../timer';

/** What a handler gets as its last argument. */
export interface CallContext {
  /** Aborts when the caller cancels (abort or timeout), the deadline passes, or the caller's connection dies. */
  readonly signal: AbortSignal;
  /** The caller's deadline, ms since the Unix epoch (Date.now()'s clock), if it gave one. */
  readonly deadline: number | undefined;
  /** The method called. */
  readonly method: string;
  /** The pid of the calling process (0 when the transport does not carry it). */
  readonly pid: number;
  /** The id of the caller's connection (unique among the server's open connections). */
  readonly connection: number;
}

/** The handlers of a service interface `I`: each method may take a CallContext after its arguments. */
export type Handlers<I> = {
  [K in keyof I]: I[K] extends (...args: infer A) => infer R ? (...args: [...A, CallContext]) => R | Promise<Awaited<R>> : never;
};

/** Options of every RPC server, whatever the transport. */
export interface HandlingOptions {
  /** How arguments, results and stream items are encoded: 'json' (default), 'jsonb', 'structured', or a Codec. Both sides must use the same. */
  codec?: CodecName | Codec<unknown>;
  /** Calls one connection may have running at once; a CALL beyond it gets ERR_SHMKIT_BUSY. Default 1024. */
  maxCallsPerConnection?: number;
}

/** One caller, as the server sees it: a connection, or a NATS client's inbox. */
export interface Caller {
  /** Its calls running now, by id. */
  readonly running: Map<number, Running>;
  readonly pid: number;
  readonly id: number;
  /** The largest frame it can be sent. */
  readonly maxMessageSize: number;
  readonly closed: boolean;
  /** Sends at once if there is room; false if send() must wait. */
  trySend(frame: Buffer): boolean;
  send(frame: Buffer): Promise<void>;
}

/** The counters a server keeps. */
export type Counter = 'calls' | 'errors' | 'latency';

/** A running call: its context (the signal is made on first use), its stream credit, its timer. */
export class Running implements CallContext {
  private controller: AbortController | null = null;
  private reason: unknown = undefined;
  aborted = false;
  /** Stream credit: items the caller may still take. */
  credit: number;
  /** When the caller last sent a CREDIT for this call (Date.now()). */
  heard = Date.now();
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


/** The handling of calls, for RpcServer and the NATS server. */
export abstract class CallHandler extends EventEmitter {
  readonly name: string;
  private readonly handlers: object;
  protected readonly codec: Codec<unknown>;
  private readonly maxCalls: number;
  protected notifications = 0;
  /** Handlers by method name, looked up once each (a name that is not served is remembered as null). */
  private readonly methods = new Map<string, ((...args: unknown[]) => unknown) | null>();

  constructor(name: string, handlers: object, options: HandlingOptions) {
    super();
    this.name = name;
    this.handlers = handlers;
    this.codec = resolveCodec(options.codec ?? 'json');
    this.maxCalls = options.maxCallsPerConnection === undefined ? 1024 : checkInt('options.maxCallsPerConnection', options.maxCallsPerConnection, 1, 1 << 20);
  }

  /** Adds to a counter of this server. */
  protected abstract count(what: Counter, by: number): void;
  /** Calls running: +1 or -1. */
  protected abstract inflight(by: number): void;

  /**
   * Sends a frame to `caller`; an answer it cannot carry (larger than its largest message) is
   * thrown to the caller of deliver (TOO_LARGE), who answers with a short error instead. A closed
   * caller loses it: nobody waits for it any more.
   */
  private async deliver(caller: Caller, frame: Buffer): Promise<void> {
    if (caller.closed) return;
    if (frame.length > caller.maxMessageSize) {
      throw new ShmkitError(ErrorCodes.TOO_LARGE, `rpc "${this.name}": an answer of ${frame.length} bytes is larger than the caller's largest message (${caller.maxMessageSize} bytes)`);
    }
    try {
      if (!caller.trySend(frame)) await caller.send(frame);
    } catch (err) {
      debug('rpc %s: answer lost: %s', JSON.stringify(this.name), err instanceof Error ? err.message : err);
    }
  }

  /** Every running call of `caller` is cancelled with `reason` (its connection closed). */
  protected cancelAll(caller: Caller, reason: unknown): void {
    for (const r of caller.running.values()) r.cancel(reason);
  }

  /** Handles a frame from `caller`; throws a protocol error for a frame no caller sends. */
  protected onFrame(caller: Caller, frame: Buffer): void {
    const { type, id } = P.head(frame);
    if (type === P.CALL) {
      if (caller.running.size >= this.maxCalls) {
        void this.deliver(caller, P.encodeError(id, new ShmkitError(ErrorCodes.BUSY, `rpc "${this.name}": ${this.maxCalls} calls of this connection are running (maxCallsPerConnection)`)));
        return;
      }
      let call: P.CallFrame;
      try {
        call = P.decodeCall(this.codec, frame);
      } catch (err) {
        this.count('errors', 1);
        void this.deliver(caller, P.encodeError(id, err));
        return;
      }
      void this.run(caller, call);
    } else if (type === P.NOTIFY) {
      this.notifications++;
      try {
        const n = P.decodeNotify(this.codec, frame);
        const fn = this.handler(n.method);
        if (fn === null) throw new ShmkitError(ErrorCodes.UNKNOWN_METHOD, `rpc "${this.name}": no method ${JSON.stringify(n.method)}`);
        const ctx: CallContext = { signal: new AbortController().signal, deadline: undefined, method: n.method, pid: caller.pid, connection: caller.id };
        void Promise.resolve()
          .then(() => fn.call(this.handlers, ...n.args, ctx))
          .catch((err: unknown) => this.notificationFailed(n.method, err));
      } catch (err) {
        this.notificationFailed('?', err);
      }
    } else if (type === P.CANCEL) {
      const r = caller.running.get(id);
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
      const r = caller.running.get(id);
      if (r) {
        r.credit = Math.min(r.credit + n, this.maxCredit);
        r.heard = Date.now();
        const w = r.wake;
        r.wake = null;
        w?.();
      }
    } else throw P.protocolError(`unexpected frame type ${type} from a caller`);
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
    this.count('errors', 1);
    // 'error' only for those who listen (an unhandled 'error' would end the server).
    if (this.listenerCount('notificationError') > 0) this.emit('notificationError', err, method);
    else debug('rpc %s: notification %s failed: %s', JSON.stringify(this.name), method, err instanceof Error ? err.message : err);
  }

  private async run(caller: Caller, call: P.CallFrame): Promise<void> {
    const running = caller.running;
    const send = (f: Buffer): Promise<void> => this.deliver(caller, f);
    const started = performance.now();
    if (running.has(call.id)) {
      // A caller reusing the id of a running call: refused, the running one is untouched.
      await send(P.encodeError(call.id, new ShmkitError(ErrorCodes.BUSY, `rpc "${this.name}": call id ${call.id} is already running`)));
      return;
    }
    const r = new Running(call.method, call.deadline > 0 ? call.deadline : undefined, caller.pid, caller.id, call.window);
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
        if (caller.closed || frame.length > caller.maxMessageSize || !caller.trySend(frame)) await send(frame);
      }
    } catch (err) {
      failed = true;
      if (!caller.closed && !r.callerCancelled) {
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
      this.count('calls', 1);
      if (failed) this.count('errors', 1);
      this.count('latency', (performance.now() - started) * 1000);
    }
  }

  /**
   * Waits for the caller's next CREDIT. A transport that cannot see a caller die (NATS) sets
   * `creditIdleMs`: a stream whose caller sent nothing for that long is cancelled (its callers
   * send an empty CREDIT now and then while they hold a stream open).
   */
  private waitForCredit(r: Running): Promise<void> {
    return new Promise<void>((resolve) => {
      const idle = this.creditIdleMs;
      let t: Timer | null = null;
      const check = (): void => {
        const left = r.heard + idle - Date.now();
        if (left > 0) {
          t = timer(check, left);
          return;
        }
        r.cancel(new ShmkitError(ErrorCodes.PEER_GONE, `rpc "${this.name}" ${r.method}: the caller sent nothing for ${idle} ms while the stream waited for it (gone?)`));
      };
      r.wake = () => {
        t?.clear();
        resolve();
      };
      if (idle !== Infinity) check();
    });
  }

  /** How long a stream waits for a silent caller before it is cancelled; Infinity when the transport sees callers die. */
  protected creditIdleMs = Infinity;
  /** The most credit a stream holds (more is ignored): a transport whose sends never wait caps it. */
  protected maxCredit = Infinity;
  /** A stream yields to the event loop after this many items (a transport whose sends never wait sets it). */
  protected yieldEvery = Infinity;

  /** Streams `it`'s values, each only once the caller has credit for it. */
  private async pump(it: AsyncIterable<unknown>, id: number, r: Running, send: (f: Buffer) => Promise<void>): Promise<void> {
    const iterator = it[Symbol.asyncIterator]();
    let sent = 0;
    r.credit = Math.min(r.credit, this.maxCredit);
    try {
      for (;;) {
        while (r.credit <= 0 && !r.aborted) await this.waitForCredit(r);
        if (r.aborted) throw r.abortReason;
        const step = await iterator.next();
        if (step.done) break;
        if (r.aborted) throw r.abortReason;
        r.credit--;
        await send(this.encodeAnswer(P.ITEM, id, step.value));
        if (++sent % this.yieldEvery === 0) await new Promise((resolve) => setImmediate(resolve));
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

}

/** A short stand-in for an error whose ERROR frame does not fit in the connection. */
function shorten(err: unknown, tooLarge: unknown): ShmkitError {
  const what = err instanceof Error ? `${String(err.name).slice(0, 100)}: ${String(err.message).slice(0, 500)}` : 'a thrown value';
  return new ShmkitError(ErrorCodes.TOO_LARGE, `the handler's error does not fit in the connection (${what}...)`, { cause: tooLarge });
}

/**
 * serve(): an object of async methods, served to every client of a name. Each connection is read
 * by one loop; each CALL runs its handler at once (calls on one connection run concurrently and
 * answer in any order, matched by id), with a context whose signal aborts when the caller cancels,
 * its deadline passes, or its connection dies. A handler that returns an async iterable streams
 * its values, pulling the next one only while the caller has credit: a slow caller never makes the
 * server buffer. Several processes may serve one name: each listens, and each connection (so each
 * call) goes to one of them.
 */
import { debug } from '../debug';
import { ErrorCodes, invalidArg, ShmkitError } from '../errors';
import type { Connection } from '../server/connection';
import * as SL from '../server/layout';
import { Server, type ServerOptions } from '../server/server';
import { checkInt, checkObject, describe } from '../validate';
import { type Caller, CallHandler, type Counter, type Handlers, type HandlingOptions } from './handling';
import { nextFrame } from './reader';

export type { CallContext, Handlers } from './handling';

const FIELDS: Record<Counter, number> = { calls: SL.L_CALLS, errors: SL.L_ERRORS, latency: SL.L_LATENCY };

export interface ServeOptions extends Omit<ServerOptions, 'codec'>, HandlingOptions {
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

export class RpcServer extends CallHandler {
  /** The listening Server underneath (its connections, its stats). */
  readonly server: Server<Buffer>;
  private readonly spin: number;
  private readonly f64: Float64Array;
  private readonly i32: Int32Array;
  private readonly base: number;

  /** @internal */
  constructor(name: string, handlers: object, options: ServeOptions) {
    super(name, handlers, options);
    this.spin = options.spin === undefined ? -1 : checkInt('options.spin', options.spin, 0, 10_000_000);
    const { codec: _c, maxCallsPerConnection: _m, spin: _s, ...serverOptions } = options;
    this.server = Server.listen<Buffer>(name, serverOptions, (c) => void this.serveConnection(c));
    this.f64 = this.server.table.f64;
    this.i32 = this.server.table.i32;
    this.base = this.server.table.listenerBase(this.server.listener);
  }

  // Counters in this listener's slot (one writer: this process), which `shmkit ls` and `top` read.
  protected count(what: Counter, by: number): void {
    if (this.i32.length > 0) this.f64[(this.base + FIELDS[what]) >> 3]! += by;
  }
  protected inflight(by: number): void {
    if (this.i32.length > 0) Atomics.add(this.i32, (this.base + SL.L_INFLIGHT) >> 2, by);
  }

  /** Reads the connection's frames until it ends; each goes to onFrame(). */
  private async serveConnection(conn: Connection<Buffer>): Promise<void> {
    const caller: Caller = {
      running: new Map(),
      pid: conn.remotePid,
      id: conn.id,
      maxMessageSize: conn.maxMessageSize,
      get closed() {
        return conn.closed;
      },
      trySend: (frame) => conn.trySend(frame),
      send: (frame) => conn.send(frame),
    };
    conn.on('close', () => this.cancelAll(caller, new ShmkitError(ErrorCodes.PEER_GONE, `rpc "${this.name}": the caller's connection closed`)));
    try {
      for (;;) {
        let frame: Buffer;
        try {
          frame = await nextFrame(conn, this.spin, null);
        } catch (err) {
          if (err instanceof ShmkitError && err.code === ErrorCodes.CLOSED) break; // the caller ended its side, or the connection closed
          throw err;
        }
        this.onFrame(caller, frame);
      }
    } catch (err) {
      debug('rpc %s: connection %d ends: %s', JSON.stringify(this.name), conn.id, err instanceof Error ? err.message : err);
    } finally {
      conn.close();
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

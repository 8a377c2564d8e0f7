/**
 * Connection: one client's link to a server, the socket analogue. Two single-producer /
 * single-consumer channels carry it (client to server and back), made by the client under names
 * derived from the server's and unlinked as soon as the server has mapped them: whatever happens
 * afterwards, nothing of the connection stays in /dev/shm. The connection's slot in the server
 * segment records both ends (table.ts); the side that is done last frees it.
 *
 * Messages go through the connection's codec, with Channel's send/receive forms; stream() gives the
 * bytes as a stream.Duplex. The death of the other side surfaces as ERR_SHMKIT_PEER_GONE on a
 * pending receive (or a send that waits), and as a 'close' event with that error within the
 * liveness interval.
 */
import { EventEmitter } from 'node:events';
import type { Duplex, DuplexOptions } from 'node:stream';
import type { Channel, ChannelAsyncOptions, ChannelWaitOptions } from '../channel/channel';
import { ShmStream } from '../channel/stream';
import { debug } from '../debug';
import { closedError, ErrorCodes, ShmkitError } from '../errors';
import { fromToken, SELF_TOKEN, tokenAlive } from '../identity';
import { tuning } from '../wait';
import type { ServerTable } from './table';

/** @internal What a Connection is made of (server.ts and connect.ts build it). */
export interface ConnectionParts<T> {
  server: string;
  table: ServerTable;
  slot: number;
  gen: number;
  side: 'client' | 'server';
  out: Channel<T>;
  in: Channel<T>;
  /** Called once, after the connection released everything (the server forgets it; a client unmaps). */
  onClose: (conn: Connection<T>) => void;
}

export class Connection<T = Uint8Array> extends EventEmitter implements AsyncIterable<T> {
  /** The server's name. */
  readonly server: string;
  /** The connection's slot in the server (an id unique among its open connections). */
  readonly id: number;
  /** 'client' for the end connect() returned, 'server' for the end a server accepted. */
  readonly side: 'client' | 'server';
  /** The pid of the process at the other end. */
  readonly remotePid: number;
  private readonly parts: ConnectionParts<T>;
  private readonly remoteToken: bigint;
  private released = false;
  private endSeen = false;
  private timer: ReturnType<typeof setInterval> | null = null;
  private duplex: Duplex | null = null;

  /** @internal */
  constructor(parts: ConnectionParts<T>) {
    super();
    this.parts = parts;
    this.server = parts.server;
    this.id = parts.slot;
    this.side = parts.side;
    this.remoteToken = parts.side === 'client' ? parts.table.server(parts.slot) : parts.table.client(parts.slot);
    this.remotePid = fromToken(this.remoteToken).pid;
    if (parts.side === 'client') {
      // The server side is checked by its Server's sweep; a client checks its one connection.
      this.timer = setInterval(() => this.check(), tuning.livenessIntervalMs);
      this.timer.unref();
    }
  }

  private get label(): string {
    return `connection ${this.id} of server "${this.server}"`;
  }

  private assertOpen(): void {
    if (this.released) throw closedError(`${this.label}`, this.server);
  }

  /** @internal Whether the other end is this very thread (a server and a client in one event loop). */
  get sameThread(): boolean {
    return this.remoteToken === SELF_TOKEN;
  }

  /** The largest message this end can send (the connection's ring capacity sets it). */
  get maxMessageSize(): number {
    return this.parts.out.maxMessageSize;
  }

  /** Whether close() ran (or the connection closed itself when the other side died). */
  get closed(): boolean {
    return this.released;
  }

  /** Whether the other side ended its direction (end() or close()): what is queued is still readable. */
  get ended(): boolean {
    return this.released || this.parts.in.ended;
  }

  // Messages -------------------------------------------------------------------------------------

  /** Sends a message, waiting while the other side's ring is full (backpressure). Channel.send's options. */
  send(value: T, options?: ChannelAsyncOptions): Promise<void> {
    if (this.released) return Promise.reject(closedError(this.label, this.server));
    return this.parts.out.send(value, options);
  }

  /** send(), blocking the thread while it waits. */
  sendSync(value: T, options?: ChannelWaitOptions): void {
    this.assertOpen();
    this.parts.out.sendSync(value, options);
  }

  /** Sends if there is room now; false otherwise. */
  trySend(value: T): boolean {
    this.assertOpen();
    return this.parts.out.trySend(value);
  }

  /**
   * The next message, waiting without blocking the event loop. Rejects with ERR_SHMKIT_CLOSED once
   * the other side ended and everything was read, and ERR_SHMKIT_PEER_GONE if it died.
   */
  receive(options?: ChannelAsyncOptions): Promise<T> {
    if (this.released) return Promise.reject(closedError(this.label, this.server));
    return this.parts.in.receive(options);
  }

  /** receive(), blocking the thread while it waits. */
  receiveSync(options?: ChannelWaitOptions): T {
    this.assertOpen();
    return this.parts.in.receiveSync(options);
  }

  /** The next message if one is queued; undefined otherwise. */
  tryReceive(): T | undefined {
    this.assertOpen();
    return this.parts.in.tryReceive();
  }

  /** Messages until the other side ends (and everything was read). */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    this.assertOpen();
    return this.parts.in[Symbol.asyncIterator]();
  }

  /** The iteration of `for await (const m of connection)`, with receive's options on each wait. */
  iterate(options?: ChannelAsyncOptions): AsyncIterableIterator<T> {
    this.assertOpen();
    return this.parts.in.iterate(options);
  }

  /** Ends this side's direction: the other side reads what is queued, then the end. Idempotent. */
  end(): void {
    this.assertOpen();
    if (!this.parts.out.ended) this.parts.out.end();
  }

  /**
   * The connection's bytes as a stream.Duplex (the connection's codec must be 'bytes'): writes wait
   * while the ring is full, end() ends this direction, and destroying it closes the connection. One
   * per connection; do not mix it with the message methods.
   */
  stream(options?: DuplexOptions): Duplex {
    this.assertOpen();
    if (this.duplex) throw new ShmkitError(ErrorCodes.BUSY, `${this.label}: stream() was already called`, { segment: this.server });
    if (this.parts.out.codec.name !== 'bytes') {
      throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `${this.label}: stream() needs the 'bytes' codec, this connection uses '${this.parts.out.codec.name}'`, { segment: this.server });
    }
    this.duplex = ShmStream.over(this.label, this.parts.out as unknown as Channel<Uint8Array>, this.parts.in as unknown as Channel<Uint8Array>, options, () => this.close());
    return this.duplex;
  }

  // Liveness -------------------------------------------------------------------------------------

  /**
   * @internal Looks at the other side: dead, the connection closes with ERR_SHMKIT_PEER_GONE
   * (what it had sent and this side had not read is dropped, as with a reset socket); done, 'end'.
   */
  check(): void {
    if (this.released) return;
    const t = this.remoteToken;
    if (t !== SELF_TOKEN && !tokenAlive(t)) {
      const err = new ShmkitError(ErrorCodes.PEER_GONE, `${this.label}: the ${this.side === 'client' ? 'server' : 'client'} process (pid ${this.remotePid}) died`, { segment: this.server });
      debug('%s: peer died', this.label);
      this.destroy(err);
      return;
    }
    if (!this.endSeen && this.parts.in.ended) {
      this.endSeen = true;
      this.emit('end');
    }
  }

  // Lifetime -------------------------------------------------------------------------------------

  /**
   * Ends this side's direction (the other side still reads what was queued), releases the
   * connection and emits 'close'. Idempotent.
   */
  close(): void {
    this.destroy(undefined);
  }

  /** close(), with the error 'close' carries. */
  private destroy(error: ShmkitError | undefined): void {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    const p = this.parts;
    try {
      if (!p.out.closed && !p.out.ended) p.out.end();
    } catch {
      // A loan is outstanding, or the segment is damaged: closing goes on.
    }
    p.out.close();
    p.in.close();
    try {
      if (p.table.segment.int32.length > 0) p.table.finish(p.slot, p.gen, p.side);
    } finally {
      p.onClose(this);
      if (this.duplex && !this.duplex.destroyed) this.duplex.destroy(error);
      process.nextTick(() => this.emit('close', error));
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  /** Pending waits of this connection stop keeping the process alive. Returns this. */
  unref(): this {
    this.parts.in.unref();
    this.parts.out.unref();
    return this;
  }

  /** Undoes unref(). Returns this. */
  ref(): this {
    this.parts.in.ref();
    this.parts.out.ref();
    return this;
  }

  hasRef(): boolean {
    return this.parts.in.hasRef();
  }
}

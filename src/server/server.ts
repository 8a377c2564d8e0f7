/**
 * Server: accepts connections by name, the node:net server analogue. The server segment (kind 19)
 * holds listener slots (one per listening handle: several processes may serve one name, and each
 * connection is accepted by one of them) and connection slots, whose state machine is in table.ts
 * and docs/design.md ("Servers and connections"). A client claims a slot, makes the connection's
 * two channels and offers it; a listener sleeping on the OFFERS word wakes, opens the channels,
 * and answers.
 *
 * A listener runs one accept loop (an async wait on OFFERS: no thread, no timer per client) and
 * one sweep per liveness interval: its connections whose client died close with
 * ERR_SHMKIT_PEER_GONE, and slots left by dead clients are freed.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { Channel } from '../channel/channel';
import { type Codec, type CodecName, resolveCodec } from '../codec/codec';
import { debug } from '../debug';
import { ErrorCodes, ShmkitError } from '../errors';
import { Handle } from '../handle';
import { held, SELF_TOKEN, tokenAlive } from '../identity';
import { openNamed } from '../open';
import { Kind, type OpenOptions, Segment } from '../segment';
import { parseMode } from '../sync/primitive';
import { parseTrust } from '../trust';
import { checkInt, checkObject } from '../validate';
import { Deadline, tuning } from '../wait';
import { checkName, MAX_BASE_NAME_LENGTH, objectName, SHM_DIR } from '../naming';
import { WAITING } from '../flag-word';
import { Connection } from './connection';
import * as L from './layout';
import { ServerTable } from './table';

export interface ServerOptions<T = Uint8Array> extends OpenOptions {
  /** Connection slots: connections open at once, over all listeners (1 to 4096). Default 256. Fixed at creation. */
  maxConnections?: number;
  /** Connections offered and not yet accepted that the server lets wait (1 to maxConnections). Default 64. Fixed at creation. */
  backlog?: number;
  /** Bytes of each direction's ring of a connection (power of two, 1 KiB to 1 GiB). Default 64 KiB. Fixed at creation. */
  capacity?: number;
  /** Listener slots: processes (or handles) that may serve the name at once (1 to 64). Default 16. Fixed at creation. */
  maxListeners?: number;
  /** Permission bits of the server segment. Default 0o600. */
  mode?: number;
  /** The codec of this listener's connections: 'bytes' (default), 'utf8', 'json', 'jsonb', 'structured', or a Codec. */
  codec?: CodecName | Codec<T>;
}

export interface ServerStats {
  /** This listener's slot. */
  listener: number;
  /** Connections this listener accepted, and has open now. */
  accepted: number;
  connections: number;
  /** Listeners of the name that live and accept, this one included while it listens. */
  listeners: number;
  /** Connection slots of the name in use, by any listener (or being offered). */
  slotsInUse: number;
  maxConnections: number;
}

export class Server<T = Uint8Array> extends Handle implements AsyncIterable<Connection<T>> {
  readonly maxConnections: number;
  readonly backlog: number;
  readonly capacity: number;
  readonly maxListeners: number;
  /** This handle's listener slot. */
  readonly listener: number;
  /** @internal */
  readonly table: ServerTable;
  private readonly codec: CodecName | Codec<T> | undefined;
  private readonly conns = new Set<Connection<T>>();
  private readonly queue: Connection<T>[] = [];
  private readonly takers: { resolve: (r: IteratorResult<Connection<T>>) => void; reject: (e: unknown) => void }[] = [];
  private readonly stop = new AbortController();
  private readonly sweepTimer: ReturnType<typeof setInterval>;
  private closing = false;
  private closedPromise: Promise<void> | null = null;
  private resolveClosed: (() => void) | null = null;

  private constructor(segment: Segment, p: L.ServerParams, codec: CodecName | Codec<T> | undefined) {
    super(segment, `server "${segment.name}"`);
    this.maxConnections = p.maxConnections;
    this.backlog = p.backlog;
    this.capacity = p.capacity;
    this.maxListeners = p.maxListeners;
    this.codec = codec;
    this.table = new ServerTable(segment, p, this.errors.label);
    const slot = this.table.claimListener();
    if (slot < 0) throw this.errors.busy(`all ${p.maxListeners} listener slots are held by live listeners (create the server with a larger maxListeners)`);
    this.listener = slot;
    this.sweepTimer = setInterval(() => this.sweep(), tuning.livenessIntervalMs);
    this.sweepTimer.unref();
    void this.acceptLoop();
  }

  /**
   * Listens on `name`: creates the server, or joins the listeners of an existing one (its
   * parameters then come from it). `onConnection`, if given, is added as a 'connection' listener.
   * Without 'connection' listeners, accepted connections wait for `for await (const c of server)`.
   */
  static listen<T = Uint8Array>(name: string, options?: ServerOptions<T>, onConnection?: (connection: Connection<T>) => void): Server<T> {
    checkName(name, 'name', MAX_BASE_NAME_LENGTH);
    const o = checkObject('options', options);
    const trust = parseTrust(o.trustedOwners);
    const maxConnections = o.maxConnections === undefined ? L.DEFAULT_CONNECTIONS : checkInt('options.maxConnections', o.maxConnections, 1, L.MAX_CONNECTIONS);
    const p: L.ServerParams = {
      maxConnections,
      backlog: o.backlog === undefined ? Math.min(L.DEFAULT_BACKLOG, maxConnections) : checkInt('options.backlog', o.backlog, 1, maxConnections),
      capacity: o.capacity === undefined ? L.DEFAULT_CAPACITY : pow2('options.capacity', o.capacity),
      maxListeners: o.maxListeners === undefined ? L.DEFAULT_LISTENERS : checkInt('options.maxListeners', o.maxListeners, 1, L.MAX_LISTENERS),
    };
    if (onConnection !== undefined && typeof onConnection !== 'function') throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, 'onConnection: must be a function', { argument: 'onConnection' });
    const codec = o.codec as CodecName | Codec<T> | undefined;
    // The codec is checked now, by a throwaway plan, rather than at the first connection.
    if (codec !== undefined) resolveCodec(codec);
    const spec = { kind: Kind.SERVER, size: L.dataSize(p), minSize: 0, mode: parseMode(o), trust, initialize: (s: Segment) => L.writeParams(s, p) };
    let server = openNamed('openOrCreate', name, spec, (seg) => new Server<T>(seg, seg.created ? p : L.readParams(seg), codec));
    // The last listener of the object we opened may have removed its name meanwhile (it closed):
    // then we listen where nobody can connect. Open (or create) what the name refers to now.
    for (let tries = 0; !server.stillNamed(); tries++) {
      server.abandon();
      if (tries === 8) throw new ShmkitError(ErrorCodes.NOT_FOUND, `server "${name}": its name keeps being removed while listening`, { segment: name });
      server = openNamed('openOrCreate', name, spec, (seg) => new Server<T>(seg, seg.created ? p : L.readParams(seg), codec));
    }
    if (onConnection) server.on('connection', onConnection);
    debug('server %s: listening in slot %d', JSON.stringify(name), server.listener);
    return server;
  }

  /** Removes the server's name: clients can no longer connect; listeners and connections go on. */
  static unlink(name: string): boolean {
    return Segment.unlink(name);
  }

  /**
   * Whether the server's name still refers to this handle's object: the name may have been
   * removed, and another server created under it since (its random instance id differs).
   */
  private stillNamed(): boolean {
    try {
      const fd = openSync(join(SHM_DIR, objectName(this.name)), 'r');
      try {
        const id = Buffer.alloc(8);
        if (readSync(fd, id, 0, 8, L.INSTANCE) !== 8) return false;
        return id.equals(Buffer.from(this.segment.buffer, L.INSTANCE, 8));
      } finally {
        closeSync(fd);
      }
    } catch {
      return false;
    }
  }

  /** Whether this handle still accepts connections (false once close() was called). */
  get listening(): boolean {
    return !this.closing && !this.closed;
  }

  // Accepting ------------------------------------------------------------------------------------

  /** A slot offered to this listener (or to any, or to a listener that cannot take it), or -1. */
  private findOffer(): number {
    const t = this.table;
    for (let i = 0; i < this.maxConnections; i++) {
      if (L.stateOf(t.state(i)) !== L.OFFERED) continue;
      const to = t.target(i);
      if (to !== -1 && to !== this.listener && t.listenerAccepting(to)) continue;
      if (held(t.server(i))) continue; // another listener is taking it
      return i;
    }
    return -1;
  }

  private async acceptLoop(): Promise<void> {
    const o = { spin: 0, signal: this.stop.signal };
    const forever = new Deadline(Infinity);
    const word = this.table.offers.word;
    const i32 = this.table.i32;
    // The OFFERS counter when the slots were last scanned: a wake-up that did not move it (the
    // thread's doorbell rings for every wait of the thread) costs a load, not a scan.
    let scanned = -1;
    try {
      for (;;) {
        await this.table.offers.wait(o, forever, () => this.closing || (Atomics.load(i32, word) & ~WAITING) !== scanned, null, 'accept');
        if (this.closing) return;
        // Read before the scan: an offer made after this read moves the counter again.
        scanned = Atomics.load(i32, word) & ~WAITING;
        this.acceptOffers();
      }
    } catch (err) {
      if (this.closing || this.closed) return; // close() stopped the wait
      debug('server %s: accept loop failed: %s', JSON.stringify(this.name), err);
      // The server segment was damaged or truncated: this listener stops. 'error' only for those
      // who listen for it (an unhandled 'error' would end the process).
      if (this.listenerCount('error') > 0) this.emit('error', err);
      void this.close();
    }
  }

  /** Accepts every offer this listener may take now. */
  private acceptOffers(): void {
    for (let i = this.findOffer(); i >= 0 && !this.closing; i = this.findOffer()) this.acceptOne(i);
  }

  /** Takes the offer in slot `i`: claims it, opens the client's channels, answers. */
  private acceptOne(i: number): void {
    const t = this.table;
    const w = t.state(i);
    if (L.stateOf(w) !== L.OFFERED) return;
    const gen = L.genOf(w);
    const srv = t.server(i);
    if (held(srv)) return;
    if (!t.casServer(i, srv, SELF_TOKEN)) return; // another listener won
    if (!t.casState(i, w, L.word(gen, L.ACCEPTING))) {
      t.casServer(i, SELF_TOKEN, 0n); // the client withdrew (or a new generation began)
      return;
    }
    Atomics.store(t.i32, (t.connBase(i) + L.C_LISTENER) >> 2, this.listener);
    const client = t.client(i);
    const [cName, sName] = L.ringNames(this.name, i, gen);
    let inbound: Channel<T> | null = null;
    let out: Channel<T> | null = null;
    try {
      if (!held(client)) throw new Error('the client died');
      const open = this.codec === undefined ? {} : { codec: this.codec };
      inbound = Channel.open<T>(cName, open);
      out = Channel.open<T>(sName, open);
      // Both channels are the client's, made for this generation: single producer and consumer,
      // the client already in its roles.
      if (inbound.multiProducer || inbound.multiConsumer || out.multiProducer || out.multiConsumer) throw new Error('the connection channels are not single-producer / single-consumer');
      if (inbound.capacity !== t.params.capacity || out.capacity !== t.params.capacity) throw new Error(`the connection channels' capacity is not the server's ${t.params.capacity} bytes`);
      inbound.claim('consumer');
      out.claim('producer');
      // Both ends have them mapped now: no name needs to refer to them, whoever dies next.
      Channel.unlink(cName);
      Channel.unlink(sName);
    } catch (err) {
      inbound?.close();
      out?.close();
      debug('server %s: refusing connection slot %d: %s', JSON.stringify(this.name), i, err instanceof Error ? err.message : err);
      this.refuse(i, gen);
      return;
    }
    if (!t.casState(i, L.word(gen, L.ACCEPTING), L.word(gen, L.ACCEPTED))) {
      inbound.close();
      out.close();
      return; // the slot changed under us: shared memory was damaged; nothing of it is ours
    }
    t.announceAnswer();
    const b = t.listenerBase(this.listener);
    t.f64[(b + L.L_ACCEPTED) >> 3]! += 1;
    Atomics.add(t.i32, (b + L.L_CONNECTIONS) >> 2, 1);
    const conn = new Connection<T>({
      server: this.name, table: t, slot: i, gen, side: 'server', out, in: inbound,
      onClose: (c) => this.forget(c),
    });
    this.conns.add(conn);
    // The client gave up while we accepted (timeout, abort): its done bit is set.
    if ((t.done(i) & L.CLIENT_DONE) !== 0) {
      conn.close();
      return;
    }
    this.deliver(conn);
  }

  /**
   * Refuses the offer in slot `i` (state ACCEPTING, ours): our side is done with it, so whichever
   * of the client and us finishes second frees it. A client that already gave up (or died) leaves
   * that to us; otherwise it gets REFUSED and frees the slot itself.
   */
  private refuse(i: number, gen: number): void {
    const t = this.table;
    const old = Atomics.or(t.i32, (t.connBase(i) + L.C_DONE) >> 2, L.SERVER_DONE);
    const client = t.client(i);
    if ((old & L.CLIENT_DONE) !== 0 || !held(client)) {
      if (t.freeGeneration(i, gen, client)) for (const n of L.ringNames(this.name, i, gen)) Channel.unlink(n);
      return;
    }
    if (t.casState(i, L.word(gen, L.ACCEPTING), L.word(gen, L.REFUSED))) t.announceAnswer();
  }

  private deliver(conn: Connection<T>): void {
    const taker = this.takers.shift();
    if (taker) taker.resolve({ value: conn, done: false });
    else if (this.listenerCount('connection') > 0) this.emit('connection', conn);
    else this.queue.push(conn);
  }

  private forget(conn: Connection<T>): void {
    if (!this.conns.delete(conn)) return;
    if (this.segment.int32.length > 0) Atomics.sub(this.table.i32, (this.table.listenerBase(this.listener) + L.L_CONNECTIONS) >> 2, 1);
    const q = this.queue.indexOf(conn);
    if (q >= 0) this.queue.splice(q, 1);
    if (this.closing && this.conns.size === 0) this.finishClose();
  }

  /** Accepted connections, one at a time, until close(). */
  [Symbol.asyncIterator](): AsyncIterableIterator<Connection<T>> {
    const next = (): Promise<IteratorResult<Connection<T>>> => {
      const c = this.queue.shift();
      if (c) return Promise.resolve({ value: c, done: false });
      if (this.closing || this.closed) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve, reject) => this.takers.push({ resolve, reject }));
    };
    const it: AsyncIterableIterator<Connection<T>> = {
      next,
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  // Liveness -------------------------------------------------------------------------------------

  /**
   * Once per liveness interval: this listener's connections look at their clients, and slots left
   * by dead clients that no live server holds are freed (their channels' names unlinked).
   */
  private sweep(): void {
    if (this.closed) return;
    for (const c of [...this.conns]) c.check();
    // Offers made to a listener that died (not closed: nothing moved OFFERS) are taken here.
    if (!this.closing) this.acceptOffers();
    const t = this.table;
    // One liveness check per token per sweep: a client with many connections costs one.
    const seen = new Map<bigint, boolean>();
    const alive = (token: bigint): boolean => {
      if (token === 0n) return false;
      if (token === SELF_TOKEN) return true;
      let a = seen.get(token);
      if (a === undefined) {
        a = tokenAlive(token);
        seen.set(token, a);
      }
      return a;
    };
    for (let i = 0; i < this.maxConnections; i++) {
      const client = t.client(i);
      if (client === 0n) continue;
      const w = t.state(i);
      // Our own open connections look at their clients themselves (check() above).
      if (L.stateOf(w) === L.ACCEPTED && t.server(i) === SELF_TOKEN && (t.done(i) & L.SERVER_DONE) === 0) continue;
      if (!t.abandoned(i, alive)) continue;
      if (L.stateOf(w) === L.FREE) {
        // A freer died between its two steps: only the client token is left to clear.
        Atomics.compareExchange(t.i64, (t.connBase(i) + L.C_CLIENT) >> 3, client, 0n);
        continue;
      }
      if (!t.free(i, w, client)) continue; // another party freed it first
      for (const n of L.ringNames(this.name, i, L.genOf(w))) Channel.unlink(n);
      debug('server %s: freed abandoned connection slot %d', JSON.stringify(this.name), i);
    }
  }

  // Statistics -----------------------------------------------------------------------------------

  stats(): ServerStats {
    this.assertOpen();
    const t = this.table;
    const b = t.listenerBase(this.listener);
    let inUse = 0;
    for (let i = 0; i < this.maxConnections; i++) if (t.client(i) !== 0n) inUse++;
    return {
      listener: this.listener,
      accepted: t.f64[(b + L.L_ACCEPTED) >> 3]!,
      connections: this.conns.size,
      listeners: t.acceptingListeners().length,
      slotsInUse: inUse,
      maxConnections: this.maxConnections,
    };
  }

  /** The open connections this listener accepted. */
  get connections(): ReadonlySet<Connection<T>> {
    return this.conns;
  }

  // Lifetime -------------------------------------------------------------------------------------

  /**
   * Stops accepting: new connections go to the name's other listeners (if there are none, its name
   * is removed, and connect() fails). Connections already open go on; the promise resolves, and
   * 'close' is emitted, once the last of them closed. Idempotent.
   */
  close(): Promise<void> {
    if (this.closedPromise) return this.closedPromise;
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    this.closing = true;
    this.stop.abort();
    if (this.segment.int32.length > 0) {
      this.table.markClosing(this.listener);
      // Nobody else accepts: the name goes, as a socket file does (unless it already names another
      // server). Offers already made fail.
      if (this.table.acceptingListeners().length === 0 && this.stillNamed()) Segment.unlink(this.name);
      this.table.announceOffer(); // other listeners take what was offered to us
      this.table.announceAnswer(); // waiting clients look again (their listener is gone)
    }
    for (const t of this.takers.splice(0)) t.resolve({ value: undefined, done: true });
    for (const c of this.queue.splice(0)) c.close(); // accepted, never handed out
    if (this.conns.size === 0) this.finishClose();
    return this.closedPromise;
  }

  /** Closes every open connection of this listener now (their peers see the end). */
  closeAllConnections(): void {
    for (const c of [...this.conns]) c.close();
  }

  /** Gives up a handle that never listened for real (listen()'s retry): no events, nothing unlinked. */
  private abandon(): void {
    this.closing = true;
    this.stop.abort();
    clearInterval(this.sweepTimer);
    this.table.releaseListener(this.listener);
    this.segment.close();
  }

  private finishClose(): void {
    clearInterval(this.sweepTimer);
    if (this.segment.int32.length > 0) this.table.releaseListener(this.listener);
    this.dispose(); // emits 'close' on the next tick
    this.resolveClosed?.();
  }

  protected release(): void {
    this.segment.close();
  }

  /** Closes every connection and the server at once. */
  override [Symbol.dispose](): void {
    void this.close();
    this.closeAllConnections();
  }

  /** Stops accepting and waits for the open connections to close. */
  override [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  protected override inspectFields(): Record<string, unknown> {
    return { name: this.name, listener: this.listener, listening: this.listening, connections: this.conns.size };
  }
}

function pow2(name: string, v: unknown): number {
  const n = checkInt(name, v, L.MIN_CAPACITY, L.MAX_CAPACITY);
  if ((n & (n - 1)) !== 0) throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `${name}: must be a power of two, got ${n}`, { argument: name });
  return n;
}

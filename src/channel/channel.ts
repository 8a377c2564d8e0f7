/**
 * Channel: a message queue in a shared-memory segment. Variable-length messages, any number of
 * producers and consumers across processes (or a declared single producer / single consumer for
 * the fast path), each message delivered to exactly one consumer, in order per producer.
 *
 * A channel is a byte ring (ring/: the record format, one definition of a valid record, the
 * producer and consumer cursors) with a parameter block (layout.ts), a peer table (peers.ts), two
 * flag words to wait on (flag-word.ts), and a codec plan (codec/plan.ts). This file wires them and
 * holds the public API; the producer side is sender.ts, the consumer side receiver.ts, and
 * at-least-once consumers at-least-once.ts. The protocol is in docs/design.md ("Channels").
 */
import { ErrorCodes, invalidArg } from '../errors';
import type { Codec } from '../codec/codec';
import { planFor } from '../codec/plan';
import { debug } from '../debug';
import { Handle } from '../handle';
import { openNamed, type OpenHow } from '../open';
import { DEPARTED, PeerTable, storedPeers } from '../peers';
import type { Attached } from '../peer-watch';
import { Ring } from '../ring/ring';
import { Kind, Segment } from '../segment';
import { Mutex } from '../sync/mutex';
import { parseTrust } from '../trust';
import { resolveCodec } from '../codec/codec';
import { checkObject, describe } from '../validate';
import { tuning } from '../wait';
import type { WaitTarget } from '../waitset/target';
import { AckedReceiver } from './at-least-once';
import * as L from './layout';
import { parseChannelWait, parseCreate } from './options';
import type { ChannelParts } from './parts';
import { ChannelReceiver } from './receiver';
import { ChannelSender } from './sender';
import type { ChannelAsyncOptions, ChannelOptions, ChannelStats, ChannelWaitOptions, Delivery, Loan, OpenChannelOptions, PeerInfo, ReceivedView, TryReceiveResult } from './types';

export type { ChannelAsyncOptions, ChannelOptions, ChannelStats, ChannelWaitOptions, Delivery, Loan, OpenChannelOptions, PeerInfo, ReceivedView, TryReceiveResult } from './types';

export class Channel<T = unknown> extends Handle implements AsyncIterable<T> {
  readonly capacity: number;
  readonly maxMessageSize: number;
  readonly multiProducer: boolean;
  readonly multiConsumer: boolean;
  /** 'at-least-once' channels: take()/ack(), redelivery after a consumer's death. */
  readonly atLeastOnce: boolean;
  readonly codec: Codec<T>;

  private readonly ring: Ring;
  private readonly peers: PeerTable;
  private readonly tx: ChannelSender<T>;
  private readonly rx: ChannelReceiver<T>;
  /** A loan or a view of this handle is outstanding (see parts.ts). */
  private readonly held = { loan: false, view: false };

  private constructor(segment: Segment, params: L.ChannelParams, codec: Codec<T>) {
    super(segment, `channel "${segment.name}"`);
    this.capacity = params.capacity;
    this.maxMessageSize = params.maxMessageSize;
    this.multiProducer = params.multiProducer;
    this.multiConsumer = params.multiConsumer;
    this.atLeastOnce = params.atLeastOnce;
    this.codec = codec;
    this.ring = new Ring(segment, L.ringPlace(params), this.errors.label);
    this.peers = new PeerTable(segment.int32, segment.bigint64, segment.dataOffset + L.PEERS, L.PEER_SLOTS);
    const parts: ChannelParts<T> = {
      segment,
      errors: this.errors,
      params,
      ring: this.ring,
      plan: planFor(codec),
      peers: this.peers,
      producerLock: Mutex.at(segment, L.PRODUCER_LOCK),
      consumerLock: Mutex.at(segment, L.CONSUMER_LOCK),
      held: this.held,
      life: this.life,
      assertOpen: () => this.assertOpen(),
    };
    this.tx = new ChannelSender(parts);
    this.rx = new ChannelReceiver(parts);
    this.peers.register();
  }

  // 'peergone' -----------------------------------------------------------------------------------

  private peerTimer: ReturnType<typeof setInterval> | null = null;
  private readonly goneSeen = [false, false];

  /**
   * Emits 'peergone' with 'producer' (or 'consumer') once every producer (consumer) other than this
   * handle is gone, dead or closed, after at least one had attached; again after a new one attached
   * and went too. Checked once per liveness interval while a listener is registered (an unref'd
   * timer: it never keeps the process alive).
   */
  private checkPeers(): void {
    if (this.closed || this.listenerCount('peergone') === 0) return this.stopPeerWatch();
    for (const [i, role, label] of [[0, L.ROLE_PRODUCER, 'producer'], [1, L.ROLE_CONSUMER, 'consumer']] as const) {
      const gone = this.peers.allGone(role);
      if (gone && !this.goneSeen[i]) {
        this.goneSeen[i] = true;
        debug('channel %s: every %s is gone', JSON.stringify(this.name), label);
        this.emit('peergone', label);
        if (this.closed) return this.stopPeerWatch(); // a listener closed the handle
      } else if (!gone) this.goneSeen[i] = false;
    }
  }

  /** Starts the watch when a 'peergone' listener arrives (it stops itself once none is left). */
  private watch(event: string | symbol): void {
    if (event === 'peergone' && this.peerTimer === null && !this.closed) {
      this.peerTimer = setInterval(() => this.checkPeers(), tuning.livenessIntervalMs);
      this.peerTimer.unref();
    }
  }

  /** 'peergone' (see checkPeers) with the role whose peers are all gone; 'close' once released. */
  override on(event: 'peergone', listener: (role: 'producer' | 'consumer') => void): this;
  override on(event: 'close', listener: () => void): this;
  override on(event: string | symbol, listener: (...args: any[]) => void): this;
  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    super.on(event, listener);
    this.watch(event);
    return this;
  }

  override addListener(event: string | symbol, listener: (...args: any[]) => void): this {
    return this.on(event, listener);
  }

  override once(event: 'peergone', listener: (role: 'producer' | 'consumer') => void): this;
  override once(event: 'close', listener: () => void): this;
  override once(event: string | symbol, listener: (...args: any[]) => void): this;
  override once(event: string | symbol, listener: (...args: any[]) => void): this {
    super.once(event, listener);
    this.watch(event);
    return this;
  }

  override prependListener(event: string | symbol, listener: (...args: any[]) => void): this {
    super.prependListener(event, listener);
    this.watch(event);
    return this;
  }

  override prependOnceListener(event: string | symbol, listener: (...args: any[]) => void): this {
    super.prependOnceListener(event, listener);
    this.watch(event);
    return this;
  }

  private stopPeerWatch(): void {
    if (this.peerTimer !== null) clearInterval(this.peerTimer);
    this.peerTimer = null;
  }

  // Creation -------------------------------------------------------------------------------------

  private static named<T>(how: OpenHow, name: string, options: unknown): Channel<T> {
    if (how === 'open') {
      const o = checkObject('options', options);
      const codec = resolveCodec(o.codec) as Codec<T>;
      // The size is checked by readParams (exactly RING + capacity, else CORRUPT).
      const spec = { kind: Kind.CHANNEL, size: 0, mode: 0o600, trust: parseTrust(o.trustedOwners) };
      return openNamed(how, name, spec, (seg) => new Channel<T>(seg, L.readParams(seg), codec));
    }
    const { params, mode, codec, trust } = parseCreate(options);
    // An existing channel keeps its own capacity: readParams checks its size, not these options.
    const spec = { kind: Kind.CHANNEL, size: L.RING + params.capacity, minSize: 0, mode, trust, initialize: (s: Segment) => L.writeParams(s, params) };
    return openNamed(how, name, spec, (seg) => new Channel<T>(seg, seg.created ? params : L.readParams(seg), codec as Codec<T>));
  }

  /** Creates a channel; ERR_SHMKIT_EXISTS if the name is taken. */
  static create<T = unknown>(name: string, options?: ChannelOptions<T>): Channel<T> {
    return Channel.named<T>('create', name, options);
  }

  /** Opens an existing channel. Capacity and modes come from the channel; the codec is yours. */
  static open<T = unknown>(name: string, options?: OpenChannelOptions<T>): Channel<T> {
    return Channel.named<T>('open', name, options);
  }

  /** Opens the channel, or creates it with `options` if it does not exist. */
  static openOrCreate<T = unknown>(name: string, options?: ChannelOptions<T>): Channel<T> {
    return Channel.named<T>('openOrCreate', name, options);
  }

  /** Removes the channel's name. Returns false if it did not exist. */
  static unlink(name: string): boolean {
    return Segment.unlink(name);
  }

  unlink(): boolean {
    return Segment.unlink(this.name);
  }

  // State ----------------------------------------------------------------------------------------

  /**
   * Whether the channel was ended (end(), by any process); messages may still be queued. After
   * close(), what this handle last saw.
   */
  get ended(): boolean {
    if (this.closed) return this.endedAtClose;
    return this.ring.closed;
  }

  stats(): ChannelStats {
    this.assertOpen();
    const r = this.ring;
    const f = r.f64;
    const d = (off: number): number => f[(this.segment.dataOffset + off) >> 3]!;
    const sent = d(L.SENT);
    const received = d(L.RECEIVED);
    return {
      sent,
      sentBytes: d(L.SENT_BYTES),
      received,
      receivedBytes: d(L.RECEIVED_BYTES),
      sendWaits: d(L.SEND_WAITS),
      receiveWaits: d(L.RECEIVE_WAITS),
      depth: Math.max(0, sent - received),
      depthBytes: Math.min(this.capacity, (r.loadTail() - r.loadHead()) >>> 0),
      capacity: this.capacity,
      ended: r.closed,
      producers: this.peers.liveOthers(L.ROLE_PRODUCER) + (this.tx.claimed ? 1 : 0),
      consumers: this.peers.liveOthers(L.ROLE_CONSUMER) + (this.rx.claimed ? 1 : 0),
    };
  }

  /** The processes attached to this channel, their roles, and whether they live. */
  peerList(): PeerInfo[] {
    this.assertOpen();
    return this.peers.list().map((s) => ({ pid: s.pid, producer: (s.roles & L.ROLE_PRODUCER) !== 0, consumer: (s.roles & L.ROLE_CONSUMER) !== 0, alive: s.alive, self: s.self }));
  }

  /**
   * Declares this handle's role now instead of at its first send/receive: peers see it at once
   * (so they can tell later if it dies: failIfPeerGone), and in a single-producer/consumer channel
   * the role is taken now (ERR_SHMKIT_BUSY if a live holder has it).
   */
  claim(role: 'producer' | 'consumer'): void {
    this.assertOpen();
    if (role === 'producer') this.tx.claim();
    else if (role === 'consumer') this.rx.claim();
    else throw invalidArg('role', `must be 'producer' or 'consumer', got ${describe(role)}`);
  }

  // Sending --------------------------------------------------------------------------------------

  /**
   * Sends, waiting while the ring is full (backpressure) without blocking the event loop. Takes
   * `timeout`, `signal` and `failIfPeerGone`. A send that rejects (timeout, abort, end, peer gone)
   * never published its message: the error has `published: false`.
   */
  send(value: T, options?: ChannelAsyncOptions): Promise<void> {
    return this.tx.send(value, options);
  }

  /** Like send(), blocking the thread while it waits. ERR_SHMKIT_TIMEOUT after `timeout` ms. */
  sendSync(value: T, options?: ChannelWaitOptions): void {
    this.tx.sendSync(value, options);
  }

  /** Sends without waiting. Returns false if the ring is full. */
  trySend(value: T): boolean {
    return this.tx.trySend(value);
  }

  /**
   * Zero-copy send: reserves `size` bytes in the ring (waiting for space like send()), for you to
   * fill in place, then commit(). In a multi-producer channel other producers wait until you commit
   * or abort, so keep loans short.
   */
  loan(size: number, options?: ChannelAsyncOptions): Promise<Loan> {
    return this.tx.loan(size, options);
  }

  /** Like loan(), blocking the thread while it waits for space. */
  loanSync(size: number, options?: ChannelWaitOptions): Loan {
    return this.tx.loanSync(size, options);
  }

  /** A loan if `size` bytes are free now (and, multi-producer, the producer lock is free); else null. */
  tryLoan(size: number): Loan | null {
    return this.tx.tryLoan(size);
  }

  /**
   * Ends the channel for everyone: further sends fail with ERR_SHMKIT_CLOSED; receivers get what
   * is queued, then the end. Never waits: a send in progress in another process either published
   * its message before the end (it is delivered) or fails with ERR_SHMKIT_CLOSED (nothing of it
   * is delivered). This handle stays usable for receiving; close() releases it.
   */
  end(): void {
    this.assertOpen();
    if (this.held.loan) throw this.errors.busy('a loan is outstanding; commit or abort it before end()');
    this.ring.close();
    debug('channel %s ended by pid %d', JSON.stringify(this.name), process.pid);
  }

  // Receiving ------------------------------------------------------------------------------------

  /**
   * Receives, waiting while empty without blocking the event loop. Takes `timeout`, `signal` and
   * `failIfPeerGone`. Rejects with ERR_SHMKIT_CLOSED once the channel is ended and drained.
   */
  receive(options?: ChannelAsyncOptions): Promise<T> {
    return this.rx.receive(options);
  }

  /** Like receive(), blocking the thread while it waits. */
  receiveSync(options?: ChannelWaitOptions): T {
    return this.rx.receiveSync(options);
  }

  /** Receives a message if one is queued; undefined if none (or the channel ended). */
  tryReceive(): T | undefined {
    return this.rx.tryReceive();
  }

  /**
   * Like tryReceive(), and says why nothing was received: `{ ok: true, value }`, or
   * `{ ok: false, reason }` where reason is 'empty' (nothing queued now), 'ended' (closed and
   * drained: nothing will ever come) or 'busy' (another consumer holds the consumer lock, e.g.
   * with a view, so a queued message cannot be taken now; multi-consumer channels only).
   */
  tryReceiveResult(): TryReceiveResult<T> {
    return this.rx.tryReceiveResult();
  }


  /**
   * Receives up to `max` messages at once, waiting for at least one. One wake-up and one head
   * update cover the batch. Returns [] once the channel is ended and drained.
   */
  receiveBatchSync(max: number, options?: ChannelWaitOptions): T[] {
    return this.rx.receiveBatchSync(max, options);
  }

  receiveBatch(max: number, options?: ChannelAsyncOptions): Promise<T[]> {
    return this.rx.receiveBatch(max, options);
  }

  /**
   * Zero-copy receive: returns a view of the next message inside shared memory, valid until
   * release(). The message is consumed by release(); if this process dies before, it stays queued
   * for the next consumer. In a multi-consumer channel other consumers wait until release().
   * Returns null if the channel is empty (tryReceiveView) or ended.
   */
  tryReceiveView(): ReceivedView | null {
    return this.rx.tryReceiveView();
  }

  /** Waits for a message and returns a zero-copy view of it (see tryReceiveView). Null once ended. */
  receiveViewSync(options?: ChannelWaitOptions): ReceivedView | null {
    return this.rx.receiveViewSync(options);
  }

  receiveView(options?: ChannelAsyncOptions): Promise<ReceivedView | null> {
    return this.rx.receiveView(options);
  }

  /**
   * Copies the next message's bytes (as sent: the codec is not applied) into `target` at offset 0
   * and returns their count; undefined if the channel is empty or ended. Nothing is allocated, so
   * a loop that reuses one buffer receives large messages at memcpy speed. A message longer than
   * `target` throws ERR_SHMKIT_TOO_LARGE and stays queued.
   */
  tryReceiveInto(target: Uint8Array): number | undefined {
    return this.rx.tryReceiveInto(target);
  }

  /** Waits for a message and copies it into `target` (see tryReceiveInto). ERR_SHMKIT_CLOSED once ended. */
  receiveIntoSync(target: Uint8Array, options?: ChannelWaitOptions): number {
    return this.rx.receiveIntoSync(target, options);
  }

  receiveInto(target: Uint8Array, options?: ChannelAsyncOptions): Promise<number> {
    return this.rx.receiveInto(target, options);
  }

  /**
   * Iterates messages until the channel is ended and drained. A plain iterator object rather than
   * an async generator: a queued message costs one resolved promise, not a generator round trip.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this.rx.iterator();
  }

  /**
   * `for await (const m of channel.iterate({ signal, failIfPeerGone, timeout }))`: the iteration
   * of `for await (const m of channel)`, where each step that has to wait honours the options as
   * receive does: an abort, a step waiting longer than `timeout`, or (with `failIfPeerGone`)
   * every producer gone ends the loop with ABORT_ERR, ERR_SHMKIT_TIMEOUT or
   * ERR_SHMKIT_PEER_GONE.
   */
  iterate(options?: ChannelAsyncOptions): AsyncIterableIterator<T> {
    return this.rx.iterator(options);
  }

  /** @internal Who is attached, by peer-table slot (Event.watch). */
  attachments(): Map<number, Attached> {
    this.assertOpen();
    const m = new Map<number, Attached>();
    for (const s of storedPeers(this.segment.int32, this.segment.bigint64, this.segment.dataOffset + L.PEERS, L.PEER_SLOTS)) {
      const role = [(s.roles & L.ROLE_PRODUCER) !== 0 && 'producer', (s.roles & L.ROLE_CONSUMER) !== 0 && 'consumer'].filter(Boolean).join('+') || 'peer';
      m.set(s.slot, { token: s.token, role, departed: (s.roles & DEPARTED) !== 0 });
    }
    return m;
  }

  /** @internal What a WaitSet waits on for this channel: the flag word and the condition. */
  waitTarget(kind: 'readable' | 'writable'): WaitTarget {
    this.assertOpen();
    if (kind === 'readable') return { flag: this.ring.dataWaits, ready: () => this.closed || this.rx.readable(), segment: this.segment };
    return { flag: this.ring.spaceWaits, ready: () => this.closed || this.tx.writable(), segment: this.segment };
  }

  // At-least-once consumers ----------------------------------------------------------------------

  /**
   * Takes a message of an at-least-once channel if one can be had now: a new one, or one whose
   * taker died (or nacked) without acknowledging it. Undefined if none.
   */
  tryTake(): Delivery<T> | undefined {
    return this.acked('tryTake').tryTake();
  }

  /** Like take(), blocking the thread while it waits. */
  takeSync(options?: ChannelWaitOptions): Delivery<T> {
    const o = parseChannelWait(options, false);
    return this.acked('takeSync').takeSync(o);
  }

  /**
   * Waits for a message of an at-least-once channel and takes it (see tryTake), without blocking
   * the event loop. Rejects with ERR_SHMKIT_CLOSED once ended and drained.
   */
  take(options?: ChannelAsyncOptions): Promise<Delivery<T>> {
    try {
      const o = parseChannelWait(options, true);
      return this.acked('take').take(o);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private acked(what: string): AckedReceiver<T> {
    this.assertOpen();
    const a = this.rx.acked;
    if (a === null) throw this.errors.error(ErrorCodes.UNSUPPORTED, `${what}: only at-least-once channels take and ack (create it with delivery: 'at-least-once')`);
    this.rx.claim();
    return a;
  }

  protected override inspectFields(): Record<string, unknown> {
    return {
      name: this.name,
      capacity: this.capacity,
      producers: this.multiProducer ? 'multi' : 'single',
      consumers: this.multiConsumer ? 'multi' : 'single',
      delivery: this.atLeastOnce ? 'at-least-once' : 'at-most-once',
      codec: this.codec.name,
      ended: this.ring.closed,
    };
  }

  // Lifetime -------------------------------------------------------------------------------------

  /**
   * Releases this handle: gives back unacknowledged deliveries, a single-producer/consumer role,
   * leaves the peer table, and unmaps the segment. Pending operations reject with
   * ERR_SHMKIT_CLOSED. The channel itself stays (see end() and unlink()). Idempotent.
   */
  close(): void {
    this.dispose();
  }

  private endedAtClose = false;

  protected release(): void {
    this.stopPeerWatch();
    if (this.segment.int32.length > 0) {
      this.endedAtClose = this.ring.closed;
      for (const side of [this.rx, this.tx]) {
        try {
          side.release();
        } catch {
          // The lock was taken over (we were presumed dead): nothing to give back.
        }
      }
      this.peers.unregister();
    }
    this.segment.close();
  }
}

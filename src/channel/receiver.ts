/**
 * The consumer side of a channel handle: the receive family, batches, zero-copy views,
 * receiveInto and iteration, over a RingConsumer. Multi-consumer channels serialize consumers with
 * a robust Mutex held while records are taken (and while a view is out); a single-consumer channel
 * holds it for the life of the handle (the role), and its common case takes a plain record at the
 * head with no lock at all. At-least-once channels delegate to AckedReceiver.
 */
import { ErrorCodes } from '../errors';
import { isAborted } from '../abort';
import { bufferView } from '../codec/slab';
import { recordEnd } from '../ring/format';
import { EMPTY, RingConsumer } from '../ring/consumer';
import type { Ring } from '../ring/ring';
import type { CodecPlan } from '../codec/plan';
import { lockWithin } from '../sync/lock-within';
import type { MutexGuard } from '../sync/mutex';
import { checkInt } from '../validate';
import { Deadline } from '../wait';
import { AckedReceiver } from './at-least-once';
import { ROLE_CONSUMER, ROLE_PRODUCER } from './layout';
import { checkTarget, DEFAULT_CHANNEL, parseChannelWait, type ParsedChannelWait } from './options';
import { type ChannelParts, decodeError, decodeRecord, END, lockForCaller, NO_DEADLINE, NONE, outstanding, peerWatch, takeRole } from './parts';
import type { ChannelAsyncOptions, ChannelWaitOptions, ReceivedView, TryReceiveResult } from './types';

export class ChannelReceiver<T> {
  readonly cursor: RingConsumer;
  /** This handle has taken the consumer role (in the peer table; single-consumer: the lock too). */
  claimed = false;
  /** Single-consumer role held, at-most-once, no view outstanding: receive() tries receiveFast(). */
  private fast = false;
  private guard: MutexGuard | null = null;
  /** Set by a try-take that found the consumer lock held by another consumer (tryReceiveResult). */
  private lastTryBusy = false;
  private readonly multi: boolean;
  private readonly producersGone: () => void;
  readonly acked: AckedReceiver<T> | null;

  private readonly ring: Ring;
  private readonly plan: CodecPlan<T>;
  private readonly held: ChannelParts<T>['held'];
  /** The ring's ArrayBuffer and the ring's offset in it (for views). */
  private readonly ringBuffer: ArrayBufferLike;
  private readonly ringOffset: number;

  constructor(private readonly p: ChannelParts<T>) {
    this.ring = p.ring;
    this.plan = p.plan;
    this.held = p.held;
    this.ringBuffer = p.ring.bytes.buffer;
    this.ringOffset = p.ring.bytes.byteOffset;
    this.cursor = new RingConsumer(p.ring);
    this.multi = p.params.multiConsumer;
    this.producersGone = peerWatch(p, ROLE_PRODUCER);
    this.acked = p.params.atLeastOnce ? new AckedReceiver(p, this.cursor, this.producersGone) : null;
  }

  /** Takes the consumer role (single consumer: ERR_SHMKIT_BUSY if a live holder has it). */
  claim(): void {
    if (this.claimed) return;
    if (!this.multi) {
      this.guard = takeRole(this.p, this.p.consumerLock, 'consumer', (g) => {
        this.cursor.reload();
        if (g.recovered && this.acked) this.acked.repair(); // the previous consumer died mid-step
      });
    }
    this.p.peers.addRole(ROLE_CONSUMER);
    this.claimed = true;
    this.fast = !this.multi && !this.acked;
  }

  private gone(o: ParsedChannelWait): (() => void) | null {
    return o.failIfPeerGone ? this.producersGone : null;
  }

  // Taking records -------------------------------------------------------------------------------

  /** Takes up to `max` messages (1 for a single receive). Returns NONE if empty. Holds consumer rights. */
  private takeLocked(max: number, into: T[] | null): T | typeof NONE {
    const c = this.cursor;
    let first: T | typeof NONE = NONE;
    let n = 0;
    let bytes = 0;
    let failure: unknown;
    while (n < max) {
      const len = c.next();
      if (len === EMPTY) break;
      const pos = c.head;
      let v: T;
      try {
        v = decodeRecord(this.p, pos, len);
      } catch (err) {
        if (into !== null && into.length > 0) break; // deliver the good ones; the next call reports this one
        failure = err;
        n++;
        bytes += len;
        c.head = recordEnd(pos, len);
        break;
      }
      n++;
      bytes += len;
      c.head = recordEnd(pos, len);
      if (into) into.push(v);
      else first = v;
    }
    if (n > 0) c.release(c.head, n, bytes);
    if (failure !== undefined) throw failure;
    return first;
  }

  /**
   * Takes up to `max` messages. Multi-consumer: `lock` says how to get the consumer lock: 'wait'
   * (within `deadline`: sync callers), 'try' (give up if another consumer holds it: try* calls and
   * async callers, which then wait for the lock with lockWithinAsync), or 'held' (the caller has it).
   */
  private takeSync(max: number, into: T[] | null, lock: 'wait' | 'try' | 'held' = 'wait', deadline?: Deadline, what = 'receiveSync'): T | typeof NONE {
    const p = this.p;
    if (this.p.held.view) {
      if (lock === 'held') p.consumerLock.unlock();
      throw p.errors.busy('a received view is outstanding; release it first');
    }
    if (!this.multi) return this.takeLocked(max, into);
    // 'wait': another consumer may hold the lock (e.g. with a view) while data is queued; waiting
    // for it honours the caller's deadline (timeout 0: one try, then ERR_SHMKIT_TIMEOUT).
    if (lock === 'wait') lockWithin(p.consumerLock, deadline ?? NO_DEADLINE, p.errors.op(what), p.errors.name);
    else if (lock === 'try' && p.consumerLock.tryLock() === null) {
      this.lastTryBusy = true;
      return NONE;
    }
    try {
      this.cursor.reload();
      return this.takeLocked(max, into);
    } finally {
      p.consumerLock.unlock();
    }
  }

  /** Multi-consumer async: wait for the consumer lock without blocking the event loop, then take. */
  private async take(max: number, into: T[] | null, signal: AbortSignal | undefined, deadline: Deadline, what: string): Promise<T | typeof NONE> {
    if (!this.multi) return this.takeSync(max, into);
    const v = this.takeSync(max, into, 'try');
    if (v !== NONE || (into && into.length) || !this.p.consumerLock.locked) return v;
    await lockForCaller(this.p, this.p.consumerLock, deadline, signal, what);
    return this.takeSync(max, into, 'held');
  }

  /** Multi-consumer: the consumer lock without waiting, positions reloaded; false if busy. */
  private tryEnter(): boolean {
    if (!this.multi) return true;
    if (this.p.consumerLock.tryLock() === null) return false;
    this.cursor.reload();
    return true;
  }

  /** True if nothing is queued and the channel is closed. */
  drainedAndClosed(): boolean {
    // Closed: everything sent before end() is published before the flag (see Ring.close).
    return this.p.ring.closed && this.cursor.isEmpty(this.multi);
  }

  private readonly dataOrClosed = (): boolean => !this.cursor.isEmpty(this.multi) || this.p.ring.closed;

  /** Whether a receive would not wait now: a message is queued, or the channel ended (WaitSet). */
  readable(): boolean {
    return !this.cursor.isEmpty(true) || this.p.ring.closed;
  }

  /**
   * The single consumer's flat path: a plain record at the head (Ring.recordAt's checks, like every
   * read). NONE to fall back to the general path (empty ring, padding).
   */
  private receiveFast(): T | typeof NONE {
    const c = this.cursor;
    const len = c.nextPlain();
    if (len === EMPTY) return NONE;
    const pos = c.head;
    const r = this.ring;
    try {
      return this.plan.decode(r.bytes, r.bytesI32, r.payloadIndex(pos), len);
    } catch (err) {
      throw decodeError(this.p, len, err);
    } finally {
      c.release(recordEnd(pos, len), 1, len); // after the copy; also for a poison message, which must not block the channel
    }
  }

  // The receive family ---------------------------------------------------------------------------

  tryReceiveResult(): TryReceiveResult<T> {
    this.p.assertOpen();
    this.claim();
    this.lastTryBusy = false;
    if (this.acked) return this.acked.tryReceiveResult();
    const v = this.takeSync(1, null, 'try');
    if (v !== NONE) return { ok: true, value: v };
    if (this.lastTryBusy) return { ok: false, reason: 'busy' };
    return { ok: false, reason: this.drainedAndClosed() ? 'ended' : 'empty' };
  }

  tryReceive(): T | undefined {
    if (this.fast) {
      const v = this.receiveFast();
      if (v !== NONE) return v;
    }
    this.p.assertOpen();
    this.claim();
    if (this.acked) return this.acked.tryReceive();
    const v = this.takeSync(1, null, 'try');
    return v === NONE ? undefined : v;
  }

  /** The flat path (single consumer, a plain record queued) is small enough to be inlined. */
  receiveSync(options: ChannelWaitOptions | undefined): T {
    if (this.fast && options === undefined) {
      const v = this.receiveFast();
      if (v !== NONE) return v;
    }
    return this.receiveWaiting(options);
  }

  private receiveWaiting(options: ChannelWaitOptions | undefined): T {
    // Spin tight on TAIL for the configured budget, then take the general path (which parks).
    if (this.fast && options === undefined && this.cursor.spinForData()) {
      const w = this.receiveFast();
      if (w !== NONE) return w;
    }
    const o = parseChannelWait(options, false);
    this.p.assertOpen();
    this.claim();
    const r = this.acked ? this.acked.receiveSync(o) : this.receiveSlow(o, 1, null);
    if (r === END) throw this.p.errors.closed(' (ended and drained)');
    return r as T;
  }

  /** Takes, or waits and takes; END once ended and drained. `o` is parsed, its clock starts here. */
  private receiveSlow(o: ParsedChannelWait, max: number, into: T[] | null, what = 'receiveSync'): T | typeof END | typeof NONE {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const v = this.takeSync(max, into, 'wait', deadline, what);
      if (v !== NONE || (into && into.length)) return v;
      if (this.drainedAndClosed()) {
        const again = this.takeSync(max, into, 'wait', deadline, what);
        if (again !== NONE || (into && into.length)) return again;
        return END;
      }
      if (!this.p.ring.dataWaits.waitSync(o, deadline, this.dataOrClosed, this.gone(o))) throw this.p.errors.timeout(what, o.timeout);
    }
  }

  async receive(options: ChannelAsyncOptions | undefined): Promise<T> {
    this.p.assertOpen();
    this.claim();
    // Options are checked, and an aborted signal refused, before a queued message is taken.
    const o = options === undefined ? DEFAULT_CHANNEL : parseChannelWait(options, true);
    if (isAborted(o.signal)) throw this.p.errors.aborted(o.signal!, 'receive');
    const v = this.fast ? this.receiveFast() : NONE;
    const r = v !== NONE ? v : await this.receiveAsyncParsed(o, 1, null, 'receive');
    if (r === END) throw this.p.errors.closed(' (ended and drained)');
    return r as T;
  }

  private async receiveAsyncSlow(options: ChannelAsyncOptions | undefined, max: number, into: T[] | null, what = 'receive'): Promise<T | typeof END | typeof NONE> {
    return this.receiveAsyncParsed(options === undefined ? DEFAULT_CHANNEL : parseChannelWait(options, true), max, into, what);
  }

  private async receiveAsyncParsed(o: ParsedChannelWait, max: number, into: T[] | null, what: string): Promise<T | typeof END | typeof NONE> {
    const p = this.p;
    if (isAborted(o.signal)) throw p.errors.aborted(o.signal!, what);
    if (this.acked) return this.acked.receive(o, max, into, what);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const v = await this.take(max, into, o.signal, deadline, what);
      if (v !== NONE || (into && into.length)) return v;
      p.assertOpen(); // close() may have run during the await
      if (this.drainedAndClosed()) {
        const again = await this.take(max, into, o.signal, deadline, what);
        if (again !== NONE || (into && into.length)) return again;
        return END;
      }
      if (!(await p.ring.dataWaits.wait(o, deadline, this.dataOrClosed, this.gone(o), what))) throw p.errors.timeout(what, o.timeout);
      p.assertOpen();
    }
  }

  receiveBatchSync(max: number, options: ChannelWaitOptions | undefined): T[] {
    this.p.assertOpen();
    checkInt('max', max, 1, 2 ** 31);
    this.claim();
    const out: T[] = [];
    const o = parseChannelWait(options, false);
    if (this.acked) this.acked.receiveBatchSync(o, max, out);
    else this.receiveSlow(o, max, out, 'receiveBatchSync');
    return out;
  }

  async receiveBatch(max: number, options: ChannelAsyncOptions | undefined): Promise<T[]> {
    this.p.assertOpen();
    checkInt('max', max, 1, 2 ** 31);
    this.claim();
    const out: T[] = [];
    await this.receiveAsyncSlow(options, max, out, 'receiveBatch');
    return out;
  }

  // Zero-copy views and receiveInto --------------------------------------------------------------

  private notOnAtLeastOnce(what: string): void {
    if (this.acked) throw this.p.errors.error(ErrorCodes.UNSUPPORTED, `${what}: not available on an at-least-once channel; use take() and ack()`);
  }

  tryReceiveView(): ReceivedView | null {
    const p = this.p;
    const r = this.ring;
    if (p.life.released || r.i32.length === 0) throw p.errors.released();
    this.claim();
    if (this.acked) this.notOnAtLeastOnce('tryReceiveView');
    const held = this.held;
    if (held.loan || held.view) throw p.errors.busy(`a ${outstanding(p)} is outstanding`);
    if (!this.tryEnter()) return null; // another consumer is busy; a later call retries
    const c = this.cursor;
    let len = EMPTY;
    try {
      len = c.next();
    } finally {
      if (len === EMPTY && this.multi) p.consumerLock.unlock();
    }
    if (len === EMPTY) return null;
    const pos = c.head;
    const end = recordEnd(pos, len); // the view's own end: nothing else on this handle can move it
    held.view = true;
    const fast = this.fast;
    this.fast = false;
    const view = bufferView(this.ringBuffer, this.ringOffset + r.payloadIndex(pos), len);
    let done = false;
    return {
      bytes: view,
      release: () => {
        if (done || r.i32.length === 0) return;
        done = true;
        held.view = false;
        this.fast = fast;
        c.release(end, 1, len);
        if (this.multi) p.consumerLock.unlock();
      },
    };
  }

  receiveViewSync(options: ChannelWaitOptions | undefined): ReceivedView | null {
    const o = parseChannelWait(options, false); // before anything is consumed
    const first = this.tryReceiveView();
    if (first) return first;
    return this.waitToTake(() => this.tryReceiveView(), o, 'receiveViewSync');
  }

  async receiveView(options: ChannelAsyncOptions | undefined): Promise<ReceivedView | null> {
    const o = parseChannelWait(options, true);
    if (isAborted(o.signal)) throw this.p.errors.aborted(o.signal!, 'receiveView');
    const first = this.tryReceiveView();
    if (first) return first;
    return this.waitToTakeAsync(() => this.tryReceiveView(), o, 'receiveView');
  }

  tryReceiveInto(target: Uint8Array): number | undefined {
    checkTarget(target);
    return this.takeInto(target, 'tryReceiveInto') ?? undefined;
  }

  receiveIntoSync(target: Uint8Array, options: ChannelWaitOptions | undefined): number {
    checkTarget(target);
    const o = parseChannelWait(options, false);
    const attempt = (): number | null => this.takeInto(target, 'receiveIntoSync');
    const n = attempt() ?? this.waitToTake(attempt, o, 'receiveIntoSync');
    if (n === null) throw this.p.errors.closed(' (ended and drained)');
    return n;
  }

  async receiveInto(target: Uint8Array, options: ChannelAsyncOptions | undefined): Promise<number> {
    checkTarget(target);
    const o = parseChannelWait(options, true);
    if (isAborted(o.signal)) throw this.p.errors.aborted(o.signal!, 'receiveInto');
    const attempt = (): number | null => this.takeInto(target, 'receiveInto');
    const n = attempt() ?? (await this.waitToTakeAsync(attempt, o, 'receiveInto'));
    if (n === null) throw this.p.errors.closed(' (ended and drained)');
    return n;
  }

  /** One copying take for the receiveInto family: the byte count, or null if nothing is there. */
  private takeInto(target: Uint8Array, what: string): number | null {
    const p = this.p;
    p.assertOpen();
    this.claim();
    this.notOnAtLeastOnce(what);
    if (this.p.held.view) throw p.errors.busy('a received view is outstanding; release it first');
    if (!this.tryEnter()) return null; // another consumer is busy: wait and retry
    try {
      const len = this.cursor.next();
      if (len === EMPTY) return null;
      if (len > target.byteLength) {
        throw p.errors.error(ErrorCodes.TOO_LARGE, `${what}: the next message has ${len} bytes, more than target's ${target.byteLength}; it stays queued`);
      }
      const pos = this.cursor.head;
      const r = p.ring;
      target.set(new Uint8Array(r.bytes.buffer, r.bytes.byteOffset + r.payloadIndex(pos), len));
      this.cursor.release(recordEnd(pos, len), 1, len);
      return len;
    } finally {
      if (this.multi) p.consumerLock.unlock();
    }
  }

  /**
   * The waiting loop of the view and receiveInto families: waits until `attempt` takes something
   * (its result) or the channel is ended and drained (null). In a multi-consumer channel, data may
   * be there while another consumer holds the lock (e.g. a view): then it waits for the lock.
   */
  private waitToTake<R>(attempt: () => R | null, o: ParsedChannelWait, what: string): R | null {
    const p = this.p;
    const deadline = new Deadline(o.timeout);
    for (;;) {
      if (this.drainedAndClosed()) return attempt();
      if (!p.ring.dataWaits.waitSync(o, deadline, this.dataOrClosed, this.gone(o))) throw p.errors.timeout(what, o.timeout);
      const v = attempt();
      if (v !== null) return v;
      if (this.multi && p.consumerLock.locked) lockWithin(p.consumerLock, deadline, p.errors.op(what), p.errors.name).unlock();
    }
  }

  private async waitToTakeAsync<R>(attempt: () => R | null, o: ParsedChannelWait, what: string): Promise<R | null> {
    const p = this.p;
    const deadline = new Deadline(o.timeout);
    for (;;) {
      if (this.drainedAndClosed()) return attempt();
      if (!(await p.ring.dataWaits.wait(o, deadline, this.dataOrClosed, this.gone(o), what))) throw p.errors.timeout(what, o.timeout);
      const v = attempt();
      if (v !== null) return v;
      if (this.multi && p.consumerLock.locked) (await lockForCaller(p, p.consumerLock, deadline, o.signal, what)).unlock();
    }
  }

  /**
   * Iterates messages until the channel is ended and drained. A plain iterator object rather than
   * an async generator: a queued message costs one resolved promise, not a generator round trip.
   * Once the handle is released, the iteration ends.
   */
  iterator(options?: ChannelAsyncOptions): AsyncIterableIterator<T> {
    this.p.assertOpen();
    const o = options === undefined ? DEFAULT_CHANNEL : parseChannelWait(options, true); // checked now, before the loop starts
    this.claim();
    const done: IteratorResult<T> = Object.freeze({ value: undefined, done: true }) as IteratorResult<T>;
    const life = this.p.life;
    const it: AsyncIterableIterator<T> = {
      next: (): Promise<IteratorResult<T>> => {
        if (life.released) return Promise.resolve(done);
        if (o.signal !== undefined && isAborted(o.signal)) return Promise.reject(this.p.errors.aborted(o.signal, 'iterate'));
        const v = this.fast ? this.receiveFast() : NONE;
        if (v !== NONE) return Promise.resolve({ value: v, done: false });
        return this.receiveAsyncParsed(o, 1, null, 'receive').then((r) => (r === END ? done : { value: r as T, done: false }));
      },
      return: (): Promise<IteratorResult<T>> => Promise.resolve(done),
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  /** On release of the handle: gives back unacknowledged deliveries, the role and a view's lock. */
  release(): void {
    this.fast = false;
    this.acked?.giveBackHeld(); // unacked deliveries go to other consumers
    if (this.p.held.view && this.multi) this.p.consumerLock.unlock();
    this.guard?.unlock();
  }
}


/**
 * The consumer side of an at-least-once channel: take, ack and nack, and the receive family on such
 * a channel (take and acknowledge at once). See leases.ts and docs/design.md ("At-least-once
 * channels"). READ is the position of the next record to hand out; HEAD..READ are in flight, each
 * with a lease. Every step runs under the consumer lock (held briefly: never while the caller
 * processes a message), or, single-consumer, under the role held for the handle's life.
 */
import { ErrorCodes, ShmkitError } from '../errors';
import { isAborted } from '../abort';
import { tokenAlive } from '../identity';
import { PADDING } from '../ring/ring';
import { EMPTY, type RingConsumer } from '../ring/consumer';
import { POS_MASK, recordEnd } from '../ring/format';
import { lockWithin } from '../sync/lock-within';
import type { MutexGuard } from '../sync/mutex';
import { Deadline, tuning } from '../wait';
import { READ } from './layout';
import { ACKED, LeaseTable } from './leases';
import type { ParsedChannelWait } from './options';
import { type ChannelParts, decodeRecord, END, lockForCaller, NONE } from './parts';
import type { Delivery, TryReceiveResult } from './types';

/** A record taken under the consumer lock, before decoding: (position, length) and its lease. */
interface Taken {
  slot: number;
  pos: number;
  len: number;
  redelivered: boolean;
}

const noop = (): void => {};

export class AckedReceiver<T> {
  private readonly leases: LeaseTable;
  private readonly readWord: number;
  private readonly multi: boolean;
  /** When the lease table was last checked for dead takers (performance.now()). */
  private deadCheckedAt = 0;
  /** The taker-liveness cache (token -> valid until, ms; -1: dead). */
  private readonly aliveUntil = new Map<bigint, number>();
  /** This handle's unacked deliveries (slot -> position). */
  private readonly held = new Map<number, number>();
  /** Batches: a decode failure found after some messages, reported by the next take. */
  private deferred: unknown = undefined;
  private takesSinceDeadCheck = 0;
  /** Set by a try-take that found the consumer lock, or every lease, busy. */
  private lastTryBusy = false;

  constructor(
    private readonly p: ChannelParts<T>,
    private readonly cursor: RingConsumer,
    private readonly producersGone: () => void,
  ) {
    const seg = p.segment;
    this.leases = new LeaseTable(seg.int32, seg.bigint64, seg.dataOffset);
    this.readWord = (seg.dataOffset + READ) >> 2;
    this.multi = p.params.multiConsumer;
  }

  // The public calls -----------------------------------------------------------------------------

  tryTake(): Delivery<T> | undefined {
    const d = this.takeOnce(null, 'tryTake', false);
    return d === NONE ? undefined : d;
  }

  takeSync(o: ParsedChannelWait): Delivery<T> {
    const d = this.takeWait(o, 'takeSync', false);
    if (d === END) throw this.p.errors.closed(' (ended and drained)');
    return d;
  }

  async take(o: ParsedChannelWait): Promise<Delivery<T>> {
    const p = this.p;
    if (isAborted(o.signal)) throw p.errors.aborted(o.signal!, 'take');
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const d = await this.takeOnceAsync(o, deadline, 'take', false);
      if (d !== NONE) return d;
      p.assertOpen(); // close() may have run during the await
      if (this.ended()) throw p.errors.closed(' (ended and drained)');
      if (!(await p.ring.dataWaits.wait(o, deadline, this.ready, o.failIfPeerGone ? this.producersGone : null, 'take'))) {
        throw p.errors.timeout('take', o.timeout);
      }
    }
  }

  tryReceive(): T | undefined {
    const d = this.takeOnce(null, 'tryReceive', true);
    return d === NONE ? undefined : d.value;
  }

  tryReceiveResult(): TryReceiveResult<T> {
    this.lastTryBusy = false;
    const d = this.takeOnce(null, 'tryReceiveResult', true);
    if (d !== NONE) return { ok: true, value: d.value };
    if (this.lastTryBusy) return { ok: false, reason: 'busy' };
    return { ok: false, reason: this.ended() ? 'ended' : 'empty' };
  }

  receiveSync(o: ParsedChannelWait): T | typeof END {
    const d = this.takeWait(o, 'receiveSync', true);
    return d === END ? END : d.value;
  }

  receiveBatchSync(o: ParsedChannelWait, max: number, into: T[]): void {
    const first = this.takeWait(o, 'receiveBatchSync', true);
    if (first === END) return;
    into.push(first.value);
    this.fillBatch(into, max, 'receiveBatchSync');
  }

  /** receive / receiveBatch / for await: take, ack at once. */
  async receive(o: ParsedChannelWait, max: number, into: T[] | null, what: string): Promise<T | typeof END | typeof NONE> {
    const p = this.p;
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const d = await this.takeOnceAsync(o, deadline, what, true);
      if (d !== NONE) {
        if (into === null) return d.value;
        into.push(d.value);
        this.fillBatch(into, max, what);
        return NONE;
      }
      p.assertOpen(); // close() may have run during the await
      if (this.ended()) return END;
      if (!(await p.ring.dataWaits.wait(o, deadline, this.ready, o.failIfPeerGone ? this.producersGone : null, what))) {
        throw p.errors.timeout(what, o.timeout);
      }
      p.assertOpen();
    }
  }

  // Positions ------------------------------------------------------------------------------------

  private loadRead(): number {
    return (Atomics.load(this.p.ring.i32, this.readWord) & POS_MASK) >>> 0;
  }

  /** Positions HEAD..READ (in flight), checked against TAIL: they are untrusted. */
  private positions(): { head: number; read: number; tail: number } {
    const r = this.p.ring;
    const head = r.loadHead();
    const read = this.loadRead();
    const tail = r.loadTail();
    const inUse = (tail - head) >>> 0;
    if (inUse > r.capacity || ((read - head) >>> 0) > inUse) throw r.corrupt(`head ${head}, read ${read} and tail ${tail} are inconsistent`);
    return { head, read, tail };
  }

  private inFlightTest(head: number, read: number): (pos: number) => boolean {
    const n = (read - head) >>> 0;
    return (pos) => ((pos - head) >>> 0) < n;
  }

  /** Nothing left to hand out (only padding, perhaps) between READ and TAIL. */
  private unreadEmpty(): boolean {
    return this.p.ring.emptyBetween(this.loadRead(), this.p.ring.loadTail());
  }

  /** Closed, nothing left to hand out, and nothing in flight: no message will ever come. */
  ended(): boolean {
    if (!this.p.ring.closed || !this.unreadEmpty()) return false;
    return this.p.ring.loadHead() === this.loadRead() || !this.leases.busy();
  }

  /**
   * Ready for another take attempt (lock-free, racy: it only decides whether to look): something
   * new and a free lease, a message given back, the end; and once per liveness interval in any
   * case, to look under the lock for what changes no word: a dead taker, a message acknowledged
   * by a taker that died before moving HEAD, stale leases left by a crash in the middle of a step.
   */
  private readonly ready = (): boolean => {
    if (this.p.ring.i32.length === 0) return true;
    const leases = this.leases;
    if (!this.unreadEmpty() && leases.hasFree()) return true;
    if (this.ended()) return true;
    const head = this.p.ring.loadHead();
    const read = this.loadRead();
    if (leases.anyGivenBack(this.inFlightTest(head, read))) return true;
    const now = performance.now();
    if (now - this.deadCheckedAt < tuning.livenessIntervalMs) return false;
    this.deadCheckedAt = now;
    return true;
  };

  /** Liveness of a taker's token, cached for one liveness interval (a death is cached for good). */
  private readonly takerAlive = (t: bigint): boolean => {
    const now = performance.now();
    const until = this.aliveUntil.get(t);
    if (until !== undefined && (until < 0 || until > now)) return until > 0;
    const alive = tokenAlive(t);
    if (this.aliveUntil.size >= 256) this.aliveUntil.clear();
    this.aliveUntil.set(t, alive ? now + tuning.livenessIntervalMs : -1);
    return alive;
  };

  // Consumer rights ------------------------------------------------------------------------------

  /** Multi-consumer: the consumer lock (null deadline: without waiting; false if busy). */
  private enter(deadline: Deadline | null, what: string): boolean {
    if (!this.multi) return true;
    const lock = this.p.consumerLock;
    let g: MutexGuard | null;
    if (deadline === null) {
      g = lock.tryLock();
      if (g === null) {
        this.lastTryBusy = true;
        return false;
      }
    } else g = lockWithin(lock, deadline, this.p.errors.op(what), this.p.errors.name);
    if (g.recovered) this.repairOrLeave();
    return true;
  }

  /** Just after taking over the consumer lock from a dead owner; the lock is given back if repair throws. */
  private repairOrLeave(): void {
    try {
      this.repair();
    } catch (err) {
      this.leave();
      throw err;
    }
  }

  private leave(): void {
    if (this.multi) this.p.consumerLock.unlock();
  }

  /** After a consumer died holding the consumer lock (or role): drop leases it left half-made. */
  repair(): void {
    const { head, read } = this.positions();
    this.leases.repair(this.inFlightTest(head, read));
  }

  // Taking ---------------------------------------------------------------------------------------

  /** One take (sync): a delivery, or NONE. `autoAck`: acknowledged at once (the receive family). */
  private takeOnce(deadline: Deadline | null, what: string, autoAck: boolean): Delivery<T> | typeof NONE {
    this.throwDeferred();
    if (!this.enter(deadline, what)) return NONE;
    return this.takeHeld(autoAck);
  }

  private async takeOnceAsync(o: ParsedChannelWait, deadline: Deadline, what: string, autoAck: boolean): Promise<Delivery<T> | typeof NONE> {
    this.throwDeferred();
    if (this.multi) {
      const lock = this.p.consumerLock;
      const g = lock.tryLock() ?? (await lockForCaller(this.p, lock, deadline, o.signal, what));
      if (g.recovered) this.repairOrLeave();
    }
    return this.takeHeld(autoAck);
  }

  /**
   * Holding consumer rights: takes one record and gives the rights back. With `autoAck` the message
   * is decoded, acknowledged and passed under the lock; otherwise it is decoded after the lock is
   * released (a leased record cannot be overwritten), so a slow codec does not hold up other
   * consumers.
   */
  private takeHeld(autoAck: boolean): Delivery<T> | typeof NONE {
    let t: Taken | typeof NONE;
    try {
      t = this.takeLocked();
      if (t !== NONE && autoAck) return this.deliver(t, true);
    } finally {
      this.leave();
    }
    return t === NONE ? NONE : this.deliver(t, false);
  }

  private throwDeferred(): void {
    const err = this.deferred;
    if (err === undefined) return;
    this.deferred = undefined;
    throw err;
  }

  /** The rest of a batch after its first message: stops before a message that cannot be decoded, which the next take reports. */
  private fillBatch(into: T[], max: number, what: string): void {
    while (into.length < max) {
      let d: Delivery<T> | typeof NONE;
      try {
        d = this.takeOnce(null, what, true);
      } catch (err) {
        if (!(err instanceof ShmkitError) || err.code !== ErrorCodes.DECODE) throw err;
        this.deferred = err; // the good ones are delivered now; the next call reports this one
        return;
      }
      if (d === NONE) return;
      into.push(d.value);
    }
  }

  /** The waiting loop of take() and of the receive family. */
  private takeWait(o: ParsedChannelWait, what: string, autoAck: boolean): Delivery<T> | typeof END {
    const p = this.p;
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const d = this.takeOnce(deadline, what, autoAck);
      if (d !== NONE) return d;
      if (this.ended()) return END;
      if (this.leases.allMine()) {
        throw p.errors.error(ErrorCodes.WOULD_DEADLOCK, `${what}: every lease is held by this thread's unacknowledged deliveries; ack or nack some first`);
      }
      if (!p.ring.dataWaits.waitSync(o, deadline, this.ready, o.failIfPeerGone ? this.producersGone : null)) throw p.errors.timeout(what, o.timeout);
    }
  }

  /** Holding consumer rights: lease the next new record, or take over a dead (or given-back) taker's. */
  private takeLocked(): Taken | typeof NONE {
    const leases = this.leases;
    const r = this.p.ring;
    const c = this.cursor;
    this.advanceHead(); // records acknowledged by a taker that died before moving HEAD (cheap otherwise)
    const { head, read, tail } = this.positions();
    const inFlight = this.inFlightTest(head, read);
    let free = leases.hasFree();
    if (!free) {
      // Holding the lock, a lease outside HEAD..READ can only be stale (a crash mid-step).
      leases.repair(inFlight);
      free = leases.hasFree();
    }
    c.head = read;
    c.tailCache = tail;
    const freshLen = read !== tail ? c.next() : EMPTY; // moves the cursor past padding, to the record
    const fresh = freshLen !== EMPTY;
    const freshPos = c.head;
    // Messages given back or left by a dead taker go first (they are older). Dead takers are looked
    // for when nothing new can be taken, and on every 64th take; liveness is cached per taker.
    const probe = !fresh || !free || ++this.takesSinceDeadCheck >= 64;
    if (probe) this.takesSinceDeadCheck = 0;
    let slot = leases.takeOverDead(inFlight, probe ? this.takerAlive : null);
    let pos = 0;
    let len = 0;
    const redelivered = slot >= 0;
    if (slot >= 0) {
      pos = leases.pos(slot);
      c.head = pos;
      c.tailCache = tail;
      len = c.next();
      if (len === EMPTY || c.head !== pos) throw r.corrupt(`leased record at ${pos} is not a record`);
    } else if (fresh && free) {
      pos = freshPos;
      len = freshLen;
      slot = leases.lease(pos);
      if (slot >= 0) Atomics.store(r.i32, this.readWord, recordEnd(pos, len) | 0); // after the lease: see leases.ts
    }
    if (slot < 0) {
      if (fresh) this.lastTryBusy = true; // every lease is in use
      return NONE;
    }
    r.f64[r.fReceived]! += 1;
    r.f64[r.fReceivedBytes]! += len;
    return { slot, pos, len, redelivered };
  }

  /**
   * Decodes a taken record and makes its delivery. `locked`: the caller holds consumer rights and
   * wants it acknowledged at once. A message that cannot be decoded is acknowledged (consumed
   * once) and reported, as in at-most-once channels.
   */
  private deliver(t: Taken, locked: boolean): Delivery<T> {
    const leases = this.leases;
    let value: T;
    try {
      value = decodeRecord(this.p, t.pos, t.len);
    } catch (err) {
      leases.ack(t.slot, t.pos);
      if (locked) this.advanceHead();
      else this.advanceIfFree();
      throw err;
    }
    if (locked) {
      leases.ack(t.slot, t.pos);
      this.advanceHead();
      return { value, redelivered: t.redelivered, ack: noop, nack: noop };
    }
    this.held.set(t.slot, t.pos);
    return this.delivery(value, t.slot, t.pos, t.redelivered);
  }

  /** Moves HEAD if the consumer lock is free now; otherwise its holder (or the next take) will. */
  private advanceIfFree(): void {
    if (!this.multi) {
      this.advanceHead();
      return;
    }
    const g = this.p.consumerLock.tryLockQuick();
    if (g === null) return;
    try {
      if (g.recovered) this.repair();
      this.advanceHead();
    } finally {
      this.leave();
    }
  }

  private delivery(value: T, slot: number, pos: number, redelivered: boolean): Delivery<T> {
    const leases = this.leases;
    let done = false;
    const finish = (how: 'ack' | 'nack'): void => {
      if (done) return;
      this.p.assertOpen();
      done = true;
      this.held.delete(slot);
      const ok = how === 'ack' ? leases.ack(slot, pos) : leases.giveBack(slot, pos);
      if (!ok) throw this.p.errors.error(ErrorCodes.NOT_OWNER, `${how}: this delivery's lease was taken over`);
      // Never waits: if another consumer holds the lock, it (or the next take) passes the record.
      if (how === 'ack') this.advanceIfFree();
      this.p.ring.dataWaits.wakeWaiters(); // a lease is free again, a message is back, or the end may have come
    };
    return { value, redelivered, ack: () => finish('ack'), nack: () => finish('nack') };
  }

  /** Gives back every delivery of this handle that is not acknowledged (release of the handle). */
  giveBackHeld(): void {
    if (this.held.size === 0 || this.p.ring.i32.length === 0) return;
    for (const [slot, pos] of this.held) this.leases.giveBack(slot, pos);
    this.held.clear();
    this.p.ring.dataWaits.wakeWaiters();
  }

  /**
   * Holding consumer rights: moves HEAD past the acknowledged records at the front of the in-flight
   * span (and padding), then frees their leases. HEAD moves first: a crash in between leaves stale
   * leases (freed by repair), never an in-flight record without a lease.
   */
  private advanceHead(): void {
    const leases = this.leases;
    const r = this.p.ring;
    const { head, read } = this.positions();
    let h = head;
    const passed: number[] = [];
    while (h !== read) {
      const len = r.recordAt(h, (read - h) >>> 0); // the one definition of a record (ring.ts)
      if (len === PADDING) {
        h = (h + (r.capacity - (h & r.mask))) >>> 0;
        continue;
      }
      const slot = leases.find(h);
      if (slot < 0) {
        // In flight without a lease (only damage makes this): hand it out again.
        const s = leases.lease(h);
        if (s >= 0) leases.giveBack(s, h);
        break;
      }
      if (leases.state(slot) !== ACKED) break;
      passed.push(slot);
      h = recordEnd(h, len);
    }
    if (h === head) return;
    r.storeHead(h);
    for (const slot of passed) leases.free(slot);
  }
}

/**
 * A subscription: one reader of a topic's log, with a cursor (the next sequence number it reads)
 * in a subscriber slot that publishers can see. Under 'block' the publisher never writes over a
 * message the cursor has not passed, so reads need no check. Under 'overwrite' a read is a seqlock
 * read: the slot's stamp must say "message s, written" before and after the payload is decoded;
 * otherwise the message was overwritten, and the subscriber moves on to the oldest message kept,
 * counting what it lost. It is never handed a torn message.
 */
import { ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { debug } from '../debug';
import { WAITING } from '../flag-word';
import type { ErrorContext } from '../handle';
import { SELF_TOKEN, takeSlot } from '../identity';
import { type AsyncWaitOptions, DEFAULT, parseWait, type ParsedWait, type WaitOptions } from '../sync/primitive';
import { checkObject, describe } from '../validate';
import { Deadline } from '../wait';
import * as L from './layout';
import { fullFence } from '../fence';
import type { Topic, TopicParts } from './topic';
import type { WaitTarget } from '../waitset/target';

export interface SubscribeOptions {
  /** Where to start: 'now' (default), 'history', or a sequence number (to resume). */
  from?: 'now' | 'history' | number;
  /** 'count' (default): losses under 'overwrite' are counted in `lost`; 'throw': also ERR_SHMKIT_LAGGED. */
  lagged?: 'count' | 'throw';
}

/** A message read in place (zero-copy), valid until release(). */
export interface TopicView {
  /** The message bytes, inside the log. Do not use after release(). */
  readonly bytes: Buffer;
  /** Its sequence number. */
  readonly seq: number;
  /** Moves the subscription past the message (a 'block' publisher may then reuse its slot). Idempotent. */
  release(): void;
}

const SELF_LO = Number(SELF_TOKEN & 0xffffffffn) | 0;
const SELF_HI = Number(SELF_TOKEN >> 32n) | 0;
const NONE = Symbol('none');
const END = Symbol('end');

export class Subscription<T = unknown> {
  /** @internal */
  readonly slotIndex: number;
  private readonly slot: number;
  private readonly f64: Float64Array;
  private cursor: number;
  private released = false;
  private lostCount = 0;
  /** The high half of the cursor as last written (only the low half changes, mostly). */
  private cursorHi = 0;

  private constructor(
    private readonly topic: Topic<T>,
    private readonly p: TopicParts<T>,
    private readonly errors: ErrorContext,
    slotIndex: number,
    start: number,
    private readonly throwOnLag: boolean,
    /** Below this sequence number reads are validated even under 'block' (see start()). */
    private readonly joinUntil: number,
  ) {
    this.slotIndex = slotIndex;
    this.slot = p.base + L.SUBSCRIBERS + slotIndex * L.SUB_SIZE;
    this.f64 = new Float64Array(p.segment.buffer, this.slot, L.SUB_SIZE >> 3);
    this.cursor = start;
    this.cursorHi = Math.floor(start / 4294967296);
  }

  /** @internal Claims a subscriber slot and places the cursor. */
  static start<T>(topic: Topic<T>, p: TopicParts<T>, errors: ErrorContext, options: SubscribeOptions | undefined): Subscription<T> {
    const o = checkObject('options', options);
    const from = o.from ?? 'now';
    if (from !== 'now' && from !== 'history' && !(typeof from === 'number' && Number.isSafeInteger(from) && from >= 0)) {
      throw invalidArg('options.from', `must be 'now', 'history' or a sequence number (an integer >= 0), got ${describe(from)}`);
    }
    if (o.lagged !== undefined && o.lagged !== 'count' && o.lagged !== 'throw') throw invalidArg('options.lagged', `must be 'count' or 'throw', got ${describe(o.lagged)}`);
    const slotOf = (i: number): number => p.base + L.SUBSCRIBERS + i * L.SUB_SIZE;
    // Claimed first, then the cursor written: a racer that loses never writes into our slot. Until
    // our cursor is written, publishers see the previous owner's (a dead subscriber's, or 0): at
    // worst it holds them up for a moment.
    const taken = takeSlot(p.i64, p.params.maxSubscribers, (i) => (slotOf(i) + L.SUB_TOKEN) >> 3);
    if (taken !== null) {
      const i = taken.slot;
      const cur = taken.previous;
      const slot = slotOf(i);
      const ti = (slot + L.SUB_TOKEN) >> 3;
      const f64 = new Float64Array(p.segment.buffer, slot, L.SUB_SIZE >> 3);
      f64[L.SUB_RECEIVED >> 3] = 0;
      f64[L.SUB_LOST >> 3] = 0;
      f64[L.SUB_WAITS >> 3] = 0;
      if (cur !== 0n) debug('topic %s: subscriber slot %d taken over from a dead subscriber', JSON.stringify(topic.name), i);
      const now = topic.tailSeq();
      const oldest = Math.max(0, now - (p.params.capacity - 1));
      let start = now;
      let lost = 0;
      if (from === 'history') start = Math.max(oldest, now - p.params.history);
      else if (typeof from === 'number') {
        if (from > now) {
          Atomics.store(p.i64, ti, 0n);
          throw invalidArg('options.from', `sequence number ${from} is beyond the last published message (the next one is ${now})`);
        }
        start = Math.max(from, oldest);
        lost = start - from;
      }
      L.writeCursor(p.i32, slot + L.SUB_CURSOR, start);
      // Publishers scan the cursors again from their next publish on. A publish already under way
      // may still reuse one slot at or before the tail read below: until the cursor passes it, reads
      // are checked as under 'overwrite' (a message overwritten in that window counts as lost).
      Atomics.add(p.i32, (p.base + L.SUBSCRIPTIONS) >> 2, 1);
      const joinUntil = topic.tailSeq() + 1;
      const sub = new Subscription<T>(topic, p, errors, i, start, o.lagged === 'throw', joinUntil);
      if (lost > 0) sub.countLost(lost);
      // A publisher that scanned between the claim and the cursor saw the previous owner's cursor
      // and may be waiting for it: let it look again.
      sub.wakePublisher();
      return sub;
    }
    throw errors.error(ErrorCodes.BUSY, `all ${p.params.maxSubscribers} subscriber slots have live subscribers (create the topic with a larger maxSubscribers)`);
  }

  // State ----------------------------------------------------------------------------------------

  /** The sequence number of the next message this subscription reads (save it to resume). */
  get seq(): number {
    return this.cursor;
  }

  /** Messages published that this subscription has not read yet. */
  get lag(): number {
    if (this.closed) return 0;
    return Math.max(0, this.topic.tailSeq() - this.cursor);
  }

  /** Messages this subscription lost: overwritten before it read them ('overwrite'), or asked for by `from` but no longer kept. */
  get lost(): number {
    return this.lostCount;
  }

  get closed(): boolean {
    return this.released || this.topic.closed;
  }

  private assertOpen(): void {
    if (this.closed) throw this.errors.error(ErrorCodes.CLOSED, 'this subscription is closed');
    // The owner token, compared by halves (no BigInt on the hot path): only a takeover changes it.
    const ti = (this.slot + L.SUB_TOKEN) >> 2;
    if (Atomics.load(this.p.i32, ti) !== SELF_LO || Atomics.load(this.p.i32, ti + 1) !== SELF_HI) {
      this.released = true;
      this.topic.forget(this);
      throw this.errors.error(ErrorCodes.CLOSED, `this subscription's slot ${this.slotIndex} was taken by another process (evicted as dead?)`);
    }
  }

  private countLost(n: number): void {
    this.lostCount += n;
    this.f64[L.SUB_LOST >> 3]! += n;
  }

  // Reading --------------------------------------------------------------------------------------

  private advance(next: number): void {
    this.cursor = next;
    const ci = (this.slot + L.SUB_CURSOR) >> 2;
    Atomics.store(this.p.i32, ci, next | 0); // the low half first: a publisher never reads a larger value than ours
    const hi = Math.floor(next / 4294967296);
    if (hi !== this.cursorHi) {
      Atomics.store(this.p.i32, ci + 1, hi);
      this.cursorHi = hi;
    }
    // A publisher waiting for the slowest subscriber ('block') may be waiting for us.
    if (!this.p.params.overwrite) this.wakePublisher();
  }

  /** Wakes a publisher sleeping on the consumed word, if one is: the word moves, then the bits go. */
  private wakePublisher(): void {
    if ((Atomics.load(this.p.i32, this.p.consumed.word) & WAITING) === 0) return;
    Atomics.add(this.p.i32, this.p.consumed.word, L.STEP);
    this.p.consumed.wakeWaiters();
  }

  /** Moves past messages that were overwritten: to the oldest one still kept. */
  private lagged(s: number): void {
    const tail = this.topic.tailSeq();
    const next = Math.max(s + 1, tail - (this.p.params.capacity - 1));
    this.countLost(next - s);
    this.advance(next);
    if (this.throwOnLag) {
      const err = this.errors.error(ErrorCodes.LAGGED, `this subscriber fell behind: ${next - s} message(s) were overwritten before it read them; it goes on from sequence number ${next}`);
      (err as ShmkitError & { lost: number }).lost = next - s;
      throw err;
    }
  }

  /** The next message if one is there: its value, NONE, or END (the topic ended and all was read). */
  private take(): T | typeof NONE | typeof END {
    const p = this.p;
    if (this.viewOut) throw this.errors.busy('a view of this subscription is outstanding; release it first');
    for (;;) {
      const s = this.cursor;
      const ended = L.tailEnded(p.i32, p.base); // before the tail: once ended, the tail is final
      const tail = L.tailSeq(p.i32, p.base);
      if (s >= tail) return ended ? END : NONE;
      const checked = p.params.overwrite || s < this.joinUntil;
      if (tail - s > p.params.capacity && checked) {
        this.lagged(s); // the slot has been reused at least once since
        continue;
      }
      const slot = p.slots + (s % p.params.capacity) * p.slotBytes;
      const si = (slot + L.SLOT_STAMP) >> 2;
      const want = L.stampDone(s);
      const stamp = Atomics.load(p.i32, si);
      if (stamp !== want) {
        if (((stamp - want) | 0) > 0 && checked) {
          this.lagged(s);
          continue;
        }
        // Under 'block' no publisher reuses a slot a subscriber has not passed: the state is damaged.
        throw this.errors.error(ErrorCodes.CORRUPT, `message ${s} is published but its slot says ${stamp >>> 0}`);
      }
      const len = Atomics.load(p.i32, (slot + L.SLOT_LEN) >> 2);
      let value: T | undefined;
      let failure: unknown = null;
      if (len < 0 || len > p.params.maxMessageSize) failure = this.errors.error(ErrorCodes.CORRUPT, `message ${s} has a length of ${len >>> 0} bytes (the maximum is ${p.params.maxMessageSize})`);
      else {
        try {
          value = p.plan.decode(p.bytes, p.i32, slot + L.SLOT_PAYLOAD, len);
        } catch (err) {
          failure = err;
        }
      }
      if (checked) {
        fullFence(); // the payload reads above happen before the stamp is read again
        if (Atomics.load(p.i32, si) !== want) {
          this.lagged(s); // overwritten while we read: what we read is dropped
          continue;
        }
      }
      this.advance(s + 1);
      if (failure !== null) {
        if (failure instanceof ShmkitError && failure.code === ErrorCodes.CORRUPT) throw failure;
        throw this.errors.error(ErrorCodes.DECODE, `the ${p.plan.codec.name} codec could not decode message ${s} (${len} bytes; it was skipped)`, failure);
      }
      this.f64[L.SUB_RECEIVED >> 3]! += 1;
      return value as T;
    }
  }

  // Views ----------------------------------------------------------------------------------------

  private viewOut = false;

  /**
   * The next message in place, without a copy, if one is there: null if none (or the topic ended).
   * 'block' topics only (under 'overwrite' a publisher may reuse the slot while it is read): the
   * subscription stays at the message until release(), so no publisher reuses its slot meanwhile.
   */
  tryReceiveView(): TopicView | null {
    this.assertOpen();
    const p = this.p;
    if (p.params.overwrite) throw this.errors.error(ErrorCodes.UNSUPPORTED, "views need a 'block' topic: under 'overwrite' a publisher may reuse a slot while it is read");
    if (this.viewOut) throw this.errors.busy('a view of this subscription is outstanding; release it first');
    for (;;) {
      const s = this.cursor;
      const tail = this.topic.tailSeq();
      if (s >= tail) return null;
      const slot = p.slots + (s % p.params.capacity) * p.slotBytes;
      const si = (slot + L.SLOT_STAMP) >> 2;
      const want = L.stampDone(s);
      const stamp = Atomics.load(p.i32, si);
      const len = Atomics.load(p.i32, (slot + L.SLOT_LEN) >> 2);
      if (s < this.joinUntil) {
        // In the join window a publisher under way may still reuse this slot: copy, then validate.
        if (tail - s > p.params.capacity || ((stamp - want) | 0) > 0) { this.lagged(s); continue; }
        if (stamp !== want || len < 0 || len > p.params.maxMessageSize) throw this.errors.error(ErrorCodes.CORRUPT, `message ${s} is published but its slot says ${stamp >>> 0}`);
        const copy = Buffer.from(p.bytes.subarray(slot + L.SLOT_PAYLOAD, slot + L.SLOT_PAYLOAD + len));
        fullFence();
        if (Atomics.load(p.i32, si) !== want) { this.lagged(s); continue; }
        return this.makeView(copy, s);
      }
      if (stamp !== want) throw this.errors.error(ErrorCodes.CORRUPT, `message ${s} is published but its slot says ${stamp >>> 0}`);
      if (len < 0 || len > p.params.maxMessageSize) throw this.errors.error(ErrorCodes.CORRUPT, `message ${s} has a length of ${len >>> 0} bytes (the maximum is ${p.params.maxMessageSize})`);
      return this.makeView(p.bytes.subarray(slot + L.SLOT_PAYLOAD, slot + L.SLOT_PAYLOAD + len), s);
    }
  }

  private makeView(bytes: Buffer, s: number): TopicView {
    this.viewOut = true;
    let released = false;
    return {
      bytes,
      seq: s,
      release: () => {
        if (released) return;
        released = true;
        this.viewOut = false;
        if (this.closed || this.cursor !== s) return;
        this.f64[L.SUB_RECEIVED >> 3]! += 1;
        this.advance(s + 1);
      },
    };
  }

  /** Waits for the next message and returns it in place (see tryReceiveView), without blocking the event loop; null once the topic ended and all was read. */
  async receiveView(options?: AsyncWaitOptions): Promise<TopicView | null> {
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (isAborted(o.signal)) throw this.errors.aborted(o.signal!, 'receiveView');
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const v = this.tryReceiveView();
      if (v !== null || this.ended()) return v;
      this.f64[L.SUB_WAITS >> 3]! += 1;
      if (!(await this.p.published.wait(o, deadline, this.ready, null, 'receiveView'))) throw timeoutError(`${this.errors.label} receiveView`, o.timeout, this.p.segment.name);
    }
  }

  /** Like receiveView(), blocking the thread while it waits. */
  receiveViewSync(options?: WaitOptions): TopicView | null {
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const v = this.tryReceiveView();
      if (v !== null || this.ended()) return v;
      this.f64[L.SUB_WAITS >> 3]! += 1;
      if (!this.p.published.waitSync(o, deadline, this.ready, null)) throw timeoutError(`${this.errors.label} receiveViewSync`, o.timeout, this.p.segment.name);
    }
  }

  /** The topic ended and this subscription read everything. */
  private ended(): boolean {
    return L.tailEnded(this.p.i32, this.p.base) && this.cursor >= L.tailSeq(this.p.i32, this.p.base);
  }

  /** The next message if one was published and not yet read; undefined if none (or the topic ended). */
  tryReceive(): T | undefined {
    this.assertOpen();
    const v = this.take();
    return v === NONE || v === END ? undefined : v;
  }

  private readonly ready = (): boolean => {
    return L.tailEnded(this.p.i32, this.p.base) || this.cursor < L.tailSeq(this.p.i32, this.p.base);
  };

  /** @internal What a WaitSet waits on: the published word, and "a message or the end is there". */
  waitTarget(): WaitTarget {
    this.assertOpen();
    return { flag: this.p.published, ready: () => this.closed || this.ready(), segment: this.p.segment };
  }

  /**
   * The next message, waiting without blocking the event loop. Takes `timeout`, `signal` and
   * `spin`. Rejects with ERR_SHMKIT_CLOSED once the topic ended and everything was read.
   */
  async receive(options?: AsyncWaitOptions): Promise<T> {
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (isAborted(o.signal)) throw this.errors.aborted(o.signal!, 'receive');
    const r = await this.receiveParsed(o);
    if (r === END) throw this.errors.closed(' (ended, and everything was read)');
    return r;
  }

  private async receiveParsed(o: ParsedWait): Promise<T | typeof END> {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      this.assertOpen();
      const v = this.take();
      if (v !== NONE) return v;
      this.f64[L.SUB_WAITS >> 3]! += 1;
      if (!(await this.p.published.wait(o, deadline, this.ready, null, 'receive'))) throw timeoutError(`${this.errors.label} receive`, o.timeout, this.p.segment.name);
    }
  }

  /** Like receive(), blocking the thread while it waits. */
  receiveSync(options?: WaitOptions): T {
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      this.assertOpen();
      const v = this.take();
      if (v === END) throw this.errors.closed(' (ended, and everything was read)');
      if (v !== NONE) return v;
      this.f64[L.SUB_WAITS >> 3]! += 1;
      if (!this.p.published.waitSync(o, deadline, this.ready, null)) throw timeoutError(`${this.errors.label} receiveSync`, o.timeout, this.p.segment.name);
    }
  }

  /** `for await (const m of subscription)`: every message until the topic ends or the subscription closes. */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this.iterate();
  }

  /** The iteration of `for await`, whose waits take `signal` and `timeout`. */
  iterate(options?: AsyncWaitOptions): AsyncIterableIterator<T> {
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    this.assertOpen();
    const done: IteratorResult<T> = Object.freeze({ value: undefined, done: true }) as IteratorResult<T>;
    const it: AsyncIterableIterator<T> = {
      next: async (): Promise<IteratorResult<T>> => {
        if (this.closed) return done;
        if (isAborted(o.signal)) throw this.errors.aborted(o.signal!, 'iterate');
        try {
          const v = await this.receiveParsed(o);
          return v === END ? done : { value: v, done: false };
        } catch (err) {
          if (this.closed && err instanceof ShmkitError && err.code === ErrorCodes.CLOSED) return done;
          throw err;
        }
      },
      // Leaving the loop early ends the subscription, as it destroys a stream: a forgotten live
      // subscriber would hold 'block' publishers up for good.
      return: async (): Promise<IteratorResult<T>> => {
        this.close();
        return done;
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  // Lifetime -------------------------------------------------------------------------------------

  /** Ends this subscription: its slot is freed, and a publisher waiting for it ('block') goes on. Idempotent. */
  close(): void {
    if (this.released) return;
    this.released = true;
    this.topic.forget(this);
    if (this.p.segment.int32.length === 0) return;
    Atomics.compareExchange(this.p.i64, (this.slot + L.SUB_TOKEN) >> 3, SELF_TOKEN, 0n);
    this.wakePublisher();
  }

  /** The same as close(). */
  unsubscribe(): void {
    this.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

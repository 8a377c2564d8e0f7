/**
 * Topic: publish/subscribe over one shared log. A publish writes its message once, into the slot
 * of its sequence number; every subscriber reads it with a cursor of its own, so the cost of a
 * publish does not grow with the number of subscribers. Publishers take sequence numbers one at a
 * time under a robust lock, which gives one total order. Under the 'block' policy a publisher waits
 * while the slowest live subscriber is a whole log behind (a dead one is evicted); under
 * 'overwrite' it never waits, and a subscriber that was lapped counts what it lost.
 *
 * A message is committed by advancing TAIL with a compare-and-swap, which fails once the topic is
 * ended: a publish either committed before the end (every subscriber gets it) or fails with
 * ERR_SHMKIT_CLOSED. A publisher that dies while writing never advanced TAIL: its slot is simply
 * written again by the next publish, and nobody waits for it. See docs/design.md ("Topics").
 */
import type { Codec } from '../codec/codec';
import { resolveCodec } from '../codec/codec';
import { type CodecPlan, type Encoded, planFor } from '../codec/plan';
import { reserveLength, utf8Write } from '../codec/utf8';
import { ErrorCodes, invalidArg, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { debug } from '../debug';
import { FlagWord, WAITING } from '../flag-word';
import { Handle } from '../handle';
import { SELF_TOKEN, tokenAlive } from '../identity';
import { openNamed, type OpenHow } from '../open';
import { Kind, type OpenOptions, Segment } from '../segment';
import { lockWithin, lockWithinAsync } from '../sync/lock-within';
import { Mutex } from '../sync/mutex';
import { type AsyncWaitOptions, DEFAULT, parseMode, parseWait, type ParsedWait, type WaitOptions } from '../sync/primitive';
import { parseTrust } from '../trust';
import { checkInt, checkObject, describe } from '../validate';
import { Deadline, tuning } from '../wait';
import * as L from './layout';
import type { Attached } from '../peer-watch';
import { Subscription, type SubscribeOptions } from './subscription';

export type { SubscribeOptions };

export interface TopicOptions<T = unknown> extends OpenOptions {
  /** Message slots in the log (2 to 2^20). Default 256. */
  capacity?: number;
  /** Largest message in bytes (each slot holds one). Default 4096. */
  maxMessageSize?: number;
  /** Subscriber slots (1 to 1024). Default 64. */
  maxSubscribers?: number;
  /** Messages kept for subscribers that start from 'history' (below capacity). Default 0. */
  history?: number;
  /** When the slowest subscriber is a whole log behind: 'block' (default) or 'overwrite'. */
  overflow?: 'block' | 'overwrite';
  /** 'multi' (default): any number of publishing handles, a lock round per publish; 'single': one at a time holds the role, no lock per publish. */
  publishers?: 'single' | 'multi';
  /** As for Channel: 'bytes' (default), 'utf8', 'json', 'jsonb', 'structured', or a Codec. */
  codec?: string | Codec<T>;
  /** Permission bits. Default 0o600. */
  mode?: number;
}

export interface OpenTopicOptions<T = unknown> extends OpenOptions {
  codec?: string | Codec<T>;
}

export interface TopicSubscriberStats {
  /** The next sequence number it reads. */
  seq: number;
  /** Messages published that it has not read. */
  lag: number;
  received: number;
  lost: number;
  /** Times it had to wait for a message (spinning, then maybe parking). */
  waits: number;
  pid: number;
  alive: boolean;
  /** One of this handle's subscriptions. */
  self: boolean;
}

/** A zero-copy publish: fill `bytes` in place, then commit. */
export interface TopicLoan {
  /** Writable space inside the log's slot, `size` bytes long. Do not use after commit() or abort(). */
  readonly bytes: Buffer;
  /** The sequence number the message gets when committed. */
  readonly seq: number;
  /** Publishes the first `length` bytes (default: all) as one message. */
  commit(length?: number): void;
  /** Gives the slot back; nothing is published. */
  abort(): void;
}

export interface TopicStats {
  /** Messages published: also the sequence number the next one gets. */
  published: number;
  ended: boolean;
  /** Times a publisher waited for the slowest subscriber ('block'). */
  publishWaits: number;
  subscribers: TopicSubscriberStats[];
}

/** @internal What a topic handle shares with its subscriptions. */
export interface TopicParts<T> {
  readonly segment: Segment;
  readonly params: L.TopicParams;
  readonly plan: CodecPlan<T>;
  readonly i32: Int32Array;
  readonly i64: BigInt64Array;
  readonly bytes: Buffer;
  readonly published: FlagWord;
  readonly consumed: FlagWord;
  readonly base: number;
  readonly slots: number;
  readonly slotBytes: number;
  readonly label: string;
}

/** A statistic read from shared memory: garbage (not finite, negative) reads as 0. */
const counter = (v: number): number => (Number.isFinite(v) && v >= 0 ? v : 0);

export class Topic<T = unknown> extends Handle {
  readonly capacity: number;
  readonly maxMessageSize: number;
  readonly maxSubscribers: number;
  readonly history: number;
  readonly overflow: 'block' | 'overwrite';
  readonly publishers: 'single' | 'multi';
  readonly codec: Codec<T>;
  /** @internal */
  readonly parts: TopicParts<T>;
  private readonly lock: Mutex;
  private readonly subs = new Set<Subscription<T>>();
  /** The lowest cursor of a live subscriber seen at the last scan ('block'). */
  private minSeen = 0;
  /** The subscriptions word when minSeen was computed: a new subscriber invalidates it. */
  private subscriptionsSeen = -1;
  private livenessCheckedAt = -Infinity;
  /** This handle holds the publisher lock (given back by close() if an async publish holds it). */
  private lockHeld = false;
  /** A loan of this handle is outstanding (it holds the lock until commit or abort). */
  private loaned = false;
  /** Single-publisher: this handle holds the publisher role (the lock, for its life). */
  private roleHeld = false;

  private constructor(segment: Segment, params: L.TopicParams, codec: Codec<T>) {
    super(segment, `topic "${segment.name}"`);
    this.capacity = params.capacity;
    this.maxMessageSize = params.maxMessageSize;
    this.maxSubscribers = params.maxSubscribers;
    this.history = params.history;
    this.overflow = params.overwrite ? 'overwrite' : 'block';
    this.publishers = params.singlePublisher ? 'single' : 'multi';
    this.codec = codec;
    const base = segment.dataOffset;
    this.parts = {
      segment,
      params,
      plan: planFor(codec),
      i32: segment.int32,
      i64: segment.bigint64,
      bytes: Buffer.from(segment.buffer),
      published: new FlagWord(segment, this.errors.label, (base + L.PUBLISHED_WORD) >> 2, (base + L.SUBSCRIBER_BELLS) >> 2, -1),
      consumed: new FlagWord(segment, this.errors.label, (base + L.CONSUMED_WORD) >> 2, (base + L.PUBLISHER_BELLS) >> 2, (base + L.PUBLISH_WAITS) >> 3),
      base,
      slots: base + L.slotsOffset(params),
      slotBytes: L.slotSize(params),
      label: this.errors.label,
    };
    this.lock = Mutex.at(segment, L.PUBLISHER_LOCK);
  }

  // Creation -------------------------------------------------------------------------------------

  private static named<T>(how: OpenHow, name: string, options: unknown): Topic<T> {
    const o = checkObject('options', options);
    const codec = resolveCodec(o.codec) as Codec<T>;
    const trust = parseTrust(o.trustedOwners);
    if (how === 'open') {
      return openNamed(how, name, { kind: Kind.TOPIC, size: 0, minSize: 0, mode: 0o600, trust }, (seg) => new Topic<T>(seg, L.readParams(seg), codec));
    }
    const capacity = o.capacity === undefined ? 256 : checkInt('options.capacity', o.capacity, L.MIN_CAPACITY, L.MAX_CAPACITY);
    const p: L.TopicParams = {
      capacity,
      maxMessageSize: o.maxMessageSize === undefined ? 4096 : checkInt('options.maxMessageSize', o.maxMessageSize, 1, L.MAX_MESSAGE),
      maxSubscribers: o.maxSubscribers === undefined ? 64 : checkInt('options.maxSubscribers', o.maxSubscribers, 1, L.MAX_SUBSCRIBERS),
      history: o.history === undefined ? 0 : checkInt('options.history', o.history, 0, capacity - 1),
      overwrite: false,
      singlePublisher: false,
    };
    if (o.publishers !== undefined && o.publishers !== 'single' && o.publishers !== 'multi') {
      throw invalidArg('options.publishers', `must be 'single' or 'multi', got ${describe(o.publishers)}`);
    }
    p.singlePublisher = o.publishers === 'single';
    if (o.overflow !== undefined && o.overflow !== 'block' && o.overflow !== 'overwrite') {
      throw invalidArg('options.overflow', `must be 'block' or 'overwrite', got ${describe(o.overflow)}`);
    }
    p.overwrite = o.overflow === 'overwrite';
    if (L.dataSize(p) > L.MAX_BYTES) throw invalidArg('options.capacity', `capacity x maxMessageSize is too large (${L.dataSize(p)} bytes)`);
    const spec = { kind: Kind.TOPIC, size: L.dataSize(p), minSize: 0, mode: parseMode(o), trust, initialize: (s: Segment) => L.writeParams(s, p) };
    return openNamed(how, name, spec, (seg) => new Topic<T>(seg, seg.created ? p : L.readParams(seg), codec));
  }

  /** Creates the topic (ERR_SHMKIT_EXISTS if the name is taken). */
  static create<T = unknown>(name: string, options?: TopicOptions<T>): Topic<T> {
    return Topic.named<T>('create', name, options);
  }

  /** Opens an existing topic; its capacity, sizes and policy come from it. */
  static open<T = unknown>(name: string, options?: OpenTopicOptions<T>): Topic<T> {
    return Topic.named<T>('open', name, options);
  }

  /** Opens the topic, or creates it with `options` (one racer creates). */
  static openOrCreate<T = unknown>(name: string, options?: TopicOptions<T>): Topic<T> {
    return Topic.named<T>('openOrCreate', name, options);
  }

  /** Removes the name; false if there was none. */
  static unlink(name: string): boolean {
    return Segment.unlink(name);
  }

  // Sequence numbers ---------------------------------------------------------------------------

  /** @internal TAIL without its ended bit: the sequence number of the next message. */
  tailSeq(): number {
    return L.tailSeq(this.parts.i32, this.parts.base);
  }

  /** Whether end() was called, by any process. After close(), true. */
  get ended(): boolean {
    if (this.closed) return true;
    return L.tailEnded(this.parts.i32, this.parts.base);
  }

  /** Messages published so far: the sequence number the next one gets. */
  get published(): number {
    this.assertOpen();
    return this.tailSeq();
  }

  // Publishing -----------------------------------------------------------------------------------

  private encode(value: T): { data: Encoded; len: number } {
    if (this.loaned) throw this.errors.busy('a loan of this handle is outstanding; commit or abort it first');
    const data = this.parts.plan.encodeStable(value);
    const len = reserveLength(data, this.maxMessageSize);
    if (len > this.maxMessageSize) {
      throw this.errors.error(ErrorCodes.TOO_LARGE, `a ${len}-byte message exceeds the maximum of ${this.maxMessageSize} bytes; nothing was published`);
    }
    return { data, len };
  }

  /** With the lock: whether message `s` may be written now ('overwrite': always). */
  private hasSpace(s: number): boolean {
    if (this.parts.params.overwrite) return true;
    const subscriptions = Atomics.load(this.parts.i32, (this.parts.base + L.SUBSCRIPTIONS) >> 2);
    if (subscriptions === this.subscriptionsSeen && s - this.minSeen < this.capacity) return true;
    // Read before the scan: a subscriber that joins during it makes the next publish scan again.
    this.subscriptionsSeen = subscriptions;
    this.minSeen = this.minCursor(s);
    return s - this.minSeen < this.capacity;
  }

  /**
   * The lowest cursor of the subscribers, `s` if none. A subscriber a whole log behind whose thread
   * is dead is evicted (checked at most four times per liveness interval): it never blocks a
   * publisher for longer than that.
   */
  private minCursor(s: number): number {
    const p = this.parts;
    let min = s;
    const now = performance.now();
    const checkLiveness = now - this.livenessCheckedAt >= tuning.livenessIntervalMs / 4;
    if (checkLiveness) this.livenessCheckedAt = now;
    for (let i = 0; i < this.maxSubscribers; i++) {
      const slot = p.base + L.SUBSCRIBERS + i * L.SUB_SIZE;
      const t = Atomics.load(p.i64, (slot + L.SUB_TOKEN) >> 3);
      if (t === 0n) continue;
      const c = L.readCursor(p.i32, slot + L.SUB_CURSOR);
      if (!(c >= 0 && c <= s)) continue; // garbage: a cursor outside 0..s blocks nobody
      if (s - c >= this.capacity && checkLiveness && t !== SELF_TOKEN && !tokenAlive(t)) {
        if (Atomics.compareExchange(p.i64, (slot + L.SUB_TOKEN) >> 3, t, 0n) === t) {
          debug('topic %s: evicted dead subscriber in slot %d (it was %d messages behind)', JSON.stringify(this.name), i, s - c);
        }
        continue;
      }
      if (c < min) min = c;
    }
    return min;
  }

  /** With the lock and space: writes message `s` into its slot, then commits it. */
  private writeAndCommit(s: number, data: Encoded, len: number): void {
    const p = this.parts;
    const slot = p.slots + (s % this.capacity) * p.slotBytes;
    const stamp = (slot + L.SLOT_STAMP) >> 2;
    // The payload writes below must not become visible before this stamp: on arm64 a release store
    // (or the store half of an exchange) does not order later stores, but a load-acquire of the same
    // word after it does (docs/design.md, "Topics: memory ordering"). On x86-64 stores stay in order.
    Atomics.exchange(p.i32, stamp, L.stampWriting(s));
    Atomics.load(p.i32, stamp);
    p.i64[(slot + L.SLOT_WRITER) >> 3] = SELF_TOKEN;
    let n = len;
    if (typeof data === 'string') n = utf8Write(p.bytes, data, slot + L.SLOT_PAYLOAD, len);
    else p.bytes.set(data, slot + L.SLOT_PAYLOAD);
    Atomics.store(p.i32, (slot + L.SLOT_LEN) >> 2, n);
    Atomics.store(p.i32, stamp, L.stampDone(s));
    const tail = p.base >> 3;
    if (Atomics.compareExchange(p.i64, tail, BigInt(s), BigInt(s + 1)) !== BigInt(s)) {
      throw this.errors.closed(' (ended)'); // the ended bit is set: nothing was published
    }
  }

  /**
   * With the lock: the sequence number of the next message, once the log has room for it ('block':
   * waiting for the slowest subscriber within the caller's deadline and signal). Throws if ended.
   */
  private async room(o: ParsedWait, deadline: Deadline, what: string): Promise<number> {
    const s = this.nextSeq();
    if (this.hasSpace(s)) return s;
    const ready = (): boolean => this.hasSpace(s) || this.ended;
    if (!(await this.parts.consumed.wait(o, deadline, ready, null, what))) throw timeoutError(`${this.errors.label} ${what}`, o.timeout, this.name);
    this.assertOpen(); // close() may have run meanwhile
    return this.nextSeq();
  }

  /** room(), blocking the thread. */
  private roomSync(o: ParsedWait, deadline: Deadline, what: string): number {
    const s = this.nextSeq();
    if (this.hasSpace(s)) return s;
    const ready = (): boolean => this.hasSpace(s) || this.ended;
    if (!this.parts.consumed.waitSync(o, deadline, ready, null)) throw timeoutError(`${this.errors.label} ${what}`, o.timeout, this.name);
    return this.nextSeq();
  }

  /** The state of the next message under the lock: its sequence number, or throws if ended. */
  private nextSeq(): number {
    if (L.tailEnded(this.parts.i32, this.parts.base)) throw this.errors.closed(' (ended)');
    return L.tailSeq(this.parts.i32, this.parts.base);
  }

  /**
   * Publishes `value` to every subscriber, waiting without blocking the event loop while the log is
   * full ('block'). Takes `timeout`, `signal` and `spin`. Resolves with the message's sequence
   * number. A publish that rejects published nothing.
   */
  async publish(value: T, options?: AsyncWaitOptions): Promise<number> {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (isAborted(o.signal)) throw this.errors.aborted(o.signal!, 'publish');
    const { data, len } = this.encode(value);
    const deadline = new Deadline(o.timeout);
    await this.acquireAsync(deadline, o.signal, 'publish');
    let s: number;
    try {
      this.assertOpen();
      s = await this.room(o, deadline, 'publish');
      this.writeAndCommit(s, data, len);
    } finally {
      this.unlockPublisher();
    }
    this.announce();
    return s;
  }

  /** Like publish(), blocking the thread while it waits for space. Returns the sequence number. */
  publishSync(value: T, options?: WaitOptions): number {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    const { data, len } = this.encode(value);
    const deadline = new Deadline(o.timeout);
    this.acquireSync(deadline, 'publishSync');
    let s: number;
    try {
      s = this.roomSync(o, deadline, 'publishSync');
      this.writeAndCommit(s, data, len);
    } finally {
      this.unlockPublisher();
    }
    this.announce();
    return s;
  }

  /**
   * After a commit: the published word moves (so a subscriber about to park on its old value does
   * not sleep through this message, whatever other subscribers did to the waiter bits meanwhile),
   * then the sleepers are woken.
   */
  private announce(): void {
    // Only when someone sleeps: a subscriber that sets its bit after this load reads TAIL again
    // after setting it, and sees the commit.
    if ((Atomics.load(this.parts.i32, this.parts.published.word) & WAITING) === 0) return;
    Atomics.add(this.parts.i32, this.parts.published.word, L.STEP);
    this.parts.published.wakeWaiters();
  }

  private unlockPublisher(): void {
    if (!this.lockHeld || this.roleHeld) return; // close() gave it back meanwhile; a single publisher keeps it
    this.lockHeld = false;
    this.lock.unlock();
  }

  /**
   * A single-publisher topic: the publisher lock is this handle's role, taken at its first publish
   * and held until close() (no lock round per publish). ERR_SHMKIT_BUSY if another live handle holds
   * it; a dead holder's is taken over.
   */
  private claimRole(): void {
    if (this.roleHeld) return;
    if (this.lock.tryLock() === null) throw this.errors.busy('it is single-publisher and another live publisher holds that role');
    this.roleHeld = true;
    this.lockHeld = true;
  }

  private acquireSync(deadline: Deadline, what: string): void {
    if (this.parts.params.singlePublisher) return this.claimRole();
    lockWithin(this.lock, deadline, this.errors.op(what), this.name);
    this.lockHeld = true;
  }

  private async acquireAsync(deadline: Deadline, signal: AbortSignal | undefined, what: string): Promise<void> {
    if (this.parts.params.singlePublisher) return this.claimRole();
    await lockWithinAsync(this.lock, deadline, signal, this.errors.op(what), this.name, true);
    this.lock.settle();
    // Released while the lock was being taken: the close hook gave it back already.
    if (this.life.released || this.segment.int32.length === 0) throw this.errors.released();
    this.lockHeld = true;
  }

  /** Takes the publisher lock (or role) without waiting; false if another holds it (multi-publisher). */
  private tryAcquire(): boolean {
    if (this.parts.params.singlePublisher) {
      this.claimRole();
      return true;
    }
    if (this.lock.tryLock() === null) return false;
    this.lockHeld = true;
    return true;
  }

  /**
   * Publishes if that needs no waiting: the publisher lock is free and ('block') the log has
   * space. Returns the sequence number, or -1.
   */
  tryPublish(value: T): number {
    this.assertOpen();
    const { data, len } = this.encode(value);
    if (!this.tryAcquire()) return -1;
    let s: number;
    try {
      s = this.nextSeq();
      if (!this.hasSpace(s)) return -1;
      this.writeAndCommit(s, data, len);
    } finally {
      this.unlockPublisher();
    }
    this.announce();
    return s;
  }

  // Loans ----------------------------------------------------------------------------------------

  /** With the lock and space: marks slot `s` as being written and lends its payload until commit or abort. */
  private lend(s: number, size: number): TopicLoan {
    const p = this.parts;
    const slot = p.slots + (s % this.capacity) * p.slotBytes;
    const stamp = (slot + L.SLOT_STAMP) >> 2;
    Atomics.exchange(p.i32, stamp, L.stampWriting(s));
    Atomics.load(p.i32, stamp); // the payload writes stay after the stamp (see writeAndCommit)
    p.i64[(slot + L.SLOT_WRITER) >> 3] = SELF_TOKEN;
    this.loaned = true;
    let done = false;
    const finish = (): void => {
      done = true;
      this.loaned = false;
      this.unlockPublisher();
    };
    return {
      bytes: p.bytes.subarray(slot + L.SLOT_PAYLOAD, slot + L.SLOT_PAYLOAD + size),
      seq: s,
      commit: (length = size) => {
        if (done) throw this.errors.busy('this loan was already committed or aborted');
        checkInt('length', length, 0, size);
        if (this.closed) throw this.errors.released(); // close() gave the loan up
        try {
          Atomics.store(p.i32, (slot + L.SLOT_LEN) >> 2, length);
          Atomics.store(p.i32, stamp, L.stampDone(s));
          if (Atomics.compareExchange(p.i64, p.base >> 3, BigInt(s), BigInt(s + 1)) !== BigInt(s)) throw this.errors.closed(' (ended)');
        } finally {
          finish();
        }
        this.announce();
      },
      abort: () => {
        if (done) return;
        finish(); // the slot keeps its "being written" stamp: the next publish writes it again
      },
    };
  }

  private loanStart(size: number): void {
    this.assertOpen();
    checkInt('size', size, 0, this.maxMessageSize);
    if (this.loaned) throw this.errors.busy('a loan of this handle is outstanding; commit or abort it first');
  }

  /**
   * Zero-copy publish: reserves the next sequence number's slot (waiting for space like publish(),
   * without blocking the event loop) and lends `size` bytes of it to fill in place; commit() then
   * publishes. Other publishers wait until the loan is committed or aborted: keep loans short.
   */
  async loan(size: number, options?: AsyncWaitOptions): Promise<TopicLoan> {
    this.loanStart(size);
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (isAborted(o.signal)) throw this.errors.aborted(o.signal!, 'loan');
    const deadline = new Deadline(o.timeout);
    await this.acquireAsync(deadline, o.signal, 'loan');
    try {
      return this.lend(await this.room(o, deadline, 'loan'), size);
    } catch (err) {
      this.unlockPublisher();
      throw err;
    }
  }

  /** Like loan(), blocking the thread while it waits for space. */
  loanSync(size: number, options?: WaitOptions): TopicLoan {
    this.loanStart(size);
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    const deadline = new Deadline(o.timeout);
    this.acquireSync(deadline, 'loanSync');
    try {
      return this.lend(this.roomSync(o, deadline, 'loanSync'), size);
    } catch (err) {
      this.unlockPublisher();
      throw err;
    }
  }

  /** A loan if it needs no waiting (the lock is free and, under 'block', the log has room); else null. */
  tryLoan(size: number): TopicLoan | null {
    this.loanStart(size);
    if (!this.tryAcquire()) return null;
    try {
      const s = this.nextSeq();
      if (!this.hasSpace(s)) {
        this.unlockPublisher();
        return null;
      }
      return this.lend(s, size);
    } catch (err) {
      this.unlockPublisher();
      throw err;
    }
  }

  /**
   * Ends the topic for everyone: publishing fails with ERR_SHMKIT_CLOSED from now on; subscribers
   * read what was published, then see the end. Never waits.
   */
  end(): void {
    this.assertOpen();
    const tail = this.parts.base >> 3;
    Atomics.or(this.parts.i64, tail, L.ENDED_BIT);
    Atomics.add(this.parts.i32, this.parts.published.word, L.STEP);
    Atomics.add(this.parts.i32, this.parts.consumed.word, L.STEP);
    this.parts.published.wakeAll();
    this.parts.consumed.wakeAll();
    debug('topic %s ended by pid %d', JSON.stringify(this.name), process.pid);
  }

  // Subscribing ----------------------------------------------------------------------------------

  /**
   * A subscription of this handle: it gets every message published from its starting point on, in
   * publish order. `from`: 'now' (default), 'history' (the last `history` messages kept), or a
   * sequence number seen before (to resume). `lagged`: 'count' (default: `lost` counts what an
   * 'overwrite' topic overwrote before it was read) or 'throw' (ERR_SHMKIT_LAGGED as well).
   * ERR_SHMKIT_BUSY when every subscriber slot has a live subscriber.
   */
  subscribe(options?: SubscribeOptions): Subscription<T> {
    this.assertOpen();
    const sub = Subscription.start<T>(this, this.parts, this.errors, options);
    this.subs.add(sub);
    return sub;
  }

  /** @internal A subscription that ended. */
  forget(sub: Subscription<T>): void {
    this.subs.delete(sub);
  }

  /** @internal Who is subscribed, by subscriber slot (Event.watch). */
  attachments(): Map<number, Attached> {
    this.assertOpen();
    const m = new Map<number, Attached>();
    for (let i = 0; i < this.maxSubscribers; i++) {
      const t = Atomics.load(this.parts.i64, (this.parts.base + L.SUBSCRIBERS + i * L.SUB_SIZE + L.SUB_TOKEN) >> 3);
      if (t !== 0n) m.set(i, { token: t, role: 'subscriber', departed: false });
    }
    return m;
  }

  // State ----------------------------------------------------------------------------------------

  /** The counters of every subscriber, from shared memory (untrusted: garbage reads as 0). */
  stats(): TopicStats {
    this.assertOpen();
    const p = this.parts;
    const published = this.tailSeq();
    const f64 = new Float64Array(p.segment.buffer, p.base, (L.SUBSCRIBERS + this.maxSubscribers * L.SUB_SIZE) >> 3);
    const subscribers: TopicSubscriberStats[] = [];
    const mine = new Set([...this.subs].map((s) => s.slotIndex));
    for (let i = 0; i < this.maxSubscribers; i++) {
      const slot = L.SUBSCRIBERS + i * L.SUB_SIZE;
      const t = Atomics.load(p.i64, (p.base + slot + L.SUB_TOKEN) >> 3);
      if (t === 0n) continue;
      const seq = L.readCursor(p.i32, p.base + slot + L.SUB_CURSOR);
      subscribers.push({
        seq,
        lag: Math.max(0, published - seq),
        received: counter(f64[(slot + L.SUB_RECEIVED) >> 3]!),
        lost: counter(f64[(slot + L.SUB_LOST) >> 3]!),
        waits: counter(f64[(slot + L.SUB_WAITS) >> 3]!),
        pid: Number(t & 0x3fffffn),
        alive: t === SELF_TOKEN || tokenAlive(t),
        self: mine.has(i),
      });
    }
    return { published, ended: this.ended, publishWaits: counter(f64[L.PUBLISH_WAITS >> 3]!), subscribers };
  }

  protected override inspectFields(): Record<string, unknown> {
    return { name: this.name, capacity: this.capacity, maxMessageSize: this.maxMessageSize, overflow: this.overflow, codec: this.codec.name, published: this.tailSeq(), subscriptions: this.subs.size };
  }

  /** Releases this handle and its subscriptions (their slots are freed). The topic lives on. */
  close(): void {
    this.dispose();
  }

  protected release(): void {
    for (const sub of [...this.subs]) sub.close();
    this.subs.clear();
    if (this.lockHeld && this.segment.int32.length > 0) {
      // An async publish waits for space holding the lock, or this handle holds the single
      // publisher's role: give it back while the memory is mapped.
      this.lockHeld = false;
      this.roleHeld = false;
      try {
        this.lock.unlock();
      } catch {
        // taken over meanwhile (we were presumed dead): nothing to give back
      }
    }
    this.segment.close();
  }
}


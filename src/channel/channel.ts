/**
 * Channel: a message queue in a shared-memory segment. Variable-length messages, any number of
 * producers and consumers across processes (or a declared single producer / single consumer for
 * the fast path), each message delivered to exactly one consumer, in order per producer.
 *
 * The ring (see docs/design.md, "Channels"):
 * - `tail` and `head` are 32-bit positions that wrap mod 2^32; the capacity is a power of two, so
 *   `(tail - head) >>> 0` is the number of bytes in use and `pos & (capacity - 1)` the ring index.
 * - A record is `u32 length, u32 tag, payload`, padded to 8 bytes. `tag = pos ^ TAG_MAGIC` ties the
 *   record to its position: bytes left from an earlier lap never pass for a record. A record never
 *   wraps: a PAD record fills the end of the ring instead.
 * - A producer writes the whole record, then publishes it with one sequentially consistent CAS of
 *   `tail`. A consumer reads `tail`, reads the records before it, then exchanges `head`. So a consumer
 *   never sees a record that is not completely written, and a producer never overwrites bytes a
 *   consumer may still read.
 * - Multi-producer channels serialize producers with a robust Mutex held across reserve, copy and
 *   publish; a producer killed in the middle never published anything, and the next producer
 *   recovers the lock and writes over its unpublished bytes. Consumers likewise. Single-producer
 *   (single-consumer) channels hold that lock for the life of the handle instead: the role is
 *   exclusive, no per-message lock is taken, and a dead holder's role can be taken over.
 * - The low 3 bits of the `tail` and `head` words are flags (closed, futex waiter, doorbell
 *   waiter). A blocked receiver (sender) sets its bit in `tail` (`head`) and parks; the publishing
 *   CAS (the consuming exchange) returns the bit, clears it and wakes. A flowing channel makes no
 *   system call and no atomic access beyond that CAS and that exchange.
 * - Everything read from shared memory is checked before use: a garbage `tail`, `head`, length or
 *   tag raises ERR_SHMKIT_CORRUPT; no read leaves the ring, and no loop runs without progress.
 */
import { abortError, closedError, ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { checkName, Kind, type OpenOptions, Segment } from '../segment';
import { tokenAlive } from '../identity';
import { lockWithin, lockWithinAsync } from '../sync/lock-within';
import { parseTrust, type Trust } from '../trust';
import { Mutex, type MutexGuard } from '../sync/mutex';
import { parseWait, type ParsedWait, DEFAULT } from '../sync/primitive';
import { checkInt, checkObject, describe } from '../validate';
import { Deadline, parkAsync, parkSync, pause, spin, spinEnd, tuning, wake } from '../wait';
import { bellWait, disableBells, ownBell, registerBell, ringAll, unregisterBell } from '../bell';
import { bytes as bytesCodec, type Codec, json as jsonCodec, jsonb as jsonbCodec, resolveCodec, utf8 as utf8Codec, type CodecName } from './codec';
import { decodeRange as jsonbDecode, encodeShared as jsonbEncode } from './jsonb';
import * as L from './layout';
import { bufferView, Slab } from './slab';
import { PeerTable, type PeerInfo, ROLE_CONSUMER, ROLE_PRODUCER } from './peers';
import { ACKED, LeaseTable } from './leases';

export interface ChannelOptions<T = unknown> extends OpenOptions {
  /** Ring size in bytes, rounded up to a power of two (1 KiB .. 1 GiB). Default 1 MiB. */
  capacity?: number;
  /** Largest message in bytes. Default and maximum: capacity / 2 - 8. */
  maxMessageSize?: number;
  /** 'multi' (default): any number of producers. 'single': one at a time, no per-message lock. */
  producers?: 'single' | 'multi';
  /** 'multi' (default): any number of consumers. 'single': one at a time, no per-message lock. */
  consumers?: 'single' | 'multi';
  /**
   * 'at-most-once' (default): a message is consumed when it is received; if the receiver dies
   * before it is done with it, it is lost. 'at-least-once': consumers take() a message and ack()
   * it when done; a message whose taker dies (or nacks) before acking is delivered again to
   * another consumer. Fixed at creation.
   */
  delivery?: 'at-most-once' | 'at-least-once';
  /** 'bytes' (default), 'utf8', 'json', 'structured', or a Codec object. Per handle, not stored. */
  codec?: CodecName | Codec<T>;
  /** Permission bits of the segment. Default 0o600. */
  mode?: number;
}

export interface OpenChannelOptions<T = unknown> extends OpenOptions {
  codec?: CodecName | Codec<T>;
}

export interface ChannelWaitOptions {
  /** Milliseconds; then ERR_SHMKIT_TIMEOUT. Default: forever. */
  timeout?: number;
  /** Spin budget in µs before parking (default: configure().spinMicros; 0 = park at once). */
  spin?: number;
  /** Fail with ERR_SHMKIT_PEER_GONE when every peer of the other role has died (or detached after having attached). */
  failIfPeerGone?: boolean;
}

export interface ChannelAsyncOptions extends ChannelWaitOptions {
  signal?: AbortSignal;
}

export interface ChannelStats {
  sent: number;
  sentBytes: number;
  received: number;
  receivedBytes: number;
  /** Times a sender had to park because the ring was full. */
  sendWaits: number;
  /** Times a receiver had to park because the ring was empty. */
  receiveWaits: number;
  /** Messages queued (sent - received). */
  depth: number;
  /** Bytes of the ring in use, record headers and padding included. */
  depthBytes: number;
  capacity: number;
  closed: boolean;
  /** Live peers (processes or threads) that have sent / received on this channel. */
  producers: number;
  consumers: number;
}

/**
 * A message taken from an at-least-once channel. It stays in the channel, leased to this handle,
 * until ack(); if this process dies first (or calls nack()), another consumer gets it again.
 */
export interface Delivery<T> {
  readonly value: T;
  /** True if a consumer took this message before and died (or nacked) without acknowledging it. */
  readonly redelivered: boolean;
  /** Acknowledges the message: it is done, and its space goes back to producers. Idempotent. */
  ack(): void;
  /** Gives the message back unacknowledged, for another delivery at once. */
  nack(): void;
}

/** A record taken under the consumer lock, before decoding. */
interface Taken {
  slot: number;
  pos: number;
  redelivered: boolean;
}

const noop = (): void => {};

/** What tryReceiveResult() found. */
export type TryReceiveResult<T> = { ok: true; value: T } | { ok: false; reason: 'empty' | 'ended' | 'busy' };

/** A zero-copy view of a received message, valid until release(). */
export interface ReceivedView {
  /** The message bytes, inside shared memory. Do not use after release(). */
  readonly bytes: Buffer;
  /** Consumes the message and gives its space back to producers. Idempotent. */
  release(): void;
}

/** A zero-copy send: fill `bytes` in place, then commit. */
export interface Loan {
  /** Writable space inside shared memory, `size` bytes long. */
  readonly bytes: Buffer;
  /** Publishes the first `length` bytes (default: all) as one message. */
  commit(length?: number): void;
  /** Gives the space back; nothing is sent. */
  abort(): void;
}

// Buffer's own UTF-8 routines without the argument handling of toString()/write() (present in
// Node 20-26; feature-detected, with the public methods as the fallback).
type Utf8Buffer = Buffer & { utf8Slice?(start: number, end: number): string; utf8Write?(s: string, offset: number, length: number): number };
const hasUtf8 = typeof (Buffer.prototype as Utf8Buffer).utf8Slice === 'function' && typeof (Buffer.prototype as Utf8Buffer).utf8Write === 'function';
const utf8Slice = hasUtf8
  ? (b: Buffer, s: number, e: number): string => (b as Utf8Buffer).utf8Slice!(s, e)
  : (b: Buffer, s: number, e: number): string => b.toString('utf8', s, e);
const utf8Write = hasUtf8
  ? (b: Buffer, str: string, off: number, len: number): number => (b as Utf8Buffer).utf8Write!(str, off, len)
  : (b: Buffer, str: string, off: number, len: number): number => b.write(str, off, len, 'utf8');

/** Strings up to this many UTF-16 units reserve 3 bytes per unit and shrink after writing. */
const STRING_BOUND_CHARS = 4096;

const NONE: unique symbol = Symbol('none');
const END: unique symbol = Symbol('end');

type Encoded = Uint8Array | string;

function roundUpPow2(n: number): number {
  let p = L.MIN_CAPACITY;
  while (p < n) p *= 2;
  return p;
}

export class Channel<T = unknown> implements AsyncIterable<T> {
  readonly name: string;
  readonly segment: Segment;
  readonly capacity: number;
  readonly maxMessageSize: number;
  readonly multiProducer: boolean;
  readonly multiConsumer: boolean;
  /** 'at-least-once' channels: take()/ack(), redelivery after a consumer's death. */
  readonly atLeastOnce: boolean;
  readonly codec: Codec<T>;

  private readonly i32: Int32Array;
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  private readonly ring: Buffer;
  private readonly ringI32: Int32Array;
  private slabStore: Slab | null = null;
  private get slab(): Slab {
    return (this.slabStore ??= new Slab());
  }
  private readonly mask: number;
  private readonly ringWord: number; // u32 index of ring byte 0
  private readonly iTail: number;
  private readonly iHead: number;
  private readonly iClosed: number;
  private readonly iPBells: number; // first slot of the producers' doorbell table
  private readonly iCBells: number; // consumers'
  private readonly fSent: number;
  private readonly fSentBytes: number;
  private readonly fSendWaits: number;
  private readonly fRecv: number;
  private readonly fRecvBytes: number;
  private readonly fRecvWaits: number;
  private readonly producerLock: Mutex;
  private readonly consumerLock: Mutex;
  private readonly peers: PeerTable;
  private readonly leases: LeaseTable | null;
  private readonly iRead: number;
  /** At-least-once: when the lease table was last checked for dead takers (performance.now()). */
  private deadCheckedAt = 0;
  /** At-least-once: the taker-liveness cache (token -> valid until, ms; -1: dead) and this handle's unacked deliveries (slot -> position). */
  private readonly aliveUntil = new Map<bigint, number>();
  private readonly held = new Map<number, number>();
  /** At-least-once batches: a decode failure found after some messages, reported by the next take. */
  private deferred: unknown = undefined;
  private takesSinceDeadCheck = 0;
  private readonly fastDecode: 0 | 1 | 2 | 3 | 4; // custom, bytes, utf8, json, jsonb

  // Producer state: `tail` is authoritative while this handle holds the producer role.
  private tail = 0;
  private headCache = 0;
  private producerGuard: MutexGuard | null = null;
  private producer = false;
  // Consumer state.
  private head = 0;
  private tailCache = 0;
  private consumerGuard: MutexGuard | null = null;
  private consumer = false;
  // Result of locate(): payload offset in the ring, its length, and the position after it.
  private recStart = 0;
  private recLen = 0;
  private recNext = 0;
  // Result of reserve(): the producer's position after the reserved record (never shared with
  // the consumer side's recNext: a handle may send and receive, with a loan or view outstanding).
  private prodNext = 0;
  private outstanding: 'view' | 'loan' | null = null;
  /** Set by a try-take that found the consumer lock held by another consumer (tryReceiveResult). */
  private lastTryBusy = false;
  private disconnected = false;
  /** Single-producer role held, bytes codec, no loan: send() takes sendFast(). */
  private fastSend = false;
  /** Single-consumer role held, no view outstanding: receive() tries receiveFast() first. */
  private fastReceive = false;

  private constructor(segment: Segment, params: L.ChannelParams, codec: Codec<T>) {
    this.name = segment.name;
    this.segment = segment;
    this.capacity = params.capacity;
    this.maxMessageSize = params.maxMessageSize;
    this.multiProducer = params.multiProducer;
    this.multiConsumer = params.multiConsumer;
    this.atLeastOnce = params.atLeastOnce;
    this.codec = codec;
    const base = segment.dataOffset;
    const buf = segment.buffer;
    this.i32 = segment.int32;
    this.u32 = new Uint32Array(buf, 0, buf.byteLength >> 2);
    this.f64 = new Float64Array(buf, 0, buf.byteLength >> 3);
    this.ring = Buffer.from(buf, base + L.RING, params.capacity);
    this.ringI32 = new Int32Array(buf, base + L.RING, params.capacity >> 2);
    this.mask = params.capacity - 1;
    this.ringWord = (base + L.RING) >> 2;
    const w = (off: number): number => (base + off) >> 2;
    const d = (off: number): number => (base + off) >> 3;
    this.iTail = w(L.TAIL);
    this.iHead = w(L.HEAD);
    this.iClosed = w(L.CLOSED);
    this.iRead = w(L.READ);
    this.iPBells = w(L.PRODUCER_BELLS);
    this.iCBells = w(L.CONSUMER_BELLS);
    this.fSent = d(L.SENT);
    this.fSentBytes = d(L.SENT_BYTES);
    this.fSendWaits = d(L.SEND_WAITS);
    this.fRecv = d(L.RECEIVED);
    this.fRecvBytes = d(L.RECEIVED_BYTES);
    this.fRecvWaits = d(L.RECEIVE_WAITS);
    this.producerLock = Mutex.at(segment, L.PRODUCER_LOCK);
    this.consumerLock = Mutex.at(segment, L.CONSUMER_LOCK);
    this.peers = new PeerTable(this.i32, segment.bigint64, base);
    this.leases = params.atLeastOnce ? new LeaseTable(this.i32, segment.bigint64, base) : null;
    this.peers.register();
    const c = codec as Codec<unknown>;
    this.fastDecode = c === bytesCodec ? 1 : c === utf8Codec ? 2 : c === jsonCodec ? 3 : c === jsonbCodec ? 4 : 0;
  }

  // Creation -------------------------------------------------------------------------------------------

  private static parseCreate(options: unknown): { params: L.ChannelParams; mode: number; codec: Codec<unknown>; trust: Trust } {
    const o = checkObject('options', options);
    const capRaw = o.capacity === undefined ? 1 << 20 : checkInt('options.capacity', o.capacity, 1, L.MAX_CAPACITY);
    const capacity = roundUpPow2(capRaw);
    const maxAllowed = L.maxMessageFor(capacity);
    const maxMessageSize = o.maxMessageSize === undefined ? maxAllowed : checkInt('options.maxMessageSize', o.maxMessageSize, 0, 2 ** 31);
    if (maxMessageSize > maxAllowed) {
      throw invalidArg('options.maxMessageSize', `must be at most capacity / 2 - 8 = ${maxAllowed} for a capacity of ${capacity} bytes, got ${maxMessageSize}`);
    }
    const side = (name: string, v: unknown): boolean => {
      if (v === undefined || v === 'multi') return true;
      if (v === 'single') return false;
      throw invalidArg(name, `must be 'single' or 'multi', got ${describe(v)}`);
    };
    const multiProducer = side('options.producers', o.producers);
    const multiConsumer = side('options.consumers', o.consumers);
    if (o.delivery !== undefined && o.delivery !== 'at-most-once' && o.delivery !== 'at-least-once') {
      throw invalidArg('options.delivery', `must be 'at-most-once' or 'at-least-once', got ${describe(o.delivery)}`);
    }
    const atLeastOnce = o.delivery === 'at-least-once';
    const mode = o.mode === undefined ? 0o600 : checkInt('options.mode', o.mode, 0, 0o777);
    return { params: { capacity, maxMessageSize, multiProducer, multiConsumer, atLeastOnce }, mode, codec: resolveCodec(o.codec), trust: parseTrust(o.trustedOwners) };
  }

  /** Creates a channel; ERR_SHMKIT_EXISTS if the name is taken. */
  static create<T = unknown>(name: string, options?: ChannelOptions<T>): Channel<T> {
    checkName(name);
    const { params, mode, codec, trust } = Channel.parseCreate(options);
    const seg = Segment.createKind(name, { kind: Kind.CHANNEL, size: L.RING + params.capacity, mode, initialize: (s) => L.writeParams(s, params), trust });
    return new Channel<T>(seg, params, codec as Codec<T>);
  }

  /** Opens an existing channel. Capacity and modes come from the channel; the codec is yours. */
  static open<T = unknown>(name: string, options?: OpenChannelOptions<T>): Channel<T> {
    checkName(name);
    const o = checkObject('options', options);
    const codec = resolveCodec(o.codec);
    const seg = Segment.openKind(name, Kind.CHANNEL, parseTrust(o.trustedOwners));
    try {
      return new Channel<T>(seg, L.readParams(seg), codec as Codec<T>);
    } catch (err) {
      seg.close();
      throw err;
    }
  }

  /** Opens the channel, or creates it with `options` if it does not exist. */
  static openOrCreate<T = unknown>(name: string, options?: ChannelOptions<T>): Channel<T> {
    checkName(name);
    const { params, mode, codec, trust } = Channel.parseCreate(options);
    const seg = Segment.openOrCreateKind(name, { kind: Kind.CHANNEL, size: L.RING + params.capacity, mode, initialize: (s) => L.writeParams(s, params), trust });
    try {
      return new Channel<T>(seg, seg.created ? params : L.readParams(seg), codec as Codec<T>);
    } catch (err) {
      seg.close();
      throw err;
    }
  }

  /** Removes the channel's name. Returns false if it did not exist. */
  static unlink(name: string): boolean {
    return Segment.unlink(name);
  }

  unlink(): boolean {
    return Segment.unlink(this.name);
  }

  // State ----------------------------------------------------------------------------------------------

  private assertOpen(): void {
    if (this.disconnected || this.i32.length === 0) throw closedError(`channel "${this.name}" handle`, this.name);
  }

  /** Whether close() was called (by any process). Messages may still be queued. */
  get closed(): boolean {
    this.assertOpen();
    return Atomics.load(this.i32, this.iClosed) !== 0;
  }

  stats(): ChannelStats {
    this.assertOpen();
    const f = this.f64;
    const sent = f[this.fSent]!;
    const received = f[this.fRecv]!;
    return {
      sent,
      sentBytes: f[this.fSentBytes]!,
      received,
      receivedBytes: f[this.fRecvBytes]!,
      sendWaits: f[this.fSendWaits]!,
      receiveWaits: f[this.fRecvWaits]!,
      depth: Math.max(0, sent - received),
      depthBytes: Math.min(this.capacity, (this.loadTailPos() - this.loadHeadPos()) >>> 0),
      capacity: this.capacity,
      closed: Atomics.load(this.i32, this.iClosed) !== 0,
      producers: this.peers.liveOthers(ROLE_PRODUCER) + (this.producer ? 1 : 0),
      consumers: this.peers.liveOthers(ROLE_CONSUMER) + (this.consumer ? 1 : 0),
    };
  }

  /** The processes attached to this channel, their roles, and whether they live. */
  peerList(): PeerInfo[] {
    this.assertOpen();
    return this.peers.list();
  }

  /**
   * The published tail position. Bit 0 of the tail word is the "closed" marker (positions are
   * 8-aligned, so bits 0-2 carry no position): close() sets it, and a producer's publishing
   * compare-and-swap fails once it is set, so no send can succeed after a receiver saw the end.
   */
  private loadTailPos(): number {
    return (Atomics.load(this.i32, this.iTail) & L.POS_MASK) >>> 0;
  }

  private loadHeadPos(): number {
    return (Atomics.load(this.i32, this.iHead) & L.POS_MASK) >>> 0;
  }

  /**
   * Publishes `next` as the new tail if the word still holds position `prev`; false if closed
   * meanwhile. If a receiver advertised that it sleeps (a waiting bit), the same CAS clears the bit
   * and we wake it: the publishing CAS fails while the bit is set, so it cannot be missed.
   */
  private casTail(prev: number, next: number): boolean {
    let expect = prev | 0;
    for (;;) {
      const seen = Atomics.compareExchange(this.i32, this.iTail, expect, next | 0);
      if (seen === expect) break;
      if ((seen & L.POS_MASK) !== (prev | 0)) throw this.corrupt(`tail changed under the producer (expected ${prev}, found ${seen >>> 0})`);
      if ((seen & L.CLOSED_BIT) !== 0) return false;
      expect = seen;
    }
    if (expect !== (prev | 0)) this.wakeWord(this.iTail, this.iCBells, expect);
    return true;
  }

  /** Wakes the waiters that `flags` (the old value of a TAIL or HEAD word) says are there. */
  private wakeWord(word: number, bells: number, flags: number): void {
    if ((flags & L.FUTEX_WAITING) !== 0) wake(this.i32, word, 0);
    if ((flags & L.BELL_WAITING) !== 0) ringAll(this.i32, bells, L.BELL_SLOTS);
  }

  private corrupt(why: string): ShmkitError {
    return new ShmkitError(ErrorCodes.CORRUPT, `channel "${this.name}": ${why}`, { segment: this.name });
  }

  // Roles ----------------------------------------------------------------------------------------------

  /**
   * Declares this handle's role now instead of at its first send/receive: peers see it at once
   * (so they can tell later if it dies: failIfPeerGone), and in a single-producer/consumer channel
   * the role is taken now (ERR_SHMKIT_BUSY if a live holder has it).
   */
  claim(role: 'producer' | 'consumer'): void {
    this.assertOpen();
    if (role === 'producer') this.claimProducer();
    else if (role === 'consumer') this.claimConsumer();
    else throw invalidArg('role', `must be 'producer' or 'consumer', got ${describe(role)}`);
  }

  private claimProducer(): void {
    if (this.producer) return;
    if (!this.multiProducer) {
      const g = this.producerLock.tryLock();
      if (g === null) throw new ShmkitError(ErrorCodes.BUSY, `channel "${this.name}" is single-producer and another live producer holds that role`, { segment: this.name });
      this.producerGuard = g;
      this.tail = this.loadTailPos();
      this.headCache = this.loadHeadPos();
    }
    this.peers.addRole(ROLE_PRODUCER);
    this.producer = true;
    this.fastSend = !this.multiProducer && (this.fastDecode === 1 || this.fastDecode === 4);
  }

  private claimConsumer(): void {
    if (this.consumer) return;
    if (!this.multiConsumer) {
      const g = this.consumerLock.tryLock();
      if (g === null) throw new ShmkitError(ErrorCodes.BUSY, `channel "${this.name}" is single-consumer and another live consumer holds that role`, { segment: this.name });
      this.consumerGuard = g;
      this.head = this.loadHeadPos();
      this.tailCache = this.loadTailPos();
      if (g.recovered && this.leases) this.repairLeases(); // the previous consumer died mid-step
    }
    this.peers.addRole(ROLE_CONSUMER);
    this.consumer = true;
    this.fastReceive = !this.multiConsumer && !this.atLeastOnce;
  }

  // Producer side --------------------------------------------------------------------------------------

  /**
   * The message bytes (or a string, written as UTF-8 by put()). jsonb encodes into a buffer that
   * the next jsonb encode on this thread reuses: callers that may yield before the bytes are in the
   * ring (sendAsync) must copy them first.
   */
  private encode(value: T): Encoded {
    if (this.fastDecode === 4) return jsonbEncode(value);
    const data = this.codec.encode(value);
    if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
      if (ArrayBuffer.isView(data)) return new Uint8Array((data as ArrayBufferView).buffer, (data as ArrayBufferView).byteOffset, (data as ArrayBufferView).byteLength);
      throw invalidArg('message', `codec ${this.codec.name} returned ${describe(data)}, not bytes or a string`);
    }
    return data;
  }

  /**
   * Bytes to reserve for `data`. For a string up to STRING_BOUND_CHARS long this is an upper bound
   * (3 bytes per UTF-16 unit) and put() shrinks the record to what utf8Write wrote: measuring a
   * fresh string's UTF-8 length first costs about as much as writing it.
   */
  private byteLength(data: Encoded): number {
    if (typeof data === 'string' && data.length <= STRING_BOUND_CHARS && data.length * 3 <= this.maxMessageSize) return data.length * 3;
    const len = typeof data === 'string' ? Buffer.byteLength(data, 'utf8') : data.byteLength;
    if (len > this.maxMessageSize) {
      throw new ShmkitError(ErrorCodes.TOO_LARGE, `channel "${this.name}": a ${len}-byte message exceeds the maximum of ${this.maxMessageSize} bytes; nothing was sent`, { segment: this.name });
    }
    return len;
  }

  /** Bytes needed at the current tail for a record of `len`, padding included. */
  private need(pos: number, len: number): number {
    const rec = L.recordSize(len);
    const toEnd = this.capacity - (pos & this.mask);
    return rec <= toEnd ? rec : toEnd + rec;
  }

  /** Free bytes at `pos` given the last known head; refreshes the head once if short. */
  private free(pos: number, need: number): boolean {
    let used = (pos - this.headCache) >>> 0;
    if (this.capacity - used >= need) return true;
    this.headCache = this.loadHeadPos();
    used = (pos - this.headCache) >>> 0;
    if (used > this.capacity) throw this.corrupt(`head ${this.headCache} and tail ${pos} are ${used} bytes apart, more than the capacity`);
    return this.capacity - used >= need;
  }

  /**
   * Writes a record for `len` payload bytes at this.tail and returns the payload offset in the
   * ring, or -1 if there is no room. Does not publish. Caller holds the producer role or lock.
   */
  private reserve(len: number): number {
    let pos = this.tail;
    const need = this.need(pos, len);
    if (!this.free(pos, need)) return -1;
    let idx = pos & this.mask;
    if (need !== L.recordSize(len)) {
      // Pad to the end of the ring; the record starts at index 0.
      const w = this.ringWord + (idx >> 2);
      this.u32[w] = L.PAD;
      this.u32[w + 1] = (pos ^ L.TAG_MAGIC) >>> 0;
      pos = (pos + (this.capacity - idx)) >>> 0;
      idx = 0;
    }
    const w = this.ringWord + (idx >> 2);
    this.u32[w] = len;
    this.u32[w + 1] = (pos ^ L.TAG_MAGIC) >>> 0;
    this.prodNext = (pos + L.recordSize(len)) >>> 0;
    return idx + L.RECORD_HEADER;
  }

  /**
   * Publishes the reserved record (ending at `next`). Throws CLOSED if close() won the race.
   * The counters share the tail's cache line and are updated before the publishing CAS: after it, a
   * spinning consumer pulls the line, and writing the counters then would take it back (a second
   * transfer per message). Counted a moment early is harmless (statistics are racy snapshots).
   */
  private publish(len: number, next = this.prodNext): void {
    const f = this.f64;
    f[this.fSent]! += 1;
    f[this.fSentBytes]! += len;
    if (!this.casTail(this.tail, next)) {
      f[this.fSent]! -= 1;
      f[this.fSentBytes]! -= len;
      throw closedError(`channel "${this.name}"`, this.name);
    }
    this.tail = next;
  }

  /** One attempt to write `data`; false if the ring is full. Caller holds producer rights. */
  private put(data: Encoded, len: number): boolean {
    const off = this.reserve(len);
    if (off < 0) return false;
    if (typeof data === 'string') {
      const n = utf8Write(this.ring, data, off, len);
      if (n !== len) {
        // `len` was an upper bound (see byteLength): the record shrinks to the bytes written.
        this.u32[this.ringWord + ((off - L.RECORD_HEADER) >> 2)] = n;
        this.prodNext = (this.prodNext - L.recordSize(len) + L.recordSize(n)) >>> 0;
        len = n;
      }
    } else this.ring.set(data, off);
    this.publish(len);
    return true;
  }

  /**
   * One attempt under the multi-producer lock (or the held role). `deadline` null: do not wait
   * for the producer lock (trySend).
   */
  private attemptSend(data: Encoded, len: number, deadline: Deadline | null): boolean {
    if (this.outstanding === 'loan') throw this.busyError('a loan is outstanding; commit or abort it first');
    if (!this.multiProducer) {
      if (Atomics.load(this.i32, this.iClosed) !== 0) throw closedError(`channel "${this.name}"`, this.name);
      return this.put(data, len);
    }
    if (deadline === null) {
      if (this.producerLock.tryLock() === null) return false;
    } else lockWithin(this.producerLock, deadline, `channel "${this.name}" send`, this.name);
    try {
      return this.putLocked(data, len);
    } finally {
      this.producerLock.unlock();
    }
  }

  /** Multi-producer, holding the producer lock: refuse if closed, re-read the indexes, write. */
  private putLocked(data: Encoded, len: number): boolean {
    if (Atomics.load(this.i32, this.iClosed) !== 0) throw closedError(`channel "${this.name}"`, this.name);
    this.reloadProducerPositions();
    return this.put(data, len);
  }

  private reloadProducerPositions(): void {
    this.tail = this.loadTailPos();
    this.headCache = this.loadHeadPos();
    if (((this.tail - this.headCache) >>> 0) > this.capacity) throw this.corrupt('tail is more than a capacity ahead of head');
  }

  private busyError(why: string): ShmkitError {
    return new ShmkitError(ErrorCodes.BUSY, `channel "${this.name}": ${why}`, { segment: this.name });
  }

  /** Sends without waiting. Returns false if the ring is full. */
  trySend(value: T): boolean {
    try {
      if (this.fastSend) {
        if (this.fastDecode === 1) {
          if (this.sendFast(value)) return true;
        } else {
          const data = this.encode(value);
          if (this.sendFast(data)) return true;
          this.assertOpen();
          return this.attemptSend(data, this.byteLength(data), null);
        }
      }
      this.assertOpen();
      this.claimProducer();
      const data = this.encode(value);
      const len = this.byteLength(data);
      return this.attemptSend(data, len, null);
    } catch (err) {
      throw notPublished(err);
    }
  }

  /**
   * The common case written out flat: single producer (role held), bytes (the bytes codec's value
   * or jsonb's encoding), room in the ring, no padding needed. Returns false to fall back to the
   * general path (which re-checks everything).
   */
  private sendFast(data: unknown): boolean {
    if (!ArrayBuffer.isView(data) || !(data instanceof Uint8Array)) return false; // isView first: it never throws (a revoked Proxy)
    const len = data.byteLength;
    if (len > this.maxMessageSize || this.i32.length === 0) return false;
    const pos = this.tail;
    const rec = L.RECORD_HEADER + ((len + 7) & ~7);
    const idx = pos & this.mask;
    if (rec > this.capacity - idx) return false; // needs padding: general path
    if (this.capacity - ((pos - this.headCache) >>> 0) < rec) {
      this.headCache = this.loadHeadPos();
      const used = (pos - this.headCache) >>> 0;
      if (used > this.capacity || this.capacity - used < rec) return false;
    }
    const w = this.ringWord + (idx >> 2);
    this.u32[w] = len;
    this.u32[w + 1] = (pos ^ L.TAG_MAGIC) >>> 0;
    this.ring.set(data, idx + L.RECORD_HEADER);
    const next = (pos + rec) >>> 0;
    const f = this.f64;
    f[this.fSent]! += 1; // before the CAS: see publish()
    f[this.fSentBytes]! += len;
    if (!this.casTail(pos, next)) {
      f[this.fSent]! -= 1;
      f[this.fSentBytes]! -= len;
      return false; // closed meanwhile: the general path reports it
    }
    this.tail = next;
    return true;
  }

  /** Sends, waiting while the ring is full (backpressure). ERR_SHMKIT_TIMEOUT after `timeout` ms. */
  send(value: T, options?: ChannelWaitOptions): void {
    try {
      if (options === undefined && this.fastSend) {
        if (this.fastDecode === 1) {
          if (this.sendFast(value)) return;
        } else {
          // jsonb: encoded once; sendFast takes the bytes if there is room, else the general path.
          const data = this.encode(value);
          if (!this.sendFast(data)) this.sendEncoded(data, DEFAULT_CHANNEL);
          return;
        }
      }
      const o = parseChannelWait(options, false);
      this.assertOpen();
      this.claimProducer();
      this.sendEncoded(this.encode(value), o);
    } catch (err) {
      throw notPublished(err); // a send that throws never published its message
    }
  }

  private sendEncoded(data: Encoded, o: ParsedChannelWait): void {
    this.assertOpen();
    const len = this.byteLength(data);
    const deadline = new Deadline(o.timeout);
    if (this.attemptSend(data, len, deadline)) return;
    const spaceOrClosed = (): boolean => this.spaceFor(len) || Atomics.load(this.i32, this.iClosed) !== 0;
    for (;;) {
      if (!this.waitSync(this.iHead, this.iPBells, this.fSendWaits, o, deadline, spaceOrClosed, ROLE_CONSUMER, () => this.spinForSpace(len, o.spin))) {
        throw timeoutError(`channel "${this.name}" send`, o.timeout, this.name);
      }
      if (this.attemptSend(data, len, deadline)) return;
    }
  }

  /**
   * Like send(), without blocking the event loop. Accepts an AbortSignal. A sendAsync that rejects
   * (timeout, abort, close, peer gone) never published its message: the error has
   * `published: false`.
   */
  async sendAsync(value: T, options?: ChannelAsyncOptions): Promise<void> {
    try {
      await this.sendAsyncOrThrow(value, options);
    } catch (err) {
      throw notPublished(err);
    }
  }

  private async sendAsyncOrThrow(value: T, options?: ChannelAsyncOptions): Promise<void> {
    this.assertOpen();
    this.claimProducer();
    let data = this.encode(value);
    if (this.fastDecode === 4) data = Buffer.from(data as Uint8Array); // see encode()
    const len = this.byteLength(data);
    const o = options === undefined ? DEFAULT_CHANNEL : parseChannelWait(options, true);
    if (isAborted(o.signal)) throw abortError(o.signal, `channel "${this.name}" sendAsync`);
    const deadline = new Deadline(o.timeout);
    if (await this.attemptSendAsync(data, len, o, deadline)) return;
    const spaceOrClosed = (): boolean => this.spaceFor(len) || Atomics.load(this.i32, this.iClosed) !== 0;
    for (;;) {
      if (!(await this.waitAsync(this.iHead, this.iPBells, this.fSendWaits, o, deadline, spaceOrClosed, ROLE_CONSUMER, 'sendAsync', () => this.spinForSpace(len, o.spin)))) {
        throw timeoutError(`channel "${this.name}" sendAsync`, o.timeout, this.name);
      }
      if (await this.attemptSendAsync(data, len, o, deadline)) return;
    }
  }

  private async attemptSendAsync(data: Encoded, len: number, o: ParsedChannelWait, deadline: Deadline): Promise<boolean> {
    if (!this.multiProducer) return this.attemptSend(data, len, deadline);
    if (this.outstanding === 'loan') throw this.busyError('a loan is outstanding; commit or abort it first');
    // Multi-producer: take the lock without blocking the event loop, then send (briefly) under it.
    const g = await lockWithinAsync(this.producerLock, deadline, o.signal, `channel "${this.name}" sendAsync`, this.name);
    try {
      return this.putLocked(data, len);
    } finally {
      g.unlock();
    }
  }

  /**
   * Whether a record of `len` would fit now, with `slack` bytes to spare (racy snapshot; used to
   * decide whether to wake up). Garbage indexes count as "fits": the caller's checks report them.
   */
  private spaceFor(len: number, slack = 0): boolean {
    const tail = this.multiProducer ? this.loadTailPos() : this.tail;
    const used = (tail - this.loadHeadPos()) >>> 0;
    return used > this.capacity || this.capacity - used >= Math.min(this.capacity, this.need(tail, len) + slack);
  }

  /**
   * A sender's spin while the ring is full: wait until a record of `len` fits with room to spare
   * (a quarter of the ring, at most 256 KiB), polling HEAD about every 0.5 µs. The consumer writes
   * HEAD once per message, and every poll takes that cache line away from it: polling as fast as a
   * receiver polls TAIL made the consumer, the side that limits throughput, pay a cache miss per
   * message. Waiting for a batch of space lets the consumer run on lines it owns. True if ready.
   */
  private spinForSpace(len: number, micros: number): boolean {
    const budget = micros < 0 ? tuning.spinMicros : micros;
    if (budget <= 0) return false;
    const slack = Math.min(this.capacity >>> 2, 1 << 18);
    let end = 0;
    for (let k = 1; ; k++) {
      for (let j = 0; j < 24; j++) pause();
      if (this.i32.length === 0 || Atomics.load(this.i32, this.iClosed) !== 0 || this.spaceFor(len, slack)) return true;
      if ((k & 7) === 0 && (end = spinEnd(end, budget)) < 0) return false;
    }
  }

  /**
   * Zero-copy send: reserves `size` bytes in the ring (waiting for space like send()), for you to
   * fill in place, then commit(). In a multi-producer channel other producers wait until you commit
   * or abort, so keep loans short.
   */
  loan(size: number, options?: ChannelWaitOptions): Loan {
    this.assertOpen();
    checkInt('size', size, 0, this.maxMessageSize);
    this.claimProducer();
    if (this.outstanding !== null) throw this.busyError(`a ${this.outstanding} is outstanding`);
    const o = parseChannelWait(options, false);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      if (this.multiProducer) lockWithin(this.producerLock, deadline, `channel "${this.name}" loan`, this.name);
      let off: number;
      try {
        if (Atomics.load(this.i32, this.iClosed) !== 0) throw closedError(`channel "${this.name}"`, this.name);
        if (this.multiProducer) this.reloadProducerPositions();
        off = this.reserve(size);
      } catch (err) {
        if (this.multiProducer) this.producerLock.unlock();
        throw err;
      }
      if (off >= 0) return this.makeLoan(off, size);
      if (this.multiProducer) this.producerLock.unlock();
      const spaceOrClosed = (): boolean => this.spaceFor(size) || Atomics.load(this.i32, this.iClosed) !== 0;
      if (!this.waitSync(this.iHead, this.iPBells, this.fSendWaits, o, deadline, spaceOrClosed, ROLE_CONSUMER, () => this.spinForSpace(size, o.spin))) {
        throw timeoutError(`channel "${this.name}" loan`, o.timeout, this.name);
      }
    }
  }

  private makeLoan(off: number, size: number): Loan {
    this.outstanding = 'loan';
    const reservedNext = this.prodNext;
    const fast = this.fastSend;
    this.fastSend = false;
    const view = bufferView(this.ring.buffer, this.ring.byteOffset + off, size);
    let done = false;
    const finish = (): void => {
      done = true;
      this.outstanding = null;
      this.fastSend = fast;
      if (this.multiProducer) this.producerLock.unlock();
    };
    return {
      bytes: view,
      commit: (length = size) => {
        if (done) throw this.busyError('this loan was already committed or aborted');
        checkInt('length', length, 0, size);
        // Rewrite the header with the final length (the record only shrinks, so it still fits).
        const w = this.ringWord + ((off - L.RECORD_HEADER) >> 2);
        this.u32[w] = length;
        const next = (reservedNext - L.recordSize(size) + L.recordSize(length)) >>> 0;
        try {
          this.publish(length, next); // multi-producer: we hold the lock, so this.tail is current
        } finally {
          finish();
        }
      },
      abort: () => {
        if (done) return;
        finish();
      },
    };
  }

  /**
   * Closes the channel for everyone: further sends fail with ERR_SHMKIT_CLOSED; receivers get what
   * is queued, then the end. Never waits: a send in progress in another process either published
   * its message before the close (it is delivered) or fails with ERR_SHMKIT_CLOSED (nothing of it
   * is delivered). This handle stays usable for receiving; disconnect() releases it.
   */
  close(): void {
    this.assertOpen();
    if (this.outstanding === 'loan') throw this.busyError('a loan is outstanding; commit or abort it before close()');
    // The tail's closed bit comes first: from then on no producer's publishing CAS succeeds (the
    // CAS expects the word without it), so a receiver that sees the flag and an empty ring has
    // really seen the end. No lock is needed, so no live producer can hold close() up.
    Atomics.or(this.i32, this.iTail, L.CLOSED_BIT);
    Atomics.store(this.i32, this.iClosed, 1);
    // Change the HEAD word too, so a sender about to park on its old value returns at once and
    // re-checks (a consumer's exchange may clear this bit again; nothing reads it).
    Atomics.or(this.i32, this.iHead, L.CLOSED_BIT);
    this.wakeWord(this.iTail, this.iCBells, L.FUTEX_WAITING | L.BELL_WAITING);
    this.wakeWord(this.iHead, this.iPBells, L.FUTEX_WAITING | L.BELL_WAITING);
  }

  // Consumer side --------------------------------------------------------------------------------------

  /**
   * Finds the next record at this.head (reading tail as needed). Sets recStart/recLen/recNext and
   * returns true, or returns false if the ring is empty. Throws CORRUPT on inconsistent state.
   */
  private locate(): boolean {
    let pos = this.head;
    for (let hops = 0; hops < 2; hops++) {
      let avail = (this.tailCache - pos) >>> 0;
      if (avail === 0) {
        this.tailCache = this.loadTailPos();
        avail = (this.tailCache - pos) >>> 0;
        if (avail === 0) return false;
      }
      if (avail > this.capacity || (avail & 7) !== 0) throw this.corrupt(`tail ${this.tailCache} and head ${pos} are inconsistent`);
      const idx = pos & this.mask;
      const w = this.ringWord + (idx >> 2);
      const len = this.u32[w]!;
      if (this.u32[w + 1] !== ((pos ^ L.TAG_MAGIC) >>> 0)) throw this.corrupt(`record at position ${pos} has a bad tag`);
      if (len === L.PAD) {
        const pad = this.capacity - idx;
        if (pad > avail) throw this.corrupt(`padding at ${pos} runs past the tail`);
        pos = (pos + pad) >>> 0;
        this.head = pos; // skipping padding consumes nothing; the head is published with the record
        continue;
      }
      if (len > this.maxMessageSize) throw this.corrupt(`record at ${pos} claims ${len} bytes, more than the maximum ${this.maxMessageSize}`);
      const rec = L.recordSize(len);
      if (rec > avail || idx + rec > this.capacity) throw this.corrupt(`record at ${pos} runs past the tail or the ring's end`);
      this.recStart = idx + L.RECORD_HEADER;
      this.recLen = len;
      this.recNext = (pos + rec) >>> 0;
      return true;
    }
    throw this.corrupt('two padding records in a row');
  }

  private decode(): T {
    const s = this.recStart;
    const e = s + this.recLen;
    try {
      switch (this.fastDecode) {
        case 1:
          return this.slab.copy(this.ring, this.ringI32, s, this.recLen) as unknown as T;
        case 2:
          return utf8Slice(this.ring, s, e) as unknown as T;
        case 3:
          return JSON.parse(utf8Slice(this.ring, s, e)) as T;
        case 4:
          return jsonbDecode(this.ring, s, e) as T;
        default:
          return this.codec.decode(this.ring.subarray(s, e));
      }
    } catch (err) {
      throw new ShmkitError(ErrorCodes.DECODE, `channel "${this.name}": the ${this.codec.name} codec could not decode a ${this.recLen}-byte message (it was consumed)`, { segment: this.name, cause: err });
    }
  }

  /**
   * Publishes the head after consuming n messages: their space goes back to producers. The exchange
   * returns the flags a waiting sender set, and clears them: we wake it (see casTail).
   */
  private consumed(n: number, bytes: number): void {
    this.head = this.recNext;
    this.f64[this.fRecv]! += n;
    this.f64[this.fRecvBytes]! += bytes;
    const old = Atomics.exchange(this.i32, this.iHead, this.head | 0);
    if ((old & (L.FUTEX_WAITING | L.BELL_WAITING)) !== 0) this.wakeWord(this.iHead, this.iPBells, old);
  }

  /** Takes up to `max` messages (1 for a single receive). Returns NONE if empty. Holds consumer rights. */
  private takeLocked(max: number, into: T[] | null): T | typeof NONE {
    let first: T | typeof NONE = NONE;
    let n = 0;
    let bytes = 0;
    let failure: unknown;
    while (n < max && this.locate()) {
      let v: T;
      try {
        v = this.decode();
      } catch (err) {
        if (into !== null && into.length > 0) break; // deliver the good ones; the next call reports this one
        failure = err;
        n++;
        bytes += this.recLen;
        this.head = this.recNext;
        break;
      }
      n++;
      bytes += this.recLen;
      this.head = this.recNext;
      if (into) into.push(v);
      else first = v;
    }
    if (n > 0) {
      this.recNext = this.head;
      this.consumed(n, bytes);
    }
    if (failure !== undefined) throw failure;
    return first;
  }

  /**
   * Takes up to `max` messages. Multi-consumer: `lock` says how to get the consumer lock: 'wait'
   * (blocking, sync callers), 'try' (give up if another consumer holds it: try* calls and async
   * callers, which then wait for the lock with lockAsync), or 'held' (the caller holds it).
   */
  private takeMessages(max: number, into: T[] | null, lock: 'wait' | 'try' | 'held' = 'wait', deadline?: Deadline, what = 'receive'): T | typeof NONE {
    if (this.outstanding === 'view') {
      if (lock === 'held') this.consumerLock.unlock();
      throw this.busyError('a received view is outstanding; release it first');
    }
    if (!this.multiConsumer) return this.takeLocked(max, into);
    // 'wait': another consumer may hold the lock (e.g. with a view) while data is queued; waiting
    // for it honours the caller's deadline (timeout 0: one try, then ERR_SHMKIT_TIMEOUT).
    if (lock === 'wait') lockWithin(this.consumerLock, deadline ?? NO_DEADLINE, `channel "${this.name}" ${what}`, this.name);
    else if (lock === 'try' && !this.tryConsumerLock()) {
      this.lastTryBusy = true;
      return NONE;
    }
    try {
      this.head = this.loadHeadPos();
      this.tailCache = this.loadTailPos();
      return this.takeLocked(max, into);
    } finally {
      this.consumerLock.unlock();
    }
  }

  /**
   * Multi-consumer: takes the consumer lock without waiting and reloads the shared positions; false
   * if another consumer holds the lock. Single consumer: true (the role is held for good).
   */
  private tryEnterConsumer(): boolean {
    if (!this.multiConsumer) return true;
    if (!this.tryConsumerLock()) return false;
    this.head = this.loadHeadPos();
    this.tailCache = this.loadTailPos();
    return true;
  }

  /** The consumer lock without waiting (a plain CAS; liveness of a holder is checked by waits). */
  private tryConsumerLock(): boolean {
    return this.consumerLock.tryLock() !== null;
  }

  /**
   * Multi-consumer async: wait for the consumer lock without blocking the event loop (within the
   * caller's deadline and signal), then take.
   */
  private async takeMessagesAsync(max: number, into: T[] | null, signal: AbortSignal | undefined, deadline: Deadline, what: string): Promise<T | typeof NONE> {
    if (!this.multiConsumer) return this.takeMessages(max, into);
    const v = this.takeMessages(max, into, 'try');
    if (v !== NONE || (into && into.length) || !this.consumerLock.locked) return v;
    await lockWithinAsync(this.consumerLock, deadline, signal, `channel "${this.name}" ${what}`, this.name);
    return this.takeMessages(max, into, 'held');
  }

  /** True if nothing is queued and the channel is closed. */
  private drainedAndClosed(): boolean {
    if (Atomics.load(this.i32, this.iClosed) === 0) return false;
    // Closed: everything sent before close() is published before the flag (see close()).
    return this.isEmpty();
  }

  private isEmpty(): boolean {
    const head = this.multiConsumer ? this.loadHeadPos() : this.head;
    const tail = this.loadTailPos();
    if (tail === head) return true;
    // Only padding left is also empty for a receiver.
    const avail = (tail - head) >>> 0;
    const idx = head & this.mask;
    return avail === this.capacity - idx && this.u32[this.ringWord + (idx >> 2)] === L.PAD;
  }

  private dataOrClosed = (): boolean => !this.isEmpty() || Atomics.load(this.i32, this.iClosed) !== 0;

  /**
   * Like tryReceive(), and says why nothing was received: `{ ok: true, value }`, or
   * `{ ok: false, reason }` where reason is 'empty' (nothing queued now), 'ended' (closed and
   * drained: nothing will ever come) or 'busy' (another consumer holds the consumer lock, e.g.
   * with a view, so a queued message cannot be taken now; multi-consumer channels only).
   */
  tryReceiveResult(): TryReceiveResult<T> {
    this.assertOpen();
    this.claimConsumer();
    this.lastTryBusy = false;
    if (this.atLeastOnce) {
      const d = this.takeAcked(null, 'tryReceiveResult', true);
      if (d !== NONE) return { ok: true, value: d.value };
      if (this.lastTryBusy) return { ok: false, reason: 'busy' };
      return { ok: false, reason: this.ackedEnded() ? 'ended' : 'empty' };
    }
    const v = this.takeMessages(1, null, 'try');
    if (v !== NONE) return { ok: true, value: v };
    if (this.lastTryBusy) return { ok: false, reason: 'busy' };
    return { ok: false, reason: this.drainedAndClosed() ? 'ended' : 'empty' };
  }

  /** Receives a message if one is queued; undefined if none (or the channel ended). */
  tryReceive(): T | undefined {
    if (this.fastReceive) {
      const v = this.receiveFast();
      if (v !== NONE) return v;
    }
    this.assertOpen();
    this.claimConsumer();
    if (this.atLeastOnce) {
      const d = this.takeAcked(null, 'tryReceive', true);
      return d === NONE ? undefined : d.value;
    }
    const v = this.takeMessages(1, null, 'try');
    return v === NONE ? undefined : v;
  }

  /**
   * The common receive written out flat: single consumer (role held), a plain record at the head.
   * Returns NONE to fall back to the general path (empty ring, padding, anything unusual).
   */
  private receiveFast(): T | typeof NONE {
    const pos = this.head;
    if (pos === this.tailCache) {
      if (this.i32.length === 0) return NONE;
      this.tailCache = this.loadTailPos();
      if (pos === this.tailCache) return NONE;
    }
    const avail = (this.tailCache - pos) >>> 0;
    const idx = pos & this.mask;
    const w = this.ringWord + (idx >> 2);
    const len = this.u32[w]!;
    if (len > this.maxMessageSize || this.u32[w + 1] !== ((pos ^ L.TAG_MAGIC) >>> 0)) return NONE; // padding or damage
    const rec = L.RECORD_HEADER + ((len + 7) & ~7);
    if (avail > this.capacity || rec > avail || idx + rec > this.capacity) return NONE;
    this.recStart = idx + L.RECORD_HEADER;
    this.recLen = len;
    this.recNext = (pos + rec) >>> 0;
    try {
      return this.fastDecode === 1 ? (this.slab.copy(this.ring, this.ringI32, this.recStart, len) as unknown as T) : this.decode();
    } finally {
      this.consumed(1, len); // after the copy; also for a poison message, which must not block the channel
    }
  }

  /**
   * The waiting single consumer's spin, written out tight: poll `tail` (with a pause between polls,
   * see wait.ts) for the spin budget and take the message the moment it is published. Falls back
   * to the general path (which parks) when the budget runs out or anything unusual shows up.
   */
  private spinForData(): T | typeof NONE {
    const budget = tuning.spinMicros;
    if (budget <= 0 || this.i32.length === 0) return NONE;
    const i32 = this.i32;
    let end = 0;
    for (;;) {
      for (let k = 0; k < 64; k++) {
        const t = Atomics.load(i32, this.iTail);
        if (((t & L.POS_MASK) >>> 0) !== this.head) {
          this.tailCache = (t & L.POS_MASK) >>> 0;
          return this.receiveFast();
        }
        if ((t & L.CLOSED_BIT) !== 0) return NONE;
        pause();
      }
      if ((end = spinEnd(end, budget)) < 0) return NONE;
    }
  }

  /** Receives, waiting while empty. Throws ERR_SHMKIT_CLOSED once closed and drained. */
  receive(options?: ChannelWaitOptions): T {
    if (this.fastReceive && options === undefined) {
      const v = this.receiveFast();
      if (v !== NONE) return v;
      const w = this.spinForData();
      if (w !== NONE) return w;
    }
    const o = parseChannelWait(options, false);
    this.assertOpen();
    this.claimConsumer();
    if (this.atLeastOnce) {
      const d = this.takeWait(o, 'receive', true);
      if (d === END) throw closedError(`channel "${this.name}" (closed and drained)`, this.name);
      return d.value;
    }
    const r = this.receiveSlow(o, 1, null);
    if (r === END) throw closedError(`channel "${this.name}" (closed and drained)`, this.name);
    return r as T;
  }

  /** Takes, or waits and takes; END once closed and drained. `o` is parsed, its clock starts here. */
  private receiveSlow(o: ParsedChannelWait, max: number, into: T[] | null, what = 'receive'): T | typeof END | typeof NONE {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const v = this.takeMessages(max, into, 'wait', deadline, what);
      if (v !== NONE || (into && into.length)) return v;
      if (this.drainedAndClosed()) {
        const again = this.takeMessages(max, into, 'wait', deadline, what);
        if (again !== NONE || (into && into.length)) return again;
        return END;
      }
      if (!this.waitSync(this.iTail, this.iCBells, this.fRecvWaits, o, deadline, this.dataOrClosed, ROLE_PRODUCER)) {
        throw timeoutError(`channel "${this.name}" ${what}`, o.timeout, this.name);
      }
    }
  }

  /** Like receive(), without blocking the event loop. Accepts an AbortSignal. */
  async receiveAsync(options?: ChannelAsyncOptions): Promise<T> {
    this.assertOpen();
    this.claimConsumer();
    const v = await this.receiveAsyncOrEnd(options);
    if (v === END) throw closedError(`channel "${this.name}" (closed and drained)`, this.name);
    return v;
  }

  private async receiveAsyncOrEnd(options: ChannelAsyncOptions | undefined): Promise<T | typeof END> {
    const v = this.fastReceive ? this.receiveFast() : NONE;
    if (v !== NONE) return v;
    return (await this.receiveAsyncSlow(options, 1, null)) as T | typeof END;
  }

  private async receiveAsyncSlow(options: ChannelAsyncOptions | undefined, max: number, into: T[] | null, what = 'receiveAsync'): Promise<T | typeof END | typeof NONE> {
    const o = options === undefined ? DEFAULT_CHANNEL : parseChannelWait(options, true);
    if (isAborted(o.signal)) throw abortError(o.signal, `channel "${this.name}" ${what}`);
    if (this.atLeastOnce) return this.receiveAckedAsync(o, max, into, what);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const v = await this.takeMessagesAsync(max, into, o.signal, deadline, what);
      if (v !== NONE || (into && into.length)) return v;
      if (this.drainedAndClosed()) {
        const again = await this.takeMessagesAsync(max, into, o.signal, deadline, what);
        if (again !== NONE || (into && into.length)) return again;
        return END;
      }
      if (!(await this.waitAsync(this.iTail, this.iCBells, this.fRecvWaits, o, deadline, this.dataOrClosed, ROLE_PRODUCER, what))) {
        throw timeoutError(`channel "${this.name}" ${what}`, o.timeout, this.name);
      }
      this.assertOpen();
    }
  }

  /**
   * Receives up to `max` messages at once, waiting for at least one. One wake-up and one head
   * update cover the batch. Returns [] once the channel is closed and drained.
   */
  receiveBatch(max: number, options?: ChannelWaitOptions): T[] {
    this.assertOpen();
    checkInt('max', max, 1, 2 ** 31);
    this.claimConsumer();
    const out: T[] = [];
    const o = parseChannelWait(options, false);
    if (this.atLeastOnce) {
      const first = this.takeWait(o, 'receiveBatch', true);
      if (first === END) return out;
      out.push(first.value);
      this.fillBatch(out, max, 'receiveBatch');
      return out;
    }
    this.receiveSlow(o, max, out, 'receiveBatch');
    return out;
  }

  async receiveBatchAsync(max: number, options?: ChannelAsyncOptions): Promise<T[]> {
    this.assertOpen();
    checkInt('max', max, 1, 2 ** 31);
    this.claimConsumer();
    const out: T[] = [];
    await this.receiveAsyncSlow(options, max, out, 'receiveBatchAsync');
    return out;
  }

  /**
   * Zero-copy receive: returns a view of the next message inside shared memory, valid until
   * release(). The message is consumed by release(); if this process dies before, it stays queued
   * for the next consumer. In a multi-consumer channel other consumers wait until release().
   * Returns null if the channel is empty (tryReceiveView) or ended.
   */
  tryReceiveView(): ReceivedView | null {
    this.assertOpen();
    this.claimConsumer();
    this.notOnAtLeastOnce('tryReceiveView');
    if (this.outstanding !== null) throw this.busyError(`a ${this.outstanding} is outstanding`);
    if (!this.tryEnterConsumer()) return null; // another consumer is busy; a later call retries
    let found = false;
    try {
      found = this.locate();
    } finally {
      if (!found && this.multiConsumer) this.consumerLock.unlock();
    }
    if (!found) return null;
    this.outstanding = 'view';
    const fast = this.fastReceive;
    this.fastReceive = false;
    const view = bufferView(this.ring.buffer, this.ring.byteOffset + this.recStart, this.recLen);
    const len = this.recLen;
    const next = this.recNext; // the view's own end: other calls on this handle may move recNext
    let done = false;
    return {
      bytes: view,
      release: () => {
        if (done || this.i32.length === 0) return;
        done = true;
        this.outstanding = null;
        this.fastReceive = fast;
        this.recNext = next;
        this.consumed(1, len);
        if (this.multiConsumer) this.consumerLock.unlock();
      },
    };
  }

  /** Waits for a message and returns a zero-copy view of it (see tryReceiveView). Null once ended. */
  receiveView(options?: ChannelWaitOptions): ReceivedView | null {
    const o = parseChannelWait(options, false); // before anything is consumed
    const first = this.tryReceiveView();
    if (first) return first;
    return this.waitToTake(() => this.tryReceiveView(), o, 'receiveView');
  }

  async receiveViewAsync(options?: ChannelAsyncOptions): Promise<ReceivedView | null> {
    const o = parseChannelWait(options, true);
    const first = this.tryReceiveView();
    if (first) return first;
    return this.waitToTakeAsync(() => this.tryReceiveView(), o, 'receiveViewAsync');
  }

  /**
   * Copies the next message's bytes (as sent: the codec is not applied) into `target` at offset 0
   * and returns their count; undefined if the channel is empty or ended. Nothing is allocated, so
   * a loop that reuses one buffer receives large messages at memcpy speed. A message longer than
   * `target` throws ERR_SHMKIT_TOO_LARGE and stays queued.
   */
  tryReceiveInto(target: Uint8Array): number | undefined {
    checkTarget(target);
    return this.takeInto(target, 'tryReceiveInto') ?? undefined;
  }

  /** Waits for a message and copies it into `target` (see tryReceiveInto). ERR_SHMKIT_CLOSED once ended. */
  receiveInto(target: Uint8Array, options?: ChannelWaitOptions): number {
    checkTarget(target);
    const o = parseChannelWait(options, false);
    const attempt = (): number | null => this.takeInto(target, 'receiveInto');
    const n = attempt() ?? this.waitToTake(attempt, o, 'receiveInto');
    if (n === null) throw closedError(`channel "${this.name}" (closed and drained)`, this.name);
    return n;
  }

  async receiveIntoAsync(target: Uint8Array, options?: ChannelAsyncOptions): Promise<number> {
    checkTarget(target);
    const o = parseChannelWait(options, true);
    const attempt = (): number | null => this.takeInto(target, 'receiveIntoAsync');
    const n = attempt() ?? (await this.waitToTakeAsync(attempt, o, 'receiveIntoAsync'));
    if (n === null) throw closedError(`channel "${this.name}" (closed and drained)`, this.name);
    return n;
  }

  /** One copying take for the receiveInto family: the byte count, or null if nothing is there. */
  private takeInto(target: Uint8Array, what: string): number | null {
    this.assertOpen();
    this.claimConsumer();
    this.notOnAtLeastOnce(what);
    if (this.outstanding === 'view') throw this.busyError('a received view is outstanding; release it first');
    if (!this.tryEnterConsumer()) return null; // another consumer is busy: wait and retry
    try {
      if (!this.locate()) return null;
      const n = this.recLen;
      if (n > target.byteLength) {
        throw new ShmkitError(ErrorCodes.TOO_LARGE, `channel "${this.name}" ${what}: the next message has ${n} bytes, more than target's ${target.byteLength}; it stays queued`, { segment: this.name });
      }
      target.set(new Uint8Array(this.ring.buffer, this.ring.byteOffset + this.recStart, n));
      this.consumed(1, n);
      return n;
    } finally {
      if (this.multiConsumer) this.consumerLock.unlock();
    }
  }

  /**
   * The waiting loop of the view and receiveInto families: waits until `attempt` takes something
   * (its result) or the channel is closed and drained (null). In a multi-consumer channel, data may
   * be there while another consumer holds the lock (e.g. a view): then it waits for the lock.
   */
  private waitToTake<R>(attempt: () => R | null, o: ParsedChannelWait, what: string): R | null {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      if (this.drainedAndClosed()) return attempt();
      if (!this.waitSync(this.iTail, this.iCBells, this.fRecvWaits, o, deadline, this.dataOrClosed, ROLE_PRODUCER)) {
        throw timeoutError(`channel "${this.name}" ${what}`, o.timeout, this.name);
      }
      const v = attempt();
      if (v !== null) return v;
      if (this.multiConsumer && this.consumerLock.locked) lockWithin(this.consumerLock, deadline, `channel "${this.name}" ${what}`, this.name).unlock();
    }
  }

  private async waitToTakeAsync<R>(attempt: () => R | null, o: ParsedChannelWait, what: string): Promise<R | null> {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      if (this.drainedAndClosed()) return attempt();
      if (!(await this.waitAsync(this.iTail, this.iCBells, this.fRecvWaits, o, deadline, this.dataOrClosed, ROLE_PRODUCER, what))) {
        throw timeoutError(`channel "${this.name}" ${what}`, o.timeout, this.name);
      }
      const v = attempt();
      if (v !== null) return v;
      if (this.multiConsumer && this.consumerLock.locked) (await lockWithinAsync(this.consumerLock, deadline, o.signal, `channel "${this.name}" ${what}`, this.name)).unlock();
    }
  }

  /**
   * Iterates messages until the channel is closed and drained. A plain iterator object rather than
   * an async generator: a queued message costs one resolved promise, not a generator round trip.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    this.assertOpen();
    this.claimConsumer();
    const done: IteratorResult<T> = Object.freeze({ value: undefined, done: true }) as IteratorResult<T>;
    const it: AsyncIterableIterator<T> = {
      next: (): Promise<IteratorResult<T>> => {
        if (this.disconnected) return Promise.resolve(done);
        const v = this.fastReceive ? this.receiveFast() : NONE;
        if (v !== NONE) return Promise.resolve({ value: v, done: false });
        return this.receiveAsyncSlow(undefined, 1, null).then((r) => (r === END ? done : { value: r as T, done: false }));
      },
      return: (): Promise<IteratorResult<T>> => Promise.resolve(done),
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }


  // At-least-once consumers ----------------------------------------------------------------------------
  //
  // See leases.ts and docs/design.md ("At-least-once channels"). READ is the position of the next
  // record to hand out; HEAD..READ are in flight, each with a lease. Every step runs under the
  // consumer lock (held briefly: never while the caller processes a message), or, single-consumer,
  // under the role held for the handle's life.

  /**
   * Takes a message of an at-least-once channel if one can be had now: a new one, or one whose
   * taker died (or nacked) without acknowledging it. Undefined if none.
   */
  tryTake(): Delivery<T> | undefined {
    this.startTake('tryTake');
    const d = this.takeAcked(null, 'tryTake', false);
    return d === NONE ? undefined : d;
  }

  /** Waits for a message of an at-least-once channel and takes it (see tryTake). ERR_SHMKIT_CLOSED once ended. */
  take(options?: ChannelWaitOptions): Delivery<T> {
    const o = parseChannelWait(options, false);
    this.startTake('take');
    const d = this.takeWait(o, 'take', false);
    if (d === END) throw closedError(`channel "${this.name}" (closed and drained)`, this.name);
    return d;
  }

  /** Like take(), without blocking the event loop. Accepts an AbortSignal. */
  async takeAsync(options?: ChannelAsyncOptions): Promise<Delivery<T>> {
    const o = parseChannelWait(options, true);
    this.startTake('takeAsync');
    if (isAborted(o.signal)) throw abortError(o.signal, `channel "${this.name}" takeAsync`);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const d = await this.takeAckedAsync(o, deadline, 'takeAsync', false);
      if (d !== NONE) return d;
      if (this.ackedEnded()) throw closedError(`channel "${this.name}" (closed and drained)`, this.name);
      if (!(await this.waitAsync(this.iTail, this.iCBells, this.fRecvWaits, o, deadline, this.ackedReady, ROLE_PRODUCER, 'takeAsync'))) {
        throw timeoutError(`channel "${this.name}" takeAsync`, o.timeout, this.name);
      }
    }
  }

  private startTake(what: string): void {
    this.assertOpen();
    if (!this.atLeastOnce) {
      throw new ShmkitError(ErrorCodes.UNSUPPORTED, `channel "${this.name}" ${what}: only at-least-once channels take and ack (create it with delivery: 'at-least-once')`, { segment: this.name });
    }
    this.claimConsumer();
  }

  private notOnAtLeastOnce(what: string): void {
    if (this.atLeastOnce) {
      throw new ShmkitError(ErrorCodes.UNSUPPORTED, `channel "${this.name}" ${what}: not available on an at-least-once channel; use take() and ack()`, { segment: this.name });
    }
  }

  private loadReadPos(): number {
    return (Atomics.load(this.i32, this.iRead) & L.POS_MASK) >>> 0;
  }

  /** Positions HEAD..READ (in flight), checked against TAIL: they are untrusted. */
  private ackedPositions(): { head: number; read: number; tail: number } {
    const head = this.loadHeadPos();
    const read = this.loadReadPos();
    const tail = this.loadTailPos();
    const inUse = (tail - head) >>> 0;
    if (inUse > this.capacity || ((read - head) >>> 0) > inUse) throw this.corrupt(`head ${head}, read ${read} and tail ${tail} are inconsistent`);
    return { head, read, tail };
  }

  private inFlightTest(head: number, read: number): (pos: number) => boolean {
    const n = (read - head) >>> 0;
    return (pos) => ((pos - head) >>> 0) < n;
  }

  /** Nothing left to hand out (only padding, perhaps) between READ and TAIL. */
  private unreadEmpty(): boolean {
    const read = this.loadReadPos();
    const tail = this.loadTailPos();
    if (read === tail) return true;
    const idx = read & this.mask;
    return ((tail - read) >>> 0) === this.capacity - idx && this.u32[this.ringWord + (idx >> 2)] === L.PAD;
  }

  /** Closed, nothing left to hand out, and nothing in flight: no message will ever come. */
  private ackedEnded(): boolean {
    if (Atomics.load(this.i32, this.iClosed) === 0 || !this.unreadEmpty()) return false;
    return this.loadHeadPos() === this.loadReadPos() || !this.leases!.busy();
  }

  /**
   * Ready for another take attempt (lock-free, racy: it only decides whether to look): something
   * new and a free lease, a message given back, the end; and once per liveness interval in any
   * case, to look under the lock for what changes no word: a dead taker, a message acknowledged
   * by a taker that died before moving HEAD, stale leases left by a crash in the middle of a step.
   */
  private ackedReady = (): boolean => {
    if (this.i32.length === 0) return true;
    const leases = this.leases!;
    if (!this.unreadEmpty() && leases.hasFree()) return true;
    if (this.ackedEnded()) return true;
    const head = this.loadHeadPos();
    const read = this.loadReadPos();
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

  /** Multi-consumer: the consumer lock (null deadline: without waiting; false if busy). */
  private enterAcked(deadline: Deadline | null, what: string): boolean {
    if (!this.multiConsumer) return true;
    let g: MutexGuard | null;
    if (deadline === null) {
      g = this.consumerLock.tryLock();
      if (g === null) {
        this.lastTryBusy = true;
        return false;
      }
    } else g = lockWithin(this.consumerLock, deadline, `channel "${this.name}" ${what}`, this.name);
    if (g.recovered) this.repairOrUnlock();
    return true;
  }

  /** Just after taking over the consumer lock from a dead owner; the lock is given back if repair throws. */
  private repairOrUnlock(): void {
    try {
      this.repairLeases();
    } catch (err) {
      this.leaveAcked();
      throw err;
    }
  }

  private leaveAcked(): void {
    if (this.multiConsumer) this.consumerLock.unlock();
  }

  /** After a consumer died holding the consumer lock (or role): drop leases it left half-made. */
  private repairLeases(): void {
    const { head, read } = this.ackedPositions();
    this.leases!.repair(this.inFlightTest(head, read));
  }

  /** One take (sync): a delivery, or NONE. `autoAck`: acknowledged at once (the receive family). */
  private takeAcked(deadline: Deadline | null, what: string, autoAck: boolean): Delivery<T> | typeof NONE {
    this.throwDeferred();
    if (!this.enterAcked(deadline, what)) return NONE;
    return this.takeAckedHeld(autoAck);
  }

  /**
   * Holding consumer rights: takes one record and gives the rights back. With `autoAck` the message
   * is decoded, acknowledged and passed under the lock; otherwise it is decoded after the lock is
   * released (a leased record cannot be overwritten), so a slow codec does not hold up other
   * consumers.
   */
  private takeAckedHeld(autoAck: boolean): Delivery<T> | typeof NONE {
    let t: Taken | typeof NONE;
    try {
      t = this.takeAckedLocked();
      if (t !== NONE && autoAck) return this.decodeAcked(t, true);
    } finally {
      this.leaveAcked();
    }
    return t === NONE ? NONE : this.decodeAcked(t, false);
  }

  private async takeAckedAsync(o: ParsedChannelWait, deadline: Deadline, what: string, autoAck: boolean): Promise<Delivery<T> | typeof NONE> {
    this.throwDeferred();
    if (this.multiConsumer) {
      const g = this.consumerLock.tryLock() ?? (await lockWithinAsync(this.consumerLock, deadline, o.signal, `channel "${this.name}" ${what}`, this.name));
      if (g.recovered) this.repairOrUnlock();
    }
    return this.takeAckedHeld(autoAck);
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
        d = this.takeAcked(null, what, true);
      } catch (err) {
        if (!(err instanceof ShmkitError) || err.code !== ErrorCodes.DECODE) throw err;
        this.deferred = err; // the good ones are delivered now; the next call reports this one
        return;
      }
      if (d === NONE) return;
      into.push(d.value);
    }
  }

  /** The waiting loop of take() and of the receive family on an at-least-once channel. */
  private takeWait(o: ParsedChannelWait, what: string, autoAck: boolean): Delivery<T> | typeof END {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const d = this.takeAcked(deadline, what, autoAck);
      if (d !== NONE) return d;
      if (this.ackedEnded()) return END;
      if (this.leases!.allMine()) {
        throw new ShmkitError(ErrorCodes.WOULD_DEADLOCK, `channel "${this.name}" ${what}: every lease is held by this thread's unacknowledged deliveries; ack or nack some first`, { segment: this.name });
      }
      if (!this.waitSync(this.iTail, this.iCBells, this.fRecvWaits, o, deadline, this.ackedReady, ROLE_PRODUCER)) {
        throw timeoutError(`channel "${this.name}" ${what}`, o.timeout, this.name);
      }
    }
  }

  /** receiveAsync / receiveBatchAsync / for await on an at-least-once channel: take, ack at once. */
  private async receiveAckedAsync(o: ParsedChannelWait, max: number, into: T[] | null, what: string): Promise<T | typeof END | typeof NONE> {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const d = await this.takeAckedAsync(o, deadline, what, true);
      if (d !== NONE) {
        if (into === null) return d.value;
        into.push(d.value);
        this.fillBatch(into, max, what);
        return NONE;
      }
      if (this.ackedEnded()) return END;
      if (!(await this.waitAsync(this.iTail, this.iCBells, this.fRecvWaits, o, deadline, this.ackedReady, ROLE_PRODUCER, what))) {
        throw timeoutError(`channel "${this.name}" ${what}`, o.timeout, this.name);
      }
      this.assertOpen();
    }
  }

  /** Holding consumer rights: lease the next new record, or take over a dead (or given-back) taker's. */
  private takeAckedLocked(): Taken | typeof NONE {
    const leases = this.leases!;
    this.advanceHead(); // records acknowledged by a taker that died before moving HEAD (cheap otherwise)
    const { head, read, tail } = this.ackedPositions();
    const inFlight = this.inFlightTest(head, read);
    let free = leases.hasFree();
    if (!free) {
      // Holding the lock, a lease outside HEAD..READ can only be stale (a crash mid-step).
      leases.repair(inFlight);
      free = leases.hasFree();
    }
    this.head = read;
    this.tailCache = tail;
    const fresh = read !== tail && this.locate(); // moves this.head past padding, to the record
    // Messages given back or left by a dead taker go first (they are older). Dead takers are looked
    // for when nothing new can be taken, and on every 64th take; liveness is cached per taker.
    const probe = !fresh || !free || ++this.takesSinceDeadCheck >= 64;
    if (probe) this.takesSinceDeadCheck = 0;
    let slot = leases.takeOverDead(inFlight, probe ? this.takerAlive : null);
    let pos = 0;
    const redelivered = slot >= 0;
    if (slot >= 0) {
      pos = leases.pos(slot);
      this.head = pos;
      this.tailCache = tail;
      if (!this.locate() || this.head !== pos) throw this.corrupt(`leased record at ${pos} is not a record`);
    } else if (fresh && free) {
      pos = this.head;
      slot = leases.lease(pos);
      if (slot >= 0) Atomics.store(this.i32, this.iRead, this.recNext | 0); // after the lease: see leases.ts
    }
    if (slot < 0) {
      if (fresh) this.lastTryBusy = true; // every lease is in use
      return NONE;
    }
    this.f64[this.fRecv]! += 1;
    this.f64[this.fRecvBytes]! += this.recLen;
    return { slot, pos, redelivered };
  }

  /**
   * Decodes a taken record (this.recStart/recLen) and makes its delivery. `locked`: the caller holds
   * consumer rights and wants it acknowledged at once. A message that cannot be decoded is
   * acknowledged (consumed once) and reported, as in at-most-once channels.
   */
  private decodeAcked(t: Taken, locked: boolean): Delivery<T> {
    const leases = this.leases!;
    let value: T;
    try {
      value = this.decode();
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
    if (!this.multiConsumer) {
      this.advanceHead();
      return;
    }
    const g = this.consumerLock.tryLockQuick();
    if (g === null) return;
    try {
      if (g.recovered) this.repairLeases();
      this.advanceHead();
    } finally {
      this.leaveAcked();
    }
  }

  private delivery(value: T, slot: number, pos: number, redelivered: boolean): Delivery<T> {
    const leases = this.leases!;
    let done = false;
    const finish = (how: 'ack' | 'nack'): void => {
      if (done) return;
      this.assertOpen();
      done = true;
      this.held.delete(slot);
      const ok = how === 'ack' ? leases.ack(slot, pos) : leases.giveBack(slot, pos);
      if (!ok) throw new ShmkitError(ErrorCodes.NOT_OWNER, `channel "${this.name}" ${how}: this delivery's lease was taken over`, { segment: this.name });
      // Never waits: if another consumer holds the lock, it (or the next take) passes the record.
      if (how === 'ack') this.advanceIfFree();
      this.wakeConsumers(); // a lease is free again, a message is back, or the end may have come
    };
    return { value, redelivered, ack: () => finish('ack'), nack: () => finish('nack') };
  }

  /**
   * Wakes parked consumers, clearing their waiting bits from the tail word with a CAS first (as a
   * publisher does): a consumer about to park then sees the word changed and does not sleep.
   */
  private wakeConsumers(): void {
    for (;;) {
      const t = Atomics.load(this.i32, this.iTail);
      const bits = t & (L.FUTEX_WAITING | L.BELL_WAITING);
      if (bits === 0) return;
      if (Atomics.compareExchange(this.i32, this.iTail, t, t & ~(L.FUTEX_WAITING | L.BELL_WAITING)) === t) {
        this.wakeWord(this.iTail, this.iCBells, bits);
        return;
      }
    }
  }

  /** Gives back every delivery of this handle that is not acknowledged (disconnect). */
  private giveBackHeld(): void {
    if (this.held.size === 0 || this.leases === null) return;
    for (const [slot, pos] of this.held) this.leases.giveBack(slot, pos);
    this.held.clear();
    this.wakeConsumers();
  }

  /**
   * Holding consumer rights: moves HEAD past the acknowledged records at the front of the in-flight
   * span (and padding), then frees their leases. HEAD moves first: a crash in between leaves stale
   * leases (freed by repair), never an in-flight record without a lease.
   */
  private advanceHead(): void {
    const leases = this.leases!;
    const { head, read } = this.ackedPositions();
    let h = head;
    const passed: number[] = [];
    while (h !== read) {
      const idx = h & this.mask;
      const w = this.ringWord + (idx >> 2);
      if (this.u32[w + 1] !== ((h ^ L.TAG_MAGIC) >>> 0)) throw this.corrupt(`record at position ${h} has a bad tag`);
      const len = this.u32[w]!;
      if (len === L.PAD) {
        h = (h + (this.capacity - idx)) >>> 0;
        continue;
      }
      if (len > this.maxMessageSize || idx + L.recordSize(len) > this.capacity) throw this.corrupt(`record at ${h} claims ${len} bytes`);
      const slot = leases.find(h);
      if (slot < 0) {
        // In flight without a lease (only damage makes this): hand it out again.
        const s = leases.lease(h);
        if (s >= 0) leases.giveBack(s, h);
        break;
      }
      if (leases.state(slot) !== ACKED) break;
      passed.push(slot);
      h = (h + L.recordSize(len)) >>> 0;
    }
    if (h === head) return;
    const old = Atomics.exchange(this.i32, this.iHead, h | 0);
    if ((old & (L.FUTEX_WAITING | L.BELL_WAITING)) !== 0) this.wakeWord(this.iHead, this.iPBells, old);
    for (const slot of passed) leases.free(slot);
  }

  // Waiting --------------------------------------------------------------------------------------------

  private peerGone(role: number): boolean {
    return this.peers.liveOthers(role) === 0 && this.peers.anyOthers(role);
  }

  private peerGoneError(role: number): ShmkitError {
    const who = role === ROLE_PRODUCER ? 'producer' : 'consumer';
    return new ShmkitError(ErrorCodes.PEER_GONE, `channel "${this.name}": no live ${who} is attached any more`, { segment: this.name });
  }

  /**
   * Spin, then park on `word` (TAIL for receivers, HEAD for senders) until ready() (true) or the
   * deadline (false). Before parking the waiter sets FUTEX_WAITING in the word with a CAS; the other
   * side changes the word with a CAS or exchange that returns the bit, so it knows to wake us. The
   * park expects the word with the bit set: any change in between makes it return at once.
   */
  private waitSync(word: number, bells: number, statIdx: number, o: ParsedChannelWait, deadline: Deadline, ready: () => boolean, peerRole: number, spinner?: () => boolean): boolean {
    if (spinner ? spinner() : spin(ready, o.spin)) return true;
    const i32 = this.i32;
    let counted = false;
    for (;;) {
      if (ready()) return true;
      if (o.failIfPeerGone && this.peerGone(peerRole)) throw this.peerGoneError(peerRole);
      const left = deadline.remaining();
      if (left === 0) return false;
      const cur = Atomics.load(i32, word);
      if ((cur & L.FUTEX_WAITING) === 0 && Atomics.compareExchange(i32, word, cur, cur | L.FUTEX_WAITING) !== cur) continue;
      if (ready()) return true; // changed between the first check and the CAS
      if (!counted) {
        counted = true;
        this.f64[statIdx]! += 1; // a statistic: racy increments between processes may be lost
      }
      // Sliced: a peer killed between publishing and waking cannot strand us; liveness is re-checked.
      parkSync(i32, word, cur | L.FUTEX_WAITING, Math.min(left, tuning.livenessIntervalMs));
      this.segment.verify(); // a peer may have truncated the object while we slept (see Segment.verify)
    }
  }

  /**
   * The async twin of waitSync. It sleeps in the event loop on this thread's doorbell (one wake-up
   * instead of two, see bell.ts): register the doorbell in the side's table, set BELL_WAITING, and
   * the other side rings it. Without a free slot or a doorbell it parks on a native waiter thread.
   */
  private async waitAsync(word: number, bells: number, statIdx: number, o: ParsedChannelWait, deadline: Deadline, ready: () => boolean, peerRole: number, what: string, spinner?: () => boolean): Promise<boolean> {
    if (spinner ? spinner() : spin(ready, o.spin)) return true;
    const i32 = this.i32;
    let counted = false;
    for (;;) {
      if (i32.length === 0) throw closedError(`channel "${this.name}" handle`, this.name);
      if (ready()) return true;
      if (o.failIfPeerGone && this.peerGone(peerRole)) throw this.peerGoneError(peerRole);
      const left = deadline.remaining();
      if (left === 0) return false;
      const id = ownBell();
      const slot = id === 0 ? -1 : registerBell(i32, bells, L.BELL_SLOTS, id);
      const flag = slot < 0 ? L.FUTEX_WAITING : L.BELL_WAITING;
      const cur = Atomics.load(i32, word);
      if ((cur & flag) === 0 && Atomics.compareExchange(i32, word, cur, cur | flag) !== cur) {
        if (slot >= 0) unregisterBell(i32, slot, id);
        continue;
      }
      if (!counted) {
        counted = true;
        this.f64[statIdx]! += 1;
      }
      const slice = Math.min(left, tuning.livenessIntervalMs);
      // Woken by the other side (a doorbell ring or a futex wake), the wait goes on without a
      // truncation check: its fstat would add ~1 µs (5-10 %) to every async round trip. A slice
      // that ended without a wake-up, an abort or an error is checked (see Segment.verify).
      let woken = false;
      try {
        if (ready()) return true;
        if (slot >= 0) woken = await bellWait(slice, o.signal, this.segment, `channel "${this.name}" ${what}`);
        else woken = !(await parkAsync(i32, word, cur | flag, slice, o.signal, this.segment, `channel "${this.name}" ${what}`));
      } finally {
        // Before touching the segment again: a peer may have truncated it while we slept.
        if (!woken && i32.length > 0) this.segment.verify();
        // Someone else cleared our slot: a ringer could not reach our doorbell (another network
        // namespace?). Fall back to futex waits for good in this thread.
        if (slot >= 0 && i32.length > 0 && !unregisterBell(i32, slot, id)) disableBells();
      }

    }
  }

  // Lifetime -------------------------------------------------------------------------------------------

  /**
   * Releases this handle: gives up a single-producer/consumer role, leaves the peer table, and
   * unmaps the segment. Pending async operations reject with ERR_SHMKIT_CLOSED. The channel itself
   * stays (see close() and unlink()). Idempotent.
   */
  disconnect(): void {
    if (this.disconnected) return;
    if (this.i32.length > 0) this.giveBackHeld(); // unacked deliveries go to other consumers
    this.disconnected = true;
    this.fastSend = false;
    this.fastReceive = false;
    if (this.i32.length > 0) {
      try {
        if (this.outstanding === 'loan' && this.multiProducer) this.producerLock.unlock();
        if (this.outstanding === 'view' && this.multiConsumer) this.consumerLock.unlock();
        this.producerGuard?.unlock();
        this.consumerGuard?.unlock();
      } catch {
        // The lock was taken over (we were presumed dead): nothing to give back.
      }
      this.peers.unregister();
    }
    this.segment.close();
  }

  [Symbol.dispose](): void {
    this.disconnect();
  }
}

/** Marks an error from a send as "the message was not published" (every send error means that). */
function notPublished(err: unknown): unknown {
  if (err instanceof ShmkitError && err.published === undefined) (err as { published?: boolean }).published = false;
  return err;
}

interface ParsedChannelWait extends ParsedWait {
  failIfPeerGone: boolean;
}

function checkTarget(target: unknown): void {
  if (!(target instanceof Uint8Array)) throw invalidArg('target', `must be a Uint8Array or Buffer, got ${describe(target)}`);
}

const NO_DEADLINE = new Deadline(Infinity);

const DEFAULT_CHANNEL: ParsedChannelWait = Object.freeze({ ...DEFAULT, failIfPeerGone: false });

function parseChannelWait(options: unknown, allowSignal: boolean): ParsedChannelWait {
  if (options === undefined) return DEFAULT_CHANNEL;
  const p = parseWait(options, allowSignal) as ParsedChannelWait;
  const f = (options as ChannelWaitOptions).failIfPeerGone;
  if (f !== undefined && typeof f !== 'boolean') throw invalidArg('options.failIfPeerGone', `must be a boolean, got ${describe(f)}`);
  return { ...p, failIfPeerGone: f === true };
}

/**
 * A ring in a segment, as one handle sees it: where its words and bytes are, the one definition of
 * a valid record, and closing. Producers and consumers (producer.ts, consumer.ts) hold a Ring;
 * neither copies its checks. Everything read from shared memory is untrusted: a garbage position,
 * length or tag raises ERR_SHMKIT_CORRUPT; no read leaves the ring.
 */
import { ErrorCodes, ShmkitError } from '../errors';
import { FlagWord, WAITING } from '../flag-word';
import type { Segment } from '../segment';
import { CLOSED_BIT, PAD, POS_MASK, RECORD_HEADER, tagOf } from './format';

/** Where a ring's parts are: byte offsets in the segment's data area, and its sizes. */
export interface RingPlace {
  /** i32 TAIL word: position after the last published record | flags. */
  tail: number;
  /** i32 HEAD word: position of the next record to consume | flags. */
  head: number;
  /** i32: 1 once closed (TAIL's CLOSED_BIT is the authoritative copy). */
  closed: number;
  /** Doorbell tables (flag-word.ts) of the TAIL word (receivers) and the HEAD word (senders). */
  tailBells: number;
  headBells: number;
  /** f64 counters: messages and payload bytes published and consumed, and parks of each side. */
  sent: number;
  sentBytes: number;
  sendWaits: number;
  received: number;
  receivedBytes: number;
  receiveWaits: number;
  /** The ring's bytes. */
  bytes: number;
  capacity: number;
  maxMessageSize: number;
}

/** recordAt(): the record at the position is padding to the ring's end. */
export const PADDING = -2;

export class Ring {
  readonly label: string;
  readonly name: string;
  readonly capacity: number;
  readonly mask: number;
  readonly maxMessageSize: number;
  readonly i32: Int32Array;
  readonly u32: Uint32Array;
  readonly f64: Float64Array;
  /** The ring's bytes as a Buffer, and as 32-bit words. */
  readonly bytes: Buffer;
  readonly bytesI32: Int32Array;
  /** u32 index (in the whole mapping) of ring byte 0. */
  readonly firstWord: number;
  readonly tailWord: number;
  readonly headWord: number;
  readonly closedWord: number;
  readonly fSent: number;
  readonly fSentBytes: number;
  readonly fReceived: number;
  readonly fReceivedBytes: number;
  /** Receivers wait on TAIL (data), senders on HEAD (space). */
  readonly dataWaits: FlagWord;
  readonly spaceWaits: FlagWord;

  constructor(readonly segment: Segment, place: RingPlace, label: string) {
    this.label = label;
    this.name = segment.name;
    this.capacity = place.capacity;
    this.mask = place.capacity - 1;
    this.maxMessageSize = place.maxMessageSize;
    const buf = segment.buffer;
    const base = segment.dataOffset;
    const w = (off: number): number => (base + off) >> 2;
    const d = (off: number): number => (base + off) >> 3;
    this.i32 = segment.int32;
    this.u32 = new Uint32Array(buf, 0, buf.byteLength >> 2);
    this.f64 = new Float64Array(buf, 0, buf.byteLength >> 3);
    this.bytes = Buffer.from(buf, base + place.bytes, place.capacity);
    this.bytesI32 = new Int32Array(buf, base + place.bytes, place.capacity >> 2);
    this.firstWord = w(place.bytes);
    this.tailWord = w(place.tail);
    this.headWord = w(place.head);
    this.closedWord = w(place.closed);
    this.fSent = d(place.sent);
    this.fSentBytes = d(place.sentBytes);
    this.fReceived = d(place.received);
    this.fReceivedBytes = d(place.receivedBytes);
    this.dataWaits = new FlagWord(segment, label, this.tailWord, w(place.tailBells), d(place.receiveWaits));
    this.spaceWaits = new FlagWord(segment, label, this.headWord, w(place.headBells), d(place.sendWaits));
  }

  /** The published tail position (without its flag bits). */
  loadTail(): number {
    return (Atomics.load(this.i32, this.tailWord) & POS_MASK) >>> 0;
  }

  loadHead(): number {
    return (Atomics.load(this.i32, this.headWord) & POS_MASK) >>> 0;
  }

  get closed(): boolean {
    return Atomics.load(this.i32, this.closedWord) !== 0;
  }

  /** Ring index of the payload of the record at `pos`. */
  payloadIndex(pos: number): number {
    return (pos & this.mask) + RECORD_HEADER;
  }

  /**
   * The one definition of a valid record: the payload length of the record at `pos`, where `avail`
   * bytes are published from `pos` on (0 < avail), or PADDING for a padding record (then the next
   * record is at the ring's start). Anything else is damage: ERR_SHMKIT_CORRUPT. Every reader (the
   * fast paths too) goes through here.
   */
  recordAt(pos: number, avail: number): number {
    if (avail > this.capacity || (avail & 7) !== 0) throw this.corrupt(`${avail} bytes published at position ${pos} is not a valid span`);
    const idx = pos & this.mask;
    const w = this.firstWord + (idx >> 2);
    const len = this.u32[w]!;
    if (this.u32[w + 1] !== tagOf(pos)) throw this.corrupt(`record at position ${pos} has a bad tag`);
    if (len === PAD) {
      if (this.capacity - idx > avail) throw this.corrupt(`padding at ${pos} runs past the tail`);
      return PADDING;
    }
    if (len > this.maxMessageSize) throw this.corrupt(`record at ${pos} claims ${len} bytes, more than the maximum ${this.maxMessageSize}`);
    const rec = RECORD_HEADER + ((len + 7) & ~7);
    if (rec > avail || idx + rec > this.capacity) throw this.corrupt(`record at ${pos} runs past the tail or the ring's end`);
    return len;
  }

  /** Whether nothing but padding (or nothing at all) lies between `from` and `to`. */
  emptyBetween(from: number, to: number): boolean {
    if (from === to) return true;
    const idx = from & this.mask;
    return ((to - from) >>> 0) === this.capacity - idx && this.u32[this.firstWord + (idx >> 2)] === PAD;
  }

  /**
   * Closes the ring for everyone. TAIL's closed bit comes first: from then on no producer's
   * publishing CAS succeeds (it expects the word without it), so a receiver that sees the flag and
   * an empty ring has really seen the end. No lock is taken, so no live producer can hold it up.
   * HEAD changes too, so a sender about to park on its old value returns at once and re-checks.
   */
  close(): void {
    Atomics.or(this.i32, this.tailWord, CLOSED_BIT);
    Atomics.store(this.i32, this.closedWord, 1);
    Atomics.or(this.i32, this.headWord, CLOSED_BIT);
    this.dataWaits.wakeAll();
    this.spaceWaits.wakeAll();
  }

  /** Publishes `pos` as HEAD (space goes back to producers), and wakes senders that wait for it. */
  storeHead(pos: number): void {
    const old = Atomics.exchange(this.i32, this.headWord, pos | 0);
    if ((old & WAITING) !== 0) this.spaceWaits.wake(old);
  }

  corrupt(why: string): ShmkitError {
    return new ShmkitError(ErrorCodes.CORRUPT, `${this.label}: ${why}`, { segment: this.name });
  }
}

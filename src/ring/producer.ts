/**
 * The producer cursor of a ring: reserve a record, fill it, publish it with one sequentially
 * consistent CAS of TAIL. Until that CAS nothing of the record is visible, so a producer killed in
 * the middle never published anything. The caller holds the producer role (single producer) or the
 * producer lock (multi-producer: reload() first), and decides what to write; the cursor keeps only
 * its positions.
 */
import { CLOSED_BIT, PAD, POS_MASK, RECORD_HEADER, recordEnd, recordSize, tagOf } from './format';
import type { Ring } from './ring';
import { pause, spinEnd, tuning } from '../wait';

export class RingProducer {
  /** Where the next record goes. Authoritative while this handle holds producer rights. */
  tail = 0;
  /** The last HEAD seen: free space is known to be at least capacity - (tail - headCache). */
  private headCache = 0;

  constructor(private readonly ring: Ring) {}

  /** Loads the shared positions (on taking the role or the lock). */
  reload(): void {
    const r = this.ring;
    this.tail = r.loadTail();
    this.headCache = r.loadHead();
    if (((this.tail - this.headCache) >>> 0) > r.capacity) throw r.corrupt('tail is more than a capacity ahead of head');
  }

  /** Bytes needed at `pos` for a record of `len`, padding to the ring's end included. */
  private need(pos: number, len: number): number {
    const rec = recordSize(len);
    const toEnd = this.ring.capacity - (pos & this.ring.mask);
    return rec <= toEnd ? rec : toEnd + rec;
  }

  /** Free bytes at `pos` given the last known head; refreshes the head once if short. */
  private free(pos: number, need: number): boolean {
    const r = this.ring;
    let used = (pos - this.headCache) >>> 0;
    if (r.capacity - used >= need) return true;
    this.headCache = r.loadHead();
    used = (pos - this.headCache) >>> 0;
    if (used > r.capacity) throw r.corrupt(`head ${this.headCache} and tail ${pos} are ${used} bytes apart, more than the capacity`);
    return r.capacity - used >= need;
  }

  /**
   * Writes the header of a record of `len` payload bytes at the tail (a padding record first if it
   * would not fit before the ring's end) and returns the record's position, or -1 if there is no
   * room. Publishes nothing: see publish().
   */
  reserve(len: number): number {
    const r = this.ring;
    let pos = this.tail;
    const need = this.need(pos, len);
    if (!this.free(pos, need)) return -1;
    let idx = pos & r.mask;
    if (need !== recordSize(len)) {
      const w = r.firstWord + (idx >> 2);
      r.u32[w] = PAD;
      r.u32[w + 1] = tagOf(pos);
      pos = (pos + (r.capacity - idx)) >>> 0;
      idx = 0;
    }
    const w = r.firstWord + (idx >> 2);
    r.u32[w] = len;
    r.u32[w + 1] = tagOf(pos);
    return pos;
  }

  /** Rewrites the length of the reserved record at `pos` (it only shrinks, so it still fits). */
  shrink(pos: number, len: number): void {
    this.ring.u32[this.ring.firstWord + ((pos & this.ring.mask) >> 2)] = len;
  }

  /**
   * Publishes everything up to `end` (the end of the record of `len` bytes reserved last). False if
   * the ring was closed meanwhile: nothing was published. The counters share TAIL's cache line and
   * are updated before the CAS: after it, a spinning consumer pulls the line, and writing the
   * counters then would take it back (a second transfer per message). Counted a moment early is
   * harmless (statistics are racy snapshots).
   */
  publish(end: number, len: number): boolean {
    const r = this.ring;
    const f = r.f64;
    f[r.fSent]! += 1;
    f[r.fSentBytes]! += len;
    if (!this.casTail(this.tail, end)) {
      f[r.fSent]! -= 1;
      f[r.fSentBytes]! -= len;
      return false;
    }
    this.tail = end;
    return true;
  }

  /**
   * Publishes `next` as the new tail if the word still holds position `prev`; false if closed
   * meanwhile. If a receiver advertised that it sleeps (a waiting bit), the same CAS clears the bit
   * and we wake it: the publishing CAS fails while the bit is set, so it cannot be missed.
   */
  private casTail(prev: number, next: number): boolean {
    const r = this.ring;
    let expect = prev | 0;
    for (;;) {
      const seen = Atomics.compareExchange(r.i32, r.tailWord, expect, next | 0);
      if (seen === expect) break;
      if ((seen & POS_MASK) !== (prev | 0)) {
        const err = r.corrupt(`tail changed under the producer (expected ${prev}, found ${seen >>> 0})`);
        (err as { published?: boolean }).published = false; // nothing was published
        throw err;
      }
      if ((seen & CLOSED_BIT) !== 0) return false;
      expect = seen;
    }
    if (expect !== (prev | 0)) r.dataWaits.wake(expect);
    return true;
  }

  /**
   * The common case written out flat: `data` fits at the tail without padding. Writes and publishes
   * it; false to fall back to reserve() (no room, padding needed, closed), which re-checks
   * everything. Single producer only (the role is held, so `tail` is current).
   */
  putFast(data: Uint8Array): boolean {
    const r = this.ring;
    const len = data.byteLength;
    if (len > r.maxMessageSize || r.i32.length === 0) return false;
    const pos = this.tail;
    const rec = RECORD_HEADER + ((len + 7) & ~7);
    const idx = pos & r.mask;
    if (rec > r.capacity - idx) return false; // needs padding: general path
    if (r.capacity - ((pos - this.headCache) >>> 0) < rec) {
      this.headCache = r.loadHead();
      const used = (pos - this.headCache) >>> 0;
      if (used > r.capacity || r.capacity - used < rec) return false;
    }
    const w = r.firstWord + (idx >> 2);
    r.u32[w] = len;
    r.u32[w + 1] = tagOf(pos);
    r.bytes.set(data, idx + RECORD_HEADER);
    return this.publish(recordEnd(pos, len), len); // closed meanwhile: the general path reports it
  }

  /**
   * Whether a record of `len` would fit now, with `slack` bytes to spare (racy snapshot; used to
   * decide whether to wake up). `shared`: read TAIL (multi-producer) rather than our own copy.
   * Garbage positions count as "fits": the caller's checks report them.
   */
  spaceFor(len: number, shared: boolean, slack = 0): boolean {
    const r = this.ring;
    const tail = shared ? r.loadTail() : this.tail;
    const used = (tail - r.loadHead()) >>> 0;
    return used > r.capacity || r.capacity - used >= Math.min(r.capacity, this.need(tail, len) + slack);
  }

  /**
   * A sender's spin while the ring is full: wait until a record of `len` fits with room to spare
   * (a quarter of the ring, at most 256 KiB), polling HEAD about every 0.5 µs. The consumer writes
   * HEAD once per message, and every poll takes that cache line away from it: polling as fast as a
   * receiver polls TAIL made the consumer, the side that limits throughput, pay a cache miss per
   * message. Waiting for a batch of space lets the consumer run on lines it owns. True if ready.
   */
  spinForSpace(len: number, micros: number, shared: boolean): boolean {
    const r = this.ring;
    const budget = micros < 0 ? tuning.spinMicros : micros;
    if (budget <= 0) return false;
    const slack = Math.min(r.capacity >>> 2, 1 << 18);
    let end = 0;
    for (let k = 1; ; k++) {
      for (let j = 0; j < 24; j++) pause();
      if (r.i32.length === 0 || r.closed || this.spaceFor(len, shared, slack)) return true;
      if ((k & 7) === 0 && (end = spinEnd(end, budget)) < 0) return false;
    }
  }
}

/**
 * The consumer cursor of a ring: find the next record, read it, give its space back by publishing
 * HEAD with one exchange (which also returns the flags of waiting senders, cleared, so they are
 * woken). The caller holds the consumer role (single consumer) or the consumer lock
 * (multi-consumer: reload() first). A record is (position, length): next() returns the length of
 * the record at `head`, and release() takes the position to publish; nothing else is carried.
 */
import { CLOSED_BIT, POS_MASK } from './format';
import { PADDING, type Ring } from './ring';
import { WAITING } from '../flag-word';
import { pause, spinEnd, tuning } from '../wait';

/** next(): nothing is published after `head`. */
export const EMPTY = -1;

export class RingConsumer {
  /** Position of the next record. Authoritative while this handle holds consumer rights. */
  head = 0;
  /** The last TAIL seen: at least this much is published. */
  tailCache = 0;

  constructor(private readonly ring: Ring) {}

  /** Loads the shared positions (on taking the role or the lock). */
  reload(): void {
    this.head = this.ring.loadHead();
    this.tailCache = this.ring.loadTail();
  }

  /**
   * The payload length of the next record, or EMPTY. Padding is skipped: afterwards `head` is the
   * record's position (skipping padding consumes nothing until release()). ERR_SHMKIT_CORRUPT on
   * damage (Ring.recordAt).
   */
  next(): number {
    const r = this.ring;
    let pos = this.head;
    for (let hops = 0; hops < 2; hops++) {
      let avail = (this.tailCache - pos) >>> 0;
      if (avail === 0) {
        this.tailCache = r.loadTail();
        avail = (this.tailCache - pos) >>> 0;
        if (avail === 0) return EMPTY;
      }
      const len = r.recordAt(pos, avail);
      if (len !== PADDING) return len;
      pos = (pos + (r.capacity - (pos & r.mask))) >>> 0;
      this.head = pos;
    }
    throw r.corrupt('two padding records in a row');
  }

  /**
   * next() for the single consumer's fast path: the record at `head` if one is published and is
   * not padding, else EMPTY (the caller falls back to next(), which also skips padding). The same
   * checks as next(): damage throws.
   */
  nextPlain(): number {
    const pos = this.head;
    if (this.ring.i32.length === 0) return EMPTY; // unmapped: the general path reports CLOSED
    if (pos === this.tailCache) {
      this.tailCache = this.ring.loadTail();
      if (pos === this.tailCache) return EMPTY;
    }
    const len = this.ring.recordAt(pos, (this.tailCache - pos) >>> 0);
    return len === PADDING ? EMPTY : len;
  }

  /**
   * Publishes `end` as HEAD after consuming `n` messages of `bytes` payload bytes: their space goes
   * back to producers. The exchange returns the flags a waiting sender set, and clears them: we
   * wake it (see RingProducer.casTail).
   */
  release(end: number, n: number, bytes: number): void {
    const r = this.ring;
    this.head = end;
    r.f64[r.fReceived]! += n;
    r.f64[r.fReceivedBytes]! += bytes;
    // Ring.storeHead, written out: this is every message's path.
    const old = Atomics.exchange(r.i32, r.headWord, end | 0);
    if ((old & WAITING) !== 0) r.spaceWaits.wake(old);
  }

  /** Nothing to read (only padding, perhaps). `shared`: read HEAD (multi-consumer) rather than our copy. */
  isEmpty(shared: boolean): boolean {
    return this.ring.emptyBetween(shared ? this.ring.loadHead() : this.head, this.ring.loadTail());
  }

  /**
   * The waiting single consumer's spin, written out tight: poll TAIL (with a pause between polls,
   * see wait.ts) for the spin budget, and return as soon as something is published after `head`
   * (true). False when the budget runs out or the ring is closed.
   */
  spinForData(): boolean {
    const budget = tuning.spinMicros;
    const r = this.ring;
    if (budget <= 0 || r.i32.length === 0) return false;
    const i32 = r.i32;
    const word = r.tailWord;
    let end = 0;
    for (;;) {
      for (let k = 0; k < 64; k++) {
        const t = Atomics.load(i32, word);
        if (((t & POS_MASK) >>> 0) !== this.head) {
          this.tailCache = (t & POS_MASK) >>> 0;
          return true;
        }
        if ((t & CLOSED_BIT) !== 0) return false;
        pause();
      }
      if ((end = spinEnd(end, budget)) < 0) return false;
    }
  }
}

/**
 * The byte ring's format, shared by every pattern built on a ring (docs/design.md, "Rings").
 *
 * - Positions are u32 byte counts that wrap mod 2^32; the capacity is a power of two, so
 *   `(tail - head) >>> 0` is the number of bytes in use and `pos & (capacity - 1)` the ring index.
 * - A record is `u32 length, u32 tag, payload`, padded to 8 bytes. `tag = pos ^ TAG_MAGIC` ties
 *   the record to its position: bytes left from an earlier lap never pass for a record. A record
 *   never wraps: a PAD record (length 0xffffffff) fills the end of the ring instead.
 * - A record is the pair (position, length): its payload starts at `payloadIndex(pos)` and the
 *   next record at `recordEnd(pos, len)`. Cursors return lengths and keep positions; no result is
 *   carried between calls in hidden fields.
 * - Positions are 8-aligned, so the low 3 bits of the TAIL and HEAD words carry flags: bit 0 is
 *   CLOSED_BIT, bits 1 and 2 the waiter flags of a flag word (flag-word.ts).
 */
export const POS_MASK = ~7;
/** TAIL: the ring is closed; no publishing CAS succeeds any more. HEAD: set by close() only to
 * change the word under parked senders; a consumer's exchange may clear it; never read. */
export const CLOSED_BIT = 1;

export const RECORD_HEADER = 8; // u32 length, u32 tag
export const PAD = 0xffffffff; // length of a padding record that fills the ring's end
export const TAG_MAGIC = 0x5a17c0de;

export const MIN_CAPACITY = 1024;
export const MAX_CAPACITY = 2 ** 30;

/** Bytes a record of `len` payload bytes takes: header plus payload padded to 8. */
export function recordSize(len: number): number {
  return RECORD_HEADER + ((len + 7) & ~7);
}

/** The position after the record of `len` bytes at `pos`. */
export function recordEnd(pos: number, len: number): number {
  return (pos + RECORD_HEADER + ((len + 7) & ~7)) >>> 0;
}

/** The tag of a record at `pos`. */
export function tagOf(pos: number): number {
  return (pos ^ TAG_MAGIC) >>> 0;
}

/** The largest message that always fits: a record plus the worst-case padding before it. */
export function maxMessageFor(capacity: number): number {
  return capacity / 2 - RECORD_HEADER;
}

/** `n` rounded up to a power of two, at least MIN_CAPACITY. */
export function ringCapacity(n: number): number {
  let p = MIN_CAPACITY;
  while (p < n) p *= 2;
  return p;
}

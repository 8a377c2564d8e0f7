/**
 * SharedMap memory layout; docs/design.md ("Shared maps") is the protocol. Offsets are bytes from
 * the start of the segment's data area unless said otherwise.
 *
 * Parameters (segment header bytes 64..95, written once at creation, validated at every open):
 *   64 u32 max entries      68 u32 max key bytes    72 u32 max value size   76 u32 flags (1: lru)
 *   80 u32 stripes          84 u32 buckets          88 u32 watch records    92 u32 value bytes (heap size)
 *
 * Data area:
 *   0    u32 RECOVERY: non-zero while a rebuild is owed (a lock was taken over from a dead writer)
 *   4    u32 CHANGES: a flag word (flag-word.ts) advanced by 8 when a change is recorded while a watcher sleeps
 *   8    f64 watcher parks
 *   16   Mutex (16 B): the heap lock, taken after a stripe lock, never before one
 *   32   u32 free entry list head (entry index + 1; 0: none)   36 u32 live entries
 *   40   f64 heap bytes in use (blocks of live values, headers included)
 *   48   f64 evictions   56 f64 expirations   64 f64 recoveries   (written under the heap lock)
 *   72   u32 watchers (watch iterators open; writers record changes only while it is not 0)
 *   76   u32 change records claimed (u32, wraps)
 *   80   u32 free-class bitmap (bit c: free list c is not empty)
 *   84   u32 LRU clock: every write adds 2 ('lru' maps only; wraps)
 *   88   f64 retired gets  96 f64 retired hits  104 f64 retired misses  112 f64 retired writes
 *        (the counters of handles that closed or died, folded in under the heap lock)
 *   128  16 x u32 doorbells of sleeping watchers
 *   256  32 x u32 free list heads (block offset + 1; 0: empty), by size class
 *   384  STAT_SLOTS handle slots, 64 B each:
 *        +0 i64 owner token  +8 f64 gets  +16 f64 hits  +24 f64 misses  +32 f64 writes
 *        +40 u32 watchers of this handle  +44 u32 read fence word
 *   stripes (64-aligned), 64 B each: +0 Mutex (16 B)  +16 u32 version  +24 f64 revision counter
 *   buckets (64-aligned): u32 each, entry index + 1 of the chain's first entry (0: empty)
 *   entries (64-aligned), ENTRY_HEAD + round8(max key bytes) each:
 *        +0 u32 seq (commit word; seq & 1 picks the live meta)  +4 u32 next (index + 1)
 *        +8 u32 key hash  +12 u32 key length  +16 u32 last used (LRU clock: a write's own value, a read's + 1)
 *        +24 meta 0, +48 meta 1 (24 B each): +0 f64 revision (0: free)  +8 f64 expires at (ms, 0: never)
 *                                               +16 u32 block (heap offset)  +20 u32 value length
 *        +72 key (UTF-8)
 *   watch records (64-aligned), REC_HEAD + round8(max key bytes) each:
 *        +0 u32 stamp ((2 pos + 2) mod 2^32 once written, (2 pos + 1) mod 2^32 while written)  +4 u32 type  +8 u32 key length
 *        +16 f64 revision  +24 key
 *   heap (64-aligned), value bytes: blocks, each 8-aligned, at least 16 B:
 *        +0 u32 size | USED (bit 0) | PREV_FREE (bit 1)
 *        used: +4 reserved, +8 the value     free: +4 next free (offset + 1), +8 previous free, last u32: size
 */
import { ErrorCodes, ShmkitError } from '../errors';
import type { Segment } from '../segment';

export const RECOVERY = 0;
export const CHANGES = 4;
export const WATCH_PARKS = 8;
export const HEAP_LOCK = 16;
export const FREE_ENTRIES = 32;
export const LIVE = 36;
export const HEAP_USED = 40;
export const EVICTIONS = 48;
export const EXPIRATIONS = 56;
export const RECOVERIES = 64;
export const WATCHERS = 72;
export const RING_HEAD = 76;
export const CLASS_BITS = 80;
export const CLOCK = 84;
export const RETIRED = 88;
export const WATCH_BELLS = 128;
export const FREE_LISTS = 256;
export const CLASSES = 32;
export const STAT_SLOTS_AT = 384;
export const STAT_SLOTS = 64;
export const STAT_SIZE = 64;
export const S_TOKEN = 0;
export const S_GETS = 8;
export const S_HITS = 16;
export const S_MISSES = 24;
export const S_WRITES = 32;
export const S_WATCHERS = 40;
export const S_FENCE = 44;

export const STRIPE_SIZE = 64;
export const ST_LOCK = 0;
export const ST_VERSION = 16;
export const ST_REVISION = 24;

export const ENTRY_HEAD = 72;
export const E_SEQ = 0;
export const E_NEXT = 4;
export const E_HASH = 8;
export const E_KEYLEN = 12;
export const E_USED = 16;
export const E_META = 24;
export const META_SIZE = 24;
export const M_REV = 0;
export const M_EXPIRES = 8;
export const M_BLOCK = 16;
export const M_LEN = 20;
export const E_KEY = 72;

export const REC_HEAD = 24;
export const R_STAMP = 0;
export const R_TYPE = 4;
export const R_KEYLEN = 8;
export const R_REV = 16;
export const R_KEY = 24;
/** Change types in a watch record. RESYNC: watchers rescan (a recovery, or changes not recorded one by one). */
export const CHANGE_SET = 1;
export const CHANGE_DELETE = 2;
export const CHANGE_EXPIRE = 3;
export const CHANGE_EVICT = 4;
export const CHANGE_RESYNC = 5;
/** A change record's stamp once position `pos` is written (even), and while it is (odd), mod 2^32. */
export const stampDone = (pos: number): number => ((2 * (pos >>> 0) + 2) % 4294967296) >>> 0;
export const stampWriting = (pos: number): number => ((2 * (pos >>> 0) + 1) % 4294967296) >>> 0;
/** What a recorded change adds to the CHANGES word while a watcher sleeps. */
export const STEP = 8;

/** Heap block header bits. */
export const USED = 1;
export const PREV_FREE = 2;
export const SIZE_MASK = ~7;
export const MIN_BLOCK = 16;
/** A used block's header before the value. */
export const BLOCK_HEAD = 8;

export const FLAG_LRU = 1;
export const MAX_ENTRIES = 1 << 24;
export const MAX_KEY_BYTES = 4096;
export const MAX_VALUE_SIZE = 64 << 20;
export const MAX_STRIPES = 1024;
export const MAX_WATCH_RECORDS = 1 << 20;
export const MAX_HEAP = 2 ** 32 - 64;
export const MAX_BYTES = 2 ** 40;

export interface MapParams {
  maxEntries: number;
  maxKeyBytes: number;
  maxValueSize: number;
  lru: boolean;
  stripes: number;
  buckets: number;
  watchRecords: number;
  heapBytes: number;
}

export const round8 = (n: number): number => (n + 7) & ~7;
const align64 = (n: number): number => Math.ceil(n / 64) * 64;
export const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** The block size a value of `len` bytes takes in the heap. */
export const blockSize = (len: number): number => Math.max(MIN_BLOCK, round8(BLOCK_HEAD + len));

export function entrySize(p: MapParams): number {
  return ENTRY_HEAD + round8(p.maxKeyBytes);
}
export function recordSize(p: MapParams): number {
  return REC_HEAD + round8(p.maxKeyBytes);
}

export interface MapOffsets {
  stripes: number;
  buckets: number;
  entries: number;
  records: number;
  heap: number;
  size: number;
}

export function offsets(p: MapParams): MapOffsets {
  const stripes = align64(STAT_SLOTS_AT + STAT_SLOTS * STAT_SIZE);
  const buckets = align64(stripes + p.stripes * STRIPE_SIZE);
  const entries = align64(buckets + p.buckets * 4);
  const records = align64(entries + p.maxEntries * entrySize(p));
  const heap = align64(records + p.watchRecords * recordSize(p));
  return { stripes, buckets, entries, records, heap, size: heap + p.heapBytes };
}

export function writeParams(seg: Segment, p: MapParams): void {
  const dv = seg.params();
  dv.setUint32(0, p.maxEntries, true);
  dv.setUint32(4, p.maxKeyBytes, true);
  dv.setUint32(8, p.maxValueSize, true);
  dv.setUint32(12, p.lru ? FLAG_LRU : 0, true);
  dv.setUint32(16, p.stripes, true);
  dv.setUint32(20, p.buckets, true);
  dv.setUint32(24, p.watchRecords, true);
  dv.setUint32(28, p.heapBytes, true);
}

/** The parameters of an existing map, checked as untrusted input; a string says what is wrong. */
export function checkParams(dv: DataView, size: number): MapParams | string {
  const p: MapParams = {
    maxEntries: dv.getUint32(0, true),
    maxKeyBytes: dv.getUint32(4, true),
    maxValueSize: dv.getUint32(8, true),
    lru: (dv.getUint32(12, true) & FLAG_LRU) !== 0,
    stripes: dv.getUint32(16, true),
    buckets: dv.getUint32(20, true),
    watchRecords: dv.getUint32(24, true),
    heapBytes: dv.getUint32(28, true),
  };
  if (p.maxEntries < 1 || p.maxEntries > MAX_ENTRIES) return `bad max entries ${p.maxEntries}`;
  if (p.maxKeyBytes < 1 || p.maxKeyBytes > MAX_KEY_BYTES) return `bad max key bytes ${p.maxKeyBytes}`;
  if ((dv.getUint32(12, true) & ~FLAG_LRU) !== 0) return 'bad flags';
  if (!isPow2(p.stripes) || p.stripes > MAX_STRIPES) return `bad stripe count ${p.stripes}`;
  if (!isPow2(p.buckets) || p.buckets < p.stripes || p.buckets > 4 * MAX_ENTRIES) return `bad bucket count ${p.buckets}`;
  if (!isPow2(p.watchRecords) || p.watchRecords > MAX_WATCH_RECORDS) return `bad watch record count ${p.watchRecords}`;
  if (p.heapBytes < MIN_BLOCK || p.heapBytes % 8 !== 0 || p.heapBytes > MAX_HEAP) return `bad value bytes ${p.heapBytes}`;
  if (p.maxValueSize < 1 || p.maxValueSize > MAX_VALUE_SIZE || blockSize(p.maxValueSize) > p.heapBytes) return `bad max value size ${p.maxValueSize}`;
  const o = offsets(p);
  if (o.size > MAX_BYTES || size !== o.size) return `data area is ${size} bytes, expected ${o.size}`;
  return p;
}

export function readParams(seg: Segment): MapParams {
  const r = checkParams(seg.params(), seg.size);
  if (typeof r === 'string') throw new ShmkitError(ErrorCodes.CORRUPT, `open map "${seg.name}": ${r}`, { segment: seg.name });
  return r;
}

/** The free-list class of a block of `size` bytes: floor(log2(size / 16)), at most CLASSES - 1. */
export function sizeClass(size: number): number {
  const c = 31 - Math.clz32(size >>> 4);
  return c < 0 ? 0 : c >= CLASSES ? CLASSES - 1 : c;
}

/** FNV-1a over `len` bytes at `at` of `b`. */
export function hashBytes(b: Uint8Array, at: number, len: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < len; i++) h = Math.imul(h ^ b[at + i]!, 0x01000193);
  return h >>> 0;
}

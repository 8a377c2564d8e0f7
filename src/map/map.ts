/**
 * SharedMap: a key-value map in shared memory, the Redis/Memcached analogue for processes on one
 * machine. Keys are strings; values go through a codec (JSON by default).
 *
 * - Reads take no lock. An entry has a commit word `seq` and two copies of its meta (revision,
 *   expiry, value block, length); `seq & 1` picks the live copy. A writer fills the other copy and
 *   a fresh value block, then stores `seq + 1`: one store commits the write, so a writer killed at
 *   any instruction leaves the key at its old value or its new one. A reader copies what it needs,
 *   then checks `seq` did not move (a seqlock); it retries a bounded number of times, then reads
 *   under the stripe's lock.
 * - Writers take the robust lock of the key's stripe (keys are spread over `stripes` stripes by
 *   hash), then, briefly, the heap lock to allocate or free. Writers of keys in different stripes
 *   run in parallel.
 * - Whoever takes over a lock from a dead writer marks the map for recovery; the recovery holds
 *   every lock and rebuilds the derived state (free lists, free entries, counts) from the live
 *   entries alone, so nothing a dead writer held stays leaked.
 * See docs/design.md ("Shared maps") for the byte-level protocol.
 */
import type { Codec } from '../codec/codec';
import { resolveCodec } from '../codec/codec';
import { type CodecPlan, planFor } from '../codec/plan';
import { utf8Slice, utf8Write } from '../codec/utf8';
import { ErrorCodes, invalidArg, ShmkitError } from '../errors';
import { fullFence } from '../fence';
import { FlagWord, WAITING } from '../flag-word';
import { Handle } from '../handle';
import { SELF_TOKEN, takeSlot } from '../identity';
import { openNamed, type OpenHow } from '../open';
import { Kind, type OpenOptions, Segment } from '../segment';
import { lockWithin } from '../sync/lock-within';
import { Mutex, type MutexGuard } from '../sync/mutex';
import { parseMode } from '../sync/primitive';
import { parseTrust } from '../trust';
import { checkInt, checkObject, checkTimeout, describe } from '../validate';
import { Deadline } from '../wait';
import { Heap, HeapDamage, type LiveBlock } from './heap';
import * as L from './layout';
import { MapWatch, type MapChange, type WatchOptions } from './watch';

export type { MapChange, WatchOptions };

export interface SharedMapOptions<T = unknown> extends OpenOptions {
  /** Entries the map can hold (1 to 2^24). Default 1024. */
  maxEntries?: number;
  /** Longest key, in UTF-8 bytes (1 to 4096). Default 64. */
  maxKeyBytes?: number;
  /** Bytes of the value heap: every value takes its length rounded up to 8, plus 8. Default 1 MiB. */
  valueBytes?: number;
  /** Largest single value, in bytes. Default: 1 MiB or half the heap less 8, whichever is less (so the largest value can be replaced). */
  maxValueSize?: number;
  /** When full: 'none' (default: ERR_SHMKIT_FULL) or 'lru' (evict the least recently used entries). */
  eviction?: 'none' | 'lru';
  /** Lock stripes (a power of two, 1 to 1024): writers of keys in different stripes run in parallel. Default 64 (at most the bucket count). */
  stripes?: number;
  /** Change records kept for watchers (a power of two). A watcher further behind rescans. Default 1024. */
  watchRecords?: number;
  /** 'json' (default), 'utf8', 'bytes', 'jsonb', 'structured', or a Codec. Every handle of a map must use the same. */
  codec?: string | Codec<T>;
  /** Permission bits. Default 0o600. */
  mode?: number;
}

export interface OpenSharedMapOptions<T = unknown> extends OpenOptions {
  codec?: string | Codec<T>;
}

export interface SetOptions {
  /** Milliseconds until the key expires (a positive number). Default: never; a set without ttl clears an earlier one. */
  ttl?: number;
  /** Write only if the key's revision is this (0: only if the key is absent); else ERR_SHMKIT_CONFLICT. */
  ifRevision?: number;
  /** Write only if the key is absent; else ERR_SHMKIT_EXISTS. */
  ifAbsent?: boolean;
  /** Write only if the key is present; else ERR_SHMKIT_NOT_FOUND. */
  ifPresent?: boolean;
  /** Milliseconds to wait at most for the key's stripe lock (held by another writer). Default: forever. */
  timeout?: number;
}

export interface DeleteOptions {
  /** Delete only if the key's revision is this; else ERR_SHMKIT_CONFLICT. */
  ifRevision?: number;
  timeout?: number;
}

export interface IncrementOptions {
  /** Milliseconds until the key expires; without it the key keeps the expiry it had. */
  ttl?: number;
  timeout?: number;
}

export interface MapEntry<T> {
  value: T;
  /** Changes with every write of the key; unique in the map (never reused, also after a delete). */
  revision: number;
  /** When the key expires (ms since the epoch), or null. */
  expiresAt: number | null;
}

export interface SharedMapStats {
  /** Entries stored (expired ones count until they are removed). */
  entries: number;
  maxEntries: number;
  /** Value heap bytes in live blocks (headers and rounding included). */
  bytesUsed: number;
  valueBytes: number;
  /** Reads by every handle (live, closed or dead) and how many found their key. */
  gets: number;
  hits: number;
  misses: number;
  writes: number;
  evictions: number;
  expirations: number;
  /** Times a writer took a lock over from a dead one and the map was rebuilt. */
  recoveries: number;
  watchers: number;
}

export interface VerifyReport {
  ok: boolean;
  problems: string[];
  entries: number;
  bytesUsed: number;
  bytesFree: number;
  largestFree: number;
}

/** What the 'recovered' event carries. */
export interface MapRecovery {
  entries: number;
  /** Entries a dead writer had taken that no key used: given back. */
  entriesFreed: number;
  /** Heap bytes given back (leaked by a dead writer). */
  bytesFreed: number;
}

const FOREVER = new Deadline(Infinity);
/** Lock-free read attempts before a read takes the stripe lock. */
const READ_RETRIES = 32;
const MISSING = Symbol('missing');
const RETRY = Symbol('retry');
/** A key's entry: its offset, the seq it was read at, its live meta copy, and the link word (u32 index) that points at it. */
type Found = { e: number; seq: number; m: number; link: number };

/** Thrown inside a write when the map needs its recovery first: the write unlocks, recovers, retries. */
class NeedRecovery extends Error {}

/** An LRU sample looks at this many buckets at least (more in a sparse map). */
const SAMPLE_BUCKETS = 65536;


export class SharedMap<T = unknown> extends Handle {
  readonly maxEntries: number;
  readonly maxKeyBytes: number;
  readonly maxValueSize: number;
  readonly valueBytes: number;
  readonly eviction: 'none' | 'lru';
  readonly stripes: number;
  readonly codec: Codec<T>;

  /** @internal */ readonly params: L.MapParams;
  /** @internal */ readonly o: L.MapOffsets;
  /** @internal */ readonly data: number;
  /** @internal */ readonly u8: Buffer;
  /** @internal */ readonly u32: Uint32Array;
  /** @internal */ readonly i32: Int32Array;
  /** @internal */ readonly f64: Float64Array;
  /** @internal */ readonly plan: CodecPlan<T>;
  /** @internal */ readonly changes: FlagWord;
  private readonly heap: Heap;
  private readonly heapLock: Mutex;
  private readonly stripeLocks: Mutex[];
  private readonly esize: number;
  private readonly rsize: number;
  private readonly entries0: number;
  private readonly buckets0: number;
  private readonly stripes0: number;
  private readonly bucketMask: number;
  private readonly stripeMask: number;
  /** Scratch for the key being looked up: its UTF-8 bytes, length and hash. */
  private readonly kb: Buffer;
  private klen = 0;
  private khash = 0;
  /** Scratch for string values, encoded before their block is allocated. */
  private vb: Buffer = Buffer.allocUnsafe(1024);
  /** Byte offset (in the mapping) of this handle's stats slot, or -1 without one. */
  private slot = -1;
  /** Counters of a handle without a slot. */
  private readonly local = { gets: 0, hits: 0, misses: 0, writes: 0 };
  private readonly watches = new Set<MapWatch<T>>();
  /** The deadline and name of the write running now (the heap lock is taken within it). */
  private deadline = new Deadline(Infinity);
  private what = 'set';

  private constructor(segment: Segment, params: L.MapParams, codec: Codec<T>) {
    super(segment, `map "${segment.name}"`);
    this.params = params;
    this.o = L.offsets(params);
    this.maxEntries = params.maxEntries;
    this.maxKeyBytes = params.maxKeyBytes;
    this.maxValueSize = params.maxValueSize;
    this.valueBytes = params.heapBytes;
    this.eviction = params.lru ? 'lru' : 'none';
    this.stripes = params.stripes;
    this.codec = codec;
    this.plan = planFor(codec);
    const buf = segment.buffer;
    this.data = segment.dataOffset;
    this.u8 = Buffer.from(buf);
    this.u32 = new Uint32Array(buf, 0, buf.byteLength >> 2);
    this.i32 = segment.int32;
    this.f64 = new Float64Array(buf, 0, buf.byteLength >> 3);
    this.esize = L.entrySize(params);
    this.rsize = L.recordSize(params);
    this.entries0 = this.data + this.o.entries;
    this.buckets0 = this.data + this.o.buckets;
    this.stripes0 = this.data + this.o.stripes;
    this.bucketMask = params.buckets - 1;
    this.stripeMask = params.stripes - 1;
    this.kb = Buffer.allocUnsafe(3 * params.maxKeyBytes + 8);
    this.heap = new Heap(buf, this.data, this.o.heap, params.heapBytes);
    this.heapLock = Mutex.at(segment, L.HEAP_LOCK);
    this.stripeLocks = [];
    for (let i = 0; i < params.stripes; i++) this.stripeLocks.push(Mutex.at(segment, this.o.stripes + i * L.STRIPE_SIZE + L.ST_LOCK));
    this.changes = new FlagWord(segment, this.errors.label, (this.data + L.CHANGES) >> 2, (this.data + L.WATCH_BELLS) >> 2, (this.data + L.WATCH_PARKS) >> 3);
    this.takeStatSlot();
  }

  // Creation -------------------------------------------------------------------------------------

  private static named<T>(how: OpenHow, name: string, options: unknown): SharedMap<T> {
    const o = checkObject('options', options);
    const codec = resolveCodec(o.codec === undefined ? 'json' : o.codec) as Codec<T>;
    const trust = parseTrust(o.trustedOwners);
    if (how === 'open') {
      return openNamed(how, name, { kind: Kind.MAP, size: 0, minSize: 0, mode: 0o600, trust }, (seg) => new SharedMap<T>(seg, L.readParams(seg), codec));
    }
    const maxEntries = o.maxEntries === undefined ? 1024 : checkInt('options.maxEntries', o.maxEntries, 1, L.MAX_ENTRIES);
    const maxKeyBytes = o.maxKeyBytes === undefined ? 64 : checkInt('options.maxKeyBytes', o.maxKeyBytes, 1, L.MAX_KEY_BYTES);
    const heapBytes = L.round8(o.valueBytes === undefined ? 1 << 20 : checkInt('options.valueBytes', o.valueBytes, L.MIN_BLOCK, L.MAX_HEAP));
    const fits = Math.min(L.MAX_VALUE_SIZE, heapBytes - L.BLOCK_HEAD);
    // By default a value of the largest size can be replaced: its old and new blocks fit at once.
    const half = Math.max(1, Math.floor(heapBytes / 16) * 8 - L.BLOCK_HEAD);
    const maxValueSize = o.maxValueSize === undefined ? Math.min(1 << 20, half) : checkInt('options.maxValueSize', o.maxValueSize, 1, fits);
    let buckets = 1;
    while (buckets < maxEntries) buckets *= 2;
    let stripes = 64;
    if (o.stripes !== undefined) {
      stripes = checkInt('options.stripes', o.stripes, 1, L.MAX_STRIPES);
      if (!L.isPow2(stripes)) throw invalidArg('options.stripes', `must be a power of two, got ${stripes}`);
    }
    stripes = Math.min(stripes, buckets);
    let watchRecords = 1024;
    if (o.watchRecords !== undefined) {
      watchRecords = checkInt('options.watchRecords', o.watchRecords, 1, L.MAX_WATCH_RECORDS);
      if (!L.isPow2(watchRecords)) throw invalidArg('options.watchRecords', `must be a power of two, got ${watchRecords}`);
    }
    if (o.eviction !== undefined && o.eviction !== 'none' && o.eviction !== 'lru') throw invalidArg('options.eviction', `must be 'none' or 'lru', got ${describe(o.eviction)}`);
    const p: L.MapParams = { maxEntries, maxKeyBytes, maxValueSize, lru: o.eviction === 'lru', stripes, buckets, watchRecords, heapBytes };
    const size = L.offsets(p).size;
    if (size > L.MAX_BYTES) throw invalidArg('options.maxEntries', `the map would take ${size} bytes`);
    const spec = { kind: Kind.MAP, size, minSize: 0, mode: parseMode(o), trust, initialize: (s: Segment) => SharedMap.initialize(s, p) };
    return openNamed(how, name, spec, (seg) => new SharedMap<T>(seg, seg.created ? p : L.readParams(seg), codec));
  }

  /** Writes a new map's parameters and empty state (before anyone can open it). */
  private static initialize(seg: Segment, p: L.MapParams): void {
    L.writeParams(seg, p);
    const o = L.offsets(p);
    const u32 = new Uint32Array(seg.buffer, 0, seg.buffer.byteLength >> 2);
    const data = seg.dataOffset;
    const e0 = data + o.entries;
    const es = L.entrySize(p);
    for (let i = 0; i < p.maxEntries; i++) u32[(e0 + i * es + L.E_NEXT) >> 2] = i + 2 <= p.maxEntries ? i + 2 : 0;
    u32[(data + L.FREE_ENTRIES) >> 2] = 1;
    new Heap(seg.buffer, data, o.heap, p.heapBytes).reset();
  }

  /** Creates the map (ERR_SHMKIT_EXISTS if the name is taken). */
  static create<T = unknown>(name: string, options?: SharedMapOptions<T>): SharedMap<T> {
    return SharedMap.named<T>('create', name, options);
  }

  /** Opens an existing map (ERR_SHMKIT_NOT_FOUND if absent). Pass the codec the map was written with. */
  static open<T = unknown>(name: string, options?: OpenSharedMapOptions<T>): SharedMap<T> {
    return SharedMap.named<T>('open', name, options);
  }

  /** Opens the map, or creates it with `options` if absent (exactly one of racing creators wins). */
  static openOrCreate<T = unknown>(name: string, options?: SharedMapOptions<T>): SharedMap<T> {
    return SharedMap.named<T>('openOrCreate', name, options);
  }

  /** Removes the name; handles keep working until closed. Returns whether it existed. */
  static unlink(name: string): boolean {
    return Segment.unlink(name);
  }

  // Keys and values ------------------------------------------------------------------------------

  /** Encodes `key` into the scratch (bytes, length, hash); throws on a bad or too long key. */
  private key(key: unknown): void {
    if (typeof key !== 'string') throw invalidArg('key', `must be a string, got ${describe(key)}`);
    const len = key.length;
    if (len > this.maxKeyBytes) throw this.tooLongKey(key);
    if (len <= 64) {
      // ASCII (the common case): encoded and hashed in one loop, no call into C++.
      const kb = this.kb;
      let h = 0x811c9dc5;
      let i = 0;
      for (; i < len; i++) {
        const c = key.charCodeAt(i);
        if (c >= 128) break;
        kb[i] = c;
        h = Math.imul(h ^ c, 0x01000193);
      }
      if (i === len) {
        this.klen = len;
        this.khash = h >>> 0;
        return;
      }
    }
    const n = utf8Write(this.kb, key, 0, this.kb.length);
    if (n > this.maxKeyBytes) throw this.tooLongKey(key);
    if (n !== key.length && !(key as unknown as { isWellFormed(): boolean }).isWellFormed()) throw invalidArg('key', 'contains a lone surrogate (not valid UTF-16)');
    this.klen = n;
    this.khash = L.hashBytes(this.kb, 0, n);
  }

  private tooLongKey(key: string): ShmkitError {
    return new ShmkitError(ErrorCodes.TOO_LARGE, `${this.errors.label}: a key of ${Buffer.byteLength(key)} UTF-8 bytes exceeds the maximum of ${this.maxKeyBytes}; nothing was written`, { segment: this.name, argument: 'key' });
  }

  /** The value's bytes: a Uint8Array, or the scratch holding a string's UTF-8 (first `n` bytes). */
  private encodeValue(value: T): { bytes: Uint8Array; n: number } {
    let data;
    try {
      data = this.plan.encode(value);
    } catch (err) {
      if (err instanceof ShmkitError) throw err;
      throw new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `${this.errors.label}: codec ${this.codec.name} cannot encode the value: ${(err as Error)?.message ?? String(err)}`, { segment: this.name, argument: 'value', cause: err });
    }
    if (typeof data === 'string') {
      if (data.length > this.maxValueSize) throw this.tooLargeValue(Buffer.byteLength(data));
      if (this.vb.length < 3 * data.length) this.vb = Buffer.allocUnsafe(Math.max(3 * data.length, 2 * this.vb.length));
      const n = utf8Write(this.vb, data, 0, this.vb.length);
      if (n > this.maxValueSize) throw this.tooLargeValue(n);
      return { bytes: this.vb, n };
    }
    if (data.byteLength > this.maxValueSize) throw this.tooLargeValue(data.byteLength);
    return { bytes: data, n: data.byteLength };
  }

  private tooLargeValue(n: number): ShmkitError {
    return new ShmkitError(ErrorCodes.TOO_LARGE, `${this.errors.label}: a ${n}-byte value exceeds the maximum of ${this.maxValueSize} bytes; nothing was written`, { segment: this.name, argument: 'value' });
  }

  private decode(raw: unknown): T {
    try {
      return this.plan.decodeCopy(raw);
    } catch (err) {
      throw this.errors.error(ErrorCodes.DECODE, `a value could not be decoded by codec ${this.codec.name}`, err);
    }
  }

  // Entries --------------------------------------------------------------------------------------

  /** @internal Byte offset (in the mapping) of entry `i`. */
  entryAt(i: number): number {
    return this.entries0 + i * this.esize;
  }

  private stripeAt(st: number): number {
    return this.stripes0 + st * L.STRIPE_SIZE;
  }

  /** Whether the scratch key equals the key of the entry at `e` (hash and length already equal). */
  private keyEquals(e: number): boolean {
    const kb = this.kb;
    const u8 = this.u8;
    const at = e + L.E_KEY;
    for (let i = 0; i < this.klen; i++) if (u8[at + i] !== kb[i]) return false;
    return true;
  }

  /** A value block's position and length, checked against the heap; -1 if out of range. */
  private valueStart(m: number): number {
    const block = this.u32[(m + L.M_BLOCK) >> 2]!;
    const len = this.u32[(m + L.M_LEN) >> 2]!;
    if (len > this.maxValueSize || block % 8 !== 0 || block + L.BLOCK_HEAD + len > this.valueBytes) return -1;
    return this.data + this.o.heap + block + L.BLOCK_HEAD;
  }

  private corrupt(why: string): ShmkitError {
    return new ShmkitError(ErrorCodes.CORRUPT, `${this.errors.label}: ${why}`, { segment: this.name });
  }

  /**
   * One lock-free lookup of the scratch key: the entry and the seq it was read at (its meta `m`),
   * MISSING, or RETRY when a writer moved something under it. `locked`: the caller holds the
   * stripe lock, so nothing moves and garbage is reported at once.
   */
  private find(locked: boolean): Found | typeof MISSING | typeof RETRY {
    const u32 = this.u32;
    const b = this.khash & this.bucketMask;
    const ver = (this.stripeAt(b & this.stripeMask) + L.ST_VERSION) >> 2;
    const v1 = Atomics.load(u32, ver);
    let at = (this.buckets0 + 4 * b) >> 2;
    let link = Atomics.load(u32, at);
    const n = this.maxEntries;
    for (let steps = 0; link !== 0; steps++) {
      if (link > n || steps >= n) {
        if (!locked && Atomics.load(u32, ver) !== v1) return RETRY;
        throw this.corrupt(`bucket ${b}: a chain ${link > n ? `links to entry ${link - 1}, beyond the ${n} entries` : 'has a cycle'}`);
      }
      const e = this.entryAt(link - 1);
      const seq = Atomics.load(u32, e >> 2);
      if (u32[(e + L.E_HASH) >> 2] === this.khash && u32[(e + L.E_KEYLEN) >> 2] === this.klen) {
        const m = e + L.E_META + (seq & 1) * L.META_SIZE;
        if (this.f64[m >> 3]! > 0 && this.keyEquals(e)) return { e, seq, m, link: at };
      }
      at = (e + L.E_NEXT) >> 2;
      link = Atomics.load(u32, at);
    }
    if (!locked && Atomics.load(u32, ver) !== v1) return RETRY;
    return MISSING;
  }

  /** Copies the found entry's value (validating it), or RETRY. Counts a hit. */
  private readValue(f: Found, locked: boolean): unknown {
    const start = this.valueStart(f.m);
    if (start < 0) {
      fullFence();
      if (!locked && Atomics.load(this.u32, f.e >> 2) !== f.seq) return RETRY;
      throw this.corrupt(`entry ${(f.e - this.entries0) / this.esize}: its value block is out of the heap`);
    }
    const raw = this.plan.copy(this.u8, this.i32, start, this.u32[(f.m + L.M_LEN) >> 2]!);
    fullFence(); // the reads above happen before seq is read again
    if (!locked && Atomics.load(this.u32, f.e >> 2) !== f.seq) return RETRY;
    return raw;
  }

  private expired(m: number): boolean {
    const x = this.f64[(m + L.M_EXPIRES) >> 3]!;
    return x !== 0 && x <= Date.now();
  }

  /** A read of entry `e` ('lru' maps): marks it used after the last write (the clock, plus 1). */
  private touch(e: number): void {
    if (!this.params.lru) return;
    const v = (Atomics.load(this.u32, (this.data + L.CLOCK) >> 2) + 1) >>> 0;
    if (this.u32[(e + L.E_USED) >> 2] !== v) this.u32[(e + L.E_USED) >> 2] = v;
  }

  /** A write of entry `e`: the clock's next value. */
  private stamp(e: number): void {
    if (this.params.lru) this.u32[(e + L.E_USED) >> 2] = (Atomics.add(this.u32, (this.data + L.CLOCK) >> 2, 2) + 2) >>> 0;
  }

  private count(hit: boolean): void {
    const s = this.slot;
    if (s < 0) {
      this.local.gets++;
      if (hit) this.local.hits++;
      else this.local.misses++;
      return;
    }
    const f = this.f64;
    f[(s + L.S_GETS) >> 3]!++;
    if (hit) f[(s + L.S_HITS) >> 3]!++;
    else f[(s + L.S_MISSES) >> 3]!++;
  }

  /**
   * Reads the scratch key: `what` 0 = the value, 1 = presence, 2 = the entry. Lock-free, with
   * READ_RETRIES attempts, then under the stripe lock.
   */
  private read(what: 0 | 1 | 2, deadline = FOREVER): unknown {
    for (let attempt = 0; attempt < READ_RETRIES; attempt++) {
      const f = this.find(false);
      if (f === RETRY) continue;
      if (f === MISSING) return MISSING;
      if (what === 1) {
        const exp = this.expired(f.m);
        fullFence();
        if (Atomics.load(this.u32, f.e >> 2) !== f.seq) continue;
        return exp ? MISSING : true;
      }
      const rev = this.f64[(f.m + L.M_REV) >> 3]!;
      const expires = this.f64[(f.m + L.M_EXPIRES) >> 3]!;
      const raw = this.readValue(f, false);
      if (raw === RETRY) continue;
      if (expires !== 0 && expires <= Date.now()) return MISSING;
      this.touch(f.e);
      return what === 0 ? { raw } : { raw, rev, expires };
    }
    return this.readLocked(what, deadline);
  }

  /** The slow path: the same read under the stripe lock (a dead holder is recovered first). */
  private readLocked(what: 0 | 1 | 2, deadline: Deadline): unknown {
    return this.withStripe(deadline, 'get', () => {
      const f = this.find(true);
      if (f === MISSING || this.expired((f as Found).m)) return MISSING;
      if (what === 1) return true;
      const found = f as Found;
      const raw = this.readValue(found, true);
      this.touch(found.e);
      return what === 0 ? { raw } : { raw, rev: this.f64[(found.m + L.M_REV) >> 3]!, expires: this.f64[(found.m + L.M_EXPIRES) >> 3]! };
    });
  }

  // Reading --------------------------------------------------------------------------------------

  /** The key's value, or undefined if absent (or expired). Takes no lock. */
  get(key: string): T | undefined {
    this.assertOpen();
    this.key(key);
    const r = this.read(0);
    this.count(r !== MISSING);
    return r === MISSING ? undefined : this.decode((r as { raw: unknown }).raw);
  }

  /** The key's value with its revision and expiry, or undefined. Takes no lock. */
  getEntry(key: string): MapEntry<T> | undefined {
    this.assertOpen();
    this.key(key);
    const r = this.read(2);
    this.count(r !== MISSING);
    if (r === MISSING) return undefined;
    const x = r as { raw: unknown; rev: number; expires: number };
    return { value: this.decode(x.raw), revision: x.rev, expiresAt: x.expires === 0 ? null : x.expires };
  }

  /** Whether the key is present (and not expired). Takes no lock. */
  has(key: string): boolean {
    this.assertOpen();
    this.key(key);
    const hit = this.read(1) !== MISSING;
    this.count(hit);
    return hit;
  }

  /** Entries stored: a counter, so expired entries count until a writer removes them (see purgeExpired()). */
  get size(): number {
    this.assertOpen();
    return Atomics.load(this.u32, (this.data + L.LIVE) >> 2);
  }

  /**
   * Walks the chains bucket by bucket, lock-free: every live, unexpired entry whose key starts
   * with `prefix`, each key once. A bucket's chain is read as a lookup is (each entry validated by
   * its seq, the chain by its stripe's version), with bounded retries, then under the stripe lock.
   * Weakly consistent, as a concurrent map's iterator: an entry written during the walk may or may
   * not be seen; every entry present throughout the walk is.
   */
  private *walk(prefix: string | undefined, withValue: boolean, deadline = FOREVER): Generator<[string, unknown, number, number]> {
    const seen = new Set<string>();
    for (let b = 0; b < this.params.buckets; b++) {
      this.assertOpen();
      if (Atomics.load(this.u32, (this.buckets0 + 4 * b) >> 2) === 0) continue;
      let got = this.walkBucket(b, prefix, withValue, false);
      for (let attempt = 1; got === null && attempt < READ_RETRIES; attempt++) got = this.walkBucket(b, prefix, withValue, false);
      if (got === null) {
        // Rewritten all the time: read it under its stripe lock.
        this.withStripeIndex(b & this.stripeMask, deadline, 'keys', () => {
          got = this.walkBucket(b, prefix, withValue, true);
        });
      }
      const now = Date.now();
      for (const item of got!) {
        if ((item[3] === 0 || item[3] > now) && !seen.has(item[0])) {
          seen.add(item[0]);
          yield item;
        }
      }
    }
  }

  /** One read of bucket `b`'s chain: [key, raw value, revision, expires] of matching live entries, or null if it moved. */
  private walkBucket(b: number, prefix: string | undefined, withValue: boolean, locked: boolean): [string, unknown, number, number][] | null {
    const u32 = this.u32;
    const ver = (this.stripeAt(b & this.stripeMask) + L.ST_VERSION) >> 2;
    const v1 = Atomics.load(u32, ver);
    const out: [string, unknown, number, number][] = [];
    let link = Atomics.load(u32, (this.buckets0 + 4 * b) >> 2);
    for (let steps = 0; link !== 0; steps++) {
      if (link > this.maxEntries || steps >= this.maxEntries) {
        if (!locked && Atomics.load(u32, ver) !== v1) return null;
        throw this.corrupt(`bucket ${b}: a chain links out of range or has a cycle`);
      }
      const e = this.entryAt(link - 1);
      const seq = Atomics.load(u32, e >> 2);
      const m = e + L.E_META + (seq & 1) * L.META_SIZE;
      const rev = this.f64[(m + L.M_REV) >> 3]!;
      if (rev > 0) {
        const klen = u32[(e + L.E_KEYLEN) >> 2]!;
        const expires = this.f64[(m + L.M_EXPIRES) >> 3]!;
        let bad = klen > this.maxKeyBytes;
        const key = bad ? '' : utf8Slice(this.u8, e + L.E_KEY, e + L.E_KEY + klen);
        const wanted = !bad && (prefix === undefined || key.startsWith(prefix));
        let raw: unknown = null;
        if (wanted && withValue) {
          const start = this.valueStart(m);
          if (start < 0) bad = true;
          else raw = this.plan.copy(this.u8, this.i32, start, u32[(m + L.M_LEN) >> 2]!);
        }
        fullFence();
        if (Atomics.load(u32, e >> 2) !== seq) {
          if (!locked) return null;
        } else if (bad) {
          if (!locked && Atomics.load(u32, ver) !== v1) return null;
          throw this.corrupt(`entry ${(e - this.entries0) / this.esize} has a key length or value block out of range`);
        } else if (wanted) out.push([key, raw, rev, expires]);
      }
      link = Atomics.load(u32, (e + L.E_NEXT) >> 2);
    }
    if (!locked && Atomics.load(u32, ver) !== v1) return null;
    return out;
  }

  /** The keys (starting with `prefix`, if given). See walk() for the consistency. */
  *keys(prefix?: string): IterableIterator<string> {
    this.assertOpen();
    if (prefix !== undefined && typeof prefix !== 'string') throw invalidArg('prefix', `must be a string, got ${describe(prefix)}`);
    for (const [k] of this.walk(prefix, false)) yield k;
  }

  /** [key, value] pairs (keys starting with `prefix`, if given). */
  *entries(prefix?: string): IterableIterator<[string, T]> {
    this.assertOpen();
    if (prefix !== undefined && typeof prefix !== 'string') throw invalidArg('prefix', `must be a string, got ${describe(prefix)}`);
    for (const [k, raw] of this.walk(prefix, true)) yield [k, this.decode(raw)];
  }

  /** @internal Entries with revision and expiry, for watchers. */
  *snapshot(prefix: string | undefined, deadline: Deadline): Generator<[string, unknown, number, number]> {
    yield* this.walk(prefix, true, deadline);
  }

  /** @internal The scratch key's raw entry (lock-free), for watchers: null if absent. */
  peek(key: string, deadline: Deadline): { raw: unknown; rev: number; expires: number } | null {
    this.key(key);
    const r = this.read(2, deadline);
    return r === MISSING ? null : (r as { raw: unknown; rev: number; expires: number });
  }

  /** @internal */
  decodeRaw(raw: unknown): T {
    return this.decode(raw);
  }

  [Symbol.iterator](): IterableIterator<[string, T]> {
    return this.entries();
  }

  // Locks and recovery ---------------------------------------------------------------------------

  private needsRecovery(): boolean {
    return Atomics.load(this.u32, (this.data + L.RECOVERY) >> 2) !== 0;
  }

  /**
   * @internal A watcher's marks: per stripe, the lowest revision counter a write may have that
   * the watcher must report. The stripe's counter now, plus one if its lock is free then (its last
   * write is over, its record claimed before the watcher's cursor was read); else the counter (the
   * write under way may be one to report).
   */
  revisionMarks(): Float64Array {
    const marks = new Float64Array(this.stripes);
    for (let st = 0; st < this.stripes; st++) {
      const c = this.f64[(this.stripeAt(st) + L.ST_REVISION) >> 3]! || 0;
      fullFence(); // the counter is read before the lock word
      marks[st] = this.stripeLocks[st]!.locked ? c : c + 1;
    }
    return marks;
  }

  /** @internal Whether revision `rev` may have been written after `marks` were read: its stripe counter is at least the stripe's mark. */
  writtenSince(rev: number, marks: Float64Array): boolean {
    const st = rev % this.stripes;
    return (rev - st) / this.stripes >= marks[st]!;
  }

  /** @internal A recovery is owed (a writer died holding a lock, and no recovery has run since). */
  get recoveryOwed(): boolean {
    return this.needsRecovery();
  }

  private markRecovery(): void {
    Atomics.store(this.u32, (this.data + L.RECOVERY) >> 2, 1);
  }

  /**
   * Takes the heap lock within the running operation's deadline. A dead holder, or a recovery owed
   * (the heap may be damaged): marks the map for recovery and throws NeedRecovery.
   */
  private lockHeap(): MutexGuard {
    const g = lockWithin(this.heapLock, this.deadline, this.errors.op(this.what), this.name);
    if (g.recovered) this.markRecovery();
    if (this.needsRecovery()) {
      g.unlock();
      throw new NeedRecovery();
    }
    return g;
  }

  /**
   * Runs `fn` holding the scratch key's stripe lock, within `deadline`. A lock taken over from a
   * dead writer, a recovery owed, or damage found in the heap: the lock is let go, the recovery
   * runs, and `fn` runs again.
   */
  private withStripe<R>(deadline: Deadline, what: string, fn: (st: number) => R): R {
    const st = this.khash & this.bucketMask & this.stripeMask;
    for (let round = 0; ; round++) {
      const g = lockWithin(this.stripeLocks[st]!, deadline, this.errors.op(what), this.name);
      // The operation's deadline for the heap lock; restored after, for a codec or an options
      // getter that re-entered this handle from inside another operation.
      const saved = this.deadline;
      const savedWhat = this.what;
      this.deadline = deadline;
      this.what = what;
      let again = false;
      try {
        if (g.recovered) this.markRecovery();
        if (!this.needsRecovery()) return fn(st);
        again = true;
      } catch (err) {
        if (err instanceof HeapDamage) {
          this.markRecovery();
          again = true;
        } else if (!(err instanceof NeedRecovery)) throw err;
        again = true;
      } finally {
        g.unlock();
        this.deadline = saved;
        this.what = savedWhat;
      }
      if (again) {
        if (round >= 100) throw this.corrupt('the recovery did not make the map usable');
        this.recover(deadline, what); // it leaves the scratch key alone
      }
    }
  }

  /**
   * The recovery: holding every stripe lock (in order) and the heap lock, rebuilds the free
   * entries, the heap's free lists and the counters from the live entries. Throws CORRUPT if the
   * live entries themselves are garbage.
   */
  private recover(deadline: Deadline, what: string): void {
    const held: MutexGuard[] = [];
    try {
      // A lock taken over here from a dead writer owes a rebuild too, even if the last one just ran,
      // and even if this recovery then times out on another lock: marked at once.
      for (const m of [...this.stripeLocks, this.heapLock]) {
        const g = lockWithin(m, deadline, this.errors.op(what), this.name);
        held.push(g);
        if (g.recovered) this.markRecovery();
      }
      if (!this.needsRecovery()) return; // someone else did it meanwhile
      const r = this.rebuild();
      if (typeof r === 'string') throw this.corrupt(r);
      Atomics.store(this.u32, (this.data + L.RECOVERY) >> 2, 0);
      this.f64[(this.data + L.RECOVERIES) >> 3] = (this.f64[(this.data + L.RECOVERIES) >> 3] || 0) + 1;
      this.record(L.CHANGE_RESYNC, 0, 0, 0);
      process.nextTick(() => this.emit('recovered', r));
    } finally {
      for (let i = held.length - 1; i >= 0; i--) held[i]!.unlock();
    }
  }

  /** Marks live entries from the buckets, then rebuilds everything else from them (every lock held). */
  private rebuild(): MapRecovery | string {
    const n = this.maxEntries;
    const u32 = this.u32;
    // First: a reader standing on an entry that is about to be relinked into the free list must
    // see its stripe's version move before it can follow the new link.
    for (let st = 0; st < this.stripes; st++) Atomics.add(u32, (this.stripeAt(st) + L.ST_VERSION) >> 2, 1);
    const reached = new Uint8Array(n);
    const live: LiveBlock[] = [];
    let count = 0;
    const maxRev = new Float64Array(this.stripes);
    for (let b = 0; b < this.params.buckets; b++) {
      const keys = new Set<string>();
      let link = u32[(this.buckets0 + 4 * b) >> 2]!;
      while (link !== 0) {
        if (link > n) return `bucket ${b} links to entry ${link - 1}, beyond the ${n} entries`;
        const i = link - 1;
        if (reached[i] !== 0) return `entry ${i} is reached twice (a cycle, or two chains share it)`;
        reached[i] = 1;
        const e = this.entryAt(i);
        const m = e + L.E_META + (u32[e >> 2]! & 1) * L.META_SIZE;
        const rev = this.f64[(m + L.M_REV) >> 3]!;
        const klen = u32[(e + L.E_KEYLEN) >> 2]!;
        if (!(rev > 0) || !Number.isSafeInteger(rev)) return `entry ${i} in bucket ${b} is not live (revision ${rev})`;
        if (klen > this.maxKeyBytes) return `entry ${i}: key length ${klen} is over the maximum`;
        const h = L.hashBytes(this.u8, e + L.E_KEY, klen);
        if (h !== u32[(e + L.E_HASH) >> 2] || (h & this.bucketMask) !== b) return `entry ${i}: its key does not hash to bucket ${b}`;
        const key = this.u8.toString('latin1', e + L.E_KEY, e + L.E_KEY + klen);
        if (keys.has(key)) return `bucket ${b} holds a key twice`;
        keys.add(key);
        if (this.valueStart(m) < 0) return `entry ${i}: its value block is out of the heap`;
        live.push({ at: u32[(m + L.M_BLOCK) >> 2]!, min: L.blockSize(u32[(m + L.M_LEN) >> 2]!) });
        const st = b & this.stripeMask;
        maxRev[st] = Math.max(maxRev[st]!, Math.floor(rev / this.stripes));
        count++;
        link = u32[(e + L.E_NEXT) >> 2]!;
      }
    }
    const usedBefore = this.heap.used;
    const why = this.heap.rebuild(live);
    if (why !== null) return why;
    // Entries nobody reaches (a dead writer's insert or delete) become free; the free list is made anew.
    let free = 0;
    let entriesFreed = 0;
    for (let i = n - 1; i >= 0; i--) {
      if (reached[i] !== 0) continue;
      const e = this.entryAt(i);
      const seq = u32[e >> 2]!;
      if (this.f64[(e + L.E_META + (seq & 1) * L.META_SIZE + L.M_REV) >> 3]! !== 0) {
        const m = e + L.E_META + ((seq + 1) & 1) * L.META_SIZE;
        this.f64[(m + L.M_REV) >> 3] = 0;
        this.f64[(m + L.M_EXPIRES) >> 3] = 0;
        Atomics.store(u32, e >> 2, (seq + 1) >>> 0);
        Atomics.load(u32, e >> 2);
        entriesFreed++;
      }
      Atomics.store(u32, (e + L.E_NEXT) >> 2, free);
      free = i + 1;
    }
    u32[(this.data + L.FREE_ENTRIES) >> 2] = free;
    Atomics.store(u32, (this.data + L.LIVE) >> 2, count);
    for (let st = 0; st < this.stripes; st++) {
      const s = this.stripeAt(st);
      Atomics.add(u32, (s + L.ST_VERSION) >> 2, 1);
      const c = this.f64[(s + L.ST_REVISION) >> 3]!;
      if (!(c >= maxRev[st]!) || !Number.isSafeInteger(c)) this.f64[(s + L.ST_REVISION) >> 3] = maxRev[st]!;
    }
    return { entries: count, entriesFreed, bytesFreed: Math.max(0, usedBefore - this.heap.used) };
  }

  /**
   * Checks every invariant of the map, holding every lock (it waits for writers): each key once,
   * chains sound, the entry count, the free entries, and the heap's accounting and free lists
   * against the live values. For tests and tools; `ok` is true when no problem was found.
   */
  verify(options?: { timeout?: number }): VerifyReport {
    this.assertOpen();
    const deadline = new Deadline(checkTimeout('options.timeout', checkObject('options', options).timeout));
    for (let round = 0; ; round++) {
      const r = this.verifyOnce(deadline, round < 2);
      if (r !== null) return r;
      this.recover(deadline, 'verify');
    }
  }

  /** verify() holding every lock; null when a recovery is owed first (and `recover`). */
  private verifyOnce(deadline: Deadline, recover: boolean): VerifyReport | null {
    const held: MutexGuard[] = [];
    try {
      for (const m of [...this.stripeLocks, this.heapLock]) {
        const g = lockWithin(m, deadline, this.errors.op('verify'), this.name);
        held.push(g);
        if (g.recovered) this.markRecovery(); // at once: a timeout on a later lock must not lose it
      }
      if (recover && this.needsRecovery()) return null;
      const problems: string[] = [];
      if (this.needsRecovery()) problems.push('a recovery is owed (a writer died holding a lock)');
      const n = this.maxEntries;
      const u32 = this.u32;
      const reached = new Uint8Array(n);
      const live: LiveBlock[] = [];
      const allKeys = new Set<string>();
      let count = 0;
      for (let b = 0; b < this.params.buckets && problems.length < 50; b++) {
        let link = u32[(this.buckets0 + 4 * b) >> 2]!;
        while (link !== 0) {
          const i = link - 1;
          if (link > n || reached[i] !== 0) {
            problems.push(`bucket ${b}: bad link ${link}`);
            break;
          }
          reached[i] = 1;
          const e = this.entryAt(i);
          const m = e + L.E_META + (u32[e >> 2]! & 1) * L.META_SIZE;
          const klen = Math.min(u32[(e + L.E_KEYLEN) >> 2]!, this.maxKeyBytes);
          const key = this.u8.toString('latin1', e + L.E_KEY, e + L.E_KEY + klen);
          if (!(this.f64[(m + L.M_REV) >> 3]! > 0)) problems.push(`entry ${i} is linked but not live`);
          if ((L.hashBytes(this.u8, e + L.E_KEY, klen) & this.bucketMask) !== b) problems.push(`entry ${i} is in the wrong bucket`);
          if (allKeys.has(key)) problems.push(`key ${JSON.stringify(utf8Slice(this.u8, e + L.E_KEY, e + L.E_KEY + klen))} is stored twice`);
          allKeys.add(key);
          if (this.valueStart(m) < 0) problems.push(`entry ${i}: value block out of the heap`);
          else live.push({ at: u32[(m + L.M_BLOCK) >> 2]!, min: L.blockSize(u32[(m + L.M_LEN) >> 2]!) });
          count++;
          link = u32[(e + L.E_NEXT) >> 2]!;
        }
      }
      const stored = u32[(this.data + L.LIVE) >> 2]!;
      if (stored !== count) problems.push(`the entry count says ${stored}, the chains hold ${count}`);
      let freeCount = 0;
      let link = u32[(this.data + L.FREE_ENTRIES) >> 2]!;
      while (link !== 0 && freeCount <= n) {
        const i = link - 1;
        if (link > n || reached[i] !== 0) {
          problems.push(`free entry list: bad link ${link}`);
          break;
        }
        reached[i] = 2;
        const e = this.entryAt(i);
        if (this.f64[(e + L.E_META + (u32[e >> 2]! & 1) * L.META_SIZE + L.M_REV) >> 3]! !== 0) problems.push(`free entry ${i} is live`);
        freeCount++;
        link = u32[(e + L.E_NEXT) >> 2]!;
      }
      if (count + freeCount !== n) problems.push(`${n - count - freeCount} entries are neither live nor free (leaked)`);
      const h = this.heap.check(live);
      problems.push(...h.problems);
      return { ok: problems.length === 0, problems, entries: count, bytesUsed: h.used, bytesFree: h.free, largestFree: h.largestFree };
    } finally {
      for (let i = held.length - 1; i >= 0; i--) held[i]!.unlock();
    }
  }

  // Writing --------------------------------------------------------------------------------------

  /** The next revision of stripe `st` (its lock held): unique in the map, growing per key. */
  private nextRevision(st: number): number {
    const at = (this.stripeAt(st) + L.ST_REVISION) >> 3;
    const c = (this.f64[at]! || 0) + 1;
    this.f64[at] = c;
    return c * this.stripes + st;
  }

  /** Writes meta copy `m` of an entry. */
  private writeMeta(m: number, rev: number, expires: number, block: number, len: number): void {
    this.f64[(m + L.M_REV) >> 3] = rev;
    this.f64[(m + L.M_EXPIRES) >> 3] = expires;
    this.u32[(m + L.M_BLOCK) >> 2] = block;
    this.u32[(m + L.M_LEN) >> 2] = len;
  }

  /** Commits entry `e`'s other meta copy: one store. The load after it keeps later stores after it (arm64). */
  private commit(e: number, seq: number): void {
    Atomics.store(this.u32, e >> 2, (seq + 1) >>> 0);
    Atomics.load(this.u32, e >> 2);
  }

  private otherMeta(e: number, seq: number): number {
    return e + L.E_META + ((seq + 1) & 1) * L.META_SIZE;
  }

  /** Finds the scratch key under its stripe lock (nothing moves: no retry), or null. */
  private findLocked(): Found | null {
    const f = this.find(true);
    return f === MISSING || f === RETRY ? null : f;
  }

  /**
   * Removes entry `f` (its stripe lock held), linked from word `link`: unlink (the commit), bump
   * the stripe's version, mark the entry free, give its block and slot back, record the change.
   */
  private removeLocked(st: number, f: Found, type: number): void {
    const u32 = this.u32;
    const rev = this.f64[(f.m + L.M_REV) >> 3]!;
    const block = u32[(f.m + L.M_BLOCK) >> 2]!;
    const i = (f.e - this.entries0) / this.esize;
    Atomics.store(u32, f.link, u32[(f.e + L.E_NEXT) >> 2]!);
    Atomics.add(u32, (this.stripeAt(st) + L.ST_VERSION) >> 2, 1);
    this.writeMeta(this.otherMeta(f.e, f.seq), 0, 0, 0, 0);
    this.commit(f.e, f.seq);
    Atomics.sub(u32, (this.data + L.LIVE) >> 2, 1);
    this.recordEntry(type, f.e, rev);
    this.afterCommit(() => {
      this.heap.free(block);
      Atomics.store(u32, (f.e + L.E_NEXT) >> 2, u32[(this.data + L.FREE_ENTRIES) >> 2]!);
      u32[(this.data + L.FREE_ENTRIES) >> 2] = i + 1;
      if (type === L.CHANGE_EVICT) this.f64[(this.data + L.EVICTIONS) >> 3]!++;
      else if (type === L.CHANGE_EXPIRE) this.f64[(this.data + L.EXPIRATIONS) >> 3]!++;
    });
  }

  /**
   * Gives back what a committed write freed, under the heap lock. The write stands whatever
   * happens here: a heap found damaged, or its lock taken over from a dead writer, only marks the
   * map for recovery (which reclaims what could not be freed now); the operation is not retried.
   */
  private afterCommit(fn: () => void): void {
    let g: MutexGuard;
    // After a commit the heap lock is worth a short wait even for a caller that only tries (a
    // watcher's expiry, a timeout of 0): giving up here would cost everyone a recovery.
    const saved = this.deadline;
    if (saved.remaining() < 50) this.deadline = new Deadline(50);
    try {
      g = this.lockHeap();
    } catch (err) {
      if (err instanceof NeedRecovery) return;
      if (err instanceof ShmkitError && err.code === ErrorCodes.TIMEOUT) {
        this.markRecovery(); // the write stands; the rebuild gives back what it could not free
        return;
      }
      throw err;
    } finally {
      this.deadline = saved;
    }
    try {
      fn();
    } catch (err) {
      if (!(err instanceof HeapDamage)) throw err;
      this.markRecovery();
    } finally {
      g.unlock();
    }
  }

  /**
   * Allocates a block of `size` bytes (and an entry when `entry`), under the heap lock. Returns
   * [block, entry index] or null when there is no room.
   */
  private allocate(size: number, entry: boolean): [number, number] | null {
    const g = this.lockHeap();
    try {
      const freeAt = (this.data + L.FREE_ENTRIES) >> 2;
      const first = this.u32[freeAt]!;
      if (entry && first === 0) return null;
      if (entry && first > this.maxEntries) throw new HeapDamage(`the free entry list links to ${first - 1}`);
      const block = this.heap.alloc(size);
      if (block < 0) return null;
      if (!entry) return [block, -1];
      const e = this.entryAt(first - 1);
      this.u32[freeAt] = this.u32[(e + L.E_NEXT) >> 2]!;
      return [block, first - 1];
    } finally {
      g.unlock();
    }
  }


  /**
   * Makes room (stripe `st` held, the entry `keep` not to be touched): removes expired entries,
   * then, with 'lru', evicts the least recently used of a sample. Other stripes are only tried
   * (tryLock), never waited for, so two writers making room never wait for each other. Returns
   * whether anything was removed.
   */
  private makeRoom(st: number, keep: number): boolean {
    if (this.purge(st, keep, 64) > 0) return true;
    if (!this.params.lru) return this.purge(st, keep, Infinity) > 0;
    const n = this.maxEntries;
    const nb = this.params.buckets;
    for (let round = 0; round < 16; round++) {
      // A sample: up to 16 live entries from the chains of buckets from a random one on. By hash,
      // every live entry is equally likely to be taken, wherever its slot (a slot freed last is
      // reused first, so slots say nothing of age). Sparse maps are searched as far as it takes
      // to fill the sample (every bucket at most). Read without locks;
      // removeEntry() checks the entry again under its stripe's lock.
      const now = (Atomics.load(this.u32, (this.data + L.CLOCK) >> 2) + 1) >>> 0;
      const sample: [number, number][] = [];
      const start = Math.floor(Math.random() * nb);
      // As far as 16 live entries take on average (from the live count), twice over, and at least
      // SAMPLE_BUCKETS: in a sparse map that is every bucket.
      const live = Math.max(1, Atomics.load(this.u32, (this.data + L.LIVE) >> 2));
      const limit = Math.min(nb, Math.max(SAMPLE_BUCKETS, Math.ceil((32 * nb) / live)));
      for (let k = 0; k < limit && sample.length < 16; k++) {
        let link = Atomics.load(this.u32, (this.buckets0 + 4 * ((start + k) & this.bucketMask)) >> 2);
        for (let steps = 0; link !== 0 && link <= n && steps < 16 && sample.length < 16; steps++) {
          const e = this.entryAt(link - 1);
          const seq = Atomics.load(this.u32, e >> 2);
          if (e !== keep && this.f64[(e + L.E_META + (seq & 1) * L.META_SIZE) >> 3]! > 0) {
            sample.push([(now - this.u32[(e + L.E_USED) >> 2]!) >>> 0, e]); // age in clock steps, modulo 2^32
          }
          link = Atomics.load(this.u32, (e + L.E_NEXT) >> 2);
        }
      }
      if (sample.length === 0) return false; // nothing to evict
      sample.sort((x, y) => y[0] - x[0]);
      // The oldest whose stripe is free (or ours); if every one is busy, sample again.
      for (const [, e] of sample) if (this.removeEntry(st, e, L.CHANGE_EVICT)) return true;
    }
    return false;
  }

  /** Removes entry `e` (of any stripe; ours `st` is held, others are tried), if it is still live and linked. */
  private removeEntry(st: number, e: number, type: number, onlyIfExpired = false): boolean {
    const hash = this.u32[(e + L.E_HASH) >> 2]!;
    const b = hash & this.bucketMask;
    const vst = b & this.stripeMask;
    let g: MutexGuard | null = null;
    if (vst !== st) {
      g = this.stripeLocks[vst]!.tryLock();
      if (g === null) return false;
      if (g.recovered) {
        this.markRecovery();
        g.unlock();
        throw new NeedRecovery();
      }
    }
    try {
      const u32 = this.u32;
      let at = (this.buckets0 + 4 * b) >> 2;
      let link = u32[at]!;
      for (let steps = 0; link !== 0 && steps < this.maxEntries && link <= this.maxEntries; steps++) {
        const x = this.entryAt(link - 1);
        if (x === e) {
          const seq = u32[e >> 2]!;
          const m = e + L.E_META + (seq & 1) * L.META_SIZE;
          if (!(this.f64[(m + L.M_REV) >> 3]! > 0)) return false;
          if (onlyIfExpired && !this.expired(m)) return false;
          this.removeLocked(vst, { e, seq, m, link: at }, type);
          return true;
        }
        at = (x + L.E_NEXT) >> 2;
        link = u32[at]!;
      }
      return false;
    } finally {
      g?.unlock();
    }
  }

  /** Removes up to `max` expired entries (scanning from a random place; ours `st` held). */
  private purge(st: number, keep: number, max: number): number {
    let removed = 0;
    const n = this.maxEntries;
    const start = Math.floor(Math.random() * n);
    const limit = max === Infinity ? n : Math.min(n, max * 8);
    const now = Date.now();
    for (let k = 0; k < limit && removed < max; k++) {
      const e = this.entryAt((start + k) % n);
      if (e === keep) continue;
      const seq = Atomics.load(this.u32, e >> 2);
      const m = e + L.E_META + (seq & 1) * L.META_SIZE;
      const x = this.f64[(m + L.M_EXPIRES) >> 3]!;
      if (!(this.f64[(m + L.M_REV) >> 3]! > 0) || x === 0 || x > now) continue;
      if (this.removeEntry(st, e, L.CHANGE_EXPIRE, true)) removed++;
    }
    return removed;
  }

  /**
   * The write, holding stripe `st`: checks the conditions, allocates (making room if needed),
   * writes the value into a fresh block and commits it with one store.
   */
  private writeLocked(st: number, bytes: Uint8Array, n: number, expires: number | null, cond: { ifRevision?: number | undefined; ifAbsent?: boolean | undefined; ifPresent?: boolean | undefined } | undefined): number {
    let found = this.findLocked();
    if (found !== null && this.expired(found.m)) {
      this.removeLocked(st, found, L.CHANGE_EXPIRE);
      found = null;
    }
    if (cond !== undefined) this.check(found, cond);
    const size = L.blockSize(n);
    // An update needs its new block beside the old one, which stays in use until the commit: if
    // the new block fits neither before nor after the old one, nothing is evicted for it.
    if (found !== null) {
      const oldAt = this.u32[(found.m + L.M_BLOCK) >> 2]!;
      // The block's own size (a leftover too small to split stays in it), if its header is sound.
      let oldSize = L.blockSize(this.u32[(found.m + L.M_LEN) >> 2]!);
      if (oldAt % 8 === 0 && oldAt + 4 <= this.valueBytes) {
        const h = this.u32[(this.data + this.o.heap + oldAt) >> 2]! & L.SIZE_MASK;
        if (h >= oldSize && oldAt + h <= this.valueBytes) oldSize = h;
      }
      if (size > Math.max(oldAt, this.valueBytes - oldAt - oldSize)) throw this.full(false);
    }
    let got = this.allocate(size, found === null);
    for (let tries = 0; got === null; tries++) {
      if (tries >= 256 || !this.makeRoom(st, found === null ? -1 : found.e)) {
        this.reapDeadLocks(st);
        throw this.full(found === null);
      }
      got = this.allocate(size, found === null);
    }
    const [block, index] = got;
    const dst = this.data + this.o.heap + block + L.BLOCK_HEAD;
    if (n > 0) this.u8.set(n === bytes.byteLength ? bytes : bytes.subarray(0, n), dst);
    const rev = this.nextRevision(st);
    let e: number;
    if (found !== null) {
      const f = found;
      e = f.e;
      const exp = expires === null ? this.f64[(f.m + L.M_EXPIRES) >> 3]! : expires;
      const old = this.u32[(f.m + L.M_BLOCK) >> 2]!;
      this.writeMeta(this.otherMeta(e, f.seq), rev, exp, block, n);
      this.commit(e, f.seq);
      this.afterCommit(() => this.heap.free(old));
    } else {
      e = this.entryAt(index);
      const u32 = this.u32;
      const seq = u32[e >> 2]!;
      u32[(e + L.E_HASH) >> 2] = this.khash;
      u32[(e + L.E_KEYLEN) >> 2] = this.klen;
      this.kb.copy(this.u8, e + L.E_KEY, 0, this.klen);
      this.writeMeta(this.otherMeta(e, seq), rev, expires ?? 0, block, n);
      this.commit(e, seq);
      const head = (this.buckets0 + 4 * (this.khash & this.bucketMask)) >> 2;
      Atomics.store(u32, (e + L.E_NEXT) >> 2, u32[head]!);
      Atomics.store(u32, head, index + 1); // the insert's commit: the entry is reachable
      Atomics.add(u32, (this.data + L.LIVE) >> 2, 1);
    }
    this.stamp(e);
    this.recordEntry(L.CHANGE_SET, e, rev);
    this.countWrite();
    return rev;
  }

  /**
   * Takes over every lock (the stripes but `skip`, and the heap lock) whose holder died: tryLock
   * checks a held lock's holder for liveness and takes a dead one's lock over. Marks the map for
   * recovery if it found one, and says so. Cheap when nobody died: a load per free lock, a
   * liveness check only of locks held right now.
   */
  private takeOverDead(skip: number): boolean {
    let dead = false;
    for (let i = 0; i <= this.stripes; i++) {
      const m = i < this.stripes ? this.stripeLocks[i]! : this.heapLock;
      if (i === skip || !m.locked || m.ownedByMe) continue;
      const g = m.tryLock();
      if (g === null) continue;
      if (g.recovered) dead = true;
      g.unlock();
    }
    if (dead) this.markRecovery();
    return dead;
  }

  /**
   * @internal For watchers, at each liveness interval: a writer that died holding a lock may have
   * committed a change it never recorded (and holds space): take its lock over and run the
   * recovery, which records a RESYNC for watchers. Never waits: a busy lock throws TIMEOUT, and
   * the watcher tries again at its next tick.
   */
  reapDead(): void {
    if (this.life.released || this.i32.length === 0) return;
    if (this.needsRecovery() || this.takeOverDead(-1)) this.recover(new Deadline(0), 'watch');
  }

  /**
   * Before failing with FULL (stripe `st` held): a writer that died holding another lock may hold
   * space that only the recovery gives back. If one did, NeedRecovery: the write recovers and runs again.
   */
  private reapDeadLocks(st: number): void {
    if (this.takeOverDead(st)) throw new NeedRecovery();
  }

  private check(found: Found | null, cond: { ifRevision?: number | undefined; ifAbsent?: boolean | undefined; ifPresent?: boolean | undefined }): void {
    if (cond.ifAbsent === true && found !== null) throw this.errors.error(ErrorCodes.EXISTS, 'the key is present (ifAbsent); nothing was written');
    if (cond.ifPresent === true && found === null) throw this.errors.error(ErrorCodes.NOT_FOUND, 'the key is absent (ifPresent); nothing was written');
    if (cond.ifRevision !== undefined) {
      const cur = found === null ? 0 : this.f64[(found.m + L.M_REV) >> 3]!;
      if (cur !== cond.ifRevision) {
        const err = this.errors.error(ErrorCodes.CONFLICT, `the key's revision is ${cur}, not ${cond.ifRevision}; nothing was written`);
        Object.defineProperty(err, 'revision', { value: cur, enumerable: true });
        throw err;
      }
    }
  }

  private full(entry: boolean): ShmkitError {
    return this.errors.error(ErrorCodes.FULL, entry && Atomics.load(this.u32, (this.data + L.FREE_ENTRIES) >> 2) === 0
      ? `all ${this.maxEntries} entries are in use; nothing was written`
      : `no free block in the ${this.valueBytes}-byte value heap fits the value; nothing was written`);
  }

  private countWrite(): void {
    if (this.slot < 0) this.local.writes++;
    else this.f64[(this.slot + L.S_WRITES) >> 3]!++;
  }

  private parseCond(options: unknown): { ttl: number | null; timeout: number; cond: SetOptions | undefined } {
    if (options === undefined) return { ttl: null, timeout: Infinity, cond: undefined };
    const o = checkObject('options', options) as SetOptions;
    let ttl: number | null = null;
    if (o.ttl !== undefined) {
      if (typeof o.ttl !== 'number' || !(o.ttl > 0) || !Number.isFinite(o.ttl)) throw invalidArg('options.ttl', `must be a positive number of milliseconds, got ${describe(o.ttl)}`);
      ttl = o.ttl;
    }
    if (o.ifRevision !== undefined && (typeof o.ifRevision !== 'number' || !Number.isSafeInteger(o.ifRevision) || o.ifRevision < 0)) {
      throw invalidArg('options.ifRevision', `must be a revision (an integer >= 0), got ${describe(o.ifRevision)}`);
    }
    if (o.ifAbsent !== undefined && typeof o.ifAbsent !== 'boolean') throw invalidArg('options.ifAbsent', `must be a boolean, got ${describe(o.ifAbsent)}`);
    if (o.ifPresent !== undefined && typeof o.ifPresent !== 'boolean') throw invalidArg('options.ifPresent', `must be a boolean, got ${describe(o.ifPresent)}`);
    const cond = o.ifRevision === undefined && o.ifAbsent === undefined && o.ifPresent === undefined ? undefined : o;
    return { ttl, timeout: checkTimeout('options.timeout', o.timeout), cond };
  }

  /**
   * Sets the key's value. Returns the new revision. Conditions (`ifRevision`, `ifAbsent`,
   * `ifPresent`) are checked under the stripe lock, so of writers racing on one revision exactly
   * one wins. ERR_SHMKIT_TOO_LARGE for a key or value over the limits, ERR_SHMKIT_FULL when
   * there is no room (without eviction); nothing is written then.
   */
  set(key: string, value: T, options?: SetOptions): number {
    this.assertOpen();
    const { ttl, timeout, cond } = this.parseCond(options);
    const { bytes, n } = this.encodeValue(value); // first: a codec (or toJSON) may call into this map
    this.key(key);
    return this.withStripe(new Deadline(timeout), 'set', (st) => this.writeLocked(st, bytes, n, ttl === null ? 0 : Date.now() + ttl, cond));
  }

  /** Deletes the key. Returns whether it was there (an expired key counts as absent). */
  delete(key: string, options?: DeleteOptions): boolean {
    this.assertOpen();
    const { timeout, cond } = this.parseCond(options);
    if (cond !== undefined && (cond.ifAbsent !== undefined || cond.ifPresent !== undefined)) throw invalidArg('options', 'delete takes ifRevision only');
    this.key(key); // last: reading the options may run user code (getters) that uses this handle
    return this.withStripe(new Deadline(timeout), 'delete', (st) => {
      const found = this.findLocked();
      if (found === null) {
        if (cond !== undefined) this.check(null, cond);
        return false;
      }
      if (this.expired(found.m)) {
        this.removeLocked(st, found, L.CHANGE_EXPIRE);
        if (cond !== undefined) this.check(null, cond);
        return false;
      }
      if (cond !== undefined) this.check(found, cond);
      this.removeLocked(st, found, L.CHANGE_DELETE);
      this.countWrite();
      return true;
    });
  }

  /**
   * Adds `by` (default 1) to the number stored at the key, atomically (an absent key counts as 0),
   * and returns the result. The codec must store numbers: json, jsonb, structured, a custom codec,
   * or utf8 (decimal text). The key keeps its expiry unless `ttl` is given.
   */
  increment(key: string, by = 1, options?: IncrementOptions): number {
    this.assertOpen();
    if (typeof by !== 'number' || !Number.isFinite(by)) throw invalidArg('by', `must be a finite number, got ${describe(by)}`);
    if (this.plan.fastSend === 'value') throw invalidArg('key', `increment needs a codec that stores numbers; codec ${this.codec.name} stores bytes`);
    const { ttl, timeout } = this.parseCond(options);
    this.key(key);
    const text = this.codec.name === 'utf8';
    let result = 0;
    this.withStripe(new Deadline(timeout), 'increment', (st) => {
      let found = this.findLocked();
      if (found !== null && this.expired(found.m)) {
        this.removeLocked(st, found, L.CHANGE_EXPIRE);
        found = null;
      }
      let cur: unknown = 0;
      if (found !== null) {
        const raw = this.readValue(found, true);
        cur = this.decode(raw);
        if (text) cur = (cur as string).trim() === '' ? NaN : Number(cur);
      }
      if (typeof cur !== 'number' || !Number.isFinite(cur)) throw invalidArg('key', `the value stored at the key is ${describe(cur)}, not a finite number`);
      result = cur + by;
      if (!Number.isFinite(result)) throw this.errors.error(ErrorCodes.OVERFLOW, `${cur} + ${by} is not a finite number`);
      const { bytes, n } = this.encodeValue((text ? String(result) : result) as T);
      this.key(key); // the codec ran user code, which may have used this handle's scratch key
      return this.writeLocked(st, bytes, n, ttl === null ? null : Date.now() + ttl, undefined);
    });
    return result;
  }

  /** @internal Removes the key if it has expired (watchers call it when an expiry they know of is due). */
  expireKey(key: string, deadline: Deadline): void {
    this.key(key);
    this.withStripe(deadline, 'expire', (st) => {
      const found = this.findLocked();
      if (found !== null && this.expired(found.m)) this.removeLocked(st, found, L.CHANGE_EXPIRE);
    });
  }

  /** Removes every expired entry now (expired entries are invisible to reads already). Returns how many. */
  purgeExpired(options?: { timeout?: number }): number {
    this.assertOpen();
    const deadline = new Deadline(checkTimeout('options.timeout', checkObject('options', options).timeout));
    let removed = 0;
    for (let st = 0; st < this.stripes; st++) {
      this.withStripeIndex(st, deadline, 'purgeExpired', () => {
        for (let b = st; b < this.params.buckets; b += this.stripes) {
          for (;;) {
            let at = (this.buckets0 + 4 * b) >> 2;
            let link = this.u32[at]!;
            let hit = false;
            for (let steps = 0; link !== 0 && link <= this.maxEntries && steps < this.maxEntries; steps++) {
              const e = this.entryAt(link - 1);
              const seq = this.u32[e >> 2]!;
              const m = e + L.E_META + (seq & 1) * L.META_SIZE;
              if (this.expired(m)) {
                this.removeLocked(st, { e, seq, m, link: at }, L.CHANGE_EXPIRE);
                removed++;
                hit = true;
                break;
              }
              at = (e + L.E_NEXT) >> 2;
              link = this.u32[at]!;
            }
            if (!hit) break;
          }
        }
      });
    }
    return removed;
  }

  /** withStripe for a stripe index rather than the scratch key's. */
  private withStripeIndex(st: number, deadline: Deadline, what: string, fn: () => void): void {
    const h = st; // a hash whose bucket is in stripe st
    const saved = [this.klen, this.khash];
    this.klen = 0;
    this.khash = h;
    try {
      this.withStripe(deadline, what, () => fn());
    } finally {
      [this.klen, this.khash] = saved as [number, number];
    }
  }

  /**
   * Removes every entry, holding every stripe lock (so no write interleaves: the map is empty at
   * one instant). Returns how many entries were removed.
   */
  clear(options?: { timeout?: number }): number {
    this.assertOpen();
    const deadline = new Deadline(checkTimeout('options.timeout', checkObject('options', options).timeout));
    for (let round = 0; ; round++) {
      const held: MutexGuard[] = [];
      let again = false;
      try {
        for (const m of this.stripeLocks) {
          const g = lockWithin(m, deadline, this.errors.op('clear'), this.name);
          held.push(g);
          if (g.recovered) this.markRecovery();
        }
        if (!this.needsRecovery()) {
          this.deadline = deadline;
          this.what = 'clear';
          const g = this.lockHeap();
          try {
            return this.clearLocked();
          } finally {
            g.unlock();
          }
        }
        again = true;
      } catch (err) {
        if (!(err instanceof NeedRecovery)) throw err;
        again = true;
      } finally {
        for (let i = held.length - 1; i >= 0; i--) held[i]!.unlock();
      }
      if (again) {
        if (round >= 100) throw this.corrupt('the recovery did not make the map usable');
        this.recover(deadline, 'clear');
      }
    }
  }

  /** Every lock held: unlinks every chain, frees every entry, and empties the heap. */
  private clearLocked(): number {
    const u32 = this.u32;
    const n = this.maxEntries;
    const watching = Atomics.load(u32, (this.data + L.WATCHERS) >> 2) !== 0;
    let removed = 0;
    const one = watching && Atomics.load(u32, (this.data + L.LIVE) >> 2) <= this.params.watchRecords / 2;
    for (let b = 0; b < this.params.buckets; b++) {
      const at = (this.buckets0 + 4 * b) >> 2;
      let link = u32[at]!;
      if (link === 0) continue;
      Atomics.store(u32, at, 0);
      for (let steps = 0; link !== 0 && link <= n && steps < n; steps++) {
        const e = this.entryAt(link - 1);
        const seq = u32[e >> 2]!;
        const rev = this.f64[(e + L.E_META + (seq & 1) * L.META_SIZE + L.M_REV) >> 3]!;
        if (one) this.recordEntry(L.CHANGE_DELETE, e, rev);
        removed++;
        link = u32[(e + L.E_NEXT) >> 2]!;
      }
    }
    for (let st = 0; st < this.stripes; st++) Atomics.add(u32, (this.stripeAt(st) + L.ST_VERSION) >> 2, 1);
    let free = 0;
    for (let i = n - 1; i >= 0; i--) {
      const e = this.entryAt(i);
      const seq = u32[e >> 2]!;
      if (this.f64[(e + L.E_META + (seq & 1) * L.META_SIZE + L.M_REV) >> 3]! !== 0) {
        this.writeMeta(this.otherMeta(e, seq), 0, 0, 0, 0);
        this.commit(e, seq);
      }
      Atomics.store(u32, (e + L.E_NEXT) >> 2, free);
      free = i + 1;
    }
    u32[(this.data + L.FREE_ENTRIES) >> 2] = free;
    Atomics.store(u32, (this.data + L.LIVE) >> 2, 0);
    this.heap.reset();
    if (watching && !one && removed > 0) this.record(L.CHANGE_RESYNC, 0, 0, 0);
    this.countWrite();
    return removed;
  }

  // Watching -------------------------------------------------------------------------------------

  /** Records a change of entry `e` (its key) for watchers, if any watch. */
  private recordEntry(type: number, e: number, rev: number): void {
    if (Atomics.load(this.u32, (this.data + L.WATCHERS) >> 2) === 0) return;
    this.record(type, e + L.E_KEY, this.u32[(e + L.E_KEYLEN) >> 2]!, rev);
  }

  /** Appends a change record (key bytes at `keyAt` of the mapping), then wakes sleeping watchers. */
  private record(type: number, keyAt: number, klen: number, rev: number): void {
    const u32 = this.u32;
    if (Atomics.load(u32, (this.data + L.WATCHERS) >> 2) === 0) return;
    const pos = Atomics.add(u32, (this.data + L.RING_HEAD) >> 2, 1);
    const r = this.recordAt(pos);
    Atomics.store(u32, (r + L.R_STAMP) >> 2, L.stampWriting(pos));
    Atomics.load(u32, (r + L.R_STAMP) >> 2); // later stores stay after the stamp's (arm64)
    u32[(r + L.R_TYPE) >> 2] = type;
    u32[(r + L.R_KEYLEN) >> 2] = klen;
    this.f64[(r + L.R_REV) >> 3] = rev;
    if (klen > 0) this.u8.copy(this.u8, r + L.R_KEY, keyAt, keyAt + Math.min(klen, this.maxKeyBytes));
    Atomics.store(u32, (r + L.R_STAMP) >> 2, L.stampDone(pos));
    if ((Atomics.load(this.i32, this.changes.word) & WAITING) === 0) return;
    Atomics.add(this.i32, this.changes.word, L.STEP);
    this.changes.wakeWaiters();
  }

  /** @internal Byte offset of the record for position `pos`. */
  recordAt(pos: number): number {
    return this.data + this.o.records + ((pos >>> 0) & (this.params.watchRecords - 1)) * this.rsize;
  }

  /**
   * Watches changes of one key, or (`{ prefix: true }`) of every key starting with it (no key:
   * every key). An async iterator of { type: 'set' | 'delete' | 'expire' | 'evict', key, value,
   * revision }. Changes may coalesce (a watcher that falls behind gets the latest value), but the
   * latest value of a watched key is never missed. `initial: true` starts with the current entries.
   */
  watch(key?: string, options?: WatchOptions): AsyncIterableIterator<MapChange<T>> & { close(): void } {
    this.assertOpen();
    if (key !== undefined && typeof key !== 'string') throw invalidArg('key', `must be a string, got ${describe(key)}`);
    const w = new MapWatch<T>(this, key, options);
    this.watches.add(w);
    return w;
  }

  /** @internal A watch ended. */
  forgetWatch(w: MapWatch<T>): void {
    this.watches.delete(w);
  }

  /** @internal Registers a watcher (writers record changes while one is registered). */
  watching(delta: 1 | -1): void {
    if (this.life.released || this.i32.length === 0) return;
    Atomics.add(this.u32, (this.data + L.WATCHERS) >> 2, delta);
    if (this.slot >= 0) Atomics.add(this.u32, (this.slot + L.S_WATCHERS) >> 2, delta);
  }

  // Stats ----------------------------------------------------------------------------------------

  private takeStatSlot(): void {
    const i64 = this.segment.bigint64;
    const at = (i: number): number => (this.data + L.STAT_SLOTS_AT + i * L.STAT_SIZE) >> 3;
    const t = takeSlot(i64, L.STAT_SLOTS, at);
    if (t === null) return;
    const s = this.data + L.STAT_SLOTS_AT + t.slot * L.STAT_SIZE;
    if (t.previous !== 0n) {
      // A dead handle's slot: its counts join the retired ones, its watchers stop counting.
      this.retireLocked(s);
      const w = Atomics.exchange(this.u32, (s + L.S_WATCHERS) >> 2, 0);
      if (w > 0 && w < 1 << 20) Atomics.sub(this.u32, (this.data + L.WATCHERS) >> 2, Math.min(w, Atomics.load(this.u32, (this.data + L.WATCHERS) >> 2)));
    }
    for (const f of [L.S_GETS, L.S_HITS, L.S_MISSES, L.S_WRITES]) this.f64[(s + f) >> 3] = 0;
    Atomics.store(this.u32, (s + L.S_WATCHERS) >> 2, 0);
    this.slot = s;
  }

  /** retire() under the heap lock; a lock busy for a second drops the counts (statistics), not the slot. */
  private retireLocked(s: number): void {
    let g: MutexGuard;
    try {
      g = this.heapLock.lockSync({ timeout: 1000 });
    } catch {
      return;
    }
    if (g.recovered) this.markRecovery();
    try {
      this.retire(s);
    } finally {
      g.unlock();
    }
  }

  /** Folds slot `s`'s counters into the retired ones (heap lock held). */
  private retire(s: number): void {
    const f = this.f64;
    const r = this.data + L.RETIRED;
    const fields = [L.S_GETS, L.S_HITS, L.S_MISSES, L.S_WRITES];
    for (let k = 0; k < 4; k++) {
      const v = f[(s + fields[k]!) >> 3]!;
      if (Number.isFinite(v) && v > 0) f[(r + 8 * k) >> 3] = (f[(r + 8 * k) >> 3] || 0) + v;
      f[(s + fields[k]!) >> 3] = 0;
    }
  }

  stats(): SharedMapStats {
    this.assertOpen();
    const f = this.f64;
    const num = (v: number | undefined): number => (v !== undefined && Number.isFinite(v) && v >= 0 ? v : 0);
    const c = [0, 0, 0, 0];
    for (let k = 0; k < 4; k++) c[k] = num(f[(this.data + L.RETIRED + 8 * k) >> 3]);
    for (let i = 0; i < L.STAT_SLOTS; i++) {
      const s = this.data + L.STAT_SLOTS_AT + i * L.STAT_SIZE;
      if (Atomics.load(this.segment.bigint64, s >> 3) === 0n) continue;
      c[0] += num(f[(s + L.S_GETS) >> 3]);
      c[1] += num(f[(s + L.S_HITS) >> 3]);
      c[2] += num(f[(s + L.S_MISSES) >> 3]);
      c[3] += num(f[(s + L.S_WRITES) >> 3]);
    }
    c[0] += this.local.gets;
    c[1] += this.local.hits;
    c[2] += this.local.misses;
    c[3] += this.local.writes;
    return {
      entries: Atomics.load(this.u32, (this.data + L.LIVE) >> 2),
      maxEntries: this.maxEntries,
      bytesUsed: num(f[(this.data + L.HEAP_USED) >> 3]),
      valueBytes: this.valueBytes,
      gets: c[0]!,
      hits: c[1]!,
      misses: c[2]!,
      writes: c[3]!,
      evictions: num(f[(this.data + L.EVICTIONS) >> 3]),
      expirations: num(f[(this.data + L.EXPIRATIONS) >> 3]),
      recoveries: num(f[(this.data + L.RECOVERIES) >> 3]),
      watchers: Atomics.load(this.u32, (this.data + L.WATCHERS) >> 2),
    };
  }

  protected override inspectFields(): Record<string, unknown> {
    return { name: this.name, size: Atomics.load(this.u32, (this.data + L.LIVE) >> 2), maxEntries: this.maxEntries, eviction: this.eviction };
  }

  /** Ends this handle's watches and gives its stats slot back. The map lives on until unlinked. */
  close(): void {
    this.dispose();
  }

  protected release(): void {
    for (const w of [...this.watches]) w.close();
    if (this.slot >= 0 && this.i32.length > 0) {
      const s = this.slot;
      this.slot = -1;
      this.retireLocked(s);
      Atomics.compareExchange(this.segment.bigint64, s >> 3, SELF_TOKEN, 0n);
    }
    this.segment.close();
  }
}

/**
 * Watching a SharedMap: an async iterator of changes to one key or to the keys under a prefix.
 *
 * Writers append a record (type, key, revision) to the map's ring of change records after each
 * commit, while any watcher is registered; a watcher reads them with a cursor of its own and
 * sleeps on the CHANGES flag word when there are none. The record names the change; the value is
 * read from the map when the record is read, so changes of one key may coalesce into its latest
 * value. Whenever the watcher cannot trust the ring (it was lapped, a record stayed unwritten, or
 * a recovery asked for it), it rescans the map and reports what differs from what it reported
 * last: the latest value of a watched key is never missed. See docs/design.md ("Watching").
 */
import { ErrorCodes, invalidArg, ShmkitError } from '../errors';
import { checkSignal, isAborted } from '../abort';
import { fullFence } from '../fence';
import { checkObject } from '../validate';
import { Deadline, tuning } from '../wait';
import { utf8Slice } from '../codec/utf8';
import * as L from './layout';
import type { SharedMap } from './map';

export interface WatchOptions {
  /** Watch every key that starts with the key given (no key: every key). Default false. */
  prefix?: boolean;
  /** Start with a 'set' for every current entry that matches. Default false. */
  initial?: boolean;
  /** Ends the iteration (it rejects with ABORT_ERR). */
  signal?: AbortSignal;
}

export interface MapChange<T> {
  type: 'set' | 'delete' | 'expire' | 'evict';
  key: string;
  /** The value ('set' only). */
  value?: T;
  /** 'set': the value's revision; otherwise the revision the removed entry had (0 if unknown). */
  revision: number;
}

/** A watcher never waits for a lock: every read it makes under one only tries. */
const now = (): Deadline => new Deadline(0);
const TYPES: Record<number, MapChange<unknown>['type']> = { [L.CHANGE_SET]: 'set', [L.CHANGE_DELETE]: 'delete', [L.CHANGE_EXPIRE]: 'expire', [L.CHANGE_EVICT]: 'evict' };
/** How long a claimed record may stay unwritten before the watcher stops waiting for it and rescans. */
const UNWRITTEN_MS = 50;

interface Known {
  rev: number;
  expires: number;
}

export class MapWatch<T> implements AsyncIterableIterator<MapChange<T>> {
  private readonly key: string | undefined;
  private readonly prefix: boolean;
  private readonly signal: AbortSignal | undefined;
  private cursor: number;
  private readonly queue: MapChange<T>[] = [];
  /** Per matching key: the revision last reported (or found at the start) and its expiry. */
  private known = new Map<string, Known>();
  /** When to try removing a key whose expiry is known (its expiry, or a retry after a busy lock). */
  private expiries = new Map<string, number>();
  private done = false;
  private unwrittenSince = -1;
  /** A rescan met a busy lock: it is owed, and tried again at the next tick. */
  private owed = false;
  /**
   * The first scan of a watch without `initial` is owed (its start met a busy lock): the stripes'
   * revision counters when the watch began. That scan reports the entries whose revision counter
   * is at least its stripe's mark (written after the watch began, or the last write before it).
   */
  private marks: Float64Array | null = null;
  /** A value that could not be decoded during a scan: thrown once by next(), after the scan's state is kept. */
  private failure: unknown = null;
  private reapedAt = Date.now();

  constructor(private readonly map: SharedMap<T>, key: string | undefined, options: WatchOptions | undefined) {
    const o = checkObject('options', options);
    if (o.prefix !== undefined && typeof o.prefix !== 'boolean') throw invalidArg('options.prefix', 'must be a boolean');
    if (o.initial !== undefined && typeof o.initial !== 'boolean') throw invalidArg('options.initial', 'must be a boolean');
    this.signal = checkSignal('options.signal', o.signal);
    this.key = key;
    this.prefix = key === undefined || o.prefix === true;
    map.watching(1);
    // Registered first, then the revision marks, then the cursor: every change committed after
    // this point is recorded (at or after the cursor), and has a revision at or above its mark.
    const marks = map.revisionMarks();
    this.cursor = Atomics.load(map.u32, (map.data + L.RING_HEAD) >> 2);
    try {
      if (!this.tryNow(() => this.scan(o.initial === true))) {
        // A chain is held right now: the first scan is owed (see resync()).
        this.owed = true;
        if (o.initial !== true) this.marks = marks;
      }
    } catch (err) {
      this.close();
      throw err;
    }
  }

  private matches(key: string): boolean {
    if (this.key === undefined) return true;
    return this.prefix ? key.startsWith(this.key) : key === this.key;
  }

  /**
   * Reads the matching entries, and (`report`) queues a 'set' for each that differs from what is
   * known, and a 'delete' or 'expire' for each known key now gone; with `marks`, only a 'set' for
   * each entry written at or after its stripe's mark. All or nothing: a scan that meets a busy
   * lock halfway (TIMEOUT) changes no state and queues nothing. A value the codec cannot decode
   * is not reported, and its error is thrown once, after the scan's state is kept.
   */
  private scan(report: boolean, marks: Float64Array | null = null): void {
    const seen = new Map<string, Known>();
    const events: MapChange<T>[] = [];
    let failure: unknown = null;
    const add = (key: string, raw: unknown, rev: number, expires: number): void => {
      seen.set(key, { rev, expires });
      const wanted = marks !== null ? this.map.writtenSince(rev, marks) : report && this.known.get(key)?.rev !== rev;
      if (!wanted) return;
      try {
        events.push({ type: 'set', key, value: this.map.decodeRaw(raw), revision: rev });
      } catch (err) {
        if (!(err instanceof ShmkitError) || err.code !== ErrorCodes.DECODE) throw err;
        failure ??= err;
      }
    };
    if (this.prefix) {
      for (const [key, raw, rev, expires] of this.map.snapshot(this.key, now())) add(key, raw, rev, expires);
    } else {
      const r = this.map.peek(this.key!, now());
      if (r !== null) add(this.key!, r.raw, r.rev, r.expires);
    }
    if (report && marks === null) {
      const t = Date.now();
      for (const [key, k] of this.known) {
        if (!seen.has(key)) events.push({ type: k.expires !== 0 && k.expires <= t ? 'expire' : 'delete', key, revision: k.rev });
      }
    }
    this.known = seen;
    this.expiries = new Map();
    for (const [key, k] of seen) if (k.expires !== 0) this.expiries.set(key, k.expires);
    this.queue.push(...events);
    if (failure !== null) this.failure = failure;
  }

  /**
   * Rescans from the ring's current head. A watcher never waits for a lock: if a chain it must
   * read is held (by a writer stopped with its lock, say), the rescan is owed and tried again at
   * the next tick.
   *
   * A first scan that was owed (a watch without `initial` whose start met a busy lock) reports the
   * entries written since the watch began (their revisions are at or above the marks), and the
   * cursor stays where the watch began, so the records since then are read after it (deletions;
   * a 'set' record of a value the scan reported already is skipped by its revision). If the ring
   * was lapped meanwhile, those records are gone: the deletions they held are not reported.
   */
  private resync(): void {
    const head = Atomics.load(this.map.u32, (this.map.data + L.RING_HEAD) >> 2);
    this.unwrittenSince = -1;
    const marks = this.marks;
    if (!this.tryNow(() => this.scan(true, marks))) {
      this.owed = true;
      return;
    }
    this.owed = false;
    this.marks = null;
    if (marks === null || ((head - this.cursor) >>> 0) > this.map.params.watchRecords) this.cursor = head;
  }

  /** Runs `fn`; false if it met a busy lock (ERR_SHMKIT_TIMEOUT from a deadline of 0). */
  private tryNow(fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (err) {
      if (err instanceof ShmkitError && err.code === ErrorCodes.TIMEOUT) return false;
      throw err;
    }
  }

  /** Reads the records that are there; returns false if it must wait for one being written. */
  private drain(): boolean {
    const m = this.map;
    const u32 = m.u32;
    const cap = m.params.watchRecords;
    for (;;) {
      if (this.owed) {
        this.resync();
        if (this.owed) return false;
      }
      const head = Atomics.load(u32, (m.data + L.RING_HEAD) >> 2);
      if (head === this.cursor) return true;
      if (((head - this.cursor) >>> 0) > cap) {
        this.resync();
        continue;
      }
      const r = m.recordAt(this.cursor);
      const stamp = Atomics.load(u32, (r + L.R_STAMP) >> 2);
      if (stamp !== L.stampDone(this.cursor)) {
        // Not written yet (or by a writer that died): wait a little, then stop trusting the ring.
        const now = Date.now();
        if (this.unwrittenSince < 0) this.unwrittenSince = now;
        if (now - this.unwrittenSince < UNWRITTEN_MS) return false;
        this.resync();
        continue;
      }
      this.unwrittenSince = -1;
      const type = u32[(r + L.R_TYPE) >> 2]!;
      const klen = u32[(r + L.R_KEYLEN) >> 2]!;
      const rev = m.f64[(r + L.R_REV) >> 3]!;
      const key = klen <= m.maxKeyBytes ? utf8Slice(m.u8, r + L.R_KEY, r + L.R_KEY + klen) : '';
      fullFence();
      if (Atomics.load(u32, (r + L.R_STAMP) >> 2) !== stamp || klen > m.maxKeyBytes) {
        this.resync(); // lapped while reading it (or garbage)
        continue;
      }
      this.cursor = (this.cursor + 1) >>> 0;
      if (type === L.CHANGE_RESYNC) {
        this.resync();
        continue;
      }
      if (!this.matches(key)) continue;
      if (type === L.CHANGE_SET) {
        // The value now: a later write coalesces with this one (its own record is then a duplicate).
        const box: { cur: ReturnType<SharedMap<T>['peek']> } = { cur: null };
        if (!this.tryNow(() => (box.cur = m.peek(key, now())))) {
          this.owed = true; // its chain is held: read everything again at the next tick
          return false;
        }
        const cur = box.cur;
        if (cur === null) continue; // removed since: its own record follows
        if (cur.expires !== 0) this.expiries.set(key, cur.expires);
        else this.expiries.delete(key);
        if (this.known.get(key)?.rev === cur.rev) continue;
        this.known.set(key, { rev: cur.rev, expires: cur.expires });
        this.queue.push({ type: 'set', key, value: m.decodeRaw(cur.raw), revision: cur.rev });
      } else {
        const t = TYPES[type];
        if (t === undefined) {
          this.resync();
          continue;
        }
        // A removal older than the value reported since (revisions grow per key) is stale.
        const k = this.known.get(key);
        if (k !== undefined && rev !== 0 && rev < k.rev) continue;
        this.known.delete(key);
        this.expiries.delete(key);
        this.queue.push({ type: t, key, revision: rev });
      }
    }
  }

  /**
   * Every liveness interval: a writer that died holding a lock may have committed a change it
   * never recorded. Its lock is taken over and the recovery run, which records a RESYNC. If the
   * recovery cannot run now (another lock is held, by a live or a stopped process), the watcher
   * rescans by itself: its reads take no lock, so the change is reported all the same.
   */
  private reap(): void {
    if (Date.now() - this.reapedAt < tuning.livenessIntervalMs) return;
    this.reapedAt = Date.now();
    if (!this.tryNow(() => this.map.reapDead()) && this.map.recoveryOwed) this.resync();
  }

  /** Removes watched keys whose expiry has come (each removal records an 'expire' change). */
  private expireDue(): void {
    const t = Date.now();
    for (const [key, at] of this.expiries) {
      if (at > t) continue;
      if (this.tryNow(() => this.map.expireKey(key, now()))) this.expiries.delete(key);
      else this.expiries.set(key, t + 20); // its stripe is busy: try again a little later
    }
  }

  private nextExpiry(): number {
    let min = Infinity;
    for (const at of this.expiries.values()) if (at < min) min = at;
    return min;
  }

  async next(): Promise<IteratorResult<MapChange<T>>> {
    for (;;) {
      if (this.queue.length > 0) return { value: this.queue.shift()!, done: false };
      if (this.done || this.map.closed) {
        this.close();
        return { value: undefined, done: true };
      }
      if (isAborted(this.signal)) {
        this.close();
        throw this.map['errors'].aborted(this.signal!, 'watch');
      }
      this.reap();
      this.expireDue();
      const ready = this.drain();
      if (this.failure !== null) {
        const f = this.failure;
        this.failure = null;
        throw f;
      }
      if (this.queue.length > 0) continue;
      const m = this.map;
      const cursor = this.cursor;
      // Wake for the next expiry due, and at least every liveness interval to look for a writer
      // that died between its commit and its record (reap()).
      const wake = this.owed ? Date.now() + 20 : ready ? Math.min(this.nextExpiry(), Date.now() + tuning.livenessIntervalMs) : Date.now() + 2;
      const deadline = new Deadline(Math.max(1, wake - Date.now())); // at least 1 ms: timers and I/O get their turn
      try {
        await m.changes.wait({ spin: 0, signal: this.signal }, deadline, () => this.done || Atomics.load(m.u32, (m.data + L.RING_HEAD) >> 2) !== cursor, null, 'watch');
      } catch (err) {
        if (this.done) return { value: undefined, done: true }; // closed meanwhile (with its map)
        this.close();
        throw err;
      }
    }
  }

  /** Ends the watch; a pending next() resolves done. */
  async return(): Promise<IteratorResult<MapChange<T>>> {
    this.close();
    return { value: undefined, done: true };
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.map.watching(-1);
    this.map.forgetWatch(this);
    this.map.changes.wakeAll();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<MapChange<T>> {
    return this;
  }
}

/**
 * A map over NATS: a JetStream KV bucket (`<prefix>_<escaped name>`, history 1), with a replica
 * of the whole bucket in this process, kept current by a KV watch. Reads (get, has, keys, size...)
 * are answered from the replica, synchronously, as a local map's are; writes go to the server
 * (put, create, update with the expected revision, delete) and resolve once the replica has seen
 * them, so a process reads its own writes. Revisions are the bucket's sequence numbers: they grow
 * per key and are never reused. See docs/scaling-out.md for what differs from a local map.
 */
import { EventEmitter } from 'node:events';
import type { KV, KvWatchEntry } from '@nats-io/kv';
import { checkSignal, isAborted, onAbort } from '../abort';
import { type Codec, decodeBytes, encodeBytes, resolveCodec } from '../codec/codec';
import { abortError, closedError, ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import type { DeleteOptions, IncrementOptions, MapChange, MapEntry, SetOptions, SharedMapOptions, WatchOptions } from '../map/map';
import { checkName } from '../naming';
import type { MapHandle } from '../transport';
import { checkInt, checkObject, checkTimeout, describe } from '../validate';
import { nats } from './load';
import { bucketName, escapeKey, unescapeKey } from './names';
import type { NatsTransport } from './transport';

interface Held {
  data: Uint8Array;
  rev: number;
}

/** How a change is given to watchers: the raw value, decoded by each watch. */
interface RawChange {
  type: 'set' | 'delete';
  key: string;
  raw: Uint8Array | null;
  revision: number;
}

export interface NatsMapStats {
  entries: number;
  gets: number;
  hits: number;
  misses: number;
  writes: number;
  /** The bucket revision the replica has applied. */
  revision: number;
}

const WRONG_SEQUENCE = 10071;
/** Retries of a write whose expected revision moved (increment, ifPresent, delete). */
const RETRIES = 1000;

export class NatsMap<T = unknown> extends EventEmitter implements MapHandle<T> {
  readonly name: string;
  readonly bucket: string;
  readonly codec: Codec<T>;
  readonly maxKeyBytes: number;
  private readonly transport: NatsTransport;
  private readonly kv: KV;
  private readonly replica = new Map<string, Held>();
  private applied = 0;
  /** Writers (and the start) waiting for the replica to show something. */
  private readonly waiters: { ok: () => boolean; resolve: () => void }[] = [];
  /** The replica holds every key the bucket held when it started. */
  private initialized = false;
  private readonly watchers = new Set<NatsMapWatch<T>>();
  private readonly counts = { gets: 0, hits: 0, misses: 0, writes: 0 };
  private stop: (() => void) | null = null;
  private ended = false;

  private constructor(transport: NatsTransport, name: string, bucket: string, kv: KV, codec: Codec<T>, maxKeyBytes: number) {
    super();
    this.transport = transport;
    this.name = name;
    this.bucket = bucket;
    this.kv = kv;
    this.codec = codec;
    this.maxKeyBytes = maxKeyBytes;
  }

  /** @internal Use transport.map(): opens the bucket (creating it) and fills the replica. */
  static async open<T>(transport: NatsTransport, name: string, options: SharedMapOptions<T> | undefined): Promise<NatsMap<T>> {
    checkName(name);
    const o = checkObject('options', options) as SharedMapOptions<T>;
    const codec = resolveCodec(o.codec ?? 'json') as Codec<T>;
    const maxKeyBytes = o.maxKeyBytes === undefined ? 64 : checkInt('options.maxKeyBytes', o.maxKeyBytes, 1, 1024);
    if (o.eviction !== undefined && o.eviction !== 'none') {
      if (o.eviction === 'lru') throw new ShmkitError(ErrorCodes.UNSUPPORTED, `map "${name}": eviction 'lru' is not possible over NATS (a KV bucket refuses writes when full)`, { argument: 'options.eviction' });
      throw invalidArg('options.eviction', `must be 'none' or 'lru', got ${describe(o.eviction)}`);
    }
    const limits: Record<string, number> = { history: 1 };
    if (o.valueBytes !== undefined) limits.max_bytes = checkInt('options.valueBytes', o.valueBytes, 64, Number.MAX_SAFE_INTEGER);
    if (o.maxValueSize !== undefined) limits.maxValueSize = checkInt('options.maxValueSize', o.maxValueSize, 1, 64 * 1024 * 1024);
    const bucket = bucketName(transport.prefix, name);
    const { kv: Kv } = nats();
    let kv: KV;
    try {
      kv = await new Kv.Kvm(transport.connection).create(bucket, limits);
    } catch (err) {
      throw new ShmkitError(ErrorCodes.REFUSED, `map "${name}": the KV bucket ${bucket} could not be opened (is JetStream enabled on the server? nats-server -js): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const m = new NatsMap<T>(transport, name, bucket, kv, codec, maxKeyBytes);
    await m.start(o as { connectTimeout?: number });
    return m;
  }

  /** Starts the replica's watch; resolves once it holds every key the bucket held at the start. */
  private async start(o: { connectTimeout?: number }): Promise<void> {
    const w = await this.kv.watch({ key: '>' });
    this.stop = () => w.stop();
    const st = await this.kv.status();
    if (st.values === 0) this.initialized = true;
    const ready = this.until(() => this.initialized, Infinity);
    void this.follow(w);
    this.watchdog();
    const limit = o.connectTimeout === undefined ? 10_000 : checkTimeout('options.connectTimeout', o.connectTimeout);
    let t: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([ready, new Promise<never>((_, reject) => (t = setTimeout(() => reject(timeoutError(`map "${this.name}": reading the bucket`, limit)), limit)))]);
    } catch (err) {
      this.close();
      throw err;
    } finally {
      clearTimeout(t);
    }
  }

  /**
   * Applies the watch's entries to the replica. If the watch ends while the map is open (its
   * consumer was lost), a new one resumes after the last revision applied, a second later.
   */
  private async follow(w: AsyncIterable<KvWatchEntry>): Promise<void> {
    for (;;) {
      try {
        for await (const e of w) {
          try {
            this.apply(e);
          } catch (err) {
            if (this.listenerCount('error') > 0) this.emit('error', err); // one entry; the replica goes on
          }
        }
      } catch (err) {
        if (!this.ended && this.listenerCount('error') > 0) this.emit('error', err);
      }
      if (this.ended) return;
      if (!this.kicked) await new Promise((r) => setTimeout(r, 1000));
      this.kicked = false;
      if (this.ended) return;
      try {
        const next = await this.kv.watch({ key: '>', resumeFromRevision: this.applied + 1 });
        this.stop = () => next.stop();
        w = next;
      } catch (err) {
        if (this.listenerCount('error') > 0) this.emit('error', err);
      }
    }
  }

  /** The watch was ended on purpose to be made again at once (see restartWatch). */
  private kicked = false;
  private lastChecked = -1;
  private checker: ReturnType<typeof setInterval> | null = null;

  /**
   * Makes the watch again from the last revision applied: after a reconnect (the server may have
   * removed the watch's consumer while the link was down: it does after 5 minutes without one),
   * and when the bucket is ahead of a replica that applied nothing since the last check.
   */
  private restartWatch(): void {
    if (this.ended) return;
    this.kicked = true;
    this.stop?.(); // ends the iterator: follow() makes a new one
  }

  private watchdog(): void {
    this.transport.on('reconnect', this.onReconnect);
    this.checker = setInterval(() => {
      if (this.ended || !this.transport.connected) return;
      const applied = this.applied;
      this.kv.status().then((st) => {
        const last = st.streamInfo.state.last_seq;
        if (last > applied && applied === this.lastChecked) this.restartWatch(); // behind, and idle for a whole period
        this.lastChecked = applied;
      }, () => {});
    }, 10_000);
    this.checker.unref();
  }

  private readonly onReconnect = (): void => this.restartWatch();

  private apply(e: KvWatchEntry): void {
    if (e.revision > this.applied) this.applied = e.revision;
    const key = unescapeKey(e.key);
    if (key !== null) {
      const before = this.replica.get(key);
      let change: RawChange;
      if (e.operation === 'PUT') {
        this.replica.set(key, { data: e.value, rev: e.revision });
        change = { type: 'set', key, raw: e.value, revision: e.revision };
      } else {
        this.replica.delete(key);
        change = { type: 'delete', key, raw: null, revision: before?.rev ?? 0 };
      }
      if (before === undefined && change.type === 'delete') {
        // a delete of a key this replica never held: nothing to report
      } else for (const w of this.watchers) w.offer(change); // never throws: a value is decoded when taken
    }
    if (e.delta === 0) this.initialized = true; // the last of the values there at the start
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const x = this.waiters[i]!;
      if (x.ok()) {
        this.waiters.splice(i, 1);
        x.resolve();
      }
    }
  }

  /**
   * Resolves once `ok()` holds after a change the replica applied, or after `ms` (a write stands
   * either way: this only gives a process its own writes to read).
   */
  private async until(ok: () => boolean, ms = 10_000): Promise<void> {
    if (ok() || this.ended) return;
    await new Promise<void>((resolve) => {
      let t: ReturnType<typeof setTimeout> | undefined;
      const x = { ok, resolve: () => {
        clearTimeout(t);
        resolve();
      } };
      if (ms !== Infinity) {
        t = setTimeout(() => {
          const i = this.waiters.indexOf(x);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve();
        }, ms);
      }
      this.waiters.push(x);
    });
  }

  get label(): string {
    return `map "${this.name}" (NATS KV ${this.bucket})`;
  }

  get closed(): boolean {
    return this.ended;
  }

  private assertOpen(): void {
    if (this.ended) throw closedError(this.label);
  }

  private checkKey(key: unknown): string {
    if (typeof key !== 'string') throw invalidArg('key', `must be a string, got ${describe(key)}`);
    const n = Buffer.byteLength(key);
    if (n === 0 || n > this.maxKeyBytes) throw invalidArg('key', `must be 1 to ${this.maxKeyBytes} UTF-8 bytes, got ${n}`);
    return key;
  }

  private decode(data: Uint8Array): T {
    return decodeBytes(this.codec, data, this.label);
  }

  private encode(value: T): Uint8Array {
    const b = encodeBytes(this.codec, value, 'value');
    if (b.byteLength > this.transport.maxPayload) throw new ShmkitError(ErrorCodes.TOO_LARGE, `${this.label}: a value of ${b.byteLength} bytes is larger than the server's max_payload (${this.transport.maxPayload}); nothing was written`);
    return b;
  }

  // Reading: the replica -----------------------------------------------------------------------

  private lookup(key: string): Held | undefined {
    this.assertOpen();
    const h = this.replica.get(this.checkKey(key));
    this.counts.gets++;
    if (h === undefined) this.counts.misses++;
    else this.counts.hits++;
    return h;
  }

  get(key: string): T | undefined {
    const h = this.lookup(key);
    return h === undefined ? undefined : this.decode(h.data);
  }

  getEntry(key: string): MapEntry<T> | undefined {
    const h = this.lookup(key);
    return h === undefined ? undefined : { value: this.decode(h.data), revision: h.rev, expiresAt: null };
  }

  has(key: string): boolean {
    return this.lookup(key) !== undefined;
  }

  get size(): number {
    this.assertOpen();
    return this.replica.size;
  }

  *keys(prefix?: string): IterableIterator<string> {
    this.assertOpen();
    if (prefix !== undefined && typeof prefix !== 'string') throw invalidArg('prefix', `must be a string, got ${describe(prefix)}`);
    for (const k of [...this.replica.keys()]) if (prefix === undefined || k.startsWith(prefix)) yield k;
  }

  *entries(prefix?: string): IterableIterator<[string, T]> {
    this.assertOpen();
    if (prefix !== undefined && typeof prefix !== 'string') throw invalidArg('prefix', `must be a string, got ${describe(prefix)}`);
    for (const [k, h] of [...this.replica]) if (prefix === undefined || k.startsWith(prefix)) yield [k, this.decode(h.data)];
  }

  [Symbol.iterator](): IterableIterator<[string, T]> {
    return this.entries();
  }

  // Writing: the server --------------------------------------------------------------------------

  /** A NATS error as a shmkit one; `key` for a conflict (its current revision is fetched). */
  private async failure(err: unknown, key: string | null): Promise<ShmkitError> {
    if (err instanceof ShmkitError) return err;
    const code = (err as { code?: unknown }).code;
    const msg = err instanceof Error ? err.message : String(err);
    if (code === WRONG_SEQUENCE && key !== null) {
      const cur = await this.current(key);
      const e = new ShmkitError(ErrorCodes.CONFLICT, `${this.label}: the key's revision is ${cur?.rev ?? 0}; nothing was written`);
      Object.defineProperty(e, 'revision', { value: cur?.rev ?? 0, enumerable: true });
      return e;
    }
    if (/maximum (bytes|messages)/i.test(msg)) return new ShmkitError(ErrorCodes.FULL, `${this.label}: the bucket is full (${msg}); nothing was written`, { cause: err });
    if (/message size/i.test(msg)) return new ShmkitError(ErrorCodes.TOO_LARGE, `${this.label}: ${msg}; nothing was written`, { cause: err });
    if (/timeout/i.test(msg) || (err as { name?: string }).name === 'TimeoutError') return new ShmkitError(ErrorCodes.TIMEOUT, `${this.label}: ${msg} (the write may or may not have happened)`, { cause: err });
    return new ShmkitError(ErrorCodes.PEER_GONE, `${this.label}: ${msg}`, { cause: err });
  }

  /** The key as the server has it now (fresher than the replica). */
  private async current(key: string): Promise<Held | null> {
    const e = await this.kv.get(escapeKey(key));
    return e === null || e.operation !== 'PUT' ? null : { data: e.value, rev: e.revision };
  }

  private parseWrite(options: unknown): { timeout: number; o: Record<string, unknown> } {
    const o = checkObject('options', options);
    if (o.ttl !== undefined) throw new ShmkitError(ErrorCodes.UNSUPPORTED, `${this.label}: a per-key ttl is not possible over NATS (nats-server 2.9 keeps no per-message TTL); nothing was written`, { argument: 'options.ttl' });
    return { timeout: o.timeout === undefined ? 10_000 : checkTimeout('options.timeout', o.timeout), o };
  }

  /** A write of revision `rev` is done: resolves once the replica has it (or after `ms`: the write stands). */
  private async written(rev: number, ms = 10_000): Promise<number> {
    this.counts.writes++;
    await this.until(() => this.applied >= rev, Math.min(ms, 10_000));
    return rev;
  }

  /** A delete of the key at revision `rev` is done: resolves once the replica no longer holds that revision. */
  private async deleted(key: string, rev: number): Promise<void> {
    this.counts.writes++;
    await this.until(() => (this.replica.get(key)?.rev ?? Infinity) > rev);
  }

  /**
   * Writes the key. Resolves with its new revision once this process's replica has it. The same
   * options as a local map but `ttl` (ERR_SHMKIT_UNSUPPORTED): ifRevision (0: only if absent),
   * ifAbsent, ifPresent; `timeout` bounds the server's answer (default 10 s).
   */
  async set(key: string, value: T, options?: SetOptions): Promise<number> {
    this.assertOpen();
    const { timeout, o } = this.parseWrite(options);
    const ifRevision = o.ifRevision === undefined ? undefined : checkInt('options.ifRevision', o.ifRevision, 0, Number.MAX_SAFE_INTEGER);
    if (o.ifAbsent !== undefined && typeof o.ifAbsent !== 'boolean') throw invalidArg('options.ifAbsent', 'must be a boolean');
    if (o.ifPresent !== undefined && typeof o.ifPresent !== 'boolean') throw invalidArg('options.ifPresent', 'must be a boolean');
    const data = this.encode(value);
    this.checkKey(key);
    const k = escapeKey(key);
    const kv = this.kv;
    try {
      if (ifRevision === 0 || o.ifAbsent === true) {
        try {
          return await this.written(await kv.create(k, data));
        } catch (err) {
          if ((err as { code?: unknown }).code === WRONG_SEQUENCE && ifRevision === undefined) throw new ShmkitError(ErrorCodes.EXISTS, `${this.label}: the key is present (ifAbsent); nothing was written`);
          throw err;
        }
      }
      if (ifRevision !== undefined) return await this.written(await kv.update(k, data, ifRevision, timeout), timeout);
      if (o.ifPresent === true) {
        let cur: Held | null | undefined = this.replica.get(key) ?? (await this.current(key));
        for (let i = 0; i < RETRIES; i++) {
          if (cur === undefined || cur === null) throw new ShmkitError(ErrorCodes.NOT_FOUND, `${this.label}: the key is absent (ifPresent); nothing was written`);
          try {
            return await this.written(await kv.update(k, data, cur.rev, timeout), timeout);
          } catch (err) {
            if ((err as { code?: unknown }).code !== WRONG_SEQUENCE) throw err;
            cur = await this.current(key); // written meanwhile (or the replica was behind): try again
          }
        }
      }
      return await this.written(await kv.put(k, data, { timeout }), timeout);
    } catch (err) {
      throw await this.failure(err, key);
    }
  }

  /** Deletes the key; resolves with whether it was there. `ifRevision`: only if the key is at it (else ERR_SHMKIT_CONFLICT). */
  async delete(key: string, options?: DeleteOptions): Promise<boolean> {
    this.assertOpen();
    const { o } = this.parseWrite(options); // its timeout: the JetStream default (the client takes none for a delete)
    const ifRevision = o.ifRevision === undefined ? undefined : checkInt('options.ifRevision', o.ifRevision, 0, Number.MAX_SAFE_INTEGER);
    this.checkKey(key);
    const k = escapeKey(key);
    try {
      if (ifRevision !== undefined) {
        if (ifRevision === 0) throw await this.failure({ code: WRONG_SEQUENCE }, key);
        await this.kv.delete(k, { previousSeq: ifRevision });
        await this.deleted(key, ifRevision);
        return true;
      }
      // The replica may not have a write another process just made: the server says.
      let cur: Held | null | undefined = this.replica.get(key) ?? (await this.current(key));
      for (let i = 0; i < RETRIES; i++) {
        if (cur === undefined || cur === null) return false;
        try {
          await this.kv.delete(k, { previousSeq: cur.rev });
          await this.deleted(key, cur.rev);
          return true;
        } catch (err) {
          if ((err as { code?: unknown }).code !== WRONG_SEQUENCE) throw err;
          cur = await this.current(key);
        }
      }
      throw new ShmkitError(ErrorCodes.BUSY, `${this.label}: the key kept changing; nothing was deleted`);
    } catch (err) {
      throw await this.failure(err, key);
    }
  }

  /** Adds `by` to the number at the key (absent: 0), atomically (compare-and-set on its revision, retried). */
  async increment(key: string, by = 1, options?: IncrementOptions): Promise<number> {
    this.assertOpen();
    if (typeof by !== 'number' || !Number.isFinite(by)) throw invalidArg('by', `must be a finite number, got ${describe(by)}`);
    if (this.codec.name === 'bytes') throw invalidArg('key', `increment needs a codec that stores numbers; codec ${this.codec.name} stores bytes`);
    const { timeout } = this.parseWrite(options);
    this.checkKey(key);
    const k = escapeKey(key);
    const text = this.codec.name === 'utf8';
    let cur: Held | null | undefined = this.replica.get(key);
    try {
      for (let i = 0; i < RETRIES; i++) {
        let n: unknown = 0;
        if (cur !== undefined && cur !== null) {
          n = this.decode(cur.data);
          if (text) n = (n as string).trim() === '' ? NaN : Number(n);
        }
        if (typeof n !== 'number' || !Number.isFinite(n)) throw invalidArg('key', `the value stored at the key is ${describe(n)}, not a finite number`);
        const result = n + by;
        if (!Number.isFinite(result)) throw new ShmkitError(ErrorCodes.OVERFLOW, `${this.label}: ${n} + ${by} is not a finite number`);
        const data = this.encode((text ? String(result) : result) as T);
        try {
          if (cur === undefined || cur === null) await this.written(await this.kv.create(k, data));
          else await this.written(await this.kv.update(k, data, cur.rev, timeout));
          return result;
        } catch (err) {
          if ((err as { code?: unknown }).code !== WRONG_SEQUENCE) throw err;
          cur = await this.current(key);
        }
      }
      throw new ShmkitError(ErrorCodes.BUSY, `${this.label}: the key kept changing; nothing was written`);
    } catch (err) {
      throw await this.failure(err, null);
    }
  }

  /** Deletes every key this replica holds (one delete each, so watchers see each); resolves with how many. */
  async clear(): Promise<number> {
    this.assertOpen();
    let n = 0;
    for (const key of [...this.replica.keys()]) if (await this.delete(key)) n++;
    return n;
  }

  /** Nothing expires over NATS (no per-key TTL): 0. */
  purgeExpired(): number {
    this.assertOpen();
    return 0;
  }

  /** Changes of one key, of keys with a prefix, or of every key, as a local map's watch(). */
  watch(key?: string, options?: WatchOptions): NatsMapWatch<T> {
    this.assertOpen();
    if (key !== undefined && typeof key !== 'string') throw invalidArg('key', `must be a string, got ${describe(key)}`);
    const o = checkObject('options', options) as WatchOptions;
    if (o.prefix !== undefined && typeof o.prefix !== 'boolean') throw invalidArg('options.prefix', 'must be a boolean');
    if (o.initial !== undefined && typeof o.initial !== 'boolean') throw invalidArg('options.initial', 'must be a boolean');
    const w = new NatsMapWatch<T>(this, key, key === undefined || o.prefix === true, checkSignal('options.signal', o.signal), () => this.watchers.delete(w));
    this.watchers.add(w);
    if (o.initial === true) for (const [k, h] of this.replica) w.offer({ type: 'set', key: k, raw: h.data, revision: h.rev });
    return w;
  }

  /** @internal */
  decodeRaw(raw: Uint8Array): T {
    return this.decode(raw);
  }

  stats(): NatsMapStats {
    return { entries: this.replica.size, ...this.counts, revision: this.applied };
  }

  /** Stops the replica and ends this handle's watches (the bucket stays). */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.stop?.();
    if (this.checker !== null) clearInterval(this.checker);
    this.transport.off('reconnect', this.onReconnect);
    for (const w of [...this.watchers]) w.close();
    for (const x of this.waiters.splice(0)) x.resolve();
    this.transport.release(this);
  }

  /** Deletes the bucket and everything in it (every process's replica empties). */
  async destroy(): Promise<void> {
    this.close();
    await this.kv.destroy();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * A watch of a NATS map: changes as the replica applies them. Changes of one key wait coalesced
 * (the latest replaces an earlier one not yet taken), so a slow consumer holds at most one change
 * per key and never misses the latest.
 */
export class NatsMapWatch<T> implements AsyncIterableIterator<MapChange<T>> {
  private readonly pending = new Map<string, RawChange>();
  private waiter: { resolve: (r: IteratorResult<MapChange<T>>) => void; reject: (e: unknown) => void } | null = null;
  private done = false;
  private readonly unlisten: (() => void) | null;

  /** @internal */
  constructor(
    private readonly map: NatsMap<T>,
    private readonly key: string | undefined,
    private readonly prefix: boolean,
    private readonly signal: AbortSignal | undefined,
    private readonly forget: () => void,
  ) {
    this.unlisten = signal ? onAbort(signal, () => this.fail(abortError(signal, `${map.label} watch`))) : null;
  }

  /** @internal A change the replica applied. */
  offer(c: RawChange): void {
    if (this.done) return;
    if (this.key !== undefined && (this.prefix ? !c.key.startsWith(this.key) : c.key !== this.key)) return;
    this.pending.delete(c.key); // coalesced: the latest goes to the back
    this.pending.set(c.key, c);
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      this.take().then(w.resolve, w.reject);
    }
  }

  /** The next change (a value the codec refuses: ERR_SHMKIT_DECODE, once; the watch goes on). */
  private take(): Promise<IteratorResult<MapChange<T>>> {
    const first = this.pending.entries().next();
    if (first.done) return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
    const [k, c] = first.value;
    this.pending.delete(k);
    try {
      const change: MapChange<T> = c.type === 'set' ? { type: 'set', key: c.key, value: this.map.decodeRaw(c.raw!), revision: c.revision } : { type: 'delete', key: c.key, revision: c.revision };
      return Promise.resolve({ value: change, done: false });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  next(): Promise<IteratorResult<MapChange<T>>> {
    if (this.pending.size > 0) return this.take();
    if (this.done || this.map.closed) {
      this.close();
      return Promise.resolve({ value: undefined, done: true });
    }
    if (isAborted(this.signal)) {
      this.close();
      return Promise.reject(abortError(this.signal, `${this.map.label} watch`));
    }
    if (this.waiter !== null) return Promise.reject(new ShmkitError(ErrorCodes.BUSY, `${this.map.label} watch: next() while another next() is pending`));
    return this.take();
  }

  private fail(err: unknown): void {
    const w = this.waiter;
    this.waiter = null;
    this.close();
    w?.reject(err);
  }

  async return(): Promise<IteratorResult<MapChange<T>>> {
    this.close();
    return { value: undefined, done: true };
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.pending.clear();
    this.unlisten?.();
    this.forget();
    const w = this.waiter;
    this.waiter = null;
    w?.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<MapChange<T>> {
    return this;
  }
}

/**
 * Event: a named notification object, the shared-memory analogue of a signal. Any process may
 * notify(id); every listener (a handle that called listen(), or waited) gets each id notified after
 * it started listening, until it takes it. Notifications of one id between two takes coalesce into
 * one; none is ever lost.
 *
 * Each listener owns a slot (layout.ts): a pending bitmap, and a flag word with its doorbell table,
 * which flag-word.ts sleeps on. notify() sets the id's bit in every claimed slot, advances the slot's
 * flag word and wakes its listener only if it sleeps: no system call otherwise. A listener takes
 * its ids with one atomic exchange per bitmap word. See docs/design.md ("Events").
 */
import { ErrorCodes, invalidArg, timeoutError } from '../errors';
import type { Channel } from '../channel/channel';
import type { Topic } from '../topic/topic';
import { type Attached, diffAttachments, liveOnly, type PeerChangeType, type Watchable } from '../peer-watch';
import { isAborted } from '../abort';
import { debug } from '../debug';
import { FlagWord } from '../flag-word';
import { Handle } from '../handle';
import { SELF_TOKEN, takeSlot, tokenAlive } from '../identity';
import { openNamed, type OpenHow } from '../open';
import { Kind, type OpenOptions, Segment } from '../segment';
import { type AsyncWaitOptions, DEFAULT, parseMode, parseWait, type ParsedWait, type WaitOptions } from '../sync/primitive';
import { parseTrust } from '../trust';
import { checkInt, checkObject } from '../validate';
import { Deadline, tuning } from '../wait';
import * as L from './layout';
import type { WaitTarget } from '../waitset/target';

export interface EventOptions extends OpenOptions {
  /** The largest id notify() accepts (0 to 4095). Default 63. */
  maxId?: number;
  /** Listener slots: how many handles may listen at once (1 to 1024). Default 16. */
  maxListeners?: number;
  /** Permission bits. Default 0o600. */
  mode?: number;
}

export interface EventStats {
  /** notify() calls (racy between processes: a statistic). */
  notified: number;
  /** Notifications that found a sleeping listener and woke it. */
  wakeUps: number;
  /** Listener slots held by live threads, this handle's included. */
  listeners: number;
}

export class Event extends Handle {
  readonly maxId: number;
  readonly maxListeners: number;
  private readonly slotBytes: number;
  private readonly i64: BigInt64Array;
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  /** Flag words of every slot, made on first use (notify wakes through them). */
  private readonly flags: (FlagWord | undefined)[];
  /** This handle's slot, or -1 when not listening. */
  private slot = -1;
  /** Bits above maxId in the last bitmap word: never ids, whatever shared memory says. */
  private readonly lastMask: number;

  private constructor(segment: Segment, p: L.EventParams) {
    super(segment, `event "${segment.name}"`);
    this.maxId = p.maxId;
    this.maxListeners = p.maxListeners;
    this.slotBytes = L.slotSize(p.maxId);
    this.i64 = segment.bigint64;
    this.i32 = segment.int32;
    this.f64 = new Float64Array(segment.buffer, segment.dataOffset, L.SLOTS >> 3);
    this.flags = new Array(p.maxListeners);
    const rem = (p.maxId + 1) & 31;
    this.lastMask = rem === 0 ? -1 : (1 << rem) - 1;
  }

  // Creation -------------------------------------------------------------------------------------

  private static named(how: OpenHow, name: string, options: unknown): Event {
    const o = checkObject('options', options);
    const trust = parseTrust(o.trustedOwners);
    if (how === 'open') {
      return openNamed(how, name, { kind: Kind.EVENT, size: 0, minSize: 0, mode: 0o600, trust }, (seg) => new Event(seg, L.readParams(seg)));
    }
    const p: L.EventParams = {
      maxId: o.maxId === undefined ? L.DEFAULT_MAX_ID : checkInt('options.maxId', o.maxId, 0, L.MAX_ID),
      maxListeners: o.maxListeners === undefined ? L.DEFAULT_LISTENERS : checkInt('options.maxListeners', o.maxListeners, 1, L.MAX_LISTENERS),
    };
    const spec = { kind: Kind.EVENT, size: L.dataSize(p), minSize: 0, mode: parseMode(o), trust, initialize: (s: Segment) => L.writeParams(s, p) };
    return openNamed(how, name, spec, (seg) => new Event(seg, seg.created ? p : L.readParams(seg)));
  }

  /** Creates the event (ERR_SHMKIT_EXISTS if the name is taken). */
  static create(name: string, options?: EventOptions): Event {
    return Event.named('create', name, options);
  }

  /** Opens an existing event; its maxId and maxListeners come from it. */
  static open(name: string, options?: Pick<EventOptions, 'trustedOwners'>): Event {
    return Event.named('open', name, options);
  }

  /** Opens the event, or creates it with `options` if it does not exist (one racer creates). */
  static openOrCreate(name: string, options?: EventOptions): Event {
    return Event.named('openOrCreate', name, options);
  }

  /** Removes the name; false if there was none. */
  static unlink(name: string): boolean {
    return Segment.unlink(name);
  }

  // Words of a slot ------------------------------------------------------------------------------

  private slotBase(i: number): number {
    return this.segment.dataOffset + L.SLOTS + i * this.slotBytes;
  }

  private tokenIndex(i: number): number {
    return (this.slotBase(i) + L.SLOT_TOKEN) >> 3;
  }

  private bitmapIndex(i: number): number {
    return (this.slotBase(i) + L.SLOT_BITMAP) >> 2;
  }

  private flag(i: number): FlagWord {
    let f = this.flags[i];
    if (f === undefined) {
      const base = this.slotBase(i);
      f = new FlagWord(this.segment, this.errors.label, (base + L.SLOT_FLAG) >> 2, (base + L.SLOT_BELLS) >> 2, -1);
      this.flags[i] = f;
    }
    return f;
  }

  // Notifying ------------------------------------------------------------------------------------

  /**
   * Notifies `id` (default 0) to every listener: it stays pending for each until that listener takes
   * it. Never waits; makes a system call only to wake a listener that sleeps. Returns how many
   * listener slots it reached.
   */
  notify(id = 0): number {
    this.assertOpen();
    checkInt('id', id, 0, this.maxId);
    const word = id >> 5;
    const bit = 1 << (id & 31);
    let reached = 0;
    let woke = 0;
    for (let i = 0; i < this.maxListeners; i++) {
      if (Atomics.load(this.i64, this.tokenIndex(i)) === 0n) continue;
      // The bit first, then the flag word: a listener that sees the word move sees the bit.
      Atomics.or(this.i32, this.bitmapIndex(i) + word, bit);
      const f = this.flag(i);
      Atomics.add(this.i32, f.word, L.NOTIFY_STEP);
      if (f.wakeWaiters()) woke++;
      reached++;
    }
    this.f64[L.NOTIFIED >> 3]! += 1;
    if (woke > 0) this.f64[L.WOKEN >> 3]! += woke;
    return reached;
  }

  // Listening ------------------------------------------------------------------------------------

  /** Whether this handle holds a listener slot. */
  get listening(): boolean {
    return this.slot >= 0 && !this.closed;
  }

  /**
   * Starts listening now: every id notified from here on is pending for this handle until it takes
   * it (wait, waitSync, tryWait, iteration, which also start listening). Takes a free slot, or the
   * slot of a listener that died; ERR_SHMKIT_BUSY when every slot has a live listener. Returns this.
   */
  listen(): this {
    this.assertOpen();
    if (this.slot >= 0) return this;
    const taken = takeSlot(this.i64, this.maxListeners, (i) => this.tokenIndex(i));
    if (taken !== null) {
      // Ours: what a dead owner left pending is not ours to see.
      const b = this.bitmapIndex(taken.slot);
      for (let w = 0; w <= this.maxId >> 5; w++) Atomics.store(this.i32, b + w, 0);
      this.slot = taken.slot;
      if (taken.previous !== 0n) debug('event %s: listener slot %d taken over from a dead listener', JSON.stringify(this.name), taken.slot);
      return this;
    }
    throw this.errors.error(ErrorCodes.BUSY, `all ${this.maxListeners} listener slots are held by live listeners (create the event with a larger maxListeners)`);
  }

  /** The slot, checked to be still ours (shared memory is untrusted: a peer may have overwritten it). */
  private own(): number {
    this.assertOpen();
    if (this.slot < 0) this.listen();
    if (Atomics.load(this.i64, this.tokenIndex(this.slot)) !== SELF_TOKEN) {
      throw this.errors.error(ErrorCodes.CORRUPT, `this handle's listener slot ${this.slot} was taken over by another process`);
    }
    return this.slot;
  }

  private pending(slot: number): boolean {
    const b = this.bitmapIndex(slot);
    const last = this.maxId >> 5;
    for (let w = 0; w < last; w++) if (Atomics.load(this.i32, b + w) !== 0) return true;
    return (Atomics.load(this.i32, b + last) & this.lastMask) !== 0;
  }

  /** Takes every pending id of this listener, ascending; [] if none. */
  private take(slot: number): number[] {
    const ids: number[] = [];
    const b = this.bitmapIndex(slot);
    const last = this.maxId >> 5;
    for (let w = 0; w <= last; w++) {
      if (Atomics.load(this.i32, b + w) === 0) continue;
      let v = Atomics.exchange(this.i32, b + w, 0);
      if (w === last) v &= this.lastMask;
      while (v !== 0) {
        const low = v & -v;
        ids.push(w * 32 + (31 - Math.clz32(low)));
        v ^= low;
      }
    }
    return ids;
  }

  /** @internal What a WaitSet waits on: this listener's flag word, and "an id is pending". Starts listening. */
  waitTarget(): WaitTarget {
    const slot = this.own();
    return { flag: this.flag(slot), ready: () => this.closed || this.pending(slot), segment: this.segment };
  }

  /** Takes the ids pending now, ascending; [] if none. Never waits. */
  tryWait(): number[] {
    return this.take(this.own());
  }

  /**
   * Waits until at least one id is pending, without blocking the event loop, and takes every pending
   * id (ascending). Takes `timeout` (then ERR_SHMKIT_TIMEOUT), `signal` and `spin`.
   */
  wait(options?: AsyncWaitOptions): Promise<number[]> {
    try {
      return this.waitParsed(options === undefined ? DEFAULT : parseWait(options, true));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private async waitParsed(o: ParsedWait): Promise<number[]> {
    if (isAborted(o.signal)) throw this.errors.aborted(o.signal!, 'wait');
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const slot = this.own();
      const ids = this.take(slot);
      if (ids.length > 0) return ids;
      if (!(await this.flag(slot).wait(o, deadline, () => this.pending(slot), null, 'wait'))) {
        throw timeoutError(`${this.errors.label} wait`, o.timeout, this.name);
      }
    }
  }

  /** Like wait(), blocking the thread while it waits. */
  waitSync(options?: WaitOptions): number[] {
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const slot = this.own();
      const ids = this.take(slot);
      if (ids.length > 0) return ids;
      if (!this.flag(slot).waitSync(o, deadline, () => this.pending(slot), null)) {
        throw timeoutError(`${this.errors.label} waitSync`, o.timeout, this.name);
      }
    }
  }

  /** `for await (const id of event)`: every id as it is notified, until the handle is closed. */
  [Symbol.asyncIterator](): AsyncIterableIterator<number> {
    return this.iterate();
  }

  /**
   * The iteration of `for await (const id of event)`, whose waits take `signal` and `timeout` (a
   * step that waits longer ends the loop with ERR_SHMKIT_TIMEOUT). It ends when the handle is closed.
   */
  iterate(options?: AsyncWaitOptions): AsyncIterableIterator<number> {
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    this.own(); // listening starts here, not at the first next()
    const queue: number[] = [];
    const life = this.life;
    const it: AsyncIterableIterator<number> = {
      next: async (): Promise<IteratorResult<number>> => {
        if (queue.length > 0) return { value: queue.shift()!, done: false };
        if (life.released) return { value: undefined, done: true };
        try {
          queue.push(...(await this.waitParsed(o)));
        } catch (err) {
          if (life.released && (err as { code?: string }).code === ErrorCodes.CLOSED) return { value: undefined, done: true };
          throw err;
        }
        return { value: queue.shift()!, done: false };
      },
      return: async (): Promise<IteratorResult<number>> => {
        // Leaving the loop early: ids taken but not yet yielded go back to the pending bitmap.
        if (queue.length > 0 && !life.released && this.slot >= 0) {
          const b = this.bitmapIndex(this.slot);
          for (const id of queue.splice(0)) Atomics.or(this.i32, b + (id >> 5), 1 << (id & 31));
        }
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  /** @internal Who listens, by listener slot (Event.watch of an event). */
  attachments(): Map<number, Attached> {
    this.assertOpen();
    const m = new Map<number, Attached>();
    for (let i = 0; i < this.maxListeners; i++) {
      const t = Atomics.load(this.i64, this.tokenIndex(i));
      if (t !== 0n) m.set(i, { token: t, role: 'listener', departed: false });
    }
    return m;
  }

  /**
   * Notifies ids of this event, automatically, when a peer of `object` (a Channel's producers and
   * consumers, a Topic's subscribers, an Event's listeners) attaches, leaves (`detach`) or dies
   * without leaving (`death`): give an id for each kind of change to report. This handle watches,
   * once per liveness interval, on a timer that never keeps the process alive; changes are seen
   * within about an interval, and a peer that comes and goes within one may be missed. Listeners
   * anywhere learn of them as of any notification. Returns a function that stops the watch (so does
   * closing either handle).
   */
  watch(object: Channel<any> | Topic<any> | Event, ids: { attach?: number; detach?: number; death?: number }): () => void { // eslint-disable-line @typescript-eslint/no-explicit-any
    this.assertOpen();
    if (!(object instanceof Handle) || typeof (object as unknown as Partial<Watchable>).attachments !== 'function') {
      throw invalidArg('object', 'must be a Channel, a Topic or an Event');
    }
    const o = checkObject('ids', ids);
    const map: Partial<Record<PeerChangeType, number>> = {};
    for (const k of ['attach', 'detach', 'death'] as const) if (o[k] !== undefined) map[k] = checkInt(`ids.${k}`, o[k], 0, this.maxId);
    if (Object.keys(map).length === 0) throw invalidArg('ids', 'must give at least one of attach, detach and death');
    const target = object as unknown as Watchable & Handle;
    let prev = liveOnly(target.attachments());
    const timer = setInterval(() => {
      if (this.closed || target.closed) return stop();
      let cur: Map<number, Attached>;
      try {
        cur = target.attachments();
      } catch {
        return stop();
      }
      for (const c of diffAttachments(prev, cur)) {
        const id = map[c.type];
        if (id !== undefined) this.notify(id);
      }
      prev = liveOnly(cur);
    }, tuning.livenessIntervalMs);
    timer.unref();
    const stop = (): void => clearInterval(timer);
    return stop;
  }

  // State ----------------------------------------------------------------------------------------

  stats(): EventStats {
    this.assertOpen();
    let listeners = 0;
    for (let i = 0; i < this.maxListeners; i++) {
      const t = Atomics.load(this.i64, this.tokenIndex(i));
      if (t !== 0n && (t === SELF_TOKEN || tokenAlive(t))) listeners++;
    }
    const counter = (v: number): number => (Number.isFinite(v) && v >= 0 ? v : 0); // statistics in shared memory: untrusted
    return { notified: counter(this.f64[L.NOTIFIED >> 3]!), wakeUps: counter(this.f64[L.WOKEN >> 3]!), listeners };
  }

  protected override inspectFields(): Record<string, unknown> {
    return { name: this.name, maxId: this.maxId, maxListeners: this.maxListeners, listening: this.slot >= 0 };
  }

  /** Releases this handle: its listener slot is freed (what was pending for it is dropped). */
  close(): void {
    this.dispose();
  }

  protected release(): void {
    if (this.slot >= 0 && this.segment.int32.length > 0) {
      Atomics.compareExchange(this.i64, this.tokenIndex(this.slot), SELF_TOKEN, 0n);
    }
    this.slot = -1;
    this.segment.close();
  }
}

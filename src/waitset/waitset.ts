/**
 * WaitSet: one wait over many sources (channels readable or writable, topic subscriptions, events,
 * deadlines and intervals), returning the ones that are ready. No thread and no timer per source:
 * an asynchronous wait arms this thread's one doorbell in every source's flag word and sleeps on it
 * once (any change rings it), and a blocking wait sleeps in one futex_waitv over all the words.
 * Readiness is level-triggered: a source is reported while an operation on it would not wait
 * (a closed source counts as ready: the operation throws at once). See docs/waitset.md.
 */
import { abortError, ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { bellWait, disableBells, ownBell } from '../bell';
import { Channel } from '../channel/channel';
import { Event } from '../event/event';
import { native } from '../native';
import { type AsyncWaitOptions, DEFAULT, parseWait, type ParsedWait, type WaitOptions } from '../sync/primitive';
import { Subscription } from '../topic/subscription';
import { checkInt, describe } from '../validate';
import { Deadline, parkAsync, parkSync, tuning } from '../wait';
import type { WaitTarget } from './target';

const ENOSYS = -38;
const EINVAL = -22;
/** The most words one futex_waitv takes (the addon's limit); beyond it, waitSync polls. */
const MAX_WAITV = 128;
const POLL_MS = 1;

export type WaitSetKind = 'readable' | 'writable' | 'deadline' | 'interval';
export type WaitSetSource = Channel<any> | Subscription<any> | Event | null; // eslint-disable-line @typescript-eslint/no-explicit-any

/** One source in a WaitSet; wait() returns these. */
export class WaitSetEntry {
  /** @internal */
  dueAt = 0;
  constructor(
    /** The channel, subscription or event (null for a deadline or an interval). */
    readonly source: WaitSetSource,
    readonly kind: WaitSetKind,
    /** Milliseconds, for a deadline or an interval. */
    readonly ms: number,
    /** @internal */
    readonly target: WaitTarget | null,
  ) {
    if (target === null) this.dueAt = performance.now() + ms;
  }

  /** A deadline or interval: starts counting again from now. */
  reset(): void {
    if (this.target === null) this.dueAt = performance.now() + this.ms;
  }
}

export class WaitSet {
  private readonly entries: WaitSetEntry[] = [];
  private closedSet = false;

  /**
   * Adds a source: a Channel ('readable', the default: a receive would not wait; or 'writable': a
   * send would not wait), a topic Subscription (a message is there), or an Event (an id is pending;
   * the event starts listening). Returns its entry.
   */
  add(source: Channel<any> | Subscription<any> | Event, kind: 'readable' | 'writable' = 'readable'): WaitSetEntry { // eslint-disable-line @typescript-eslint/no-explicit-any
    this.assertOpen();
    if (kind !== 'readable' && kind !== 'writable') throw invalidArg('kind', `must be 'readable' or 'writable', got ${describe(kind)}`);
    let target: WaitTarget;
    if (source instanceof Channel) target = source.waitTarget(kind);
    else if (kind === 'writable') throw invalidArg('kind', "'writable' applies to channels only");
    else if (source instanceof Subscription) target = source.waitTarget();
    else if (source instanceof Event) target = source.waitTarget();
    else throw invalidArg('source', `must be a Channel, a Subscription or an Event, got ${describe(source)}`);
    const e = new WaitSetEntry(source, kind, 0, target);
    this.entries.push(e);
    return e;
  }

  /** Adds a deadline: ready once `ms` milliseconds have passed (from now, or from its reset()). */
  addDeadline(ms: number): WaitSetEntry {
    this.assertOpen();
    const e = new WaitSetEntry(null, 'deadline', checkInt('ms', ms, 0, 2 ** 31 - 1), null);
    this.entries.push(e);
    return e;
  }

  /** Adds an interval: ready once per `ms` milliseconds (each period is reported once). */
  addInterval(ms: number): WaitSetEntry {
    this.assertOpen();
    const e = new WaitSetEntry(null, 'interval', checkInt('ms', ms, 1, 2 ** 31 - 1), null);
    this.entries.push(e);
    return e;
  }

  /** Removes an entry; false if it was not in the set. */
  remove(entry: WaitSetEntry): boolean {
    const i = this.entries.indexOf(entry);
    if (i < 0) return false;
    this.entries.splice(i, 1);
    return true;
  }

  get size(): number {
    return this.entries.length;
  }

  private assertOpen(): void {
    if (this.closedSet) throw new ShmkitError(ErrorCodes.CLOSED, 'WaitSet: it was closed');
  }

  /** The entries ready now, in the order they were added; an interval's period counts as reported. */
  private collect(): WaitSetEntry[] {
    const now = performance.now();
    const out: WaitSetEntry[] = [];
    for (const e of this.entries) {
      if (e.target !== null) {
        if (e.target.ready()) out.push(e);
      } else if (now >= e.dueAt) {
        out.push(e);
        if (e.kind === 'interval') e.dueAt = Math.max(e.dueAt + e.ms, now); // one report per period; no catching up
      }
    }
    return out;
  }

  /** Milliseconds to sleep at most: the caller's deadline, the next timer, the liveness slice. */
  private sleepFor(deadline: Deadline): number {
    let left = Math.min(deadline.remaining(), tuning.livenessIntervalMs);
    const now = performance.now();
    for (const e of this.entries) if (e.target === null) left = Math.min(left, Math.max(0, e.dueAt - now));
    return left;
  }

  /** The entries ready now ([] if none). Never waits. */
  tryWait(): WaitSetEntry[] {
    this.assertOpen();
    return this.collect();
  }

  /**
   * Waits, without blocking the event loop, until at least one entry is ready, and returns the
   * ready ones (in the order added). Takes `timeout` (then ERR_SHMKIT_TIMEOUT) and `signal`.
   */
  wait(options?: AsyncWaitOptions): Promise<WaitSetEntry[]> {
    try {
      this.assertOpen();
      return this.waitParsed(options === undefined ? DEFAULT : parseWait(options, true));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private async waitParsed(o: ParsedWait): Promise<WaitSetEntry[]> {
    const deadline = new Deadline(o.timeout);
    for (;;) {
      if (isAborted(o.signal)) throw abortError(o.signal!, 'WaitSet.wait');
      this.assertOpen();
      const now = this.collect();
      if (now.length > 0) return now;
      if (deadline.remaining() === 0) throw timeoutError('WaitSet.wait', o.timeout);
      const slice = this.sleepFor(deadline);
      if (slice === 0) continue; // a timer is due
      const targets = this.entries.filter((e) => e.target !== null).map((e) => e.target!);
      const id = ownBell();
      const armed: { t: WaitTarget; slot: number }[] = [];
      let bells = id !== 0;
      try {
        if (bells) {
          for (const t of targets) {
            const slot = t.flag.armBell(id);
            if (slot < 0) {
              bells = false; // a full doorbell table: the native path for this round
              break;
            }
            armed.push({ t, slot });
          }
        }
        // Armed first, checked again: a change after the first check rang (or will wake) us.
        const again = this.collect();
        if (again.length > 0) return again;
        if (bells || targets.length === 0) await bellWait(slice, o.signal, undefined, 'WaitSet.wait');
        else await this.parkAll(targets, slice, o.signal);
      } finally {
        let reachable = true;
        for (const { t, slot } of armed) if (!t.flag.disarmBell(slot, id)) reachable = false;
        if (!reachable) disableBells();
      }
    }
  }

  /** The native path: one futex wait per word on the waiter threads (shared, up to 127 words each); the first wake ends all. */
  private async parkAll(targets: WaitTarget[], slice: number, signal: AbortSignal | undefined): Promise<void> {
    const stop = new AbortController();
    const both = signal === undefined ? stop.signal : AbortSignal.any([signal, stop.signal]);
    const parks = targets.filter((t) => t.flag.i32.length > 0).map((t) => parkAsync(t.flag.i32, t.flag.word, t.flag.armFutex(), slice, both, t.segment, 'WaitSet.wait'));
    if (parks.length === 0) return;
    try {
      await Promise.race(parks);
    } catch (err) {
      if (isAborted(signal)) throw err;
      // a source closed under its wait: the next collect() reports it
    } finally {
      stop.abort();
      for (const p of parks) p.catch(() => {});
    }
  }

  /** Like wait(), blocking the thread: one futex_waitv over every source's word (up to 128; beyond, it polls every 1 ms). */
  waitSync(options?: WaitOptions): WaitSetEntry[] {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    const deadline = new Deadline(o.timeout);
    for (;;) {
      const now = this.collect();
      if (now.length > 0) return now;
      if (deadline.remaining() === 0) throw timeoutError('WaitSet.waitSync', o.timeout);
      const slice = this.sleepFor(deadline);
      if (slice === 0) continue;
      const targets = this.entries.filter((e) => e.target !== null && e.target.flag.i32.length > 0).map((e) => e.target!);
      if (targets.length === 0) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, slice); // only timers: sleep until the next one
        continue;
      }
      const words = targets.map((t) => t.flag.i32);
      const indices = targets.map((t) => t.flag.word);
      const expected = targets.map((t) => t.flag.armFutex());
      const again = this.collect();
      if (again.length > 0) return again;
      const rc = targets.length <= MAX_WAITV ? native.futexWaitMany(words, indices, expected, slice) : ENOSYS;
      if (rc === ENOSYS) parkSync(words[0]!, indices[0]!, expected[0]!, Math.min(slice, POLL_MS)); // no futex_waitv: poll
      else if (rc === EINVAL) continue; // a segment was unmapped: collect() reports its source
    }
  }

  /** `for await (const ready of waitSet)`: the ready entries, wait after wait, until close(). */
  async *[Symbol.asyncIterator](): AsyncGenerator<WaitSetEntry[]> {
    while (!this.closedSet) {
      try {
        yield await this.wait();
      } catch (err) {
        if (this.closedSet && err instanceof ShmkitError && err.code === ErrorCodes.CLOSED) return;
        throw err;
      }
    }
  }

  /** Empties the set; a pending wait rejects at its next wake-up, an iteration ends. Idempotent. */
  close(): void {
    this.closedSet = true;
    this.entries.length = 0;
  }

  get closed(): boolean {
    return this.closedSet;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

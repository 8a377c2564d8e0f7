/**
 * Waiting on a flag word: the one wait loop of every pattern whose waiters sleep until another
 * process changes a 32-bit word in shared memory (a ring's TAIL for receivers, its HEAD for
 * senders, and the words of later patterns).
 *
 * The protocol (docs/design.md, "Waking"): bits 1 and 2 of the word are waiter flags; bit 0 and
 * the upper bits belong to the pattern (a ring keeps a position there, and its closed bit).
 * - A waiter spins briefly on its `ready()` condition, then advertises that it sleeps: it sets
 *   FUTEX_WAITING (a futex wait on the word) or BELL_WAITING (its thread's doorbell, registered in
 *   the word's table of BELL_SLOTS slots) with a CAS, re-checks `ready()`, and parks expecting the
 *   word with its bit set. Any change of the word in between makes the park return at once.
 * - Whoever changes the word does so with a CAS or an exchange that returns the old value; if it
 *   held waiter bits, the new value has none, and it wakes them (wake()). So a wake-up costs a
 *   system call only when someone sleeps, and none is missed.
 * - Every park is sliced at the liveness interval: a peer killed between changing the word and
 *   waking cannot strand a waiter, and the caller's `failIfGone` check runs again.
 * - The sync driver parks the thread (futex). The async driver sleeps in the event loop on this
 *   thread's doorbell (one wake-up, see bell.ts) or, without a free slot or a doorbell, on a
 *   native waiter thread (wait.ts).
 */
import { closedError } from './errors';
import { bellWait, disableBells, ownBell, registerBell, ringAll, unregisterBell } from './bell';
import type { Segment } from './segment';
import { type Deadline, parkAsync, parkSync, spin, tuning, wake } from './wait';

/** Someone sleeps in a futex wait on this word: whoever changes it clears the bit and wakes. */
export const FUTEX_WAITING = 2;
/** Someone awaits a doorbell registered in this word's table: clear the bit and ring. */
export const BELL_WAITING = 4;
export const WAITING = FUTEX_WAITING | BELL_WAITING;
/** Slots (u32 doorbell ids) in a flag word's doorbell table. */
export const BELL_SLOTS = 16;

/** What a wait needs from its caller's parsed options. */
export interface FlagWait {
  /** Spin budget in µs before parking; negative: the configured default. */
  spin: number;
  signal?: AbortSignal | undefined;
}

/**
 * One flag word and its doorbell table. `label` names the object in errors (`channel "jobs"`),
 * `waitStat` is the f64 index of a "times parked" counter (or -1 for none).
 */
export class FlagWord {
  /** @internal The segment's words (the flag word is `i32[word]`). */
  readonly i32: Int32Array;
  private readonly f64: Float64Array | null;

  constructor(
    private readonly segment: Segment,
    private readonly label: string,
    /** Index of the word in the segment's Int32Array. */
    readonly word: number,
    /** Index of the first slot of its doorbell table. */
    private readonly bells: number,
    private readonly waitStat: number,
  ) {
    this.i32 = segment.int32;
    const buf = segment.buffer;
    this.f64 = waitStat >= 0 ? new Float64Array(buf, 0, buf.byteLength >> 3) : null;
  }

  /** Wakes the waiters that `flags` (the old value of the word, from a CAS or exchange) says are there. */
  wake(flags: number): void {
    if ((flags & FUTEX_WAITING) !== 0) wake(this.i32, this.word, 0);
    if ((flags & BELL_WAITING) !== 0) ringAll(this.i32, this.bells, BELL_SLOTS);
  }

  /** Wakes every waiter, whether or not it advertised itself (a channel's end()). */
  wakeAll(): void {
    this.wake(WAITING);
  }

  /**
   * Wakes the advertised waiters without changing the rest of the word: clears their bits with a
   * CAS first, so a waiter about to park sees the word changed and does not sleep. Returns whether
   * there were any.
   */
  wakeWaiters(): boolean {
    for (;;) {
      const t = Atomics.load(this.i32, this.word);
      const bits = t & WAITING;
      if (bits === 0) return false;
      if (Atomics.compareExchange(this.i32, this.word, t, t & ~WAITING) === t) {
        this.wake(bits);
        return true;
      }
    }
  }

  /**
   * Runs `failIfGone`. If it throws (the peers are gone), `ready` is asked once more before the
   * error goes out: a peer that published and then left between our first ready() and its
   * departure must not lose that message (it published before it left, so this read sees it).
   * Returns true if ready after all.
   */
  private gone(failIfGone: () => void, ready: () => boolean): boolean {
    try {
      failIfGone();
      return false;
    } catch (err) {
      if (ready()) return true;
      throw err;
    }
  }

  // One wait over many words (WaitSet): each word is armed, every condition checked again, then the
  // caller sleeps once, on this thread's doorbell or in one futex_waitv.

  /**
   * Registers doorbell `id` in this word's table and sets BELL_WAITING: a change of the word from now
   * on rings it. The slot, or -1 when the table is full (then use armFutex and a native wait).
   */
  armBell(id: number): number {
    const slot = registerBell(this.i32, this.bells, BELL_SLOTS, id);
    if (slot < 0) return -1;
    for (;;) {
      const cur = Atomics.load(this.i32, this.word);
      if ((cur & BELL_WAITING) !== 0 || Atomics.compareExchange(this.i32, this.word, cur, cur | BELL_WAITING) === cur) return slot;
    }
  }

  /** Undoes armBell. False if a ringer cleared the slot (our doorbell was unreachable). */
  disarmBell(slot: number, id: number): boolean {
    return this.i32.length === 0 || unregisterBell(this.i32, slot, id);
  }

  /** Sets FUTEX_WAITING and returns the value to park on (a change of the word wakes the park). */
  armFutex(): number {
    for (;;) {
      const cur = Atomics.load(this.i32, this.word);
      if ((cur & FUTEX_WAITING) !== 0) return cur;
      if (Atomics.compareExchange(this.i32, this.word, cur, cur | FUTEX_WAITING) === cur) return cur | FUTEX_WAITING;
    }
  }

  private count(counted: boolean): true {
    if (!counted && this.f64 !== null) this.f64[this.waitStat]! += 1; // a statistic: racy increments between processes may be lost
    return true;
  }

  /**
   * Spins (with `spinner`, or on `ready`), then parks until ready() (true) or the deadline (false).
   * `failIfGone` runs before every park and may throw (a peer that should wake us is gone), unless
   * ready() turns true meanwhile.
   */
  waitSync(o: FlagWait, deadline: Deadline, ready: () => boolean, failIfGone: (() => void) | null, spinner?: () => boolean): boolean {
    if (spinner ? spinner() : spin(ready, o.spin)) return true;
    const i32 = this.i32;
    const word = this.word;
    let counted = false;
    for (;;) {
      if (ready()) return true;
      if (failIfGone !== null && this.gone(failIfGone, ready)) return true;
      const left = deadline.remaining();
      if (left === 0) return false;
      const cur = Atomics.load(i32, word);
      if ((cur & FUTEX_WAITING) === 0 && Atomics.compareExchange(i32, word, cur, cur | FUTEX_WAITING) !== cur) continue;
      if (ready()) return true; // changed between the first check and the CAS
      counted = this.count(counted);
      parkSync(i32, word, cur | FUTEX_WAITING, Math.min(left, tuning.livenessIntervalMs));
      this.segment.verify(); // a peer may have truncated the object while we slept (see Segment.verify)
    }
  }

  /** The async driver of waitSync: the event loop is never blocked. Honours `o.signal`. */
  async wait(o: FlagWait, deadline: Deadline, ready: () => boolean, failIfGone: (() => void) | null, what: string, spinner?: () => boolean): Promise<boolean> {
    if (spinner ? spinner() : spin(ready, o.spin)) return true;
    const i32 = this.i32;
    const word = this.word;
    let counted = false;
    for (;;) {
      if (i32.length === 0) throw closedError(`${this.label} handle`, this.segment.name);
      if (ready()) return true;
      if (failIfGone !== null && this.gone(failIfGone, ready)) return true;
      const left = deadline.remaining();
      if (left === 0) return false;
      const id = ownBell();
      const slot = id === 0 ? -1 : registerBell(i32, this.bells, BELL_SLOTS, id);
      const flag = slot < 0 ? FUTEX_WAITING : BELL_WAITING;
      const cur = Atomics.load(i32, word);
      if ((cur & flag) === 0 && Atomics.compareExchange(i32, word, cur, cur | flag) !== cur) {
        if (slot >= 0) unregisterBell(i32, slot, id);
        continue;
      }
      counted = this.count(counted);
      const slice = Math.min(left, tuning.livenessIntervalMs);
      // Woken by the other side (a doorbell ring or a futex wake), the wait goes on without a
      // truncation check: its fstat would add ~1 µs (5-10 %) to every async round trip. A slice
      // that ended without a wake-up, an abort or an error is checked (see Segment.verify).
      let woken = false;
      try {
        if (ready()) return true;
        if (slot >= 0) woken = await bellWait(slice, o.signal, this.segment, `${this.label} ${what}`);
        else woken = !(await parkAsync(i32, word, cur | flag, slice, o.signal, this.segment, `${this.label} ${what}`));
      } finally {
        // Before touching the segment again: a peer may have truncated it while we slept.
        if (!woken && i32.length > 0) this.segment.verify();
        // Someone else cleared our slot: a ringer could not reach our doorbell (another network
        // namespace?). Fall back to futex waits for good in this thread.
        if (slot >= 0 && i32.length > 0 && !unregisterBell(i32, slot, id)) disableBells();
      }
    }
  }
}


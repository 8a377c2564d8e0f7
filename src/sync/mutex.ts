/**
 * Mutex: a robust lock in shared memory. If the owning process dies, the next locker gets the lock
 * with `recovered: true`, so it can repair the state the lock protects.
 *
 * Layout (16 bytes, 8-aligned):
 *   +0  i64 owner     0 = free, else the owner token (pid, thread slot, start time; see identity.ts)
 *   +8  i32 seq       futex word: bumped by unlock when someone sleeps
 *   +12 i32 sleepers  parked (or about to park) waiters
 *
 * Acquire is one 64-bit compare-and-swap 0 -> token: the lock is never held without its owner
 * recorded, even if the process is killed between any two instructions. Release is a CAS token -> 0
 * (which also proves ownership), then a wake only if `sleepers` > 0.
 *
 * Ordering: a waiter increments `sleepers`, reads `seq`, then tries the CAS; if that fails it parks
 * on `seq` with the value it read. The unlocker's CAS comes after the waiter's failed CAS, so its
 * read of `sleepers` sees the waiter and it bumps `seq` before waking: the waiter either sees the
 * new `seq` (the kernel refuses to sleep) or is woken. A parked waiter also wakes every
 * `livenessIntervalMs` to check whether the owner is alive; a dead owner's token is replaced by
 * CAS, so exactly one waiter recovers the lock.
 */
import { abortError, ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { debug } from '../debug';
import { fromToken, type ProcessIdentity, SELF_TOKEN, toToken, tokenAlive } from '../identity';
import { Kind, type Segment } from '../segment';
import { checkObject } from '../validate';
import { Deadline, parkAsync, parkSync, spin, tuning, wake } from '../wait';
import { type AsyncWaitOptions, checkPlacement, DEFAULT, namedPrimitive, onClose, type NamedOptions, type OpenOptions, parseWait, Primitive, type WaitOptions } from './primitive';

const GUARD_KEY = Symbol('MutexGuard');

/** A held lock. `using guard = mutex.lockSync()` unlocks at the end of the block. */
export class MutexGuard {
  /**
   * True if the previous owner died holding the lock, so inside its critical section: the
   * protected state may be half-updated. Exactly one acquirer is told.
   */
  readonly recovered: boolean;
  /** The process (pid, start time, thread slot) that died holding the lock, when `recovered`. */
  readonly deadOwner: ProcessIdentity | null;
  #mutex: Mutex | null;

  /** @internal */
  constructor(key: symbol, mutex: Mutex, deadToken: bigint) {
    if (key !== GUARD_KEY) throw invalidArg('MutexGuard', 'is returned by the Mutex methods; it cannot be constructed');
    this.#mutex = mutex;
    this.recovered = deadToken !== 0n;
    this.deadOwner = deadToken === 0n ? null : fromToken(deadToken);
  }

  /** Unlocks (once; later calls do nothing). */
  unlock(): void {
    const m = this.#mutex;
    if (m === null) return;
    this.#mutex = null;
    m.unlock();
  }

  [Symbol.dispose](): void {
    this.unlock();
  }
}

export class Mutex extends Primitive {
  static readonly SIZE = 16;

  private readonly ownerWord: number; // index of owner in i64
  private readonly seqWord: number; // index of seq in i32
  private readonly sleepersWord: number; // index of sleepers in i32
  /** The dead owner's token taken over by the last attempt() that returned 1 (read at once by guard()). */
  private dead = 0n;
  /** Set between a lockAsyncForCaller acquisition and settle(): drops the close hook that gives it back. */
  private dropCloseHook: (() => void) | null = null;

  private constructor(segment: Segment, offset: number, owns: boolean) {
    super(segment, offset, owns);
    this.ownerWord = this.base >> 3;
    this.seqWord = this.firstWord + 2;
    this.sleepersWord = this.firstWord + 3;
  }

  static create(name: string, options?: NamedOptions): Mutex {
    return namedPrimitive('create', name, Kind.MUTEX, Mutex.SIZE, checkObject('options', options), undefined, (s) => new Mutex(s, 0, true));
  }

  static open(name: string, options?: OpenOptions): Mutex {
    return namedPrimitive('open', name, Kind.MUTEX, Mutex.SIZE, checkObject('options', options), undefined, (s) => new Mutex(s, 0, true));
  }

  static openOrCreate(name: string, options?: NamedOptions): Mutex {
    return namedPrimitive('openOrCreate', name, Kind.MUTEX, Mutex.SIZE, checkObject('options', options), undefined, (s) => new Mutex(s, 0, true));
  }

  /** The mutex at data offset `offset` of `segment`. Zeroed memory is an unlocked mutex. */
  static at(segment: Segment, offset: number): Mutex {
    const p = checkPlacement(segment, offset, Mutex.SIZE);
    return new Mutex(p.segment, p.offset, false);
  }

  /** Resets the mutex at `offset` to unlocked. Do this before sharing it. */
  static init(segment: Segment, offset: number): Mutex {
    const m = Mutex.at(segment, offset);
    Atomics.store(m.i64, m.ownerWord, 0n);
    Atomics.store(m.i32, m.seqWord, 0);
    Atomics.store(m.i32, m.sleepersWord, 0);
    return m;
  }

  /** Whether anyone holds the lock right now (a snapshot). */
  get locked(): boolean {
    this.assertOpen();
    return Atomics.load(this.i64, this.ownerWord) !== 0n;
  }

  /** Whether this thread holds the lock. */
  get ownedByMe(): boolean {
    this.assertOpen();
    return Atomics.load(this.i64, this.ownerWord) === SELF_TOKEN;
  }

  /** Takes the lock if it is free (or its owner died), without waiting. */
  tryLock(): MutexGuard | null {
    this.assertOpen();
    const r = this.attempt(true);
    return r < 0 ? null : this.guard(r);
  }

  /**
   * @internal A plain CAS attempt: takes the lock only if it is free (no liveness check of a
   * holder, no /proc read). For callers that can leave the work to the holder.
   */
  tryLockQuick(): MutexGuard | null {
    this.assertOpen();
    return Atomics.compareExchange(this.i64, this.ownerWord, 0n, SELF_TOKEN) === 0n ? new MutexGuard(GUARD_KEY, this, 0n) : null;
  }

  /**
   * Blocks until the lock is taken. Throws ERR_SHMKIT_TIMEOUT after `timeout` ms, and
   * ERR_SHMKIT_WOULD_DEADLOCK if this thread already holds it.
   */
  lockSync(options?: WaitOptions): MutexGuard {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    if (Atomics.compareExchange(this.i64, this.ownerWord, 0n, SELF_TOKEN) === 0n) return new MutexGuard(GUARD_KEY, this, 0n);
    if (Atomics.load(this.i64, this.ownerWord) === SELF_TOKEN) {
      throw new ShmkitError(ErrorCodes.WOULD_DEADLOCK, `Mutex.lockSync: this thread already holds the mutex in segment "${this.segment.name}"`, { segment: this.segment.name });
    }
    const deadline = new Deadline(o.timeout);
    let r = -1;
    if (spin(() => (r = this.attempt(false)) >= 0, o.spin)) return this.guard(r);
    const i32 = this.i32;
    Atomics.add(i32, this.sleepersWord, 1);
    try {
      let checkOwner = true;
      for (;;) {
        const seq = Atomics.load(i32, this.seqWord);
        r = this.attempt(checkOwner);
        if (r >= 0) return this.guard(r);
        const left = deadline.remaining();
        if (left === 0) break;
        const slice = Math.min(left, tuning.livenessIntervalMs);
        checkOwner = !parkSync(i32, this.seqWord, seq, slice); // timed out: look at the owner next round
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } finally {
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1); // unmapped if a truncation could not be repaired
    }
    this.passOn();
    throw timeoutError('Mutex.lockSync', o.timeout, this.segment.name);
  }

  /** Like lock(), without blocking the event loop. Accepts an AbortSignal. */
  lock(options?: AsyncWaitOptions): Promise<MutexGuard> {
    return this.lockAsyncImpl(options, false);
  }

  /**
   * @internal lock for a lock the library takes on its caller's behalf (a channel's producer
   * or consumer lock), whose caller runs again only after an await. If the segment is closed in
   * that gap (close() during a send), a close hook gives the lock back while the memory
   * is still mapped: a live owner's lock is never taken over, so nobody else could ever get it.
   * A lock recovered from a dead owner goes back with that owner's token, so the next owner is
   * told. The caller calls settle() as soon as it runs again; unlock() settles too.
   */
  lockAsyncForCaller(options?: AsyncWaitOptions): Promise<MutexGuard> {
    return this.lockAsyncImpl(options, true);
  }

  /** @internal The caller of lockAsyncForCaller runs again: the lock is its own to give back. */
  settle(): void {
    if (this.dropCloseHook !== null) {
      this.dropCloseHook();
      this.dropCloseHook = null;
    }
  }

  /** @internal Arms the give-back hook of lockAsyncForCaller for a lock just taken (see there). */
  giveBackOnClose(guard: MutexGuard): MutexGuard {
    this.settle();
    const token = guard.deadOwner === null ? 0n : toToken(guard.deadOwner);
    this.dropCloseHook = onClose(this.segment, () => {
      this.dropCloseHook = null;
      if (Atomics.compareExchange(this.i64, this.ownerWord, SELF_TOKEN, token) !== SELF_TOKEN) return;
      if (Atomics.load(this.i32, this.sleepersWord) > 0) {
        Atomics.add(this.i32, this.seqWord, 1);
        wake(this.i32, this.seqWord, 1);
      }
    });
    return guard;
  }

  private async lockAsyncImpl(options: AsyncWaitOptions | undefined, giveBack: boolean): Promise<MutexGuard> {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (isAborted(o.signal)) throw abortError(o.signal, 'Mutex.lock');
    const taken = (g: MutexGuard): MutexGuard => (giveBack ? this.giveBackOnClose(g) : g);
    if (Atomics.compareExchange(this.i64, this.ownerWord, 0n, SELF_TOKEN) === 0n) return taken(new MutexGuard(GUARD_KEY, this, 0n));
    const deadline = new Deadline(o.timeout);
    let r = -1;
    if (spin(() => (r = this.attempt(false)) >= 0, o.spin)) return taken(this.guard(r));
    const i32 = this.i32;
    Atomics.add(i32, this.sleepersWord, 1);
    const undo = onClose(this.segment, () => {
      Atomics.sub(i32, this.sleepersWord, 1);
      this.passOn();
    });
    let got = false;
    try {
      let checkOwner = true;
      for (;;) {
        const seq = Atomics.load(i32, this.seqWord);
        r = this.attempt(checkOwner);
        if (r >= 0) { got = true; return taken(this.guard(r)); }
        const left = deadline.remaining();
        if (left === 0) break;
        checkOwner = await parkAsync(i32, this.seqWord, seq, left, o.signal, this.segment, 'Mutex.lock', this.ownerGone);
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } finally {
      undo();
      if (i32.length > 0) {
        Atomics.sub(i32, this.sleepersWord, 1);
        if (!got) this.passOn();
      }
    }
    throw timeoutError('Mutex.lock', o.timeout, this.segment.name);
  }

  /** Releases the lock. Throws ERR_SHMKIT_NOT_OWNER unless this thread holds it. */
  unlock(): void {
    this.assertOpen();
    this.settle();
    const prev = Atomics.compareExchange(this.i64, this.ownerWord, SELF_TOKEN, 0n);
    if (prev !== SELF_TOKEN) {
      throw new ShmkitError(
        ErrorCodes.NOT_OWNER,
        prev === 0n ? `Mutex.unlock: the mutex in segment "${this.segment.name}" is not locked` : `Mutex.unlock: the mutex in segment "${this.segment.name}" is held by another owner`,
        { segment: this.segment.name },
      );
    }
    if (Atomics.load(this.i32, this.sleepersWord) > 0) {
      Atomics.add(this.i32, this.seqWord, 1);
      wake(this.i32, this.seqWord, 1);
    }
  }

  /** The guard for a successful attempt() (1: recovered from `this.dead`). */
  private guard(r: number): MutexGuard {
    const dead = r === 1 ? this.dead : 0n;
    this.dead = 0n;
    return new MutexGuard(GUARD_KEY, this, dead);
  }

  /**
   * One acquisition attempt: 0 taken, 1 taken from a dead owner (recovered; its token in `dead`), -1 busy.
   * With `checkOwner`, a held lock's owner is checked for liveness (reads /proc: slow path only).
   */
  private attempt(checkOwner: boolean): number {
    const i64 = this.i64;
    const cur = Atomics.compareExchange(i64, this.ownerWord, 0n, SELF_TOKEN);
    if (cur === 0n) return 0;
    if (!checkOwner || cur === SELF_TOKEN || tokenAlive(cur)) return -1;
    // The owner is gone. Exactly one CAS replaces its token.
    if (Atomics.compareExchange(i64, this.ownerWord, cur, SELF_TOKEN) !== cur) return -1;
    this.dead = cur;
    debug('mutex in %s recovered from dead owner pid %d', JSON.stringify(this.segment.name), fromToken(cur).pid);
    return 1;
  }

  /** For the liveness tick of async waits: the lock is free (an unlocker died before waking) or its owner died. */
  private readonly ownerGone = (): boolean => {
    const cur = Atomics.load(this.i64, this.ownerWord);
    return cur === 0n || (cur !== SELF_TOKEN && !tokenAlive(cur));
  };

  private passOn(): void {
    if (Atomics.load(this.i64, this.ownerWord) === 0n && Atomics.load(this.i32, this.sleepersWord) > 0) {
      Atomics.add(this.i32, this.seqWord, 1);
      wake(this.i32, this.seqWord, 1);
    }
  }
}

/**
 * Condition: a condition variable used with a Mutex, across processes.
 *
 * Layout (8 bytes):
 *   +0 i32 seq       futex word, bumped by every signal/broadcast
 *   +4 i32 sleepers
 *
 * wait() reads `seq` while holding the mutex, registers as a sleeper, unlocks, and parks while
 * `seq` is unchanged. A signal after the unlock changes `seq`, so the kernel refuses to sleep or the
 * waiter is woken: no signal sent after wait() released the mutex is lost. Wake-ups may be
 * spurious, as with every condition variable: always wait in a loop that re-checks the predicate.
 */
import { ErrorCodes, invalidArg, ShmkitError, timeoutError } from '../errors';
import { Kind, type Segment } from '../segment';
import { checkObject } from '../validate';
import { Deadline, parkAsync, parkSync, spin, tuning, wake } from '../wait';
import { Mutex, type MutexGuard } from './mutex';
import { isAborted } from '../abort';
import { lockWithin, lockWithinAsync } from './lock-within';
import { type AsyncWaitOptions, checkPlacement, namedPrimitive, onClose, type NamedOptions, type OpenOptions, parseWait, Primitive, type WaitOptions } from './primitive';

export class Condition extends Primitive {
  static readonly SIZE = 8;
  private readonly seqWord: number;
  private readonly sleepersWord: number;

  private constructor(segment: Segment, offset: number, owns: boolean) {
    super(segment, offset, owns);
    this.seqWord = this.firstWord;
    this.sleepersWord = this.firstWord + 1;
  }

  static create(name: string, options?: NamedOptions): Condition {
    return namedPrimitive('create', name, Kind.CONDITION, Condition.SIZE, checkObject('options', options), undefined, (s) => new Condition(s, 0, true));
  }
  static open(name: string, options?: OpenOptions): Condition {
    return namedPrimitive('open', name, Kind.CONDITION, Condition.SIZE, checkObject('options', options), undefined, (s) => new Condition(s, 0, true));
  }
  static openOrCreate(name: string, options?: NamedOptions): Condition {
    return namedPrimitive('openOrCreate', name, Kind.CONDITION, Condition.SIZE, checkObject('options', options), undefined, (s) => new Condition(s, 0, true));
  }
  static at(segment: Segment, offset: number): Condition {
    const p = checkPlacement(segment, offset, Condition.SIZE);
    return new Condition(p.segment, p.offset, false);
  }
  static init(segment: Segment, offset: number): Condition {
    const c = Condition.at(segment, offset);
    Atomics.store(c.i32, c.seqWord, 0);
    Atomics.store(c.i32, c.sleepersWord, 0);
    return c;
  }

  private enter(mutex: unknown, what: string): Mutex {
    this.assertOpen();
    if (!(mutex instanceof Mutex)) throw invalidArg('mutex', 'must be a Mutex');
    if (!mutex.ownedByMe) throw new ShmkitError(ErrorCodes.NOT_OWNER, `${what}: the mutex must be held by the caller`, { segment: this.segment.name });
    return mutex;
  }

  /**
   * Unlocks `mutex`, waits for a signal, and locks it again; returns the guard of the re-acquired
   * lock (its `recovered` tells whether the mutex was taken over from a dead owner meanwhile).
   * On timeout the mutex is re-acquired and ERR_SHMKIT_TIMEOUT is thrown. The re-acquisition is
   * bounded by the same deadline: if another holder keeps the mutex past it, ERR_SHMKIT_TIMEOUT is
   * thrown with the mutex NOT held (its message says so; `mutex.ownedByMe` tells).
   */
  waitSync(mutex: Mutex, options?: WaitOptions): MutexGuard {
    const m = this.enter(mutex, 'Condition.waitSync');
    const o = parseWait(options, false);
    const deadline = new Deadline(o.timeout);
    const i32 = this.i32;
    const seq = Atomics.load(i32, this.seqWord);
    Atomics.add(i32, this.sleepersWord, 1);
    let signalled = true;
    try {
      m.unlock();
      if (!spin(() => Atomics.load(i32, this.seqWord) !== seq, o.spin)) {
        // One wake-up ends the wait (spurious ones included, as with any condition variable); the
        // park is sliced so that a signaller killed between its bump and its wake cannot strand us.
        for (;;) {
          const left = deadline.remaining();
          if (left === 0) { signalled = false; break; }
          const timedOut = !parkSync(i32, this.seqWord, seq, Math.min(left, tuning.livenessIntervalMs));
          this.segment.verify(); // before touching memory a peer may have truncated meanwhile
          if (!timedOut || Atomics.load(i32, this.seqWord) !== seq) break;
        }
      }
    } finally {
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1); // unmapped if a truncation could not be repaired
    }
    // Re-lock within the same deadline: a mutex held elsewhere cannot stretch the wait past it.
    const guard = this.relock(m, deadline, 'Condition.waitSync');
    if (!signalled) throw timeoutError('Condition.waitSync', o.timeout, this.segment.name);
    return guard;
  }

  /** Like wait(), without blocking the event loop. */
  async wait(mutex: Mutex, options?: AsyncWaitOptions): Promise<MutexGuard> {
    const m = this.enter(mutex, 'Condition.wait');
    const o = parseWait(options, true);
    const deadline = new Deadline(o.timeout);
    const i32 = this.i32;
    const seq = Atomics.load(i32, this.seqWord);
    Atomics.add(i32, this.sleepersWord, 1);
    const undo = onClose(this.segment, () => Atomics.sub(i32, this.sleepersWord, 1));
    let signalled = true;
    let failure: unknown;
    try {
      m.unlock();
      if (!spin(() => Atomics.load(i32, this.seqWord) !== seq, o.spin)) {
        for (;;) {
          const left = deadline.remaining();
          if (left === 0) { signalled = false; break; }
          const timedOut = await parkAsync(i32, this.seqWord, seq, left, o.signal, this.segment, 'Condition.wait');
          this.segment.verify(); // before touching memory a peer may have truncated meanwhile
          if (!timedOut || Atomics.load(i32, this.seqWord) !== seq) break;
        }
      }
    } catch (err) {
      failure = err;
    } finally {
      undo();
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1);
    }
    if (failure !== undefined && i32.length === 0) throw failure; // closed: nothing to re-lock
    // As with a timeout, the mutex is held again when an abort error is thrown, if it can be
    // re-taken within the deadline and before the signal fires.
    let guard: MutexGuard;
    try {
      guard = await lockWithinAsync(m, deadline, isAborted(o.signal) ? undefined : o.signal, 'Condition.wait', this.segment.name);
    } catch (err) {
      throw this.notRelocked(err, failure);
    }
    if (failure !== undefined) throw failure;
    if (!signalled) throw timeoutError('Condition.wait', o.timeout, this.segment.name);
    return guard;
  }

  private relock(m: Mutex, deadline: Deadline, what: string): MutexGuard {
    try {
      return lockWithin(m, deadline, what, this.segment.name);
    } catch (err) {
      throw this.notRelocked(err, undefined);
    }
  }

  /** The error of a wait that could not re-take its mutex in time: it says the mutex is not held. */
  private notRelocked(err: unknown, earlier: unknown): unknown {
    const e = earlier ?? err;
    if (e instanceof ShmkitError && (e.code === ErrorCodes.TIMEOUT || e.code === ErrorCodes.ABORTED)) {
      return new ShmkitError(e.code, `${e.message}; the mutex could not be re-taken in time and is NOT held`, { segment: this.segment.name, cause: e.cause });
    }
    return err;
  }

  /** Wakes one waiter (if any sleeps). */
  signal(): void {
    this.assertOpen();
    Atomics.add(this.i32, this.seqWord, 1);
    if (Atomics.load(this.i32, this.sleepersWord) > 0) wake(this.i32, this.seqWord, 1);
  }

  /** Wakes every waiter. */
  broadcast(): void {
    this.assertOpen();
    Atomics.add(this.i32, this.seqWord, 1);
    if (Atomics.load(this.i32, this.sleepersWord) > 0) wake(this.i32, this.seqWord, 0);
  }
}

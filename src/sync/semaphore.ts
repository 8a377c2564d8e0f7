/**
 * Semaphore: a counting semaphore in shared memory.
 *
 * Layout (8 bytes, 8-aligned):
 *   +0 i32 count     the value; also the futex word waiters sleep on
 *   +4 i32 sleepers  how many waiters are parked (or about to park)
 *
 * Ordering (all Atomics are sequentially consistent): a waiter increments `sleepers`, then reads
 * `count` and parks only while it still holds that value. A poster adds to `count`, then reads
 * `sleepers`. Either the waiter sees the new count, or the poster sees the sleeper and wakes it;
 * the kernel compares the value atomically with going to sleep, so no wake-up is lost. Uncontended
 * post and wait touch only memory.
 */
import { abortError, ErrorCodes, ShmkitError, timeoutError } from '../errors';
import { isAborted } from '../abort';
import { Kind, type Segment } from '../segment';
import { checkInt, checkObject } from '../validate';
import { Deadline, parkAsync, parkSync, spin, tuning, wake } from '../wait';
import { type AsyncWaitOptions, checkPlacement, DEFAULT, namedPrimitive, onClose, type NamedOptions, type OpenOptions, parseWait, Primitive, type WaitOptions } from './primitive';

export interface SemaphoreOptions extends NamedOptions {
  /** Initial count. Default 0. */
  initial?: number;
}

const MAX = 0x7fffffff;

export class Semaphore extends Primitive {
  static readonly SIZE = 8;

  private readonly countWord: number;
  private readonly sleepersWord: number;

  private constructor(segment: Segment, offset: number, owns: boolean) {
    super(segment, offset, owns);
    this.countWord = this.firstWord;
    this.sleepersWord = this.firstWord + 1;
  }

  /** Creates a named semaphore in its own segment. */
  static create(name: string, options?: SemaphoreOptions): Semaphore {
    return Semaphore.named('create', name, options);
  }

  static open(name: string, options?: OpenOptions): Semaphore {
    return Semaphore.named('open', name, options);
  }

  /** Opens the named semaphore or creates it with `options.initial`. */
  static openOrCreate(name: string, options?: SemaphoreOptions): Semaphore {
    return Semaphore.named('openOrCreate', name, options);
  }

  private static named(how: 'create' | 'open' | 'openOrCreate', name: string, options: unknown): Semaphore {
    const o = checkObject('options', options);
    const initial = o.initial === undefined ? 0 : checkInt('options.initial', o.initial, 0, MAX);
    return namedPrimitive(how, name, Kind.SEMAPHORE, Semaphore.SIZE, o, (s) => {
      Atomics.store(s.int32, (s.dataOffset >> 2), initial);
    }, (s) => new Semaphore(s, 0, true));
  }

  /** Uses the semaphore at data offset `offset` of `segment` (already initialized). */
  static at(segment: Segment, offset: number): Semaphore {
    const p = checkPlacement(segment, offset, Semaphore.SIZE);
    return new Semaphore(p.segment, p.offset, false);
  }

  /** Initializes a semaphore at `offset` with `initial` and returns it. Do this before sharing it. */
  static init(segment: Segment, offset: number, initial = 0): Semaphore {
    const sem = Semaphore.at(segment, offset);
    Atomics.store(sem.i32, sem.sleepersWord, 0);
    Atomics.store(sem.i32, sem.countWord, checkInt('initial', initial, 0, MAX));
    return sem;
  }

  /** The current count (a snapshot). */
  get value(): number {
    this.assertOpen();
    return Math.max(0, Atomics.load(this.i32, this.countWord));
  }

  /** Adds `n` to the count and wakes up to `n` sleepers. */
  post(n = 1): void {
    if (n !== 1) checkInt('n', n, 1, MAX);
    this.assertOpen();
    const i32 = this.i32;
    let v = Atomics.load(i32, this.countWord);
    for (;;) {
      if (v > MAX - n) throw new ShmkitError(ErrorCodes.OVERFLOW, `post(${n}) would overflow the semaphore count ${v}`, { segment: this.segment.name });
      const prev = Atomics.compareExchange(i32, this.countWord, v, v + n);
      if (prev === v) break;
      v = prev;
    }
    if (Atomics.load(i32, this.sleepersWord) > 0) wake(i32, this.countWord, n);
  }

  /** Takes one unit if available, without waiting. */
  tryWait(): boolean {
    this.assertOpen();
    return this.takeSync();
  }

  private takeSync(): boolean {
    const i32 = this.i32;
    let v = Atomics.load(i32, this.countWord);
    while (v > 0) {
      const prev = Atomics.compareExchange(i32, this.countWord, v, v - 1);
      if (prev === v) return true;
      v = prev;
    }
    return false;
  }

  /** Blocks until a unit is available and takes it. Throws ERR_SHMKIT_TIMEOUT after `timeout` ms. */
  waitSync(options?: WaitOptions): void {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, false);
    if (this.takeSync()) return;
    const deadline = new Deadline(o.timeout);
    if (spin(() => this.takeSync(), o.spin)) return;
    const i32 = this.i32;
    Atomics.add(i32, this.sleepersWord, 1);
    try {
      for (;;) {
        const v = Atomics.load(i32, this.countWord);
        if (v > 0) {
          if (this.takeSync()) return;
          continue;
        }
        const left = deadline.remaining();
        if (left === 0) break;
        parkSync(i32, this.countWord, v, Math.min(left, tuning.livenessIntervalMs)); // v <= 0; slices re-check (a poster may die before waking)
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } finally {
      if (i32.length > 0) Atomics.sub(i32, this.sleepersWord, 1); // unmapped if a truncation could not be repaired
    }
    this.passOn();
    throw timeoutError('Semaphore.waitSync', o.timeout, this.segment.name);
  }

  /** Like wait(), without blocking the event loop. Accepts an AbortSignal. */
  async wait(options?: AsyncWaitOptions): Promise<void> {
    this.assertOpen();
    const o = options === undefined ? DEFAULT : parseWait(options, true);
    if (isAborted(o.signal)) throw abortError(o.signal, 'Semaphore.wait');
    if (this.takeSync()) return;
    const deadline = new Deadline(o.timeout);
    if (spin(() => this.takeSync(), o.spin)) return;
    const i32 = this.i32;
    Atomics.add(i32, this.sleepersWord, 1);
    const undo = onClose(this.segment, () => {
      Atomics.sub(i32, this.sleepersWord, 1);
      this.passOn();
    });
    let ok = false;
    try {
      for (;;) {
        const v = Atomics.load(i32, this.countWord);
        if (v > 0) {
          if (this.takeSync()) { ok = true; return; }
          continue;
        }
        const left = deadline.remaining();
        if (left === 0) break;
        // No liveness slice: a poster that died between its add and its wake left the count changed,
        // which the shared liveness tick notices (see parkAsync).
        await parkAsync(i32, this.countWord, v, left, o.signal, this.segment, 'Semaphore.wait');
        this.segment.verify(); // before touching memory a peer may have truncated meanwhile
      }
    } finally {
      undo();
      if (i32.length > 0) {
        Atomics.sub(i32, this.sleepersWord, 1);
        if (!ok) this.passOn();
      }
    }
    throw timeoutError('Semaphore.wait', o.timeout, this.segment.name);
  }

  /** A waiter leaving without taking may have consumed a wake-up meant for another: pass it on. */
  private passOn(): void {
    if (Atomics.load(this.i32, this.countWord) > 0 && Atomics.load(this.i32, this.sleepersWord) > 0) wake(this.i32, this.countWord, 1);
  }
}

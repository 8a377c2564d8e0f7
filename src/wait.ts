/**
 * Waiting on a 32-bit word in shared memory: spin for a short budget, then park in the kernel.
 *
 * - `parkSync` blocks the thread in a shared futex wait (no FUTEX_PRIVATE_FLAG).
 * - `parkAsync` registers the word with a native waiter thread (futex_waitv) and settles a promise
 *   on the event loop; it never uses the libuv threadpool. An AbortSignal cancels it.
 *
 * Both are "wait while *word == expected": they may return spuriously, so every caller re-checks
 * its condition in a loop. Callers advertise that they sleep (a waiting bit in the word itself or
 * a sleepers counter next to it, per object) so that the other side makes a wake-up system call
 * only when someone sleeps.
 */
import { abortError, closedError, ErrorCodes, osError, ShmkitError } from './errors';
import { native, Status } from './native';

export interface WaitTuning {
  /**
   * How long a blocking or async wait spins (re-checking shared memory, no system call) before it
   * parks, in microseconds. 0 parks at once ("async-only" mode). Default 50.
   */
  spinMicros: number;
  /**
   * How often a parked waiter on a lock wakes to check whether the owner process died, in ms.
   * Bounds the time to recover a lock from a killed owner. Default 100.
   */
  livenessIntervalMs: number;
}

export const tuning: WaitTuning = { spinMicros: 50, livenessIntervalMs: 100 };

const now = (): number => performance.now();

/**
 * Spins until `ready()` returns true or the budget runs out (negative: the configured default).
 * The clock is read every 64 rounds, and first after the first 64 (see spinEnd).
 * Returns true if ready.
 */
export function spin(ready: () => boolean, micros: number): boolean {
  const budget = micros < 0 ? tuning.spinMicros : micros;
  if (budget <= 0) return false;
  let end = 0;
  for (;;) {
    for (let i = 0; i < 64; i++) {
      if (ready()) return true;
      pause();
    }
    end = spinEnd(end, budget);
    if (end < 0) return false;
  }
}

/**
 * The spin deadline, read lazily: call after each round of polls with the previous result (0 at
 * first). Returns the deadline, or -1 once it has passed. The clock is not read before the first
 * round, because performance.now() costs ~60 ns here and a spinning wait usually ends within the
 * first round (a message on its way); the budget therefore starts after that round.
 */
export function spinEnd(end: number, budgetMicros: number): number {
  const t = now();
  if (end === 0) return t + budgetMicros / 1000;
  return t >= end ? -1 : end;
}

let sink = 0;
/**
 * A few dozen cycles without touching shared memory between two polls (JavaScript has no PAUSE
 * instruction). Polling a word in a tight loop keeps stealing its cache line from the process that
 * is about to write it, which slows that writer down more than the poll gains.
 */
export function pause(): void {
  let x = sink;
  for (let k = 0; k < PAUSE_ROUNDS; k++) x = (x * 31 + k) | 0;
  sink = x;
}
const PAUSE_ROUNDS = 16;

/** Blocks while words[index] === expected, at most timeoutMs. Returns false on timeout. */
export function parkSync(words: Int32Array, index: number, expected: number, timeoutMs: number): boolean {
  const rc = native.futexWait(words, index, expected, timeoutMs === Infinity ? -1 : timeoutMs);
  if (rc === 0 || rc === Status.EAGAIN || rc === Status.EINTR) return true;
  if (rc === Status.ETIMEDOUT) return false;
  if (rc === Status.EINVAL) throw closedError('the shared memory behind this object');
  throw osError(-rc, 'futex', 'wait');
}

export function wake(words: Int32Array, index: number, count: number): void {
  native.futexWake(words, index, count);
}

// Asynchronous waits -------------------------------------------------------------------------------

interface Pending {
  resolve(timedOut: boolean): void;
  reject(err: unknown): void;
}

/** Something that can be closed under a pending wait (a Segment): it rejects them on close. */
export interface WaitOwner {
  readonly pendingWaits: Set<() => void>;
}

const pending = new Map<number, Pending>();
let initialized = false;

function onComplete(id: number, status: number): void {
  const p = pending.get(id);
  if (p === undefined) return; // already settled (aborted or closed)
  pending.delete(id);
  if (status === 0) p.resolve(false);
  else if (status === 1) p.resolve(true);
  else if (status === 2) p.resolve(false); // cancelled natively: the JS side already settled
  else p.reject(osError(-status, 'futex_waitv', 'asynchronous wait'));
}

/**
 * Resolves when words[index] may have changed from `expected` (true if the timeout passed
 * instead). Rejects with ABORTED if the signal fires, or CLOSED if the owner segment closes.
 */
export function parkAsync(
  words: Int32Array,
  index: number,
  expected: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  owner: WaitOwner | undefined,
  what: string,
): Promise<boolean> {
  if (!initialized) {
    native.asyncInit(onComplete);
    initialized = true;
  }
  if (signal?.aborted) return Promise.reject(abortError(signal, what));
  const id = native.asyncWait(words, index, expected, timeoutMs === Infinity ? -1 : timeoutMs);
  if (id < 0) {
    if (id === Status.EINVAL) return Promise.reject(closedError('the shared memory behind this object'));
    return Promise.reject(osError(-id, 'asyncWait', what));
  }
  return new Promise<boolean>((resolve, reject) => {
    let onAbort: (() => void) | undefined;
    const cancel = (err: unknown): void => {
      if (!pending.delete(id)) return;
      native.asyncCancel(id);
      cleanup();
      reject(err);
    };
    const onClose = (): void => cancel(new ShmkitError(ErrorCodes.CLOSED, `${what}: the segment was closed while waiting`));
    const cleanup = (): void => {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      owner?.pendingWaits.delete(onClose);
    };
    pending.set(id, {
      resolve: (t) => { cleanup(); resolve(t); },
      reject: (e) => { cleanup(); reject(e); },
    });
    if (signal) {
      onAbort = () => cancel(abortError(signal, what));
      signal.addEventListener('abort', onAbort, { once: true });
    }
    owner?.pendingWaits.add(onClose);
  });
}

/**
 * Asynchronous waits of this thread: futex waits pending on native waiter threads and those threads,
 * and this thread's doorbell (0 if not opened) with the number of times it woke the event loop.
 */
export function asyncWaitStats(): { pending: number; threads: number; doorbell: number; doorbellRings: number } {
  const [threads, n] = native.asyncStats();
  const [doorbell, doorbellRings] = native.bellStats();
  return { pending: n, threads, doorbell, doorbellRings };
}

// Deadlines ------------------------------------------------------------------------------------------

export class Deadline {
  private readonly end: number;
  constructor(readonly timeoutMs: number) {
    this.end = timeoutMs === Infinity ? Infinity : now() + timeoutMs;
  }
  /** Milliseconds left (Infinity if none); 0 when expired. */
  remaining(): number {
    if (this.end === Infinity) return Infinity;
    return Math.max(0, this.end - now());
  }
  expired(): boolean {
    return this.end !== Infinity && now() >= this.end;
  }
}

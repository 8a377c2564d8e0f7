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
import { isAborted, onAbort as listenAbort } from './abort';
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
  throw osError(-rc, 'futex', 'waitSync');
}

export function wake(words: Int32Array, index: number, count: number): void {
  native.futexWake(words, index, count);
}

// Asynchronous waits -------------------------------------------------------------------------------
//
// Idle waiting costs close to nothing:
// - Waits on the same word with the same expected value share one native wait (a Semaphore with
//   5,000 pending wait() calls holds one slot of one waiter thread, not 5,000).
// - A native wait has no liveness slice. One ticker per thread (unref'd, running only while waits
//   are pending) looks at every shared wait once per liveness interval: if the word no longer holds
//   the expected value (a peer changed it and died before waking), or the wait's `recheck` says so
//   (a lock owner died), the wait ends and its callers re-check; otherwise nothing happens. So an
//   idle wait costs one Atomics.load per interval, and is never re-registered.
// - Each caller's own deadline is a timer of its own, armed only when it has one.

/** Something that can be closed under a pending wait (a Segment): it rejects them on close. */
export interface WaitOwner {
  readonly pendingWaits: Set<() => void>;
  /** False if the memory behind the waits may no longer be safe to read (see Segment.check). */
  check?(): boolean;
  /** Why the owner was closed under its waits, if not by close() (e.g. it was truncated). */
  readonly damage?: unknown;
  /** Whether the owner's pending waits keep the process alive (Segment.ref/unref). */
  hasRef?(): boolean;
  /** Told when that changes, by each pending wait. */
  readonly refHooks?: Set<(refd: boolean) => void>;
}

interface Sub {
  resolve(timedOut: boolean): void;
  reject(err: unknown): void;
}

interface Shared {
  readonly words: Int32Array;
  readonly index: number;
  readonly expected: number;
  readonly key: string;
  readonly subs: Set<Sub>;
  recheck: (() => boolean) | undefined;
  owner: WaitOwner | undefined;
  id: number;
  onRef: ((refd: boolean) => void) | undefined;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** Native wait id -> shared wait. */
const byId = new Map<number, Shared>();
/** Word (buffer + index + expected value) -> shared wait. */
const byWord = new Map<ArrayBufferLike, Map<string, Shared>>();
let initialized = false;

function onComplete(id: number, status: number): void {
  const sh = byId.get(id);
  if (sh === undefined) return; // already ended (all callers left, or the ticker ended it)
  if (status === 2) return; // cancelled natively: whoever cancelled already settled
  endShared(sh, false);
  if (status === Status.EFAULT && sh.owner?.check !== undefined) {
    // The kernel could not read the word: a peer truncated the object. The owner's check turns that
    // into its damage (rejecting these callers through their close hooks) before anyone reads the
    // memory, or repairs it; whoever is left re-checks.
    try {
      sh.owner.check();
    } catch {
      // reported by the callers' own loop
    }
    for (const sub of [...sh.subs]) sub.resolve(false);
    return;
  }
  if (status < 0) {
    const err = osError(-status, 'futex_waitv', 'asynchronous wait');
    for (const sub of [...sh.subs]) sub.reject(err);
  } else for (const sub of [...sh.subs]) sub.resolve(status === 1);
}

/** Removes a shared wait from the tables; cancels its native wait unless it has completed. */
function endShared(sh: Shared, cancelNative: boolean): void {
  byId.delete(sh.id);
  const m = byWord.get(sh.words.buffer);
  if (m !== undefined && m.get(sh.key) === sh) {
    m.delete(sh.key);
    if (m.size === 0) byWord.delete(sh.words.buffer);
  }
  if (cancelNative) native.asyncCancel(sh.id);
  if (sh.onRef !== undefined) sh.owner?.refHooks?.delete(sh.onRef);
  if (byId.size === 0) stopTicker();
}

let ticker: ReturnType<typeof setInterval> | null = null;
let tickerInterval = 0;

function startTicker(): void {
  if (ticker !== null) return;
  tickerInterval = tuning.livenessIntervalMs;
  ticker = setInterval(tick, tickerInterval);
  ticker.unref(); // the native wait keeps the process alive while it is pending
}

function stopTicker(): void {
  if (ticker === null) return;
  clearInterval(ticker);
  ticker = null;
}

function tick(): void {
  // Owners (segments) are checked once per tick, before any of their memory is read: another
  // process may have truncated the object, and reading a lost page would raise SIGBUS.
  const intact = new Map<WaitOwner, boolean>();
  for (const sh of [...byId.values()]) {
    if (!byId.has(sh.id)) continue;
    let end: boolean;
    try {
      const o = sh.owner;
      let ok = true;
      if (o?.check !== undefined) {
        ok = intact.get(o) ?? o.check();
        intact.set(o, ok);
      }
      end = !ok || sh.words.length === 0 || Atomics.load(sh.words, sh.index) !== sh.expected || (sh.recheck !== undefined && sh.recheck());
    } catch {
      end = true; // a check that fails is for the callers' own loop to report
    }
    if (!end) continue;
    endShared(sh, true);
    for (const sub of [...sh.subs]) sub.resolve(true);
  }
  if (ticker !== null && tickerInterval !== tuning.livenessIntervalMs) {
    stopTicker(); // configure() changed the interval: restart with the new one
    if (byId.size > 0) startTicker();
  }
}

/**
 * Resolves when words[index] may have changed from `expected`: false when woken, true when
 * `timeoutMs` passed or, at a liveness tick, `recheck()` returned true or the word changed without
 * a wake-up. Rejects with ABORTED if the signal fires, or CLOSED if the owner segment closes.
 * Callers re-check their condition in a loop in every case.
 */
export function parkAsync(
  words: Int32Array,
  index: number,
  expected: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  owner: WaitOwner | undefined,
  what: string,
  recheck?: () => boolean,
): Promise<boolean> {
  if (!initialized) {
    native.asyncInit(onComplete);
    initialized = true;
  }
  if (isAborted(signal)) return Promise.reject(abortError(signal!, what));
  if (words.length === 0) return Promise.reject(closedError('the shared memory behind this object'));
  const key = `${index}:${expected | 0}`;
  let m = byWord.get(words.buffer);
  let sh = m?.get(key);
  if (sh === undefined) {
    const id = native.asyncWait(words, index, expected, -1, owner?.hasRef?.() ?? true);
    if (id < 0) {
      if (id === Status.EINVAL) return Promise.reject(closedError('the shared memory behind this object'));
      return Promise.reject(osError(-id, 'asyncWait', what));
    }
    const onRef = owner?.refHooks === undefined ? undefined : (refd: boolean): void => void native.asyncRef(id, refd);
    if (onRef !== undefined) owner!.refHooks!.add(onRef);
    sh = { words, index, expected: expected | 0, key, subs: new Set(), recheck, owner, id, onRef };
    byId.set(id, sh);
    if (m === undefined) byWord.set(words.buffer, (m = new Map()));
    m.set(key, sh);
    startTicker();
  } else if (sh.recheck === undefined) sh.recheck = recheck;
  const shared = sh;
  return new Promise<boolean>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | null = null;
    let unlisten: (() => void) | null = null;
    const leave = (): void => {
      shared.subs.delete(sub);
      if (timer !== null) clearTimeout(timer);
      unlisten?.();
      owner?.pendingWaits.delete(onClose);
      owner?.refHooks?.delete(onRef);
      // The last caller to leave early ends the native wait.
      if (shared.subs.size === 0 && byId.get(shared.id) === shared) endShared(shared, true);
    };
    const sub: Sub = {
      resolve: (t) => { leave(); resolve(t); },
      reject: (e) => { leave(); reject(e); },
    };
    const onClose = (): void => sub.reject(owner?.damage ?? new ShmkitError(ErrorCodes.CLOSED, `${what}: the segment was closed while waiting`));
    shared.subs.add(sub);
    // Node clamps a delay above 2^31-1 ms to 1 ms: cap it; the caller's loop waits again until its deadline.
    if (timeoutMs !== Infinity) {
      timer = setTimeout(() => sub.resolve(true), Math.min(timeoutMs, MAX_TIMER_MS));
      if (owner?.hasRef?.() === false) timer.unref(); // an unref'd owner's timeout keeps nothing alive either
    }
    // The caller's timer follows unref()/ref() of the owner, as the native wait does.
    const onRef = (on: boolean): void => void (on ? timer?.ref() : timer?.unref());
    owner?.refHooks?.add(onRef);
    if (signal) unlisten = listenAbort(signal, () => sub.reject(abortError(signal, what)));
    owner?.pendingWaits.add(onClose);
  });
}

/**
 * Asynchronous waits of this thread: futex waits pending on native waiter threads and those threads,
 * and this thread's doorbell (0 if not opened) with the number of times it woke the event loop.
 */
export function asyncWaitStats(): { pending: number; threads: number; doorbell: number; doorbellRings: number } {
  const [threads] = native.asyncStats();
  let n = 0;
  for (const sh of byId.values()) n += sh.subs.size;
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
}

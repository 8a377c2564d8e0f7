/**
 * Doorbells: asynchronous waits that sleep in the event loop itself.
 *
 * A parked async wait normally sleeps in a native helper thread (futex_waitv) that then wakes the
 * event loop: two thread wake-ups, each ~20 µs on a VM. A doorbell (native/bind_bell.c) is a
 * pollable socket of this process that any process can ring by a 32-bit id. A waiter writes its
 * process's id into a slot table next to the word it waits on, sets a "bell waiter" bit in that
 * word, and awaits a ring; the process that changes the word sees the bit, clears it, and rings
 * every registered id: one wake-up, straight into the loop. See docs/design.md ("Waking").
 *
 * One doorbell serves every async wait of this thread: a ring resolves all of them and each
 * re-checks its own condition (they all tolerate spurious wake-ups).
 */
import { abortError, ErrorCodes, ShmkitError } from './errors';
import { isAborted, onAbort as listenAbort } from './abort';
import { native } from './native';
import { tuning, type WaitOwner } from './wait';

const ECONNREFUSED = -111;

let state: 'unopened' | 'open' | 'off' = 'unopened';
let ownId = 0;
let waiters = new Set<() => void>();

function onRing(): void {
  if (waiters.size === 0) return;
  const list = waiters;
  waiters = new Set();
  for (const w of list) w();
}

/**
 * Runtimes where the doorbell's event-loop poll cannot be used: Bun implements no uv_poll_t (the
 * process aborts on uv_poll_init), and Deno aborts at exit once an async cleanup hook (which
 * closing the poll handle needs) is registered. There async waits take the waiter-thread path.
 */
const NO_DOORBELL_RUNTIME = typeof (process.versions as Record<string, string | undefined>).bun === 'string' || typeof (process.versions as Record<string, string | undefined>).deno === 'string';

/** This thread's doorbell id, or 0 when doorbells are unavailable (then use a futex wait). */
export function ownBell(): number {
  if (state === 'unopened' && NO_DOORBELL_RUNTIME) state = 'off';
  if (state === 'unopened') {
    const id = native.bellOpen(onRing);
    if (id > 0) {
      ownId = id;
      state = 'open';
    } else state = 'off';
  }
  return state === 'open' ? ownId : 0;
}

/**
 * Stops using doorbells in this thread (async waits fall back to futex waits). Called when a
 * ringer reported our bell unreachable, e.g. a peer in another network namespace.
 */
export function disableBells(): void {
  state = 'off';
}

/** Puts `id` in a free slot of the table of `n` words at `base`; the slot's index, or -1 if full. */
export function registerBell(words: Int32Array, base: number, n: number, id: number): number {
  for (let k = base; k < base + n; k++) {
    if (Atomics.compareExchange(words, k, 0, id | 0) === 0) return k;
  }
  return -1;
}

/** Frees our slot. False if someone else cleared it first (a ringer found our bell unreachable). */
export function unregisterBell(words: Int32Array, slot: number, id: number): boolean {
  return Atomics.compareExchange(words, slot, id | 0, 0) === (id | 0);
}

/**
 * Rings every doorbell registered in the table. A slot whose doorbell no longer exists (its
 * process died) is cleared. Values are untrusted: any value is only ever used as a bell id.
 */
export function ringAll(words: Int32Array, base: number, n: number): void {
  for (let k = base; k < base + n; k++) {
    const id = Atomics.load(words, k);
    if (id === 0) continue;
    if (native.bellRing(id >>> 0) === ECONNREFUSED) Atomics.compareExchange(words, k, id, 0);
  }
}

/**
 * Liveness slices without a timer per wait. A wait whose slice is the full liveness interval (no
 * sooner deadline of its own) joins the ticker: one shared timer that ends every such wait at its
 * next tick, after which the caller re-checks the peers' liveness and waits again. A wait may thus
 * end early (anything between 0 and one interval), which every caller tolerates. Each wait arming
 * and clearing its own setTimeout cost ~1.5 µs per wait here, ~3 µs per async round trip. The
 * ticker is unref'd and stops after a tick that finds no wait; what keeps Node alive while waits
 * are pending is the doorbell's poll handle, ref'd while there are any (native bellRef).
 */
let ticking = new Set<() => void>();
let ticker: ReturnType<typeof setTimeout> | null = null;

function tick(): void {
  ticker = null;
  if (ticking.size === 0) return;
  const list = ticking;
  ticking = new Set();
  for (const w of list) w();
  // Re-armed lazily: the waits just ended register again (and restart the ticker) if they go on.
}

function joinTicker(onSlice: () => void): void {
  ticking.add(onSlice);
  if (ticker === null) {
    ticker = setTimeout(tick, tuning.livenessIntervalMs);
    ticker.unref();
  }
}

/** Refs the doorbell while any wait whose owner is ref'd is pending (see the ticker above). */
let refd = false;
let refdWaits = 0;
function holdAlive(): void {
  const want = refdWaits > 0;
  if (want !== refd) {
    refd = want;
    native.bellRef(want);
  }
}

/**
 * Resolves when this thread's doorbell rings (true) or after at most `timeoutMs` (false; a wait
 * whose slice is the liveness interval may end sooner, at the shared ticker's next tick). Rejects
 * with ABORTED if the signal fires, or CLOSED if `owner` closes. Pending waits keep the process
 * alive.
 */
export function bellWait(timeoutMs: number, signal: AbortSignal | undefined, owner: WaitOwner | undefined, what: string): Promise<boolean> {
  if (isAborted(signal)) return Promise.reject(abortError(signal, what));
  return new Promise<boolean>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | null = null;
    let unlisten: (() => void) | null = null;
    let counted = owner?.hasRef?.() ?? true;
    const onRef = (on: boolean): void => {
      if (on) timer?.ref();
      else timer?.unref();
      if (on === counted) return;
      counted = on;
      refdWaits += on ? 1 : -1;
      holdAlive();
    };
    const finish = (): void => {
      waiters.delete(onBell);
      ticking.delete(onSlice);
      if (counted) refdWaits--;
      counted = false;
      owner?.refHooks?.delete(onRef);
      holdAlive();
      if (timer !== null) clearTimeout(timer);
      unlisten?.();
      owner?.pendingWaits.delete(onClose);
    };
    const onBell = (): void => {
      finish();
      resolve(true);
    };
    const onSlice = (): void => {
      finish();
      resolve(false);
    };
    const onAbort = (): void => {
      finish();
      reject(abortError(signal!, what));
    };
    const onClose = (): void => {
      finish();
      reject(owner?.damage ?? new ShmkitError(ErrorCodes.CLOSED, `${what}: the segment was closed while waiting`));
    };
    if (timeoutMs >= tuning.livenessIntervalMs) joinTicker(onSlice);
    else {
      timer = setTimeout(onSlice, timeoutMs);
      if (!counted) timer.unref();
    }
    waiters.add(onBell);
    if (counted) refdWaits++;
    owner?.refHooks?.add(onRef);
    holdAlive();
    if (signal) unlisten = listenAbort(signal, onAbort);
    owner?.pendingWaits.add(onClose);
  });
}

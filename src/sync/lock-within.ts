/**
 * Taking a lock inside someone else's deadline: an operation that needs an internal lock (a
 * channel's producer or consumer lock) waits for it no longer than its caller's own deadline and
 * signal allow, and reports a timeout as its own (`channel "jobs" receive: timed out after 0 ms`),
 * not as the lock's. A deadline that has already passed still gets one try without waiting.
 */
import { ErrorCodes, ShmkitError, timeoutError } from '../errors';
import type { Deadline } from '../wait';
import type { Mutex, MutexGuard } from './mutex';

export function lockWithin(mutex: Mutex, deadline: Deadline, what: string, segment: string): MutexGuard {
  const left = deadline.remaining();
  if (left === 0) {
    const g = mutex.tryLock();
    if (g === null) throw timeoutError(what, deadline.timeoutMs, segment);
    return g;
  }
  try {
    return mutex.lockSync(left === Infinity ? undefined : { timeout: left });
  } catch (err) {
    throw asOwnTimeout(err, what, deadline, segment);
  }
}

/**
 * `forCaller`: a lock the library takes for its own caller (a channel's internal lock): given back
 * if the segment is closed before the caller runs again, which must call mutex.settle() first
 * thing (see Mutex.lockAsyncForCaller). Not for a user's mutex (Condition re-locking it).
 */
export async function lockWithinAsync(mutex: Mutex, deadline: Deadline, signal: AbortSignal | undefined, what: string, segment: string, forCaller = false): Promise<MutexGuard> {
  const left = deadline.remaining();
  if (left === 0) {
    const g = mutex.tryLock();
    if (g === null) throw timeoutError(what, deadline.timeoutMs, segment);
    return forCaller ? mutex.giveBackOnClose(g) : g;
  }
  const options: { timeout?: number; signal?: AbortSignal } = {};
  if (left !== Infinity) options.timeout = left;
  if (signal !== undefined) options.signal = signal;
  try {
    return await (forCaller ? mutex.lockAsyncForCaller(options) : mutex.lock(options));
  } catch (err) {
    throw asOwnTimeout(err, what, deadline, segment);
  }
}

function asOwnTimeout(err: unknown, what: string, deadline: Deadline, segment: string): unknown {
  return err instanceof ShmkitError && err.code === ErrorCodes.TIMEOUT ? timeoutError(what, deadline.timeoutMs, segment) : err;
}

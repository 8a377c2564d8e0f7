/**
 * AbortSignals from callers, handled so that no user object can throw inside a timer or native
 * callback (where an exception would end the process). Only real AbortSignals are accepted, and
 * they are read through AbortSignal.prototype and EventTarget.prototype, never through properties
 * of the object itself: an instance that shadows `aborted`, `reason` or `removeEventListener` with
 * its own (throwing) versions changes nothing.
 */
import { invalidArg } from './errors';
import { describe } from './validate';

const proto = AbortSignal.prototype;
const abortedGetter = Object.getOwnPropertyDescriptor(proto, 'aborted')!.get!;
const reasonGetter = Object.getOwnPropertyDescriptor(proto, 'reason')!.get!;
const add = EventTarget.prototype.addEventListener;
const remove = EventTarget.prototype.removeEventListener;

/** An AbortSignal option: undefined or a real AbortSignal; anything else is INVALID_ARGUMENT. */
export function checkSignal(name: string, v: unknown): AbortSignal | undefined {
  if (v === undefined) return undefined;
  if (v instanceof AbortSignal) {
    try {
      abortedGetter.call(v); // an object that only inherits from AbortSignal.prototype fails here
      return v;
    } catch {
      // fall through
    }
  }
  throw invalidArg(name, `must be an AbortSignal, got ${describe(v)}`);
}

export function isAborted(signal: AbortSignal | undefined): signal is AbortSignal {
  return signal !== undefined && abortedGetter.call(signal) === true;
}

export function abortReason(signal: AbortSignal): unknown {
  return reasonGetter.call(signal);
}

/**
 * Calls `fn` once when `signal` aborts. Returns the function that removes the listener; it never
 * throws, so it is safe in timer and native callbacks.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  add.call(signal, 'abort', fn, { once: true });
  return () => {
    try {
      remove.call(signal, 'abort', fn);
    } catch {
      // A real AbortSignal's removal cannot fail; nothing else reaches here.
    }
  };
}

/**
 * UTF-8 between strings and shared memory. Buffer's own routines without the argument handling of
 * toString()/write() (present in Node 20-26; feature-detected, with the public methods as the
 * fallback).
 */
type Utf8Buffer = Buffer & { utf8Slice?(start: number, end: number): string; utf8Write?(s: string, offset: number, length: number): number };
const hasUtf8 = typeof (Buffer.prototype as Utf8Buffer).utf8Slice === 'function' && typeof (Buffer.prototype as Utf8Buffer).utf8Write === 'function';

/** The string in `b` [s, e), decoded as UTF-8. */
export const utf8Slice = hasUtf8
  ? (b: Buffer, s: number, e: number): string => (b as Utf8Buffer).utf8Slice!(s, e)
  : (b: Buffer, s: number, e: number): string => b.toString('utf8', s, e);

/** Writes `str` as UTF-8 into `b` at `off`, at most `len` bytes; returns the bytes written. */
export const utf8Write = hasUtf8
  ? (b: Buffer, str: string, off: number, len: number): number => (b as Utf8Buffer).utf8Write!(str, off, len)
  : (b: Buffer, str: string, off: number, len: number): number => b.write(str, off, len, 'utf8');

/**
 * Strings up to this many UTF-16 units reserve 3 bytes per unit and shrink after writing:
 * measuring a fresh string's UTF-8 length first costs about as much as writing it.
 */
export const STRING_BOUND_CHARS = 4096;

/**
 * Bytes to reserve for `data`, written as UTF-8 if a string: for a string of up to
 * STRING_BOUND_CHARS units whose bound (3 bytes per unit) is at most `max`, that bound (the record
 * shrinks to what was written); otherwise the exact length, which the caller checks against `max`.
 */
export function reserveLength(data: Uint8Array | string, max: number): number {
  if (typeof data === 'string') {
    if (data.length <= STRING_BOUND_CHARS && data.length * 3 <= max) return data.length * 3;
    return Buffer.byteLength(data, 'utf8');
  }
  return data.byteLength;
}

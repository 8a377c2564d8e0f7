/**
 * What every synchronization primitive shares: where its words are, who owns the segment, how it
 * is created by name or placed at an offset inside a user segment, and the wait options.
 */
import { closedError, invalidArg } from '../errors';
import { Handle } from '../handle';
import { openNamed, type OpenHow } from '../open';
import { type OpenOptions, Segment } from '../segment';
import { parseTrust } from '../trust';

export type { OpenOptions };
import { checkInt, checkObject, checkTimeout } from '../validate';
import { checkSignal } from '../abort';

export interface WaitOptions {
  /** Milliseconds to wait at most; the operation then fails with ERR_SHMKIT_TIMEOUT. Default: forever. */
  timeout?: number;
  /** Spin budget in microseconds before parking. Default: `configure().spinMicros` (50). */
  spin?: number;
}

export interface AsyncWaitOptions extends WaitOptions {
  /** Cancels the wait; it then rejects with ABORT_ERR (name 'AbortError'). */
  signal?: AbortSignal;
}

export interface NamedOptions extends OpenOptions {
  /** Permission bits of the segment. Default 0o600. */
  mode?: number;
}

export interface ParsedWait {
  timeout: number;
  spin: number;
  signal: AbortSignal | undefined;
}

/** Options used when the caller passed none. A negative spin means "the configured default". */
export const DEFAULT: ParsedWait = Object.freeze({ timeout: Infinity, spin: -1, signal: undefined });

export function parseWait(options: unknown, allowSignal: boolean): ParsedWait {
  const o = checkObject('options', options);
  const timeout = checkTimeout('options.timeout', o.timeout);
  const spin = o.spin === undefined ? -1 : checkInt('options.spin', o.spin, 0, 10_000_000);
  const signal = allowSignal ? checkSignal('options.signal', o.signal) : undefined;
  if (!allowSignal && o.signal !== undefined) throw invalidArg('options.signal', 'is only accepted by the async variants');
  return { timeout, spin, signal };
}

export function parseMode(options: Record<string, unknown>): number {
  return options.mode === undefined ? 0o600 : checkInt('options.mode', options.mode, 0, 0o777);
}

/** Checks that a primitive of `size` bytes fits at data offset `offset` of `segment`. */
export function checkPlacement(segment: unknown, offset: unknown, size: number): { segment: Segment; offset: number } {
  if (!(segment instanceof Segment)) throw invalidArg('segment', 'must be a Segment');
  if (segment.closed) throw closedError(`segment "${segment.name}"`, segment.name);
  const off = checkInt('offset', offset, 0, segment.size);
  if (off % 8 !== 0) throw invalidArg('offset', `must be a multiple of 8, got ${off}`);
  if (off + size > segment.size) {
    throw invalidArg('offset', `a ${size}-byte primitive at ${off} does not fit in segment "${segment.name}" (${segment.size} data bytes)`);
  }
  return { segment, offset: off };
}

export abstract class Primitive extends Handle {
  /** Byte offset of the primitive within the whole mapping. */
  protected readonly base: number;
  /** Index of the first 32-bit word. */
  protected readonly firstWord: number;
  protected readonly i32: Int32Array;
  protected readonly i64: BigInt64Array;
  private readonly ownsSegment: boolean;

  protected constructor(segment: Segment, dataOffset: number, ownsSegment: boolean) {
    super(segment, `${new.target.name} in segment "${segment.name}"`, '');
    this.base = segment.dataOffset + dataOffset;
    this.firstWord = this.base >> 2;
    this.i32 = segment.int32;
    this.i64 = segment.bigint64;
    this.ownsSegment = ownsSegment;
  }

  /** Removes the name of a primitive made by name (its segment's); false if there was none. */
  static unlink(name: string): boolean {
    return Segment.unlink(name);
  }

  /** Closes the segment if this primitive opened it by name; a no-op for primitives placed in a user segment. */
  close(): void {
    if (this.ownsSegment) this.dispose();
  }

  protected release(): void {
    this.segment.close();
  }

  protected override inspectFields(): Record<string, unknown> {
    return { segment: this.segment.name, offset: this.base - this.segment.dataOffset };
  }

  override [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Registers `rollback` to run if the segment is closed while an async operation is in flight, so
 * that what the operation advertised in shared memory (a sleeper, a claimed lock, an arrival) is
 * undone while the memory is still mapped. Returns the function that unregisters it.
 */
export function onClose(segment: Segment, rollback: () => void): () => void {
  segment.closeHooks.add(rollback);
  return () => {
    segment.closeHooks.delete(rollback);
  };
}

/**
 * Creates or opens the dedicated segment of a named primitive and builds it (see open.ts: the
 * segment is closed if `build` throws).
 */
export function namedPrimitive<P>(
  how: OpenHow,
  name: unknown,
  kind: number,
  size: number,
  options: Record<string, unknown>,
  initialize: ((segment: Segment) => void) | undefined,
  build: (segment: Segment) => P,
): P {
  const spec = { kind, size, mode: how === 'open' ? 0o600 : parseMode(options), initialize, trust: parseTrust(options.trustedOwners) };
  return openNamed(how, name, spec, build);
}

/**
 * One error class with stable string codes. Every failure shmkit reports is a `ShmkitError`;
 * `code` never changes meaning between versions. See docs/errors.md for the table.
 */
import { constants as osConstants } from 'node:os';

export const ErrorCodes = {
  /** An argument has the wrong type or an out-of-range value; `argument` names it. */
  INVALID_ARGUMENT: 'ERR_SHMKIT_INVALID_ARGUMENT',
  /** No segment (or named semaphore) by that name. */
  NOT_FOUND: 'ERR_SHMKIT_NOT_FOUND',
  /** create() found the name already taken. */
  EXISTS: 'ERR_SHMKIT_EXISTS',
  /** The object exists but was not made by shmkit (wrong magic). */
  NOT_SHMKIT: 'ERR_SHMKIT_NOT_SHMKIT',
  /** Made by a shmkit with another layout version. */
  VERSION: 'ERR_SHMKIT_VERSION',
  /** A shmkit segment of another kind (e.g. opening a Mutex as a Semaphore). */
  KIND: 'ERR_SHMKIT_KIND',
  /** Smaller than a header, or than the structure it must hold. */
  TOO_SMALL: 'ERR_SHMKIT_TOO_SMALL',
  /** Header or shared state is inconsistent (bad checksum, size, offsets or counters). */
  CORRUPT: 'ERR_SHMKIT_CORRUPT',
  /** The OS refused access (EACCES, EPERM). */
  PERMISSION: 'ERR_SHMKIT_PERMISSION',
  /** open()/openOrCreate() found an object owned by another user that options.trustedOwners does not accept. */
  UNTRUSTED_OWNER: 'ERR_SHMKIT_UNTRUSTED_OWNER',
  /** No room to reserve the segment's memory (ENOSPC, ENOMEM). */
  NO_SPACE: 'ERR_SHMKIT_NO_SPACE',
  /** The object was closed. */
  CLOSED: 'ERR_SHMKIT_CLOSED',
  /** A wait ran out of time. */
  TIMEOUT: 'ERR_SHMKIT_TIMEOUT',
  /** An AbortSignal cancelled the operation; `cause` is the signal's reason. Node's own code (and `name` 'AbortError'), as its AbortError has. */
  ABORTED: 'ABORT_ERR',
  /** unlock() by someone who does not hold the lock. */
  NOT_OWNER: 'ERR_SHMKIT_NOT_OWNER',
  /** A blocking lock by the thread that already holds it: it would wait forever. */
  WOULD_DEADLOCK: 'ERR_SHMKIT_WOULD_DEADLOCK',
  /** A counter would overflow (e.g. Semaphore.post beyond 2^31-1). */
  OVERFLOW: 'ERR_SHMKIT_OVERFLOW',
  /** A message is larger than the channel's maximum message size (nothing was written), or than receiveInto's target (it stays queued). */
  TOO_LARGE: 'ERR_SHMKIT_TOO_LARGE',
  /** A role is taken: a single-producer/consumer channel already has a live one, or a view/loan is outstanding. */
  BUSY: 'ERR_SHMKIT_BUSY',
  /** The other side is gone: no live producer (or consumer) is attached any more. */
  PEER_GONE: 'ERR_SHMKIT_PEER_GONE',
  /**
   * A connection was refused: no live server listens on the name, its backlog of unanswered
   * connections is full, every connection slot is in use, or the server refused it.
   */
  REFUSED: 'ERR_SHMKIT_REFUSED',
  /** An RPC call named a method the server does not serve. */
  UNKNOWN_METHOD: 'ERR_SHMKIT_UNKNOWN_METHOD',
  /** A SharedMap has no room left (every entry slot or the value heap is in use) and evicts nothing: created without eviction: 'lru'. Nothing was written. */
  FULL: 'ERR_SHMKIT_FULL',
  /** A SharedMap write's condition failed: `ifRevision` did not match the key's revision (`revision` says what it is, 0: absent). Nothing was written. */
  CONFLICT: 'ERR_SHMKIT_CONFLICT',
  /** A topic subscriber fell a whole log behind under the 'overwrite' policy and lost messages (`lost` says how many); asked for with lagged: 'throw'. */
  LAGGED: 'ERR_SHMKIT_LAGGED',
  /** A received message could not be decoded by the channel's codec; it was consumed. */
  DECODE: 'ERR_SHMKIT_DECODE',
  /** Too many asynchronous waits pending in this process. */
  TOO_MANY_WAITS: 'ERR_SHMKIT_TOO_MANY_WAITS',
  /** Not possible on this platform or runtime (e.g. Electron refuses external buffers). */
  UNSUPPORTED: 'ERR_SHMKIT_UNSUPPORTED',
  /** Any other operating-system failure; `errno` and `syscall` tell which. */
  OS: 'ERR_SHMKIT_OS',
  /** A Node-API call inside the addon failed (out of memory, or the runtime refused an operation). */
  NATIVE: 'ERR_SHMKIT_NATIVE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface ErrorDetails {
  /** The segment or semaphore name involved. */
  segment?: string;
  /** The argument that was rejected. */
  argument?: string;
  /** Positive errno value, where the OS failed. */
  errno?: number;
  /** Symbolic errno, e.g. 'ENOENT'. */
  errnoCode?: string;
  /** The system call that failed. */
  syscall?: string;
  cause?: unknown;
}

export class ShmkitError extends Error {
  readonly code: ErrorCode;
  // `declare`: no own property unless set, so inspection shows only the fields that apply.
  declare readonly segment?: string;
  declare readonly argument?: string;
  declare readonly errno?: number;
  declare readonly errnoCode?: string;
  declare readonly syscall?: string;
  /** On errors from a channel send: false, the message was not published (nothing of it is delivered). */
  declare readonly published?: boolean;
  /** On ERR_SHMKIT_CONFLICT from a SharedMap write: the key's revision when the write was refused (0: absent). */
  declare readonly revision?: number;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = code === ErrorCodes.ABORTED ? 'AbortError' : 'ShmkitError';
    this.code = code;
    const self = this as { -readonly [K in keyof ShmkitError]: ShmkitError[K] };
    if (details.segment !== undefined) self.segment = details.segment;
    if (details.argument !== undefined) self.argument = details.argument;
    if (details.errno !== undefined) self.errno = details.errno;
    if (details.errnoCode !== undefined) self.errnoCode = details.errnoCode;
    if (details.syscall !== undefined) self.syscall = details.syscall;
  }
}

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(osConstants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}
const E = osConstants.errno;

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

export function invalidArg(argument: string, message: string): ShmkitError {
  return new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `${argument}: ${message}`, { argument });
}

/**
 * Turns an OS failure into the right ShmkitError. `errno` is positive. `what` describes the
 * operation, e.g. `open segment "jobs"`.
 */
export function osError(errno: number, syscall: string, what: string, segment?: string): ShmkitError {
  const errnoCode = errnoName(errno);
  const details: ErrorDetails = { errno, errnoCode, syscall };
  if (segment !== undefined) details.segment = segment;
  const msg = `${what}: ${syscall} failed with ${errnoCode}`;
  switch (errno) {
    case E.ENOENT:
      return new ShmkitError(ErrorCodes.NOT_FOUND, `${what}: it does not exist (${errnoCode})`, details);
    case E.EEXIST:
      return new ShmkitError(ErrorCodes.EXISTS, `${what}: the name is already taken (${errnoCode})`, details);
    case E.EACCES:
    case E.EPERM:
      return new ShmkitError(ErrorCodes.PERMISSION, `${what}: permission denied (${errnoCode})`, details);
    case E.ENOSPC:
    case E.ENOMEM:
    case E.EFBIG:
      return new ShmkitError(ErrorCodes.NO_SPACE, `${what}: not enough shared memory (${errnoCode} from ${syscall})`, details);
    case E.EOVERFLOW:
      return new ShmkitError(ErrorCodes.OVERFLOW, `${what}: the value would overflow (${errnoCode})`, details);
    case E.ENOTSUP:
      return new ShmkitError(ErrorCodes.UNSUPPORTED, `${what}: not supported by this runtime (${syscall})`, details);
    case E.EAGAIN:
      if (syscall === 'asyncWait') return new ShmkitError(ErrorCodes.TOO_MANY_WAITS, `${what}: too many pending asynchronous waits`, details);
      return new ShmkitError(ErrorCodes.OS, msg, details);
    default:
      return new ShmkitError(ErrorCodes.OS, msg, details);
  }
}

export function closedError(what: string, segment?: string): ShmkitError {
  return new ShmkitError(ErrorCodes.CLOSED, `${what} is closed`, segment === undefined ? {} : { segment });
}

export function timeoutError(what: string, ms: number, segment?: string): ShmkitError {
  return new ShmkitError(ErrorCodes.TIMEOUT, `${what}: timed out after ${ms} ms`, segment === undefined ? {} : { segment });
}

const reasonGetter = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'reason')!.get!;

export function abortError(signal: AbortSignal, what: string): ShmkitError {
  return new ShmkitError(ErrorCodes.ABORTED, `${what}: aborted`, { cause: reasonGetter.call(signal) });
}

/**
 * What an encoder threw, as ERR_SHMKIT_INVALID_ARGUMENT (argument 'message') with the original
 * error as `cause`: the message was refused, nothing was sent. A ShmkitError about the message
 * (e.g. a nested codec's refusal) passes through.
 */
export function encodeError(codec: string, err: unknown): ShmkitError {
  let why: string;
  try {
    if (err instanceof ShmkitError && err.code === ErrorCodes.INVALID_ARGUMENT && err.argument === 'message') return err;
    why = err instanceof Error ? err.message : String(err);
  } catch {
    why = 'an unreadable exception'; // e.g. a revoked Proxy thrown as the error
  }
  return new ShmkitError(ErrorCodes.INVALID_ARGUMENT, `message: the ${codec} codec could not encode it: ${why}`, { argument: 'message', cause: err });
}

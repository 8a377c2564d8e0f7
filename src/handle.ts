/**
 * What every handle on a named object shares: its name and segment, how errors name it (`channel
 * "jobs"`), the use-after-release check, and disposal. A pattern's public class extends Handle and
 * implements release(); the parts it is wired from (a sender, a receiver) get its ErrorContext, so
 * every message has the same shape and every error carries the object's name in `segment`.
 */
import { abortError, closedError, type ErrorCode, ErrorCodes, ShmkitError, timeoutError } from './errors';
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import type { Segment } from './segment';

/** Builds the errors of one object. */
export class ErrorContext {
  constructor(
    /** How errors name the object: `channel "jobs"`. */
    readonly label: string,
    /** The object's name (the errors' `segment`). */
    readonly name: string,
    /** How a released handle is named: `<label> handle` (default) or just `<label>`. */
    private readonly handleNoun = ' handle',
  ) {}

  /** `<label>: <why>`. */
  error(code: ErrorCode, why: string, cause?: unknown): ShmkitError {
    return new ShmkitError(code, `${this.label}: ${why}`, cause === undefined ? { segment: this.name } : { segment: this.name, cause });
  }

  /** ERR_SHMKIT_BUSY: this handle (or another holder) is in a state that forbids the call now. */
  busy(why: string): ShmkitError {
    return this.error(ErrorCodes.BUSY, why);
  }

  /** ERR_SHMKIT_CLOSED for the object (`channel "jobs" is closed`), with `detail` after the name. */
  closed(detail = ''): ShmkitError {
    return closedError(`${this.label}${detail}`, this.name);
  }

  /** ERR_SHMKIT_CLOSED for a released handle. */
  released(): ShmkitError {
    return closedError(`${this.label}${this.handleNoun}`, this.name);
  }

  /** ERR_SHMKIT_TIMEOUT for operation `what` after `ms`. */
  timeout(what: string, ms: number): ShmkitError {
    return timeoutError(`${this.label} ${what}`, ms, this.name);
  }

  /** ABORT_ERR for operation `what`. */
  aborted(signal: AbortSignal, what: string): ShmkitError {
    return abortError(signal, `${this.label} ${what}`);
  }

  /** The `what` of an operation, for errors made elsewhere (lockWithin): `channel "jobs" receive`. */
  op(what: string): string {
    return `${this.label} ${what}`;
  }
}

/**
 * A handle is an EventEmitter. It emits 'close' once, on the tick after close() (or disposal)
 * released it. It never emits 'error': every failure is thrown to, or rejects, the call that met it.
 */
export abstract class Handle extends EventEmitter {
  /** The object's name, as given to create/open. */
  readonly name: string;
  readonly segment: Segment;
  /** @internal */
  protected readonly errors: ErrorContext;
  /** `released`: set once by dispose(); shared with the parts a handle is wired from. */
  protected readonly life = { released: false };
  /** The segment's words: empty (length 0) once the segment is unmapped. */
  private readonly words: Int32Array;

  /** `label` names the object in errors: `channel "jobs"`; `handleNoun` see ErrorContext. */
  protected constructor(segment: Segment, label: string, handleNoun?: string) {
    super();
    this.name = segment.name;
    this.segment = segment;
    this.errors = new ErrorContext(label, segment.name, handleNoun);
    this.words = segment.int32;
  }

  /** Whether this handle was released (close()). The object itself lives on until unlinked. */
  get closed(): boolean {
    return this.life.released || this.words.length === 0;
  }

  /** Throws ERR_SHMKIT_CLOSED if this handle was released. */
  protected assertOpen(): void {
    if (this.life.released || this.words.length === 0) throw this.errors.released();
  }

  /** Gives back what this handle holds in shared memory, then unmaps. Runs once. */
  protected abstract release(): void;

  /** Releases the handle. Idempotent. */
  protected dispose(): void {
    if (this.life.released) return;
    this.life.released = true;
    try {
      this.release();
    } finally {
      process.nextTick(() => this.emit('close'));
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** `await using` releases the handle as `using` does (nothing to wait for). */
  [Symbol.asyncDispose](): Promise<void> {
    this[Symbol.dispose]();
    return Promise.resolve();
  }

  /**
   * The handle's pending asynchronous waits stop keeping the process alive, like
   * `socket.unref()`. It applies to the mapping the handle uses (an object placed in your own
   * segment: that segment). Returns this.
   */
  unref(): this {
    this.segment.unref();
    return this;
  }

  /** Undoes unref() (the default: pending waits keep the process alive). Returns this. */
  ref(): this {
    this.segment.ref();
    return this;
  }

  /** Whether the handle's pending waits keep the process alive. */
  hasRef(): boolean {
    return this.segment.hasRef();
  }

  /** What util.inspect shows of the handle (a few lines, not its internals). */
  protected inspectFields(): Record<string, unknown> {
    return { name: this.name };
  }

  [inspect.custom](depth: number, options: { stylize?: unknown }, inspectFn?: typeof inspect): string {
    const fields = this.life.released || this.segment.int32.length === 0 ? { name: this.name, released: true } : this.inspectFields();
    const show = inspectFn ?? inspect;
    return `${this.constructor.name} ${show(fields, { ...(options as object), depth: depth < 0 ? 0 : 1 })}`;
  }
}

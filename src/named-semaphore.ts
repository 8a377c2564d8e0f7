/**
 * NamedSemaphore: a POSIX named semaphore (sem_open), for interop with C, Python (ctypes) and any
 * other program that uses sem_open/sem_post. The name is used exactly as given (no shmkit prefix),
 * so the other program opens "/" + name. For shmkit-to-shmkit signalling use Semaphore: it makes no
 * system call when uncontended.
 *
 * wait() blocks the thread in sem_clockwait. waitAsync() cannot park in the kernel without relying
 * on the C library's private semaphore layout, so it polls sem_trywait with a backoff up to 5 ms
 * (Node runs timers shorter than 1 ms after 1 ms): its wake-up latency is 1 to 5 ms, and it never
 * blocks the event loop.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { abortError, closedError, invalidArg, osError, timeoutError } from './errors';
import { isFailure, native } from './native';
import { checkInt, checkObject, checkSignal, checkTimeout, describe } from './validate';
import { Deadline } from './wait';

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
/** Portable limit: macOS allows 31 bytes including the leading slash. */
export const MAX_SEM_NAME_LENGTH = 30;

function checkSemName(name: unknown): string {
  if (typeof name !== 'string') throw invalidArg('name', `must be a string, got ${describe(name)}`);
  if (name.length === 0 || name.length > MAX_SEM_NAME_LENGTH || !NAME_RE.test(name)) {
    throw invalidArg('name', `must be 1 to ${MAX_SEM_NAME_LENGTH} characters of A-Z a-z 0-9 _ . - (no slash), got ${describe(name)}`);
  }
  return name;
}

export interface NamedSemaphoreOptions {
  /** Initial value when created. Default 0. */
  initial?: number;
  /** Permission bits when created. Default 0o600. */
  mode?: number;
}

const SEM_VALUE_MAX = 0x7fffffff;

export class NamedSemaphore {
  readonly name: string;
  #handle: object | null;

  private constructor(name: string, handle: object) {
    this.name = name;
    this.#handle = handle;
  }

  private static open_(how: 'create' | 'open' | 'openOrCreate', name: unknown, options: unknown): NamedSemaphore {
    const n = checkSemName(name);
    const o = checkObject('options', options);
    const initial = o.initial === undefined ? 0 : checkInt('options.initial', o.initial, 0, SEM_VALUE_MAX);
    const mode = o.mode === undefined ? 0o600 : checkInt('options.mode', o.mode, 0, 0o777);
    const h = native.semOpen('/' + n, how !== 'open', how === 'create', mode, initial);
    if (isFailure(h)) throw osError(h.errno, h.syscall, `${how} named semaphore "${n}"`, n);
    return new NamedSemaphore(n, h);
  }

  /** Creates it; fails with ERR_SHMKIT_EXISTS if it exists. */
  static create(name: string, options?: NamedSemaphoreOptions): NamedSemaphore {
    return NamedSemaphore.open_('create', name, options);
  }
  static open(name: string): NamedSemaphore {
    return NamedSemaphore.open_('open', name, undefined);
  }
  static openOrCreate(name: string, options?: NamedSemaphoreOptions): NamedSemaphore {
    return NamedSemaphore.open_('openOrCreate', name, options);
  }
  /** Removes the name. Returns false if it did not exist. */
  static unlink(name: string): boolean {
    const n = checkSemName(name);
    const rc = native.semUnlink('/' + n);
    if (rc === 0) return true;
    if (rc === -2) return false;
    throw osError(-rc, 'sem_unlink', `unlink named semaphore "${n}"`, n);
  }

  private h(what: string): object {
    if (this.#handle === null) throw closedError(`named semaphore "${this.name}"`, this.name);
    void what;
    return this.#handle;
  }

  post(): void {
    const rc = native.semPost(this.h('post'));
    if (rc < 0) throw osError(-rc, 'sem_post', `post named semaphore "${this.name}"`, this.name);
  }

  tryWait(): boolean {
    const rc = native.semTryWait(this.h('tryWait'));
    if (rc === 0) return true;
    if (rc === -11) return false;
    throw osError(-rc, 'sem_trywait', `tryWait named semaphore "${this.name}"`, this.name);
  }

  /** Blocks the thread until the value can be decremented; ERR_SHMKIT_TIMEOUT after `timeout` ms. */
  wait(options?: { timeout?: number }): void {
    const o = checkObject('options', options);
    if (o.signal !== undefined) throw invalidArg('options.signal', 'is only accepted by waitAsync()');
    const timeout = checkTimeout('options.timeout', o.timeout);
    const deadline = new Deadline(timeout);
    for (;;) {
      const left = deadline.remaining();
      const rc = native.semTimedWait(this.h('wait'), left === Infinity ? -1 : left);
      if (rc === 0) return;
      if (rc === -4) continue; // EINTR
      if (rc === -110) throw timeoutError(`named semaphore "${this.name}" wait`, timeout, this.name);
      throw osError(-rc, 'sem_clockwait', `wait named semaphore "${this.name}"`, this.name);
    }
  }

  /** Waits without blocking the event loop (polling with backoff, see above). */
  async waitAsync(options?: { timeout?: number; signal?: AbortSignal }): Promise<void> {
    const o = checkObject('options', options);
    const timeout = checkTimeout('options.timeout', o.timeout);
    const signal = checkSignal('options.signal', o.signal);
    const deadline = new Deadline(timeout);
    let delay = 0.05;
    for (;;) {
      if (signal?.aborted) throw abortError(signal, `named semaphore "${this.name}" waitAsync`);
      if (this.tryWait()) return;
      const left = deadline.remaining();
      if (left === 0) throw timeoutError(`named semaphore "${this.name}" waitAsync`, timeout, this.name);
      try {
        await sleep(Math.min(delay, left), undefined, signal ? { signal } : undefined);
      } catch {
        throw abortError(signal!, `named semaphore "${this.name}" waitAsync`);
      }
      delay = Math.min(delay * 2, 5);
    }
  }

  /** The current value (a snapshot). */
  get value(): number {
    const rc = native.semGetValue(this.h('value'));
    if (rc < 0) throw osError(-rc, 'sem_getvalue', `read named semaphore "${this.name}"`, this.name);
    return rc;
  }

  get closed(): boolean {
    return this.#handle === null;
  }

  /** Closes this handle (the semaphore itself lives on until unlinked). Idempotent. */
  close(): void {
    if (this.#handle === null) return;
    native.semClose(this.#handle);
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * NamedSemaphore: a POSIX named semaphore (sem_open), for interop with C, Python (ctypes) and any
 * other program that uses sem_open/sem_post. The name is used exactly as given (no shmkit prefix),
 * so the other program opens "/" + name. For shmkit-to-shmkit signalling use Semaphore: it makes no
 * system call when uncontended.
 *
 * waitSync() blocks the thread in sem_clockwait. wait() cannot park in the kernel without relying
 * on the C library's private semaphore layout, so it polls sem_trywait with a backoff up to 5 ms
 * (Node runs timers shorter than 1 ms after 1 ms): its wake-up latency is 1 to 5 ms, and it never
 * blocks the event loop.
 */
import { EventEmitter } from 'node:events';
import { chmodSync, closeSync, constants as fsConstants, fstatSync, openSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkOwner, parseTrust, type Trust, type TrustedOwners } from './trust';
import { abortError, closedError, invalidArg, osError, timeoutError } from './errors';
import { isFailure, native } from './native';
import { checkInt, checkObject, checkTimeout, describe } from './validate';
import { checkSignal, isAborted } from './abort';
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
  /** Permission bits when created, applied exactly (not filtered by the umask). Default 0o600. */
  mode?: number;
  /** Owners accepted by open/openOrCreate besides this user (see Segment.open). */
  trustedOwners?: TrustedOwners | 'any';
}

const SEM_VALUE_MAX = 0x7fffffff;
const ENOENT = 2;
const EEXIST = 17;

/** Where glibc keeps a named semaphore: /dev/shm/sem.<name>. */
const semPath = (name: string): string => `/dev/shm/sem.${name}`;

/**
 * Opens an existing named semaphore if its owner is trusted; null if there is none. The file is
 * opened (never through a symbolic link) and checked first; sem_open then opens it by name. Only
 * its owner (or root) can remove or replace a file in the sticky /dev/shm, so a file owned by this
 * user that we hold open is the one sem_open finds.
 */
function openExisting(name: string, trust: Trust, how: string): object | null {
  let fd: number;
  try {
    fd = openSync(semPath(name), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return null;
    throw osError(e.errno !== undefined ? -e.errno : 1, 'open', `${how} named semaphore "${name}"`, name);
  }
  try {
    const st = fstatSync(fd);
    checkOwner(`${how} named semaphore "${name}"`, name, st.uid, st.gid, trust);
    const h = native.semOpen('/' + name, false, false, 0, 0);
    if (isFailure(h)) {
      if (h.errno === ENOENT) return null; // removed meanwhile: create it
      throw osError(h.errno, h.syscall, `${how} named semaphore "${name}"`, name);
    }
    return h;
  } finally {
    closeSync(fd);
  }
}

export class NamedSemaphore extends EventEmitter {
  readonly name: string;
  #handle: object | null;

  private constructor(name: string, handle: object) {
    super();
    this.name = name;
    this.#handle = handle;
  }

  private static open_(how: 'create' | 'open' | 'openOrCreate', name: unknown, options: unknown): NamedSemaphore {
    const n = checkSemName(name);
    const o = checkObject('options', options);
    const initial = o.initial === undefined ? 0 : checkInt('options.initial', o.initial, 0, SEM_VALUE_MAX);
    const mode = o.mode === undefined ? 0o600 : checkInt('options.mode', o.mode, 0, 0o777);
    const trust = parseTrust(o.trustedOwners);
    let last: unknown;
    // Open first (checking the owner), create if absent; if a racer created it meanwhile, go round.
    for (let attempt = 0; attempt < 16; attempt++) {
      if (how !== 'create') {
        const h = openExisting(n, trust, how);
        if (h !== null) return new NamedSemaphore(n, h);
        if (how === 'open') throw osError(ENOENT, 'open', `open named semaphore "${n}"`, n);
      }
      const h = native.semOpen('/' + n, true, true, mode, initial);
      if (!isFailure(h)) {
        // sem_open applied the umask; the caller asked for exactly `mode`. Only this user's own
        // new object is changed (the name was created exclusively, in the sticky /dev/shm).
        try {
          chmodSync(semPath(n), mode);
        } catch (err) {
          native.semClose(h);
          throw osError((err as NodeJS.ErrnoException).errno !== undefined ? -(err as NodeJS.ErrnoException).errno! : 1, 'chmod', `create named semaphore "${n}"`, n);
        }
        return new NamedSemaphore(n, h);
      }
      last = osError(h.errno, h.syscall, `${how} named semaphore "${n}"`, n);
      if (how === 'create' || h.errno !== EEXIST) throw last;
    }
    throw last;
  }

  /** Creates it; fails with ERR_SHMKIT_EXISTS if it exists. */
  static create(name: string, options?: NamedSemaphoreOptions): NamedSemaphore {
    return NamedSemaphore.open_('create', name, options);
  }
  static open(name: string, options?: { trustedOwners?: TrustedOwners | 'any' }): NamedSemaphore {
    return NamedSemaphore.open_('open', name, options);
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
  waitSync(options?: { timeout?: number }): void {
    const o = checkObject('options', options);
    if (o.signal !== undefined) throw invalidArg('options.signal', 'is only accepted by wait()');
    const timeout = checkTimeout('options.timeout', o.timeout);
    const deadline = new Deadline(timeout);
    for (;;) {
      const left = deadline.remaining();
      const rc = native.semTimedWait(this.h('waitSync'), left === Infinity ? -1 : left);
      if (rc === 0) return;
      if (rc === -4) continue; // EINTR
      if (rc === -110) throw timeoutError(`named semaphore "${this.name}" wait`, timeout, this.name);
      throw osError(-rc, 'sem_clockwait', `wait named semaphore "${this.name}"`, this.name);
    }
  }

  /** Waits without blocking the event loop (polling with backoff, see above). */
  async wait(options?: { timeout?: number; signal?: AbortSignal }): Promise<void> {
    const o = checkObject('options', options);
    const timeout = checkTimeout('options.timeout', o.timeout);
    const signal = checkSignal('options.signal', o.signal);
    const deadline = new Deadline(timeout);
    let delay = 0.05;
    for (;;) {
      if (isAborted(signal)) throw abortError(signal, `named semaphore "${this.name}" wait`);
      if (this.tryWait()) return;
      const left = deadline.remaining();
      if (left === 0) throw timeoutError(`named semaphore "${this.name}" wait`, timeout, this.name);
      try {
        await sleep(Math.min(delay, left), undefined, signal ? { signal, ref: this.#refd } : { ref: this.#refd });
      } catch {
        throw abortError(signal!, `named semaphore "${this.name}" wait`);
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
    process.nextTick(() => this.emit('close'));
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #refd = true;
  /** Pending wait() calls stop keeping the process alive (from their next poll on). Returns this. */
  unref(): this {
    this.#refd = false;
    return this;
  }

  /** Undoes unref(). Returns this. */
  ref(): this {
    this.#refd = true;
    return this;
  }

  hasRef(): boolean {
    return this.#refd;
  }
}

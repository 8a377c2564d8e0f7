/**
 * Process identity that survives PID reuse. An owner token is a positive 63-bit integer:
 *
 *   bits  0..21  pid (Linux pids are below 2^22)
 *   bits 22..31  thread slot: tells apart the Node environments (main thread, workers) of a process
 *   bits 32..62  low 31 bits of the process start time (clock ticks since boot)
 *
 * A token is stored in shared memory by one 64-bit compare-and-swap, so a lock is never held
 * without its owner being recorded. A token is "alive" while a process with that pid and that start
 * time exists and is not a zombie. A reused pid has another start time, so it does not count.
 */
import { osError } from './errors';
import { checkInt } from './validate';
import { isFailure, native } from './native';

export interface ProcessIdentity {
  pid: number;
  /** Start time, in the platform's units (Linux: clock ticks since boot, low 31 bits). */
  startTime: number;
  /** Which Node environment of the process (0 for the first). */
  threadSlot: number;
}

const START_BITS = 31;

function loadSelf(): ProcessIdentity {
  const r = native.selfIdentity();
  if (isFailure(r)) throw osError(r.errno, r.syscall, 'read own process identity');
  return { pid: r[0], startTime: r[1] % 2 ** START_BITS, threadSlot: r[2] & 0x3ff };
}

export const self: Readonly<ProcessIdentity> = Object.freeze(loadSelf());

export function toToken(id: ProcessIdentity): bigint {
  return BigInt(id.pid) | (BigInt(id.threadSlot & 0x3ff) << 22n) | (BigInt(id.startTime % 2 ** START_BITS) << 32n);
}

export function fromToken(token: bigint): ProcessIdentity {
  return {
    pid: Number(token & 0x3fffffn),
    threadSlot: Number((token >> 22n) & 0x3ffn),
    startTime: Number((token >> 32n) & 0x7fffffffn),
  };
}

/** This thread's owner token. */
export const SELF_TOKEN: bigint = toToken(self);

/**
 * Whether the process behind `token` still lives. A token of this process is alive while its
 * Node environment (main thread or worker) exists; no system call is made for those. Garbage (negative, or a pid of 0) counts as dead, so a corrupt owner field is
 * recoverable rather than a lock held forever.
 */
export function tokenAlive(token: bigint): boolean {
  if (token <= 0n) return false;
  const id = fromToken(token);
  // Our own process: alive as long as that Node environment (thread slot) still exists.
  if (id.pid === self.pid && id.startTime === self.startTime) return id.threadSlot === self.threadSlot || native.slotLive(id.threadSlot) === 1;
  const r = native.processAlive(id.pid, id.startTime, START_BITS);
  // An error reading /proc (other than "no such process") is not proof of death: assume alive.
  return r !== 0;
}

/** Whether an owner word names a live thread: not 0 (free), and this thread's own token or alive. */
export function held(token: bigint): boolean {
  return token !== 0n && (token === SELF_TOKEN || tokenAlive(token));
}

/**
 * Takes one of `count` slots whose owner word (i64 index `at(i)`) is free or names a dead thread,
 * by one CAS from the exact value examined (docs/design.md, "Owner tokens"): of racers that found
 * the same slot, one wins. A slot held by this thread's own token is held (two handles of one
 * thread take two slots). Returns the slot and the owner it replaced (0 if it was free), or null.
 */
export function takeSlot(i64: BigInt64Array, count: number, at: (i: number) => number): { slot: number; previous: bigint } | null {
  for (let i = 0; i < count; i++) {
    const cur = Atomics.load(i64, at(i));
    if (held(cur)) continue;
    if (Atomics.compareExchange(i64, at(i), cur, SELF_TOKEN) === cur) return { slot: i, previous: cur };
  }
  return null;
}

/** Whether a process is alive, by pid and start time (for headers that record both). */
export function processAlive(pid: number, startTime: number): boolean {
  checkInt('pid', pid, 0, 0x3fffff);
  checkInt('startTime', startTime, 0, Number.MAX_SAFE_INTEGER);
  if (pid <= 0) return false;
  return native.processAlive(pid, startTime % 2 ** START_BITS, START_BITS) !== 0;
}
